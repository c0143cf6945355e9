//! etcd-backup against real etcd (Debian's etcd 3.4 on 127.0.6.x, mTLS as kubeadm lays it out):
//! a snapshot under continuous writes restores with `etcdctl snapshot restore`; a zstd backup
//! restores after `zstd -d`; a killed etcd, a truncated stream, a failed write and a full disk
//! leave no partial file, prune nothing and are recorded as the last failure (these need the
//! `fault-injection` feature: `cargo nextest run -p etcd-backup --all-features`); retention keeps
//! the newest N plus daily and weekly generations of this node's backups and touches nothing
//! else.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use cpm_core::config::KeyAlgorithm;
use cpm_testing::etcd::{
    EtcdOptions, EtcdProcess, EtcdTls, etcd_binary, etcdctl_binary, free_port,
};
use cpm_testing::fixtures::{ca_bundle, etcd_pki, write_config};
use cpm_testing::process::{code, stderr, stdout};
use cpm_testing::root::FakeRoot;
use etcd_client::{Client, GetOptions};
use serde_json::Value;
use sha2::{Digest, Sha256};

mod flags;
mod retention;

const NODE: &str = "master-1";

struct Node {
    root: FakeRoot,
    _inputs: tempfile::TempDir,
    config: PathBuf,
    etcd: EtcdProcess,
    ip: String,
}

/// A node root with etcd certificates and a running TLS etcd on `ip`; `None` when etcd is not
/// installed (skipped outside CI).
fn node(ip: &str) -> Option<Node> {
    let bin = etcd_binary()?;
    let inputs = tempfile::tempdir().expect("tempdir");
    let bundle = ca_bundle(&inputs.path().join("pki"), KeyAlgorithm::EcdsaP256);
    let config = inputs.path().join("config.yaml");
    write_config(&config, "");
    let root = FakeRoot::new();
    etcd_pki(root.path(), &bundle, NODE, ip);
    let mut opts = EtcdOptions::single(
        NODE,
        &root.join("var/lib/etcd"),
        Some(EtcdTls::kubeadm(&root.join("etc/kubernetes/pki"))),
    );
    opts.ip = ip.parse().expect("ip");
    let etcd = EtcdProcess::start(&bin, &opts).expect("etcd starts");
    Some(Node {
        root,
        _inputs: inputs,
        config,
        etcd,
        ip: ip.to_string(),
    })
}

impl Node {
    fn backups(&self) -> PathBuf {
        self.root.join("var/lib/etcd/backups")
    }

    /// `etcd-backup ARGS` with only the flags `args` give.
    fn bare(args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_etcd-backup"));
        cmd.args(args)
            .env("RUST_BACKTRACE", "0")
            .env_remove("RUST_LOG")
            .env_remove("CPM_ETCD_BACKUP_FAULT")
            .kill_on_drop(true);
        cmd
    }

    /// `etcd-backup --root --config ARGS`: the node's root and config (`list`).
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = Self::bare(&[]);
        cmd.arg("--root")
            .arg(self.root.path())
            .arg("--config")
            .arg(&self.config)
            .args(args);
        cmd
    }

    /// `etcd-backup verify FILE` (it reads nothing but the file and its sidecar).
    fn verify(file: &Path) -> tokio::process::Command {
        let mut cmd = Self::bare(&["verify"]);
        cmd.arg(file);
        cmd
    }

    /// `snapshot ARGS` with the node's root, config, name and IP.
    fn snapshot_command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = self.command(&["--node-name", NODE, "--node-ip", &self.ip, "snapshot"]);
        cmd.args(args);
        cmd
    }

    async fn snapshot(&self, extra: &[&str], fault: Option<&str>) -> Output {
        let mut args = vec!["--endpoint", &self.etcd.client_url];
        args.extend_from_slice(extra);
        let mut cmd = self.snapshot_command(&args);
        if let Some(f) = fault {
            cmd.env("CPM_ETCD_BACKUP_FAULT", f);
        }
        cmd.output().await.expect("run etcd-backup")
    }

    async fn client(&self) -> Client {
        let pki = self.root.join("etc/kubernetes/pki/etcd");
        let read = |n: &str| std::fs::read(pki.join(n)).expect("read pki");
        cpm_core::etcd::connect(&cpm_core::etcd::EtcdOptions {
            endpoints: vec![self.etcd.client_url.clone()],
            ca: read("ca.crt"),
            cert: read("healthcheck-client.crt"),
            key: read("healthcheck-client.key"),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        })
        .await
        .expect("connect")
    }
}

