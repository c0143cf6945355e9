//! Process-level tests of proxy-reloader against the project's test API server: ready endpoints
//! only, the removal grace period, never an empty list, an unreachable API, and `--once`.

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use cpm_testing::apiserver::{ApiServer, Identity, UserInfo};
use cpm_testing::process::{code, stderr};
use cpm_testing::root::FakeRoot;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};

const FILE: &str = "etc/kubernetes/api-proxy/upstreams.json";

struct Cluster {
    server: ApiServer,
    slices: Api<EndpointSlice>,
    root: FakeRoot,
}

impl Cluster {
    async fn start() -> Self {
        let server = ApiServer::start().await.unwrap();
        let slices = Api::namespaced(server.admin_client().await.unwrap(), "default");
        let root = FakeRoot::new();
        let kubeconfig = server
            .kubeconfig_yaml(&Identity::Cert(UserInfo::new(
                "system:node:node-1",
                &["system:nodes"],
            )))
            .unwrap();
        let path = root.join("etc/kubernetes/kubelet.conf");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        cpm_core::apply::write_atomic(&path, kubeconfig.as_bytes(), 0o600, None, None).unwrap();
        Self {
            server,
            slices,
            root,
        }
    }

    /// Creates or replaces slice `name` with `(ip, ready)` endpoints on port 6443.
    async fn set_slice(&self, name: &str, endpoints: &[(&str, bool)]) {
        let mut slice = cpm_testing::fixtures::kubernetes_endpoint_slice(name, 6443, endpoints);
        match self.slices.get_opt(name).await.unwrap() {
            Some(old) => {
                slice.metadata.resource_version = old.metadata.resource_version;
                self.slices
                    .replace(name, &PostParams::default(), &slice)
                    .await
                    .unwrap();
            }
            None => {
                self.slices
                    .create(&PostParams::default(), &slice)
                    .await
                    .unwrap();
            }
        }
    }

    fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_proxy-reloader"));
        cmd.arg("--root")
            .arg(self.root.path())
            .args(extra)
            .env("RUST_BACKTRACE", "0")
            .env_remove("RUST_LOG");
        cmd
    }

    fn daemon(&self, grace: &str) -> Daemon {
        let admin = format!("127.0.0.1:{}", free_port());
        let child = self
            .command(&["--grace-seconds", grace, "--admin-addr", &admin])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Daemon { child, admin }
    }

    async fn once(&self, extra: &[&str]) -> Output {
        let mut cmd = self.command(&["--once"]);
        cmd.args(extra);
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    }

    fn upstreams(&self) -> Option<String> {
        std::fs::read_to_string(self.root.join(FILE)).ok()
    }
}

struct Daemon {
    child: Child,
    admin: String,
}

