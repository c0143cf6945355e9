//! The per-node health gate: after a component's manifest is written, wait until the component
//! answers healthy (and, for the apiserver, serves the expected version) within a deadline.
//! The agent restores the previous files when the gate fails.

use std::time::{Duration, Instant};

use cpm_core::http::{Verify, get};

use crate::layout::Component;

/// One check: a URL that must answer 200, and optionally a `gitVersion` its JSON must report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The URL.
    pub url: String,
    /// How to verify TLS.
    pub verify: VerifyMode,
    /// For `/version`: the expected `gitVersion`.
    pub git_version: Option<String>,
}

/// TLS verification of a check (the CA bundle is read when the gate runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyMode {
    /// Against the cluster CA (the apiserver's serving certificate is signed by it).
    ClusterCa,
    /// None: loopback endpoints with self-signed serving certificates.
    Insecure,
}

/// etcd's metrics listener (plain HTTP on loopback), which serves `/health` in every etcd
/// release cpm runs.
pub const ETCD_METRICS_URL: &str = "http://127.0.0.1:2381";

/// The default checks of `component` on a node with IP `ip`, expecting `version`.
pub fn default_checks(component: Component, ip: std::net::IpAddr, version: &str) -> Vec<Check> {
    let host = match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        std::net::IpAddr::V4(v4) => v4.to_string(),
    };
    let check = |url: String, verify, git_version| Check {
        url,
        verify,
        git_version,
    };
    match component {
        Component::Apiserver => vec![
            check(
                format!("https://{host}:6443/readyz"),
                VerifyMode::ClusterCa,
                None,
            ),
            check(
                format!("https://{host}:6443/version"),
                VerifyMode::ClusterCa,
                Some(version.to_string()),
            ),
        ],
        Component::ControllerManager | Component::Scheduler => {
            vec![check(
                format!("https://127.0.0.1:{}/healthz", component.port()),
                VerifyMode::Insecure,
                None,
            )]
        }
    }
}

/// The gate did not pass.
#[derive(Debug, thiserror::Error)]
#[error("{component} not healthy within {timeout:?}: {last}")]
pub struct GateError {
    /// The component.
    pub component: &'static str,
    /// The deadline.
    pub timeout: Duration,
    /// The last failure seen.
    pub last: String,
}

/// Polls every check until all pass once in a row, or `timeout` passes.
pub async fn wait_healthy(
    component: Component,
    checks: &[Check],
    cluster_ca: &[u8],
    timeout: Duration,
    interval: Duration,
) -> Result<(), GateError> {
    wait_healthy_named(component.name(), checks, cluster_ca, timeout, interval).await
}

/// [`wait_healthy`] for a component by name (etcd, which cpm-etcd renders).
pub async fn wait_healthy_named(
    component: &'static str,
    checks: &[Check],
    cluster_ca: &[u8],
    timeout: Duration,
    interval: Duration,
) -> Result<(), GateError> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check(checks, cluster_ca).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() + interval > deadline {
            return Err(GateError {
                component,
                timeout,
                last,
            });
        }
        tokio::time::sleep(interval).await;
    }
}

/// Runs every check once: `Err` with the first failure.
pub async fn check(checks: &[Check], cluster_ca: &[u8]) -> Result<(), String> {
    for c in checks {
        let verify = match c.verify {
            VerifyMode::ClusterCa => Verify::Ca(cluster_ca.to_vec()),
            VerifyMode::Insecure => Verify::Insecure,
        };
        let r = get(&c.url, &verify, Duration::from_secs(5))
            .await
            .map_err(|e| cpm_core::exit::chain(&e))?;
        if r.status != 200 {
            return Err(format!("{} answered {}", c.url, r.status));
        }
        if let Some(want) = &c.git_version {
            let v: serde_json::Value =
                serde_json::from_slice(&r.body).map_err(|e| format!("{}: not JSON: {e}", c.url))?;
            let got = v.get("gitVersion").and_then(|g| g.as_str()).unwrap_or("");
            if got != want {
                return Err(format!("{} serves {got:?}, expected {want:?}", c.url));
            }
        }
    }
    Ok(())
}
