//! The agent loop: level-triggered reconcile passes, `--once`, `--dry-run` and `--check`.
//!
//! An agent implements [`Agent::pass`]: re-read every input, compute the whole desired state,
//! diff it with the node and (in [`Mode::Apply`]) apply it. [`run`] drives passes:
//!
//! - `--once` (and `--dry-run`, `--check`): one pass, then the exit code of that pass.
//! - daemon: a pass at start, then whenever something marks the agent dirty (a file event, a kube
//!   watch event, SIGHUP), and at least every resync period (with ±10 % jitter). Bursts of events
//!   merge into one pass; events carry no data. A failed pass is retried with capped exponential
//!   backoff and jitter; a success resets the backoff. SIGTERM or SIGINT end the loop between
//!   passes, never inside one, with exit 0.
//!
//! Readiness ([`Readiness`]) turns true after the first successful pass and stays true while the
//! last success is younger than three resync periods.

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, error, info, info_span};

use crate::apply::{ApplyOptions, apply};
use crate::exit::{Code, chain};
use crate::fileset::FileSet;
use crate::metrics::ReconcileMetrics;
use crate::node::NodeRoot;
use crate::plan::{Plan, plan};

/// What a pass does with its plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Apply the plan.
    Apply,
    /// Print the plan, write nothing, exit 0.
    DryRun,
    /// Print the plan, write nothing, exit 3 if it is not empty.
    Check,
}

/// Why a pass runs. For logs only: passes never use it as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The first pass.
    Start,
    /// A watched file or directory changed.
    File,
    /// A watched Kubernetes object changed.
    Kube,
    /// The periodic resync timer fired.
    Resync,
    /// SIGHUP.
    Signal,
    /// A retry after a failed pass.
    Retry,
}

impl Trigger {
    fn name(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::File => "file",
            Trigger::Kube => "kube",
            Trigger::Resync => "resync",
            Trigger::Signal => "signal",
            Trigger::Retry => "retry",
        }
    }
}

/// Marks an agent dirty. Cheap to clone; sends never block.
pub type TriggerSender = mpsc::UnboundedSender<Trigger>;

/// The receiving side of an agent's triggers, with the sender to hand to watchers.
#[derive(Debug)]
pub struct Triggers {
    tx: TriggerSender,
    rx: mpsc::UnboundedReceiver<Trigger>,
    stop_tx: Arc<watch::Sender<bool>>,
    stop_rx: watch::Receiver<bool>,
}

/// Ends a daemon loop between passes, like SIGTERM (for agents run in-process, as in tests).
#[derive(Debug, Clone)]
pub struct Stopper(Arc<watch::Sender<bool>>);

impl Stopper {
    /// Asks the loop to finish its current pass and return.
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

impl Triggers {
    /// A new trigger channel.
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        Self {
            tx,
            rx,
            stop_tx: Arc::new(stop_tx),
            stop_rx,
        }
    }

    /// A sender for watchers.
    pub fn sender(&self) -> TriggerSender {
        self.tx.clone()
    }

    /// A handle that stops the daemon loop.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop_tx.clone())
    }
}

impl Default for Triggers {
    fn default() -> Self {
        Self::new()
    }
}

/// A pass failed.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// Bad operator input (config, input files): exit 2 under `--once`; in a daemon the last
    /// good state stays and the pass is retried.
    #[error(transparent)]
    Input(Box<dyn Error + Send + Sync>),
    /// Anything else: exit 1 under `--once`; retried with backoff in a daemon.
    #[error(transparent)]
    Runtime(Box<dyn Error + Send + Sync>),
}

impl PassError {
    /// Wraps an input error.
    pub fn input(e: impl Error + Send + Sync + 'static) -> Self {
        Self::Input(Box::new(e))
    }

    /// Wraps a runtime error.
    pub fn runtime(e: impl Error + Send + Sync + 'static) -> Self {
        Self::Runtime(Box::new(e))
    }

    /// The exit code of a `--once` run that ends with this error.
    pub fn code(&self) -> Code {
        match self {
            PassError::Input(_) => Code::Usage,
            PassError::Runtime(_) => Code::Failure,
        }
    }
}

