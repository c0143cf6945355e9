//! Joining the cluster safely: a new master is added as a **learner** through the existing
//! members, starts with `--initial-cluster-state=existing`, and is promoted once it has caught
//! up. A master never starts a second cluster while other masters are known, and an old data
//! directory of a removed member is moved aside (not deleted) before it joins fresh.

use std::net::IpAddr;
use std::time::Duration;

use cpm_core::etcd::{EtcdError, EtcdOptions, connect};
use etcd_client::Client;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use tracing::info;

use crate::manifest::Peer;

/// The label of control-plane Nodes.
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";

/// A member as etcd reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Member id.
    pub id: u64,
    /// Name (empty until a learner has started).
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Whether it is a learner.
    pub learner: bool,
}

/// A membership step failed.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// etcd could not be reached or refused a request.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// A request failed.
    #[error("etcd {op}")]
    Request {
        /// The operation.
        op: &'static str,
        /// Why.
        #[source]
        source: etcd_client::Error,
    },
    /// Other masters are known but none of their etcd members answers: starting a new cluster
    /// here would split the control plane.
    #[error(
        "other masters ({0}) are known but their etcd is unreachable; not starting a new cluster"
    )]
    Unreachable(String),
    /// A change that would be unsafe now, with the reason.
    #[error("{0}")]
    Refused(String),
    /// The learner did not catch up in time (retried on the next pass).
    #[error("learner {0} not promoted yet: {1}")]
    NotPromoted(String, String),
}

/// The control-plane Nodes (name and InternalIP, sorted by name), and the smallest memory
/// capacity among them (bytes) when every one reports it.
pub async fn masters_with_memory(
    client: &kube::Client,
) -> Result<(Vec<Peer>, Option<u64>), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let items = nodes
        .list(&ListParams::default().labels(CONTROL_PLANE_LABEL))
        .await?
        .items;
    let memories: Vec<Option<u64>> = items
        .iter()
        .map(|n| {
            n.status
                .as_ref()?
                .capacity
                .as_ref()?
                .get("memory")
                .and_then(|q| parse_quantity(&q.0))
        })
        .collect();
    let smallest = if memories.is_empty() || memories.iter().any(Option::is_none) {
        None
    } else {
        memories.into_iter().flatten().min()
    };
    let mut out: Vec<Peer> = items
        .into_iter()
        .filter_map(|n| {
            let name = n.metadata.name?;
            let ip: IpAddr = n
                .status?
                .addresses?
                .into_iter()
                .find(|a| a.type_ == "InternalIP")?
                .address
                .parse()
                .ok()?;
            Some(Peer { name, ip })
        })
        .collect();
    out.sort();
    Ok((out, smallest))
}

/// Bytes of a memory quantity (`16Gi`, `16384Mi`, `16000000Ki`, `17179869184`).
pub fn parse_quantity(q: &str) -> Option<u64> {
    let units: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, mult) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().ok()?.checked_mul(mult);
        }
    }
    q.parse().ok()
}

/// The client URL of a member on `ip`.
pub fn client_url(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => format!("https://[{v6}]:2379"),
        IpAddr::V4(v4) => format!("https://{v4}:2379"),
    }
}

/// The peer URL of a member on `ip`.
pub fn peer_url(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => format!("https://[{v6}]:2380"),
        IpAddr::V4(v4) => format!("https://{v4}:2380"),
    }
}

/// Connects to the first member on `ips` that answers (one endpoint at a time: a member that is
/// not running yet must not hide the ones that are).
pub async fn cluster(ips: &[IpAddr], creds: &EtcdOptions) -> Result<Client, EtcdError> {
    let mut last = None;
    for ip in ips {
        let mut opts = creds.clone();
        opts.endpoints = vec![client_url(*ip)];
        match connect(&opts).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| EtcdError {
        endpoints: String::new(),
        source: etcd_client::Error::InvalidArgs("no etcd endpoint".into()),
    }))
}

/// The current members.
pub async fn members(client: &mut Client) -> Result<Vec<Member>, MembershipError> {
    let resp = client
        .member_list()
        .await
        .map_err(|source| MembershipError::Request {
            op: "member list",
            source,
        })?;
    Ok(resp
        .members()
        .iter()
        .map(|m| Member {
            id: m.id(),
            name: m.name().to_string(),
            peer_urls: m.peer_urls().to_vec(),
            learner: m.is_learner(),
        })
        .collect())
}

/// Adds `this` as a learner (unless a member with its peer URL exists, or under `dry_run`);
/// returns the members to write into `--initial-cluster` (every member that has a name, plus
/// this one).
pub async fn add_learner(
    client: &mut Client,
    this: &Peer,
    dry_run: bool,
) -> Result<(Vec<Peer>, bool), MembershipError> {
    let url = peer_url(this.ip);
    let current = members(client).await?;
    let added = !dry_run && !current.iter().any(|m| m.peer_urls.contains(&url));
    if added {
        let opts = etcd_client::MemberAddOptions::new().with_is_learner();
        client
            .member_add([url.as_str()], Some(opts))
            .await
            .map_err(|source| MembershipError::Request {
                op: "member add (learner)",
                source,
            })?;
        info!(member = %this.name, peer = %url, reason = "new master", "added etcd learner");
    }
    let mut peers: Vec<Peer> = current
        .iter()
        .filter(|m| !m.name.is_empty() && !m.peer_urls.contains(&url))
        .filter_map(|m| {
            let host = m
                .peer_urls
                .first()?
                .strip_prefix("https://")?
                .rsplit_once(':')?
                .0
                .trim_matches(['[', ']'])
                .parse()
                .ok()?;
            Some(Peer {
                name: m.name.clone(),
                ip: host,
            })
        })
        .collect();
    peers.push(this.clone());
    peers.sort();
    Ok((peers, added))
}

/// Promotes the learner with `this`'s peer URL, retrying for up to `patience` while it catches
/// up. Nothing to do when it is already a voting member.
pub async fn promote(
    client: &mut Client,
    this: &Peer,
    patience: Duration,
) -> Result<bool, MembershipError> {
    let url = peer_url(this.ip);
    let deadline = std::time::Instant::now() + patience;
    loop {
        let Some(me) = members(client)
            .await?
            .into_iter()
            .find(|m| m.peer_urls.contains(&url))
        else {
            return Ok(false);
        };
        if !me.learner {
            return Ok(false);
        }
        match client.member_promote(me.id).await {
            Ok(_) => {
                info!(member = %this.name, reason = "caught up", "promoted etcd learner");
                return Ok(true);
            }
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "learner not in sync yet");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(MembershipError::NotPromoted(
                    this.name.clone(),
                    e.to_string(),
                ));
            }
        }
    }
}
