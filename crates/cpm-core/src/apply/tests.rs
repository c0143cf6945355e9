//! Tests of atomic writes, crash safety and backups.

use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::fileset::{DesiredFile, FileSet};
use crate::plan::plan;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn write_atomic_sets_mode_and_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    write_atomic(&p, b"one", 0o600, None, None).unwrap();
    assert_eq!(mode(&p), 0o600);
    write_atomic(&p, b"two", 0o644, None, None).unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"two");
    assert_eq!(mode(&p), 0o644);
    assert_eq!(entries(dir.path()), vec!["f"]);
}

#[test]
fn failure_before_rename_leaves_old_file_and_no_temp() {
    let dir = tempfile::tempdir().unwrap();
    let root = NodeRoot::new(dir.path());
    let mut set = FileSet::new();
    set.file(DesiredFile::new("etc/a.key", b"old".to_vec(), 0o600))
        .unwrap();
    apply(&root, &plan(&root, &set).unwrap(), &ApplyOptions::default()).unwrap();

    let mut set = FileSet::new();
    set.file(DesiredFile::new("etc/a.key", b"new".to_vec(), 0o600))
        .unwrap();
    let crash: &BeforeRename = &|tmp: &Path| {
        assert!(tmp.exists(), "the temp file is complete before the rename");
        Err(io::Error::other("injected crash"))
    };
    let opts = ApplyOptions {
        backup: None,
        before_rename: Some(crash),
    };
    let err = apply(&root, &plan(&root, &set).unwrap(), &opts).unwrap_err();
    assert!(err.to_string().starts_with("cannot replace "), "{err}");
    assert_eq!(fs::read(dir.path().join("etc/a.key")).unwrap(), b"old");
    assert_eq!(
        entries(&dir.path().join("etc")),
        vec!["a.key"],
        "no temp file is left behind"
    );
}

#[test]
fn backups_keep_old_content_and_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let root = NodeRoot::new(dir.path());
    for (i, generation) in [
        "20260101T000000Z",
        "20260102T000000Z",
        "20260103T000000Z",
        "20260103T000000Z",
    ]
    .iter()
    .enumerate()
    {
        let mut set = FileSet::new();
        set.file(DesiredFile::new(
            "etc/c.conf",
            format!("v{i}").into_bytes(),
            0o600,
        ))
        .unwrap();
        let policy = BackupPolicy {
            dir: "bk".into(),
            generation: (*generation).into(),
            keep: 2,
        };
        let opts = ApplyOptions {
            backup: Some(policy),
            before_rename: None,
        };
        apply(&root, &plan(&root, &set).unwrap(), &opts).unwrap();
    }
    let base = dir.path().join("bk");
    assert_eq!(
        entries(&base),
        vec!["20260103T000000Z", "20260103T000000Z-1"]
    );
    assert_eq!(
        fs::read(base.join("20260103T000000Z-1/etc/c.conf")).unwrap(),
        b"v2"
    );
    assert_eq!(mode(&base), 0o700);
    assert_eq!(mode(&base.join("20260103T000000Z-1/etc/c.conf")), 0o600);
}

#[test]
fn second_apply_changes_nothing_not_even_mtimes() {
    let dir = tempfile::tempdir().unwrap();
    let root = NodeRoot::new(dir.path());
    let mut set = FileSet::new();
    set.dir("d", 0o750).unwrap();
    set.file(DesiredFile::new("d/f", b"x".to_vec(), 0o640))
        .unwrap();
    apply(&root, &plan(&root, &set).unwrap(), &ApplyOptions::default()).unwrap();
    let before = fs::metadata(dir.path().join("d/f"))
        .unwrap()
        .modified()
        .unwrap();
    let p = plan(&root, &set).unwrap();
    assert!(p.is_empty(), "{p:?}");
    assert_eq!(
        apply(&root, &p, &ApplyOptions::default()).unwrap().applied,
        0
    );
    assert_eq!(
        fs::metadata(dir.path().join("d/f"))
            .unwrap()
            .modified()
            .unwrap(),
        before
    );
    assert_eq!(mode(&dir.path().join("d")), 0o750);
}
