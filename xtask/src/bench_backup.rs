//! `cargo xtask bench backup`: `etcd-backup snapshot` (release build) against
//! `etcdctl snapshot save` on the same real etcd (mTLS, kubeadm layout) filled to each size in
//! turn, alternating the tools in the same run: median wall time, the ratio, and the peak RSS of
//! each process (`ru_maxrss` from `wait4`, read through GNU time's `%M`), plus
//! `etcd-backup --compress zstd`.

use std::ffi::OsString;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use cpm_core::config::KeyAlgorithm;
use cpm_testing::etcd::{etcd_binary, etcdctl_binary, free_port};
use cpm_testing::fixtures::{ca_bundle, etcd_pki, write_config};

use crate::cmd::{self};

const NODE: &str = "master-1";
/// A loopback address no test uses.
const IP: &str = "127.0.9.1";
/// Fill values: 1 MiB each (etcd's request limit is 1.5 MiB).
const VALUE: usize = 1 << 20;
/// GNU time, for `ru_maxrss`.
const GNU_TIME: &str = "/usr/bin/time";

/// Runs the benchmark at each size (MiB), `rounds` per tool, filling with `parallel` clients.
pub fn run(sizes_mib: &[u64], rounds: u32, parallel: usize) -> anyhow::Result<()> {
    ensure!(
        Path::new(GNU_TIME).is_file(),
        "{GNU_TIME} is needed for peak RSS: bash .ci/install-deps (Debian package `time`)"
    );
    let (Some(etcd), Some(ctl)) = (etcd_binary(), etcdctl_binary()) else {
        bail!("etcd and etcdctl are needed: bash .ci/install-deps");
    };
    let bin = cmd::release_binary("etcd-backup")?;
    let version = cmd::output(&etcd, &["--version"])?;
    let version = String::from_utf8_lossy(&version.stdout);
    eprintln!("{}", version.lines().next().unwrap_or("etcd ?"));

    let work = tempfile::Builder::new()
        .prefix("cpm-bench-backup-")
        .tempdir()?;
    let node = Node::start(work.path(), &etcd, &ctl)?;
    let out = work.path().join("out");
    let mut rows = Vec::new();
    let mut keys = 0usize;
    for &mib in sizes_mib {
        let started = Instant::now();
        keys = node.fill(mib << 20, keys, parallel)?;
        let fill = started.elapsed();
        let db = node.db_size()?;
        eprintln!(
            "filled to {:.0} MiB ({keys} keys) in {:.1} s",
            db as f64 / f64::from(1 << 20),
            fill.as_secs_f64()
        );
        let tools = [Tool::Backup, Tool::Etcdctl, Tool::BackupZstd];
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); tools.len()];
        for r in 0..rounds {
            // Alternate which tool goes first, so neither always meets a warmer cache.
            let order: Vec<usize> = if r % 2 == 0 {
                (0..tools.len()).collect()
            } else {
                (0..tools.len()).rev().collect()
            };
            for i in order {
                let run = node.snapshot(tools[i], &bin, &out)?;
                eprintln!(
                    "  {:<32} {:>7.2} s  {:>6} KiB  {:>6.0} MiB",
                    tools[i].label(),
                    run.wall.as_secs_f64(),
                    run.rss_kib,
                    run.bytes as f64 / f64::from(1 << 20)
                );
                runs[i].push(run);
            }
        }
        rows.push(Row {
            db,
            fill,
            medians: runs.into_iter().map(Run::median).collect(),
        });
    }
    drop(node);
    print_table(&rows, rounds);
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Tool {
    Backup,
    Etcdctl,
    BackupZstd,
}

