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

#[test]
fn reads_never_count_as_changes_and_writes_renames_removals_and_modes_do() {
    use notify::event::{CreateKind, MetadataKind, ModifyKind, RemoveKind, RenameMode};
    let check = |kind: EventKind, expected: bool| {
        assert_eq!(changes_inputs(&kind), expected, "{kind:?}");
    };
    check(EventKind::Access(AccessKind::Open(AccessMode::Any)), false);
    check(EventKind::Access(AccessKind::Read), false);
    check(
        EventKind::Access(AccessKind::Close(AccessMode::Read)),
        false,
    );
    check(EventKind::Access(AccessKind::Any), false);
    check(
        EventKind::Access(AccessKind::Close(AccessMode::Write)),
        true,
    );
    check(EventKind::Create(CreateKind::File), true);
    check(
        EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Any)),
        true,
    );
    check(EventKind::Modify(ModifyKind::Name(RenameMode::Both)), true);
    check(
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::Permissions)),
        true,
    );
    check(EventKind::Remove(RemoveKind::File), true);
    check(EventKind::Other, true);
}

/// Opening and reading the inputs (what every pass does) sends nothing; a write still does.
#[tokio::test]
async fn reading_inputs_sends_no_trigger_and_a_later_write_does() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("config.yaml");
    crate::apply::write_atomic(&input, b"v1", 0o600, None, None).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _watch = watch_files(std::slice::from_ref(&input), tx).unwrap();
    for _ in 0..20 {
        assert_eq!(std::fs::read(&input).unwrap(), b"v1");
        let _ = std::fs::read_dir(dir.path()).unwrap().count();
    }
    // Well past the 200 ms debounce: a read event would have been delivered by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(rx.try_recv().is_err(), "a read triggered a pass");
    crate::apply::write_atomic(&input, b"v2", 0o600, None, None).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no trigger after a write");
    assert_eq!(got, Some(Trigger::File));
}
