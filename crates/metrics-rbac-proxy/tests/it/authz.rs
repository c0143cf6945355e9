//! Authorisation: SubjectAccessReview decisions, 404, caching, static rules, resource
//! attributes, SubjectAccessReview outages.

use cpm_testing::apiserver::{Decision, RequestMatch};
use metrics_rbac_proxy::routes::{AllowRule, ResourceAttributes};

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_review_is_403_and_the_upstream_is_not_contacted() {
    let env = Env::start().await;
    assert_eq!(env.get("/etcd/metrics", Some("bad")).await.0, 403);
    assert_eq!(env.get("/etcd/metrics", Some("bad")).await.0, 403);
    assert_eq!(env.upstream.hits(), 0);
    // The deny is cached: one TokenReview and one SubjectAccessReview for both requests.
    assert_eq!(env.api_calls(TOKENREVIEWS), 1);
    assert_eq!(env.api_calls(SARS), 1);
    let reviews = env.reviews.lock().unwrap().clone();
    assert_eq!(reviews[0].user.username, "intruder");
    assert_eq!(
        (reviews[0].verb.as_str(), reviews[0].path.as_str()),
        ("get", "/etcd/metrics")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_path_is_404_without_a_review_or_an_upstream_request() {
    let env = Env::start().await;
    assert_eq!(
        env.get("/kube-apiserver/metrics", Some("good")).await.0,
        404
    );
    assert_eq!(env.get("/etcd/metrics/extra", Some("good")).await.0, 404);
    assert_eq!(env.upstream.hits(), 0);
    assert_eq!(env.api_calls(SARS), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_request_is_forwarded_without_the_clients_token() {
    let env = Env::start().await;
    let (status, body) = env.get("/etcd/metrics", Some("good")).await;
    assert_eq!(status, 200);
    assert_eq!(body, PAYLOAD.as_bytes());
    assert_eq!(env.upstream.hits(), 1);
    assert_eq!(*env.upstream.authorization.lock().unwrap(), vec![None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_identity_scraping_1000_times_costs_at_most_two_reviews() {
    let env = Env::start().await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (addr, tls) = (env.proxy.addr, env.tls());
        tasks.push(tokio::spawn(async move {
            let mut s = Scraper::connect(addr, tls).await.unwrap();
            let mut ok = 0;
            for _ in 0..125 {
                let (status, body) = s.get("/etcd/metrics", Some("good")).await.unwrap();
                if status == 200 && body == PAYLOAD.as_bytes() {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    assert_eq!(ok, 1000);
    assert_eq!(env.upstream.hits(), 1000);
    let (tr, sar) = (env.api_calls(TOKENREVIEWS), env.api_calls(SARS));
    assert!(
        tr + sar <= 2,
        "{tr} TokenReviews + {sar} SubjectAccessReviews"
    );
    let m = &env.proxy.metrics;
    assert_eq!(
        m.cache_count("authn", "hit") + m.cache_count("authn", "miss"),
        1000
    );
    assert_eq!(m.cache_count("authn", "miss"), 1);
    assert_eq!(m.cache_count("authz", "miss"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_subject_access_review_refuses_and_is_not_cached() {
    let env = Env::start().await;
    env.api.faults().fail_all(
        RequestMatch::any().path_contains("subjectaccessreviews"),
        500,
    );
    assert_eq!(env.get("/etcd/metrics", Some("good")).await.0, 503);
    assert_eq!(env.upstream.hits(), 0);
    env.api.faults().clear();
    assert_eq!(env.get("/etcd/metrics", Some("good")).await.0, 200);
    assert_eq!(env.upstream.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_allow_rules_need_no_review() {
    let env = Env::start_with(|o| {
        o.auth.allow = vec![AllowRule {
            paths: vec!["/etcd/metrics".into()],
            users: Vec::new(),
            groups: vec!["monitoring".into()],
        }];
    })
    .await;
    // Everything is denied by the API, but the rule lets group `monitoring` in.
    env.api.set_authorizer(|_| Decision::deny("no"));
    assert_eq!(env.get("/etcd/metrics", Some("good")).await.0, 200);
    assert_eq!(env.api_calls(SARS), 0);
    // `intruder` is not in the group: the review decides (deny).
    assert_eq!(env.get("/etcd/metrics", Some("bad")).await.0, 403);
    assert_eq!(env.api_calls(SARS), 1);
    assert_eq!(env.upstream.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_attributes_replace_the_path_in_the_review() {
    let env = Env::start_with(|o| {
        o.routes[0].resource_attributes = Some(ResourceAttributes {
            namespace: Some("kube-system".into()),
            resource: Some("pods".into()),
            subresource: Some("metrics".into()),
            ..Default::default()
        });
    })
    .await;
    env.api.set_authorizer(|a| {
        if a.resource == "pods"
            && a.subresource == "metrics"
            && a.namespace == "kube-system"
            && a.verb == "get"
            && a.path.is_empty()
        {
            Decision::allow("resource")
        } else {
            Decision::deny("no")
        }
    });
    assert_eq!(env.get("/etcd/metrics", Some("good")).await.0, 200);
    assert_eq!(env.upstream.hits(), 1);
}
