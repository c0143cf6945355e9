//! Tests of renewal decisions: time, SAN, algorithm, CA and key drift, on a pure function.

use std::path::Path;

use cpm_core::config::{ControlPlaneConfiguration, KeyAlgorithm};
use cpm_testing::fixtures::{ca_bundle, config_yaml};
use time::macros::datetime;

use super::*;

const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

struct Case {
    _dir: tempfile::TempDir,
    bundle: CaBundle,
    node: NodeIdentity,
}

fn case(alg: KeyAlgorithm) -> Case {
    let dir = tempfile::tempdir().unwrap();
    let bundle = CaBundle::load(&ca_bundle(&dir.path().join("pki"), alg)).unwrap();
    let node = NodeIdentity {
        name: "master-1".parse().unwrap(),
        ip: "192.0.2.10".parse().unwrap(),
    };
    Case {
        _dir: dir,
        bundle,
        node,
    }
}

fn config(extra: &str) -> ControlPlaneConfiguration {
    ControlPlaneConfiguration::parse(&config_yaml(extra), Path::new("test.yaml")).unwrap()
}

/// Runs `desired` and returns the renewals plus the observed map the result would leave on disk.
fn run(
    c: &Case,
    cfg: &ControlPlaneConfiguration,
    observed: &Observed,
    now: OffsetDateTime,
    forced: &[String],
) -> (Vec<(&'static str, Renewal)>, Observed) {
    let inputs = Inputs {
        config: cfg,
        bundle: &c.bundle,
        node: &c.node,
        now,
        forced,
    };
    let d = desired(&inputs, observed, &mut Key::generate).unwrap();
    let after = d
        .set
        .files()
        .iter()
        .filter(|f| {
            !f.path.starts_with("etc/kubernetes/pki/ca") && f.path.to_string_lossy().contains('.')
        })
        .map(|f| (f.path.to_string_lossy().into_owned(), f.bytes.clone()))
        .collect();
    (d.renewals, after)
}

/// Checks which leaves are renewed, and why.
fn check(got: &[(&'static str, Renewal)], expected: &[(&str, Renewal)]) {
    let got: Vec<(&str, Renewal)> = got.iter().map(|(n, r)| (*n, *r)).collect();
    assert_eq!(got, expected);
}

fn all(reason: Renewal) -> Vec<(&'static str, Renewal)> {
    crate::catalogue::LEAF_FILES
        .iter()
        .map(|(n, _, _)| (*n, reason))
        .collect()
}

#[test]
fn issues_everything_on_an_empty_node_then_keeps_it() {
    let c = case(KeyAlgorithm::EcdsaP256);
    let cfg = config("");
    let (renewals, disk) = run(&c, &cfg, &Observed::new(), T0, &[]);
    check(&renewals, &all(Renewal::Missing));
    let (renewals, again) = run(&c, &cfg, &disk, T0 + Duration::days(1), &[]);
    check(&renewals, &[]);
    assert_eq!(disk, again, "kept leaves are byte-identical");
}

#[test]
fn renews_only_inside_renew_before_days() {
    let c = case(KeyAlgorithm::EcdsaP256);
    let cfg = config("certificates: {validityDays: 365, renewBeforeDays: 30}\n");
    let (_, disk) = run(&c, &cfg, &Observed::new(), T0, &[]);
    // 31 days before the renewal window opens: nothing changes.
    let (renewals, _) = run(&c, &cfg, &disk, T0 + Duration::days(365 - 30 - 31), &[]);
    check(&renewals, &[]);
    // One day before the window: still nothing.
    let (renewals, _) = run(&c, &cfg, &disk, T0 + Duration::days(365 - 31), &[]);
    check(&renewals, &[]);
    // Inside the window: every leaf is renewed, and the renewed set is stable.
    let (renewals, renewed) = run(&c, &cfg, &disk, T0 + Duration::days(365 - 29), &[]);
    check(&renewals, &all(Renewal::Expiring));
    let (renewals, _) = run(&c, &cfg, &renewed, T0 + Duration::days(365 - 29), &[]);
    check(&renewals, &[]);
    // Expired long ago (a node that was off for a year): renewed too.
    let (renewals, _) = run(&c, &cfg, &disk, T0 + Duration::days(800), &[]);
    check(&renewals, &all(Renewal::Expiring));
}

#[test]
fn adding_a_san_reissues_only_the_apiserver_certificate() {
    let c = case(KeyAlgorithm::EcdsaP256);
    let (_, disk) = run(
        &c,
        &config("apiserver: {certSANs: [api.example.com]}\n"),
        &Observed::new(),
        T0,
        &[],
    );
    let (renewals, after) = run(
        &c,
        &config("apiserver: {certSANs: [api.example.com, 203.0.113.10]}\n"),
        &disk,
        T0,
        &[],
    );
    check(&renewals, &[("apiserver", Renewal::SanDrift)]);
    let changed: Vec<_> = after
        .iter()
        .filter(|(p, b)| disk.get(*p) != Some(b))
        .map(|(p, _)| p.as_str())
        .collect();
    assert_eq!(
        changed,
        vec![
            "etc/kubernetes/pki/apiserver.crt",
            "etc/kubernetes/pki/apiserver.key"
        ]
    );
}

#[test]
fn node_ip_change_reissues_serving_certificates() {
    let mut c = case(KeyAlgorithm::EcdsaP256);
    let cfg = config("");
    let (_, disk) = run(&c, &cfg, &Observed::new(), T0, &[]);
    c.node.ip = "192.0.2.11".parse().unwrap();
    let (renewals, _) = run(&c, &cfg, &disk, T0, &[]);
    check(
        &renewals,
        &[
            ("apiserver", Renewal::SanDrift),
            ("etcd-server", Renewal::SanDrift),
            ("etcd-peer", Renewal::SanDrift),
        ],
    );
}

#[test]
fn key_algorithm_change_reissues_every_leaf() {
    let c = case(KeyAlgorithm::EcdsaP256);
    let (_, disk) = run(&c, &config(""), &Observed::new(), T0, &[]);
    let (renewals, _) = run(
        &c,
        &config("certificates: {keyAlgorithm: ECDSA-P384}\n"),
        &disk,
        T0,
        &[],
    );
    check(&renewals, &all(Renewal::AlgorithmDrift));
}

#[test]
fn a_rotated_ca_reissues_the_leaves_it_signs() {
    let c = case(KeyAlgorithm::EcdsaP256);
    let cfg = config("");
    let (_, disk) = run(&c, &cfg, &Observed::new(), T0, &[]);
    let other = case(KeyAlgorithm::EcdsaP256);
    let rotated = Case {
        bundle: CaBundle {
            etcd: other.bundle.etcd,
            ..c.bundle
        },
        node: c.node,
        _dir: c._dir,
    };
    let (renewals, _) = run(&rotated, &cfg, &disk, T0, &[]);
    check(
        &renewals,
        &[
            ("apiserver-etcd-client", Renewal::CaChanged),
            ("etcd-server", Renewal::CaChanged),
            ("etcd-peer", Renewal::CaChanged),
            ("etcd-healthcheck-client", Renewal::CaChanged),
        ],
    );
}

#[test]
fn missing_or_foreign_keys_and_broken_certs_are_reissued() {
    let c = case(KeyAlgorithm::EcdsaP256);
    let cfg = config("");
    let (_, disk) = run(&c, &cfg, &Observed::new(), T0, &[]);
    let mut broken = disk.clone();
    broken.remove("etc/kubernetes/pki/apiserver.key");
    let foreign = disk["etc/kubernetes/pki/front-proxy-client.key"].clone();
    broken.insert("etc/kubernetes/pki/etcd/peer.key".into(), foreign);
    broken.insert(
        "etc/kubernetes/pki/etcd/server.crt".into(),
        b"garbage".to_vec(),
    );
    let (renewals, _) = run(&c, &cfg, &broken, T0, &[]);
    check(
        &renewals,
        &[
            ("apiserver", Renewal::KeyMissing),
            ("etcd-server", Renewal::Unparsable),
            ("etcd-peer", Renewal::KeyMismatch),
        ],
    );
}

#[test]
fn forced_renewal_reissues_only_what_is_named() {
    let c = case(KeyAlgorithm::EcdsaP256);
    let cfg = config("");
    let (_, disk) = run(&c, &cfg, &Observed::new(), T0, &[]);
    let (renewals, _) = run(&c, &cfg, &disk, T0, &["etcd-peer".to_string()]);
    check(&renewals, &[("etcd-peer", Renewal::Forced)]);
}
