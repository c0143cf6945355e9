//! Simulated hosts as network namespaces.
//!
//! Several masters cannot share one loopback: each binds 127.0.0.1:6445 (api-proxy),
//! 127.0.0.1:9601–9607 (admin ports), 127.0.0.1:2381 (etcd metrics), and kube-controller-manager
//! and kube-scheduler bind 127.0.0.1. So every simulated master (and every pod without
//! `hostNetwork`) is a network namespace with its own loopback, joined to a per-cluster bridge
//! in the host namespace by a veth pair (`eth0` inside), with its own address on a per-cluster
//! /24. The bridge holds `.1`: the test process and the store live there.
//!
//! Names derive from the owner's pid and a counter ([`new_tag`]), so clusters of parallel tests
//! never clash; a state directory `/run/cpm-sim/<tag>` records the owner, and [`reap_leftovers`]
//! removes what owners that died without dropping their cluster left behind.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::error::{Result, SimError, run};

/// Where the simulator keeps per-cluster state (runc state roots, owner files).
pub const STATE_ROOT: &str = "/run/cpm-sim";

/// The first /24 candidates: 10.200.0.0/24 … 10.207.255.0/24.
const SUBNET_BASE: u32 = u32::from_be_bytes([10, 200, 0, 0]);
const SUBNET_COUNT: u32 = 8 * 256;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A new cluster tag: the pid and a per-process counter in base 36 (`<pid>x<n>`), short
/// enough for interface names (15 bytes at most).
pub fn new_tag() -> String {
    tag_for(std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// The tag of cluster `n` of process `pid`.
pub fn tag_for(pid: u32, n: u32) -> String {
    format!("{}x{}", base36(pid), base36(n))
}

/// The owner pid a tag names.
pub fn owner_of(tag: &str) -> Option<u32> {
    u32::from_str_radix(tag.split_once('x')?.0, 36).ok()
}

fn base36(mut v: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(v % 36) as usize]);
        v /= 36;
        if v == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

/// The bridge of cluster `tag`.
pub fn bridge_name(tag: &str) -> String {
    format!("cb{tag}")
}

/// The network namespace of host `host` in cluster `tag`.
pub fn netns_name(tag: &str, host: &str) -> String {
    format!("cpms-{tag}-{host}")
}

/// The host-side veth of the host with address index `index` in cluster `tag`.
pub fn veth_name(tag: &str, index: u8) -> String {
    format!("cv{tag}h{index}")
}

/// The bind-mounted namespace file `ip netns` creates.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// The `k`-th candidate /24 (first three octets).
pub fn subnet(k: u32) -> [u8; 3] {
    let [a, b, c, _] = (SUBNET_BASE + ((k % SUBNET_COUNT) << 8)).to_be_bytes();
    [a, b, c]
}

/// The first candidate /24 from `start` on that no address in `used` falls into.
pub fn pick_subnet(used: &[Ipv4Addr], start: u32) -> Option<[u8; 3]> {
    (0..SUBNET_COUNT)
        .map(|i| subnet(start.wrapping_add(i)))
        .find(|s| !used.iter().any(|ip| ip.octets()[..3] == s[..]))
}

/// Every IPv4 address configured in the host namespace.
fn host_addresses() -> Result<Vec<Ipv4Addr>> {
    let out = run(&["ip", "-4", "-o", "addr", "show"])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect())
}

/// A cluster's bridge, subnet and state directory; removed by [`ClusterNet::teardown`].
#[derive(Debug)]
pub struct ClusterNet {
    /// The cluster tag.
    pub tag: String,
    /// The bridge interface.
    pub bridge: String,
    /// The /24 (first three octets).
    pub subnet: [u8; 3],
    /// `/run/cpm-sim/<tag>`.
    pub state_dir: PathBuf,
}

impl ClusterNet {
    /// The bridge's address (`.1`): where the host-side services of the cluster listen.
    pub fn gateway(&self) -> Ipv4Addr {
        self.address(1)
    }

