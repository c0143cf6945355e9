//! `cargo xtask demo`: the main job, as a new user would run it on a fresh machine.
//!
//! Builds cpm, creates a CA bundle, runs cpm-certs for each simulated master (127.0.0.1..N, each
//! with its own `--root`), proves a second pass changes nothing, checks every certificate with
//! `openssl verify`, then grows a real etcd cluster master by master with cpm-etcd (etcd started
//! from each rendered manifest) and talks to it over mTLS with `etcdctl`, once with the healthcheck client certificate (accepted) and once with
//! a certificate from another CA (refused). The tree stays under `target/demo` to explore.

use std::path::{Path, PathBuf};
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

pub fn run(dir: &Path, masters: u8) -> anyhow::Result<()> {
    let dir = workspace_root().join(dir);
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
    let procs = etcd_cluster(&rt, &server, &config, &pki, &roots)?;
    manifests(&rt, &server, &config, &pki, &roots)?;
    drop(server);
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

    eprintln!(
        "\ndemo complete: {masters} masters (PKI, kubeconfigs, static pods, etcd members) under {}; etcd stopped",
        dir.display()
    );
    Ok(())
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
            "--node-name",
            name,
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
    pki: &Path,
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
            "--pki-dir",
            s(pki),
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
            "--pki-dir",
            s(pki),
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
