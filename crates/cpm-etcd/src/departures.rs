//! Removing the members of departed masters: a member whose Node is gone (or no longer a
//! control-plane Node) for longer than a grace period is removed by the one agent holding the
//! membership Lease — never the last member, leadership moved off it first, and only while the
//! members that remain have a healthy quorum. Every removal is logged with its reason.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use cpm_core::etcd::EtcdOptions;
use tracing::{info, warn};

use crate::manifest::Peer;
use crate::membership::{Member, MembershipError, cluster, members};

/// When each departed member (or unstarted learner) was first seen.
#[derive(Debug, Default)]
pub struct Departures {
    first_seen: BTreeMap<u64, Instant>,
    unstarted: BTreeMap<u64, Instant>,
}

/// The IP of a member's first peer URL.
pub fn member_ip(m: &Member) -> Option<IpAddr> {
    m.peer_urls
        .first()?
        .strip_prefix("https://")?
        .rsplit_once(':')?
        .0
        .trim_matches(['[', ']'])
        .parse()
        .ok()
}

impl Departures {
    /// Members whose master is gone, and has been for at least `grace` (pure but for `now`).
    /// Learners count too: a learner whose master never started is removed the same way.
    pub fn eligible(
        &mut self,
        current: &[Member],
        masters: &[Peer],
        grace: Duration,
        now: Instant,
    ) -> Vec<Member> {
        let gone: Vec<&Member> = current
            .iter()
            .filter(|m| {
                let named = !m.name.is_empty() && masters.iter().any(|p| p.name == m.name);
                let by_ip = member_ip(m).is_some_and(|ip| masters.iter().any(|p| p.ip == ip));
                !(named || by_ip)
            })
            .collect();
        self.first_seen
            .retain(|id, _| gone.iter().any(|m| m.id == *id));
        gone.into_iter()
            .filter(|m| now.duration_since(*self.first_seen.entry(m.id).or_insert(now)) >= grace)
            .cloned()
            .collect()
    }

    /// Learners that never started (no name yet) for at least `timeout`: their master added
    /// them and then failed to run etcd. Removed so the next learner can be added (etcd allows
    /// one learner at a time); the master adds itself again on its next pass.
    pub fn unstarted_learners(
        &mut self,
        current: &[Member],
        timeout: Duration,
        now: Instant,
    ) -> Vec<Member> {
        let waiting: Vec<&Member> = current
            .iter()
            .filter(|m| m.learner && m.name.is_empty())
            .collect();
        self.unstarted
            .retain(|id, _| waiting.iter().any(|m| m.id == *id));
        waiting
            .into_iter()
            .filter(|m| now.duration_since(*self.unstarted.entry(m.id).or_insert(now)) >= timeout)
            .cloned()
            .collect()
    }
}

/// How many of the members on `ips` answer a status request, and the leader id they report.
async fn health(ips: &[IpAddr], creds: &EtcdOptions) -> (usize, Option<u64>) {
    let mut healthy = 0;
    let mut leader = None;
    for ip in ips {
        if let Ok(mut c) = cluster(std::slice::from_ref(ip), creds).await
            && let Ok(s) = c.status().await
        {
            healthy += 1;
            leader = Some(s.leader());
        }
    }
    (healthy, leader)
}

/// Removes `departed` (one member per call) if safe. Returns whether it was removed.
pub async fn remove(
    departed: &Member,
    current: &[Member],
    creds: &EtcdOptions,
) -> Result<bool, MembershipError> {
    let remaining: Vec<&Member> = current
        .iter()
        .filter(|m| m.id != departed.id && !m.learner)
        .collect();
    if remaining.is_empty() && !departed.learner {
        warn!(member = %departed.name, "not removing the last voting etcd member");
        return Ok(false);
    }
    let ips: Vec<IpAddr> = remaining.iter().filter_map(|m| member_ip(m)).collect();
    let (healthy, leader) = health(&ips, creds).await;
    let quorum = remaining.len() / 2 + 1;
    if healthy < quorum {
        warn!(member = %departed.name, healthy, needed = quorum, "not removing an etcd member: the remaining members lack a healthy quorum");
        return Ok(false);
    }
    let mut client = cluster(&ips, creds).await?;
    if leader == Some(departed.id) {
        let to = remaining[0].id;
        client
            .move_leader(to)
            .await
            .map_err(|source| MembershipError::Request {
                op: "move leader",
                source,
            })?;
        info!(from = %departed.name, to = %remaining[0].name, reason = "leader is departing", "moved etcd leadership");
    }
    client
        .member_remove(departed.id)
        .await
        .map_err(|source| MembershipError::Request {
            op: "member remove",
            source,
        })?;
    info!(member = %departed.name, id = departed.id, reason = "its master is gone", "removed etcd member");
    Ok(true)
}

/// The members, read through `ips`.
pub async fn current(ips: &[IpAddr], creds: &EtcdOptions) -> Result<Vec<Member>, MembershipError> {
    let mut c = cluster(ips, creds).await?;
    members(&mut c).await
}

#[cfg(test)]
mod tests;
