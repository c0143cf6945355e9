//! cpm-manifests' domain metrics.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `cpm_static_pod_rollbacks_total` | counter | `component` |
//! | `cpm_static_pod_held_back` | gauge (1 while a failed manifest is held back) | `component` |
//! | `cpm_scheduler_webhooks` | gauge | `state` (`rendered`, `rejected`) |
//! | `cpm_rollout_failed` | gauge (1 while this master's last version rollout failed) | `node` |
//! | `cpm_rollout_version_held` | gauge (1 while `kubernetesVersion` asks another minor than this master runs and no API can serialise the move) | – |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::layout::Component;
use crate::scheduler::SchedulerWebhookMetrics;

/// `component` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ComponentLabel {
    /// Component name.
    pub component: String,
}

/// `node` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct NodeLabel {
    /// Node name.
    pub node: String,
}

/// The manifest metrics.
#[derive(Debug, Clone)]
pub struct ManifestMetrics {
    rollbacks: Family<ComponentLabel, Counter>,
    held_back: Family<ComponentLabel, Gauge>,
    rollout_failed: Family<NodeLabel, Gauge>,
    version_held: Gauge,
    /// Scheduler webhook states.
    pub webhooks: SchedulerWebhookMetrics,
}

impl ManifestMetrics {
    /// Registers the metrics on `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            rollbacks: Family::default(),
            held_back: Family::default(),
            rollout_failed: Family::default(),
            version_held: Gauge::default(),
            webhooks: SchedulerWebhookMetrics::register(registry),
        };
        registry.register(
            "cpm_static_pod_rollbacks",
            "Manifests restored after a failed health gate",
            m.rollbacks.clone(),
        );
        registry.register(
            "cpm_static_pod_held_back",
            "1 while a manifest that failed its health gate is held back",
            m.held_back.clone(),
        );
        registry.register(
            "cpm_rollout_failed",
            "1 while this master's last version rollout failed (rolled back; the rollout is halted)",
            m.rollout_failed.clone(),
        );
        registry.register(
            "cpm_rollout_version_held",
            "1 while kubernetesVersion asks another minor than this master runs and the move is refused because no API can serialise it (no --kubeconfig, or the rollout state cannot be read)",
            m.version_held.clone(),
        );
        m
    }

    /// Sets whether a version change is refused for want of an API to serialise it.
    pub fn version_held(&self, held: bool) {
        self.version_held.set(i64::from(held));
    }

    /// Sets whether the last rollout of `node` failed.
    pub fn rollout_failed(&self, node: &str, failed: bool) {
        self.rollout_failed
            .get_or_create(&NodeLabel {
                node: node.to_string(),
            })
            .set(i64::from(failed));
    }

    /// Records a rollback of `component`.
    pub fn rollback(&self, component: Component) {
        self.rollbacks.get_or_create(&label(component)).inc();
    }

    /// Sets whether `component` is held back.
    pub fn held_back(&self, component: Component, held: bool) {
        self.held_back
            .get_or_create(&label(component))
            .set(i64::from(held));
    }
}

fn label(c: Component) -> ComponentLabel {
    ComponentLabel {
        component: c.name().to_string(),
    }
}
