//! Tests of config parsing, defaults and validation errors.

use super::*;

const HEAD: &str =
    "apiVersion: cpm.dev/v1alpha1\nkind: ControlPlaneConfiguration\nkubernetesVersion: \"1.33\"\n";

fn parse(extra: &str) -> Result<ControlPlaneConfiguration, ConfigError> {
    ControlPlaneConfiguration::parse(&format!("{HEAD}{extra}"), Path::new("/config/c.yaml"))
}

/// Parses `extra` after the required header and checks the error text (or success when `None`).
fn check(extra: &str, expected_error: Option<&str>) {
    match (parse(extra), expected_error) {
        (Ok(_), None) => {}
        (Err(e), Some(want)) => {
            let got = e.to_string();
            assert!(got.contains(want), "error {got:?} should contain {want:?}");
            assert!(
                got.starts_with("/config/c.yaml: "),
                "error {got:?} should name the file"
            );
        }
        (Ok(_), Some(want)) => panic!("expected an error containing {want:?} for {extra:?}"),
        (Err(e), None) => panic!("unexpected error for {extra:?}: {e}"),
    }
}

#[test]
fn minimal_document_gets_the_documented_defaults() {
    let cfg = parse("").unwrap();
    assert_eq!(
        cfg.kubernetes_version,
        KubernetesMinor {
            major: 1,
            minor: 33
        }
    );
    assert_eq!(cfg.image_repository, "registry.k8s.io");
    assert_eq!(cfg.cluster_domain.as_str(), "cluster.local");
    assert_eq!(cfg.service_subnet.to_string(), "10.96.0.0/12");
    assert_eq!(cfg.first_service_ip().to_string(), "10.96.0.1");
    assert_eq!(cfg.certificates.key_algorithm, KeyAlgorithm::EcdsaP256);
    assert_eq!(cfg.certificates.validity_days, 365);
    assert_eq!(cfg.etcd.quota_backend_bytes, Quota::Auto);
    assert_eq!(cfg.etcd.backup.keep, 7);
    assert_eq!(cfg.api_proxy.listen.to_string(), "127.0.0.1:6445");
    assert_eq!(cfg.apiserver.audit_policy.mode, AuditMode::Basic);
    assert!(cfg.root_kubeconfig_symlink);
    assert_eq!(
        cfg.control_plane_endpoint().as_str(),
        "https://127.0.0.1:6445"
    );
    let cfg = parse("apiProxy: {listen: \"[::1]:7445\"}\n").unwrap();
    assert_eq!(cfg.control_plane_endpoint().as_str(), "https://[::1]:7445");
    let cfg = parse("controlPlaneEndpoint: https://api.example.com:443/\n").unwrap();
    assert_eq!(
        cfg.control_plane_endpoint().as_str(),
        "https://api.example.com:443"
    );
}

#[test]
fn example_from_the_docs_parses() {
    let text = include_str!("../../../../docs/examples/control-plane.yaml");
    let cfg = ControlPlaneConfiguration::parse(text, Path::new("example")).unwrap();
    assert_eq!(cfg.apiserver.cert_sans.len(), 2);
    assert_eq!(
        cfg.apiserver.cert_sans[1],
        San::Ip("203.0.113.10".parse().unwrap())
    );
}

