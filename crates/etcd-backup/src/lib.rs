//! etcd-backup: verified, rotated etcd snapshots that restore with standard tools.
//!
//! `snapshot` streams etcd's snapshot to a hidden temp file (optionally zstd-compressed on the
//! way), checks etcd's sha256 trailer, fsyncs and renames it to
//! `etcd-<node>-<UTC>-rev<revision>.db[.zst]`, writes a JSON sidecar, prunes this node's old
//! verified backups ([`retention`]) and only then records the success in the status file.
//! `verify FILE` checks a file's trailer (decompressing it when needed) and its sidecar; `list`
//! shows the backups in the directory. Each command refuses (exit 2) the shared flags it does
//! not honour ([`Honours`]).
#![warn(clippy::unwrap_used)]

#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod retention;
pub mod snapshot;
pub mod store;
pub mod trailer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use cpm_core::cli::{CommonArgs, Honours};
use cpm_core::exit::{Code, TERMINATION_LOG, report_fatal};

use crate::retention::Policy;
use crate::snapshot::SnapshotOptions;
use crate::store::{Compression, IoError, VerifyError};
use crate::trailer::TrailerError;

/// The etcd-backup command line.
#[derive(Debug, Parser)]
#[command(name = "etcd-backup", version = cpm_core::build::LONG_VERSION, about = "Verified, rotated etcd snapshots")]
pub struct Cli {
    /// Flags shared by all cpm binaries.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The backup directory, as given (default: the config's `etcd.backup.directory` under
    /// `--root`).
    #[arg(long, global = true, env = "CPM_BACKUP_DIR")]
    pub dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Honours for Cli {
    // A CronJob's one-shot tool: no reconcile loop (`--once`, `--admin-addr`,
    // `--resync-seconds`), nothing to compare for `--check` (a snapshot always writes), no CA
    // bundle and no Kubernetes API.
    const NEVER: &'static [&'static str] = &[
        "pki_dir",
        "kubeconfig",
        "once",
        "check",
        "admin_addr",
        "resync_seconds",
    ];

