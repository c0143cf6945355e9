//! `cargo xtask bench idle`: every long-running cpm process of one converged master, left alone.
//!
//! One master (node IP 127.0.9.1, its own root) is converged by the agents' one-shot passes
//! against the project's test API server (CRDs, the master's Node, the `default/kubernetes`
//! EndpointSlice pointing at that server) and a real etcd started from the manifest cpm-etcd
//! rendered. Then the seven daemons run side by side, as on a master: cpm-certs,
//! cpm-kubeconfig, cpm-manifests, cpm-etcd, proxy-reloader, api-proxy (fed by proxy-reloader's
//! file, health-checking the test API server) and metrics-rbac-proxy (routes to the agents' admin
//! ports). Once each is ready and its pass (or reload) counter holds still, nothing touches
//! them for the window; the report gives each process's CPU time, CPU share and resident memory
//! at both ends of the window, the passes or reloads counted in it and the log lines it wrote.
//! nginx's stream proxy, idle in front of the same API server, is the peer of api-proxy.
//! Release builds; the goal is ~0 % CPU and at most 20 MiB each.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use cpm_testing::apiserver::{ApiServer, ApiServerOptions, CertAndKey, Identity, UserInfo};
use cpm_testing::etcd::{EtcdProcess, etcd_binary};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::PostParams;

use crate::cmd;

/// The master's name and IP (off 127.0.0.1, so a developer's own etcd does not collide).
const NAME: &str = "master-1";
const IP: &str = "127.0.9.1";