#[test]
fn errors_name_the_field() {
    check("bogus: 1\n", Some("bogus: unknown field `bogus`"));
    check(
        "apiserver: {certSANs: [ok.example.com, \"bad name!\"]}\n",
        Some("apiserver.certSANs[1]: \"bad name!\" is neither"),
    );
    check(
        "apiserver: {extraArgs: {a: b}, nope: true}\n",
        Some("apiserver.nope: unknown field `nope`"),
    );
    check(
        "serviceSubnet: 10.96.0.0/33\n",
        Some("serviceSubnet: \"10.96.0.0/33\" is not a CIDR"),
    );
    check(
        "serviceSubnet: 10.96.0.1/12\n",
        Some("serviceSubnet: \"10.96.0.1/12\" has host bits set"),
    );
    check(
        "podSubnet: 10.96.0.0/16\n",
        Some("podSubnet: overlaps serviceSubnet"),
    );
    check(
        "certificates: {keyAlgorithm: DSA}\n",
        Some("certificates.keyAlgorithm: unknown variant `DSA`"),
    );
    check(
        "certificates: {validityDays: 30, renewBeforeDays: 30}\n",
        Some("certificates.renewBeforeDays: must be less than validityDays"),
    );
    check(
        "certificates: {validityDays: -1}\n",
        Some("certificates.validityDays"),
    );
    check(
        "etcd: {quotaBackendBytes: lots}\n",
        Some("etcd.quotaBackendBytes"),
    );
    check(
        "etcd: {quotaBackendBytes: 1024}\n",
        Some("etcd.quotaBackendBytes: must be between"),
    );
    check("etcd: {quotaBackendBytes: 4294967296}\n", None);
    check(
        "etcd: {backup: {directory: rel/dir}}\n",
        Some("etcd.backup.directory: must be an absolute path"),
    );
    check(
        "apiserver: {auditPolicy: {mode: Custom}}\n",
        Some("apiserver.auditPolicy.file: is required"),
    );
    check(
        "apiserver: {auditPolicy: {mode: Custom, file: /etc/audit.yaml}}\n",
        None,
    );
    for secret in [
        "/etc/kubernetes/pki/apiserver.key",
        "/etc/kubernetes/pki/etcd/ca.key",
        "/etc/kubernetes/super-admin.conf",
        "/etc/kubernetes/cpm/encryption-config.yaml",
        "/etc/kubernetes/audit/../pki/sa.key",
    ] {
        check(
            &format!("apiserver: {{auditPolicy: {{mode: Custom, file: {secret}}}}}\n"),
            Some("apiserver.auditPolicy.file: "),
        );
        assert!(
            parse(&format!(
                "apiserver: {{auditPolicy: {{mode: Custom, file: {secret}}}}}\n"
            ))
            .unwrap_err()
            .to_string()
            .contains("holds keys or credentials"),
            "{secret}"
        );
    }
    check(
        "clusterDomain: \"*.example\"\n",
        Some("clusterDomain: must not be a wildcard"),
    );
    let longest = format!(
        "{}.{}.{}.{}",
        "a".repeat(57),
        "b".repeat(57),
        "c".repeat(57),
        "d".repeat(56)
    );
    assert_eq!(longest.len(), 230);
    check(&format!("clusterDomain: {longest}\n"), None);
    check(
        &format!("clusterDomain: {longest}e\n"),
        Some("clusterDomain: is 231 characters; at most 230"),
    );
    check(
        "apiProxy: {listen: \"127.0.0.1\"}\n",
        Some("apiProxy.listen"),
    );
}

#[test]
fn identity_and_version_are_checked() {
    let file = Path::new("f.yaml");
    let err = ControlPlaneConfiguration::parse(
        "apiVersion: v1\nkind: ControlPlaneConfiguration\nkubernetesVersion: \"1.33\"\n",
        file,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("apiVersion: must be \"cpm.dev/v1alpha1\""),
        "{err}"
    );
    let err = ControlPlaneConfiguration::parse("apiVersion: cpm.dev/v1alpha1\nkind: ControlPlaneConfiguration\nkubernetesVersion: \"2.1\"\n", file).unwrap_err();
    assert!(
        err.to_string()
            .contains("kubernetesVersion: \"2.1\" is not a Kubernetes minor"),
        "{err}"
    );
    let err = ControlPlaneConfiguration::parse(
        "apiVersion: cpm.dev/v1alpha1\nkind: ControlPlaneConfiguration\n",
        file,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("missing field `kubernetesVersion`"),
        "{err}"
    );
}

#[test]
fn malformed_yaml_and_empty_documents_are_refused() {
    let err = parse("apiserver: [unclosed\n").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
    assert!(
        err.to_string().starts_with("/config/c.yaml: invalid YAML"),
        "{err}"
    );
    let err = ControlPlaneConfiguration::parse("", Path::new("e.yaml")).unwrap_err();
    assert!(err.to_string().contains("the document is empty"), "{err}");
}

#[test]
fn sans_and_names_parse_strictly() {
    assert_eq!(
        "*.example.com".parse::<San>().unwrap().to_string(),
        "*.example.com"
    );
    assert_eq!(
        "API.Example.com".parse::<San>().unwrap().to_string(),
        "api.example.com"
    );
    assert_eq!(
        "::1".parse::<San>().unwrap(),
        San::Ip("::1".parse().unwrap())
    );
    for bad in ["", "-a.com", "a..b", "a_b.com", "*", "a.*.com"] {
        assert!(bad.parse::<San>().is_err(), "{bad:?} should be refused");
    }
}

#[test]
fn errors_never_echo_the_content_of_the_file() {
    let key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";
    for text in [
        key.to_string(),
        format!("{HEAD}clusterName: [\nSECRETVALUE: x: y\n"),
        format!("{HEAD}clusterName: {{nested: SECRETVALUE}}\n"),
    ] {
        let err = ControlPlaneConfiguration::parse(&text, Path::new("/config/c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/config/c.yaml: "), "{err}");
        assert!(
            !err.contains("MIGHAgEA") && !err.contains("SECRETVALUE"),
            "the error echoes the file: {err}"
        );
    }
}
