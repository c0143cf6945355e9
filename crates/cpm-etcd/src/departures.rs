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

/// What a member's endpoint answered to a status request: its own id and the leader it follows
/// (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    member: u64,
    leader: u64,
}

/// The status of the member on `ip`, or `None` when it does not answer.
async fn status(ip: IpAddr, creds: &EtcdOptions) -> Option<Seen> {
    let mut c = cluster(&[ip], creds).await.ok()?;
    let s = c.status().await.ok()?;
    Some(Seen {
        member: s.header()?.member_id(),
        leader: s.leader(),
    })
}

/// The status of each member on `ips` that answers.
async fn statuses(ips: &[IpAddr], creds: &EtcdOptions) -> Vec<Seen> {
    let mut out = Vec::new();
    for ip in ips {
        if let Some(s) = status(*ip, creds).await {
            out.push(s);
        }
    }
    out
}

/// How long the remaining members may take to follow a new leader after a MoveLeader (etcd
/// answers MoveLeader once the transfer is done; this only covers the followers catching up,
/// and keeps the whole removal well inside the membership Lease).
const LEADER_MOVE_PATIENCE: Duration = Duration::from_secs(5);

/// Removes `departed` (one member per call) if safe, moving leadership off it first when it
/// leads. Returns whether it was removed; `changed` is told each change made (`move_leader`,
/// `remove`).
pub async fn remove(
    departed: &Member,
    current: &[Member],
    creds: &EtcdOptions,
    changed: &dyn Fn(&'static str),
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
    let seen = statuses(&ips, creds).await;
    let healthy = seen.len();
    let quorum = remaining.len() / 2 + 1;
    if healthy < quorum {
        warn!(member = %departed.name, healthy, needed = quorum, "not removing an etcd member: the remaining members lack a healthy quorum");
        return Ok(false);
    }
    if seen.iter().any(|s| s.leader == 0) {
        warn!(member = %departed.name, "not removing an etcd member: the remaining members have no leader now (an election is under way)");
        return Ok(false);
    }
    if seen.iter().any(|s| s.leader == departed.id) {
        // A healthy remaining voter takes over.
        let Some(to) = remaining
            .iter()
            .find(|m| seen.iter().any(|s| s.member == m.id))
        else {
            return Ok(false);
        };
        move_leader(departed, to, &ips, quorum, creds).await?;
        changed("move_leader");
    }
    let mut client = cluster(&ips, creds).await?;
    client
        .member_remove(departed.id)
        .await
        .map_err(|source| MembershipError::Request {
            op: "member remove",
            source,
        })?;
    info!(member = %departed.name, id = departed.id, reason = "its master is gone", "removed etcd member");
    changed("remove");
    Ok(true)
}

/// Moves leadership from `leader` (the departing member) to `to`. etcd accepts MoveLeader only
/// on the leader itself, so the request goes to the leader's own endpoint; then at least `quorum`
/// of the members on `remaining` must answer, all following a leader other than the departing
/// one.
async fn move_leader(
    leader: &Member,
    to: &Member,
    remaining: &[IpAddr],
    quorum: usize,
    creds: &EtcdOptions,
) -> Result<(), MembershipError> {
    let ip = member_ip(leader).ok_or_else(|| {
        MembershipError::Refused(format!(
            "cannot move etcd leadership off {}: its peer URLs {:?} name no IP",
            leader.name, leader.peer_urls
        ))
    })?;
    let mut client = cluster(&[ip], creds).await?;
    client
        .move_leader(to.id)
        .await
        .map_err(|source| MembershipError::Request {
            op: "move leader",
            source,
        })?;
    let deadline = Instant::now() + LEADER_MOVE_PATIENCE;
    loop {
        let seen = statuses(remaining, creds).await;
        if seen.len() >= quorum && seen.iter().all(|s| s.leader != 0 && s.leader != leader.id) {
            break;
        }
        if Instant::now() > deadline {
            return Err(MembershipError::Refused(format!(
                "etcd leadership was moved from {} to {}, but a quorum of the remaining members does not follow a new leader after {LEADER_MOVE_PATIENCE:?}; not removing {} yet",
                leader.name, to.name, leader.name
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    info!(from = %leader.name, to = %to.name, reason = "leader is departing", "moved etcd leadership");
    Ok(())
}

/// The members, read through `ips`.
pub async fn current(ips: &[IpAddr], creds: &EtcdOptions) -> Result<Vec<Member>, MembershipError> {
    let mut c = cluster(ips, creds).await?;
    members(&mut c).await
}

#[cfg(test)]
mod tests;
