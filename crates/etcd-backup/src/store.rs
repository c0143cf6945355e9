//! The backup directory: file names, sidecars, the status file, listing, retention and the
//! `verify` check of a file on disk.
//!
//! A backup is `etcd-<node>-<YYYYMMDDTHHMMSSZ>-rev<revision>.db` with a JSON sidecar
//! `<same>.json`. Retention only ever touches files of that shape for this node.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::trailer::{Checked, TrailerError, TrailerHasher};

/// The status file, in the backup directory.
pub const STATUS_FILE: &str = ".etcd-backup-status.json";

/// Prefix of in-progress temp files (hidden, in the backup directory).
pub const TEMP_PREFIX: &str = ".etcd-backup-";

/// The sidecar written next to every backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sidecar {
    /// The backup's file name.
    pub file: String,
    /// The node that took it.
    pub node: String,
    /// UTC time the snapshot started, RFC 3339.
    pub created: String,
    /// etcd's revision from `status` just before the snapshot; the snapshot's own revision is
    /// greater than or equal to it.
    pub revision: i64,
    /// sha256 of the whole file (trailer included), lowercase hex.
    pub sha256: String,
    /// File size in bytes.
    pub size: u64,
    /// The etcd server version.
    pub etcd_version: String,
    /// The member that served the snapshot, hex (as etcdctl prints it).
    pub member_id: String,
    /// How long the snapshot took, seconds.
    pub duration_seconds: f64,
}

/// The last successful snapshot, for an agent to export as
/// `cpm_etcd_backup_last_success_timestamp_seconds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Unix time of the last success, seconds.
    pub last_success_timestamp_seconds: i64,
    /// The same, RFC 3339.
    pub last_success: String,
    /// The backup written.
    pub file: String,
}

/// A parsed backup file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupName {
    /// The node.
    pub node: String,
    /// `YYYYMMDDTHHMMSSZ`.
    pub timestamp: String,
    /// The revision.
    pub revision: i64,
}

impl BackupName {
    /// The file name.
    pub fn file_name(&self) -> String {
        format!(
            "etcd-{}-{}-rev{}.db",
            self.node, self.timestamp, self.revision
        )
    }

    /// Parses `etcd-<node>-<YYYYMMDDTHHMMSSZ>-rev<digits>.db`; `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        let rest = name.strip_prefix("etcd-")?.strip_suffix(".db")?;
        let (rest, rev) = rest.rsplit_once("-rev")?;
        if rev.is_empty() || !rev.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let revision = rev.parse().ok()?;
        let (node, ts) = rest.rsplit_once('-')?;
        if node.is_empty() || !is_timestamp(ts) {
            return None;
        }
        Some(Self {
            node: node.to_string(),
            timestamp: ts.to_string(),
            revision,
        })
    }
}

fn is_timestamp(ts: &str) -> bool {
    let b = ts.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

/// A filesystem error with the path and what was being done.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}", path.display())]
pub struct IoError {
    /// What was being done.
    pub action: &'static str,
    /// The path.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

impl IoError {
    /// A closure that wraps an `io::Error` for `action` on `path`.
    pub fn on(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| Self {
            action,
            path,
            source,
        }
    }
}

/// The backups in `dir` (any node), oldest first, with their sidecars when readable.
pub fn list(dir: &Path) -> Result<Vec<(BackupName, Option<Sidecar>)>, IoError> {
    let mut out: Vec<_> = backups(dir)?
        .into_iter()
        .map(|n| {
            let sidecar = std::fs::read(dir.join(format!("{}.json", n.file_name())))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            (n, sidecar)
        })
        .collect();
    out.sort_by(|(a, _), (b, _)| order(a, b));
    Ok(out)
}

fn order(a: &BackupName, b: &BackupName) -> std::cmp::Ordering {
    (&a.timestamp, a.revision, &a.node).cmp(&(&b.timestamp, b.revision, &b.node))
}

fn backups(dir: &Path) -> Result<Vec<BackupName>, IoError> {
    let rd = std::fs::read_dir(dir).map_err(IoError::on("read directory", dir))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(IoError::on("read directory", dir))?;
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if let Some(n) = entry.file_name().to_str().and_then(BackupName::parse)
            && is_file
        {
            out.push(n);
        }
    }
    Ok(out)
}

/// Deletes this node's backups (and their sidecars) beyond the newest `keep`; returns the
/// deleted backup names. Nothing else in `dir` is touched.
pub fn prune(dir: &Path, node: &str, keep: usize) -> Result<Vec<String>, IoError> {
    let mut mine: Vec<_> = backups(dir)?
        .into_iter()
        .filter(|n| n.node == node)
        .collect();
    mine.sort_by(|a, b| order(b, a));
    let mut deleted = Vec::new();
    for n in mine.into_iter().skip(keep) {
        let db = dir.join(n.file_name());
        std::fs::remove_file(&db).map_err(IoError::on("remove old backup", &db))?;
        let sidecar = dir.join(format!("{}.json", n.file_name()));
        match std::fs::remove_file(&sidecar) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(IoError::on("remove old sidecar", &sidecar)(e)),
        }
        deleted.push(n.file_name());
    }
    if !deleted.is_empty() {
        sync_dir(dir)?;
    }
    Ok(deleted)
}

/// fsyncs a directory so renames and removals in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), IoError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(IoError::on("fsync directory", dir))
}

/// Why `verify` failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The file could not be read.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The file is not an intact etcd snapshot.
    #[error("{}: not an intact etcd snapshot", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: TrailerError,
    },
}

/// Checks a snapshot file's sha256 trailer, reading it in constant memory.
pub fn verify_file(path: &Path) -> Result<Checked, VerifyError> {
    let mut f = std::fs::File::open(path).map_err(IoError::on("open", path))?;
    let mut h = TrailerHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(IoError::on("read", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finish().map_err(|source| VerifyError::Invalid {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_foreign_names_do_not_parse() {
        let n = BackupName {
            node: "master-1".into(),
            timestamp: "20260101T010203Z".into(),
            revision: 42,
        };
        assert_eq!(n.file_name(), "etcd-master-1-20260101T010203Z-rev42.db");
        assert_eq!(BackupName::parse(&n.file_name()), Some(n));
        for bad in [
            "etcd-master-1-20260101T010203Z-rev42.db.json",
            "etcd-master-1-20260101T010203Z-rev.db",
            "etcd-master-1-2026010T010203Z-rev1.db",
            "etcd--20260101T010203Z-rev1.db",
            "snapshot.db",
            "etcd-master-1-20260101T010203Z-rev1x.db",
        ] {
            assert_eq!(BackupName::parse(bad), None, "{bad}");
        }
    }
}
