//! Authentication: no credentials, unknown tokens, TokenReview outages, client certificates.

use cpm_testing::apiserver::{ApiServer, RequestMatch, UserInfo};

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_or_unknown_credentials_are_401_and_the_upstream_is_not_contacted() {
    let env = Env::start().await;
    assert_eq!(env.get("/etcd/metrics", None).await.0, 401);
    assert_eq!(env.get("/etcd/metrics", Some("nope")).await.0, 401);
    // An unknown path without credentials is 401 too: nothing is revealed before authentication.
    assert_eq!(env.get("/nowhere", None).await.0, 401);
    assert_eq!(env.upstream.hits(), 0);
    assert_eq!(
        env.api_calls(TOKENREVIEWS),
        1,
        "one review for the unknown token"
    );
    assert_eq!(env.api_calls(SARS), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_token_review_refuses_and_is_not_cached() {
    let env = Env::start().await;
    env.api
        .faults()
        .fail_all(RequestMatch::any().path_contains("tokenreviews"), 503);
    assert_eq!(env.get("/etcd/metrics", Some("good")).await.0, 503);
    assert_eq!(env.get("/etcd/metrics", Some("good")).await.0, 503);
    assert_eq!(env.upstream.hits(), 0);
    assert_eq!(env.api_calls(SARS), 0);
    // The failures were not cached: once the API answers, the same token works.
    env.api.faults().clear();
    assert_eq!(env.get("/etcd/metrics", Some("good")).await.0, 200);
    assert_eq!(env.upstream.hits(), 1);
    assert_eq!(env.api_calls(TOKENREVIEWS), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_server_refuses() {
    let Env {
        api,
        pki,
        upstream,
        proxy,
        ..
    } = Env::start().await;
    drop(api);
    let tls = client_tls(pki.roots(), None);
    let (status, _) = get_once(proxy.addr, tls, "/etcd/metrics", Some("good"))
        .await
        .unwrap();
    assert_eq!(status, 503);
    assert_eq!(upstream.hits(), 0);
    assert_eq!(proxy.metrics.cache_count("authn", "miss"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_authenticate_and_other_cas_are_rejected() {
    // The client CA is the test API server's CA, so its issued certificates are trusted.
    let issuer = ApiServer::start().await.unwrap();
    let stranger = ApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("client-ca.crt");
    write(&ca_file, issuer.ca_pem().as_bytes());
    let env = Env::start_with(|o| o.client_ca_file = Some(ca_file.clone())).await;

    let good = issuer
        .issue_client_cert(&UserInfo::new("scraper", &["monitoring"]))
        .unwrap();
    let (c, k) = cert_files(dir.path(), "good", &good);
    let tls = client_tls(env.pki.roots(), Some((&c, &k)));
    let (status, body) = get_once(env.proxy.addr, tls, "/etcd/metrics", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, PAYLOAD.as_bytes());
    assert_eq!(
        env.api_calls(TOKENREVIEWS),
        0,
        "certificates need no TokenReview"
    );
    let reviews = env.reviews.lock().unwrap().clone();
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0].user, UserInfo::new("scraper", &["monitoring"]));
    assert_eq!(reviews[0].path, "/etcd/metrics");
    assert_eq!(reviews[0].verb, "get");

    // A certificate from another CA: the handshake (or the first request) fails.
    let other = stranger
        .issue_client_cert(&UserInfo::new("scraper", &["monitoring"]))
        .unwrap();
    let (c, k) = cert_files(dir.path(), "other", &other);
    let tls = client_tls(env.pki.roots(), Some((&c, &k)));
    let result = get_once(env.proxy.addr, tls, "/etcd/metrics", None).await;
    assert!(result.is_err(), "a foreign certificate got {result:?}");
    assert_eq!(env.upstream.hits(), 1);

    // A denied certificate user is 403.
    let denied = issuer
        .issue_client_cert(&UserInfo::new("intruder", &[]))
        .unwrap();
    let (c, k) = cert_files(dir.path(), "denied", &denied);
    let tls = client_tls(env.pki.roots(), Some((&c, &k)));
    let (status, _) = get_once(env.proxy.addr, tls, "/etcd/metrics", None)
        .await
        .unwrap();
    assert_eq!(status, 403);
    assert_eq!(env.upstream.hits(), 1);
}
