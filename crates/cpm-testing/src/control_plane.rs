//! The control plane of a simulated cluster as processes: `cpm-test-apiserver`.
//!
//! - `store`: the cluster's state, one process per cluster: the test API server
//!   ([`crate::apiserver`]) on a given address with a given CA, request-header authentication
//!   for the fronts, service-account tokens and the namespaces kube-apiserver creates.
//! - `kube-apiserver`: what the kubelet runs for the `kube-apiserver` static pod. It accepts the
//!   flags cpm-manifests renders, serves `/livez`, `/readyz`, `/healthz` and `/version` itself
//!   with the `--tls-cert-file` certificate, authenticates its clients (`--client-ca-file`,
//!   `--requestheader-*`) and forwards every other request to the store, as a streaming reverse
//!   proxy, with the identity in `X-Remote-*` headers over its `--proxy-client-cert-file`
//!   certificate (a bearer token passes through for the store to judge). It finds the store
//!   through the environment ([`STORE_URL_ENV`], [`STORE_CA_ENV`]): the only input that is not
//!   a kube-apiserver flag. It publishes `kube-system/extension-apiserver-authentication` as
//!   kube-apiserver does.
//! - `kube-controller-manager`, `kube-scheduler`: stand-ins that accept the rendered flags and
//!   serve `/healthz`, `/livez`, `/readyz` (anonymous) and `/metrics` (a client certificate or a
//!   bearer token, authorised by SubjectAccessReview, as the real components delegate) on their
//!   secure ports, and hold their leader-election Lease when `--leader-elect` (or the
//!   scheduler's configuration) asks for it. The controller manager's leader also does the two
//!   chores pods depend on: a `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap
//!   (`--root-ca-file`) in every namespace.
//!
//! Invoked through a link named `kube-apiserver`, `kube-controller-manager` or
//! `kube-scheduler`, the binary runs that command ([`cli::args`]), so a simulated kubelet can put
//! it where the image's binary would be and run the rendered command unchanged.
//!
//! Flags each command honours and those it only accepts are listed in `docs/testing.md`; an
//! unknown flag is a usage error (exit 2), so a typo in what cpm renders shows.

pub mod cli;
mod client;
mod endpoints;
mod flags;
mod front;
pub mod harness;
mod serving;
mod standin;
mod store;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cli::{Cli, Command};

use crate::apiserver::ApiServerError;

/// The store's URL (`https://host:port`), for the `kube-apiserver` front.
pub const STORE_URL_ENV: &str = "CPM_SIM_STORE_URL";
/// A PEM file with the CA of the store's serving certificate; the front's `--client-ca-file`
/// when unset (the store's certificate is issued by the cluster CA).
pub const STORE_CA_ENV: &str = "CPM_SIM_STORE_CA";
/// The Kubernetes version to report (`v1.33.5`, the image tag the simulator runs); each
/// component reports [`DEFAULT_VERSION`] without it.
pub const VERSION_ENV: &str = "CPM_SIM_KUBE_VERSION";
/// The directory a component's `/` is (a simulated node's `--root`): absolute paths named inside
/// configuration files (the scheduler's `clientConnection.kubeconfig`) are read under it. The
/// command's own paths are mapped by whoever runs it.
pub const ROOT_ENV: &str = "CPM_SIM_ROOT";
/// What `/version` and the build-info metric report without [`VERSION_ENV`].
pub const DEFAULT_VERSION: &str = "v1.33.0-cpm-testing";

/// A process of the simulated control plane could not start or failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    /// A flag or environment value is unusable (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A file named by a flag could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A certificate, key or TLS setting is unusable.
    #[error("tls: {0}")]
    Tls(String),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The test API server could not start.
    #[error("the test API server")]
    ApiServer(#[source] ApiServerError),
    /// A kube client could not be built.
    #[error("kube client")]
    Kube(#[source] cpm_core::kube::KubeError),
    /// Waiting for a signal failed.
    #[error("cannot wait for signals")]
    Signal(#[source] std::io::Error),
}

impl ControlPlaneError {
    /// The exit code (2 for bad flags or inputs, 1 otherwise).
    pub fn exit_code(&self) -> cpm_core::exit::Code {
        use cpm_core::exit::Code;
        match self {
            Self::Usage(_) | Self::Read { .. } | Self::Tls(_) => Code::Usage,
            _ => Code::Failure,
        }
    }
}

/// Runs the selected command until SIGTERM or SIGINT.
pub async fn run(cli: Cli) -> Result<(), ControlPlaneError> {
    match cli.command {
        Command::Store(args) => store::run(*args).await,
        Command::KubeApiserver(args) => front::run(*args).await,
        Command::KubeControllerManager(args) => {
            let args = *args;
            let root_ca = args.root_ca_file.as_deref().map(read).transpose()?;
            let component = standin::Component::ControllerManager { root_ca };
            standin::run(component, args.common, None).await
        }
        Command::KubeScheduler(args) => {
            let args = *args;
            standin::run(standin::Component::Scheduler, args.common, args.config).await
        }
    }
}

/// The file's content.
fn read(path: &Path) -> Result<String, ControlPlaneError> {
    std::fs::read_to_string(path).map_err(|source| ControlPlaneError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The version the environment names, else [`DEFAULT_VERSION`].
fn kube_version() -> String {
    std::env::var(VERSION_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map_or_else(|| DEFAULT_VERSION.to_string(), |v| v.trim().to_string())
}

/// Waits for SIGTERM or SIGINT.
async fn terminated() -> Result<(), ControlPlaneError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(ControlPlaneError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ControlPlaneError::Signal)?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// A Go duration (`15s`, `1m30s`, `500ms`, `2h`), as the components' flags take them.
pub(crate) fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, tail) = rest.split_at(digits);
        let number: f64 = number.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::try_from_secs_f64(number * seconds).map_err(|_| bad())?;
        rest = tail;
    }
    Ok(total)
}

/// A Go boolean (`strconv.ParseBool`: `1 t T TRUE true True 0 f F FALSE false False`).
pub(crate) fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("invalid boolean {s:?}")),
    }
}

#[cfg(test)]
mod tests;
