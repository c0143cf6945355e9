//! The upstream pool: health with rise/fall hysteresis, connection counts, and the order in
//! which a new client connection tries upstreams.
//!
//! Order: healthy upstreams first (those on this node before the others, then least
//! connections, ties rotated), then upstreams not checked yet, then unhealthy ones. The list is
//! never empty while any upstream is known: with nothing healthy every known upstream is still
//! tried.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::metrics::{BytesLabels, CheckLabels, ProxyMetrics, StateLabels, UpstreamLabel};

/// An upstream's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Not checked enough yet.
    Unknown,
    /// Passing health checks.
    Up,
    /// Failing health checks or connects.
    Down,
}

impl Health {
    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }

    fn rank(self) -> u8 {
        match self {
            Health::Up => 0,
            Health::Unknown => 1,
            Health::Down => 2,
        }
    }
}

/// What connections to an upstream watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpState {
    /// Current health.
    pub health: Health,
    /// Removed from the pool.
    pub removed: bool,
}

impl UpState {
    /// Whether connections to the upstream should move elsewhere.
    pub fn evicting(self) -> bool {
        self.removed || self.health == Health::Down
    }
}

/// Rise/fall hysteresis: `rise` consecutive successes make an upstream up, `fall` consecutive
/// failures make it down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    /// Successes needed to go up.
    pub rise: u32,
    /// Failures needed to go down.
    pub fall: u32,
    ok: u32,
    failed: u32,
}

impl Hysteresis {
    /// A counter with the given thresholds (each at least 1).
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            ok: 0,
            failed: 0,
        }
    }

    /// Records one check result; returns the new health.
    pub fn observe(&mut self, current: Health, success: bool) -> Health {
        if success {
            self.ok = self.ok.saturating_add(1);
            self.failed = 0;
            if self.ok >= self.rise {
                return Health::Up;
            }
        } else {
            self.failed = self.failed.saturating_add(1);
            self.ok = 0;
            if self.failed >= self.fall {
                return Health::Down;
            }
        }
        current
    }

    /// A failed connect: down at once, and `rise` successes needed again.
    pub fn passive_failure(&mut self) -> Health {
        self.ok = 0;
        self.failed = self.fall;
        Health::Down
    }
}

/// Per-upstream metric handles, resolved once.
#[derive(Debug, Clone)]
pub struct UpstreamCounters {
    /// Bytes client to upstream.
    pub tx: Counter,
    /// Bytes upstream to client.
    pub rx: Counter,
    /// Open connections.
    pub active: Gauge,
    /// Connections.
    pub connections: Counter,
    /// Failed connects.
    pub connect_failures: Counter,
    /// Evicted connections.
    pub evicted: Counter,
    /// Successful checks.
    pub check_ok: Counter,
    /// Failed checks.
    pub check_failed: Counter,
}

/// One upstream API server.
#[derive(Debug)]
pub struct Upstream {
    /// Its address.
    pub addr: SocketAddr,
    /// On this node.
    pub local: bool,
    active: AtomicUsize,
    hysteresis: Mutex<Hysteresis>,
    state: watch::Sender<UpState>,
    /// Metric handles.
    pub counters: UpstreamCounters,
    metrics: ProxyMetrics,
}

impl Upstream {
    fn new(addr: SocketAddr, local: bool, hysteresis: Hysteresis, metrics: &ProxyMetrics) -> Self {
        let upstream = addr.to_string();
        let l = UpstreamLabel {
            upstream: upstream.clone(),
        };
        let bytes = |direction: &str| {
            metrics
                .bytes
                .get_or_create(&BytesLabels {
                    upstream: upstream.clone(),
                    direction: direction.into(),
                })
                .clone()
        };
        let check = |result: &str| {
            metrics
                .checks
                .get_or_create(&CheckLabels {
                    upstream: upstream.clone(),
                    result: result.into(),
                })
                .clone()
        };
        let counters = UpstreamCounters {
            tx: bytes("tx"),
            rx: bytes("rx"),
            active: metrics.active.get_or_create(&l).clone(),
            connections: metrics.connections.get_or_create(&l).clone(),
            connect_failures: metrics.connect_failures.get_or_create(&l).clone(),
            evicted: metrics.evicted.get_or_create(&l).clone(),
            check_ok: check("success"),
            check_failed: check("failure"),
        };
        let up = Self {
            addr,
            local,
            active: AtomicUsize::new(0),
            hysteresis: Mutex::new(hysteresis),
            state: watch::channel(UpState {
                health: Health::Unknown,
                removed: false,
            })
            .0,
            counters,
            metrics: metrics.clone(),
        };
        up.export(Health::Unknown);
        up
    }

    /// Current state.
    pub fn state(&self) -> UpState {
        *self.state.borrow()
    }

    /// A receiver of state changes.
    pub fn subscribe(&self) -> watch::Receiver<UpState> {
        self.state.subscribe()
    }

    /// Open proxied connections.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts an open (or opening) connection until the guard drops.
    pub fn acquire(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.counters.active.inc();
        ActiveGuard(self.clone())
    }

    /// Records a health check result.
    pub fn record_check(&self, success: bool) {
        if success {
            self.counters.check_ok.inc();
        } else {
            self.counters.check_failed.inc();
        }
        let current = self.state().health;
        let next = self
            .hysteresis
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(current, success);
        self.set_health(next);
    }

    /// Records a failed connect: down at once.
    pub fn record_connect_failure(&self) {
        self.counters.connect_failures.inc();
        let next = self
            .hysteresis
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .passive_failure();
        self.set_health(next);
    }