impl Tool {
    fn label(self) -> &'static str {
        match self {
            Self::Backup => "etcd-backup snapshot",
            Self::Etcdctl => "etcdctl snapshot save",
            Self::BackupZstd => "etcd-backup snapshot --compress zstd",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Run {
    wall: Duration,
    rss_kib: u64,
    bytes: u64,
}

impl Run {
    /// The median wall time, the largest peak RSS, the last size.
    fn median(mut runs: Vec<Run>) -> Run {
        runs.sort_by_key(|r| r.wall);
        Run {
            wall: runs[runs.len() / 2].wall,
            rss_kib: runs.iter().map(|r| r.rss_kib).max().unwrap_or(0),
            bytes: runs.last().map_or(0, |r| r.bytes),
        }
    }
}

struct Row {
    db: u64,
    fill: Duration,
    medians: Vec<Run>,
}

fn print_table(rows: &[Row], rounds: u32) {
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    println!(
        "| etcd DB | fill | etcd-backup snapshot (median of {rounds}) | etcdctl snapshot save (median of {rounds}) | etcd-backup / etcdctl | peak RSS etcd-backup | peak RSS etcdctl | etcd-backup --compress zstd: time, peak RSS, size |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        let [b, c, z] = [r.medians[0], r.medians[1], r.medians[2]];
        println!(
            "| {:.0} MiB | {:.1} s | {:.2} s | {:.2} s | {:.2} | {:.1} MiB | {:.1} MiB | {:.2} s, {:.1} MiB, {:.0} MiB ({:.0} %) |",
            mib(r.db),
            r.fill.as_secs_f64(),
            b.wall.as_secs_f64(),
            c.wall.as_secs_f64(),
            b.wall.as_secs_f64() / c.wall.as_secs_f64(),
            b.rss_kib as f64 / 1024.0,
            c.rss_kib as f64 / 1024.0,
            z.wall.as_secs_f64(),
            z.rss_kib as f64 / 1024.0,
            mib(z.bytes),
            100.0 * z.bytes as f64 / b.bytes.max(1) as f64,
        );
    }
}

/// A TLS etcd with a raised quota on [`IP`], killed on drop.
struct Node {
    root: PathBuf,
    config: PathBuf,
    ctl: PathBuf,
    url: String,
    etcd: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
    }
}

impl Node {
    fn start(work: &Path, etcd: &Path, ctl: &Path) -> anyhow::Result<Self> {
        let bundle = ca_bundle(&work.join("bundle"), KeyAlgorithm::EcdsaP256);
        let root = work.join("root");
        etcd_pki(&root, &bundle, NODE, IP);
        let config = work.join("config.yaml");
        write_config(&config, "");
        let ip: IpAddr = IP.parse()?;
        let (cp, pp) = (free_port(ip), free_port(ip));
        let url = format!("https://{IP}:{cp}");
        let peer = format!("https://{IP}:{pp}");
        let pki = root.join("etc/kubernetes/pki/etcd");
        let data = root.join("var/lib/etcd");
        std::fs::create_dir_all(&data)?;
        let log = std::fs::File::create(work.join("etcd.log"))?;
        let child = Command::new(etcd)
            .args(["--name", NODE, "--data-dir"])
            .arg(&data)
            .args(["--logger=zap", "--log-outputs=stderr"])
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .arg(format!("--initial-cluster={NODE}={peer}"))
            .args(["--quota-backend-bytes", &(4u64 << 30).to_string()])
            .arg("--cert-file")
            .arg(pki.join("server.crt"))
            .arg("--key-file")
            .arg(pki.join("server.key"))
            .arg("--trusted-ca-file")
            .arg(pki.join("ca.crt"))
            .arg("--client-cert-auth")
            .arg("--peer-cert-file")
            .arg(pki.join("peer.crt"))
            .arg("--peer-key-file")
            .arg(pki.join("peer.key"))
            .arg("--peer-trusted-ca-file")
            .arg(pki.join("ca.crt"))
            .arg("--peer-client-cert-auth")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start etcd")?;
        let node = Self {
            root,
            config,
            ctl: ctl.to_path_buf(),
            url,
            etcd: child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while node.db_size().is_err() {
            ensure!(
                Instant::now() < deadline,
                "etcd did not become ready in 30 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(node)
    }

    /// etcdctl with the node's client certificate.
    fn etcdctl(&self) -> Command {
        let pki = self.root.join("etc/kubernetes/pki/etcd");
        let mut c = Command::new(&self.ctl);
        c.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.url))
            .arg("--cacert")
            .arg(pki.join("ca.crt"))
            .arg("--cert")
            .arg(pki.join("healthcheck-client.crt"))
            .arg("--key")
            .arg(pki.join("healthcheck-client.key"));
        c
    }

    fn db_size(&self) -> anyhow::Result<u64> {
        let out = self
            .etcdctl()
            .args(["endpoint", "status", "-w", "json"])
            .output()?;
        ensure!(
            out.status.success(),
            "etcdctl endpoint status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        v[0]["Status"]["dbSize"]
            .as_u64()
            .context("dbSize in etcdctl endpoint status")
    }

    /// Puts 1 MiB values (random hex text: about 2:1 compressible, like real objects are at
    /// least) with `parallel` concurrent etcdctl processes until the DB holds `target` bytes;
    /// returns the number of keys.
    fn fill(&self, target: u64, mut keys: usize, parallel: usize) -> anyhow::Result<usize> {
        loop {
            let db = self.db_size()?;
            if db >= target {
                return Ok(keys);
            }
            let missing = usize::try_from((target - db).div_ceil(VALUE as u64))?;
            let batch = missing.min(64);
            std::thread::scope(|s| -> anyhow::Result<()> {
                let workers: Vec<_> = (0..parallel)
                    .map(|w| {
                        s.spawn(move || -> anyhow::Result<()> {
                            for k in (keys + w..keys + batch).step_by(parallel) {
                                self.put(k)?;
                            }
                            Ok(())
                        })
                    })
                    .collect();
                for w in workers {
                    w.join()
                        .map_err(|_| anyhow::anyhow!("fill worker panicked"))??;
                }
                Ok(())
            })?;
            keys += batch;
        }
    }

    fn put(&self, k: usize) -> anyhow::Result<()> {
        let mut child = self
            .etcdctl()
            .args(["put", &format!("/bench/{k:08}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stdin = child.stdin.take().context("stdin")?;
        stdin.write_all(&value(k as u64))?;
        drop(stdin);
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "etcdctl put: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// One timed snapshot into an empty `out`, removed again afterwards.
    fn snapshot(&self, tool: Tool, bin: &Path, out: &Path) -> anyhow::Result<Run> {
        if out.exists() {
            std::fs::remove_dir_all(out)?;
        }
        std::fs::create_dir_all(out)?;
        let mut argv: Vec<OsString> = Vec::new();
        let mut env: Vec<(&str, &str)> = Vec::new();
        match tool {
            Tool::Backup | Tool::BackupZstd => {
                argv.push(bin.into());
                argv.extend(["--root".into(), self.root.clone().into_os_string()]);
                argv.extend(["--config".into(), self.config.clone().into_os_string()]);
                argv.extend(["--node-name".into(), NODE.into()]);
                argv.extend(["--log-level".into(), "warn".into()]);
                argv.extend(["--dir".into(), out.as_os_str().to_owned()]);
                argv.extend(["snapshot".into(), "--keep".into(), "1".into()]);
                argv.extend(["--endpoint".into(), self.url.clone().into()]);
                if matches!(tool, Tool::BackupZstd) {
                    argv.extend(["--compress".into(), "zstd".into()]);
                }
            }
            Tool::Etcdctl => {
                let c = self.etcdctl();
                argv.push(c.get_program().to_owned());
                argv.extend(c.get_args().map(ToOwned::to_owned));
                argv.extend(["snapshot".into(), "save".into()]);
                argv.push(out.join("snapshot.db").into_os_string());
                env.push(("ETCDCTL_API", "3"));
            }
        }
        let rss_file = out.with_extension("rss");
        let started = Instant::now();
        let result = Command::new(GNU_TIME)
            .args(["-f", "%M", "-o"])
            .arg(&rss_file)
            .args(&argv)
            .envs(env)
            .stdin(Stdio::null())
            .output()?;
        let wall = started.elapsed();
        ensure!(
            result.status.success(),
            "{}: {}",
            tool.label(),
            String::from_utf8_lossy(&result.stderr)
        );
        let rss_kib = std::fs::read_to_string(&rss_file)?
            .lines()
            .last()
            .context("GNU time output")?
            .trim()
            .parse()
            .context("GNU time %M")?;
        let bytes = std::fs::read_dir(out)?
            .filter_map(Result::ok)
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.ends_with(".db") || n.ends_with(".zst")
            })
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        std::fs::remove_dir_all(out)?;
        Ok(Run {
            wall,
            rss_kib,
            bytes,
        })
    }
}

/// A 1 MiB value for key `k`: random lowercase hex from a xorshift seeded by `k`.
fn value(k: u64) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut x = k.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(VALUE);
    while v.len() < VALUE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend(
            x.to_le_bytes()
                .iter()
                .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]),
        );
    }
    v.truncate(VALUE);
    v
}
