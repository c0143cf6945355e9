//! `--dry-run` and the shared flags against real etcd: `snapshot --dry-run` reports the backup it
//! would write and the files retention would delete or ignore and changes nothing; every command
//! refuses (exit 2) the shared flags it does not honour, before doing anything.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use cpm_testing::process::{code, stderr, stdout};

use crate::{NODE, Node, check_ok, names, node, sha256_hex, written};

/// One entry's size, mtime (seconds, nanoseconds) and sha256.
type Seen = (u64, i64, i64, String);

/// Everything observable about a directory: each entry's size, mtime and sha256, and the
/// directory's own mode.
fn state(dir: &Path) -> (u32, BTreeMap<String, Seen>) {
    let mode = std::fs::metadata(dir).expect("dir").permissions().mode() & 0o7777;
    let entries = names(dir)
        .into_iter()
        .map(|n| {
            let p = dir.join(&n);
            let md = std::fs::metadata(&p).expect("entry");
            (n, (md.len(), md.mtime(), md.mtime_nsec(), sha256_hex(&p)))
        })
        .collect();
    (mode, entries)
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_dry_run_reports_what_it_would_write_and_delete_and_changes_nothing()
-> anyhow::Result<()> {
    let Some(n) = node("127.0.6.14") else {
        return Ok(());
    };
    let dir = n.backups();
    let mut client = n.client().await;
    client.put("k", "1", None).await?;
    let out = n.snapshot(&["--keep", "1"], None).await;
    check_ok(&out);
    let old = written(&out);
    let unverified = format!("etcd-{NODE}-20200101T000000Z-rev1.db");
    cpm_core::apply::write_atomic(&dir.join(&unverified), b"x", 0o600, None, None)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    client.put("k", "2", None).await?;
    let before = state(&dir);

    let out = n.snapshot(&["--keep", "1", "--dry-run"], None).await;
    check_ok(&out);
    let plan = stdout(&out);
    let lines: Vec<&str> = plan.lines().collect();
    let d = dir.display().to_string();
    assert_eq!(lines[0], format!("mode 0755 -> 0700 {d}"), "{plan}");
    assert!(
        lines[1].starts_with(&format!("create {d}/etcd-{NODE}-"))
            && lines[1].contains(".db (etcd 3.")
            && lines[1].contains("revision "),
        "{plan}"
    );
    assert!(
        lines[2].starts_with(&format!("create {d}/etcd-{NODE}-")) && lines[2].ends_with(".db.json")
    );
    assert!(
        lines.contains(&format!("delete {}", old.display()).as_str()),
        "{plan}"
    );
    assert!(
        lines.contains(&format!("delete {}.json", old.display()).as_str()),
        "{plan}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "ignore {d}/{unverified}: not verified: no sidecar"
        ))),
        "{plan}"
    );
    assert_eq!(
        lines.last(),
        Some(&format!("replace {d}/.etcd-backup-status.json").as_str())
    );
    assert_eq!(
        state(&dir),
        before,
        "--dry-run changed the backup directory"
    );

    // A directory that does not exist yet is not created.
    let fresh = n.root.join("fresh/backups");
    let fresh_arg = fresh.display().to_string();
    let out = n
        .snapshot(&["--keep", "1", "--dry-run", "--dir", &fresh_arg], None)
        .await;
    check_ok(&out);
    let plan = stdout(&out);
    assert!(
        plan.starts_with(&format!("mkdir 0700 {fresh_arg}\n")),
        "{plan}"
    );
    assert!(
        plan.ends_with(&format!("create {fresh_arg}/.etcd-backup-status.json\n")),
        "{plan}"
    );
    assert!(
        !n.root.join("fresh").exists(),
        "--dry-run created the directory"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_refuses_the_shared_flags_it_does_not_honour() -> anyhow::Result<()> {
    let Some(n) = node("127.0.6.15") else {
        return Ok(());
    };
    let dir = n.backups();
    let mut client = n.client().await;
    client.put("k", "1", None).await?;
    let out = n.snapshot(&["--keep", "3"], None).await;
    check_ok(&out);
    let file = written(&out);
    let file_arg = file.display().to_string();
    let before = state(&dir);
    let refused = |out: &std::process::Output, what: &str| {
        assert_eq!(code(out), 2, "{what}: {}", stderr(out));
        assert!(
            stderr(out).contains("is not honoured by `etcd-backup "),
            "{what}: {}",
            stderr(out)
        );
    };

    // snapshot: a one-shot tool with no loop, nothing to --check, no CA bundle, no API.
    for extra in [
        &["--check"][..],
        &["--once"],
        &["--admin-addr", "127.0.0.1:9999"],
        &["--resync-seconds", "5"],
        &["--kubeconfig", "/nonexistent/kubeconfig"],
        &["--pki-dir", "/nonexistent/pki"],
    ] {
        let mut args = vec!["--keep", "3"];
        args.extend_from_slice(extra);
        let out = n.snapshot(&args, None).await;
        refused(&out, &format!("snapshot {extra:?}"));
    }
    // Flags no command honours are refused from their CPM_* variables too.
    for var in ["CPM_CHECK", "CPM_ONCE"] {
        let out = n
            .snapshot_command(&["--keep", "3", "--endpoint", &n.etcd.client_url])
            .env(var, "true")
            .output()
            .await?;
        refused(&out, var);
        assert!(stderr(&out).contains(var), "{}", stderr(&out));
    }
    assert_eq!(state(&dir), before, "a refused snapshot wrote or pruned");

    // verify reads FILE and its sidecar only.
    for flag in [
        &["--dry-run"][..],
        &["--check"],
        &["--root", "/"],
        &["--config", "/nonexistent/config.yaml"],
        &["--node-name", NODE],
        &["--node-ip", "127.0.6.15"],
        &["--dir", "/tmp"],
    ] {
        let out = Node::bare(&["verify"])
            .args(flag)
            .arg(&file_arg)
            .output()
            .await?;
        refused(&out, &format!("verify {flag:?}"));
    }
    check_ok(&Node::verify(&file).output().await?);

    // list reads the directory; it has no node, no IP and nothing to dry-run.
    for flag in [
        &["--dry-run"][..],
        &["--node-name", NODE],
        &["--node-ip", "127.0.6.15"],
        &["--once"],
    ] {
        let out = n.command(&["list"]).args(flag).output().await?;
        refused(&out, &format!("list {flag:?}"));
    }
    check_ok(&n.command(&["list"]).output().await?);

    // Flags no command honours are not offered in --help.
    let help = Node::bare(&["snapshot", "--help"]).output().await?;
    check_ok(&help);
    for hidden in [
        "--once",
        "--check",
        "--admin-addr",
        "--resync-seconds",
        "--kubeconfig",
        "--pki-dir",
    ] {
        assert!(
            !stdout(&help).contains(hidden),
            "{hidden} in {}",
            stdout(&help)
        );
    }
    assert!(stdout(&help).contains("--dry-run"), "{}", stdout(&help));
    assert_eq!(state(&dir), before);
    Ok(())
}

/// `etcd-backup list | head`: the reader going away is not a panic, and the exit is quiet.
#[test]
fn list_into_a_closed_pipe_exits_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_etcd-backup"));
    cmd.arg("--dir")
        .arg(dir.path())
        .args(["list", "--output", "table"]);
    let out = cpm_testing::process::output_into_closed_pipe(&mut cmd);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}
