//! Retention against real etcd when the directory holds more than this tool's own verified
//! backups: files named as this node's backups that are dated in the future or that do not
//! match a sidecar are neither counted nor deleted, the snapshot just written is never pruned,
//! and the status file names a backup that exists.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;
use time::OffsetDateTime;

use cpm_testing::process::{stderr, stdout};

use crate::{NODE, check_ok, json, names, node, sha256_hex, written};

/// `etcd-<NODE>-<time>-rev<rev>.db` for a time `offset` from now (UTC, to the second).
fn name_at(offset: time::Duration, rev: u32) -> String {
    let t = OffsetDateTime::now_utc() + offset;
    let ts = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    format!("etcd-{NODE}-{ts}-rev{rev}.db")
}

fn put(path: &Path, bytes: &[u8]) {
    cpm_core::apply::write_atomic(path, bytes, 0o600, None, None).expect("write");
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn sidecar_of(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_never_prunes_the_new_backup_and_counts_only_verified_backups_of_the_past()
-> anyhow::Result<()> {
    let Some(n) = node("127.0.6.12") else {
        return Ok(());
    };
    let dir = n.backups();
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let mut client = n.client().await;
    client.put("k", "1", None).await?;

    // The reproduction: an empty file dated a year ahead, no sidecar.
    let empty_future = name_at(time::Duration::days(365), 1);
    put(&dir.join(&empty_future), b"");
    // A stale backup whose sidecar does not match (a lying or damaged file), and one without a
    // sidecar (a crash between rename and sidecar, or someone's copy): both dated in the past.
    let lying = format!("etcd-{NODE}-20200101T000000Z-rev1.db");
    put(&dir.join(&lying), b"not the bytes the sidecar describes");
    let no_sidecar = format!("etcd-{NODE}-20200102T000000Z-rev2.db");
    put(&dir.join(&no_sidecar), b"no sidecar");

    let first = n.snapshot(&["--keep", "1"], None).await;
    check_ok(&first);
    let first = written(&first);
    assert!(first.exists(), "the snapshot just written is never pruned");
    // The directory was made 0755 above (as the kubelet makes a hostPath directory): it holds
    // every secret of the cluster, so etcd-backup sets it to 0700.
    let mode = std::fs::metadata(&dir)?.permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "backup directory mode {mode:o}");

    // A sidecar describing other bytes for the lying file (copied from the real backup).
    let mut lie = json(&sidecar_of(&dir, &file_name(&first)));
    lie["file"] = Value::from(lying.clone());
    put(&sidecar_of(&dir, &lying), lie.to_string().as_bytes());
    // A real, verified backup renamed to a date beyond the skew allowance: verified, but its
    // name cannot be trusted for ordering; it is kept and not counted.
    let verified_future = name_at(time::Duration::days(30), 3);
    std::fs::copy(&first, dir.join(&verified_future))?;
    let mut sc = json(&sidecar_of(&dir, &file_name(&first)));
    sc["file"] = Value::from(verified_future.clone());
    put(
        &sidecar_of(&dir, &verified_future),
        sc.to_string().as_bytes(),
    );

    client.put("k", "2", None).await?;
    let out = n.snapshot(&["--keep", "1"], None).await;
    check_ok(&out);
    let second = written(&out);
    let log = stderr(&out);
    for f in [&empty_future, &verified_future, &lying, &no_sidecar] {
        assert!(
            log.contains(f.as_str()),
            "{f} is reported in the log: {log}"
        );
    }
    assert!(second.exists(), "the snapshot just written is never pruned");
    assert!(sidecar_of(&dir, &file_name(&second)).exists());
    assert!(
        !first.exists(),
        "the older verified backup is the one --keep 1 prunes"
    );
    assert!(!sidecar_of(&dir, &file_name(&first)).exists());
    for f in [&empty_future, &verified_future, &lying, &no_sidecar] {
        assert!(
            dir.join(f).exists(),
            "{f} is never deleted: {:?}",
            names(&dir)
        );
    }
    assert_eq!(std::fs::read(dir.join(&empty_future))?, b"");

    let status = json(&dir.join(".etcd-backup-status.json"));
    let last = status["lastSuccess"]["file"]
        .as_str()
        .context("lastSuccess")?;
    assert_eq!(last, file_name(&second));
    assert!(
        dir.join(last).exists(),
        "lastSuccess names a file that exists"
    );
    assert_eq!(
        status["lastSuccess"]["sizeBytes"],
        std::fs::metadata(&second)?.len()
    );
    let r = &status["lastRetention"];
    assert_eq!(r["kept"], 1, "{status}");
    assert_eq!(r["deleted"], 1, "{status}");
    assert_eq!(r["futureCount"], 2, "{status}");
    assert_eq!(r["unverifiedCount"], 2, "{status}");
    let listed = |k: &str| -> Vec<String> {
        let mut v: Vec<String> = r[k]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect();
        v.sort();
        v
    };
    let mut future = vec![empty_future.clone(), verified_future.clone()];
    future.sort();
    assert_eq!(listed("futureFiles"), future);
    let mut unverified = vec![lying.clone(), no_sidecar.clone()];
    unverified.sort();
    assert_eq!(listed("unverifiedFiles"), unverified);
    assert_eq!(
        Value::from(sha256_hex(&second)),
        json(&sidecar_of(&dir, &file_name(&second)))["sha256"]
    );
    Ok(())
}

#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_prune_is_a_failed_run_and_records_no_success() -> anyhow::Result<()> {
    let Some(n) = node("127.0.6.13") else {
        return Ok(());
    };
    let dir = n.backups();
    let mut client = n.client().await;
    client.put("k", "1", None).await?;
    let out = n.snapshot(&["--keep", "1"], None).await;
    check_ok(&out);
    let first = written(&out);

    client.put("k", "2", None).await?;
    let out = n.snapshot(&["--keep", "1"], Some("remove-error")).await;
    assert_eq!(cpm_testing::process::code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("injected remove failure"),
        "{}",
        stderr(&out)
    );
    let backups: Vec<String> = names(&dir)
        .into_iter()
        .filter(|f| f.ends_with(".db"))
        .collect();
    assert_eq!(backups.len(), 2, "the new backup stays: {backups:?}");
    let status = json(&dir.join(".etcd-backup-status.json"));
    assert_eq!(
        status["lastSuccess"]["file"],
        Value::from(file_name(&first)),
        "success is recorded only after pruning: {status}"
    );
    assert!(
        status["lastFailure"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("injected remove failure")),
        "{status}"
    );

    // The next run prunes both older verified backups.
    client.put("k", "3", None).await?;
    let out = n.snapshot(&["--keep", "1"], None).await;
    check_ok(&out);
    let third = written(&out);
    let backups: Vec<String> = names(&dir)
        .into_iter()
        .filter(|f| f.ends_with(".db"))
        .collect();
    assert_eq!(backups, [file_name(&third)]);
    let status = json(&dir.join(".etcd-backup-status.json"));
    assert_eq!(
        status["lastSuccess"]["file"],
        Value::from(file_name(&third))
    );
    assert_eq!(status["lastRetention"]["deleted"], 2, "{status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn temp_files_left_by_crashed_runs_are_swept_and_a_live_runs_is_not() -> anyhow::Result<()> {
    let Some(n) = node("127.0.6.16") else {
        return Ok(());
    };
    let dir = n.backups();
    std::fs::create_dir_all(&dir)?;
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let leftover = |name: &str| -> anyhow::Result<std::fs::File> {
        put(&dir.join(name), b"partial snapshot");
        let f = std::fs::File::options().write(true).open(dir.join(name))?;
        f.set_modified(hour_ago)?;
        Ok(f)
    };
    // A run killed mid-stream (SIGKILL, power loss) left its temp file behind.
    let crashed = ".etcd-backup-4242-deadbeef.tmp";
    leftover(crashed)?;
    // Another run is still writing its own (it holds the lock); and a file that only looks
    // similar.
    let live = ".etcd-backup-4243-cafebabe.tmp";
    let held = leftover(live)?;
    held.lock()?;
    let look_alike = ".etcd-backup-notes.tmp";
    leftover(look_alike)?;

    let out = n.snapshot(&["--keep", "1", "--dry-run"], None).await;
    check_ok(&out);
    assert!(
        stdout(&out).contains(&format!(
            "delete {}: left by an interrupted run",
            dir.join(crashed).display()
        )),
        "{}",
        stdout(&out)
    );
    assert!(dir.join(crashed).exists(), "--dry-run removed nothing");

    let out = n.snapshot(&["--keep", "1"], None).await;
    check_ok(&out);
    assert!(!dir.join(crashed).exists(), "{:?}", names(&dir));
    assert!(stderr(&out).contains(crashed), "{}", stderr(&out));
    assert!(
        dir.join(live).exists(),
        "a locked temp file is a live run's"
    );
    assert!(dir.join(look_alike).exists());
    drop(held);
    Ok(())
}