    /// The address with host part `index`.
    pub fn address(&self, index: u8) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, index)
    }

    /// Creates the bridge with a free /24 (chosen under a lock, so parallel clusters differ)
    /// and the state directory with the owner file.
    pub fn create(tag: &str) -> Result<Self> {
        for tool in ["ip", "runc"] {
            if which(tool).is_none() {
                return Err(SimError::MissingTool(if tool == "ip" {
                    "ip"
                } else {
                    "runc"
                }));
            }
        }
        std::fs::create_dir_all(STATE_ROOT).map_err(SimError::io("create", STATE_ROOT))?;
        let lock_path = Path::new(STATE_ROOT).join(".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(SimError::io("open", &lock_path))?;
        rustix::fs::flock(lock.as_fd(), rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| SimError::io("lock", &lock_path)(e.into()))?;
        let state_dir = Path::new(STATE_ROOT).join(tag);
        std::fs::create_dir_all(&state_dir).map_err(SimError::io("create", &state_dir))?;
        let owner = state_dir.join("owner");
        std::fs::File::create(&owner)
            .and_then(|mut f| writeln!(f, "{}", std::process::id()))
            .map_err(SimError::io("write", &owner))?;
        let start = owner_of(tag).unwrap_or(0).wrapping_mul(7919);
        let subnet = pick_subnet(&host_addresses()?, start)
            .ok_or_else(|| SimError::invalid("cluster network", "no free /24 in 10.200.0.0/13"))?;
        let net = Self {
            tag: tag.to_string(),
            bridge: bridge_name(tag),
            subnet,
            state_dir,
        };
        let gw = format!("{}/24", net.gateway());
        run(&["ip", "link", "add", &net.bridge, "type", "bridge"])?;
        run(&["ip", "addr", "add", &gw, "dev", &net.bridge])?;
        run(&["ip", "link", "set", &net.bridge, "up"])?;
        drop(lock);
        Ok(net)
    }

    /// Adds a host: namespace `netns`, a veth pair to the bridge (`eth0` inside) and address
    /// `.index`, loopback up, default route via the bridge.
    pub fn add_host(&self, netns: &str, index: u8) -> Result<Ipv4Addr> {
        let ip = self.address(index);
        let veth = veth_name(&self.tag, index);
        let peer = format!("{veth}p");
        run(&["ip", "netns", "add", netns])?;
        run(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", &peer, "netns", netns,
        ])?;
        run(&["ip", "link", "set", &veth, "master", &self.bridge])?;
        run(&["ip", "link", "set", &veth, "up"])?;
        run(&["ip", "-n", netns, "link", "set", &peer, "name", "eth0"])?;
        run(&[
            "ip",
            "-n",
            netns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ])?;
        run(&["ip", "-n", netns, "link", "set", "eth0", "up"])?;
        run(&["ip", "-n", netns, "link", "set", "lo", "up"])?;
        run(&[
            "ip",
            "-n",
            netns,
            "route",
            "add",
            "default",
            "via",
            &self.gateway().to_string(),
        ])?;
        Ok(ip)
    }

    /// Routes TCP to `service` from inside `netns` to `target`, as kube-proxy does for a
    /// Service's ClusterIP (an iptables DNAT rule in the namespace's `OUTPUT` chain).
    pub fn route_service(netns: &str, service: SocketAddr, target: SocketAddr) -> Result<()> {
        run(&[
            "ip",
            "netns",
            "exec",
            netns,
            "iptables",
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-d",
            &format!("{}/32", service.ip()),
            "-p",
            "tcp",
            "--dport",
            &service.port().to_string(),
            "-j",
            "DNAT",
            "--to-destination",
            &target.to_string(),
        ])
        .map(|_| ())
    }

    /// Removes a host's namespace (its veth pair goes with it).
    pub fn remove_host(netns: &str) {
        let _ = run(&["ip", "netns", "del", netns]);
    }

    /// Removes every namespace of the cluster, the bridge and the state directory.
    pub fn teardown(&self) {
        remove_cluster(&self.tag, &self.state_dir);
    }
}

/// The path of `tool` on `PATH`.
pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

/// Removes cluster `tag`: its runc containers, namespaces, bridge and state directory.
fn remove_cluster(tag: &str, state_dir: &Path) {
    crate::runc::remove_all(&state_dir.join("runc"));
    let prefix = netns_name(tag, "");
    if let Ok(list) = run(&["ip", "netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if name.starts_with(&prefix) {
                ClusterNet::remove_host(name);
            }
        }
    }
    let _ = run(&["ip", "link", "del", &bridge_name(tag)]);
    let _ = std::fs::remove_dir_all(state_dir);
}

/// Removes what clusters of dead owners left (their owner pid no longer runs); returns their
/// tags.
pub fn reap_leftovers() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(STATE_ROOT) else {
        return Vec::new();
    };
    let mut reaped = Vec::new();
    for e in entries.flatten() {
        let tag = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner_of(&tag) else { continue };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        remove_cluster(&tag, &e.path());
        reaped.push(tag);
    }
    reaped
}

/// Connects to `addr` from inside namespace `netns` (a thread joins the namespace, makes the
/// socket and ends; the socket stays in the namespace). The stream is non-blocking, ready for
/// `tokio::net::TcpStream::from_std`.
pub fn connect_in(
    netns: &str,
    addr: SocketAddr,
    timeout: Duration,
) -> std::io::Result<std::net::TcpStream> {
    let path = netns_path(netns);
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path)?;
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )?;
        let stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nonblocking(true)?;
        Ok(stream)
    })
    .join()
    .map_err(|_| std::io::Error::other("the namespace dialer thread panicked"))?
}

/// Async [`connect_in`].
pub async fn connect_in_async(
    netns: &str,
    addr: SocketAddr,
    timeout: Duration,
) -> std::io::Result<tokio::net::TcpStream> {
    let netns = netns.to_string();
    let std = tokio::task::spawn_blocking(move || connect_in(&netns, addr, timeout))
        .await
        .map_err(std::io::Error::other)??;
    tokio::net::TcpStream::from_std(std)
}

/// Runs `argv` in namespace `netns` (`ip netns exec`).
pub fn exec_in(netns: &str, argv: &[&str]) -> Result<std::process::Output> {
    let mut full = vec!["ip", "netns", "exec", netns];
    full.extend_from_slice(argv);
    std::process::Command::new("ip")
        .args(&full[1..])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| SimError::Spawn {
            argv: full.iter().map(ToString::to_string).collect(),
            source,
        })
}

#[cfg(test)]
mod tests;
