//! Tests of the reconcile driver: exit codes under `--once`, coalescing, retry and stop.

use std::sync::Mutex;

use prometheus_client::registry::Registry;

use super::*;

/// A scripted agent: each pass pops the next result (the last one repeats) and logs its mode.
struct Scripted {
    results: Vec<Result<usize, bool>>,
    log: Arc<Mutex<Vec<Mode>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("scripted failure")]
struct Failure;

impl Agent for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }
    async fn pass(&mut self, mode: Mode) -> Result<PassOutcome, PassError> {
        self.log.lock().unwrap().push(mode);
        let r = if self.results.len() > 1 {
            self.results.remove(0)
        } else {
            self.results[0]
        };
        match r {
            Ok(n) => Ok(PassOutcome {
                rendered: format!("{n} changes\n"),
                summary: vec![("create", n)],
            }),
            Err(true) => Err(PassError::input(Failure)),
            Err(false) => Err(PassError::runtime(Failure)),
        }
    }
}

fn agent(results: Vec<Result<usize, bool>>) -> (Scripted, Arc<Mutex<Vec<Mode>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    (
        Scripted {
            results,
            log: log.clone(),
        },
        log,
    )
}

fn fixtures() -> (ReconcileMetrics, Readiness) {
    let mut reg = Registry::default();
    (
        ReconcileMetrics::register(&mut reg, "scripted"),
        Readiness::new(Duration::from_secs(900)),
    )
}

async fn check_once(mode: Mode, result: Result<usize, bool>, expected: Code) {
    let (mut a, log) = agent(vec![result]);
    let (m, r) = fixtures();
    let code = run(
        &mut a,
        &RunOptions::new(true, mode),
        Triggers::new(),
        &m,
        &r,
    )
    .await;
    assert_eq!(code, expected, "{mode:?} {result:?}");
    assert_eq!(*log.lock().unwrap(), vec![mode]);
    assert_eq!(r.is_ready(SystemTime::now()), result.is_ok());
}

#[tokio::test]
async fn once_maps_outcomes_to_the_exit_table() {
    check_once(Mode::Apply, Ok(2), Code::Ok).await;
    check_once(Mode::DryRun, Ok(2), Code::Ok).await;
    check_once(Mode::Check, Ok(2), Code::Drift).await;
    check_once(Mode::Check, Ok(0), Code::Ok).await;
    check_once(Mode::Apply, Err(true), Code::Usage).await;
    check_once(Mode::Apply, Err(false), Code::Failure).await;
}

#[test]
fn dry_run_and_check_imply_once() {
    assert!(RunOptions::new(false, Mode::DryRun).once);
    assert!(RunOptions::new(false, Mode::Check).once);
    assert!(!RunOptions::new(false, Mode::Apply).once);
}

async fn wait_for(log: &Arc<Mutex<Vec<Mode>>>, n: usize) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while log.lock().unwrap().len() < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("passes did not happen");
}

#[tokio::test]
async fn daemon_retries_failures_then_runs_on_triggers_and_stops() {
    let (mut a, log) = agent(vec![Err(false), Err(false), Ok(0)]);
    let (m, r) = fixtures();
    let mut opts = RunOptions::new(false, Mode::Apply);
    opts.min_backoff = Duration::from_millis(10);
    opts.resync = Duration::from_secs(3600);
    let triggers = Triggers::new();
    let tx = triggers.sender();
    let stopper = triggers.stopper();
    let handle = tokio::spawn(async move { run(&mut a, &opts, triggers, &m, &r).await });
    // Two failures are retried with backoff until the third pass succeeds.
    wait_for(&log, 3).await;
    // A burst of triggers while idle yields at least one more pass.
    for _ in 0..50 {
        tx.send(Trigger::File).unwrap();
    }
    wait_for(&log, 4).await;
    stopper.stop();
    let code = tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, Code::Ok);
    let passes = log.lock().unwrap().len();
    assert!(
        (4..=5).contains(&passes),
        "a burst of 50 events merged into at most 2 passes, got {passes}"
    );
}

#[test]
fn readiness_expires() {
    let r = Readiness::new(Duration::from_secs(60));
    let t0 = SystemTime::now();
    assert!(!r.is_ready(t0));
    r.mark_success(t0);
    assert!(r.is_ready(t0 + Duration::from_secs(60)));
    assert!(!r.is_ready(t0 + Duration::from_secs(61)));
}

#[test]
fn jitter_stays_in_range() {
    for _ in 0..100 {
        let d = jitter(Duration::from_secs(100), 0.1);
        assert!(
            d >= Duration::from_secs(90) && d <= Duration::from_secs(110),
            "{d:?}"
        );
    }
}
