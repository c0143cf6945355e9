//! cpm-etcd's domain metrics.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `cpm_etcd_members` | gauge | `role` (`voter`, `learner`) |
//! | `cpm_etcd_is_leader` | gauge (1 when this node's member leads) | – |
//! | `cpm_etcd_db_size_bytes` | gauge | – |
//! | `cpm_etcd_quota_backend_bytes` | gauge | – |
//! | `cpm_etcd_membership_changes_total` | counter | `op` (`add_learner`, `promote`, `remove`, `move_leader`, `update_peer_url`) |
//! | `cpm_etcd_last_membership_change_timestamp_seconds` | gauge | – |
//! | `cpm_etcd_rollout_record_readable` | gauge (1: this master's ControlPlaneNode was read, present or absent; 0: not: etcd keeps the tag it runs) | – |
//! | `cpm_etcd_backup_last_success_timestamp_seconds` | gauge (0: no success recorded) | `node` |
//! | `cpm_etcd_backup_last_size_bytes` | gauge (size of the last successful backup) | `node` |
//! | `cpm_etcd_backup_last_failure_timestamp_seconds` | gauge (0: no failure recorded) | `node` |
//! | `cpm_etcd_backup_ignored_files` | gauge (files named as the node's backups that the last successful run's retention neither counted nor deleted) | `node`, `reason` (`future`, `unverified`) |
//!
//! The backup gauges are read from the backup directory's status file
//! ([`cpm_core::backup_status`]) at every scrape, so they follow the snapshot CronJob without
//! any event.

use std::path::PathBuf;

use cpm_core::backup_status::{self, BackupStatus};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

/// `role` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RoleLabel {
    /// `voter` or `learner`.
    pub role: String,
}

/// `op` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OpLabel {
    /// The membership operation.
    pub op: String,
}

/// The etcd metrics.
#[derive(Debug, Clone, Default)]
pub struct EtcdMetrics {
    members: Family<RoleLabel, Gauge>,
    leader: Gauge,
    db_size: Gauge,
    quota: Gauge,
    changes: Family<OpLabel, Counter>,
    last_change: Gauge,
    record_readable: Gauge,
}

impl EtcdMetrics {
    /// Registers the metrics on `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "cpm_etcd_members",
            "etcd members by role",
            m.members.clone(),
        );
        registry.register(
            "cpm_etcd_is_leader",
            "1 when this node's etcd member is the leader",
            m.leader.clone(),
        );
        registry.register(
            "cpm_etcd_db_size_bytes",
            "Size of this member's database",
            m.db_size.clone(),
        );
        registry.register(
            "cpm_etcd_quota_backend_bytes",
            "The backend quota in the manifest",
            m.quota.clone(),
        );
        registry.register(
            "cpm_etcd_membership_changes",
            "Membership changes made by cpm",
            m.changes.clone(),
        );
        registry.register(
            "cpm_etcd_last_membership_change_timestamp_seconds",
            "Unix time of the last membership change by cpm",
            m.last_change.clone(),
        );
        registry.register(
            "cpm_etcd_rollout_record_readable",
            "1 when the last pass read this master's ControlPlaneNode record (present or absent); 0 when it could not (no --kubeconfig, an API error, the CRD missing, no supported minor in it): etcd then keeps the tag it runs",
            m.record_readable.clone(),
        );
        m
    }

    /// Records whether this pass could read the master's rollout record.
    pub fn record_readable(&self, readable: bool) {
        self.record_readable.set(i64::from(readable));
    }

    /// Records the cluster as this member sees it.
    pub fn observe(
        &self,
        voters: usize,
        learners: usize,
        is_leader: bool,
        db_size: i64,
        quota: u64,
    ) {
        self.members
            .get_or_create(&RoleLabel {
                role: "voter".into(),
            })
            .set(i64::try_from(voters).unwrap_or(i64::MAX));
        self.members
            .get_or_create(&RoleLabel {
                role: "learner".into(),
            })
            .set(i64::try_from(learners).unwrap_or(i64::MAX));
        self.leader.set(i64::from(is_leader));
        self.db_size.set(db_size);
        self.quota.set(i64::try_from(quota).unwrap_or(i64::MAX));
    }

    /// Records a membership change.
    pub fn changed(&self, op: &str) {
        self.changes.get_or_create(&OpLabel { op: op.into() }).inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_change.set(i64::try_from(now).unwrap_or(i64::MAX));
    }
}

/// `node` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct NodeLabel {
    /// The node whose backups these are.
    pub node: String,
}

/// Exports the etcd backup status file at scrape time.
#[derive(Debug)]
pub struct BackupStatusCollector {
    /// The status file.
    pub path: PathBuf,
    /// The `node` label.
    pub node: String,
}

