//! `cargo xtask demo`: the main job, as a new user would run it on a fresh machine.
//!
//! Builds cpm, creates a CA bundle, runs cpm-certs for each simulated master (127.0.0.1..N, each
//! with its own `--root`), proves a second pass changes nothing, checks every certificate with
//! `openssl verify`, then grows a real etcd cluster master by master with cpm-etcd (etcd started
//! from each rendered manifest) and talks to it over mTLS with `etcdctl`, once with the healthcheck client certificate (accepted) and once with
//! a certificate from another CA (refused). The tree stays under `target/demo` to explore.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use cpm_testing::etcd::EtcdProcess;

use crate::cmd::{self, have, output, workspace_root};

const CONFIG: &str = "\
apiVersion: cpm.dev/v1alpha1
kind: ControlPlaneConfiguration
kubernetesVersion: \"1.33\"
clusterDomain: cluster.local
serviceSubnet: 10.96.0.0/12
certificates: {keyAlgorithm: ECDSA-P256, validityDays: 365, renewBeforeDays: 30}
apiserver: {certSANs: [api.demo.example, 203.0.113.10]}
";

const LEAVES: [(&str, &str); 7] = [
    ("apiserver", "ca.crt"),
    ("apiserver-kubelet-client", "ca.crt"),
    ("apiserver-etcd-client", "etcd/ca.crt"),
    ("front-proxy-client", "front-proxy-ca.crt"),
    ("etcd/server", "etcd/ca.crt"),
    ("etcd/peer", "etcd/ca.crt"),
    ("etcd/healthcheck-client", "etcd/ca.crt"),
];

fn step(text: &str) {
    eprintln!("\n==> {text}");
}

fn s(p: &Path) -> &str {
    p.to_str().expect("invariant: UTF-8 path")
}