    fn unhonoured(&self) -> &'static [&'static str] {
        match self.command {
            // Honours everything the binary offers: --dry-run prints the plan.
            Command::Snapshot { .. } => &[],
            // Reads FILE and its sidecar, nothing else.
            Command::Verify { .. } => &["root", "config", "node_name", "node_ip", "dry_run", "dir"],
            // Reads the directory (--dir, else the config's under --root); writes nothing.
            Command::List { .. } => &["node_name", "node_ip", "dry_run"],
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take a verified snapshot, then prune this node's old ones (`--dry-run`: print what would
    /// be written and deleted, change nothing).
    Snapshot {
        /// etcd client URL (default: this node's member, `https://<node IP>:2379` with the node
        /// IP from `--node-ip` or `NODE_IP`, else `https://127.0.0.1:2379`).
        #[arg(long, env = "CPM_ETCD_ENDPOINT")]
        endpoint: Option<String>,
        /// Backups of this node to keep, the new one included (default: `etcd.backup.keep`).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        keep: Option<u32>,
        /// Also keep the newest backup of each of the N most recent UTC days that have one
        /// (default: `etcd.backup.keepDaily`).
        #[arg(long)]
        keep_daily: Option<u32>,
        /// Also keep the newest backup of each of the N most recent ISO weeks that have one
        /// (default: `etcd.backup.keepWeekly`).
        #[arg(long)]
        keep_weekly: Option<u32>,
        /// How to store the snapshot: `none` (`.db`) or `zstd` (`.db.zst`, streamed; `zstd -d`
        /// gives the `.db` back) (default: `etcd.backup.compression`).
        #[arg(long, value_enum, env = "CPM_BACKUP_COMPRESS")]
        compress: Option<Compression>,
    },
    /// Check a backup file: etcd's sha256 trailer (after decompression for zstd files) and,
    /// when `FILE.json` exists, the size and hashes it records.
    Verify {
        /// The snapshot file.
        file: PathBuf,
    },
    /// List the backups in the directory.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

/// `list` output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// A JSON array.
    Json,
}

/// Everything that can go wrong; [`BackupError::code`] maps it to the exit-code table.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The config file is invalid.
    #[error(transparent)]
    Config(#[from] cpm_core::config::ConfigError),
    /// A required flag is missing.
    #[error(transparent)]
    Flag(#[from] cpm_core::cli::MissingFlag),
    /// A configured path cannot be mapped under the root.
    #[error("invalid backup directory")]
    Path(#[from] cpm_core::node::PathError),
    /// A TLS input file is unreadable.
    #[error("cannot read {}", path.display())]
    Pki {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The fault-injection variable is malformed (feature `fault-injection` only).
    #[error("invalid CPM_ETCD_BACKUP_FAULT: {0:?}")]
    BadFault(String),
    /// etcd is unreachable.
    #[error(transparent)]
    Connect(#[from] cpm_core::etcd::EtcdError),
    /// An etcd request or the snapshot stream failed.
    #[error("etcd {what} failed")]
    Etcd {
        /// The request.
        what: &'static str,
        /// Why.
        #[source]
        source: etcd_client::Error,
    },
    /// No snapshot data for too long.
    #[error("snapshot stream stalled: no data for {0:?}")]
    Stalled(Duration),
    /// The stream ended early or its trailer does not match.
    #[error("snapshot from etcd is incomplete or corrupt")]
    Trailer(#[source] TrailerError),
    /// Not enough room for the snapshot.
    #[error(
        "not enough free space in {}: {available} bytes available, {needed} needed (etcd DB size {db_size} + 10%)",
        dir.display()
    )]
    NoSpace {
        /// The backup directory.
        dir: PathBuf,
        /// Bytes available to us.
        available: u64,
        /// Bytes needed.
        needed: u64,
        /// etcd's DB size.
        db_size: u64,
    },
    /// A backup of the same node, second and revision exists.
    #[error("{} already exists", .0.display())]
    Exists(PathBuf),
    /// A filesystem operation failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The status file could not be written.
    #[error(transparent)]
    Status(#[from] cpm_core::backup_status::StatusError),
    /// `verify` found a bad file.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// Formatting a time or JSON failed.
    #[error("cannot format output: {0}")]
    Format(String),
    /// SIGINT or SIGTERM arrived mid-snapshot.
    #[error("interrupted by a signal; the partial snapshot was removed")]
    Interrupted,
}

impl BackupError {
    /// The exit code: 2 for operator input, 1 for everything at run time.
    pub fn code(&self) -> Code {
        match self {
            Self::Config(_) | Self::Flag(_) | Self::Path(_) | Self::Pki { .. } => Code::Usage,
            Self::BadFault(_) => Code::Usage,
            _ => Code::Failure,
        }
    }
}

/// Runs the command line; returns the exit code.
pub async fn run(cli: Cli) -> Code {
    match run_inner(&cli).await {
        Ok(code) => code,
        Err(e) => {
            report_fatal(&e, Path::new(TERMINATION_LOG));
            e.code()
        }
    }
}

async fn run_inner(cli: &Cli) -> Result<Code, BackupError> {
    match &cli.command {
        Command::Verify { file } => {
            let v = store::verify_file(file)?;
            let inner = match v.compression {
                Compression::None => String::new(),
                Compression::Zstd => format!(
                    ", zstd: snapshot {} bytes, sha256 {}",
                    v.snapshot.size, v.snapshot.sha256
                ),
            };
            let sidecar = if v.sidecar.is_some() {
                ", matches its sidecar"
            } else {
                ", no sidecar"
            };
            Ok(cpm_core::exit::print(&format!(
                "OK {}: sha256 trailer matches ({} bytes, sha256 {}{inner}{sidecar})\n",
                file.display(),
                v.size,
                v.sha256
            )))
        }
        Command::List { output } => {
            let dir = backup_dir(cli)?;
            Ok(cpm_core::exit::print(&render_list(&dir, *output)?))
        }
        Command::Snapshot {
            endpoint,
            keep,
            keep_daily,
            keep_weekly,
            compress,
        } => {
            let endpoint = endpoint
                .clone()
                .unwrap_or_else(|| default_endpoint(cli.common.node_ip().ok()));
            let opts = snapshot_options(
                cli,
                &endpoint,
                [*keep, *keep_daily, *keep_weekly],
                *compress,
            )?;
            if cli.common.dry_run {
                // Changes nothing, so there is no failure to record either.
                let plan = snapshot::dry_run(&opts).await?;
                return Ok(cpm_core::exit::print(&plan));
            }
            let result = tokio::select! {
                r = snapshot::snapshot(&opts) => r,
                () = shutdown_signal() => Err(BackupError::Interrupted),
            };
            let outcome = match result {
                Ok(o) => o,
                Err(e) => {
                    snapshot::record_failure(&opts.dir, &e);
                    return Err(e);
                }
            };
            Ok(cpm_core::exit::print(&format!(
                "{} revision {} size {} sha256 {}\n",
                outcome.path.display(),
                outcome.sidecar.revision,
                outcome.sidecar.size,
                outcome.sidecar.sha256
            )))
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The client URL of this node's etcd member as cpm-etcd renders it (`https://<ip>:2379`), or
/// the loopback listener when the node IP is unknown.
pub fn default_endpoint(node_ip: Option<std::net::IpAddr>) -> String {
    match node_ip {
        Some(std::net::IpAddr::V6(ip)) => format!("https://[{ip}]:2379"),
        Some(std::net::IpAddr::V4(ip)) => format!("https://{ip}:2379"),
        None => "https://127.0.0.1:2379".to_string(),
    }
}

fn config(cli: &Cli) -> Result<cpm_core::config::ControlPlaneConfiguration, BackupError> {
    Ok(cpm_core::config::ControlPlaneConfiguration::load(
        &cli.common.config,
    )?)
}

fn backup_dir(cli: &Cli) -> Result<PathBuf, BackupError> {
    match &cli.dir {
        Some(d) => Ok(d.clone()),
        None => Ok(cli
            .common
            .node_root()
            .host(&config(cli)?.etcd.backup.directory)?),
    }
}

/// The snapshot's options from the flags, falling back to the config (read only when a flag
/// is missing).
fn snapshot_options(
    cli: &Cli,
    endpoint: &str,
    [keep, daily, weekly]: [Option<u32>; 3],
    compression: Option<Compression>,
) -> Result<SnapshotOptions, BackupError> {
    let node = cli.common.node_name()?;
    let dir = backup_dir(cli)?;
    let (keep, daily, weekly, compression) = match (keep, daily, weekly, compression) {
        (Some(k), Some(d), Some(w), Some(c)) => (k, d, w, c),
        _ => {
            let b = config(cli)?.etcd.backup;
            (
                keep.unwrap_or(b.keep),
                daily.unwrap_or(b.keep_daily),
                weekly.unwrap_or(b.keep_weekly),
                compression.unwrap_or(match b.compression {
                    cpm_core::config::BackupCompression::None => Compression::None,
                    cpm_core::config::BackupCompression::Zstd => Compression::Zstd,
                }),
            )
        }
    };
    let count = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
    #[cfg(feature = "fault-injection")]
    let fault = crate::fault::Fault::from_env().map_err(BackupError::BadFault)?;
    let root = cli.common.node_root();
    let read = |rel: &str| -> Result<Vec<u8>, BackupError> {
        let path = root.join(rel)?;
        std::fs::read(&path).map_err(|source| BackupError::Pki { path, source })
    };
    let etcd = cpm_core::etcd::EtcdOptions {
        endpoints: vec![endpoint.to_string()],
        ca: read("etc/kubernetes/pki/etcd/ca.crt")?,
        cert: read("etc/kubernetes/pki/etcd/healthcheck-client.crt")?,
        key: read("etc/kubernetes/pki/etcd/healthcheck-client.key")?,
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(30),
    };
    Ok(SnapshotOptions {
        dir,
        node,
        policy: Policy {
            keep: count(keep),
            daily: count(daily),
            weekly: count(weekly),
        },
        compression,
        etcd,
        progress: snapshot::stderr_is_terminal(),
        #[cfg(feature = "fault-injection")]
        fault,
    })
}

/// One row of `list`.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ListEntry {
    file: String,
    node: String,
    timestamp: String,
    revision: i64,
    compression: Compression,
    size: Option<u64>,
    sha256: Option<String>,
    snapshot_size: Option<u64>,
    created: Option<String>,
    etcd_version: Option<String>,
}

/// The backups in `dir` as `output` (a table or JSON).
fn render_list(dir: &Path, output: Output) -> Result<String, BackupError> {
    let entries: Vec<ListEntry> = store::list(dir)?
        .into_iter()
        .map(|(n, s)| ListEntry {
            file: n.file_name(),
            node: n.node.clone(),
            timestamp: n.timestamp(),
            revision: s.as_ref().map_or(n.revision, |s| s.revision),
            compression: n.compression,
            size: s.as_ref().map(|s| s.size),
            sha256: s.as_ref().map(|s| s.sha256.clone()),
            snapshot_size: s.as_ref().map(|s| s.snapshot_size.unwrap_or(s.size)),
            created: s.as_ref().map(|s| s.created.clone()),
            etcd_version: s.map(|s| s.etcd_version),
        })
        .collect();
    match output {
        Output::Json => {
            let text = serde_json::to_string_pretty(&entries)
                .map_err(|e| BackupError::Format(e.to_string()))?;
            Ok(text + "\n")
        }
        Output::Table => {
            let width = entries
                .iter()
                .map(|e| e.file.len())
                .max()
                .unwrap_or(4)
                .max(4);
            let mut out = format!(
                "{:<width$}  {:>10}  {:>12}  {:>13}  CREATED\n",
                "FILE", "REVISION", "SIZE", "SNAPSHOT SIZE"
            );
            let num = |n: Option<u64>| n.map_or_else(|| "-".to_string(), |s| s.to_string());
            for e in &entries {
                out.push_str(&format!(
                    "{:<width$}  {:>10}  {:>12}  {:>13}  {}\n",
                    e.file,
                    e.revision,
                    num(e.size),
                    num(e.snapshot_size),
                    e.created.as_deref().unwrap_or("- (no sidecar)"),
                ));
            }
            Ok(out)
        }
    }
}
