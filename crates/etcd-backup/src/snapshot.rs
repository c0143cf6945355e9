//! `etcd-backup snapshot`: status, free-space check, the snapshot streamed to a hidden temp file
//! in the backup directory (constant memory), the trailer verified, fsync, rename, sidecar,
//! status file, and only then retention.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cpm_core::apply::write_atomic;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use tokio::io::AsyncWriteExt;
use tracing::info;

use crate::store::{
    BackupName, IoError, STATUS_FILE, Sidecar, Status, TEMP_PREFIX, prune, sync_dir,
};
use crate::trailer::TrailerHasher;
use crate::{BackupError, Fault};

/// How long the stream may go without a message before the snapshot is abandoned.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What to snapshot where.
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    /// The backup directory (created 0700 when missing).
    pub dir: PathBuf,
    /// This node's name (in file names; retention only touches this node's files).
    pub node: String,
    /// Backups of this node to keep, the new one included.
    pub keep: usize,
    /// How to reach etcd.
    pub etcd: cpm_core::etcd::EtcdOptions,
    /// A test-only injected failure.
    pub fault: Option<Fault>,
}

/// What a successful snapshot wrote.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The new backup.
    pub path: PathBuf,
    /// Its sidecar.
    pub sidecar: Sidecar,
    /// Old backups deleted by retention.
    pub pruned: Vec<String>,
}

/// Removes the temp file on drop unless disarmed (errors, cancellation and panics alike).
struct TempGuard {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Takes one snapshot; see the module docs for the order of steps.
pub async fn snapshot(opts: &SnapshotOptions) -> Result<Outcome, BackupError> {
    let dir = &opts.dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(IoError::on("create directory", dir))?;
    let mut client = cpm_core::etcd::connect(&opts.etcd).await?;
    let status = client.status().await.map_err(|source| BackupError::Etcd {
        what: "status",
        source,
    })?;
    let (revision, member_id) = status
        .header()
        .map_or((0, 0), |h| (h.revision(), h.member_id()));
    let db_size = u64::try_from(status.db_size()).unwrap_or(0);
    check_space(dir, db_size, opts.fault.as_ref())?;

    let started = Instant::now();
    let now = OffsetDateTime::now_utc();
    let timestamp = now
        .format(format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .map_err(|e| BackupError::Format(e.to_string()))?;
    let name = BackupName {
        node: opts.node.clone(),
        timestamp,
        revision,
    };
    let final_path = dir.join(name.file_name());
    if final_path.exists() {
        return Err(BackupError::Exists(final_path));
    }
    let mut guard = TempGuard {
        path: dir.join(format!(
            "{TEMP_PREFIX}{}-{:08x}.tmp",
            std::process::id(),
            rand::random::<u32>()
        )),
        armed: true,
    };
    let tmp = guard.path.clone();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(IoError::on("create", &tmp))?;
    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(file));
    let mut stream = client
        .snapshot()
        .await
        .map_err(|source| BackupError::Etcd {
            what: "snapshot",
            source,
        })?;
    let mut hasher = TrailerHasher::new();
    let mut paused = false;
    loop {
        let msg = tokio::time::timeout(STALL_TIMEOUT, stream.message())
            .await
            .map_err(|_| BackupError::Stalled(STALL_TIMEOUT))?
            .map_err(|source| BackupError::Etcd {
                what: "snapshot stream",
                source,
            })?;
        let Some(msg) = msg else { break };
        let mut blob = msg.blob();
        if let Some(Fault::Truncate(at)) = opts.fault {
            let left = at.saturating_sub(hasher.len());
            blob = &blob[..blob.len().min(usize::try_from(left).unwrap_or(usize::MAX))];
        }
        if let Some(Fault::WriteError(at)) = opts.fault
            && hasher.len() + blob.len() as u64 > at
        {
            return Err(IoError::on("write", &tmp)(std::io::Error::other(
                "injected write failure (CPM_ETCD_BACKUP_FAULT)",
            ))
            .into());
        }
        file.write_all(blob)
            .await
            .map_err(IoError::on("write", &tmp))?;
        hasher.update(blob);
        if let Some(Fault::Pause { after, marker }) = &opts.fault
            && hasher.len() >= *after
            && !paused
        {
            paused = true;
            write_atomic(marker, b"paused\n", 0o644, None, None)
                .map_err(IoError::on("write", marker))?;
            // Until the test removes the marker (it kills etcd first), at most 30 s.
            for _ in 0..300 {
                if !marker.exists() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let checked = hasher.finish().map_err(BackupError::Trailer)?;
    file.flush().await.map_err(IoError::on("write", &tmp))?;
    let file = file.into_inner();
    file.sync_all().await.map_err(IoError::on("fsync", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, &final_path).map_err(IoError::on("rename", &tmp))?;
    guard.armed = false;
    sync_dir(dir)?;

    let sidecar = Sidecar {
        file: name.file_name(),
        node: opts.node.clone(),
        created: now
            .format(&Rfc3339)
            .map_err(|e| BackupError::Format(e.to_string()))?,
        revision,
        sha256: checked.sha256,
        size: checked.size,
        etcd_version: status.version().to_string(),
        member_id: format!("{member_id:x}"),
        duration_seconds: started.elapsed().as_secs_f64(),
    };
    if let Err(e) = write_json(&dir.join(format!("{}.json", name.file_name())), &sidecar) {
        // A backup without its sidecar would be listed without metadata: take it back.
        let _ = std::fs::remove_file(&final_path);
        return Err(e);
    }
    let done = OffsetDateTime::now_utc();
    let status_file = Status {
        last_success_timestamp_seconds: done.unix_timestamp(),
        last_success: done
            .format(&Rfc3339)
            .map_err(|e| BackupError::Format(e.to_string()))?,
        file: name.file_name(),
    };
    write_json(&dir.join(STATUS_FILE), &status_file)?;
    info!(file = %final_path.display(), revision, size = sidecar.size, "snapshot written and verified");
    let pruned = prune(dir, &opts.node, opts.keep)?;
    for p in &pruned {
        info!(file = %p, "old backup removed");
    }
    Ok(Outcome {
        path: final_path,
        sidecar,
        pruned,
    })
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), BackupError> {
    let mut bytes =
        serde_json::to_vec_pretty(value).map_err(|e| BackupError::Format(e.to_string()))?;
    bytes.push(b'\n');
    write_atomic(path, &bytes, 0o644, None, None).map_err(IoError::on("write", path))?;
    Ok(())
}

/// Refuses to start unless the filesystem of `dir` has the DB size plus 10 % free.
fn check_space(dir: &Path, db_size: u64, fault: Option<&Fault>) -> Result<(), BackupError> {
    let available = match fault {
        Some(Fault::FreeSpace(n)) => *n,
        _ => {
            let st = rustix::fs::statvfs(dir)
                .map_err(|e| IoError::on("statvfs", dir)(std::io::Error::from(e)))?;
            st.f_bavail.saturating_mul(st.f_frsize)
        }
    };
    let needed = db_size.saturating_add(db_size / 10);
    if available < needed {
        return Err(BackupError::NoSpace {
            dir: dir.to_path_buf(),
            available,
            needed,
            db_size,
        });
    }
    Ok(())
}
