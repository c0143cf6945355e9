//! The control-plane static pods cpm renders, run by `cpm-test-apiserver` as a simulated kubelet
//! would run them: each master's PKI, kubeconfigs and manifests come from cpm-certs,
//! cpm-kubeconfig and cpm-manifests; the `kube-apiserver`, `kube-controller-manager` and
//! `kube-scheduler` commands run exactly as rendered (through links with those names), with
//! `/etc/kubernetes` mapped under the master's root, the only liberty, and the store's URL and
//! the image tag in the environment. Each test has its own loopback addresses.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use cpm_core::config::KeyAlgorithm;
use cpm_testing::control_plane::cli::try_parse_from;
use cpm_testing::control_plane::harness::{
    Kubectl, Running, StaticPod, Store, link_components, wait_for,
};
use cpm_testing::fixtures::{bundle_ca, ca_bundle, client_cert, write_config};
use cpm_testing::https::{Probe, get};
use cpm_testing::process::{code, stderr};
use cpm_tests::{binary, run};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// A master's node files, rendered by the agents.
struct Master {
    root: PathBuf,
    ip: String,
}

impl Master {
    fn render(dir: &Path, bundle: &Path, config: &Path, name: &str, ip: &str) -> Self {
        let root = dir.join(name);
        std::fs::create_dir_all(&root).unwrap();
        let r = root.to_str().unwrap();
        let (c, p) = (config.to_str().unwrap(), bundle.to_str().unwrap());
        for (bin, args) in [
            (
                "cpm-certs",
                vec![
                    "--pki-dir",
                    p,
                    "--node-name",
                    name,
                    "--node-ip",
                    ip,
                    "--once",
                ],
            ),
            (
                "cpm-kubeconfig",
                vec!["--pki-dir", p, "--node-ip", ip, "--once", "--no-rbac"],
            ),
            (
                "cpm-manifests",
                vec![
                    "--node-name",
                    name,
                    "--node-ip",
                    ip,
                    "--once",
                    "--health-timeout-seconds",
                    "0",
                ],
            ),
        ] {
            let out = run(bin, &[&["--root", r, "--config", c][..], &args].concat());
            assert!(out.status.success(), "{bin}: {}", stderr(&out));
        }
        Self {
            root,
            ip: ip.to_string(),
        }
    }

    fn url(&self) -> String {
        format!("https://{}:6443", self.ip)
    }

    fn pki(&self, file: &str) -> String {
        std::fs::read_to_string(self.root.join("etc/kubernetes/pki").join(file)).unwrap()
    }

    fn start(&self, component: &str, bins: &Path, store: &Store) -> Running {
        let log = self.root.join(format!("{component}.log"));
        StaticPod::read(&self.root, component).spawn(&self.root, bins, &store.url, log)
    }
}

/// A CA bundle, a store, links to the binary, and `names` rendered as masters on `ips`.
struct Cluster {
    dir: tempfile::TempDir,
    bundle: PathBuf,
    bins: PathBuf,
    store: Store,
    masters: Vec<Master>,
}

fn cluster(ips: &[&str]) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let bundle = ca_bundle(&dir.path().join("pki"), KeyAlgorithm::EcdsaP256);
    let config = dir.path().join("config.yaml");
    write_config(&config, "");
    let masters = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| Master::render(dir.path(), &bundle, &config, &format!("m{}", i + 1), ip))
        .collect();
    let bin = binary("cpm-test-apiserver");
    let bins = link_components(&bin, &dir.path().join("bin"));
    let store = Store::start(&bin, &bundle, dir.path(), "v1.33.0");
    Cluster {
        dir,
        bundle,
        bins,
        store,
        masters,
    }
}

impl Cluster {
    fn ca(&self) -> String {
        std::fs::read_to_string(self.bundle.join("ca.crt")).unwrap()
    }

    /// kubectl with master `i`'s admin.conf (kubernetes-admin) aimed at its front.
    fn kubectl(&self, i: usize) -> Option<Kubectl> {
        let m = &self.masters[i];
        let k = Kubectl::find(
            &m.root.join("etc/kubernetes/admin.conf"),
            &self.dir.path().join(format!("home-{i}")),
        )?;
        Some(k.at(&m.url()))
    }
}

