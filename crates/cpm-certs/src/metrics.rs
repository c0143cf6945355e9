//! cpm-certs' domain metrics.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `cpm_certificate_expiry_timestamp_seconds` | gauge | `name` (kubeadm name or CA name) |
//! | `cpm_certificate_renewals_total` | counter | `name`, `reason` |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;

use crate::desired::Renewal;

/// `name` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct NameLabel {
    /// Certificate name.
    pub name: String,
}

/// `name` and `reason` labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RenewalLabels {
    /// Certificate name.
    pub name: String,
    /// Why it was issued.
    pub reason: String,
}

/// The certificate metrics.
#[derive(Debug, Clone, Default)]
pub struct CertMetrics {
    expiry: Family<NameLabel, Gauge>,
    renewals: Family<RenewalLabels, Counter>,
}

impl CertMetrics {
    /// Registers the metrics on `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "cpm_certificate_expiry_timestamp_seconds",
            "Unix time at which the certificate expires",
            m.expiry.clone(),
        );
        registry.register(
            "cpm_certificate_renewals",
            "Certificates issued, by reason",
            m.renewals.clone(),
        );
        m
    }

    /// Records expiries and renewals of an applied pass.
    pub fn record(
        &self,
        expiry: &[(&'static str, OffsetDateTime)],
        renewals: &[(&'static str, Renewal)],
    ) {
        for (name, at) in expiry {
            self.expiry
                .get_or_create(&NameLabel {
                    name: (*name).to_string(),
                })
                .set(at.unix_timestamp());
        }
        for (name, reason) in renewals {
            let labels = RenewalLabels {
                name: (*name).to_string(),
                reason: reason.as_str().to_string(),
            };
            self.renewals.get_or_create(&labels).inc();
        }
    }
}
