//! Unit tests of the command line and the flag parsers.

use std::ffi::OsString;
use std::time::Duration;

use super::cli::{Command, args, try_parse_from};
use super::*;

fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

#[test]
fn a_link_named_after_a_component_runs_that_component() {
    let check = |argv: &[&str], expected: &[&str]| assert_eq!(args(os(argv)), os(expected));
    check(
        &["/usr/local/bin/kube-apiserver", "--secure-port=6443"],
        &["cpm-test-apiserver", "kube-apiserver", "--secure-port=6443"],
    );
    check(
        &["kube-scheduler"],
        &["cpm-test-apiserver", "kube-scheduler"],
    );
    check(
        &["./cpm-test-apiserver", "store", "--help"],
        &["./cpm-test-apiserver", "store", "--help"],
    );
}

#[test]
fn go_flag_syntax_is_accepted() {
    let cli = try_parse_from(os(&[
        "kube-apiserver",
        "--secure-port",
        "7443",
        "--bind-address=127.0.0.2",
        "--anonymous-auth=false",
        "--allow-privileged",
        "--profiling=false",
        "--requestheader-allowed-names=a,b",
        "-v=2",
        "--secure-port=8443",
    ]))
    .unwrap();
    let Command::KubeApiserver(a) = cli.command else {
        panic!("not kube-apiserver");
    };
    assert_eq!(a.secure_port, 8443, "the last of a repeated flag wins");
    assert_eq!(a.bind_address.to_string(), "127.0.0.2");
    assert_eq!(a.anonymous_auth, Some(false));
    assert_eq!(a.requestheader_allowed_names, ["a", "b"]);
}

#[test]
fn unknown_flags_are_usage_errors_naming_the_flag() {
    for (component, flag) in [
        ("kube-apiserver", "--tls-cert-fil=/x"),
        ("kube-controller-manager", "--config=/x"),
        ("kube-scheduler", "--cluster-name=x"),
        ("kube-apiserver", "--allow-privileged=maybe"),
    ] {
        let err = try_parse_from(os(&[component, flag])).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{component} {flag}");
        let name = flag.split('=').next().unwrap();
        let shown = err.to_string();
        assert!(
            shown.contains(name) || shown.contains("maybe"),
            "{component} {flag}: {shown}"
        );
    }
}

#[test]
fn go_durations_and_booleans() {
    for (text, d) in [
        ("15s", Duration::from_secs(15)),
        ("1m30s", Duration::from_secs(90)),
        ("500ms", Duration::from_millis(500)),
        ("2h", Duration::from_secs(7200)),
        ("0", Duration::ZERO),
    ] {
        assert_eq!(parse_go_duration(text).unwrap(), d, "{text}");
    }
    for bad in ["", "15", "1x", "s"] {
        assert!(parse_go_duration(bad).is_err(), "{bad}");
    }
    for (text, b) in [
        ("true", true),
        ("T", true),
        ("1", true),
        ("False", false),
        ("0", false),
    ] {
        assert_eq!(parse_go_bool(text).unwrap(), b);
    }
    assert!(parse_go_bool("yes").is_err());
}

#[test]
fn the_scheduler_configuration_decides_its_election() {
    let cli = try_parse_from(os(&["kube-scheduler", "--leader-elect=false"])).unwrap();
    let Command::KubeScheduler(s) = cli.command else {
        panic!("not kube-scheduler");
    };
    let config = serde_json::json!({
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": "/etc/kubernetes/scheduler.conf"},
        "leaderElection": {"leaderElect": true, "leaseDuration": "20s", "resourceName": "sched"},
    });
    let e = standin::election(
        &standin::Component::Scheduler,
        &s.common,
        Some(&config),
        None,
    )
    .unwrap();
    assert!(e.enabled);
    assert_eq!(
        e.kubeconfig.as_deref(),
        Some(std::path::Path::new("/etc/kubernetes/scheduler.conf"))
    );
    let root = std::path::Path::new("/tmp/m1");
    let e = standin::election(
        &standin::Component::Scheduler,
        &s.common,
        Some(&config),
        Some(root),
    )
    .unwrap();
    assert_eq!(
        e.kubeconfig.as_deref(),
        Some(std::path::Path::new(
            "/tmp/m1/etc/kubernetes/scheduler.conf"
        ))
    );
    assert_eq!(e.lease_duration, Duration::from_secs(20));
    assert_eq!(e.renew_deadline, Duration::from_secs(10));
    assert_eq!(
        (e.name.as_str(), e.namespace.as_str()),
        ("sched", "kube-system")
    );
    let e = standin::election(&standin::Component::Scheduler, &s.common, None, None).unwrap();
    assert!(!e.enabled);
    assert_eq!(e.name, "kube-scheduler");
}

#[test]
fn tls_flags_map_to_rustls() {
    assert_eq!(serving::versions(Some("VersionTLS13")).unwrap().len(), 1);
    assert_eq!(serving::versions(Some("VersionTLS12")).unwrap().len(), 2);
    assert!(matches!(
        serving::versions(Some("TLS1.2")),
        Err(ControlPlaneError::Usage(_))
    ));
    let suites: Vec<String> = [
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
    ]
    .map(String::from)
    .into();
    let p = serving::provider(&suites).unwrap();
    let tls12 = p
        .cipher_suites
        .iter()
        .filter(|s| s.version() == &rustls::version::TLS12)
        .count();
    assert_eq!(tls12, 2);
    assert!(serving::provider(&["TLS_RSA_WITH_RC4_128_SHA".to_string()]).is_err());
}

#[test]
fn the_kubernetes_endpoints_list_the_fronts_renewed_within_the_ttl() {
    use std::net::IpAddr;
    let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let a = endpoints::Identity::new(ip("127.0.41.2"), 6443);
    let b = endpoints::Identity::new(ip("127.0.41.1"), 6443);
    assert_ne!(a.lease, b.lease);
    assert_eq!(
        a.lease,
        endpoints::Identity::new(ip("127.0.41.2"), 6443).lease
    );
    let leases = [
        endpoints::lease(&a, now - Duration::from_secs(14)),
        endpoints::lease(&b, now - Duration::from_secs(1)),
        endpoints::lease(
            &endpoints::Identity::new(ip("127.0.41.3"), 6443),
            now - Duration::from_secs(16),
        ),
    ];
    let alive = endpoints::alive(&leases, now);
    assert_eq!(
        alive,
        [(ip("127.0.41.1"), 6443), (ip("127.0.41.2"), 6443)],
        "sorted, the stale one dropped"
    );
    let slice = endpoints::endpoint_slice(&alive);
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["endpoints"][1]["addresses"][0], "127.0.41.2");
    assert_eq!(slice["ports"][0]["port"], 6443);
    assert_eq!(
        slice["metadata"]["labels"]["kubernetes.io/service-name"],
        "kubernetes"
    );
    assert_eq!(
        endpoints::first_service_ip("10.96.0.0/12"),
        Some(ip("10.96.0.1"))
    );
    assert_eq!(
        endpoints::first_service_ip("fd00::/108,10.0.0.0/16"),
        Some(ip("fd00::1"))
    );
    assert_eq!(endpoints::first_service_ip("bogus"), None);
}
