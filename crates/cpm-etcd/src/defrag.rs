//! Scheduled defragmentation: the membership Lease holder defragments one member per pass, only
//! a member whose database has enough reclaimable space, only while every other member is
//! healthy (a defragmenting member blocks its reads and writes), and at most once per interval.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cpm_core::etcd::EtcdOptions;
use tracing::info;

use crate::departures::member_ip;
use crate::membership::{Member, MembershipError, cluster};

/// When to defragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefragPolicy {
    /// Reclaimable bytes (size minus size in use) at which a member is defragmented.
    pub min_free_bytes: i64,
    /// …and at least this share of the database, in percent.
    pub min_free_percent: i64,
    /// At most once per member per interval.
    pub interval: Duration,
}

impl DefragPolicy {
    /// 64 MiB and 25 % reclaimable, at most hourly.
    pub fn standard() -> Self {
        Self {
            min_free_bytes: 64 << 20,
            min_free_percent: 25,
            interval: Duration::from_secs(3600),
        }
    }

    /// Whether a database of `size` bytes with `in_use` bytes in use is worth defragmenting.
    pub fn worth_it(&self, size: i64, in_use: i64) -> bool {
        let free = size - in_use;
        size > 0 && free >= self.min_free_bytes && free * 100 >= self.min_free_percent * size
    }
}

/// The member to defragment now, if any: the first voter worth it, not done within the
/// interval, while every member answers.
pub async fn due(
    current: &[Member],
    creds: &EtcdOptions,
    policy: &DefragPolicy,
    now: Instant,
    done: &BTreeMap<u64, Instant>,
) -> Option<Member> {
    let mut candidate = None;
    for m in current.iter().filter(|m| !m.learner) {
        let ip = member_ip(m)?;
        let mut c = cluster(&[ip], creds).await.ok()?;
        let status = c.status().await.ok()?;
        let recent = done
            .get(&m.id)
            .is_some_and(|t| now.duration_since(*t) < policy.interval);
        if candidate.is_none()
            && !recent
            && policy.worth_it(status.db_size(), status.raft_used_db_size())
        {
            candidate = Some(m.clone());
        }
    }
    candidate
}

/// Defragments `member`.
pub async fn run(member: &Member, creds: &EtcdOptions) -> Result<(), MembershipError> {
    let ip = member_ip(member).ok_or_else(|| MembershipError::Unreachable(member.name.clone()))?;
    let mut c = cluster(&[ip], creds).await?;
    let before = c
        .status()
        .await
        .map_err(|source| MembershipError::Request {
            op: "status",
            source,
        })?
        .db_size();
    c.defragment()
        .await
        .map_err(|source| MembershipError::Request {
            op: "defragment",
            source,
        })?;
    let after = c
        .status()
        .await
        .map_err(|source| MembershipError::Request {
            op: "status",
            source,
        })?
        .db_size();
    info!(member = %member.name, before, after, reason = "reclaimable space", "defragmented etcd member");
    Ok(())
}

#[cfg(test)]
mod tests;
