//! proxy-reloader's domain metrics.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `cpm_proxy_reloader_ready_endpoints` | gauge (ready endpoints of `default/kubernetes`) | – |
//! | `cpm_proxy_reloader_upstreams` | gauge (entries in the upstream file) | – |
//! | `cpm_proxy_reloader_pending_removals` | gauge (listed, not ready, within the grace period) | – |
//! | `cpm_proxy_reloader_kept_last_list_total` | counter (passes that kept the current list because nothing was ready) | – |

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The proxy-reloader metrics.
#[derive(Debug, Clone, Default)]
pub struct ReloaderMetrics {
    /// Ready endpoints.
    pub ready: Gauge,
    /// Upstreams written.
    pub upstreams: Gauge,
    /// Pending removals.
    pub pending: Gauge,
    /// Passes that kept the last list.
    pub kept: Counter,
}

impl ReloaderMetrics {
    /// Registers the metrics on `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "cpm_proxy_reloader_ready_endpoints",
            "Ready endpoints of Service default/kubernetes",
            m.ready.clone(),
        );
        registry.register(
            "cpm_proxy_reloader_upstreams",
            "Entries of the upstream file",
            m.upstreams.clone(),
        );
        registry.register(
            "cpm_proxy_reloader_pending_removals",
            "Upstreams listed but not ready, within the removal grace period",
            m.pending.clone(),
        );
        registry.register(
            "cpm_proxy_reloader_kept_last_list",
            "Passes that kept the current list because no endpoint was ready",
            m.kept.clone(),
        );
        m
    }
}
