//! Runs an [`Agent`] as its binary's default command: one pass under `--once`/`--dry-run`/
//! `--check`, or a daemon with file triggers and the admin server.
//!
//! Every agent's `run` ends here, so the wiring (triggers, watches, admin server, readiness,
//! exit codes) is written once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use prometheus_client::registry::Registry;
use tracing::info;

use crate::cli::CommonArgs;
use crate::exit::{Code, TERMINATION_LOG, report_fatal};
use crate::metrics::ReconcileMetrics;
use crate::reconcile::{Agent, Readiness, Triggers, run};

/// Starts a watch that marks the agent dirty through the sender; the returned guard keeps it
/// alive (a kube watch from `cpm_core::kube::watch_triggers`, for example).
pub type WatchStarter = Box<dyn FnOnce(crate::reconcile::TriggerSender) -> Box<dyn std::any::Any>>;

/// What the runner needs besides the agent.
pub struct RunnerOptions {
    /// The binary's default admin address (overridden by `--admin-addr`).
    pub default_admin: SocketAddr,
    /// Paths whose changes trigger a pass (parents are watched).
    pub watch: Vec<PathBuf>,
    /// Other watches started in daemon mode (not under `--once`).
    pub watchers: Vec<WatchStarter>,
}

impl std::fmt::Debug for RunnerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerOptions")
            .field("default_admin", &self.default_admin)
            .field("watch", &self.watch)
            .field("watchers", &self.watchers.len())
            .finish()
    }
}

/// Runs `agent` as `common` says; `registry` already holds the agent's domain metrics.
pub async fn run_agent<A: Agent>(
    agent: &mut A,
    common: &CommonArgs,
    mut registry: Registry,
    opts: RunnerOptions,
) -> Code {
    let reconcile_metrics = ReconcileMetrics::register(&mut registry, agent.name());
    let run_opts = common.run_options();
    let triggers = Triggers::new();
    let readiness = Readiness::new(run_opts.resync * 3);
    let fatal = |e: &(dyn std::error::Error + 'static)| {
        report_fatal(e, Path::new(TERMINATION_LOG));
        Code::Failure
    };
    let _watch = if run_opts.once {
        None
    } else {
        match crate::watch::watch_files(&opts.watch, triggers.sender()) {
            Ok(w) => Some(w),
            Err(e) => return fatal(&e),
        }
    };
    let mut _guards = Vec::new();
    if !run_opts.once {
        for start in opts.watchers {
            _guards.push(start(triggers.sender()));
        }
        let addr = common.admin_addr.unwrap_or(opts.default_admin);
        match crate::admin::spawn(addr, registry, readiness.clone()).await {
            Ok(srv) => info!(addr = %srv.addr, "admin server listening"),
            Err(e) => return fatal(&e),
        }
    }
    run(agent, &run_opts, triggers, &reconcile_metrics, &readiness).await
}

/// Runs `main` on a multi-threaded tokio runtime and turns its code into the process exit code.
/// Every binary's `main` ends here.
pub fn block_on(main: impl Future<Output = Code>) -> std::process::ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(main).into(),
        Err(e) => report_fatal_code(&e),
    }
}

fn report_fatal_code(e: &std::io::Error) -> std::process::ExitCode {
    eprintln!("error: cannot start the async runtime: {e}");
    Code::Failure.into()
}
