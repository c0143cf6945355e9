//! The etcd backup status file: the last successful and the last failed snapshot of a node,
//! written by the snapshot tool into its backup directory and read by the agent that exports it
//! as metrics.
//!
//! The file is small JSON, written atomically (see [`write`]), read leniently (unknown fields
//! are ignored, so a newer writer does not break an older reader):
//!
//! ```json
//! {
//!   "lastSuccess": {"timestamp": "2026-01-02T03:04:05Z", "timestampSeconds": 1767323045,
//!                   "file": "etcd-master-1-20260102T030400Z-rev42.db", "revision": 42,
//!                   "sizeBytes": 20480, "durationSeconds": 1.5},
//!   "lastFailure": {"timestamp": "2026-01-01T03:04:05Z", "timestampSeconds": 1767236645,
//!                   "error": "not enough free space in /var/lib/etcd/backups: …"},
//!   "lastRetention": {"timestampSeconds": 1767323045, "kept": 7, "deleted": 1,
//!                     "futureCount": 1, "futureFiles": ["etcd-master-1-20301231T000000Z-rev1.db"],
//!                     "unverifiedCount": 0, "unverifiedFiles": []}
//! }
//! ```
//!
//! `lastSuccess` and `lastRetention` are written together, after retention ran, and
//! `lastSuccess.file` exists when they are written.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use cpm_core::backup_status::{self, BackupStatus};
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join(backup_status::FILE_NAME);
//! assert_eq!(backup_status::read(&path)?, None);
//! backup_status::write(&path, &BackupStatus::default())?;
//! assert_eq!(backup_status::read(&path)?, Some(BackupStatus::default()));
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The status file's name, in the backup directory.
pub const FILE_NAME: &str = ".etcd-backup-status.json";

/// The whole status file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// The last snapshot that was written, verified and renamed into place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Success>,
    /// The last snapshot attempt that failed (kept after later successes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Failure>,
    /// What retention found in the run of `last_success`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_retention: Option<Retention>,
}

/// At most this many names are listed per kind in [`Retention`]; the counts are exact.
pub const LISTED_NAMES: usize = 20;

/// What retention found and did in one successful run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// When it ran, Unix seconds.
    pub timestamp_seconds: i64,
    /// Verified backups of the node kept, the new one included.
    pub kept: u64,
    /// Verified backups deleted.
    pub deleted: u64,
    /// Files named as the node's backups but dated in the future (beyond the skew allowance):
    /// neither counted nor deleted.
    pub future_count: u64,
    /// Their names (at most [`LISTED_NAMES`]).
    #[serde(default)]
    pub future_files: Vec<String>,
    /// Files named as the node's backups that do not match a sidecar: neither counted nor
    /// deleted.
    pub unverified_count: u64,
    /// Their names (at most [`LISTED_NAMES`]).
    #[serde(default)]
    pub unverified_files: Vec<String>,
}

/// A successful snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Success {
    /// When it finished, RFC 3339 UTC.
    pub timestamp: String,
    /// The same, Unix seconds.
    pub timestamp_seconds: i64,
    /// The backup's file name (in the same directory).
    pub file: String,
    /// etcd's revision recorded for it.
    pub revision: i64,
    /// The backup file's size on disk, bytes.
    pub size_bytes: u64,
    /// How long the snapshot took, seconds.
    pub duration_seconds: f64,
}

/// A failed snapshot attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// When it failed, RFC 3339 UTC.
    pub timestamp: String,
    /// The same, Unix seconds.
    pub timestamp_seconds: i64,
    /// The error chain, one line.
    pub error: String,
}

/// Why the status file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// Reading or writing failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// `read` or `write`.
        action: &'static str,
        /// The status file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid status file.
    #[error("{}: invalid backup status at {field}", path.display())]
    Parse {
        /// The status file.
        path: PathBuf,
        /// The JSON path of the bad field (`.` for the document).
        field: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// Reads the status file; `Ok(None)` when it does not exist.
pub fn read(path: &Path) -> Result<Option<BackupStatus>, StatusError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StatusError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de)
        .map(Some)
        .map_err(|e| StatusError::Parse {
            path: path.to_path_buf(),
            field: e.path().to_string(),
            source: e.into_inner(),
        })
}

/// Writes the status file atomically (temp file, fsync, rename; mode 0644).
pub fn write(path: &Path, status: &BackupStatus) -> Result<(), StatusError> {
    let io = |source| StatusError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = serde_json::to_vec_pretty(status).map_err(|e| io(e.into()))?;
    bytes.push(b'\n');
    crate::apply::write_atomic(path, &bytes, 0o644, None, None).map_err(io)
}

#[cfg(test)]
mod tests;
