//! Tests of watch-directory selection and change delivery.

use super::*;

#[test]
fn watches_parents_and_nearest_existing_ancestors() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    std::fs::create_dir_all(base.join("pki")).unwrap();
    let dirs = watch_dirs(&[
        base.join("pki"),
        base.join("config/config.yaml"),
        base.join("pki/ca.crt"),
        base.join("a/b/c/file"),
    ]);
    assert_eq!(dirs, vec![base.to_path_buf(), base.join("pki")]);
}

#[tokio::test]
async fn an_atomic_replace_of_an_input_triggers_a_pass() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("config.yaml");
    crate::apply::write_atomic(&input, b"v1", 0o600, None, None).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _watch = watch_files(std::slice::from_ref(&input), tx).unwrap();
    crate::apply::write_atomic(&input, b"v2", 0o600, None, None).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no trigger");
    assert_eq!(got, Some(Trigger::File));
}