/// What a pass planned (and, in [`Mode::Apply`], did).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassOutcome {
    /// The plan for humans (printed under `--dry-run` and `--check`).
    pub rendered: String,
    /// Operation counts by kind.
    pub summary: Vec<(&'static str, usize)>,
}

impl PassOutcome {
    /// The outcome of a file plan.
    pub fn from_plan(plan: &Plan) -> Self {
        Self {
            rendered: plan.render(),
            summary: plan.summary(),
        }
    }

    /// Total number of planned operations.
    pub fn changes(&self) -> usize {
        self.summary.iter().map(|(_, n)| n).sum()
    }
}

/// A node agent.
pub trait Agent {
    /// The agent's name, as in logs and the `agent` metric label.
    fn name(&self) -> &'static str;

    /// One level-triggered pass: re-read all inputs, compute the desired state, plan, and apply
    /// unless `mode` says otherwise.
    fn pass(&mut self, mode: Mode) -> impl Future<Output = Result<PassOutcome, PassError>>;
}

/// Plans `set` on the node and applies it in [`Mode::Apply`]. The usual body of a file agent's
/// pass after computing its desired set.
pub fn converge(
    root: &NodeRoot,
    set: &FileSet,
    mode: Mode,
    opts: &ApplyOptions<'_>,
) -> Result<PassOutcome, PassError> {
    let p = plan(root, set).map_err(PassError::runtime)?;
    if mode == Mode::Apply && !p.is_empty() {
        let report = apply(root, &p, opts).map_err(PassError::runtime)?;
        for op in &p.ops {
            tracing::debug!(path = %op.path().display(), op = op.kind(), "applied");
        }
        if let Some(b) = report.backup {
            tracing::debug!(generation = %b.display(), "backed up replaced files");
        }
    }
    Ok(PassOutcome::from_plan(&p))
}

/// Readiness shared with the admin server.
#[derive(Debug, Clone)]
pub struct Readiness {
    inner: Arc<ReadinessInner>,
}

#[derive(Debug)]
struct ReadinessInner {
    last_success_unix: AtomicI64,
    max_age: Duration,
}

