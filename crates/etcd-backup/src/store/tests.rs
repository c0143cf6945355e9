//! Unit tests of the backup directory: names, the sidecar check and the retention plan.

use super::*;

#[test]
fn names_round_trip_and_foreign_names_do_not_parse() {
    let time = time::macros::datetime!(2026-01-01 01:02:03);
    for (compression, name) in [
        (Compression::None, "etcd-master-1-20260101T010203Z-rev42.db"),
        (
            Compression::Zstd,
            "etcd-master-1-20260101T010203Z-rev42.db.zst",
        ),
    ] {
        let n = BackupName {
            node: "master-1".into(),
            time,
            revision: 42,
            compression,
        };
        assert_eq!(n.file_name(), name);
        assert_eq!(n.sidecar_name(), format!("{name}.json"));
        assert_eq!(BackupName::parse(&n.file_name()), Some(n));
    }
    for bad in [
        "etcd-master-1-20260101T010203Z-rev42.db.json",
        "etcd-master-1-20260101T010203Z-rev42.db.zst.json",
        "etcd-master-1-20260101T010203Z-rev42.zst",
        "etcd-master-1-20260101T010203Z-rev.db",
        "etcd-master-1-2026010T010203Z-rev1.db",
        "etcd-master-1-20261301T010203Z-rev1.db",
        "etcd-master-1-20260101T250203Z-rev1.db",
        "etcd--20260101T010203Z-rev1.db",
        "snapshot.db",
        "etcd-master-1-20260101T010203Z-rev1x.db",
    ] {
        assert_eq!(BackupName::parse(bad), None, "{bad}");
    }
}

/// Writes `bytes` as backup `name` in `dir` with a sidecar describing `described` (the file's
/// own bytes when `None`).
fn backup(dir: &Path, name: &str, bytes: &[u8], described: Option<&[u8]>) {
    let described = described.unwrap_or(bytes);
    let sidecar = Sidecar {
        file: name.to_string(),
        node: "master-1".into(),
        created: "2026-01-01T00:00:00Z".into(),
        revision: 1,
        sha256: hex(&Sha256::digest(described)),
        size: described.len() as u64,
        compression: Compression::None,
        snapshot_sha256: None,
        snapshot_size: None,
        etcd_version: "3.4.23".into(),
        member_id: "1".into(),
        duration_seconds: 0.1,
    };
    put(&dir.join(name), bytes);
    let json = serde_json::to_vec(&sidecar).expect("json");
    put(&dir.join(format!("{name}.json")), &json);
}

fn put(path: &Path, bytes: &[u8]) {
    cpm_core::apply::write_atomic(path, bytes, 0o600, None, None).expect("write");
}

fn parsed(name: &str) -> BackupName {
    BackupName::parse(name).expect("a backup name")
}

#[test]
fn only_a_file_matching_its_sidecar_is_verified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let check = |name: &str| check_against_sidecar(d, &parsed(name));

    let good = "etcd-master-1-20260101T000000Z-rev1.db";
    backup(d, good, b"snapshot bytes", None);
    assert_eq!(check(good), Ok(()));

    let same_size = "etcd-master-1-20260101T010000Z-rev2.db";
    backup(d, same_size, b"snapshot bytez", Some(b"snapshot bytes"));
    assert!(
        matches!(
            check(same_size),
            Err(Unverified::Mismatch {
                field: "sha256",
                ..
            })
        ),
        "{:?}",
        check(same_size)
    );

    let short = "etcd-master-1-20260101T020000Z-rev3.db";
    backup(d, short, b"", Some(b"snapshot bytes"));
    assert!(matches!(
        check(short),
        Err(Unverified::Mismatch { field: "size", .. })
    ));

    let bare = "etcd-master-1-20260101T030000Z-rev4.db";
    put(&d.join(bare), b"no sidecar");
    assert!(matches!(check(bare), Err(Unverified::NoSidecar { .. })));

    let garbled = "etcd-master-1-20260101T040000Z-rev5.db";
    put(&d.join(garbled), b"x");
    put(&d.join(format!("{garbled}.json")), b"{}");
    assert!(matches!(check(garbled), Err(Unverified::BadSidecar { .. })));

    // A copy renamed with its sidecar: the bytes match, the name does not.
    let renamed = "etcd-master-1-20260101T050000Z-rev6.db";
    std::fs::copy(d.join(good), d.join(renamed)).expect("copy");
    std::fs::copy(
        d.join(format!("{good}.json")),
        d.join(format!("{renamed}.json")),
    )
    .expect("copy");
    let err = check(renamed).expect_err("the sidecar names another file");
    assert!(err.to_string().contains(good), "{err}");
}