pub fn run(dir: &Path, masters: u8, clean: bool) -> anyhow::Result<()> {
    let dir = workspace_root().join(dir);
    if clean {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot remove {}", dir.display()))?;
        }
        eprintln!("removed {}", dir.display());
        return Ok(());
    }
    if !(have("openssl") && have("etcd") && have("etcdctl")) {
        step("installing openssl, etcd and etcdctl from Debian packages");
        cmd::run("bash", &[".ci/install-deps"])?;
    }
    step("building cpm");
    cmd::run(
        "cargo",
        &[
            "build",
            "--locked",
            "-p",
            "cpm-certs",
            "-p",
            "cpm-kubeconfig",
            "-p",
            "cpm-manifests",
            "-p",
            "cpm-etcd",
            "-p",
            "etcd-backup",
            "-p",
            "api-proxy",
        ],
    )?;
    let bin = workspace_root().join("target/debug/cpm-certs");

    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clean {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let pki = dir.join("pki");
    step("cpm-certs init-ca: a new CA bundle (the content of Secret cpm-pki)");
    cmd::run(s(&bin), &["init-ca", "--out", s(&pki)])?;
    let config = dir.join("config.yaml");
    cpm_core::apply::write_atomic(&config, CONFIG.as_bytes(), 0o600, None, None)?;

    let mut roots = Vec::new();
    for i in 1..=masters {
        let root = dir.join(format!("master-{i}"));
        let name = format!("master-{i}");
        let ip = format!("127.0.0.{i}");
        let common = [
            "--root",
            s(&root),
            "--config",
            s(&config),
            "--pki-dir",
            s(&pki),
            "--node-name",
            &name,
            "--node-ip",
            &ip,
        ];
        step(&format!("{name}: cpm-certs --once (issue the node PKI)"));
        cmd::run(
            s(&bin),
            &[&common[..], &["--once", "--log-level", "warn"]].concat(),
        )?;
        step(&format!(
            "{name}: cpm-certs --check (a second pass must plan nothing)"
        ));
        cmd::run(
            s(&bin),
            &[&common[..], &["--check", "--log-level", "warn"]].concat(),
        )?;
        let p = root.join("etc/kubernetes/pki");
        for (leaf, ca) in LEAVES {
            let out = output(
                "openssl",
                &[
                    "verify",
                    "-CAfile",
                    s(&p.join(ca)),
                    s(&p.join(format!("{leaf}.crt"))),
                ],
            )?;
            ensure!(
                out.status.success(),
                "openssl verify {leaf} on {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            eprint!(
                "   {}",
                String::from_utf8_lossy(&out.stdout).replace(s(&dir), "target/demo")
            );
        }
        roots.push((name, ip, root));
    }
    let rt = tokio::runtime::Runtime::new()?;
    let server = kubeconfigs(&rt, &config, &pki, &roots)?;
    let procs = etcd_cluster(&rt, &server, &config, &roots)?;
    manifests(&rt, &server, &config, &pki, &roots)?;
    if have("kubectl") {
        step("kubectl get controlplanenodes: each master's version and rollout record");
        let admin = roots[0].2.join("etc/kubernetes/admin.conf");
        cmd::run(
            "kubectl",
            &[
                "--kubeconfig",
                s(&admin),
                "get",
                "controlplanenodes",
                "-o",
                "custom-columns=NAME:.metadata.name,VERSION:.status.version,HIGHEST:.status.highestVersion,ROLLOUT:.status.rollout.phase,APISERVER:.status.components.kube-apiserver.version,CERTS-EXPIRE:.status.certificateExpiry",
            ],
        )?;
    }
    let proxy_state = api_proxy(&rt, server, &pki, &dir, &roots)?;
    step("master-1: cpm-certs check-expiration (leaves, kubeconfig client certificates, CAs)");
    cmd::run(s(&bin), &["check-expiration", "--root", s(&roots[0].2)])?;

    let endpoints = procs
        .iter()
        .map(|p| p.client_url.clone())
        .collect::<Vec<_>>()
        .join(",");
    let p1 = roots[0].2.join("etc/kubernetes/pki");
    let tls = |cert: &Path, key: &Path| -> Vec<String> {
        vec![
            format!("--endpoints={endpoints}"),
            format!("--cacert={}", p1.join("etcd/ca.crt").display()),
            format!("--cert={}", cert.display()),
            format!("--key={}", key.display()),
        ]
    };
    let good = tls(
        &p1.join("etcd/healthcheck-client.crt"),
        &p1.join("etcd/healthcheck-client.key"),
    );
    step("etcdctl with master-1's healthcheck-client certificate: endpoint health, member list");
    etcdctl(
        &[&good[..], &["endpoint".into(), "health".into()]].concat(),
        true,
    )?;
    etcdctl(
        &[
            &good[..],
            &["member".into(), "list".into(), "-w".into(), "table".into()],
        ]
        .concat(),
        true,
    )?;

    step(
        "master-1: etcd-backup snapshot (streamed over mTLS, sha256 trailer checked), list, etcdctl snapshot status",
    );
    for i in 0..3 {
        etcdctl(
            &[
                &good[..],
                &["put".into(), format!("demo/key-{i}"), "value".into()],
            ]
            .concat(),
            true,
        )?;
    }
    let backups = dir.join("backups");
    let backup_bin = workspace_root().join("target/debug/etcd-backup");
    let (name1, ip1, root1) = &roots[0];
    let snap_args = [
        "--root",
        s(root1),
        "--config",
        s(&config),
        "--node-name",
        name1,
        "--node-ip",
        ip1,
        "--log-level",
        "warn",
        "snapshot",
        "--endpoint",
        "https://127.0.0.1:2379",
        "--dir",
        s(&backups),
    ];
    cmd::run(s(&backup_bin), &snap_args)?;
    cmd::run(s(&backup_bin), &["list", "--dir", s(&backups)])?;
    let snapshot = std::fs::read_dir(&backups)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "db"))
        .context("no snapshot written")?;
    cmd::run(
        "etcdctl",
        &["snapshot", "status", s(&snapshot), "-w", "table"],
    )?;

    step("etcdctl with a certificate from another CA: must be refused");
    let rogue = dir.join("rogue");
    std::fs::create_dir_all(&rogue)?;
    cmd::run(s(&bin), &["init-ca", "--out", s(&rogue.join("pki"))])?;
    let ca = cpm_testing::fixtures::bundle_ca(&rogue.join("pki"), "etcd-ca");
    let (crt, key) = cpm_testing::fixtures::client_cert(&ca, &rogue, "client", "rogue");
    let bad = tls(&crt, &key);
    etcdctl(
        &[
            &bad[..],
            &["--command-timeout=3s".into(), "get".into(), "x".into()],
        ]
        .concat(),
        false,
    )?;
    let members = Command::new("etcdctl")
        .args(&good)
        .args(["member", "list", "-w", "simple"])
        .env("ETCDCTL_API", "3")
        .output()?;
    let etcd_members = format!(
        "{} started members ({endpoints})",
        String::from_utf8_lossy(&members.stdout)
            .lines()
            .filter(|l| l.contains("started"))
            .count()
    );
    let logs: Vec<PathBuf> = procs.iter().map(|p| p.log.clone()).collect();
    drop(procs);
    // etcd's side of the refusal (read after exit, when its log is complete).
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .rev()
            .find(|l| l.contains("rejected connection"))
        {
            eprintln!("   etcd logged: {line}");
            break;
        }
    }

    summary(&roots, &etcd_members, &backups, &proxy_state)?;
    eprintln!(
        "\ndemo complete: {masters} masters (PKI, kubeconfigs, static pods, etcd members, a backup, the API proxy) under {}; processes stopped; `cargo xtask demo --clean` removes it",
        dir.display()
    );
    Ok(())
}

