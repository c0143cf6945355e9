//! etcd-backup: verified, rotated etcd snapshots that restore with standard tools.
//!
//! `snapshot` streams etcd's snapshot to a hidden temp file, checks etcd's sha256 trailer,
//! fsyncs and renames it to `etcd-<node>-<UTC>-rev<revision>.db`, writes a JSON sidecar and the
//! status file, and only then prunes this node's old backups. `verify FILE` checks the trailer of
//! a file; `list` shows the backups in the directory.
#![warn(clippy::unwrap_used)]

pub mod snapshot;
pub mod store;
pub mod trailer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use cpm_core::cli::CommonArgs;
use cpm_core::exit::{Code, TERMINATION_LOG, report_fatal};

use crate::snapshot::SnapshotOptions;
use crate::store::{IoError, VerifyError};
use crate::trailer::TrailerError;

/// Test-only fault injection (never set in production): `truncate:<bytes>` cuts the stream,
/// `write-error:<bytes>` fails the write past that many bytes, `free-space:<bytes>` pretends the
/// filesystem has that much room, `pause:<bytes>:<marker>` writes `marker` after that many bytes
/// and waits until the marker is removed (at most 30 s), so a test can kill etcd mid-stream.
pub const FAULT_ENV: &str = "CPM_ETCD_BACKUP_FAULT";

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

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take a verified snapshot, then prune this node's old ones.
    Snapshot {
        /// etcd client URL.
        #[arg(
            long,
            env = "CPM_ETCD_ENDPOINT",
            default_value = "https://127.0.0.1:2379"
        )]
        endpoint: String,
        /// Backups of this node to keep, the new one included (default: `etcd.backup.keep`).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        keep: Option<u32>,
    },
    /// Check a snapshot file's sha256 trailer.
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

/// A test-only injected failure (see [`FAULT_ENV`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Cut the stream after this many bytes.
    Truncate(u64),
    /// Fail the write that would go past this many bytes.
    WriteError(u64),
    /// Pretend the filesystem has this many bytes available.
    FreeSpace(u64),
    /// After this many bytes, write the marker file and sleep.
    Pause {
        /// Bytes before pausing.
        after: u64,
        /// The file written when pausing.
        marker: PathBuf,
    },
}

impl Fault {
    /// Parses the [`FAULT_ENV`] value.
    pub fn parse(s: &str) -> Option<Self> {
        let (kind, rest) = s.split_once(':')?;
        match kind {
            "truncate" => rest.parse().ok().map(Self::Truncate),
            "write-error" => rest.parse().ok().map(Self::WriteError),
            "free-space" => rest.parse().ok().map(Self::FreeSpace),
            "pause" => {
                let (n, marker) = rest.split_once(':')?;
                Some(Self::Pause {
                    after: n.parse().ok()?,
                    marker: marker.into(),
                })
            }
            _ => None,
        }
    }
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
    /// The fault-injection variable is malformed.
    #[error("invalid {FAULT_ENV}: {0:?}")]
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
        Ok(()) => Code::Ok,
        Err(e) => {
            report_fatal(&e, Path::new(TERMINATION_LOG));
            e.code()
        }
    }
}

async fn run_inner(cli: &Cli) -> Result<(), BackupError> {
    match &cli.command {
        Command::Verify { file } => {
            let checked = store::verify_file(file)?;
            println!(
                "OK {}: sha256 trailer matches ({} bytes, sha256 {})",
                file.display(),
                checked.size,
                checked.sha256
            );
            Ok(())
        }
        Command::List { output } => {
            let dir = backup_dir(cli)?;
            print_list(&dir, *output)
        }
        Command::Snapshot { endpoint, keep } => {
            let opts = snapshot_options(cli, endpoint, *keep)?;
            let outcome = tokio::select! {
                r = snapshot::snapshot(&opts) => r?,
                () = shutdown_signal() => return Err(BackupError::Interrupted),
            };
            println!(
                "{} revision {} size {} sha256 {}",
                outcome.path.display(),
                outcome.sidecar.revision,
                outcome.sidecar.size,
                outcome.sidecar.sha256
            );
            Ok(())
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

fn snapshot_options(
    cli: &Cli,
    endpoint: &str,
    keep: Option<u32>,
) -> Result<SnapshotOptions, BackupError> {
    let node = cli.common.node_name()?;
    let dir = backup_dir(cli)?;
    let keep = match keep {
        Some(k) => k,
        None => config(cli)?.etcd.backup.keep,
    };
    let fault = match std::env::var(FAULT_ENV) {
        Ok(v) if !v.is_empty() => Some(Fault::parse(&v).ok_or(BackupError::BadFault(v))?),
        _ => None,
    };
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
        keep: usize::try_from(keep).unwrap_or(usize::MAX),
        etcd,
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
    size: Option<u64>,
    sha256: Option<String>,
    created: Option<String>,
    etcd_version: Option<String>,
}

fn print_list(dir: &Path, output: Output) -> Result<(), BackupError> {
    let entries: Vec<ListEntry> = store::list(dir)?
        .into_iter()
        .map(|(n, s)| ListEntry {
            file: n.file_name(),
            node: n.node.clone(),
            timestamp: n.timestamp.clone(),
            revision: s.as_ref().map_or(n.revision, |s| s.revision),
            size: s.as_ref().map(|s| s.size),
            sha256: s.as_ref().map(|s| s.sha256.clone()),
            created: s.as_ref().map(|s| s.created.clone()),
            etcd_version: s.map(|s| s.etcd_version),
        })
        .collect();
    match output {
        Output::Json => {
            let text = serde_json::to_string_pretty(&entries)
                .map_err(|e| BackupError::Format(e.to_string()))?;
            println!("{text}");
        }
        Output::Table => {
            let width = entries
                .iter()
                .map(|e| e.file.len())
                .max()
                .unwrap_or(4)
                .max(4);
            println!(
                "{:<width$}  {:>10}  {:>12}  CREATED",
                "FILE", "REVISION", "SIZE"
            );
            for e in &entries {
                println!(
                    "{:<width$}  {:>10}  {:>12}  {}",
                    e.file,
                    e.revision,
                    e.size.map_or_else(|| "-".to_string(), |s| s.to_string()),
                    e.created.as_deref().unwrap_or("- (no sidecar)"),
                );
            }
        }
    }
    Ok(())
}
