//! The agent as a daemon: admin endpoints, a reaction to a config change through notify, and a
//! clean exit on SIGTERM.

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use cpm_core::apply::write_atomic;
use cpm_testing::etcd::free_port;
use cpm_testing::process::Daemon;

use super::*;

fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    Some((status, out))
}

/// Polls `f` every 50 ms for up to 30 s.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn daemon_serves_admin_reacts_to_config_and_exits_0_on_sigterm() {
    let node = Node::new("");
    let port = free_port("127.0.0.1".parse().unwrap());
    let addr = format!("127.0.0.1:{port}");
    let mut args = node.args();
    args.extend([
        "--admin-addr".into(),
        addr.clone(),
        "--log-format".into(),
        "json".into(),
    ]);
    let child = Command::new(bin())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut daemon = Daemon(child);

    eventually("readyz 200", || {
        http_get(&addr, "/readyz").is_some_and(|(c, _)| c == 200)
    });
    let (_, metrics) = http_get(&addr, "/metrics").unwrap();
    assert!(
        metrics.contains("cpm_certificate_expiry_timestamp_seconds{name=\"apiserver\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cpm_reconcile_total{agent=\"cpm-certs\",result=\"success\"} "),
        "{metrics}"
    );
    assert!(http_get(&addr, "/livez").is_some_and(|(c, _)| c == 200));
    let apiserver = node.root.read("etc/kubernetes/pki/apiserver.crt");

    // SIGHUP runs a pass now.
    let passes = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("cpm_reconcile_total{agent=\"cpm-certs\",result=\"success\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
    };
    let before = passes(&metrics).unwrap();
    assert!(
        Command::new("kill")
            .args(["-HUP", &daemon.0.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    eventually("a pass after SIGHUP", || {
        http_get(&addr, "/metrics")
            .and_then(|(_, m)| passes(&m))
            .is_some_and(|n| n > before)
    });
    assert_eq!(
        node.root.read("etc/kubernetes/pki/apiserver.crt"),
        apiserver,
        "a pass on unchanged inputs changes nothing"
    );

    // A new SAN in the config reaches the apiserver certificate without a restart.
    write_atomic(
        &node.config,
        cpm_testing::fixtures::config_yaml("apiserver: {certSANs: [new.example.com]}\n").as_bytes(),
        0o600,
        None,
        None,
    )
    .unwrap();
    eventually("apiserver certificate reissued", || {
        node.root.read("etc/kubernetes/pki/apiserver.crt") != apiserver
    });
    let (ok, text) = openssl(&[
        "x509",
        "-in",
        s(&node.pki_path("apiserver.crt")),
        "-noout",
        "-ext",
        "subjectAltName",
    ]);
    assert!(ok && text.contains("DNS:new.example.com"), "{text}");

    // A broken config keeps the last good state; the daemon keeps running.
    let good = node.root.entries();
    write_atomic(&node.config, b"kind: [", 0o600, None, None).unwrap();
    eventually("a failed pass is counted", || {
        http_get(&addr, "/metrics").is_some_and(|(_, m)| m.contains("result=\"error\""))
    });
    assert_eq!(node.root.entries(), good);

    let exit =
        cpm_testing::process::signal_and_wait(&mut daemon.0, "-TERM", Duration::from_secs(30))
            .expect("no exit after SIGTERM");
    assert_eq!(exit.code(), Some(0), "SIGTERM is a clean exit");
    let mut logs = String::new();
    daemon
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(
        logs.lines().all(|l| l.starts_with('{')),
        "JSON logs only: {logs}"
    );
    assert!(logs.contains("SIGTERM: exiting"), "{logs}");
    assert!(!logs.contains("PRIVATE KEY"), "a key reached the logs");
}

/// On a converged node, the daemon does nothing: its own reads of the config, the CA bundle and
/// the node's PKI never start a pass.
#[test]
fn an_idle_daemon_does_no_work_when_its_inputs_are_read() {
    let node = Node::new("");
    assert_eq!(code(&node.run(&["--once"])), 0);
    let addr = format!("127.0.0.1:{}", free_port("127.0.0.1".parse().unwrap()));
    let child = Command::new(bin())
        .args(node.args())
        .args(["--admin-addr", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _daemon = Daemon(child);
    eventually("readyz 200", || {
        http_get(&addr, "/readyz").is_some_and(|(c, _)| c == 200)
    });
    let inputs = [
        node.config.clone(),
        node.pki.clone(),
        node.root.path().join("etc/kubernetes"),
    ];
    let passes =
        cpm_testing::idle::assert_idle(&addr, "cpm_reconcile_total{agent=\"cpm-certs\"", &inputs);
    assert_eq!(passes, 1.0, "a converged node needs one pass");
}