    fn set_health(&self, next: Health) {
        let mut changed = false;
        self.state.send_if_modified(|s| {
            changed = s.health != next && !s.removed;
            if changed {
                s.health = next;
            }
            changed
        });
        if changed {
            match next {
                Health::Down => warn!(upstream = %self.addr, "upstream down"),
                _ => info!(upstream = %self.addr, health = next.name(), "upstream health changed"),
            }
            self.export(next);
        }
    }

    fn export(&self, health: Health) {
        let upstream = self.addr.to_string();
        self.metrics
            .healthy
            .get_or_create(&UpstreamLabel {
                upstream: upstream.clone(),
            })
            .set(i64::from(health == Health::Up));
        for h in [Health::Unknown, Health::Up, Health::Down] {
            self.metrics
                .state
                .get_or_create(&StateLabels {
                    upstream: upstream.clone(),
                    state: h.name().into(),
                })
                .set(i64::from(h == health));
        }
    }

    fn remove(&self) {
        self.state.send_modify(|s| s.removed = true);
        self.metrics.forget(&self.addr.to_string());
    }
}

/// Counts one open connection to an upstream.
#[derive(Debug)]
pub struct ActiveGuard(Arc<Upstream>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        self.0.counters.active.dec();
    }
}

/// One candidate's sort inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rank {
    /// Health.
    pub health: Health,
    /// On this node.
    pub local: bool,
    /// Open connections.
    pub active: usize,
}

/// The order in which to try candidates: indexes into `ranks`. `rotate` spreads ties.
pub fn order(ranks: &[Rank], rotate: usize) -> Vec<usize> {
    let n = ranks.len().max(1);
    let mut idx: Vec<usize> = (0..ranks.len()).collect();
    idx.sort_by_key(|&i| {
        let r = ranks[i];
        (
            r.health.rank(),
            !r.local,
            r.active,
            (i + n - rotate % n) % n,
        )
    });
    idx
}

/// The set of known upstreams.
#[derive(Debug)]
pub struct Pool {
    upstreams: RwLock<Vec<Arc<Upstream>>>,
    rotate: AtomicUsize,
    node_ip: Option<IpAddr>,
    rise: u32,
    fall: u32,
    /// Metrics.
    pub metrics: ProxyMetrics,
}

/// What [`Pool::set`] changed.
#[derive(Debug, Default)]
pub struct Change {
    /// New upstreams (need a health monitor).
    pub added: Vec<Arc<Upstream>>,
    /// Removed upstreams (their connections move after the grace period).
    pub removed: Vec<Arc<Upstream>>,
}

impl Pool {
    /// An empty pool. `node_ip` marks upstreams on this node; without it, an upstream whose IP
    /// is a local address counts as local.
    pub fn new(node_ip: Option<IpAddr>, rise: u32, fall: u32, metrics: ProxyMetrics) -> Self {
        Self {
            upstreams: RwLock::new(Vec::new()),
            rotate: AtomicUsize::new(0),
            node_ip,
            rise,
            fall,
            metrics,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Upstream>>> {
        self.upstreams
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// All upstreams, sorted by address.
    pub fn all(&self) -> Vec<Arc<Upstream>> {
        self.read().clone()
    }

    /// Number of known upstreams.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no upstream is known.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// The addresses, sorted.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.read().iter().map(|u| u.addr).collect()
    }

    /// The upstream at `addr`.
    pub fn get(&self, addr: SocketAddr) -> Option<Arc<Upstream>> {
        self.read().iter().find(|u| u.addr == addr).cloned()
    }

    /// Whether an upstream other than `addr` is up.
    pub fn any_up_except(&self, addr: SocketAddr) -> bool {
        self.read()
            .iter()
            .any(|u| u.addr != addr && u.state().health == Health::Up)
    }

    /// Candidates for a new connection, in the order to try them.
    pub fn candidates(&self) -> Vec<Arc<Upstream>> {
        let ups = self.read();
        let ranks: Vec<Rank> = ups
            .iter()
            .map(|u| Rank {
                health: u.state().health,
                local: u.local,
                active: u.active(),
            })
            .collect();
        let rotate = self.rotate.fetch_add(1, Ordering::Relaxed);
        order(&ranks, rotate)
            .into_iter()
            .map(|i| ups[i].clone())
            .collect()
    }

    /// Replaces the set with `addrs`, keeping the state and connections of upstreams that stay.
    pub fn set(&self, addrs: &[SocketAddr]) -> Change {
        let mut change = Change::default();
        let mut guard = self
            .upstreams
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut next = Vec::with_capacity(addrs.len());
        for &addr in addrs {
            if next.iter().any(|u: &Arc<Upstream>| u.addr == addr) {
                continue;
            }
            match guard.iter().find(|u| u.addr == addr) {
                Some(u) => next.push(u.clone()),
                None => {
                    let up = Arc::new(Upstream::new(
                        addr,
                        self.is_local(addr.ip()),
                        Hysteresis::new(self.rise, self.fall),
                        &self.metrics,
                    ));
                    change.added.push(up.clone());
                    next.push(up);
                }
            }
        }
        next.sort_by_key(|u| u.addr);
        for old in guard.iter() {
            if !next.iter().any(|u| u.addr == old.addr) {
                change.removed.push(old.clone());
            }
        }
        *guard = next;
        self.metrics
            .upstreams
            .set(i64::try_from(guard.len()).unwrap_or(i64::MAX));
        drop(guard);
        for up in &change.removed {
            up.remove();
        }
        change
    }

    fn is_local(&self, ip: IpAddr) -> bool {
        match self.node_ip {
            Some(node) => node == ip,
            // Binding succeeds only for an address of this host.
            None => std::net::UdpSocket::bind((ip, 0)).is_ok(),
        }
    }
}

#[cfg(test)]
mod tests;
