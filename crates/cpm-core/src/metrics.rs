//! The per-process metrics registry and the standard reconcile metrics every agent exports.
//!
//! Each process owns one [`prometheus_client::registry::Registry`]; core registers the standard
//! set labelled `agent`, and each binary adds its domain metrics to the same registry before the
//! admin server starts.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `cpm_reconcile_total` | counter | `agent`, `result` (`success`, `error`) |
//! | `cpm_reconcile_duration_seconds` | histogram | `agent` |
//! | `cpm_last_success_timestamp_seconds` | gauge | `agent` |
//! | `cpm_planned_changes` | gauge | `agent`, `op` |
//!
//! [`process::register`] adds the process metrics (`process_*`) and `cpm_build_info` that every
//! binary serving `/metrics` exports.

pub mod process;

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `agent` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AgentLabel {
    /// The agent's name.
    pub agent: String,
}

/// `agent` and `result` labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabels {
    /// The agent's name.
    pub agent: String,
    /// `success` or `error`.
    pub result: String,
}

/// `agent` and `op` labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OpLabels {
    /// The agent's name.
    pub agent: String,
    /// The plan operation kind.
    pub op: String,
}

/// A float gauge.
pub type GaugeF64 = Gauge<f64, AtomicU64>;

/// The standard reconcile metrics of one agent.
#[derive(Debug, Clone)]
pub struct ReconcileMetrics {
    agent: String,
    passes: Family<ResultLabels, Counter>,
    duration: Family<AgentLabel, Histogram>,
    last_success: Family<AgentLabel, GaugeF64>,
    planned: Family<OpLabels, Gauge>,
}

impl ReconcileMetrics {
    /// Registers the standard set for `agent` on `registry`.
    pub fn register(registry: &mut Registry, agent: &str) -> Self {
        let m = Self {
            agent: agent.to_string(),
            passes: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 14))
            }),
            last_success: Family::default(),
            planned: Family::default(),
        };
        registry.register(
            "cpm_reconcile",
            "Reconcile passes by result",
            m.passes.clone(),
        );
        registry.register(
            "cpm_reconcile_duration_seconds",
            "Duration of reconcile passes",
            m.duration.clone(),
        );
        registry.register(
            "cpm_last_success_timestamp_seconds",
            "Unix time of the last successful pass",
            m.last_success.clone(),
        );
        registry.register(
            "cpm_planned_changes",
            "Operations planned by the last pass, by kind",
            m.planned.clone(),
        );
        m
    }

    /// Records one pass.
    pub fn observe_pass(&self, ok: bool, seconds: f64, unix_now: f64) {
        let result = if ok { "success" } else { "error" };
        self.passes
            .get_or_create(&ResultLabels {
                agent: self.agent.clone(),
                result: result.into(),
            })
            .inc();
        self.duration.get_or_create(&self.label()).observe(seconds);
        if ok {
            self.last_success.get_or_create(&self.label()).set(unix_now);
        }
    }

    /// Records the operation counts of the last plan.
    pub fn observe_plan(&self, summary: &[(&'static str, usize)]) {
        for (op, n) in summary {
            let labels = OpLabels {
                agent: self.agent.clone(),
                op: (*op).to_string(),
            };
            self.planned
                .get_or_create(&labels)
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    fn label(&self) -> AgentLabel {
        AgentLabel {
            agent: self.agent.clone(),
        }
    }
}

/// Renders `registry` in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Encoding into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests;
