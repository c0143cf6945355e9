//! `cargo xtask bench proxy`: api-proxy against nginx's stream proxy (configured like the system
//! it replaces: least_conn, `proxy_connect_timeout 1s`, passive failover) and a direct connection,
//! in the same run, on loopback only: bulk throughput (1 and 64 streams), request/response latency
//! at a fixed rate, new connections per second, RSS at 10 000 idle connections, and the time to
//! stop using a killed and a blackholed upstream.
//!
//! The upstreams are in-process servers that sniff the first byte of a connection: a TLS
//! ClientHello gets an HTTPS `/readyz` answer (cluster CA, so api-proxy's health checks pass);
//! otherwise one byte picks a benchmark mode (sink, echo, id, hold). A blackhole is a listener
//! whose accept queue is full and never drained: the kernel drops new SYNs, as with a host that
//! vanished from the network.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::bench_pki::BenchPki;
use crate::cmd::{self};

/// Listen backlog of the upstreams (a small one in the failover scenarios fills fast).
const BACKLOG: i32 = 4096;
const FAILOVER_BACKLOG: i32 = 8;
/// A probe slower than this counts as stalled (a healthy one takes well under a millisecond).
const STALL: Duration = Duration::from_millis(100);
pub(super) const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";
/// Idle connections held through each proxy. The target is 10 000, but this machine's hard
/// RLIMIT_NOFILE is 20 000 and cannot be raised without CAP_SYS_RESOURCE: a proxy holding N client
/// plus N upstream sockets needs 2 N + a few descriptors, so 9 000 is the most that fits; the
/// report extrapolates to 10 000 from the per-connection cost.
const IDLE_CONNECTIONS: usize = 9_000;

/// Runs the whole benchmark; `seconds` bounds each timed phase.
pub fn run(seconds: u64, rounds: u32, traffic_only: bool) -> anyhow::Result<()> {
    ensure_nginx()?;
    let bin = cmd::release_binary("api-proxy")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench(
        &bin,
        Duration::from_secs(seconds),
        rounds,
        traffic_only,
    ))
}

pub(super) fn ensure_nginx() -> anyhow::Result<()> {
    if cmd::have("nginx") && Path::new(NGINX_STREAM_MODULE).exists() {
        return Ok(());
    }
    let sudo: &[&str] = if cmd::output("id", &["-u"])?.stdout.starts_with(b"0") {
        &[]
    } else {
        &["sudo"]
    };
    let apt = |args: &[&str]| -> anyhow::Result<()> {
        let mut argv: Vec<&str> = sudo.to_vec();
        argv.push("apt-get");
        argv.extend_from_slice(args);
        cmd::run(argv[0], &argv[1..])
    };
    apt(&["update", "-qq"])?;
    apt(&[
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        "nginx",
        "libnginx-mod-stream",
    ])
}

// ---------------------------------------------------------------------------------------------
// Upstreams

struct Pki {
    dir: tempfile::TempDir,
    server: Arc<rustls::ServerConfig>,
}

impl Pki {
    fn new() -> anyhow::Result<Self> {
        let pki = BenchPki::new("kube-apiserver")?;
        let dir = tempfile::Builder::new()
            .prefix("cpm-bench-proxy-")
            .tempdir()?;
        cpm_core::apply::write_atomic(
            &dir.path().join("ca.crt"),
            pki.ca_pem.as_bytes(),
            0o644,
            None,
            None,
        )?;
        Ok(Self {
            dir,
            server: pki.server_config()?,
        })
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }
}

struct Upstream {
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
    freeze: Arc<tokio::sync::Notify>,
    fillers: Vec<std::net::TcpStream>,
}