/// The names in a directory.
fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn temp_files(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.starts_with('.') && n != ".etcd-backup-status.json")
        .collect()
}

fn sha256_hex(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read");
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read json")).expect("json")
}

/// The path `snapshot` printed on stdout.
fn written(out: &Output) -> PathBuf {
    PathBuf::from(
        stdout(out)
            .split_whitespace()
            .next()
            .expect("snapshot prints its file"),
    )
}

fn check_ok(out: &Output) {
    assert_eq!(
        code(out),
        0,
        "stdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
}

async fn fill(client: &mut Client, prefix: &str, count: usize, value_size: usize) {
    let value = vec![b'x'; value_size];
    for i in 0..count {
        client
            .put(format!("{prefix}{i:06}"), value.clone(), None)
            .await
            .expect("put");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_under_writes_matches_etcdctl_and_restores_every_acknowledged_key()
-> anyhow::Result<()> {
    let (Some(n), Some(etcd), Some(ctl)) = (node("127.0.6.1"), etcd_binary(), etcdctl_binary())
    else {
        return Ok(());
    };
    let mut client = n.client().await;
    fill(&mut client, "seed/", 50, 1000).await;

    // A writer that records every acknowledged put with the revision etcd gave it.
    let acked: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (acked, stop, mut client) = (acked.clone(), stop.clone(), client.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("k/{i:08}");
                let resp = client.put(key.clone(), vec![b'v'; 200], None).await;
                if let Ok(r) = resp {
                    let rev = r.header().map_or(0, etcd_client::ResponseHeader::revision);
                    acked.lock().expect("lock").push((key, rev));
                }
                i += 1;
            }
        })
    };
    while acked.lock().expect("lock").len() < 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = n.snapshot(&["--keep", "5"], None).await;
    let after = acked.lock().expect("lock").len();
    while acked.lock().expect("lock").len() < after + 50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await?;
    check_ok(&out);

    let file = written(&out);
    assert_eq!(
        file.parent(),
        Some(n.backups().as_path()),
        "default dir from the config"
    );
    let sidecar = json(&PathBuf::from(format!("{}.json", file.display())));
    let revision = sidecar["revision"].as_i64().context("revision")?;
    assert_eq!(sidecar["sha256"], sha256_hex(&file));
    assert_eq!(sidecar["size"], std::fs::metadata(&file)?.len());
    assert_eq!(sidecar["node"], NODE);
    assert!(
        sidecar["etcdVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("3."))
    );
    assert!(
        file.to_string_lossy()
            .ends_with(&format!("-rev{revision}.db"))
    );
    let status = json(&n.backups().join(".etcd-backup-status.json"));
    assert_eq!(
        status["lastSuccess"]["file"],
        file.file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .context("name")?
    );
    assert_eq!(status["lastSuccess"]["revision"], revision);
    assert_eq!(status["lastSuccess"]["sizeBytes"], sidecar["size"]);
    assert!(
        status["lastSuccess"]["timestampSeconds"]
            .as_i64()
            .is_some_and(|t| t > 0)
    );
    assert!(status.get("lastFailure").is_none(), "{status}");
    let parsed = cpm_core::backup_status::read(&n.backups().join(".etcd-backup-status.json"))?
        .context("status file")?;
    assert_eq!(parsed.last_success.map(|s| s.revision), Some(revision));

    // etcdctl agrees: the snapshot's revision is at least the status revision, and it holds at
    // least every key revision acknowledged up to it.
    let st = std::process::Command::new(&ctl)
        .args(["snapshot", "status", "-w", "json"])
        .arg(&file)
        .env("ETCDCTL_API", "3")
        .output()?;
    check_ok(&st);
    let st: Value = serde_json::from_slice(&st.stdout)?;
    let snap_rev = st["revision"].as_i64().context("etcdctl revision")?;
    assert!(
        snap_rev >= revision,
        "etcdctl {snap_rev} < sidecar {revision}"
    );
    let before: Vec<String> = acked
        .lock()
        .expect("lock")
        .iter()
        .filter(|(_, r)| *r <= revision)
        .map(|(k, _)| k.clone())
        .collect();
    assert!(
        !before.is_empty(),
        "writes were acknowledged before the snapshot"
    );
    let total = st["totalKey"].as_u64().context("totalKey")?;
    assert!(
        total >= before.len() as u64 + 50,
        "totalKey {total} < acknowledged keys"
    );

    let verify = Node::verify(&file).output().await?;
    check_ok(&verify);
    assert!(stdout(&verify).contains("OK"));

    // Restore with the standard tool and start etcd on it.
    let ip: IpAddr = "127.0.6.2".parse()?;
    let ports = [free_port(ip), free_port(ip), free_port(ip)];
    let peer = format!("http://{ip}:{}", ports[1]);
    let restored_dir = n.root.join("restored");
    let restore = std::process::Command::new(&ctl)
        .args(["snapshot", "restore"])
        .arg(&file)
        .arg("--data-dir")
        .arg(&restored_dir)
        .args(["--name", "restored", "--initial-cluster-token", "cpm-test"])
        .arg(format!("--initial-cluster=restored={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .env("ETCDCTL_API", "3")
        .output()?;
    check_ok(&restore);
    let mut opts = EtcdOptions::single("restored", &restored_dir, None);
    opts.ip = ip;
    opts.ports = Some(ports);
    let restored = EtcdProcess::start(&etcd, &opts)?;
    let mut rc = Client::connect([restored.client_url.clone()], None).await?;
    let got = rc
        .get("k/", Some(GetOptions::new().with_prefix().with_keys_only()))
        .await?;
    let have: BTreeSet<String> = got
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect();
    let missing: Vec<_> = before.iter().filter(|k| !have.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "restored etcd lacks {} acknowledged keys: {:?}",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    let seeds = rc
        .get(
            "seed/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await?;
    assert_eq!(seeds.count(), 50);
    Ok(())
}

#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread")]
async fn etcd_killed_mid_stream_or_a_truncated_stream_leaves_no_file_and_old_backups_intact()
-> anyhow::Result<()> {
    let Some(mut n) = node("127.0.6.3") else {
        return Ok(());
    };
    let mut client = n.client().await;
    fill(&mut client, "big/", 40, 256 * 1024).await;
    let first = n.snapshot(&["--keep", "1"], None).await;
    check_ok(&first);
    let old = written(&first);
    let old_sha = sha256_hex(&old);

    // A stream cut short: the trailer check fails. (A write first: a snapshot in the same second
    // at the same revision would be refused by name, before any streaming.)
    client.put("tick", "1", None).await?;
    let out = n.snapshot(&["--keep", "1"], Some("truncate:1048576")).await;
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("incomplete or corrupt"),
        "{}",
        stderr(&out)
    );
    assert_eq!(temp_files(&n.backups()), Vec::<String>::new());
    assert_eq!(sha256_hex(&old), old_sha, "older backup intact");

    // etcd killed while the snapshot streams.
    client.put("tick", "2", None).await?;
    let marker = n.root.join("paused");
    let child = n
        .snapshot_command(&["--keep", "1", "--endpoint", &n.etcd.client_url])
        .env(
            "CPM_ETCD_BACKUP_FAULT",
            format!("pause:1048576:{}", marker.display()),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    for _ in 0..600 {
        if marker.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(marker.exists(), "the snapshot reached the pause point");
    n.etcd.kill();
    std::fs::remove_file(&marker)?;
    let out = child.wait_with_output().await?;
    eprintln!("killed etcd mid-stream: {}", stderr(&out));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("error: "), "{}", stderr(&out));
    assert_eq!(temp_files(&n.backups()), Vec::<String>::new());
    let left: Vec<_> = names(&n.backups())
        .into_iter()
        .filter(|f| f.ends_with(".db"))
        .collect();
    assert_eq!(
        left,
        vec![
            old.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .context("name")?
        ]
    );
    assert_eq!(sha256_hex(&old), old_sha, "older backup intact");

    // verify catches a damaged copy, and passes the intact one.
    let bad = n.root.join("bad.db");
    let mut bytes = std::fs::read(&old)?;
    bytes[4096] ^= 0xff;
    cpm_core::apply::write_atomic(&bad, &bytes, 0o600, None, None)?;
    let out = Node::verify(&bad).output().await?;
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("sha256 trailer mismatch"),
        "{}",
        stderr(&out)
    );
    let out = Node::verify(&old).output().await?;
    check_ok(&out);
    Ok(())
}

#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread")]
async fn a_write_error_or_a_full_disk_fails_clearly_and_prunes_nothing() -> anyhow::Result<()> {
    let Some(n) = node("127.0.6.4") else {
        return Ok(());
    };
    let mut client = n.client().await;
    fill(&mut client, "k/", 20, 10_000).await;
    let dir = n.root.join("custom-dir");
    let dir_arg = dir.display().to_string();
    let first = n.snapshot(&["--keep", "1", "--dir", &dir_arg], None).await;
    check_ok(&first);
    let old = written(&first);
    assert_eq!(old.parent(), Some(dir.as_path()));
    let before = names(&dir);
    client.put("another", "value", None).await?;

    let out = n
        .snapshot(
            &["--keep", "1", "--dir", &dir_arg],
            Some("write-error:65536"),
        )
        .await;
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("injected write failure"),
        "{}",
        stderr(&out)
    );
    assert_eq!(names(&dir), before, "nothing pruned, nothing left behind");
    let status = json(&dir.join(".etcd-backup-status.json"));
    assert!(
        status["lastFailure"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("injected write failure")),
        "{status}"
    );
    assert_eq!(
        status["lastSuccess"]["file"],
        old.file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .context("name")?,
        "the last success is kept"
    );

    let out = n
        .snapshot(&["--keep", "1", "--dir", &dir_arg], Some("free-space:4096"))
        .await;
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not enough free space"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("4096 bytes available"),
        "{}",
        stderr(&out)
    );
    assert_eq!(names(&dir), before, "nothing pruned, nothing left behind");
    let status = json(&dir.join(".etcd-backup-status.json"));
    assert!(
        status["lastFailure"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not enough free space")),
        "{status}"
    );

    // A malformed fault value is a usage error; verify of a missing file is a failure.
    let out = n.snapshot(&["--dir", &dir_arg], Some("bogus")).await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let out = Node::verify(&dir.join("missing.db")).output().await?;
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_keeps_the_newest_three_and_touches_nothing_else() -> anyhow::Result<()> {
    let Some(n) = node("127.0.6.5") else {
        return Ok(());
    };
    let dir = n.backups();
    std::fs::create_dir_all(&dir)?;
    let foreign = [
        "notes.txt",
        "etcd-other-node-20200101T000000Z-rev1.db",
        "etcd-other-node-20200101T000000Z-rev1.db.json",
        "etcd-master-1-garbage.db",
        "etcd-master-1-20200101T000000Z-rev1.db.bak",
        "snapshot.db",
    ];
    for f in foreign {
        cpm_core::apply::write_atomic(&dir.join(f), f.as_bytes(), 0o644, None, None)?;
    }
    let mut client = n.client().await;
    let mut made = Vec::new();
    for i in 0..5 {
        client.put(format!("run/{i}"), "x", None).await?;
        let out = n.snapshot(&["--keep", "3"], None).await;
        check_ok(&out);
        made.push(written(&out));
    }
    let mine: BTreeSet<String> = names(&dir)
        .into_iter()
        .filter(|f| f.starts_with("etcd-master-1-20") && !f.starts_with("etcd-master-1-2020"))
        .collect();
    let newest: BTreeSet<String> = made[2..]
        .iter()
        .flat_map(|p| {
            let name = p
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            [format!("{name}.json"), name]
        })
        .collect();
    assert_eq!(mine, newest);
    for f in foreign {
        assert_eq!(std::fs::read(dir.join(f))?, f.as_bytes(), "{f} untouched");
    }

    let out = n.command(&["list", "--output", "json"]).output().await?;
    check_ok(&out);
    let list: Value = serde_json::from_str(&stdout(&out))?;
    let files: Vec<&str> = list
        .as_array()
        .context("array")?
        .iter()
        .filter_map(|e| e["file"].as_str())
        .collect();
    assert_eq!(
        files.len(),
        4,
        "three of ours and the other node's: {files:?}"
    );
    assert!(
        list.as_array()
            .context("array")?
            .iter()
            .filter(|e| e["node"] == NODE)
            .all(|e| e["size"].as_u64().is_some_and(|s| s > 0))
    );
    let out = n.command(&["list"]).output().await?;
    check_ok(&out);
    assert!(stdout(&out).starts_with("FILE"), "{}", stdout(&out));
    Ok(())
}

/// Writes a stand-in backup of this node with the given UTC time and revision, and a sidecar
/// that matches it (size and sha256), so retention counts it as verified.
fn fake_backup(dir: &Path, time: &str, rev: u32) -> String {
    let name = format!("etcd-{NODE}-{time}Z-rev{rev}.db");
    let bytes = format!("stand-in for {name}");
    cpm_core::apply::write_atomic(&dir.join(&name), bytes.as_bytes(), 0o600, None, None)
        .expect("write");
    let sidecar = serde_json::json!({
        "file": name,
        "node": NODE,
        "created": format!("{time}Z"),
        "revision": rev,
        "sha256": sha256_hex(&dir.join(&name)),
        "size": bytes.len(),
        "compression": "none",
        "etcdVersion": "3.4.23",
        "memberId": "1",
        "durationSeconds": 0.1,
    });
    cpm_core::apply::write_atomic(
        &dir.join(format!("{name}.json")),
        sidecar.to_string().as_bytes(),
        0o644,
        None,
        None,
    )
    .expect("write");
    name
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_keeps_daily_and_weekly_generations_from_the_config_or_flags()
-> anyhow::Result<()> {
    let Some(n) = node("127.0.6.10") else {
        return Ok(());
    };
    write_config(
        &n.config,
        "etcd: {backup: {keep: 1, keepDaily: 3, keepWeekly: 2}}\n",
    );
    let dir = n.backups();
    std::fs::create_dir_all(&dir)?;
    // 2020-01-06 is a Monday: W02 holds the 6th and 8th, W03 the 13th and 14th.
    let old: Vec<String> = [
        "20200106T000000",
        "20200106T120000",
        "20200108T000000",
        "20200113T000000",
        "20200113T060000",
        "20200114T000000",
    ]
    .iter()
    .zip(1..)
    .map(|(t, rev)| fake_backup(&dir, t, rev))
    .collect();
    let foreign = [
        "etcd-other-node-20200101T000000Z-rev1.db",
        "etcd-master-1-20200199T000000Z-rev1.db",
        "notes.txt",
    ];
    for f in foreign {
        cpm_core::apply::write_atomic(&dir.join(f), f.as_bytes(), 0o644, None, None)?;
    }
    let mine = |dir: &Path| -> BTreeSet<String> {
        names(dir)
            .into_iter()
            .filter(|f| f.starts_with("etcd-master-1-") && f.ends_with(".db"))
            .filter(|f| !foreign.contains(&f.as_str()))
            .collect()
    };
    let mut client = n.client().await;

    // keep 1 and keepDaily 3 from the config, --keep-weekly 3 from the flag.
    client.put("run/1", "x", None).await?;
    let out = n.snapshot(&["--keep-weekly", "3"], None).await;
    check_ok(&out);
    let first = written(&out)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .context("name")?;
    let expected: BTreeSet<String> = [
        first.clone(),
        old[5].clone(), // newest of the newest old day and of week W03
        old[4].clone(), // newest of the second newest old day
        old[2].clone(), // newest of week W02 (third week)
    ]
    .into();
    assert_eq!(mine(&dir), expected);

    // The config alone: keepWeekly 2 drops W02; today's older backup is neither the newest
    // nor the newest of its day.
    client.put("run/2", "x", None).await?;
    let out = n.snapshot(&[], None).await;
    check_ok(&out);
    let second = written(&out)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .context("name")?;
    let expected: BTreeSet<String> = [second, old[5].clone(), old[4].clone()].into();
    assert_eq!(mine(&dir), expected);
    for f in &expected {
        assert!(
            dir.join(format!("{f}.json")).exists(),
            "{f} keeps its sidecar"
        );
    }
    for f in [&first, &old[0], &old[1], &old[2], &old[3]] {
        assert!(
            !dir.join(format!("{f}.json")).exists(),
            "{f}'s sidecar pruned too"
        );
    }
    for f in foreign {
        assert_eq!(std::fs::read(dir.join(f))?, f.as_bytes(), "{f} untouched");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zstd_backup_verifies_lists_and_restores_after_zstd_d() -> anyhow::Result<()> {
    let (Some(n), Some(ctl), Some(zstd)) = (
        node("127.0.6.11"),
        etcdctl_binary(),
        cpm_testing::etcd::find_tool("zstd", "ZSTD_BIN"),
    ) else {
        return Ok(());
    };
    // Compression from the config; the flag overrides it below.
    write_config(&n.config, "etcd: {backup: {compression: zstd}}\n");
    let mut client = n.client().await;
    fill(&mut client, "z/", 200, 10_000).await;
    let out = n.snapshot(&["--keep", "2"], None).await;
    check_ok(&out);
    let file = written(&out);
    assert_eq!(temp_files(&n.backups()), Vec::<String>::new());
    assert!(
        file.to_string_lossy().ends_with(".db.zst"),
        "{}",
        file.display()
    );
    let sidecar = json(&PathBuf::from(format!("{}.json", file.display())));
    assert_eq!(sidecar["compression"], "zstd");
    assert_eq!(sidecar["sha256"], sha256_hex(&file));
    let stored = std::fs::metadata(&file)?.len();
    assert_eq!(sidecar["size"], stored);
    let snapshot_size = sidecar["snapshotSize"].as_u64().context("snapshotSize")?;
    assert!(
        stored < snapshot_size,
        "compressed {stored} >= {snapshot_size}"
    );

    let verify = Node::verify(&file).output().await?;
    check_ok(&verify);
    assert!(
        stdout(&verify).contains("zstd") && stdout(&verify).contains("matches its sidecar"),
        "{}",
        stdout(&verify)
    );
    let list = n.command(&["list", "--output", "json"]).output().await?;
    check_ok(&list);
    let list: Value = serde_json::from_str(&stdout(&list))?;
    assert_eq!(list[0]["compression"], "zstd", "{list}");
    assert_eq!(list[0]["snapshotSize"], snapshot_size, "{list}");

    // The standard tools: zstd -d, then etcdctl.
    let db = n.root.join("restored.db");
    let d = std::process::Command::new(&zstd)
        .args(["-q", "-d", "-o"])
        .arg(&db)
        .arg(&file)
        .output()?;
    check_ok(&d);
    assert_eq!(Value::from(sha256_hex(&db)), sidecar["snapshotSha256"]);
    let st = std::process::Command::new(&ctl)
        .args(["snapshot", "status", "-w", "json"])
        .arg(&db)
        .env("ETCDCTL_API", "3")
        .output()?;
    check_ok(&st);
    let st: Value = serde_json::from_slice(&st.stdout)?;
    assert!(st["totalKey"].as_u64().is_some_and(|k| k >= 200), "{st}");
    let restore = std::process::Command::new(&ctl)
        .args(["snapshot", "restore"])
        .arg(&db)
        .arg("--data-dir")
        .arg(n.root.join("restored"))
        .env("ETCDCTL_API", "3")
        .output()?;
    check_ok(&restore);

    // A damaged copy and a copy whose sidecar disagrees both fail verify.
    let mut bytes = std::fs::read(&file)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let bad = n.root.join("bad.db.zst");
    cpm_core::apply::write_atomic(&bad, &bytes, 0o600, None, None)?;
    let out = Node::verify(&bad).output().await?;
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    let copy = n.root.join("copy.db.zst");
    std::fs::copy(&file, &copy)?;
    let mut lying = sidecar.clone();
    lying["sha256"] = Value::from("0".repeat(64));
    cpm_core::apply::write_atomic(
        &PathBuf::from(format!("{}.json", copy.display())),
        lying.to_string().as_bytes(),
        0o644,
        None,
        None,
    )?;
    let out = Node::verify(&copy).output().await?;
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert!(stderr(&out).contains("sha256 is"), "{}", stderr(&out));

    // Retention counts compressed and plain backups alike.
    client.put("after", "x", None).await?;
    let out = n
        .snapshot(&["--keep", "1", "--compress", "none"], None)
        .await;
    check_ok(&out);
    let plain = written(&out);
    assert!(plain.to_string_lossy().ends_with(".db"));
    assert!(!file.exists(), "the older zstd backup was pruned");
    assert!(!PathBuf::from(format!("{}.json", file.display())).exists());
    Ok(())
}
