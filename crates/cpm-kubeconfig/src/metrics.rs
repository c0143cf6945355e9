//! cpm-kubeconfig's domain metrics.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `cpm_kubeconfig_expiry_timestamp_seconds` | gauge | `file` |
//! | `cpm_kubeconfig_renewals_total` | counter | `file`, `reason` |
//! | `cpm_root_kubeconfig_symlink_state` | gauge (1 for the current state, 0 for others) | `state`: `ok`, `foreign_file`, `foreign_symlink`, `disabled` |
//! | `cpm_cluster_admins_binding_present` | gauge | – |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;

use crate::desired::{LinkState, Renewal};

/// `file` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FileLabel {
    /// Kubeconfig file name.
    pub file: String,
}

/// `file` and `reason` labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RenewalLabels {
    /// Kubeconfig file name.
    pub file: String,
    /// Why it was written.
    pub reason: String,
}

/// `state` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StateLabel {
    /// Symlink state.
    pub state: String,
}

/// The kubeconfig metrics.
#[derive(Debug, Clone, Default)]
pub struct KubeconfigMetrics {
    expiry: Family<FileLabel, Gauge>,
    renewals: Family<RenewalLabels, Counter>,
    link: Family<StateLabel, Gauge>,
    binding: Gauge,
}

impl KubeconfigMetrics {
    /// Registers the metrics on `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "cpm_kubeconfig_expiry_timestamp_seconds",
            "Unix time at which the kubeconfig's client certificate expires",
            m.expiry.clone(),
        );
        registry.register(
            "cpm_kubeconfig_renewals",
            "Kubeconfigs written, by reason",
            m.renewals.clone(),
        );
        registry.register(
            "cpm_root_kubeconfig_symlink_state",
            "State of /root/.kube/config (1 for the current state)",
            m.link.clone(),
        );
        registry.register("cpm_cluster_admins_binding_present", "Whether the kubeadm:cluster-admins ClusterRoleBinding was seen (1) after the last pass", m.binding.clone());
        m
    }

    /// Records an applied pass.
    pub fn record(
        &self,
        expiry: &[(&'static str, OffsetDateTime)],
        renewals: &[(&'static str, Renewal)],
        link: LinkState,
        binding: Option<bool>,
    ) {
        for (file, at) in expiry {
            self.expiry
                .get_or_create(&FileLabel {
                    file: (*file).to_string(),
                })
                .set(at.unix_timestamp());
        }
        for (file, reason) in renewals {
            self.renewals
                .get_or_create(&RenewalLabels {
                    file: (*file).to_string(),
                    reason: reason.as_str().to_string(),
                })
                .inc();
        }
        for state in LinkState::ALL {
            self.link
                .get_or_create(&StateLabel {
                    state: state.as_str().to_string(),
                })
                .set(i64::from(state == link));
        }
        if let Some(present) = binding {
            self.binding.set(i64::from(present));
        }
    }
}
