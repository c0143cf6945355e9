//! `cpm_scheduler_webhooks{state}`: webhooks rendered as extenders and webhooks rejected.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::extenders::ExtenderSet;

/// `state` label: `rendered` or `rejected`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct WebhookStateLabel {
    /// `rendered` or `rejected`.
    pub state: &'static str,
}

/// The scheduler webhook gauge.
#[derive(Debug, Clone, Default)]
pub struct SchedulerWebhookMetrics {
    webhooks: Family<WebhookStateLabel, Gauge>,
}

impl SchedulerWebhookMetrics {
    /// Registers `cpm_scheduler_webhooks` on `registry`; both states start at 0.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "cpm_scheduler_webhooks",
            "Scheduler extender webhooks after the last pass, by state (rendered or rejected)",
            m.webhooks.clone(),
        );
        m.set(0, 0);
        m
    }

    /// Records the outcome of a pass.
    pub fn record(&self, set: &ExtenderSet) {
        self.set(set.extenders.len(), set.rejections.len());
    }

    fn set(&self, rendered: usize, rejected: usize) {
        for (state, n) in [("rendered", rendered), ("rejected", rejected)] {
            self.webhooks
                .get_or_create(&WebhookStateLabel { state })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}
