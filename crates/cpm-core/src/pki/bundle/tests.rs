//! Tests of CA bundle generation, loading and validation errors.

use super::*;
use crate::apply::write_atomic;

fn write_bundle(dir: &Path, alg: KeyAlgorithm) -> Vec<(BundleFile, Vec<u8>)> {
    let files = generate(alg, OffsetDateTime::now_utc(), 10).unwrap();
    for (f, bytes) in &files {
        write_atomic(&dir.join(f.name), bytes, f.mode, None, None).unwrap();
    }
    files
}

fn check_error(dir: &Path, expected: &str) {
    let err = CaBundle::load(dir).unwrap_err();
    let text = crate::exit::chain(&err);
    assert!(
        text.contains(expected),
        "{text:?} should contain {expected:?}"
    );
}

#[test]
fn generated_bundle_loads_byte_identical() {
    let d = tempfile::tempdir().unwrap();
    let files = write_bundle(d.path(), KeyAlgorithm::EcdsaP256);
    let b = CaBundle::load(d.path()).unwrap();
    for ((f, want), (g, got)) in files.iter().zip(b.contents()) {
        assert_eq!(f, g);
        assert_eq!(want.as_slice(), got, "{}", f.name);
    }
    assert_eq!(b.etcd.ca.info().common_name, "etcd-ca");
}

#[test]
fn kubeadm_layout_is_accepted() {
    let d = tempfile::tempdir().unwrap();
    let files = generate(KeyAlgorithm::Rsa2048, OffsetDateTime::now_utc(), 10).unwrap();
    std::fs::create_dir(d.path().join("etcd")).unwrap();
    for (f, bytes) in &files {
        write_atomic(&d.path().join(f.installed), bytes, f.mode, None, None).unwrap();
    }
    let b = CaBundle::load(d.path()).unwrap();
    assert_eq!(
        b.kubernetes.ca.info().key_algorithm,
        Some(KeyAlgorithm::Rsa2048)
    );
}

#[test]
fn errors_name_the_file() {
    let d = tempfile::tempdir().unwrap();
    check_error(
        &d.path().join("absent"),
        "absent: CA bundle directory is missing or unreadable",
    );
    write_bundle(d.path(), KeyAlgorithm::EcdsaP256);
    let other = tempfile::tempdir().unwrap();
    let other_files = write_bundle(other.path(), KeyAlgorithm::EcdsaP256);

    // A CA key from another bundle.
    write_atomic(
        &d.path().join("ca.key"),
        &other_files[1].1,
        0o600,
        None,
        None,
    )
    .unwrap();
    check_error(
        d.path(),
        &format!(
            "{}: does not match {}",
            d.path().join("ca.key").display(),
            d.path().join("ca.crt").display()
        ),
    );
    // Garbage certificate.
    write_bundle(d.path(), KeyAlgorithm::EcdsaP256);
    write_atomic(
        &d.path().join("etcd-ca.crt"),
        b"not a cert",
        0o644,
        None,
        None,
    )
    .unwrap();
    check_error(
        d.path(),
        &format!(
            "{}: invalid: caused by: not a PEM X.509 certificate",
            d.path().join("etcd-ca.crt").display()
        ),
    );
    // Missing file.
    write_bundle(d.path(), KeyAlgorithm::EcdsaP256);
    std::fs::remove_file(d.path().join("front-proxy-ca.key")).unwrap();
    check_error(
        d.path(),
        &format!(
            "{}: cannot read CA bundle file",
            d.path().join("front-proxy-ca.key").display()
        ),
    );
    // sa.pub of another key.
    write_bundle(d.path(), KeyAlgorithm::EcdsaP256);
    write_atomic(
        &d.path().join("sa.pub"),
        &other_files[7].1,
        0o600,
        None,
        None,
    )
    .unwrap();
    check_error(d.path(), "sa.key: does not match");
    // A leaf certificate where a CA must be.
    write_bundle(d.path(), KeyAlgorithm::EcdsaP256);
    let key = Key::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let leaf = CertSpec::new("leaf", Usage::Client, OffsetDateTime::now_utc(), 1)
        .self_signed(&key)
        .unwrap();
    write_atomic(&d.path().join("ca.crt"), leaf.as_bytes(), 0o644, None, None).unwrap();
    write_atomic(
        &d.path().join("ca.key"),
        key.to_pem().as_bytes(),
        0o600,
        None,
        None,
    )
    .unwrap();
    check_error(
        d.path(),
        "ca.crt: invalid: caused by: the certificate is not a CA",
    );
}