impl Readiness {
    /// Ready while the last success is younger than `max_age`.
    pub fn new(max_age: Duration) -> Self {
        let inner = ReadinessInner {
            last_success_unix: AtomicI64::new(0),
            max_age,
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Records a successful pass at `now`.
    pub fn mark_success(&self, now: SystemTime) {
        self.inner
            .last_success_unix
            .store(unix_secs(now), Ordering::Relaxed);
    }

    /// Whether the agent is ready at `now`.
    pub fn is_ready(&self, now: SystemTime) -> bool {
        let last = self.inner.last_success_unix.load(Ordering::Relaxed);
        let age = unix_secs(now).saturating_sub(last);
        last > 0 && u64::try_from(age).is_ok_and(|a| a <= self.inner.max_age.as_secs())
    }
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// How [`run`] drives the agent.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// One pass and exit (implied by `DryRun` and `Check`).
    pub once: bool,
    /// What passes do with their plans.
    pub mode: Mode,
    /// Periodic resync interval (jittered ±10 %).
    pub resync: Duration,
    /// First retry delay after a failure; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Cap of the retry delay.
    pub max_backoff: Duration,
}

impl RunOptions {
    /// Options with the default resync (5 min) and backoff (1 s to 2 min).
    pub fn new(once: bool, mode: Mode) -> Self {
        Self {
            once: once || mode != Mode::Apply,
            mode,
            resync: Duration::from_secs(300),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(120),
        }
    }
}

/// Runs `agent` as configured and returns the process exit code.
pub async fn run<A: Agent>(
    agent: &mut A,
    opts: &RunOptions,
    triggers: Triggers,
    metrics: &ReconcileMetrics,
    readiness: &Readiness,
) -> Code {
    if opts.once {
        return match one_pass(
            agent,
            opts.mode,
            Trigger::Start,
            1,
            metrics,
            readiness,
            false,
        )
        .await
        {
            Ok(outcome) => {
                let printed = if opts.mode == Mode::Apply {
                    Code::Ok
                } else {
                    crate::exit::print(&outcome.rendered)
                };
                if opts.mode == Mode::Check && outcome.changes() > 0 {
                    Code::Drift
                } else {
                    printed
                }
            }
            Err(e) => {
                crate::exit::report_fatal(&e, std::path::Path::new(crate::exit::TERMINATION_LOG));
                e.code()
            }
        };
    }
    match daemon(agent, opts, triggers, metrics, readiness).await {
        Ok(()) => Code::Ok,
        Err(e) => {
            error!(error = %chain(&e), "cannot install signal handlers");
            Code::Failure
        }
    }
}

/// SIGTERM and SIGINT, handled together: what ends a long-running cpm process.
#[derive(Debug)]
pub struct Termination {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Termination {
    /// Installs both handlers; from then on these signals no longer kill the process.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for either signal; returns its name (`SIGTERM` or `SIGINT`).
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            biased;
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

async fn daemon<A: Agent>(
    agent: &mut A,
    opts: &RunOptions,
    mut triggers: Triggers,
    metrics: &ReconcileMetrics,
    readiness: &Readiness,
) -> std::io::Result<()> {
    let mut termination = Termination::install()?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut backoff = opts.min_backoff;
    let mut pending = Some(Trigger::Start);
    let mut next_at = Instant::now();
    let mut timer_trigger = Trigger::Resync;
    let mut pass_no = 0u64;
    loop {
        if let Some(trigger) = pending.take() {
            pass_no += 1;
            match one_pass(agent, opts.mode, trigger, pass_no, metrics, readiness, true).await {
                Ok(_) => {
                    backoff = opts.min_backoff;
                    next_at = Instant::now() + jitter(opts.resync, 0.1);
                    timer_trigger = Trigger::Resync;
                }
                Err(_) => {
                    next_at = Instant::now() + jitter(backoff, 0.2);
                    backoff = (backoff * 2).min(opts.max_backoff);
                    timer_trigger = Trigger::Retry;
                }
            }
        }
        tokio::select! {
            biased;
            sig = termination.recv() => { info!(agent = agent.name(), "{sig}: exiting"); return Ok(()) }
            _ = triggers.stop_rx.wait_for(|stop| *stop) => {
                info!(agent = agent.name(), "stopped: exiting");
                return Ok(());
            }
            _ = hup.recv() => pending = Some(Trigger::Signal),
            Some(t) = triggers.rx.recv() => {
                // Merge a burst of events into one pass.
                while triggers.rx.try_recv().is_ok() {}
                pending = Some(t);
            }
            () = tokio::time::sleep_until(next_at.into()) => pending = Some(timer_trigger),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn one_pass<A: Agent>(
    agent: &mut A,
    mode: Mode,
    trigger: Trigger,
    pass_no: u64,
    metrics: &ReconcileMetrics,
    readiness: &Readiness,
    log_errors: bool,
) -> Result<PassOutcome, PassError> {
    let span = info_span!(
        "pass",
        agent = agent.name(),
        pass = pass_no,
        trigger = trigger.name()
    );
    async {
        let start = Instant::now();
        let result = agent.pass(mode).await;
        let secs = start.elapsed().as_secs_f64();
        let now = SystemTime::now();
        let unix_now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        metrics.observe_pass(result.is_ok(), secs, unix_now);
        match &result {
            Ok(outcome) => {
                metrics.observe_plan(&outcome.summary);
                readiness.mark_success(now);
                let applied = if mode == Mode::Apply {
                    outcome.changes()
                } else {
                    0
                };
                let duration_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                info!(
                    planned = outcome.changes(),
                    applied, duration_ms, "pass complete"
                );
            }
            Err(e) if log_errors => error!(error = %chain(e), "pass failed"),
            Err(_) => {}
        }
        result
    }
    .instrument(span)
    .await
}

/// `base` scaled by a random factor in `[1 - spread, 1 + spread]`.
pub fn jitter(base: Duration, spread: f64) -> Duration {
    let factor = 1.0 + spread * (rand::random::<f64>() * 2.0 - 1.0);
    base.mul_f64(factor.max(0.0))
}

#[cfg(test)]
mod tests;
