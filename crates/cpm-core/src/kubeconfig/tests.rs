//! Tests of kubeconfig rendering and tolerant parsing.

use super::*;

#[test]
fn render_round_trips_and_is_deterministic() {
    let a = render(
        "kubernetes",
        "https://10.0.0.1:6443",
        "CA-PEM",
        "system:kube-scheduler",
        "CERT",
        "KEY",
    );
    assert_eq!(
        a,
        render(
            "kubernetes",
            "https://10.0.0.1:6443",
            "CA-PEM",
            "system:kube-scheduler",
            "CERT",
            "KEY"
        )
    );
    let k = Kubeconfig::parse(&a).unwrap();
    assert_eq!(k.current_context, "system:kube-scheduler@kubernetes");
    let (c, u) = k.current().unwrap();
    assert_eq!(c.ca().unwrap(), b"CA-PEM");
    assert_eq!(u.client_certificate().unwrap(), b"CERT");
    assert!(
        a.contains("certificate-authority-data:") && a.contains("current-context:"),
        "{a}"
    );
    assert!(!format!("{u:?}").contains("KEY"), "Debug redacts the key");
}

#[test]
fn parsing_tolerates_foreign_fields_and_reports_garbage() {
    let text = "apiVersion: v1\nkind: Config\npreferences: {}\nclusters:\n- name: c\n  cluster: {server: 'https://x:1', insecure-skip-tls-verify: true}\ncontexts:\n- name: ctx\n  context: {cluster: c, user: u, namespace: n}\ncurrent-context: ctx\nusers:\n- name: u\n  user: {token: abc}\n";
    let k = Kubeconfig::parse(text).unwrap();
    let (c, u) = k.current().unwrap();
    assert_eq!(c.server, "https://x:1");
    assert_eq!(c.ca(), None);
    assert_eq!(u.client_certificate(), None);
    assert!(Kubeconfig::parse("clusters: [unclosed").is_err());
    assert!(
        Kubeconfig::parse("apiVersion: v1\nkind: Config\n")
            .unwrap()
            .current()
            .is_none()
    );
}
