//! Active health checks: `GET https://<upstream>/readyz` verified against the cluster CA, on a
//! fixed tick (checks overlap when one hangs, so a blackholed upstream fails `fall` checks within
//! about `interval × (fall − 1) + timeout + interval`), fed into the upstream's hysteresis.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cpm_core::http::{Client, Verify};
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
        let mut client = CaClient::default();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if inflight.len() >= MAX_IN_FLIGHT {
                        continue;
                    }
                    match client.current(&cfg.ca_file) {
                        Ok(c) => {
                            let url = url.clone();
                            let timeout = cfg.timeout;
                            inflight.spawn(async move { check(&c, &url, timeout).await });
                        }
                        Err(e) => {
                            debug!(path = %cfg.ca_file.display(), error = %e, "CA not usable: health check failed");
                            up.record_check(false);
                        }
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

/// The HTTPS client for the CA file's current content: re-read every check (the CA can be
/// rotated), rebuilt only when the bytes change, so checks resume TLS sessions in between.
#[derive(Default)]
struct CaClient {
    pem: Vec<u8>,
    client: Option<Client>,
}

impl CaClient {
    fn current(&mut self, ca_file: &Path) -> anyhow::Result<Client> {
        let pem = std::fs::read(ca_file)?;
        match &self.client {
            Some(c) if pem == self.pem => Ok(c.clone()),
            _ => {
                let c = Client::new(&Verify::Ca(pem.clone()))?;
                self.pem = pem;
                self.client = Some(c.clone());
                Ok(c)
            }
        }
    }
}

async fn check(client: &Client, url: &str, timeout: Duration) -> bool {
    match client.get(url, timeout).await {
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