impl Upstream {
    /// A server on a fresh loopback port with a listen `backlog`.
    async fn start(pki: &Pki, name: u8, backlog: i32) -> anyhow::Result<Self> {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        sock.set_reuse_address(true)?;
        sock.set_nonblocking(true)?;
        sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        sock.listen(backlog)?;
        let listener = TcpListener::from_std(sock.into())?;
        let addr = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.server.clone());
        let freeze = Arc::new(tokio::sync::Notify::new());
        let frozen = freeze.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    () = frozen.notified() => break,
                };
                let Ok((tcp, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let acceptor = acceptor.clone();
                conns.spawn(async move {
                    let _ = serve(tcp, acceptor, name).await;
                });
                while conns.try_join_next().is_some() {}
            }
            // Frozen: the listener stays open and is never accepted from again.
            std::future::pending::<()>().await;
            drop((listener, conns));
        });
        Ok(Self {
            addr,
            task: Some(task),
            freeze,
            fillers: Vec::new(),
        })
    }

    /// Kills the server: the listener closes (new connects are refused) with its connections.
    fn kill(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Turns the server into a blackhole without a refusing window: it stops accepting and its
    /// accept queue is filled, after which the kernel drops new SYNs (connects hang), as for a
    /// host that vanished.
    async fn blackhole(&mut self) -> anyhow::Result<()> {
        self.freeze.notify_one();
        let addr = self.addr;
        let fillers = tokio::task::spawn_blocking(move || {
            let mut fillers = Vec::new();
            for _ in 0..256 {
                match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
                    Ok(s) => fillers.push(s),
                    Err(_) => break,
                }
            }
            fillers
        })
        .await?;
        self.fillers = fillers;
        Ok(())
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn serve(
    mut tcp: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    name: u8,
) -> std::io::Result<()> {
    tcp.set_nodelay(true)?;
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Ok(());
    }
    if first[0] == 0x16 {
        let mut tls = acceptor.accept(tcp).await?;
        let mut buf = [0u8; 2048];
        let _ = tls.read(&mut buf).await?;
        tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .await?;
        return tls.shutdown().await;
    }
    tcp.read_exact(&mut first).await?;
    let mut buf = vec![0u8; 256 * 1024];
    match first[0] {
        // Generator: send for the given milliseconds, then close (throughput upstream → client,
        // the direction of watches and list responses).
        b'G' => {
            let mut ms = [0u8; 4];
            tcp.read_exact(&mut ms).await?;
            let deadline =
                Instant::now() + Duration::from_millis(u64::from(u32::from_be_bytes(ms)));
            buf.fill(0x5a);
            while Instant::now() < deadline {
                tcp.write_all(&buf).await?;
            }
        }
        // Echo.
        b'E' => loop {
            let n = tcp.read(&mut buf[..4096]).await?;
            if n == 0 {
                break;
            }
            tcp.write_all(&buf[..n]).await?;
        },
        // Id: one byte, close.
        b'I' => tcp.write_all(&[name]).await?,
        // Hold: one byte back, then idle until the client closes.
        b'H' => {
            tcp.write_all(&[name]).await?;
            while tcp.read(&mut buf[..64]).await? > 0 {}
        }
        _ => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Proxies

struct Proc {
    child: Child,
    name: &'static str,
}

impl Proc {
    /// RSS of the process and its direct children, in KiB.
    fn rss_kib(&self) -> u64 {
        let pid = self.child.id();
        let mut total = rss_of(pid);
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                // pid (comm) state ppid ...
                let ppid = stat
                    .rsplit_once(") ")
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|s| s.parse::<u32>().ok());
                if ppid == Some(pid) {
                    total += rss_of(p);
                }
            }
        }
        total
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn start_api_proxy(
    bin: &Path,
    pki: &Pki,
    ups: &[SocketAddr],
) -> anyhow::Result<(Proc, SocketAddr, String)> {
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let admin = format!("127.0.0.1:{}", free_port()?);
    let root = pki.dir.path().join(format!("root-{}", listen.port()));
    std::fs::create_dir_all(&root)?;
    let mut cmd = Command::new(bin);
    cmd.arg("--root")
        .arg(&root)
        .arg("--config")
        .arg(root.join("absent.yaml"))
        .args(["--listen", &listen.to_string(), "--admin-addr", &admin])
        .args(["--node-ip", "192.0.2.1", "--log-level", "error"])
        .arg("--ca-file")
        .arg(pki.ca_file());
    for u in ups {
        cmd.args(["--upstream", &u.to_string()]);
    }
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let proc = Proc {
        child,
        name: "api-proxy",
    };
    // Ready once every upstream is healthy.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let up = healthy(&admin, ups).await;
        if up.iter().all(|h| *h == Some(true)) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "api-proxy upstreams never healthy: {up:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((proc, listen, admin))
}

/// Each upstream's `cpm_api_proxy_upstream_healthy` value.
async fn healthy(admin: &str, ups: &[SocketAddr]) -> Vec<Option<bool>> {
    let body = match cpm_core::http::get(
        &format!("http://{admin}/metrics"),
        &cpm_core::http::Verify::Insecure,
        Duration::from_secs(1),
    )
    .await
    {
        Ok(r) => String::from_utf8_lossy(&r.body).to_string(),
        Err(_) => String::new(),
    };
    ups.iter()
        .map(|u| {
            let prefix = format!("cpm_api_proxy_upstream_healthy{{upstream=\"{u}\"}} ");
            body.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .map(|v| v.trim() == "1")
        })
        .collect()
}

async fn start_nginx(pki: &Pki, ups: &[SocketAddr]) -> anyhow::Result<(Proc, SocketAddr)> {
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let dir = pki.dir.path().join(format!("nginx-{}", listen.port()));
    std::fs::create_dir_all(&dir)?;
    let servers: String = ups.iter().map(|u| format!("    server {u};\n")).collect();
    let conf = format!(
        "load_module {NGINX_STREAM_MODULE};\ndaemon off;\nworker_processes auto;\nworker_rlimit_nofile 20000;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\nevents {{ worker_connections 40000; }}\nstream {{\n  upstream kubernetes {{\n    least_conn;\n{servers}  }}\n  server {{\n    listen {listen};\n    proxy_pass kubernetes;\n    proxy_timeout 24h;\n    proxy_connect_timeout 1s;\n  }}\n}}\n",
        dir = dir.display()
    );
    let conf_path = dir.join("nginx.conf");
    cpm_core::apply::write_atomic(&conf_path, conf.as_bytes(), 0o644, None, None)?;
    let child = Command::new("nginx")
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let proc = Proc {
        child,
        name: "nginx",
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(listen).await.is_err() {
        ensure!(
            Instant::now() < deadline,
            "nginx did not start; see {}",
            dir.join("error.log").display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The probe connection above reached an upstream; let nginx settle.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok((proc, listen))
}

// ---------------------------------------------------------------------------------------------
// Measurements

async fn connect(addr: SocketAddr, mode: u8) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut s = s;
    s.write_all(&[mode]).await?;
    Ok(s)
}

/// Bytes per second received over `streams` parallel streams sent by the upstream for `dur`.
async fn throughput(addr: SocketAddr, streams: usize, dur: Duration) -> anyhow::Result<f64> {
    let start = Instant::now();
    let ms = u32::try_from(dur.as_millis())
        .unwrap_or(u32::MAX)
        .to_be_bytes();
    let mut set = JoinSet::new();
    for _ in 0..streams {
        set.spawn(async move {
            let mut s = connect(addr, b'G').await?;
            s.write_all(&ms).await?;
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            loop {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            Ok::<u64, std::io::Error>(total)
        });
    }
    let mut total = 0u64;
    while let Some(r) = set.join_next().await {
        total += r??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Request/response latencies (64-byte echo) at `rate` per second over 16 connections.
async fn latency(
    addr: SocketAddr,
    rate: u32,
    dur: Duration,
) -> anyhow::Result<(Duration, Duration, Duration)> {
    const CONNS: u32 = 16;
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let total = rate.saturating_mul(u32::try_from(dur.as_secs()).unwrap_or(u32::MAX));
    let mut set = JoinSet::new();
    for j in 0..CONNS {
        set.spawn(async move {
            let mut s = connect(addr, b'E').await?;
            let msg = [0x42u8; 64];
            let mut back = [0u8; 64];
            let mut lats = Vec::new();
            let mut k = j;
            while k < total {
                let at = start + Duration::from_secs_f64(f64::from(k) / f64::from(rate));
                tokio::time::sleep_until(at).await;
                // From the send: the timer's own lateness (up to 1 ms) is the client's, and at
                // 125 requests/s per connection nothing queues behind a slow answer.
                let sent = tokio::time::Instant::now();
                s.write_all(&msg).await?;
                s.read_exact(&mut back).await?;
                lats.push(sent.elapsed());
                k += CONNS;
            }
            Ok::<_, std::io::Error>(lats)
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r??);
    }
    ensure!(!all.is_empty(), "no latency sample");
    all.sort();
    let pct = |permille: usize| all[(all.len() - 1) * permille / 1000];
    Ok((pct(500), pct(990), pct(1000)))
}

/// Completed new connections per second (connect, one byte back, close) with 32 workers.
async fn conn_rate(addr: SocketAddr, dur: Duration) -> anyhow::Result<(f64, u64)> {
    let start = Instant::now();
    let deadline = start + dur;
    let mut set = JoinSet::new();
    for _ in 0..32 {
        set.spawn(async move {
            let (mut ok, mut err) = (0u64, 0u64);
            while Instant::now() < deadline {
                let r = async {
                    let mut s = connect(addr, b'I').await?;
                    let mut out = Vec::new();
                    s.read_to_end(&mut out).await?;
                    Ok::<_, std::io::Error>(out.len())
                }
                .await;
                match r {
                    Ok(1) => ok += 1,
                    _ => err += 1,
                }
            }
            (ok, err)
        });
    }
    let (mut ok, mut err) = (0, 0);
    while let Some(r) = set.join_next().await {
        let (o, e) = r?;
        ok += o;
        err += e;
    }
    Ok((ok as f64 / start.elapsed().as_secs_f64(), err))
}

/// Opens `n` idle end-to-end connections; returns them.
async fn idle(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<TcpStream>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let batch = (n - out.len()).min(100);
        let mut set = JoinSet::new();
        for _ in 0..batch {
            set.spawn(async move {
                let mut s = connect(addr, b'H').await?;
                let mut b = [0u8; 1];
                s.read_exact(&mut b).await?;
                Ok::<_, std::io::Error>(s)
            });
        }
        while let Some(r) = set.join_next().await {
            out.push(r?.with_context(|| format!("idle connection {}", out.len()))?);
        }
    }
    Ok(out)
}

/// One probe: a new connection that asks which upstream answers.
#[derive(Debug, Clone, Copy)]
struct Probe {
    /// Start, relative to the event.
    at: f64,
    latency: Duration,
    ok: bool,
}

/// New connections every 10 ms for `before + after`; the event fires after `before`.
async fn probes(
    addr: SocketAddr,
    before: Duration,
    after: Duration,
    event: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<Vec<Probe>> {
    let start = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Duration, bool)>();
    let prober = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        while start.elapsed() < before + after {
            tick.tick().await;
            let tx = tx.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                let r = tokio::time::timeout(Duration::from_secs(5), async {
                    let mut s = connect(addr, b'I').await?;
                    let mut b = Vec::new();
                    s.read_to_end(&mut b).await?;
                    Ok::<_, std::io::Error>(b.len() == 1)
                })
                .await;
                let _ = tx.send((t, t.elapsed(), matches!(r, Ok(Ok(true)))));
            });
        }
    });
    tokio::time::sleep(before).await;
    let t0 = Instant::now();
    event.await?;
    prober.await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    rx.close();
    let mut out = Vec::new();
    while let Some((t, latency, ok)) = rx.recv().await {
        let at = if t >= t0 {
            (t - t0).as_secs_f64()
        } else {
            -(t0 - t).as_secs_f64()
        };
        out.push(Probe { at, latency, ok });
    }
    Ok(out)
}

/// Summary of probes after the event: (failed, stalled, end of the last affected probe in
/// seconds after the event, slowest successful probe).
fn affected(probes: &[Probe]) -> (usize, usize, f64, Duration) {
    let after: Vec<_> = probes.iter().filter(|p| p.at >= 0.0).collect();
    let failed = after.iter().filter(|p| !p.ok).count();
    let stalled = after.iter().filter(|p| p.ok && p.latency >= STALL).count();
    let last = after
        .iter()
        .filter(|p| !p.ok || p.latency >= STALL)
        .map(|p| p.at + p.latency.as_secs_f64())
        .fold(0.0, f64::max);
    let slowest = after
        .iter()
        .filter(|p| p.ok)
        .map(|p| p.latency)
        .max()
        .unwrap_or_default();
    (failed, stalled, last, slowest)
}

fn gbit(bps: f64) -> String {
    format!("{:.2} Gbit/s", bps * 8.0 / 1e9)
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "–".into()
    }
}

/// The median of `v` (upper median for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn bench(bin: &Path, dur: Duration, rounds: u32, traffic_only: bool) -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let a = Upstream::start(&pki, b'a', BACKLOG).await?;
    let b = Upstream::start(&pki, b'b', BACKLOG).await?;
    let ups = [a.addr, b.addr];
    let (api, api_addr, _admin) = start_api_proxy(bin, &pki, &ups).await?;
    let (nginx, nginx_addr) = start_nginx(&pki, &ups).await?;
    let targets = [
        ("direct", a.addr),
        ("nginx", nginx_addr),
        ("api-proxy", api_addr),
    ];

    let mut rows: Vec<(String, [String; 3], String)> = Vec::new();
    let mut push =
        |what: &str, vals: [f64; 3], fmt: &dyn Fn(f64) -> String, higher_better: bool| {
            let r = if higher_better {
                ratio(vals[2], vals[1])
            } else {
                ratio(vals[1], vals[2])
            };
            rows.push((
                what.to_string(),
                [fmt(vals[0]), fmt(vals[1]), fmt(vals[2])],
                r,
            ));
        };

    for streams in [1usize, 64] {
        let mut samples: [Vec<f64>; 3] = Default::default();
        for _ in 0..rounds {
            for (i, (name, addr)) in targets.iter().enumerate() {
                let x = throughput(*addr, streams, dur).await?;
                eprintln!("throughput {streams} streams via {name}: {}", gbit(x));
                samples[i].push(x);
            }
        }
        let v = samples.map(median);
        push(
            &format!("bulk throughput, {streams} stream(s)"),
            v,
            &|x| gbit(x),
            true,
        );
    }
    let rate = 2000;
    let mut lat: [[Vec<f64>; 3]; 3] = Default::default();
    for _ in 0..rounds {
        for (i, (name, addr)) in targets.iter().enumerate() {
            let (a50, a99, amax) = latency(*addr, rate, dur).await?;
            eprintln!(
                "latency via {name}: p50 {} p99 {} max {}",
                ms(a50),
                ms(a99),
                ms(amax)
            );
            lat[0][i].push(a50.as_secs_f64());
            lat[1][i].push(a99.as_secs_f64());
            lat[2][i].push(amax.as_secs_f64());
        }
    }
    let [p50, p99, max] = lat.map(|per_target| per_target.map(median));
    let msf = |x: f64| ms(Duration::from_secs_f64(x));
    push(
        &format!("request/response p50 ({rate}/s, 64 B, 16 conns)"),
        p50,
        &msf,
        false,
    );
    push(
        &format!("request/response p99 ({rate}/s, 64 B, 16 conns)"),
        p99,
        &msf,
        false,
    );
    push(
        &format!("request/response max ({rate}/s, 64 B, 16 conns)"),
        max,
        &msf,
        false,
    );
    let mut cps: [Vec<f64>; 3] = Default::default();
    for _ in 0..rounds {
        for (i, (name, addr)) in targets.iter().enumerate() {
            // Let TIME_WAIT from the previous target drain a little.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (r, errors) = conn_rate(*addr, dur).await?;
            eprintln!("new connections via {name}: {r:.0}/s ({errors} errors)");
            cps[i].push(r);
        }
    }
    let cps = cps.map(median);
    push(
        "new connections per second (32 workers)",
        cps,
        &|x| format!("{x:.0}/s"),
        true,
    );

    if traffic_only {
        print_rows(&rows);
        return Ok(());
    }

    let mut rss = [0.0; 3];
    let mut base = [0.0; 3];
    for (i, (proc, addr)) in [(&nginx, nginx_addr), (&api, api_addr)]
        .into_iter()
        .enumerate()
    {
        base[i + 1] = proc.rss_kib() as f64;
        let conns = idle(addr, IDLE_CONNECTIONS).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss[i + 1] = proc.rss_kib() as f64;
        eprintln!(
            "{}: RSS {:.0} KiB idle, {:.0} KiB with {IDLE_CONNECTIONS} connections",
            proc.name,
            base[i + 1],
            rss[i + 1]
        );
        drop(conns);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mib = |x: f64| {
        if x == 0.0 {
            "–".to_string()
        } else {
            format!("{:.1} MiB", x / 1024.0)
        }
    };
    push(
        &format!("RSS with {IDLE_CONNECTIONS} idle connections"),
        rss,
        &mib,
        false,
    );
    let per_conn = [
        0.0,
        (rss[1] - base[1]) * 1024.0 / IDLE_CONNECTIONS as f64,
        (rss[2] - base[2]) * 1024.0 / IDLE_CONNECTIONS as f64,
    ];
    let at_10k = [
        0.0,
        base[1] + per_conn[1] * 10_000.0 / 1024.0,
        base[2] + per_conn[2] * 10_000.0 / 1024.0,
    ];
    push(
        "RSS at 10 000 idle connections (extrapolated)",
        at_10k,
        &mib,
        false,
    );
    push(
        "RSS per idle connection",
        per_conn,
        &|x| {
            if x == 0.0 {
                "–".into()
            } else {
                format!("{x:.0} B")
            }
        },
        false,
    );
    drop(api);
    drop(nginx);
    drop(a);
    drop(b);

    // Failover: fresh upstreams and proxies per scenario.
    let mut failover = Vec::new();
    for scenario in ["killed", "blackholed"] {
        for which in ["nginx", "api-proxy"] {
            let mut a = Upstream::start(&pki, b'a', FAILOVER_BACKLOG).await?;
            let b = Upstream::start(&pki, b'b', FAILOVER_BACKLOG).await?;
            let ups = [a.addr, b.addr];
            let (proc, addr) = if which == "nginx" {
                start_nginx(&pki, &ups).await?
            } else {
                let (p, addr, _) = start_api_proxy(bin, &pki, &ups).await?;
                (p, addr)
            };
            let after = if scenario == "killed" {
                Duration::from_secs(3)
            } else {
                Duration::from_secs(13)
            };
            let event = async {
                if scenario == "killed" {
                    a.kill();
                    Ok(())
                } else {
                    a.blackhole().await
                }
            };
            let probes = probes(addr, Duration::from_secs(1), after, event).await?;
            let (failed, stalled, last, slowest) = affected(&probes);
            let n = probes.iter().filter(|p| p.at >= 0.0).count();
            eprintln!(
                "{scenario} upstream via {which}: {n} probes, {failed} failed, {stalled} stalled, last affected at {last:.2} s"
            );
            failover.push((scenario, which, n, failed, stalled, last, slowest));
            drop(proc);
            drop(b);
        }
    }
    // Health checks alone (no traffic): when api-proxy marks a blackholed upstream down.
    let mut exclusion = Vec::new();
    for _ in 0..3 {
        let mut a = Upstream::start(&pki, b'a', FAILOVER_BACKLOG).await?;
        let b = Upstream::start(&pki, b'b', FAILOVER_BACKLOG).await?;
        let ups = [a.addr, b.addr];
        let (proc, _addr, admin) = start_api_proxy(bin, &pki, &ups).await?;
        let t0 = Instant::now();
        a.blackhole().await?;
        let took = loop {
            if healthy(&admin, &ups).await.first() == Some(&Some(false)) {
                break t0.elapsed();
            }
            if t0.elapsed() > Duration::from_secs(10) {
                bail!("api-proxy never excluded the blackholed upstream");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        eprintln!(
            "health-check exclusion of a blackholed upstream: {}",
            ms(took)
        );
        exclusion.push(took);
        drop(proc);
        drop(b);
    }

    print_rows(&rows);
    println!();
    println!(
        "| upstream failure | proxy | probes after the event | failed | stalled ≥ 100 ms | slowest successful probe | last affected probe ended |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (scenario, which, n, failed, stalled, last, slowest) in &failover {
        println!(
            "| {scenario} | {which} | {n} | {failed} | {stalled} | {} | {last:.2} s |",
            ms(*slowest)
        );
    }
    println!();
    exclusion.sort();
    println!(
        "api-proxy health-check exclusion of a blackholed upstream, no traffic (3 runs): {}",
        exclusion
            .iter()
            .map(|d| ms(*d))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn print_rows(rows: &[(String, [String; 3], String)]) {
    println!("| measure | direct | nginx stream | api-proxy | api-proxy vs nginx |");
    println!("|---|---|---|---|---|");
    for (what, v, r) in rows {
        println!("| {what} | {} | {} | {} | {r}× |", v[0], v[1], v[2]);
    }
}
