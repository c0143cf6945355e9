//! The upstream side: https with a CA and a client certificate, size limit, timeout, and the
//! serving certificate reload.

use std::time::Duration;

use cpm_core::pki::Usage;
use metrics_rbac_proxy::routes::UpstreamTls;
use rustls::server::WebPkiClientVerifier;

use crate::*;

/// An https upstream whose certificate comes from `pki` and which requires a client certificate
/// from `pki`.
async fn https_upstream(pki: &Pki) -> FakeUpstream {
    let (c, k) = pki.issue("upstream", "kube-scheduler", &[], Usage::Server);
    let certs = CertificateDer::pem_file_iter(&c)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&k).unwrap();
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(pki.roots()), provider.clone())
            .build()
            .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    FakeUpstream::start_with(PAYLOAD, Some(Arc::new(cfg))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_are_verified_and_get_the_client_certificate() {
    let upstream_pki = Pki::generate("component-ca");
    let up = https_upstream(&upstream_pki).await;
    let (cc, ck) = upstream_pki.issue("proxy-client", "metrics-rbac-proxy", &[], Usage::Client);
    let wrong = Pki::generate("wrong-ca");
    let url = format!("https://{}/metrics", up.addr);
    let env = Env::start_with(|o| {
        let mut good = route("scheduler", &url);
        good.tls = UpstreamTls {
            ca_file: Some(upstream_pki.path("ca.crt")),
            cert_file: Some(cc.clone()),
            key_file: Some(ck.clone()),
            server_name: None,
            insecure_skip_verify: false,
        };
        let mut bad = route("wrong-ca", &url);
        bad.tls = UpstreamTls {
            ca_file: Some(wrong.path("ca.crt")),
            ..good.tls.clone()
        };
        o.routes.extend([good, bad]);
    })
    .await;
    let (status, body) = env.get("/scheduler/metrics", Some("good")).await;
    assert_eq!((status, body.as_ref()), (200, PAYLOAD.as_bytes()));
    assert_eq!(up.hits(), 1);
    // An upstream certificate not from the route's CA: no request is sent, 502.
    assert_eq!(env.get("/wrong-ca/metrics", Some("good")).await.0, 502);
    assert_eq!(up.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_over_the_limit_are_refused() {
    let env = Env::start_with(|o| o.limits.max_response_bytes = 4).await;
    assert_eq!(env.get("/etcd/metrics", Some("good")).await.0, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_is_504() {
    // Accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", silent.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let env = Env::start_with(|o| {
        o.routes.push(route("silent", &url));
        o.limits.timeout = Duration::from_millis(300);
    })
    .await;
    assert_eq!(env.get("/silent/metrics", Some("good")).await.0, 504);
    hold.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serving_certificate_is_reloaded_when_its_files_change() {
    let env = Env::start().await;
    let before = env.proxy.cert.get().cert[0].clone();
    // Replace the pair (atomically, as a certificate agent would) with one from another CA.
    let next = Pki::generate("next-serving-ca");
    let (c, k) = next.issue("serving", "metrics-rbac-proxy", &[], Usage::Server);
    let (cert_pem, key_pem) = (std::fs::read(&c).unwrap(), std::fs::read(&k).unwrap());
    write(&env.pki.path("serving.key"), &key_pem);
    write(&env.pki.path("serving.crt"), &cert_pem);
    let mut changed = false;
    for _ in 0..200 {
        if env.proxy.cert.get().cert[0] != before {
            changed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(changed, "the serving certificate was not reloaded");
    let tls = client_tls(next.roots(), None);
    let (status, _) = get_once(env.proxy.addr, tls, "/etcd/metrics", Some("good"))
        .await
        .unwrap();
    assert_eq!(status, 200);
}