async fn ready(url: &str, ca: &str) {
    let probe = Probe {
        ca_pem: Some(ca),
        ..Probe::default()
    };
    assert!(
        wait_for(&format!("{url}/readyz"), &probe, 200).await,
        "{url} never became ready"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fronts_from_rendered_manifests_share_one_store() {
    let c = cluster(&["127.0.41.1", "127.0.41.2"]);
    let (Some(k1), Some(k2)) = (c.kubectl(0), c.kubectl(1)) else {
        return;
    };
    let mut front1 = c.masters[0].start("kube-apiserver", &c.bins, &c.store);
    let _front2 = c.masters[1].start("kube-apiserver", &c.bins, &c.store);
    for m in &c.masters {
        ready(&m.url(), &c.ca()).await;
    }

    // Each front serves exactly its --tls-cert-file, and /version from the image tag.
    for m in &c.masters {
        let answer = get(&format!("{}/version", m.url()), &Probe::default())
            .await
            .unwrap();
        let file = CertificateDer::from_pem_slice(m.pki("apiserver.crt").as_bytes()).unwrap();
        assert_eq!(
            answer.served,
            file.as_ref(),
            "{} serves apiserver.crt",
            m.ip
        );
        let tag = StaticPod::read(&m.root, "kube-apiserver").tag().to_string();
        let v: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(v["gitVersion"], tag.as_str());
    }

    tokio::task::block_in_place(|| {
        // A write through one front is read through the other.
        k1.ok(&["create", "configmap", "shared", "--from-literal=k=v"]);
        assert_eq!(
            k2.ok(&["get", "configmap", "shared", "-o", "jsonpath={.data.k}"]),
            "v"
        );
        // The front authenticates the client certificate and passes the identity on.
        let me: serde_json::Value =
            serde_json::from_str(&k2.ok(&["auth", "whoami", "-o", "json"])).unwrap();
        assert_eq!(me["status"]["userInfo"]["username"], "kubernetes-admin");
        assert_eq!(
            me["status"]["userInfo"]["groups"],
            serde_json::json!(["kubeadm:cluster-admins", "system:authenticated"])
        );
        // A bearer token passes through for the store to authenticate.
        k1.ok(&["create", "serviceaccount", "robot"]);
        let token = k1.ok(&["create", "token", "robot"]);
        let me: serde_json::Value = serde_json::from_str(
            &k2.with_token(token.trim())
                .at(&c.masters[1].url())
                .ok(&["auth", "whoami", "-o", "json"]),
        )
        .unwrap();
        assert_eq!(
            me["status"]["userInfo"]["username"],
            "system:serviceaccount:default:robot"
        );
        // A watch through a front streams events written through the other.
        assert!(watch_sees(&k2, || {
            k1.ok(&["create", "configmap", "watched"]);
        }));
        // The front published the authentication ConfigMap the stand-ins read.
        let cm = k2.ok(&[
            "get",
            "configmap",
            "-n",
            "kube-system",
            "extension-apiserver-authentication",
            "-o",
            "jsonpath={.data.requestheader-allowed-names}",
        ]);
        assert_eq!(cm, r#"["front-proxy-client"]"#);
    });

    // Both fronts keep themselves in the kubernetes Service's endpoints.
    let endpoints = |k: &Kubectl| {
        k.ok(&[
            "get",
            "endpointslice",
            "kubernetes",
            "-o",
            "jsonpath={.endpoints[*].addresses[0]}",
        ])
    };
    tokio::task::block_in_place(|| {
        assert!(
            eventually(|| endpoints(&k2) == "127.0.41.1 127.0.41.2"),
            "endpoints: {}",
            endpoints(&k2)
        );
        assert_eq!(
            k2.ok(&[
                "get",
                "service",
                "kubernetes",
                "-o",
                "jsonpath={.spec.clusterIP}"
            ]),
            "10.96.0.1"
        );
    });

    // One front gone, the other still serves, and lists only itself.
    let status = front1.stop("-TERM");
    assert!(status.is_some_and(|s| s.success()), "{}", front1.log_text());
    tokio::task::block_in_place(|| {
        let down = k1.run(&["get", "configmap", "shared"]);
        assert_ne!(code(&down), 0);
        assert_eq!(
            k2.ok(&["get", "configmap", "shared", "-o", "name"]).trim(),
            "configmap/shared"
        );
        assert_eq!(endpoints(&k2), "127.0.41.2");
    });
}

/// Whether `f` holds within 30 s (tried every 200 ms).
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// Whether `kubectl get configmaps --watch` prints the configmap `act` creates (`watched`).
fn watch_sees(k: &Kubectl, act: impl FnOnce()) -> bool {
    use std::io::BufRead as _;
    let mut watch = k
        .command()
        .args(["get", "configmaps", "--watch", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = std::io::BufReader::new(watch.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in lines.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if rx
                .recv_timeout(Duration::from_millis(200))
                .is_ok_and(|l| l == want)
            {
                return true;
            }
        }
        false
    };
    // The initial list first (the configmap written before), then the event.
    let listed = next("configmap/shared");
    act();
    let seen = listed && next("configmap/watched");
    let _ = watch.kill();
    let _ = watch.wait();
    seen
}

#[test]
fn every_rendered_flag_is_accepted_and_an_unknown_one_exits_2() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/cpm-manifests/tests/golden");
    let mut parsed = 0;
    for case in std::fs::read_dir(&golden).unwrap() {
        let case = case.unwrap().path();
        for component in [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ] {
            let text = std::fs::read_to_string(case.join(format!("{component}.yaml"))).unwrap();
            let pod = StaticPod::parse(&text);
            assert_eq!(pod.command[0], component);
            if let Err(e) = try_parse_from(pod.command.iter().map(Into::into)) {
                panic!("{}/{component}: {e}", case.display());
            }
            parsed += 1;
        }
    }
    assert_eq!(parsed, 9, "three golden cases of three components");

    // The process refuses a typo with exit 2 and names it.
    let c = cluster(&["127.0.43.1"]);
    let m = &c.masters[0];
    let mut args = StaticPod::read(&m.root, "kube-apiserver").mapped(&m.root);
    args.push("--tls-cert-fil=/etc/kubernetes/pki/apiserver.crt".into());
    let out = std::process::Command::new(c.bins.join(&args[0]))
        .args(&args[1..])
        .env("CPM_SIM_STORE_URL", &c.store.url)
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("--tls-cert-fil"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_manager_and_scheduler_serve_health_and_metrics_as_rendered() {
    let c = cluster(&["127.0.42.1"]);
    let m = &c.masters[0];
    let _front = m.start("kube-apiserver", &c.bins, &c.store);
    ready(&m.url(), &c.ca()).await;
    let _kcm = m.start("kube-controller-manager", &c.bins, &c.store);
    let _scheduler = m.start("kube-scheduler", &c.bins, &c.store);
    // A scraper with a certificate of the cluster CA, as Prometheus through
    // metrics-rbac-proxy would have.
    let ca = bundle_ca(&c.bundle, "ca");
    let (crt, key) = client_cert(&ca, c.dir.path(), "scraper", "prometheus");
    let (crt, key) = (
        std::fs::read_to_string(crt).unwrap(),
        std::fs::read_to_string(key).unwrap(),
    );
    let cert = Probe {
        identity: Some((&crt, &key)),
        ..Probe::default()
    };
    for (component, port) in [
        ("kube-controller-manager", 10257),
        ("kube-scheduler", 10259),
    ] {
        let base = format!("https://127.0.0.1:{port}");
        assert!(
            wait_for(&format!("{base}/healthz"), &Probe::default(), 200).await,
            "{component} /healthz never answered 200 anonymously"
        );
        let anonymous = get(&format!("{base}/metrics"), &Probe::default())
            .await
            .unwrap();
        assert_eq!(anonymous.status, 401, "{component} anonymous /metrics");
        // The scheduler learns the client CA from extension-apiserver-authentication, which
        // its front publishes: it accepts the certificate once it has read it.
        assert!(
            wait_for(&format!("{base}/metrics"), &cert, 200).await,
            "{component} /metrics with a cluster-CA certificate"
        );
        let metrics = get(&format!("{base}/metrics"), &cert).await.unwrap();
        assert!(
            metrics.body.contains(&format!(
                "leader_election_master_status{{name=\"{component}\"}}"
            )),
            "{}",
            metrics.body
        );
    }
    // Both hold their leader-election Lease through their kubeconfigs, and the controller
    // manager's leader gives every namespace its default ServiceAccount and root CA.
    let Some(k) = c.kubectl(0) else { return };
    let root_ca = c.ca();
    tokio::task::block_in_place(|| {
        for lease in ["kube-controller-manager", "kube-scheduler"] {
            let held = || {
                let out = k.run(&[
                    "get",
                    "lease",
                    "-n",
                    "kube-system",
                    lease,
                    "-o",
                    "jsonpath={.spec.holderIdentity}",
                ]);
                out.status.success() && !cpm_testing::process::stdout(&out).is_empty()
            };
            assert!(eventually(held), "nobody holds {lease}");
        }
        k.ok(&["create", "namespace", "later"]);
        for ns in ["default", "kube-system", "later"] {
            let published = || {
                let ca = k.run(&[
                    "get",
                    "configmap",
                    "-n",
                    ns,
                    "kube-root-ca.crt",
                    "-o",
                    "jsonpath={.data.ca\\.crt}",
                ]);
                let sa = k.run(&["get", "serviceaccount", "-n", ns, "default"]);
                cpm_testing::process::stdout(&ca) == root_ca && sa.status.success()
            };
            assert!(
                eventually(published),
                "{ns}: no kube-root-ca.crt or default SA"
            );
        }
    });
}