impl Daemon {
    async fn metric(&self, name: &str) -> Option<f64> {
        let r = cpm_core::http::get(
            &format!("http://{}/metrics", self.admin),
            &cpm_core::http::Verify::Insecure,
            Duration::from_secs(2),
        )
        .await
        .ok()?;
        String::from_utf8_lossy(&r.body)
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn list(addrs: &[&str]) -> String {
    let items: Vec<String> = addrs.iter().map(|a| format!("\"{a}:6443\"")).collect();
    format!("{{\"version\":1,\"upstreams\":[{}]}}\n", items.join(","))
}

/// Polls `cond` every 50 ms for up to 10 s.
async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_ready_endpoints_and_honours_the_removal_grace_period() {
    let c = Cluster::start().await;
    c.set_slice(
        "kubernetes",
        &[
            ("127.0.0.2", true),
            ("127.0.0.3", true),
            ("127.0.0.4", false),
        ],
    )
    .await;
    let _d = c.daemon("3");
    let first = list(&["127.0.0.2", "127.0.0.3"]);
    assert!(
        eventually(|| c.upstreams().as_deref() == Some(first.as_str())).await,
        "{:?}",
        c.upstreams()
    );

    // .3 stops being ready while .5 appears: the same pass adds .5 and keeps .3 (grace).
    c.set_slice(
        "kubernetes",
        &[
            ("127.0.0.2", true),
            ("127.0.0.3", false),
            ("127.0.0.5", true),
        ],
    )
    .await;
    let during = list(&["127.0.0.2", "127.0.0.3", "127.0.0.5"]);
    assert!(
        eventually(|| c.upstreams().as_deref() != Some(first.as_str())).await,
        "the change was never applied"
    );
    assert_eq!(c.upstreams().as_deref(), Some(during.as_str()));
    // After the grace period .3 goes, without any further event.
    let after = list(&["127.0.0.2", "127.0.0.5"]);
    assert!(
        eventually(|| c.upstreams().as_deref() == Some(after.as_str())).await,
        "{:?}",
        c.upstreams()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_writes_an_empty_list() {
    let c = Cluster::start().await;
    c.set_slice("kubernetes", &[("127.0.0.2", true)]).await;
    let d = c.daemon("0");
    let only = list(&["127.0.0.2"]);
    assert!(eventually(|| c.upstreams().as_deref() == Some(only.as_str())).await);

    // Every endpoint unready, then the slice gone: the list stays.
    c.set_slice("kubernetes", &[("127.0.0.2", false)]).await;
    let mut kept = 0.0;
    for _ in 0..200 {
        kept = d
            .metric("cpm_proxy_reloader_kept_last_list_total")
            .await
            .unwrap_or(0.0);
        if kept >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(kept >= 1.0, "no pass saw the unready endpoint");
    assert_eq!(c.upstreams().as_deref(), Some(only.as_str()));
    c.slices
        .delete("kubernetes", &DeleteParams::default())
        .await
        .unwrap();
    let mut kept_again = false;
    for _ in 0..200 {
        if d.metric("cpm_proxy_reloader_kept_last_list_total")
            .await
            .unwrap_or(0.0)
            > kept
        {
            kept_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(kept_again, "no pass saw the deleted slice");
    assert_eq!(c.upstreams().as_deref(), Some(only.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_writes_then_plans_nothing_and_an_unreachable_api_keeps_the_list() {
    let c = Cluster::start().await;
    c.set_slice("a", &[("127.0.0.2", true)]).await;
    c.set_slice("b", &[("127.0.0.3", true)]).await;
    let out = c.once(&[]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let both = list(&["127.0.0.2", "127.0.0.3"]);
    assert_eq!(c.upstreams().as_deref(), Some(both.as_str()));
    let out = c.once(&["--check"]).await;
    assert_eq!(
        code(&out),
        0,
        "second pass plans something: {}",
        stderr(&out)
    );

    // The API goes away: the pass fails (exit 1) and the last list stays.
    let addr = c.server.addr();
    drop(c.slices);
    drop(c.server);
    let out = {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_proxy-reloader"));
        cmd.arg("--root").arg(c.root.path()).arg("--once");
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    };
    assert_eq!(
        code(&out),
        1,
        "API at {addr} still answers? {}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(c.root.join(FILE)).unwrap(), both);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_kubeconfig_is_a_usage_error() {
    let root = FakeRoot::new();
    let out = Command::new(env!("CARGO_BIN_EXE_proxy-reloader"))
        .arg("--root")
        .arg(root.path())
        .arg("--once")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("kubelet.conf"), "{}", stderr(&out));
    assert!(!root.join(FILE).exists());
}

/// With the endpoints unchanged, the daemon does nothing: neither passes nor API requests
/// beyond its watch, when its kubeconfig and its own file are read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_daemon_does_no_work() {
    let c = Cluster::start().await;
    c.set_slice("kubernetes", &[("127.0.0.2", true), ("127.0.0.3", true)])
        .await;
    let d = c.daemon("60");
    let both = list(&["127.0.0.2", "127.0.0.3"]);
    assert!(eventually(|| c.upstreams().as_deref() == Some(both.as_str())).await);
    let inputs = [c.root.join("etc/kubernetes")];
    let admin = d.admin.clone();
    tokio::task::block_in_place(|| {
        cpm_testing::idle::assert_idle_against(&c.server, &admin, "cpm_reconcile_total{", &inputs);
    });
}
