//! The pure part: which endpoints of the `default/kubernetes` EndpointSlices are ready, and the
//! upstream list to write given the previous list, when each endpoint was last seen ready, and the
//! removal grace period.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::{Deserialize, Serialize};

/// The API servers' port when a slice names none.
pub const DEFAULT_PORT: u16 = 6443;

/// The upstream file format (shared with api-proxy by contract, see the README).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    /// Format version, 1.
    pub version: u32,
    /// `IP:PORT` of each API server.
    pub upstreams: Vec<String>,
}

/// Renders the upstream file (sorted, one line, trailing newline).
pub fn render(list: &BTreeSet<SocketAddr>) -> Vec<u8> {
    let file = UpstreamFile {
        version: 1,
        upstreams: list.iter().map(ToString::to_string).collect(),
    };
    let mut out = serde_json::to_vec(&file).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Parses an upstream file; anything invalid is an empty list.
pub fn parse(bytes: &[u8]) -> BTreeSet<SocketAddr> {
    match serde_json::from_slice::<UpstreamFile>(bytes) {
        Ok(f) if f.version == 1 => f.upstreams.iter().filter_map(|u| u.parse().ok()).collect(),
        _ => BTreeSet::new(),
    }
}

/// The ready endpoints of `slices`: the first address of every endpoint whose `ready` condition
/// is not false (unset means ready), on the port named `https` (else the first port, else 6443).
pub fn ready_endpoints(slices: &[EndpointSlice]) -> BTreeSet<SocketAddr> {
    let mut out = BTreeSet::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let ports = slice.ports.as_deref().unwrap_or_default();
        let port = ports
            .iter()
            .find(|p| p.name.as_deref() == Some("https"))
            .or_else(|| ports.first())
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(DEFAULT_PORT);
        for ep in &slice.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            if let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) {
                out.insert(SocketAddr::new(ip, port));
            }
        }
    }
    out
}

/// Inputs of [`desired`].
#[derive(Debug)]
pub struct Inputs<'a> {
    /// Endpoints ready now.
    pub ready: &'a BTreeSet<SocketAddr>,
    /// The list in the file now (empty when missing or invalid).
    pub current: &'a BTreeSet<SocketAddr>,
    /// When each endpoint was last seen ready (already updated with `ready` at `now`).
    pub last_seen: &'a BTreeMap<SocketAddr, Instant>,
    /// Now.
    pub now: Instant,
    /// How long an endpoint stays listed after it was last seen ready.
    pub grace: Duration,
}

/// The list to write.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desired {
    /// The upstreams (empty: write nothing).
    pub list: BTreeSet<SocketAddr>,
    /// Listed but not ready: time left until each is dropped.
    pub pending: BTreeMap<SocketAddr, Duration>,
    /// Nothing was ready or within its grace period: the current list was kept as is.
    pub kept_current: bool,
}

/// Ready endpoints, plus those of the current list last seen ready less than `grace` ago; never
/// an empty list while the current one is not empty.
pub fn desired(i: &Inputs<'_>) -> Desired {
    let mut d = Desired::default();
    d.list.extend(i.ready.iter().copied());
    for addr in i.current {
        if i.ready.contains(addr) {
            continue;
        }
        let age = i.last_seen.get(addr).map_or(Duration::ZERO, |seen| {
            i.now.saturating_duration_since(*seen)
        });
        if age < i.grace {
            d.list.insert(*addr);
            d.pending.insert(*addr, i.grace - age);
        }
    }
    if d.list.is_empty() && !i.current.is_empty() {
        d.list = i.current.clone();
        d.pending.clear();
        d.kept_current = true;
    }
    d
}

#[cfg(test)]
mod tests;
