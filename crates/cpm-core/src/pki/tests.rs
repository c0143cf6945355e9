//! Tests of key generation, issuance and inspection.

use super::*;

fn now() -> OffsetDateTime {
    time::macros::datetime!(2026-01-01 00:00 UTC)
}

fn ca(alg: KeyAlgorithm) -> (Ca, String) {
    let key = Key::generate(alg).unwrap();
    let pem = CertSpec::new("test-ca", Usage::Ca, now(), 3650)
        .self_signed(&key)
        .unwrap();
    (Ca::from_pem(&pem, &key.to_pem()).unwrap(), pem)
}

#[test]
fn every_algorithm_issues_and_reads_back() {
    for alg in KeyAlgorithm::ALL {
        let (ca, _) = ca(alg);
        assert_eq!(ca.info().key_algorithm, Some(alg));
        assert!(ca.info().is_ca);
        let key = Key::generate(alg).unwrap();
        assert_eq!(key.algorithm(), Some(alg));
        let mut spec = CertSpec::new("kube-apiserver", Usage::Server, now(), 365);
        spec.sans = vec!["kubernetes".parse().unwrap(), "10.96.0.1".parse().unwrap()];
        let info = inspect(ca.issue(&spec, &key).unwrap().as_bytes()).unwrap();
        assert_eq!(info.common_name, "kube-apiserver");
        assert_eq!(info.issuer_common_name, "test-ca");
        assert_eq!(
            info.sans(),
            vec!["kubernetes".parse().unwrap(), "10.96.0.1".parse().unwrap()]
        );
        assert_eq!(info.key_algorithm, Some(alg));
        assert_eq!(info.spki_der, key.spki_der());
        assert_eq!(info.ext_key_usages, vec!["serverAuth"]);
        assert_eq!(info.key_usages, Usage::Server.key_usages(alg));
        assert_eq!(
            info.not_after - info.not_before,
            Duration::days(365) + BACKDATE
        );
        assert!(!info.is_ca);
        assert!(ca.signed(&info), "{alg}");
    }
}

#[test]
fn another_ca_did_not_sign() {
    let (a, _) = ca(KeyAlgorithm::EcdsaP256);
    let (b, _) = ca(KeyAlgorithm::EcdsaP256);
    let key = Key::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let leaf = inspect(
        a.issue(&CertSpec::new("x", Usage::Client, now(), 1), &key)
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    assert!(a.signed(&leaf));
    assert!(
        !b.signed(&leaf),
        "same subject name, other key: must not verify"
    );
}

#[test]
fn ca_loading_checks_key_and_ca_flag() {
    let (_, pem) = ca(KeyAlgorithm::EcdsaP256);
    let other = Key::generate(KeyAlgorithm::EcdsaP256).unwrap();
    assert!(matches!(
        Ca::from_pem(&pem, &other.to_pem()),
        Err(PkiError::KeyMismatch)
    ));
    let key = Key::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let leaf = CertSpec::new("leaf", Usage::Client, now(), 1)
        .self_signed(&key)
        .unwrap();
    assert!(matches!(
        Ca::from_pem(&leaf, &key.to_pem()),
        Err(PkiError::NotCa)
    ));
    assert!(matches!(
        Ca::from_pem("garbage", &key.to_pem()),
        Err(PkiError::ParseCert(_))
    ));
    assert!(matches!(
        Key::from_pem("garbage"),
        Err(PkiError::ParseKey(_))
    ));
}

#[test]
fn organizations_and_serials() {
    let (ca, _) = ca(KeyAlgorithm::EcdsaP256);
    let key = Key::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let mut spec = CertSpec::new("kube-apiserver-kubelet-client", Usage::Client, now(), 365);
    spec.organizations = vec!["kubeadm:cluster-admins".into()];
    let a = inspect(ca.issue(&spec, &key).unwrap().as_bytes()).unwrap();
    let b = inspect(ca.issue(&spec, &key).unwrap().as_bytes()).unwrap();
    assert_eq!(a.organizations, vec!["kubeadm:cluster-admins"]);
    assert_ne!(a.serial, b.serial, "serials are random");
}

#[test]
fn key_debug_is_redacted() {
    let key = Key::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let dbg = format!("{key:?}");
    assert!(
        dbg.contains("redacted") && !dbg.contains("PRIVATE"),
        "{dbg}"
    );
}
