//! Tests of kubeconfig and symlink decisions: time, CA rotation, server changes, broken files.

use std::path::Path;

use cpm_core::config::{ControlPlaneConfiguration, KeyAlgorithm};
use cpm_core::pki::bundle::CaBundle;
use cpm_testing::fixtures::{ca_bundle, config_yaml};
use time::macros::datetime;

use super::*;

const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

fn bundle() -> (tempfile::TempDir, CaBundle) {
    let dir = tempfile::tempdir().unwrap();
    let b = CaBundle::load(&ca_bundle(&dir.path().join("pki"), KeyAlgorithm::EcdsaP256)).unwrap();
    (dir, b)
}

fn config(extra: &str) -> ControlPlaneConfiguration {
    ControlPlaneConfiguration::parse(&config_yaml(extra), Path::new("test.yaml")).unwrap()
}

fn observed(files: &[(&'static str, Vec<u8>)]) -> Observed {
    Observed {
        files: files.iter().cloned().collect(),
        link: Some(LinkObserved::Absent),
        kube_dir_exists: false,
    }
}

/// Kubeconfig bytes by file name.
type Files = Vec<(&'static str, Vec<u8>)>;

/// Runs `desired` and returns the renewals and the kubeconfigs it would leave.
fn run(
    cfg: &ControlPlaneConfiguration,
    ca: &cpm_core::pki::Ca,
    ip: &str,
    now: OffsetDateTime,
    obs: &Observed,
) -> (Vec<(&'static str, Renewal)>, Files) {
    let inputs = Inputs {
        config: cfg,
        ca,
        node_ip: ip.parse().unwrap(),
        now,
    };
    let d = desired(&inputs, obs, &mut Key::generate).unwrap();
    let files = SPECS
        .iter()
        .map(|s| {
            (
                s.file,
                d.set.get(Path::new(&s.path())).unwrap().bytes.clone(),
            )
        })
        .collect();
    (d.renewals, files)
}

fn check(got: &[(&'static str, Renewal)], expected: &[(&str, Renewal)]) {
    let got: Vec<(&str, Renewal)> = got.iter().map(|(f, r)| (*f, *r)).collect();
    assert_eq!(got, expected);
}

fn all(r: Renewal) -> Vec<(&'static str, Renewal)> {
    SPECS.iter().map(|s| (s.file, r)).collect()
}

#[test]
fn writes_all_four_then_keeps_them_byte_identical() {
    let (_d, b) = bundle();
    let cfg = config("");
    let (r, files) = run(&cfg, &b.kubernetes.ca, "192.0.2.10", T0, &observed(&[]));
    check(&r, &all(Renewal::Missing));
    let (r, again) = run(&cfg, &b.kubernetes.ca, "192.0.2.10", T0, &observed(&files));
    check(&r, &[]);
    assert_eq!(files, again);
    let admin = Kubeconfig::parse(std::str::from_utf8(&files[0].1).unwrap()).unwrap();
    let (cluster, user) = admin.current().unwrap();
    assert_eq!(cluster.server, "https://127.0.0.1:6445");
    let cert = inspect(&user.client_certificate().unwrap()).unwrap();
    assert_eq!(
        (cert.common_name.as_str(), cert.organizations.clone()),
        (
            "kubernetes-admin",
            vec!["kubeadm:cluster-admins".to_string()]
        )
    );
    let sched = Kubeconfig::parse(std::str::from_utf8(&files[3].1).unwrap()).unwrap();
    assert_eq!(sched.current().unwrap().0.server, "https://192.0.2.10:6443");
}

#[test]
fn renews_only_inside_the_window() {
    let (_d, b) = bundle();
    let cfg = config("certificates: {validityDays: 365, renewBeforeDays: 30}\n");
    let (_, files) = run(&cfg, &b.kubernetes.ca, "192.0.2.10", T0, &observed(&[]));
    let (r, _) = run(
        &cfg,
        &b.kubernetes.ca,
        "192.0.2.10",
        T0 + Duration::days(365 - 30 - 31),
        &observed(&files),
    );
    check(&r, &[]);
    let (r, _) = run(
        &cfg,
        &b.kubernetes.ca,
        "192.0.2.10",
        T0 + Duration::days(365 - 29),
        &observed(&files),
    );
    check(&r, &all(Renewal::Expiring));
}

#[test]
fn ca_rotation_rewrites_all_four() {
    let (_d, b) = bundle();
    let (_d2, rotated) = bundle();
    let cfg = config("");
    let (_, files) = run(&cfg, &b.kubernetes.ca, "192.0.2.10", T0, &observed(&[]));
    let (r, _) = run(
        &cfg,
        &rotated.kubernetes.ca,
        "192.0.2.10",
        T0,
        &observed(&files),
    );
    check(&r, &all(Renewal::CaChanged));
}

#[test]
fn a_server_change_rewrites_only_the_files_that_use_it() {
    let (_d, b) = bundle();
    let (_, files) = run(
        &config(""),
        &b.kubernetes.ca,
        "192.0.2.10",
        T0,
        &observed(&[]),
    );
    let (r, _) = run(
        &config("controlPlaneEndpoint: https://api.example.com:443\n"),
        &b.kubernetes.ca,
        "192.0.2.10",
        T0,
        &observed(&files),
    );
    check(
        &r,
        &[
            ("admin.conf", Renewal::ServerChanged),
            ("super-admin.conf", Renewal::ServerChanged),
        ],
    );
    let (r, _) = run(
        &config(""),
        &b.kubernetes.ca,
        "192.0.2.11",
        T0,
        &observed(&files),
    );
    check(
        &r,
        &[
            ("controller-manager.conf", Renewal::ServerChanged),
            ("scheduler.conf", Renewal::ServerChanged),
        ],
    );
    let (r, _) = run(
        &config("certificates: {keyAlgorithm: RSA-2048}\n"),
        &b.kubernetes.ca,
        "192.0.2.10",
        T0,
        &observed(&files),
    );
    check(&r, &all(Renewal::AlgorithmDrift));
}

#[test]
fn broken_files_are_rewritten_and_nothing_else() {
    let (_d, b) = bundle();
    let cfg = config("");
    let (_, files) = run(&cfg, &b.kubernetes.ca, "192.0.2.10", T0, &observed(&[]));
    let admin = String::from_utf8(files[0].1.clone()).unwrap();
    // Truncated base64 of the client certificate: decodes to a truncated PEM.
    let k = Kubeconfig::parse(&admin).unwrap();
    let data = &k.users[0].user.client_certificate_data;
    let truncated = admin.replace(data.as_str(), &data[..data.len() / 2 / 4 * 4]);
    // A kubeconfig with a token instead of a certificate.
    let token = "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:6445'}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\nusers: [{name: u, user: {token: abc}}]\n";
    // The scheduler's file with the controller-manager's identity.
    let swapped = files[2].1.clone();
    let broken = observed(&[
        ("admin.conf", truncated.into_bytes()),
        ("super-admin.conf", token.as_bytes().to_vec()),
        ("controller-manager.conf", files[2].1.clone()),
        ("scheduler.conf", b"\x00garbage".to_vec()),
    ]);
    let (r, after) = run(&cfg, &b.kubernetes.ca, "192.0.2.10", T0, &broken);
    check(
        &r,
        &[
            ("admin.conf", Renewal::Unparsable),
            ("super-admin.conf", Renewal::MissingData),
            ("scheduler.conf", Renewal::Unparsable),
        ],
    );
    assert_eq!(
        after[2].1, files[2].1,
        "the valid file is left byte-identical"
    );
    let swapped = observed(&[
        ("admin.conf", files[0].1.clone()),
        ("super-admin.conf", files[1].1.clone()),
        ("controller-manager.conf", files[2].1.clone()),
        ("scheduler.conf", swapped),
    ]);
    let (r, _) = run(&cfg, &b.kubernetes.ca, "192.0.2.10", T0, &swapped);
    check(&r, &[("scheduler.conf", Renewal::SubjectDrift)]);
}

#[test]
fn symlink_decisions() {
    let ours = || LinkObserved::Symlink {
        target: ROOT_KUBECONFIG_TARGET.into(),
        dangling: false,
    };
    let cases = [
        (true, LinkObserved::Absent, (true, LinkState::Ok)),
        (true, ours(), (true, LinkState::Ok)),
        (
            true,
            LinkObserved::Symlink {
                target: ROOT_KUBECONFIG_TARGET.into(),
                dangling: true,
            },
            (true, LinkState::Ok),
        ),
        (
            true,
            LinkObserved::Symlink {
                target: "/old/admin.conf".into(),
                dangling: true,
            },
            (true, LinkState::Ok),
        ),
        (
            true,
            LinkObserved::Symlink {
                target: "/home/me/kubeconfig".into(),
                dangling: false,
            },
            (false, LinkState::ForeignSymlink),
        ),
        (
            true,
            LinkObserved::NotASymlink,
            (false, LinkState::ForeignFile),
        ),
        (false, ours(), (false, LinkState::Disabled)),
        (false, LinkObserved::Absent, (false, LinkState::Disabled)),
        (
            false,
            LinkObserved::NotASymlink,
            (false, LinkState::Disabled),
        ),
    ];
    for (enabled, observed, expected) in cases {
        assert_eq!(
            decide_link(enabled, &observed),
            expected,
            "{enabled} {observed:?}"
        );
    }
}
