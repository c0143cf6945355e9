//! Active health checks: `GET https://<upstream>/readyz` verified against the cluster CA, on a
//! fixed tick (checks overlap when one hangs, so a blackholed upstream fails `fall` checks within
//! about `interval × (fall − 1) + timeout + interval`), fed into the upstream's hysteresis.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cpm_core::http::{Verify, get};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::MissedTickBehavior;
use tracing::debug;

use crate::pool::Upstream;

/// Health check settings.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// Time between check starts.
    pub interval: Duration,
    /// Deadline of one check (connect, TLS, request).
    pub timeout: Duration,
    /// The cluster CA (PEM), read before every check so a rotation is picked up.
    pub ca_file: PathBuf,
}

/// Checks in flight per upstream, at most.
const MAX_IN_FLIGHT: usize = 4;

/// Monitors `up` until it is removed or `stop` turns true.
pub fn spawn_monitor(
    up: Arc<Upstream>,
    cfg: Arc<HealthConfig>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let url = format!("https://{}/readyz", up.addr);
        let mut tick = tokio::time::interval(cfg.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut state = up.subscribe();
        let mut inflight = JoinSet::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if inflight.len() >= MAX_IN_FLIGHT {
                        continue;
                    }
                    match std::fs::read(&cfg.ca_file) {
                        Ok(pem) => {
                            let url = url.clone();
                            let timeout = cfg.timeout;
                            inflight.spawn(async move { check(&url, pem, timeout).await });
                        }
                        Err(e) => debug!(path = %cfg.ca_file.display(), error = %e, "cannot read the CA: health check skipped"),
                    }
                }
                Some(result) = inflight.join_next() => {
                    if let Ok(ok) = result {
                        up.record_check(ok);
                    }
                }
                r = state.wait_for(|s| s.removed) => {
                    let _ = r;
                    return;
                }
                r = stop.wait_for(|s| *s) => {
                    let _ = r;
                    return;
                }
            }
        }
    })
}

async fn check(url: &str, ca: Vec<u8>, timeout: Duration) -> bool {
    match get(url, &Verify::Ca(ca), timeout).await {
        Ok(r) if r.status == 200 => true,
        Ok(r) => {
            debug!(url, status = r.status, "health check: not ready");
            false
        }
        Err(e) => {
            debug!(url, error = %cpm_core::exit::chain(&e), "health check failed");
            false
        }
    }
}
