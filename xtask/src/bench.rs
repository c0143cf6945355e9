//! `cargo xtask bench pki`: time to issue a full node PKI (7 keys and leaf certificates) per key
//! algorithm, `cpm-certs --once` (release build, a real process writing with fsync) against the
//! `openssl` CLI issuing the same set (same CA bundle, subjects, SANs and usages) in the same run.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use cpm_certs::catalogue::{NodeIdentity, leaves};
use cpm_core::config::{ControlPlaneConfiguration, KeyAlgorithm};
use cpm_testing::openssl::{OpensslCert, issue};

use crate::cmd::{self, workspace_root};

#[path = "bench_backup.rs"]
mod bench_backup;
#[path = "bench_idle.rs"]
mod bench_idle;
#[path = "bench_metrics_proxy.rs"]
mod bench_metrics_proxy;
#[path = "bench_pki.rs"]
mod bench_pki;
#[path = "bench_proxy.rs"]
mod bench_proxy;

#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum Which {
    /// Full node PKI issuance: cpm-certs against the openssl CLI.
    Pki {
        /// Rounds per algorithm and tool (the median is reported).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
        rounds: u32,
    },
    /// The node-local API proxy: api-proxy against nginx's stream proxy and a direct connection.
    Proxy {
        /// Seconds per timed phase.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=30))]
        seconds: u64,
        /// Interleaved rounds of the throughput, latency and connection-rate phases; the median
        /// of each figure is reported.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
        rounds: u32,
        /// Only the traffic phases (throughput, latency, new connections): no memory or failover
        /// phases. For iterating on the data path.
        #[arg(long)]
        traffic_only: bool,
    },
    /// metrics-rbac-proxy: a ~200 KiB scrape directly and through the proxy (token, warm cache).
    MetricsProxy {
        /// Seconds per timed phase.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
        seconds: u64,
        /// Scrapes per second in the fixed-rate latency phase.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        rate: u32,
    },
    /// Every daemon of one converged master left alone: CPU, memory, passes and log lines over a
    /// window, with nginx's stream proxy idle beside api-proxy.
    Idle {
        /// The idle window, seconds.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..=3600))]
        seconds: u64,
    },
    /// etcd snapshots: etcd-backup against `etcdctl snapshot save` on the same filled etcd.
    Backup {
        /// The first DB size to fill to, MiB.
        #[arg(long, default_value_t = 256)]
        small_mib: u64,
        /// The second DB size, MiB (the same etcd, grown).
        #[arg(long, default_value_t = 1024)]
        large_mib: u64,
        /// Rounds per tool and size (the median wall time is reported).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
        rounds: u32,
        /// Concurrent etcdctl processes filling the DB.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
    },
}

pub fn run(which: Which) -> anyhow::Result<()> {
    match which {
        Which::Pki { rounds } => pki(rounds),
        Which::Proxy {
            seconds,
            rounds,
            traffic_only,
        } => bench_proxy::run(seconds, rounds, traffic_only),
        Which::MetricsProxy { seconds, rate } => bench_metrics_proxy::run(seconds, rate),
        Which::Backup {
            small_mib,
            large_mib,
            rounds,
            parallel,
        } => bench_backup::run(&[small_mib, large_mib], rounds, parallel),
        Which::Idle { seconds } => bench_idle::run(seconds),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn pki(rounds: u32) -> anyhow::Result<()> {
    cmd::run(
        "cargo",
        &["build", "--locked", "--release", "-p", "cpm-certs"],
    )?;
    let bin = workspace_root().join("target/release/cpm-certs");
    let work = tempfile::Builder::new()
        .prefix("cpm-bench-pki-")
        .tempdir()?;
    let config_text = "apiVersion: cpm.dev/v1alpha1\nkind: ControlPlaneConfiguration\nkubernetesVersion: \"1.33\"\napiserver: {certSANs: [api.example.com, 203.0.113.10]}\n";
    let node = NodeIdentity {
        name: "master-1".parse().map_err(anyhow::Error::msg)?,
        ip: "192.0.2.10".parse()?,
    };
    println!(
        "| key algorithm | cpm-certs --once (median of {rounds}) | openssl CLI (median of {rounds}) | openssl / cpm |"
    );
    println!("|---|---|---|---|");
    for alg in KeyAlgorithm::ALL {
        let dir = work.path().join(alg.name());
        let bundle = dir.join("bundle");
        let out = Command::new(&bin)
            .args(["init-ca", "--key-algorithm", alg.name(), "--out"])
            .arg(&bundle)
            .output()?;
        ensure!(
            out.status.success(),
            "init-ca: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let yaml = format!(
            "{config_text}certificates: {{keyAlgorithm: {}}}\n",
            alg.name()
        );
        let config = dir.join("config.yaml");
        cpm_core::apply::write_atomic(&config, yaml.as_bytes(), 0o600, None, None)?;
        let cfg = ControlPlaneConfiguration::parse(&yaml, &config).map_err(anyhow::Error::from)?;
        let certs = openssl_set(&cfg, &node);

        let mut cpm = Vec::new();
        let mut ossl = Vec::new();
        for r in 0..rounds {
            let root = dir.join(format!("cpm-{r}"));
            let start = Instant::now();
            let out = Command::new(&bin)
                .arg("--root")
                .arg(&root)
                .arg("--config")
                .arg(&config)
                .arg("--pki-dir")
                .arg(&bundle)
                .args([
                    "--node-name",
                    "master-1",
                    "--node-ip",
                    "192.0.2.10",
                    "--once",
                    "--log-level",
                    "warn",
                ])
                .output()?;
            cpm.push(start.elapsed());
            ensure!(
                out.status.success(),
                "cpm-certs: {}",
                String::from_utf8_lossy(&out.stderr)
            );

            let pki = dir.join(format!("openssl-{r}"));
            copy_cas(&bundle, &pki)?;
            let start = Instant::now();
            for c in &certs {
                issue(&pki, c, alg, 365, false);
            }
            ossl.push(start.elapsed());
        }
        let (c, o) = (median(cpm), median(ossl));
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.1}× |",
            alg.name(),
            c.as_secs_f64() * 1e3,
            o.as_secs_f64() * 1e3,
            o.as_secs_f64() / c.as_secs_f64()
        );
    }
    Ok(())
}

/// The same seven leaves cpm issues, as openssl requests.
fn openssl_set(cfg: &ControlPlaneConfiguration, node: &NodeIdentity) -> Vec<OpensslCert> {
    leaves(cfg, node)
        .iter()
        .map(|l| {
            OpensslCert::new(
                l.stem,
                &l.common_name,
                &l.organizations,
                &l.sans,
                l.usage,
                l.signer.stem(),
            )
        })
        .collect()
}

/// Copies the bundle's CAs into kubeadm's layout for openssl.
fn copy_cas(bundle: &Path, pki: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(pki.join("etcd"))?;
    for f in cpm_core::pki::bundle::FILES {
        std::fs::copy(bundle.join(f.name), pki.join(f.installed)).with_context(|| f.name)?;
    }
    Ok(())
}
