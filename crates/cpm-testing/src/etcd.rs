//! A real etcd process for integration tests: started from `ETCD_BIN` or `PATH` on loopback with
//! free ports and a temporary data directory, waited on until healthy, killed on drop.
//!
//! When the binary is missing, [`etcd_binary`] skips the test with a loud message locally and
//! fails it when `CI=true`: CI must install etcd (`.ci/install-deps`).

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The etcd binary, or `None` (skip) when it is absent outside CI. Panics in CI.
pub fn etcd_binary() -> Option<PathBuf> {
    find_tool("etcd", "ETCD_BIN")
}

/// The etcdctl binary, or `None` (skip) when it is absent outside CI. Panics in CI.
pub fn etcdctl_binary() -> Option<PathBuf> {
    find_tool("etcdctl", "ETCDCTL_BIN")
}

/// Finds `name` via the env var `var`, then `PATH`. Missing: skip locally, panic under `CI=true`.
pub fn find_tool(name: &str, var: &str) -> Option<PathBuf> {
    let found = std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
        });
    if found.is_none() {
        let msg = format!("`{name}` not found (set {var} or install it: bash .ci/install-deps)");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}: required under CI=true");
        }
        eprintln!("SKIPPED: {msg}");
    }
    found
}

/// A free TCP port on `ip` (bound and released; tests accept the small race).
pub fn free_port(ip: IpAddr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("invariant: free port")
}

/// TLS files for an etcd member (etcd's own flag names).
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// `--trusted-ca-file` and `--peer-trusted-ca-file`.
    pub ca: PathBuf,
    /// `--cert-file`.
    pub server_cert: PathBuf,
    /// `--key-file`.
    pub server_key: PathBuf,
    /// `--peer-cert-file`.
    pub peer_cert: PathBuf,
    /// `--peer-key-file`.
    pub peer_key: PathBuf,
}

impl EtcdTls {
    /// The kubeadm layout under a node's `etc/kubernetes/pki`.
    pub fn kubeadm(pki: &Path) -> Self {
        Self {
            ca: pki.join("etcd/ca.crt"),
            server_cert: pki.join("etcd/server.crt"),
            server_key: pki.join("etcd/server.key"),
            peer_cert: pki.join("etcd/peer.crt"),
            peer_key: pki.join("etcd/peer.key"),
        }
    }
}

/// How to start one member.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Member name.
    pub name: String,
    /// Loopback address to listen on (127.0.0.x).
    pub ip: IpAddr,
    /// Data directory (created 0700 by the harness if missing).
    pub data_dir: PathBuf,
    /// TLS files; plain HTTP when `None`.
    pub tls: Option<EtcdTls>,
    /// `--initial-cluster`; this member alone when `None`.
    pub initial_cluster: Option<String>,
    /// `--initial-cluster-state` (`new` or `existing`).
    pub initial_cluster_state: String,
    /// Client, peer and metrics ports; free ports when `None`.
    pub ports: Option<[u16; 3]>,
}

impl EtcdOptions {
    /// A single new member on 127.0.0.1.
    pub fn single(name: &str, data_dir: &Path, tls: Option<EtcdTls>) -> Self {
        Self {
            name: name.to_string(),
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            data_dir: data_dir.to_path_buf(),
            tls,
            initial_cluster: None,
            initial_cluster_state: "new".into(),
            ports: None,
        }
    }
}

/// A running etcd member; killed on drop.
#[derive(Debug)]
pub struct EtcdProcess {
    child: Child,
    /// The client URL (`https://127.0.0.1:PORT` with TLS).
    pub client_url: String,
    /// The peer URL.
    pub peer_url: String,
    /// Plain-HTTP metrics and `/health` URL.
    pub metrics_url: String,
    /// The log file (stderr of etcd).
    pub log: PathBuf,
}

impl EtcdProcess {
    /// Starts a member with `bin` and waits up to 30 s until `/health` says true.
    pub fn start(bin: &Path, opts: &EtcdOptions) -> std::io::Result<Self> {
        let mut p = Self::spawn(bin, opts)?;
        p.wait_healthy(Duration::from_secs(30))?;
        Ok(p)
    }

