//! The binary: flags only (no config, no upstream file), admin endpoints, SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use cpm_core::http::{Verify, get};

use cpm_testing::process::Refused;

use crate::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn binary_runs_on_flags_only_serves_admin_and_exits_0_on_sigterm() {
    let cluster = Cluster::generate();
    let a = Upstream::start(&cluster, "a").await;
    let root = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_api-proxy"))
        .arg("--root")
        .arg(root.path())
        .arg("--config")
        .arg(root.path().join("absent.yaml"))
        .args(["--listen", &listen, "--admin-addr", &admin])
        .args(["--upstream", &a.addr.to_string()])
        .arg("--ca-file")
        .arg(cluster.ca_file())
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    assert!(
        cpm_testing::process::admin_ready(&admin).await,
        "admin /readyz never answered 200"
    );
    let listen: std::net::SocketAddr = listen.parse().unwrap();
    assert_eq!(id(listen, &cluster).await.unwrap(), "a");
    let metrics = get(
        &format!("http://{admin}/metrics"),
        &Verify::Insecure,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(text.contains("cpm_api_proxy_upstreams 1"), "{text}");
    assert!(
        text.contains("cpm_api_proxy_connections_total{upstream="),
        "{text}"
    );
    assert!(
        text.contains("cpm_api_proxy_connect_duration_seconds_count 1"),
        "{text}"
    );

    let code = cpm_testing::process::signal_and_wait(&mut child, "-TERM", Duration::from_secs(10))
        .and_then(|s| s.code());
    assert_eq!(code, Some(0));
}

/// A proxy has no pass to run once, dry-run or check: those flags, and the ones for inputs it
/// does not read, are refused with exit 2 (from the command line or `CPM_*`), never ignored
/// while it runs as a daemon.
#[test]
fn flags_a_proxy_does_not_honour_are_refused_with_exit_2() {
    let cases: [Refused; 6] = [
        (&["--once"], &[], "--once"),
        (&["--dry-run"], &[], "--dry-run"),
        (&["--check"], &[], "--check"),
        (&["--kubeconfig", "/k"], &[], "--kubeconfig"),
        (&[], &[("CPM_ONCE", "true")], "--once (set by CPM_ONCE)"),
        (
            &[],
            &[("CPM_RESYNC_SECONDS", "5")],
            "--resync-seconds (set by CPM_RESYNC_SECONDS)",
        ),
    ];
    cpm_testing::process::assert_refused(
        env!("CARGO_BIN_EXE_api-proxy"),
        &["--upstream", "127.0.0.1:1"],
        "api-proxy",
        &cases,
    );
    let help = Command::new(env!("CARGO_BIN_EXE_api-proxy"))
        .arg("--help")
        .output()
        .unwrap();
    let help = cpm_testing::process::stdout(&help);
    assert!(
        !help.contains("--once") && !help.contains("--dry-run"),
        "{help}"
    );
}

/// With nothing changing, the proxy never reloads its upstream file: its own reads of the file
/// (and anyone else's) are not changes. The periodic safety-net reload is set out of the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_proxy_does_not_reload_when_its_upstream_file_is_read() {
    let cluster = Cluster::generate();
    let a = Upstream::start(&cluster, "a").await;
    cluster.set_upstreams(&[a.addr]);
    let admin = format!("127.0.0.1:{}", free_port());
    let listen = format!("127.0.0.1:{}", free_port());
    let _proxy = cpm_testing::process::Daemon::spawn(
        Command::new(env!("CARGO_BIN_EXE_api-proxy"))
            .arg("--root")
            .arg(cluster.dir.path())
            .args(["--upstreams-file", "api-proxy/upstreams.json"])
            .arg("--ca-file")
            .arg(cluster.ca_file())
            .args(["--listen", &listen, "--admin-addr", &admin])
            .args(["--reload-seconds", "3600"])
            .stderr(Stdio::null()),
    );
    assert!(
        cpm_testing::process::admin_ready(&admin).await,
        "admin /readyz never answered 200"
    );
    let inputs = [cluster.upstreams_file(), cluster.ca_file()];
    tokio::task::block_in_place(|| {
        cpm_testing::idle::assert_idle(&admin, "cpm_api_proxy_reloads_total{", &inputs);
    });
    // The watch is alive: a real change is reloaded.
    let b = Upstream::start(&cluster, "b").await;
    cluster.set_upstreams(&[a.addr, b.addr]);
    assert!(
        eventually(Duration::from_secs(30), || {
            cpm_testing::idle::sum(
                &cpm_testing::idle::scrape(&admin),
                "cpm_api_proxy_reloads_total{result=\"applied\"",
            ) >= 1.0
        })
        .await,
        "the changed upstream file was not reloaded"
    );
}
