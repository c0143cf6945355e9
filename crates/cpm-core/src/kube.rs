//! Kubernetes client setup and kube watch triggers (feature `kube`).
//!
//! [`client`] builds a [`kube::Client`] from `--kubeconfig` or, without one, from the in-cluster
//! service account (rustls, the cluster CA from the kubeconfig or the service account), with
//! explicit connect and read timeouts.
//!
//! [`watch_triggers`] is the kube analogue of [`crate::watch::watch_files`]: it runs a
//! `kube_runtime::watcher` (default backoff, so it relists on `410 Gone` and reconnects after a
//! cut stream) and sends [`Trigger::Kube`] on every event. Events carry no data: the agent
//! re-reads everything on its next pass.
//!
//! ```no_run
//! # async fn demo(tx: cpm_core::reconcile::TriggerSender) -> Result<(), cpm_core::kube::KubeError> {
//! use std::time::Duration;
//! use cpm_core::kube::{ClientOptions, client, watch_triggers};
//! use k8s_openapi::api::core::v1::Node;
//!
//! let opts = ClientOptions {
//!     kubeconfig: None,
//!     context: None,
//!     connect_timeout: Duration::from_secs(10),
//!     read_timeout: Duration::from_secs(295),
//! };
//! let client = client(&opts).await?;
//! let nodes: kube::Api<Node> = kube::Api::all(client);
//! let _watch = watch_triggers(nodes, kube::runtime::watcher::Config::default(), tx);
//! # Ok(()) }
//! ```

use std::fmt::Debug;
use std::path::PathBuf;
use std::time::Duration;

use ::kube::runtime::{WatchStreamExt, watcher};
use ::kube::{Api, Client, Config, Resource};
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::reconcile::{Trigger, TriggerSender};

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `--kubeconfig`; `None` means the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// A kubeconfig context other than the current one.
    pub context: Option<String>,
    /// TCP and TLS connect timeout.
    pub connect_timeout: Duration,
    /// Per-read timeout; keep it above the watch timeout kube-rs asks for (290 s).
    pub read_timeout: Duration,
}

/// The client could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig file could not be read or used.
    #[error("cannot load kubeconfig {path}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// No `--kubeconfig` and no in-cluster service account.
    #[error("no --kubeconfig and no in-cluster service account")]
    InCluster(#[source] kube::config::InClusterError),
    /// The client could not be built from the config (TLS material, proxy).
    #[error("cannot build the kube client")]
    Client(#[source] kube::Error),
}

/// A client from `--kubeconfig` when one is given (5 s connect, 30 s read timeouts), else
/// `None`: agents that can work without the cluster (keeping what the node has) use this.
pub async fn optional_client(
    kubeconfig: Option<&std::path::Path>,
) -> Result<Option<Client>, KubeError> {
    let Some(path) = kubeconfig else {
        return Ok(None);
    };
    let opts = ClientOptions {
        kubeconfig: Some(path.to_path_buf()),
        context: None,
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(30),
    };
    client(&opts).await.map(Some)
}

/// The [`kube::Config`] for `opts`, timeouts applied.
pub async fn config(opts: &ClientOptions) -> Result<Config, KubeError> {
    let mut config = match &opts.kubeconfig {
        Some(path) => {
            let err = |source| KubeError::Kubeconfig {
                path: path.clone(),
                source,
            };
            let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(err)?;
            let options = kube::config::KubeConfigOptions {
                context: opts.context.clone(),
                cluster: None,
                user: None,
            };
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(err)?
        }
        None => Config::incluster().map_err(KubeError::InCluster)?,
    };
    config.connect_timeout = Some(opts.connect_timeout);
    config.read_timeout = Some(opts.read_timeout);
    Ok(config)
}

/// A client for `opts` (rustls).
pub async fn client(opts: &ClientOptions) -> Result<Client, KubeError> {
    let config = config(opts).await?;
    Client::try_from(config).map_err(KubeError::Client)
}

/// Keeps a kube watch running; dropping it stops the watch.
#[derive(Debug)]
pub struct KubeWatch {
    task: JoinHandle<()>,
}

impl KubeWatch {
    /// Whether the watch task has ended (its trigger receiver was dropped).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for KubeWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends [`Trigger::Kube`] for every item of a watcher stream until the stream ends or the
/// receiver is dropped. Errors are logged at debug level: the default backoff retries them.
pub async fn forward<S, T>(stream: S, tx: TriggerSender)
where
    S: Stream<Item = Result<T, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    loop {
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(_)) => {
                    if tx.send(Trigger::Kube).is_err() {
                        return;
                    }
                }
                Some(Err(e)) => debug!(error = %e, "kube watch error, retrying with backoff"),
                None => {
                    warn!("kube watch stream ended");
                    return;
                }
            },
            () = tx.closed() => return,
        }
    }
}

/// Watches `api` with `config` (default backoff) and sends [`Trigger::Kube`] on every event.
pub fn watch_triggers<K>(api: Api<K>, config: watcher::Config, tx: TriggerSender) -> KubeWatch
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let stream = watcher(api, config).default_backoff();
    KubeWatch {
        task: tokio::spawn(forward(stream, tx)),
    }
}

#[cfg(test)]
mod tests;