/// The closing summary: certificates and their expiry, etcd members, backups, proxy state.
fn summary(
    roots: &[(String, String, PathBuf)],
    etcd: &str,
    backups: &Path,
    proxy: &str,
) -> anyhow::Result<()> {
    step("summary");
    let certs = workspace_root().join("target/debug/cpm-certs");
    for (name, _, root) in roots {
        let out = Command::new(&certs)
            .args(["check-expiration", "--output", "json", "--root", s(root)])
            .output()?;
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("{name}: check-expiration --output json"))?;
        let rows: Vec<&serde_json::Value> = report
            .as_object()
            .map(|o| o.values().filter_map(|v| v.as_array()).flatten().collect())
            .unwrap_or_default();
        let mut expiries: Vec<String> = rows
            .iter()
            .filter_map(|r| r.get("notAfter").or_else(|| r.get("expires")))
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        expiries.sort();
        eprintln!(
            "   {name}: {} certificates, earliest expiry {}",
            rows.len(),
            expiries.first().map_or("?", String::as_str)
        );
    }
    eprintln!("   etcd: {etcd}");
    let mut snaps: Vec<String> = std::fs::read_dir(backups)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("etcd-") && !n.ends_with(".json"))
        .collect();
    snaps.sort();
    eprintln!(
        "   backups: {} in {} (newest {})",
        snaps.len(),
        backups.display(),
        snaps.last().map_or("none", String::as_str)
    );
    eprintln!("   api-proxy: {proxy}");
    Ok(())
}

