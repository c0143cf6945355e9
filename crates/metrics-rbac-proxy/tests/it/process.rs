//! The binary: flags only (no routes file), a self-signed serving certificate, admin endpoints,
//! SIGTERM exits 0.

use std::process::{Command, Stdio};
use std::time::Duration;

use cpm_core::http::{Verify, get};
use cpm_testing::apiserver::{Identity, UserInfo};

use cpm_testing::process::Refused;

use crate::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Trusts whatever certificate the server presents first (the binary's self-signed one).
async fn pinned_tls(addr: SocketAddr) -> Arc<rustls::ClientConfig> {
    #[derive(Debug)]
    struct Capture(
        Arc<rustls::crypto::CryptoProvider>,
        Arc<Mutex<Option<CertificateDer<'static>>>>,
    );
    impl rustls::client::danger::ServerCertVerifier for Capture {
        fn verify_server_cert(
            &self,
            end: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            *self.1.lock().unwrap() = Some(end.clone().into_owned());
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let seen = Arc::new(Mutex::new(None));
    let capture = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Capture(provider(), seen.clone())))
        .with_no_client_auth();
    let _ = Scraper::connect(addr, Arc::new(capture)).await;
    let cert = seen.lock().unwrap().clone().expect("no server certificate");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    client_tls(roots, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn binary_runs_on_flags_only_serves_admin_and_exits_0_on_sigterm() {
    let api = ApiServer::start().await.unwrap();
    api.add_token("good", UserInfo::new("prom", &[]));
    let upstream = FakeUpstream::start(PAYLOAD).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let yaml = api
        .kubeconfig_yaml(&Identity::Cert(UserInfo::new("metrics-rbac-proxy", &[])))
        .unwrap();
    write(&kubeconfig, yaml.as_bytes());
    let port = free_port();
    let admin = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_metrics-rbac-proxy"))
        .args(["--node-ip", "127.0.0.1", "--admin-addr", &admin])
        .env("CPM_LISTEN", format!("127.0.0.1:{port}"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--route", &format!("etcd={}", upstream.url())])
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    assert!(
        cpm_testing::process::admin_ready(&admin).await,
        "admin /readyz never answered 200"
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let tls = pinned_tls(addr).await;
    let (status, body) = get_once(addr, tls.clone(), "/etcd/metrics", Some("good"))
        .await
        .unwrap();
    assert_eq!((status, body.as_ref()), (200, PAYLOAD.as_bytes()));
    assert_eq!(
        get_once(addr, tls, "/etcd/metrics", None).await.unwrap().0,
        401
    );
    assert_eq!(upstream.hits(), 1);

    let metrics = get(
        &format!("http://{admin}/metrics"),
        &Verify::Insecure,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    for line in [
        "cpm_metrics_rbac_proxy_requests_total{route=\"etcd\",code=\"200\"} 1",
        "cpm_metrics_rbac_proxy_requests_total{route=\"none\",code=\"401\"} 1",
        "cpm_metrics_rbac_proxy_cache_lookups_total{cache=\"authn\",result=\"miss\"} 1",
        "cpm_metrics_rbac_proxy_reviews_total{kind=\"tokenreview\",result=\"ok\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }

    let code = cpm_testing::process::signal_and_wait(&mut child, "-TERM", Duration::from_secs(10))
        .and_then(|s| s.code());
    assert_eq!(code, Some(0));
}

#[test]
fn https_routes_without_a_ca_or_an_explicit_skip_are_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_metrics-rbac-proxy"))
        .args(["--node-ip", "127.0.0.1", "--kubeconfig", "/nonexistent"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("flags: routes[0].tls"), "{err}");
}

/// A proxy has no pass to run once, dry-run or check, and reads no node root or config: those
/// flags are refused with exit 2 (from the command line or `CPM_*`), never ignored.
#[test]
fn flags_a_proxy_does_not_honour_are_refused_with_exit_2() {
    let cases: [Refused; 5] = [
        (&["--once"], &[], "--once"),
        (&["--dry-run"], &[], "--dry-run"),
        (&["--check"], &[], "--check"),
        (&["--root", "/tmp"], &[], "--root"),
        (
            &[],
            &[("CPM_DRY_RUN", "true")],
            "--dry-run (set by CPM_DRY_RUN)",
        ),
    ];
    cpm_testing::process::assert_refused(
        env!("CARGO_BIN_EXE_metrics-rbac-proxy"),
        &["--node-ip", "127.0.0.1"],
        "metrics-rbac-proxy",
        &cases,
    );
}

/// With nothing changing, the proxy never reloads its serving certificate: its own reads of the
/// pair (and anyone else's) are not changes. The safety-net reload is set out of the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_proxy_does_not_reload_when_its_certificate_is_read() {
    let api = ApiServer::start().await.unwrap();
    let pki = Pki::generate("serving-ca");
    let (cert, key) = pki.issue("serving", "metrics-rbac-proxy", &[], Usage::Server);
    let kubeconfig = pki.path("kubeconfig");
    let yaml = api
        .kubeconfig_yaml(&Identity::Cert(UserInfo::new("metrics-rbac-proxy", &[])))
        .unwrap();
    write(&kubeconfig, yaml.as_bytes());
    let upstream = FakeUpstream::start(PAYLOAD).await;
    let admin = format!("127.0.0.1:{}", free_port());
    let _proxy = cpm_testing::process::Daemon::spawn(
        Command::new(env!("CARGO_BIN_EXE_metrics-rbac-proxy"))
            .args(["--node-ip", "127.0.0.1", "--admin-addr", &admin])
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .args(["--tls-reload-seconds", "3600"])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--route", &format!("etcd={}", upstream.url())])
            .stderr(Stdio::null()),
    );
    assert!(
        cpm_testing::process::admin_ready(&admin).await,
        "admin /readyz never answered 200"
    );
    let inputs = [cert.clone(), key.clone(), kubeconfig.clone()];
    tokio::task::block_in_place(|| {
        cpm_testing::idle::assert_idle(
            &admin,
            "cpm_metrics_rbac_proxy_tls_reloads_total{",
            &inputs,
        );
    });
    // The watch is alive: a renewed pair is loaded.
    pki.issue("serving", "metrics-rbac-proxy", &[], Usage::Server);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while cpm_testing::idle::sum(
        &cpm_testing::idle::scrape(&admin),
        "cpm_metrics_rbac_proxy_tls_reloads_total{result=\"applied\"",
    ) < 1.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the renewed pair was not loaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
