//! api-proxy's metrics.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `cpm_api_proxy_upstream_healthy` | gauge (1 up, 0 down or not yet checked) | `upstream` |
//! | `cpm_api_proxy_upstream_state` | gauge (1 for the current state) | `upstream`, `state`: `unknown`, `up`, `down` |
//! | `cpm_api_proxy_active_connections` | gauge | `upstream` |
//! | `cpm_api_proxy_connections_total` | counter | `upstream` |
//! | `cpm_api_proxy_bytes_total` | counter | `upstream`, `direction`: `tx` (client to upstream), `rx` |
//! | `cpm_api_proxy_connect_failures_total` | counter | `upstream` |
//! | `cpm_api_proxy_health_checks_total` | counter | `upstream`, `result`: `success`, `failure` |
//! | `cpm_api_proxy_evicted_connections_total` | counter | `upstream` |
//! | `cpm_api_proxy_failovers_total` | counter | – |
//! | `cpm_api_proxy_unserved_connections_total` | counter (no upstream accepted the connection) | – |
//! | `cpm_api_proxy_connect_duration_seconds` | histogram | – |
//! | `cpm_api_proxy_upstreams` | gauge (known upstreams) | – |
//! | `cpm_api_proxy_reloads_total` | counter | `result`: `applied`, `unchanged`, `rejected` |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `upstream` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct UpstreamLabel {
    /// `IP:PORT`.
    pub upstream: String,
}

/// `upstream` and `state` labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StateLabels {
    /// `IP:PORT`.
    pub upstream: String,
    /// `unknown`, `up` or `down`.
    pub state: String,
}

/// `upstream` and `direction` labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BytesLabels {
    /// `IP:PORT`.
    pub upstream: String,
    /// `tx` or `rx`.
    pub direction: String,
}

/// `upstream` and `result` labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CheckLabels {
    /// `IP:PORT`.
    pub upstream: String,
    /// `success` or `failure`.
    pub result: String,
}

/// `result` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabel {
    /// The result.
    pub result: String,
}

/// All api-proxy metrics.
#[derive(Debug, Clone)]
pub struct ProxyMetrics {
    /// Health by upstream.
    pub healthy: Family<UpstreamLabel, Gauge>,
    /// State by upstream.
    pub state: Family<StateLabels, Gauge>,
    /// Open proxied connections by upstream.
    pub active: Family<UpstreamLabel, Gauge>,
    /// Proxied connections by upstream.
    pub connections: Family<UpstreamLabel, Counter>,
    /// Bytes by upstream and direction.
    pub bytes: Family<BytesLabels, Counter>,
    /// Failed connects by upstream.
    pub connect_failures: Family<UpstreamLabel, Counter>,
    /// Health checks by upstream and result.
    pub checks: Family<CheckLabels, Counter>,
    /// Connections closed because their upstream went down or away.
    pub evicted: Family<UpstreamLabel, Counter>,
    /// Connect attempts beyond the first within one client connection.
    pub failovers: Counter,
    /// Client connections no upstream accepted.
    pub unserved: Counter,
    /// Connect latency of successful connects.
    pub connect_duration: Histogram,
    /// Known upstreams.
    pub upstreams: Gauge,
    /// Upstream file reloads by result.
    pub reloads: Family<ResultLabel, Counter>,
}

impl ProxyMetrics {
    /// Metrics not registered anywhere (tests).
    pub fn unregistered() -> Self {
        Self {
            healthy: Family::default(),
            state: Family::default(),
            active: Family::default(),
            connections: Family::default(),
            bytes: Family::default(),
            connect_failures: Family::default(),
            checks: Family::default(),
            evicted: Family::default(),
            failovers: Counter::default(),
            unserved: Counter::default(),
            connect_duration: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            upstreams: Gauge::default(),
            reloads: Family::default(),
        }
    }

    /// Registers the metrics on `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::unregistered();
        let r = registry;
        r.register(
            "cpm_api_proxy_upstream_healthy",
            "Whether the upstream passes its health checks",
            m.healthy.clone(),
        );
        r.register(
            "cpm_api_proxy_upstream_state",
            "Health state of the upstream (1 for the current state)",
            m.state.clone(),
        );
        r.register(
            "cpm_api_proxy_active_connections",
            "Open proxied connections",
            m.active.clone(),
        );
        r.register(
            "cpm_api_proxy_connections",
            "Proxied connections",
            m.connections.clone(),
        );
        r.register("cpm_api_proxy_bytes", "Bytes proxied", m.bytes.clone());
        r.register(
            "cpm_api_proxy_connect_failures",
            "Failed connects to the upstream",
            m.connect_failures.clone(),
        );
        r.register(
            "cpm_api_proxy_health_checks",
            "Health checks by result",
            m.checks.clone(),
        );
        r.register(
            "cpm_api_proxy_evicted_connections",
            "Connections closed because their upstream went down or was removed",
            m.evicted.clone(),
        );
        r.register(
            "cpm_api_proxy_failovers",
            "Connect attempts to another upstream within one client connection",
            m.failovers.clone(),
        );
        r.register(
            "cpm_api_proxy_unserved_connections",
            "Client connections no upstream accepted",
            m.unserved.clone(),
        );
        r.register(
            "cpm_api_proxy_connect_duration_seconds",
            "Time to connect to an upstream",
            m.connect_duration.clone(),
        );
        r.register(
            "cpm_api_proxy_upstreams",
            "Known upstreams",
            m.upstreams.clone(),
        );
        r.register(
            "cpm_api_proxy_reloads",
            "Upstream file reloads by result",
            m.reloads.clone(),
        );
        m
    }

    /// Counts a reload.
    pub fn reload(&self, result: &str) {
        self.reloads
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
    }

    /// Drops an upstream's series (it was removed).
    pub fn forget(&self, upstream: &str) {
        let l = UpstreamLabel {
            upstream: upstream.to_string(),
        };
        self.healthy.remove(&l);
        self.active.remove(&l);
        for state in ["unknown", "up", "down"] {
            self.state.remove(&StateLabels {
                upstream: upstream.to_string(),
                state: state.to_string(),
            });
        }
    }
}