/// The node-local API proxy in front of two API servers (the demo's test server and a second
/// one with the same cluster CA): kubectl through it, then one upstream dies and kubectl keeps
/// working through the other. Returns the proxy's final upstream state.
fn api_proxy(
    rt: &tokio::runtime::Runtime,
    first: cpm_testing::apiserver::ApiServer,
    pki: &Path,
    dir: &Path,
    roots: &[(String, String, PathBuf)],
) -> anyhow::Result<String> {
    use cpm_testing::apiserver::{ApiServer, ApiServerOptions, CertAndKey};
    step("api-proxy on master-1 in front of two API servers (health-checked with the cluster CA)");
    let ca = CertAndKey {
        cert_pem: std::fs::read_to_string(pki.join("ca.crt"))?,
        key_pem: std::fs::read_to_string(pki.join("ca.key"))?,
    };
    let second = rt.block_on(ApiServer::start_with(ApiServerOptions {
        ca: Some(ca),
        ..ApiServerOptions::standard()
    }))?;
    let (a, b) = (first.addr(), second.addr());
    let port = || -> anyhow::Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let listen = format!("127.0.0.1:{}", port()?);
    let admin = format!("127.0.0.1:{}", port()?);
    let root = &roots[0].2;
    let log = std::fs::File::create(dir.join("api-proxy.log"))?;
    let mut child = Command::new(workspace_root().join("target/debug/api-proxy"))
        .args(["--root", s(root), "--config", s(&dir.join("config.yaml"))])
        .args(["--node-ip", "127.0.0.1"])
        .args(["--listen", &listen, "--admin-addr", &admin])
        .args(["--ca-file", s(&pki.join("ca.crt"))])
        .args(["--upstream", &a.to_string(), "--upstream", &b.to_string()])
        .args(["--health-interval-ms", "200", "--health-timeout-ms", "300"])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start api-proxy")?;
    let result = (|| -> anyhow::Result<String> {
        let metrics = || -> String {
            rt.block_on(cpm_core::http::get(
                &format!("http://{admin}/metrics"),
                &cpm_core::http::Verify::Insecure,
                Duration::from_secs(2),
            ))
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .unwrap_or_default()
        };
        let healthy = |m: &str, up: std::net::SocketAddr| {
            m.lines().any(|l| {
                l.starts_with("cpm_api_proxy_upstream_healthy")
                    && l.contains(&format!("\"{up}\""))
                    && l.ends_with(" 1")
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let m = metrics();
            if healthy(&m, a) && healthy(&m, b) {
                break;
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "api-proxy upstreams not healthy; see {}",
                dir.join("api-proxy.log").display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("   {listen} -> {a} (healthy), {b} (healthy)");
        let admin_conf = root.join("etc/kubernetes/admin.conf");
        let through = |n: usize| -> anyhow::Result<()> {
            for _ in 0..n {
                let out = Command::new("kubectl")
                    .args(["--kubeconfig", s(&admin_conf)])
                    .args(["--server", &format!("https://{listen}")])
                    .args(["--tls-server-name", "127.0.0.1", "get", "--raw", "/readyz"])
                    .output()?;
                anyhow::ensure!(
                    out.status.success(),
                    "kubectl through api-proxy failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(())
        };
        if !have("kubectl") {
            eprintln!("   (kubectl is not installed: skipping the requests through the proxy)");
            return Ok(format!("{a} and {b} healthy"));
        }
        through(6)?;
        let served = |srv: &ApiServer| {
            srv.requests()
                .iter()
                .filter(|r| {
                    r.path.starts_with("/readyz")
                        && r.user.as_deref().is_some_and(|u| u != "system:anonymous")
                })
                .count()
        };
        eprintln!(
            "   6 x kubectl get --raw /readyz through the proxy: {} served by {a}, {} by {b}",
            served(&first),
            served(&second)
        );
        step(&format!(
            "the API server at {a} dies: kubectl keeps working through {b}"
        ));
        drop(first);
        through(6)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let m = loop {
            let m = metrics();
            if !healthy(&m, a) || std::time::Instant::now() > deadline {
                break m;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let failovers = m
            .lines()
            .find(|l| l.starts_with("cpm_api_proxy_failovers_total"))
            .unwrap_or("cpm_api_proxy_failovers_total ?")
            .to_string();
        let state = format!(
            "{a} {}, {b} {}; {failovers}",
            if healthy(&m, a) { "healthy" } else { "down" },
            if healthy(&m, b) { "healthy" } else { "down" }
        );
        eprintln!("   6 more requests succeeded; {state}");
        Ok(state)
    })();
    let _ = child.kill();
    let _ = child.wait();
    drop(second);
    result
}

/// cpm-kubeconfig on every master, against the project's test API server (no kube-apiserver
/// binary exists on these machines) running with the demo's cluster CA, then kubectl with the
/// admin.conf cpm wrote.
fn kubeconfigs(
    rt: &tokio::runtime::Runtime,
    config: &Path,
    pki: &Path,
    roots: &[(String, String, PathBuf)],
) -> anyhow::Result<cpm_testing::apiserver::ApiServer> {
    use cpm_testing::apiserver::{ApiServer, ApiServerOptions, CertAndKey};
    step("starting the test API server with the cluster CA (stands in for kube-apiserver)");
    let ca = CertAndKey {
        cert_pem: std::fs::read_to_string(pki.join("ca.crt"))?,
        key_pem: std::fs::read_to_string(pki.join("ca.key"))?,
    };
    let server = rt.block_on(ApiServer::start_with(ApiServerOptions {
        ca: Some(ca),
        ..ApiServerOptions::standard()
    }))?;
    eprintln!("   listening on {}", server.url());
    // The CRD of the per-master rollout records (ControlPlaneNode), as manifests/ installs it.
    let crds: kube::Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = kube::Api::all(rt.block_on(server.admin_client())?);
    rt.block_on(crds.create(
        &kube::api::PostParams::default(),
        &serde_json::from_value(cpm_core::controlplanenode::crd())?,
    ))?;
    // Admins reach the API through controlPlaneEndpoint: here, the test server.
    let text = format!("{CONFIG}controlPlaneEndpoint: {}\n", server.url());
    cpm_core::apply::write_atomic(config, text.as_bytes(), 0o600, None, None)?;
    let bin = workspace_root().join("target/debug/cpm-kubeconfig");
    for (name, ip, root) in roots {
        step(&format!(
            "{name}: cpm-kubeconfig --once (kubeconfigs, /root/.kube/config, kubeadm:cluster-admins)"
        ));
        let args = [
            "--root",
            s(root),
            "--config",
            s(config),
            "--pki-dir",
            s(pki),
            "--node-ip",
            ip,
            "--once",
        ];
        cmd::run(s(&bin), &args)?;
        let link = std::fs::read_link(root.join("root/.kube/config"))?;
        eprintln!("   {}/root/.kube/config -> {}", name, link.display());
    }
    if have("kubectl") {
        let admin = roots[0].2.join("etc/kubernetes/admin.conf");
        step(
            "kubectl with master-1's admin.conf (mTLS as kubernetes-admin, group kubeadm:cluster-admins)",
        );
        cmd::run(
            "kubectl",
            &[
                "--kubeconfig",
                s(&admin),
                "config",
                "view",
                "--minify",
                "-o",
                "jsonpath=context {.contexts[0].name} -> {.clusters[0].cluster.server}{'\\n'}",
            ],
        )?;
        cmd::run(
            "kubectl",
            &[
                "--kubeconfig",
                s(&admin),
                "get",
                "clusterrolebinding",
                "kubeadm:cluster-admins",
                "-o",
                "jsonpath=ClusterRoleBinding {.metadata.name}: {.subjects[0].kind} {.subjects[0].name} -> ClusterRole {.roleRef.name}{'\\n'}",
            ],
        )?;
    } else {
        eprintln!("   (kubectl is not installed: skipping the kubectl steps)");
    }
    let users: Vec<String> = server
        .requests()
        .into_iter()
        .filter_map(|r| r.user)
        .collect();
    let mut distinct = users.clone();
    distinct.sort();
    distinct.dedup();
    eprintln!(
        "   the API server saw {} requests from: {}",
        users.len(),
        distinct.join(", ")
    );
    Ok(server)
}

/// cpm-etcd on every master, one at a time as masters join: the first starts a new cluster; each
/// next one is added as a learner through the running members, its etcd is started from the
/// manifest cpm-etcd rendered (as the kubelet would run it), and it is promoted once caught up.
fn etcd_cluster(
    rt: &tokio::runtime::Runtime,
    server: &cpm_testing::apiserver::ApiServer,
    config: &Path,
    roots: &[(String, String, PathBuf)],
) -> anyhow::Result<Vec<EtcdProcess>> {
    use k8s_openapi::api::core::v1::Node;
    let etcd = which("etcd")?;
    let bin = workspace_root().join("target/debug/cpm-etcd");
    let admin = rt.block_on(server.admin_client())?;
    let nodes: kube::Api<Node> = kube::Api::all(admin);
    let mut procs = Vec::new();
    for (i, (name, ip, root)) in roots.iter().enumerate() {
        let node = cpm_testing::fixtures::control_plane_node(name, ip);
        rt.block_on(nodes.create(&Default::default(), &node))?;
        let kubeconfig = root.join("etc/kubernetes/super-admin.conf");
        let args = [
            "--root",
            s(root),
            "--config",
            s(config),
            "--node-name",
            name,
            "--node-ip",
            ip,
            "--kubeconfig",
            s(&kubeconfig),
            "--once",
            "--log-level",
            "warn",
        ];
        if i == 0 {
            step(&format!(
                "{name}: cpm-etcd --once (a new cluster), then etcd started from the rendered manifest"
            ));
            cmd::run(s(&bin), &args)?;
            let mut p = EtcdProcess::spawn_from_manifest(&etcd, root)?;
            p.wait_healthy(Duration::from_secs(60))?;
            procs.push(p);
            continue;
        }
        step(&format!(
            "{name}: cpm-etcd --once (added as a learner), etcd started from its manifest, then promoted"
        ));
        // Right after a promotion etcd refuses new members for a few seconds; retried as the
        // agent's backoff would.
        let mut added = false;
        for _ in 0..60 {
            output(&bin, &args)?;
            if root.join("etc/kubernetes/manifests/etcd.yaml").exists() {
                added = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        ensure!(added, "{name} was never added to the etcd cluster");
        procs.push(EtcdProcess::spawn_from_manifest(&etcd, root)?);
        let mut promoted = false;
        for _ in 0..60 {
            if output(&bin, &args)?.status.success() {
                promoted = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        ensure!(promoted, "{name} was never promoted");
        eprintln!("   {name} promoted to a voting member");
    }
    Ok(procs)
}

/// cpm-manifests on every master: the three static pods and their config files. The test API
/// server knows the three masters as control-plane Nodes, so `--etcd-servers` lists them all.
/// No kubelet runs here, so the health gate is off (`--health-timeout-seconds 0`).
fn manifests(
    rt: &tokio::runtime::Runtime,
    server: &cpm_testing::apiserver::ApiServer,
    config: &Path,
    pki: &Path,
    roots: &[(String, String, PathBuf)],
) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Node;
    const COMPONENTS: [&str; 3] = [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ];
    let admin = rt.block_on(server.admin_client())?;
    let nodes: kube::Api<Node> = kube::Api::all(admin);
    for (name, ip, _) in roots {
        let node = cpm_testing::fixtures::control_plane_node(name, ip);
        match rt.block_on(nodes.create(&Default::default(), &node)) {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let bin = workspace_root().join("target/debug/cpm-manifests");
    for (name, ip, root) in roots {
        step(&format!(
            "{name}: cpm-manifests --once (static pods, audit/admission/scheduler config)"
        ));
        let kubeconfig = root.join("etc/kubernetes/super-admin.conf");
        let args = [
            "--root",
            s(root),
            "--config",
            s(config),
            "--node-name",
            name,
            "--node-ip",
            ip,
            "--kubeconfig",
            s(&kubeconfig),
            "--once",
            "--health-timeout-seconds",
            "0",
        ];
        cmd::run(s(&bin), &args)?;
    }
    let m1 = roots[0].2.join("etc/kubernetes/manifests");
    let read = |c: &str| std::fs::read_to_string(m1.join(format!("{c}.yaml"))).unwrap_or_default();
    for line in read("kube-apiserver").lines().filter(|l| {
        l.contains("--etcd-servers") || l.contains("config-checksum") || l.contains("image:")
    }) {
        eprintln!("   master-1 kube-apiserver.yaml: {}", line.trim());
    }
    if have("kubernetes-validate") {
        step(
            "kubernetes-validate --strict: master-1's static pods against the Kubernetes 1.33 OpenAPI schema",
        );
        let files: Vec<String> = COMPONENTS
            .iter()
            .map(|c| m1.join(format!("{c}.yaml")).display().to_string())
            .collect();
        let mut args = vec!["-k", "1.33.0", "--strict"];
        args.extend(files.iter().map(String::as_str));
        cmd::run("kubernetes-validate", &args)?;
    }
    step(
        "master-1: renew the front-proxy client certificate; only kube-apiserver's checksum changes",
    );
    let before: Vec<String> = COMPONENTS.iter().map(|c| read(c)).collect();
    let (name, ip, root) = &roots[0];
    let certs = workspace_root().join("target/debug/cpm-certs");
    cmd::run(
        s(&certs),
        &[
            "--root",
            s(root),
            "--config",
            s(config),
            "--pki-dir",
            s(pki),
            "--node-name",
            name,
            "--node-ip",
            ip,
            "--log-level",
            "warn",
            "renew",
            "front-proxy-client",
        ],
    )?;
    let args = [
        "--root",
        s(root),
        "--config",
        s(config),
        "--node-name",
        name,
        "--node-ip",
        ip,
        "--once",
        "--health-timeout-seconds",
        "0",
        "--log-level",
        "warn",
    ];
    cmd::run(s(&bin), &args)?;
    for (c, old) in COMPONENTS.iter().zip(before) {
        let verdict = if read(c) != old {
            "changed: the kubelet restarts it"
        } else {
            "unchanged"
        };
        eprintln!("   {c}.yaml: {verdict}");
    }
    Ok(())
}

fn which(program: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
        .with_context(|| format!("{program} not found on PATH"))
}

fn etcdctl(args: &[String], expect_ok: bool) -> anyhow::Result<()> {
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = output("etcdctl", &argv)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for line in text.lines().filter(|l| !l.trim().is_empty()).take(12) {
        eprintln!("   {line}");
    }
    match (out.status.success(), expect_ok) {
        (true, true) | (false, false) => Ok(()),
        (false, true) => bail!("etcdctl failed"),
        (true, false) => bail!("etcdctl succeeded with a certificate from another CA"),
    }
}