    /// Starts a member without waiting (members of a new multi-member cluster become healthy
    /// only together).
    pub fn spawn(bin: &Path, opts: &EtcdOptions) -> std::io::Result<Self> {
        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        let ip = opts.ip;
        let [cp, pp, mp] = opts
            .ports
            .unwrap_or_else(|| [free_port(ip), free_port(ip), free_port(ip)]);
        let client_url = format!("{scheme}://{ip}:{cp}");
        let peer_url = format!("{scheme}://{ip}:{pp}");
        let metrics_url = format!("http://{ip}:{mp}");
        if !opts.data_dir.exists() {
            std::os::unix::fs::DirBuilderExt::mode(
                std::fs::DirBuilder::new().recursive(true),
                0o700,
            )
            .create(&opts.data_dir)?;
        }
        let log = opts.data_dir.with_extension("log");
        let log_file = std::fs::File::create(&log)?;
        let initial_cluster = opts
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={peer_url}", opts.name));
        let mut cmd = Command::new(bin);
        cmd.args(["--name", &opts.name])
            .arg("--data-dir")
            .arg(&opts.data_dir)
            .args(["--logger=zap", "--log-outputs=stderr"])
            .args([
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--listen-metrics-urls", &metrics_url])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", &opts.initial_cluster_state])
            .args(["--initial-cluster-token", "cpm-test"]);
        if let Some(t) = &opts.tls {
            cmd.arg("--cert-file")
                .arg(&t.server_cert)
                .arg("--key-file")
                .arg(&t.server_key);
            cmd.arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
            cmd.arg("--peer-cert-file")
                .arg(&t.peer_cert)
                .arg("--peer-key-file")
                .arg(&t.peer_key);
            cmd.arg("--peer-trusted-ca-file")
                .arg(&t.ca)
                .arg("--peer-client-cert-auth");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = cmd.spawn()?;
        Ok(Self {
            child,
            client_url,
            peer_url,
            metrics_url,
            log,
        })
    }

    /// Waits until `/health` answers `"health":"true"`, or fails with the log's tail.
    pub fn wait_healthy(&mut self, timeout: Duration) -> std::io::Result<()> {
        let deadline = Instant::now() + timeout;
        let addr = self.metrics_url.trim_start_matches("http://").to_string();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(std::io::Error::other(format!(
                    "etcd exited with {status}: {}",
                    self.log_tail()
                )));
            }
            if http_get(&addr, "/health").is_some_and(|b| b.contains("\"health\":\"true\"")) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "etcd not healthy after {timeout:?}: {}",
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines etcd logged.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<_> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Kills the process now (as a crash would).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A minimal blocking HTTP/1.0 GET; the body, or `None` on any error.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}

/// A started member and what the manifest said about it.
impl EtcdProcess {
    /// Starts etcd from a rendered static-pod manifest (`<root>/etc/kubernetes/manifests/etcd.yaml`)
    /// as the kubelet would run its command, with `bin` as the binary. Host paths in flags are
    /// mapped under `root`. Several simulated masters share this machine's loopback, so a node
    /// whose IP is not 127.0.0.1 does not also listen on 127.0.0.1:2379, and the metrics listener
    /// (127.0.0.1:2381 in the manifest) moves to the node's own IP. Does not wait for health.
    pub fn spawn_from_manifest(bin: &Path, root: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(root.join("etc/kubernetes/manifests/etcd.yaml"))?;
        let value: serde_json::Value =
            serde_saphyr::from_str(&text).map_err(std::io::Error::other)?;
        let pod: k8s_openapi::api::core::v1::Pod =
            serde_json::from_value(value).map_err(std::io::Error::other)?;
        let command = pod
            .spec
            .and_then(|s| s.containers.into_iter().next())
            .and_then(|c| c.command)
            .ok_or_else(|| std::io::Error::other("the manifest has no container command"))?;
        let flags: Vec<(String, String)> = command
            .iter()
            .skip(1)
            .filter_map(|a| {
                a.strip_prefix("--")?
                    .split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        let get = |k: &str| {
            flags
                .iter()
                .find(|(f, _)| f == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let client_url = get("advertise-client-urls");
        let ip = client_url
            .trim_start_matches("https://")
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or_default();
        let mut args = Vec::new();
        let mut data_dir = PathBuf::new();
        for (k, v) in &flags {
            let v = match k.as_str() {
                "listen-client-urls" if ip != "127.0.0.1" => v
                    .split(',')
                    .filter(|u| !u.contains("://127.0.0.1:"))
                    .collect::<Vec<_>>()
                    .join(","),
                "listen-metrics-urls" => v.replace("127.0.0.1", &ip),
                _ if v.starts_with('/') => {
                    root.join(v.trim_start_matches('/')).display().to_string()
                }
                _ => v.clone(),
            };
            if k == "data-dir" {
                data_dir = PathBuf::from(&v);
            }
            args.push(format!("--{k}={v}"));
        }
        if !data_dir.exists() {
            std::os::unix::fs::DirBuilderExt::mode(
                std::fs::DirBuilder::new().recursive(true),
                0o700,
            )
            .create(&data_dir)?;
        }
        let log = data_dir.with_extension("log");
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .args(&args)
            .args(["--logger=zap", "--log-outputs=stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()?;
        let metrics_url = get("listen-metrics-urls").replace("127.0.0.1", &ip);
        Ok(Self {
            child,
            client_url,
            peer_url: get("initial-advertise-peer-urls"),
            metrics_url,
            log,
        })
    }
}