#[test]
fn the_plan_counts_and_deletes_only_verified_past_backups_and_keeps_the_new_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let old = [
        "etcd-master-1-20260101T000000Z-rev1.db",
        "etcd-master-1-20260101T060000Z-rev2.db",
    ];
    for o in old {
        backup(d, o, o.as_bytes(), None);
    }
    let unverified = "etcd-master-1-20260101T030000Z-rev9.db";
    put(&d.join(unverified), b"");
    let future = "etcd-master-1-20301231T000000Z-rev1.db";
    backup(d, future, b"verified but dated 2030", None);
    let other_node = "etcd-master-2-20250101T000000Z-rev1.db";
    put(&d.join(other_node), b"");
    // The new backup, named older than the verified ones (the clock was stepped back), and
    // an hour before "now".
    let new = parsed("etcd-master-1-20260101T050000Z-rev3.db");
    backup(d, &new.file_name(), b"new", None);
    let now = parsed("etcd-master-1-20260101T060000Z-rev0.db").time;
    let policy = Policy {
        keep: 1,
        daily: 0,
        weekly: 0,
    };

    let plan = plan_prune(d, "master-1", &policy, &new, now).expect("plan");
    assert_eq!(plan.keep, [new.file_name()]);
    assert_eq!(plan.delete, [old[1], old[0]]);
    assert_eq!(plan.future, [future]);
    assert_eq!(plan.unverified.len(), 1);
    assert_eq!(plan.unverified[0].0, unverified);

    // keep 2: the pinned one and the newest other verified backup.
    let two = Policy { keep: 2, ..policy };
    let plan = plan_prune(d, "master-1", &two, &new, now).expect("plan");
    assert_eq!(plan.keep, [old[1].to_string(), new.file_name()]);
    assert_eq!(plan.delete, [old[0]]);

    // The new backup need not exist yet (--dry-run plans with the name it would write).
    let planned = parsed("etcd-master-1-20260101T060000Z-rev4.db");
    let plan = plan_prune(d, "master-1", &policy, &planned, now).expect("plan");
    assert_eq!(plan.keep, [planned.file_name()]);
    assert_eq!(plan.delete.len(), 3);

    let deleted = apply_prune(
        d,
        &plan_prune(d, "master-1", &policy, &new, now).expect("plan"),
    )
    .expect("prune");
    assert_eq!(deleted, [old[1], old[0]]);
    for f in [unverified, future, other_node] {
        assert!(d.join(f).exists(), "{f}");
    }
    assert!(d.join(future).with_extension("db.json").exists());
    for o in old {
        assert!(
            !d.join(o).exists() && !d.join(format!("{o}.json")).exists(),
            "{o}"
        );
    }
    assert!(d.join(new.file_name()).exists());
}

#[test]
fn temp_names_are_exactly_what_a_run_makes() {
    assert!(is_temp_name(&temp_name(4242, 0xdead_beef)));
    assert!(is_temp_name(".etcd-backup-1-0000000a.tmp"));
    for other in [
        ".etcd-backup-status.json",
        "..etcd-backup-status.json.cpm-tmp-1-00000000",
        ".etcd-backup-notes.tmp",
        ".etcd-backup--deadbeef.tmp",
        ".etcd-backup-1-deadbee.tmp",
        ".etcd-backup-1-deadbeefa.tmp",
        ".etcd-backup-x1-deadbeef.tmp",
        ".etcd-backup-1-deadbeeg.tmp",
        "etcd-backup-1-deadbeef.tmp",
        ".etcd-backup-1-deadbeef.tmp.json",
    ] {
        assert!(!is_temp_name(other), "{other}");
    }
}

#[test]
fn only_old_unlocked_temp_files_are_swept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let now = std::time::SystemTime::now();
    let hour_ago = now - std::time::Duration::from_secs(3600);
    let make = |name: &str, modified| {
        put(&d.join(name), b"partial");
        let f = std::fs::File::options()
            .write(true)
            .open(d.join(name))
            .expect("open");
        f.set_modified(modified).expect("mtime");
    };
    let crashed = temp_name(1, 1);
    make(&crashed, hour_ago);
    let live = temp_name(2, 2);
    make(&live, hour_ago);
    let fresh = temp_name(3, 3);
    make(&fresh, now);
    let look_alike = ".etcd-backup-notes.tmp";
    make(look_alike, hour_ago);
    let held = std::fs::File::open(d.join(&live)).expect("open");
    held.lock().expect("lock");

    assert_eq!(
        sweep_temp_files(d, now, false).expect("sweep"),
        [crashed.as_str()]
    );
    assert!(d.join(&crashed).exists(), "a dry sweep removes nothing");
    assert_eq!(
        sweep_temp_files(d, now, true).expect("sweep"),
        [crashed.as_str()]
    );
    assert!(!d.join(&crashed).exists());
    for kept in [&live, &fresh, look_alike] {
        assert!(d.join(kept).exists(), "{kept}");
    }
    drop(held);
    assert_eq!(
        sweep_temp_files(d, now, true).expect("sweep"),
        [live.as_str()]
    );
}