impl BackupStatusCollector {
    /// Registers a collector for the status file in `backup_dir`.
    pub fn register(registry: &mut Registry, backup_dir: &std::path::Path, node: &str) {
        registry.register_collector(Box::new(Self {
            path: backup_dir.join(backup_status::FILE_NAME),
            node: node.to_string(),
        }));
    }

    /// The exported values: last success time, last size, last failure time (0 when absent),
    /// and the files the last retention ignored as dated in the future and as unverified (0
    /// before any retention was recorded). A missing file reads as no backup yet; an unreadable
    /// one is logged and exports nothing.
    pub fn values(&self) -> Option<[i64; 5]> {
        let status = match backup_status::read(&self.path) {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %cpm_core::exit::chain(&e), "etcd backup status unreadable");
                return None;
            }
        };
        let BackupStatus {
            last_success,
            last_failure,
            last_retention,
        } = status;
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let retention = last_retention.unwrap_or_default();
        Some([
            last_success.as_ref().map_or(0, |s| s.timestamp_seconds),
            last_success.map_or(0, |s| gauge(s.size_bytes)),
            last_failure.map_or(0, |f| f.timestamp_seconds),
            gauge(retention.future_count),
            gauge(retention.unverified_count),
        ])
    }
}

/// `node` and `reason` labels of `cpm_etcd_backup_ignored_files`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct IgnoredLabel {
    /// The node whose backups these are.
    pub node: String,
    /// `future` or `unverified`.
    pub reason: String,
}

impl Collector for BackupStatusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(values) = self.values() else {
            return Ok(());
        };
        let label = NodeLabel {
            node: self.node.clone(),
        };
        let names = [
            (
                "cpm_etcd_backup_last_success_timestamp_seconds",
                "Unix time of the last successful etcd backup of this node (0: none recorded)",
            ),
            (
                "cpm_etcd_backup_last_size_bytes",
                "Size on disk of the last successful etcd backup of this node",
            ),
            (
                "cpm_etcd_backup_last_failure_timestamp_seconds",
                "Unix time of the last failed etcd backup of this node (0: none recorded)",
            ),
        ];
        let [success, size, failure, future, unverified] = values;
        for ((name, help), value) in names.into_iter().zip([success, size, failure]) {
            let gauge = ConstGauge::new(value);
            let mut metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric.encode_family(&label)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "cpm_etcd_backup_ignored_files",
            "Files named as this node's etcd backups that the last retention neither counted nor deleted, by reason (future: dated after now plus the skew allowance; unverified: no matching sidecar)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (reason, value) in [("future", future), ("unverified", unverified)] {
            let labels = IgnoredLabel {
                node: self.node.clone(),
                reason: reason.to_string(),
            };
            ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpm_core::backup_status::Success;

    fn scrape(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
        text
    }

    #[test]
    fn backup_gauges_follow_the_status_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut registry = Registry::default();
        BackupStatusCollector::register(&mut registry, dir.path(), "master-1");
        let text = scrape(&registry);
        assert!(
            text.contains("cpm_etcd_backup_last_success_timestamp_seconds{node=\"master-1\"} 0\n"),
            "{text}"
        );

        let status = BackupStatus {
            last_success: Some(Success {
                timestamp: "2026-01-02T03:04:05Z".into(),
                timestamp_seconds: 1_767_323_045,
                file: "etcd-master-1-20260102T030400Z-rev42.db".into(),
                revision: 42,
                size_bytes: 20_480,
                duration_seconds: 1.5,
            }),
            last_failure: None,
            last_retention: Some(cpm_core::backup_status::Retention {
                timestamp_seconds: 1_767_323_045,
                kept: 3,
                deleted: 1,
                future_count: 2,
                future_files: vec![],
                unverified_count: 1,
                unverified_files: vec![],
            }),
        };
        backup_status::write(&dir.path().join(backup_status::FILE_NAME), &status).expect("write");
        let text = scrape(&registry);
        for line in [
            "cpm_etcd_backup_last_success_timestamp_seconds{node=\"master-1\"} 1767323045\n",
            "cpm_etcd_backup_last_size_bytes{node=\"master-1\"} 20480\n",
            "cpm_etcd_backup_last_failure_timestamp_seconds{node=\"master-1\"} 0\n",
            "cpm_etcd_backup_ignored_files{node=\"master-1\",reason=\"future\"} 2\n",
            "cpm_etcd_backup_ignored_files{node=\"master-1\",reason=\"unverified\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }

        cpm_core::apply::write_atomic(
            &dir.path().join(backup_status::FILE_NAME),
            b"not json",
            0o644,
            None,
            None,
        )
        .expect("write");
        let text = scrape(&registry);
        assert!(!text.contains("cpm_etcd_backup"), "{text}");
    }
}
