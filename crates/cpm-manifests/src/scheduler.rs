//! Scheduler extension: `KubeSchedulerWebhookConfiguration` objects become kube-scheduler
//! extenders in its `KubeSchedulerConfiguration`.
//!
//! A pass lists the objects ([`list_webhooks`]), turns them into extenders with the pure
//! [`desired_extenders`] (invalid webhooks are left out as [`Rejection`]s, the others are
//! still rendered), renders the configuration file with [`render_scheduler_config`], and
//! reports the rejections ([`report`]: a Warning Event per rejection, once per object
//! generation, and each object's `status.rejected`, cleared when it becomes valid).
//! [`watch`] marks the agent dirty on any change of the objects; [`SchedulerWebhookMetrics`]
//! exports `cpm_scheduler_webhooks{state="rendered|rejected"}`.
//!
//! ```no_run
//! # async fn demo(client: kube::Client, domain: cpm_core::config::DnsName) -> Result<(), Box<dyn std::error::Error>> {
//! use cpm_manifests::scheduler::{desired_extenders, list_webhooks, render_scheduler_config, report};
//!
//! let objects = list_webhooks(&client).await?;
//! let set = desired_extenders(&objects, &domain);
//! let yaml = render_scheduler_config(&set.extenders, "/etc/kubernetes/scheduler.conf");
//! report(&client, &objects, &set.rejections, "cpm-manifests").await?;
//! # let _ = yaml; Ok(()) }
//! ```
//!
//! The CRD (`kubeschedulerwebhookconfigurations.cpm.dev`) is rendered by [`crd_yaml`] from
//! the Rust types in [`crd`]; its schema carries the bounds (weight ≥ 1, timeout 1..=30, port
//! 1..=65535, the failure policy enum) and defaults, and [`desired_extenders`] checks them
//! again because a server may not have.

mod api;
mod config;
pub mod crd;
mod extenders;
mod metrics;

pub use api::{
    EVENT_NAMESPACE, EVENT_REASON, ReportError, Reported, desired_status, event_name,
    list_webhooks, rejection_event, report, report_rejections, sync_status, watch,
};
pub use config::{SCHEDULER_CONFIG_API_VERSION, render_scheduler_config};
pub use crd::{
    FailurePolicy, KubeSchedulerWebhookConfiguration, KubeSchedulerWebhookConfigurationSpec,
    KubeSchedulerWebhookConfigurationStatus, RejectedWebhook, SchedulerWebhook, ServiceReference,
    WebhookClientConfig, crd_yaml,
};
pub use extenders::{
    Extender, ExtenderSet, ExtenderTlsConfig, Problem, Rejection, desired_extenders, extender,
    normalize_path,
};
pub use metrics::{SchedulerWebhookMetrics, WebhookStateLabel};

#[cfg(test)]
mod tests;
