//! Tests of endpoint selection and the grace period.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};

use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn set(v: &[&str]) -> BTreeSet<SocketAddr> {
    v.iter().map(|s| addr(s)).collect()
}

fn slice(kind: &str, ports: &[(Option<&str>, i32)], eps: &[(&str, Option<bool>)]) -> EndpointSlice {
    EndpointSlice {
        address_type: kind.into(),
        ports: Some(
            ports
                .iter()
                .map(|(n, p)| EndpointPort {
                    name: n.map(Into::into),
                    port: Some(*p),
                    ..Default::default()
                })
                .collect(),
        ),
        endpoints: eps
            .iter()
            .map(|(ip, ready)| Endpoint {
                addresses: vec![(*ip).into()],
                conditions: Some(EndpointConditions {
                    ready: *ready,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn ready_endpoints_take_the_https_port_and_skip_unready_ones() {
    let slices = [
        slice(
            "IPv4",
            &[(Some("metrics"), 9000), (Some("https"), 6443)],
            &[
                ("10.0.0.1", Some(true)),
                ("10.0.0.2", None),
                ("10.0.0.3", Some(false)),
            ],
        ),
        slice("IPv6", &[(None, 7443)], &[("fd00::1", Some(true))]),
        slice("FQDN", &[(None, 443)], &[("api.example.com", Some(true))]),
        slice(
            "IPv4",
            &[],
            &[("10.0.0.9", Some(true)), ("not-an-ip", Some(true))],
        ),
    ];
    assert_eq!(
        ready_endpoints(&slices),
        set(&[
            "10.0.0.1:6443",
            "10.0.0.2:6443",
            "[fd00::1]:7443",
            "10.0.0.9:6443"
        ])
    );
}

fn check(
    ready: &[&str],
    current: &[&str],
    seen_ago: &[(&str, u64)],
    grace: u64,
    want: &[&str],
    want_pending: &[(&str, u64)],
    want_kept: bool,
) {
    let now = Instant::now() + Duration::from_secs(1000);
    let last_seen: BTreeMap<_, _> = seen_ago
        .iter()
        .map(|(a, ago)| (addr(a), now - Duration::from_secs(*ago)))
        .collect();
    let (ready, current) = (set(ready), set(current));
    let d = desired(&Inputs {
        ready: &ready,
        current: &current,
        last_seen: &last_seen,
        now,
        grace: Duration::from_secs(grace),
    });
    assert_eq!(d.list, set(want));
    let pending: BTreeMap<_, _> = want_pending
        .iter()
        .map(|(a, s)| (addr(a), Duration::from_secs(*s)))
        .collect();
    assert_eq!(d.pending, pending);
    assert_eq!(d.kept_current, want_kept);
}

#[test]
fn removal_waits_for_the_grace_period_and_the_list_is_never_empty() {
    let (a, b, c) = ("10.0.0.1:6443", "10.0.0.2:6443", "10.0.0.3:6443");
    // Fresh start, nothing on disk.
    check(&[a, b], &[], &[], 60, &[a, b], &[], false);
    // b not ready for 10 s: kept for 50 more.
    check(&[a], &[a, b], &[(b, 10)], 60, &[a, b], &[(b, 50)], false);
    // b not ready for 60 s: dropped.
    check(&[a], &[a, b], &[(b, 60)], 60, &[a], &[], false);
    // A new endpoint is added at once.
    check(&[a, c], &[a], &[], 60, &[a, c], &[], false);
    // Nothing ready and every grace period over: the current list stays.
    check(&[], &[a, b], &[(a, 90), (b, 90)], 60, &[a, b], &[], true);
    // Nothing ready, nothing on disk: nothing to write.
    check(&[], &[], &[], 60, &[], &[], false);
    // Zero grace: unready endpoints go at once, but never to an empty list.
    check(&[a], &[a, b], &[(b, 0)], 0, &[a], &[], false);
}

#[test]
fn file_round_trips() {
    let list = set(&["10.0.0.2:6443", "10.0.0.1:6443"]);
    let bytes = render(&list);
    assert_eq!(
        String::from_utf8(bytes.clone()).unwrap(),
        "{\"version\":1,\"upstreams\":[\"10.0.0.1:6443\",\"10.0.0.2:6443\"]}\n"
    );
    assert_eq!(parse(&bytes), list);
    assert!(parse(b"garbage").is_empty());
    assert!(parse(b"{\"version\":2,\"upstreams\":[\"10.0.0.1:6443\"]}").is_empty());
}
