//! cpm-etcd's domain metrics.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `cpm_etcd_members` | gauge | `role` (`voter`, `learner`) |
//! | `cpm_etcd_is_leader` | gauge (1 when this node's member leads) | – |
//! | `cpm_etcd_db_size_bytes` | gauge | – |
//! | `cpm_etcd_quota_backend_bytes` | gauge | – |
//! | `cpm_etcd_membership_changes_total` | counter | `op` (`add_learner`, `promote`, `remove`) |
//! | `cpm_etcd_last_membership_change_timestamp_seconds` | gauge | – |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
        m
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
