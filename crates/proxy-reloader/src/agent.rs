//! The proxy-reloader agent: list the EndpointSlices of `default/kubernetes`, decide the upstream
//! list (grace period, never empty), write it atomically, and wake itself when a pending removal
//! is due.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cpm_core::apply::ApplyOptions;
use cpm_core::fileset::{DesiredFile, FileSet};
use cpm_core::kube::{ClientOptions, KubeError};
use cpm_core::node::NodeRoot;
use cpm_core::reconcile::{Agent, Mode, PassError, PassOutcome, Trigger, TriggerSender, converge};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::desired::{Inputs, desired, parse, ready_endpoints, render};
use crate::metrics::ReloaderMetrics;

/// The agent's name in logs and metrics.
pub const AGENT: &str = "proxy-reloader";

/// The label selecting the EndpointSlices of Service `default/kubernetes`.
pub const SELECTOR: &str = "kubernetes.io/service-name=kubernetes";

/// The namespace of Service `kubernetes`.
pub const NAMESPACE: &str = "default";

/// Listing the EndpointSlices failed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The client could not be built.
    #[error(transparent)]
    Client(#[from] KubeError),
    /// The request failed.
    #[error("cannot list EndpointSlices {SELECTOR} in {NAMESPACE}")]
    List(#[source] kube::Error),
}

/// Where a pending removal's wake-up is sent (filled when the daemon starts its watchers).
pub type WakeSlot = Arc<Mutex<Option<TriggerSender>>>;

/// The proxy-reloader agent.
pub struct ReloaderAgent {
    root: NodeRoot,
    file: PathBuf,
    client_opts: ClientOptions,
    client: Option<kube::Client>,
    grace: Duration,
    last_seen: BTreeMap<SocketAddr, Instant>,
    wake: WakeSlot,
    timer: Option<JoinHandle<()>>,
    metrics: ReloaderMetrics,
}

impl std::fmt::Debug for ReloaderAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloaderAgent")
            .field("file", &self.file)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl ReloaderAgent {
    /// An agent writing `file` (relative to `root`).
    pub fn new(
        root: NodeRoot,
        file: PathBuf,
        client_opts: ClientOptions,
        grace: Duration,
        metrics: ReloaderMetrics,
    ) -> Self {
        Self {
            root,
            file,
            client_opts,
            client: None,
            grace,
            last_seen: BTreeMap::new(),
            wake: Arc::new(Mutex::new(None)),
            timer: None,
            metrics,
        }
    }

    /// The slot the daemon fills with a trigger sender, for pending-removal wake-ups.
    pub fn wake_slot(&self) -> WakeSlot {
        self.wake.clone()
    }

    async fn list(&mut self) -> Result<BTreeSet<SocketAddr>, ListError> {
        let client = match &self.client {
            Some(c) => c.clone(),
            None => {
                let c = cpm_core::kube::client(&self.client_opts).await?;
                self.client = Some(c.clone());
                c
            }
        };
        let api: Api<EndpointSlice> = Api::namespaced(client, NAMESPACE);
        let list = api
            .list(&ListParams::default().labels(SELECTOR))
            .await
            .map_err(ListError::List)?;
        Ok(ready_endpoints(&list.items))
    }

    fn current(&self) -> BTreeSet<SocketAddr> {
        self.root
            .join(&self.file)
            .ok()
            .and_then(|p| std::fs::read(p).ok())
            .map(|b| parse(&b))
            .unwrap_or_default()
    }

    fn schedule_wake(&mut self, after: Duration) {
        if let Some(t) = self.timer.take() {
            t.abort();
        }
        let tx = self
            .wake
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(tx) = tx {
            self.timer = Some(tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = tx.send(Trigger::Resync);
            }));
        }
    }
}

impl Agent for ReloaderAgent {
    fn name(&self) -> &'static str {
        AGENT
    }

    async fn pass(&mut self, mode: Mode) -> Result<PassOutcome, PassError> {
        // An unreachable API fails the pass: the file keeps the last known list. The client is
        // rebuilt on the next pass (the kubelet's client certificate may have been rotated).
        let ready = match self.list().await {
            Ok(r) => r,
            Err(e) => {
                self.client = None;
                return Err(PassError::runtime(e));
            }
        };
        let current = self.current();
        let now = Instant::now();
        for a in &ready {
            self.last_seen.insert(*a, now);
        }
        // Listed before this process started: the grace period starts now.
        for a in &current {
            self.last_seen.entry(*a).or_insert(now);
        }
        let d = desired(&Inputs {
            ready: &ready,
            current: &current,
            last_seen: &self.last_seen,
            now,
            grace: self.grace,
        });
        let to_gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.metrics.ready.set(to_gauge(ready.len()));
        self.metrics.pending.set(to_gauge(d.pending.len()));
        if d.kept_current {
            self.metrics.kept.inc();
            warn!(
                upstreams = current.len(),
                "no ready API server endpoint: keeping the current list"
            );
        }
        if d.list.is_empty() {
            warn!("no ready API server endpoint and no previous list: nothing written");
            return Ok(PassOutcome::default());
        }
        let mut set = FileSet::new();
        set.file(DesiredFile::new(self.file.clone(), render(&d.list), 0o644))
            .map_err(PassError::runtime)?;
        let outcome = converge(&self.root, &set, mode, &ApplyOptions::default())?;
        if mode == Mode::Apply {
            self.metrics.upstreams.set(to_gauge(d.list.len()));
            if outcome.changes() > 0 {
                info!(upstreams = ?d.list, pending = d.pending.len(), "upstream file written");
            }
            // Forget endpoints that are gone for good.
            self.last_seen
                .retain(|a, _| d.list.contains(a) || ready.contains(a));
            if let Some(next) = d.pending.values().min() {
                debug!(
                    after_ms = u64::try_from(next.as_millis()).unwrap_or(u64::MAX),
                    "pending removal"
                );
                self.schedule_wake(*next + Duration::from_millis(50));
            }
        }
        Ok(outcome)
    }
}