/// Runs the benchmark with a window of `seconds`.
pub fn run(seconds: u64) -> anyhow::Result<()> {
    super::bench_proxy::ensure_nginx()?;
    let etcd = etcd_binary().context("etcd is not installed (bash .ci/install-deps)")?;
    let mut bins = BTreeMap::new();
    for b in [
        "cpm-certs",
        "cpm-kubeconfig",
        "cpm-manifests",
        "cpm-etcd",
        "proxy-reloader",
        "api-proxy",
        "metrics-rbac-proxy",
    ] {
        bins.insert(b, cmd::release_binary(b)?);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(bench(&bins, &etcd, Duration::from_secs(seconds)))
}

/// A process under measurement, killed on drop.
struct Daemon {
    name: String,
    child: Child,
    /// Its admin address (`None` for the peer).
    admin: Option<String>,
    /// The counter whose samples say it worked (passes or reloads).
    series: &'static str,
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One reading of a process (and its children, for nginx's workers).
#[derive(Debug, Clone, Copy, Default)]
struct Reading {
    cpu_seconds: f64,
    rss_bytes: u64,
    work: f64,
    log_lines: usize,
}

/// A master's paths and flags.
struct Master {
    work: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
    pki: PathBuf,
    kubeconfig: PathBuf,
}

impl Master {
    fn node_flags(&self) -> Vec<String> {
        vec![
            "--root".into(),
            s(&self.root).into(),
            "--config".into(),
            s(&self.config).into(),
        ]
    }

    /// The flags each agent honours, as its own command line would have them.
    fn agent_flags(&self, bin: &str) -> Vec<String> {
        let mut v = self.node_flags();
        let mut add = |a: &[&str]| v.extend(a.iter().map(|x| (*x).to_string()));
        match bin {
            "cpm-certs" => add(&[
                "--pki-dir",
                s(&self.pki),
                "--node-name",
                NAME,
                "--node-ip",
                IP,
            ]),
            "cpm-kubeconfig" => add(&["--pki-dir", s(&self.pki), "--node-ip", IP]),
            _ => add(&[
                "--node-name",
                NAME,
                "--node-ip",
                IP,
                "--kubeconfig",
                s(&self.kubeconfig),
            ]),
        }
        v
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("invariant: temp paths are UTF-8")
}

async fn bench(
    bins: &BTreeMap<&str, PathBuf>,
    etcd: &Path,
    window: Duration,
) -> anyhow::Result<()> {
    let m = prepare(bins).await?;
    let server = start_api(&m).await?;
    converge(bins, &m, &server)?;
    let mut member = EtcdProcess::spawn_from_manifest(etcd, &m.root)?;
    member
        .wait_healthy(Duration::from_secs(30))
        .context("etcd from the rendered manifest")?;

    let mut daemons = Vec::new();
    for agent in ["cpm-certs", "cpm-kubeconfig", "cpm-manifests", "cpm-etcd"] {
        let args = m.agent_flags(agent);
        daemons.push(spawn(bins, &m, agent, &args, "cpm_reconcile_total{")?);
    }
    let args = vec![
        "--root".to_string(),
        s(&m.root).into(),
        "--kubeconfig".into(),
        s(&m.kubeconfig).into(),
    ];
    daemons.push(spawn(
        bins,
        &m,
        "proxy-reloader",
        &args,
        "cpm_reconcile_total{",
    )?);
    let upstreams = m.root.join("etc/kubernetes/api-proxy/upstreams.json");
    for _ in 0..300 {
        if upstreams.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(upstreams.exists(), "proxy-reloader wrote no upstream file");
    let api_listen = format!("127.0.0.1:{}", free_port()?);
    let args = vec![
        "--root".to_string(),
        s(&m.root).into(),
        "--ca-file".into(),
        "etc/kubernetes/pki/ca.crt".into(),
        "--listen".into(),
        api_listen,
    ];
    daemons.push(spawn(
        bins,
        &m,
        "api-proxy",
        &args,
        "cpm_api_proxy_reloads_total{",
    )?);
    let mut args = vec![
        "--node-ip".to_string(),
        IP.into(),
        "--listen".into(),
        format!("127.0.0.1:{}", free_port()?),
        "--kubeconfig".into(),
        s(&m.kubeconfig).into(),
    ];
    for d in &daemons {
        if let Some(a) = &d.admin {
            args.push(format!("--route={}=http://{a}/metrics", d.name));
        }
    }
    daemons.push(spawn(
        bins,
        &m,
        "metrics-rbac-proxy",
        &args,
        "cpm_metrics_rbac_proxy_tls_reloads_total{",
    )?);
    for d in &daemons {
        let admin = d.admin.as_deref().unwrap_or_default();
        if !cpm_testing::process::admin_ready(admin).await {
            bail!("{} never became ready; see {}", d.name, d.log.display());
        }
    }
    tokio::task::block_in_place(|| {
        for d in &daemons {
            if let Some(a) = &d.admin {
                cpm_testing::idle::settle(a, d.series);
            }
        }
    });
    daemons.push(nginx(&m, server.addr())?);
    tokio::time::sleep(Duration::from_secs(2)).await;

    eprintln!("idle window: {} s", window.as_secs());
    let before: Vec<Reading> = daemons.iter().map(read).collect::<anyhow::Result<_>>()?;
    tokio::time::sleep(window).await;
    let after: Vec<Reading> = daemons.iter().map(read).collect::<anyhow::Result<_>>()?;
    report(&daemons, &before, &after, window);
    drop(daemons);
    drop(member);
    drop(server);
    drop(m.work);
    Ok(())
}

/// A CA bundle and the master's config; the root is empty.
async fn prepare(bins: &BTreeMap<&str, PathBuf>) -> anyhow::Result<Master> {
    let work = tempfile::Builder::new()
        .prefix("cpm-bench-idle-")
        .tempdir()?;
    let root = work.path().join("root");
    std::fs::create_dir_all(work.path().join("logs"))?;
    let pki = work.path().join("pki");
    let out = Command::new(&bins["cpm-certs"])
        .args(["init-ca", "--out", s(&pki)])
        .output()?;
    ensure!(
        out.status.success(),
        "init-ca: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Master {
        root,
        config: work.path().join("config.yaml"),
        kubeconfig: work.path().join("cpm.kubeconfig"),
        pki,
        work,
    })
}

/// The test API server with the cluster CA, the CRDs, the master's Node, the EndpointSlice of
/// `default/kubernetes` (the server itself), the config and the agents' kubeconfig.
async fn start_api(m: &Master) -> anyhow::Result<ApiServer> {
    let ca = CertAndKey {
        cert_pem: std::fs::read_to_string(m.pki.join("ca.crt"))?,
        key_pem: std::fs::read_to_string(m.pki.join("ca.key"))?,
    };
    let server = ApiServer::start_with(ApiServerOptions {
        ca: Some(ca),
        ..ApiServerOptions::standard()
    })
    .await?;
    let admin = server.admin_client().await?;
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    let webhooks = serde_saphyr::from_str(&cpm_manifests::scheduler::crd_yaml())?;
    let records = serde_json::from_value(cpm_core::controlplanenode::crd())?;
    for crd in [webhooks, records] {
        crds.create(&PostParams::default(), &crd).await?;
    }
    Api::<Node>::all(admin.clone())
        .create(
            &PostParams::default(),
            &cpm_testing::fixtures::control_plane_node(NAME, IP),
        )
        .await?;
    let ip = server.addr().ip().to_string();
    let slice = cpm_testing::fixtures::kubernetes_endpoint_slice(
        "kubernetes",
        server.addr().port(),
        &[(&ip, true)],
    );
    Api::<EndpointSlice>::namespaced(admin, "default")
        .create(&PostParams::default(), &slice)
        .await?;
    let config =
        cpm_testing::fixtures::config_yaml(&format!("controlPlaneEndpoint: {}\n", server.url()));
    cpm_core::apply::write_atomic(&m.config, config.as_bytes(), 0o600, None, None)?;
    let yaml = server.kubeconfig_yaml(&Identity::Cert(UserInfo::new(
        "system:serviceaccount:cpm-system:cpm",
        &["system:masters"],
    )))?;
    cpm_core::apply::write_atomic(&m.kubeconfig, yaml.as_bytes(), 0o600, None, None)?;
    Ok(server)
}

/// One pass of each agent, in the DaemonSet's order; the kubelet's kubeconfig (proxy-reloader's
/// credentials) comes from the test server.
fn converge(bins: &BTreeMap<&str, PathBuf>, m: &Master, server: &ApiServer) -> anyhow::Result<()> {
    for agent in ["cpm-certs", "cpm-kubeconfig", "cpm-etcd", "cpm-manifests"] {
        let mut args = m.agent_flags(agent);
        args.push("--once".into());
        if agent == "cpm-manifests" {
            args.extend(["--health-timeout-seconds".into(), "0".into()]);
        }
        let out = Command::new(&bins[agent]).args(&args).output()?;
        ensure!(
            out.status.success(),
            "{agent} --once: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let kubelet = server.kubeconfig_yaml(&Identity::Cert(UserInfo::new(
        &format!("system:node:{NAME}"),
        &["system:nodes"],
    )))?;
    cpm_core::apply::write_atomic(
        &m.root.join("etc/kubernetes/kubelet.conf"),
        kubelet.as_bytes(),
        0o600,
        None,
        None,
    )?;
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts `bin` with `args` and an admin port, logging JSON to its own file.
fn spawn(
    bins: &BTreeMap<&str, PathBuf>,
    m: &Master,
    bin: &str,
    args: &[String],
    series: &'static str,
) -> anyhow::Result<Daemon> {
    let admin = format!("127.0.0.1:{}", free_port()?);
    let log = m.work.path().join("logs").join(format!("{bin}.log"));
    let child = Command::new(&bins[bin])
        .args(args)
        .args(["--admin-addr", &admin, "--log-format", "json"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(File::create(&log)?)
        .spawn()
        .with_context(|| format!("cannot start {bin}"))?;
    Ok(Daemon {
        name: bin.to_string(),
        child,
        admin: Some(admin),
        series,
        log,
    })
}

/// nginx's stream proxy in front of the test API server, as `bench proxy` configures it.
fn nginx(m: &Master, upstream: std::net::SocketAddr) -> anyhow::Result<Daemon> {
    let dir = m.work.path().join("nginx");
    std::fs::create_dir_all(&dir)?;
    let listen = format!("127.0.0.1:{}", free_port()?);
    let conf = format!(
        "load_module {module};\ndaemon off;\nworker_processes auto;\npid {dir}/nginx.pid;\n\
         error_log {dir}/error.log warn;\nevents {{ worker_connections 1024; }}\nstream {{\n  \
         upstream kubernetes {{ least_conn; server {upstream}; }}\n  server {{\n    listen \
         {listen};\n    proxy_pass kubernetes;\n    proxy_timeout 24h;\n    \
         proxy_connect_timeout 1s;\n  }}\n}}\n",
        module = super::bench_proxy::NGINX_STREAM_MODULE,
        dir = dir.display(),
    );
    let conf_path = dir.join("nginx.conf");
    cpm_core::apply::write_atomic(&conf_path, conf.as_bytes(), 0o644, None, None)?;
    let log = dir.join("error.log");
    let child = Command::new("nginx")
        .args(["-e", s(&log), "-c", s(&conf_path)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start nginx")?;
    Ok(Daemon {
        name: "nginx (stream, peer of api-proxy)".into(),
        child,
        admin: None,
        series: "",
        log,
    })
}

/// CPU and RSS of `d`'s process and its children (nginx's workers), its work counter and the
/// lines in its log.
fn read(d: &Daemon) -> anyhow::Result<Reading> {
    let mut r = Reading::default();
    let mut pids = vec![d.child.id().to_string()];
    let children = std::fs::read_to_string(format!(
        "/proc/{pid}/task/{pid}/children",
        pid = d.child.id()
    ))
    .unwrap_or_default();
    pids.extend(children.split_whitespace().map(String::from));
    for pid in pids {
        let s = cpm_core::metrics::process::sample(Path::new("/proc"), &pid)
            .with_context(|| format!("{}: cannot read /proc/{pid}", d.name))?;
        r.cpu_seconds += s.cpu_seconds;
        r.rss_bytes += s.resident_bytes;
    }
    if let Some(a) = &d.admin {
        r.work = cpm_testing::idle::sum(&cpm_testing::idle::scrape(a), d.series);
    }
    r.log_lines = std::fs::read_to_string(&d.log)
        .map(|t| t.lines().count())
        .unwrap_or(0);
    Ok(r)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn report(daemons: &[Daemon], before: &[Reading], after: &[Reading], window: Duration) {
    let secs = window.as_secs_f64();
    println!(
        "| process | CPU in {secs:.0} s | CPU share | RSS at start → end | passes or reloads | log lines |"
    );
    println!("|---|---|---|---|---|---|");
    let mut rss = BTreeMap::new();
    for ((d, b), a) in daemons.iter().zip(before).zip(after) {
        let cpu = a.cpu_seconds - b.cpu_seconds;
        let work = if d.admin.is_some() {
            format!("{}", a.work - b.work)
        } else {
            "–".into()
        };
        println!(
            "| {} | {:.2} s | {:.3} % | {:.1} → {:.1} MiB | {work} | {} |",
            d.name,
            cpu,
            cpu / secs * 100.0,
            mib(b.rss_bytes),
            mib(a.rss_bytes),
            a.log_lines - b.log_lines
        );
        rss.insert(d.name.clone(), a.rss_bytes);
    }
    if let (Some(api), Some(nginx)) = (
        rss.get("api-proxy"),
        rss.iter()
            .find(|(k, _)| k.starts_with("nginx"))
            .map(|(_, v)| v),
    ) {
        println!(
            "\napi-proxy RSS / nginx RSS (master + workers): {:.2}",
            *api as f64 / *nginx as f64
        );
    }
}
