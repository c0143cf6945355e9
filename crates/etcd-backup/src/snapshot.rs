//! `etcd-backup snapshot`: the free-space check, the snapshot streamed to a hidden temp file in
//! the backup directory (constant memory, optionally zstd-compressed on the way), the trailer
//! verified, fsync, rename, sidecar, retention, and only then the status file.

use std::io::IsTerminal;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cpm_core::apply::write_atomic;
use cpm_core::backup_status::{self, BackupStatus, Failure, LISTED_NAMES, Retention, Success};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::PrimitiveDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

use crate::BackupError;
use crate::retention::Policy;
use crate::store::{
    BackupName, Compression, IoError, PrunePlan, Sidecar, apply_prune, plan_prune,
    sweep_temp_files, sync_dir, temp_name,
};
use crate::trailer::{TrailerHasher, hex};

/// How long the stream may go without a message before the snapshot is abandoned.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The write buffer between the stream and the file (etcd sends 32 KiB messages).
pub const WRITE_BUFFER: usize = 1 << 20;

/// The zstd level of compressed backups (zstd's default: fast, a good ratio on etcd data).
pub const ZSTD_LEVEL: i32 = 3;

/// What to snapshot where.
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    /// The backup directory (created 0700 when missing).
    pub dir: PathBuf,
    /// This node's name (in file names; retention only touches this node's files).
    pub node: String,
    /// Which of this node's backups to keep, the new one included.
    pub policy: Policy,
    /// How to store the snapshot.
    pub compression: Compression,
    /// How to reach etcd.
    pub etcd: cpm_core::etcd::EtcdOptions,
    /// Whether to draw a progress line on stderr (a terminal).
    pub progress: bool,
    /// A test-only injected failure.
    #[cfg(feature = "fault-injection")]
    pub fault: Option<crate::fault::Fault>,
}

impl SnapshotOptions {
    #[cfg(feature = "fault-injection")]
    fn fault(&self) -> Option<&crate::fault::Fault> {
        self.fault.as_ref()
    }
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
    /// A handle holding the temp file's exclusive `flock` until the end of the run, so a
    /// concurrent run's sweep never takes it for a crashed run's leftover.
    _lock: Option<std::fs::File>,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The bytes that go to disk: as they come, or through a zstd stream (then it counts and hashes
/// the compressed bytes; a plain file's size and hash are the snapshot's own).
struct Sink {
    file: tokio::io::BufWriter<tokio::fs::File>,
    zstd: Option<zstd::stream::write::Encoder<'static, Vec<u8>>>,
    stored: Sha256,
    stored_len: u64,
}

impl Sink {
    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        match &mut self.zstd {
            None => self.file.write_all(chunk).await,
            Some(enc) => {
                std::io::Write::write_all(enc, chunk)?;
                let mut out = std::mem::take(enc.get_mut());
                self.put(&out).await?;
                // Hand the buffer back, emptied, so its capacity is reused.
                out.clear();
                if let Some(enc) = &mut self.zstd {
                    *enc.get_mut() = out;
                }
                Ok(())
            }
        }
    }

    async fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stored.update(bytes);
        self.stored_len += bytes.len() as u64;
        self.file.write_all(bytes).await
    }

    /// Ends the zstd frame, flushes and fsyncs; returns the compressed size and sha256 (`None`
    /// for a plain file).
    async fn finish(mut self) -> std::io::Result<Option<(u64, String)>> {
        let compressed = match self.zstd.take() {
            Some(enc) => {
                let tail = enc.finish()?;
                self.put(&tail).await?;
                true
            }
            None => false,
        };
        self.file.flush().await?;
        let file = self.file.into_inner();
        file.sync_all().await?;
        Ok(compressed.then(|| (self.stored_len, hex(&self.stored.finalize()))))
    }
}

/// A progress line on stderr, redrawn at most once a second.
struct Progress {
    enabled: bool,
    total: u64,
    started: Instant,
    last: Instant,
    drawn: bool,
}

impl Progress {
    fn update(&mut self, done: u64) {
        if !self.enabled || self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last = Instant::now();
        self.drawn = true;
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        eprint!(
            "\rsnapshot: {:.0} MiB of ~{:.0} MiB ({:.0} MiB/s)   ",
            mib(done),
            mib(self.total),
            mib(done) / secs
        );
    }

    fn end(&self) {
        if self.drawn {
            eprintln!();
        }
    }
}

/// What etcd reported just before the snapshot, and the name the backup gets.
struct Probe {
    client: etcd_client::Client,
    revision: i64,
    member_id: u64,
    db_size: u64,
    version: String,
    /// The start time (UTC), in the name to the second.
    now: OffsetDateTime,
    name: BackupName,
}

/// Connects to etcd and asks for its status: the revision and start time name the backup.
async fn probe(opts: &SnapshotOptions) -> Result<Probe, BackupError> {
    let mut client = cpm_core::etcd::connect(&opts.etcd).await?;
    let status = client.status().await.map_err(|source| BackupError::Etcd {
        what: "status",
        source,
    })?;
    let (revision, member_id) = status
        .header()
        .map_or((0, 0), |h| (h.revision(), h.member_id()));
    let now = OffsetDateTime::now_utc();
    let name = BackupName {
        node: opts.node.clone(),
        time: PrimitiveDateTime::new(
            now.date(),
            now.time().replace_nanosecond(0).unwrap_or(now.time()),
        ),
        revision,
        compression: opts.compression,
    };
    Ok(Probe {
        client,
        revision,
        member_id,
        db_size: u64::try_from(status.db_size()).unwrap_or(0),
        version: status.version().to_string(),
        now,
        name,
    })
}

/// `--dry-run`: connects to etcd and returns, as lines for stdout, what [`snapshot`] would do
/// now: the directory it would create or tighten, the backup and sidecar it would write (the
/// name it would have at this second), the backups retention would delete and keep, the files it
/// would ignore, the status file. Changes nothing: no directory, no temp file, no status, no
/// deletion. Fails as the snapshot would (etcd unreachable, not enough free space, the name
/// taken).
pub async fn dry_run(opts: &SnapshotOptions) -> Result<String, BackupError> {
    let dir = &opts.dir;
    let mut out = Vec::new();
    let exists = match std::fs::metadata(dir) {
        Ok(md) => {
            let mode = md.permissions().mode() & 0o7777;
            if mode != 0o700 {
                out.push(format!("mode {mode:04o} -> 0700 {}", dir.display()));
            }
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            out.push(format!("mkdir 0700 {}", dir.display()));
            false
        }
        Err(e) => return Err(IoError::on("stat", dir)(e).into()),
    };
    let p = probe(opts).await?;
    // The space check runs on the filesystem the directory would be created on.
    let existing = dir.ancestors().find(|a| a.is_dir()).unwrap_or(dir);
    check_space(existing, p.db_size, None)?;
    let final_path = dir.join(p.name.file_name());
    if final_path.exists() {
        return Err(BackupError::Exists(final_path));
    }
    out.push(format!(
        "create {} (etcd {} member {:x}, revision {}, database {} bytes)",
        final_path.display(),
        p.version,
        p.member_id,
        p.revision,
        p.db_size
    ));
    out.push(format!(
        "create {}",
        dir.join(p.name.sidecar_name()).display()
    ));
    if exists {
        let plan = plan_prune(dir, &opts.node, &opts.policy, &p.name, utc(p.now))?;
        for f in plan.keep.iter().filter(|f| **f != p.name.file_name()) {
            out.push(format!("keep {}", dir.join(f).display()));
        }
        for f in &plan.delete {
            out.push(format!("delete {}", dir.join(f).display()));
            out.push(format!(
                "delete {}",
                dir.join(format!("{f}.json")).display()
            ));
        }
        for f in &plan.future {
            out.push(format!(
                "ignore {}: dated after now + {} s",
                dir.join(f).display(),
                crate::retention::FUTURE_SKEW.whole_seconds()
            ));
        }
        for (f, why) in &plan.unverified {
            out.push(format!(
                "ignore {}: not verified: {why}",
                dir.join(f).display()
            ));
        }
        for f in sweep_temp_files(dir, std::time::SystemTime::now(), false)? {
            out.push(format!(
                "delete {}: left by an interrupted run",
                dir.join(f).display()
            ));
        }
    }
    let status = dir.join(backup_status::FILE_NAME);
    let verb = if status.exists() { "replace" } else { "create" };
    out.push(format!("{verb} {}", status.display()));
    let mut text = out.join("\n");
    text.push('\n');
    Ok(text)
}

/// Takes one snapshot; see the module docs for the order of steps.
pub async fn snapshot(opts: &SnapshotOptions) -> Result<Outcome, BackupError> {
    let dir = &opts.dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(IoError::on("create directory", dir))?;
    tighten_dir(dir)?;
    for f in sweep_temp_files(dir, std::time::SystemTime::now(), true)? {
        info!(file = %f, "removed a temp file left by an interrupted run");
    }
    let Probe {
        mut client,
        revision,
        member_id,
        db_size,
        version,
        now,
        name,
    } = probe(opts).await?;
    #[cfg(feature = "fault-injection")]
    let free_space = match opts.fault() {
        Some(crate::fault::Fault::FreeSpace(n)) => Some(*n),
        _ => None,
    };
    #[cfg(not(feature = "fault-injection"))]
    let free_space = None;
    check_space(dir, db_size, free_space)?;

    let started = Instant::now();
    let final_path = dir.join(name.file_name());
    if final_path.exists() {
        return Err(BackupError::Exists(final_path));
    }
    let mut guard = TempGuard {
        path: dir.join(temp_name(std::process::id(), rand::random::<u32>())),
        armed: true,
        _lock: None,
    };
    let tmp = guard.path.clone();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(IoError::on("create", &tmp))?;
    let lock = file.try_clone().map_err(IoError::on("lock", &tmp))?;
    lock.try_lock().map_err(|e| {
        IoError::on("lock", &tmp)(match e {
            std::fs::TryLockError::Error(e) => e,
            std::fs::TryLockError::WouldBlock => std::io::ErrorKind::WouldBlock.into(),
        })
    })?;
    guard._lock = Some(lock);
    let zstd = match opts.compression {
        Compression::None => None,
        Compression::Zstd => Some(
            zstd::stream::write::Encoder::new(Vec::with_capacity(256 << 10), ZSTD_LEVEL)
                .map_err(IoError::on("start zstd for", &tmp))?,
        ),
    };
    let mut sink = Sink {
        file: tokio::io::BufWriter::with_capacity(WRITE_BUFFER, tokio::fs::File::from_std(file)),
        zstd,
        stored: Sha256::new(),
        stored_len: 0,
    };
    let mut stream = client
        .snapshot()
        .await
        .map_err(|source| BackupError::Etcd {
            what: "snapshot",
            source,
        })?;
    let mut hasher = TrailerHasher::new();
    let mut progress = Progress {
        enabled: opts.progress,
        total: db_size,
        started,
        last: started,
        drawn: false,
    };
    #[cfg(feature = "fault-injection")]
    let mut paused = false;
    let streamed = async {
        loop {
            let msg = tokio::time::timeout(STALL_TIMEOUT, stream.message())
                .await
                .map_err(|_| BackupError::Stalled(STALL_TIMEOUT))?
                .map_err(|source| BackupError::Etcd {
                    what: "snapshot stream",
                    source,
                })?;
            let Some(msg) = msg else { break };
            let blob = msg.blob();
            #[cfg(feature = "fault-injection")]
            let blob = crate::fault::on_chunk(opts.fault(), hasher.len(), blob, &tmp)?;
            sink.write(blob).await.map_err(IoError::on("write", &tmp))?;
            hasher.update(blob);
            progress.update(hasher.len());
            #[cfg(feature = "fault-injection")]
            crate::fault::maybe_pause(opts.fault(), hasher.len(), &mut paused).await?;
        }
        Ok::<(), BackupError>(())
    }
    .await;
    progress.end();
    streamed?;
    let checked = hasher.finish().map_err(BackupError::Trailer)?;
    let (size, sha256) = sink
        .finish()
        .await
        .map_err(IoError::on("write", &tmp))?
        .unwrap_or_else(|| (checked.size, checked.sha256.clone()));
    std::fs::rename(&tmp, &final_path).map_err(IoError::on("rename", &tmp))?;
    guard.armed = false;
    sync_dir(dir)?;

    let compressed = opts.compression != Compression::None;
    let sidecar = Sidecar {
        file: name.file_name(),
        node: opts.node.clone(),
        created: rfc3339(now)?,
        revision,
        sha256,
        size,
        compression: opts.compression,
        snapshot_sha256: compressed.then(|| checked.sha256.clone()),
        snapshot_size: compressed.then_some(checked.size),
        etcd_version: version,
        member_id: format!("{member_id:x}"),
        duration_seconds: started.elapsed().as_secs_f64(),
    };
    if let Err(e) = write_json(&dir.join(name.sidecar_name()), &sidecar) {
        // A backup without its sidecar would be listed without metadata: take it back.
        let _ = std::fs::remove_file(&final_path);
        return Err(e);
    }
    info!(file = %final_path.display(), revision, size, snapshot_size = checked.size, "snapshot written and verified");

    // Nothing below awaits: once the backup is in place, a signal cannot cut retention or the
    // status short (the hashing of older backups runs to its end first).
    let plan = plan_prune(
        dir,
        &opts.node,
        &opts.policy,
        &name,
        utc(OffsetDateTime::now_utc()),
    )?;
    report_ignored(&plan);
    #[cfg(feature = "fault-injection")]
    if let (Some(crate::fault::Fault::RemoveError), Some(first)) =
        (opts.fault(), plan.delete.first())
    {
        return Err(
            IoError::on("remove old backup", &dir.join(first))(std::io::Error::other(
                "injected remove failure (CPM_ETCD_BACKUP_FAULT)",
            ))
            .into(),
        );
    }
    let pruned = apply_prune(dir, &plan)?;
    for p in &pruned {
        info!(file = %p, "old backup removed");
    }
    // Success is recorded only now, and only for a backup that is still there.
    let stored = std::fs::symlink_metadata(&final_path)
        .map_err(IoError::on("stat the new backup", &final_path))?;
    let done = OffsetDateTime::now_utc();
    let mut status_file = read_status(dir);
    status_file.last_success = Some(Success {
        timestamp: rfc3339(done)?,
        timestamp_seconds: done.unix_timestamp(),
        file: name.file_name(),
        revision,
        size_bytes: stored.len(),
        duration_seconds: sidecar.duration_seconds,
    });
    status_file.last_retention = Some(retention_status(&plan, pruned.len(), done));
    let status_path = dir.join(backup_status::FILE_NAME);
    backup_status::write(&status_path, &status_file)?;
    Ok(Outcome {
        path: final_path,
        sidecar,
        pruned,
    })
}

/// A UTC date-time without offset, as in backup names.
fn utc(t: OffsetDateTime) -> PrimitiveDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    PrimitiveDateTime::new(t.date(), t.time())
}

/// Logs, once each, the files retention neither counts nor deletes.
fn report_ignored(plan: &PrunePlan) {
    for f in &plan.future {
        warn!(
            file = %f,
            skew_seconds = crate::retention::FUTURE_SKEW.whole_seconds(),
            "named as this node's backup but dated in the future: not counted, not deleted"
        );
    }
    for (f, why) in &plan.unverified {
        warn!(file = %f, reason = %why, "named as this node's backup but not verified: not counted, not deleted");
    }
}

/// The status file's record of one retention run.
fn retention_status(plan: &PrunePlan, deleted: usize, at: OffsetDateTime) -> Retention {
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    Retention {
        timestamp_seconds: at.unix_timestamp(),
        kept: count(plan.keep.len()),
        deleted: count(deleted),
        future_count: count(plan.future.len()),
        future_files: plan.future.iter().take(LISTED_NAMES).cloned().collect(),
        unverified_count: count(plan.unverified.len()),
        unverified_files: plan
            .unverified
            .iter()
            .take(LISTED_NAMES)
            .map(|(f, _)| f.clone())
            .collect(),
    }
}

/// The backup directory's mode (PRODUCT.md §2: 0700, owned by etcd-backup): backups hold every
/// secret of the cluster. A directory created by someone else (the kubelet makes hostPath
/// directories 0755) is set to 0700.
fn tighten_dir(dir: &Path) -> Result<(), BackupError> {
    let mode = std::fs::metadata(dir)
        .map_err(IoError::on("stat", dir))?
        .permissions()
        .mode()
        & 0o7777;
    if mode != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(IoError::on("chmod 0700", dir))?;
        info!(dir = %dir.display(), from = %format!("{mode:04o}"), "backup directory set to 0700");
    }
    Ok(())
}

/// Records a failed attempt in the status file (best effort: a warning when that fails too,
/// e.g. on a full disk). The last success is kept.
pub fn record_failure(dir: &Path, err: &BackupError) {
    if !dir.is_dir() {
        return;
    }
    let now = OffsetDateTime::now_utc();
    let mut status = read_status(dir);
    status.last_failure = Some(Failure {
        timestamp: now.format(&Rfc3339).unwrap_or_default(),
        timestamp_seconds: now.unix_timestamp(),
        error: cpm_core::exit::chain(err),
    });
    let path = dir.join(backup_status::FILE_NAME);
    if let Err(e) = backup_status::write(&path, &status) {
        warn!(error = %cpm_core::exit::chain(&e), "cannot record the failure in the status file");
    }
}

/// The current status file, or an empty one when it is missing or unreadable (then rewritten).
fn read_status(dir: &Path) -> BackupStatus {
    match backup_status::read(&dir.join(backup_status::FILE_NAME)) {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => {
            warn!(error = %cpm_core::exit::chain(&e), "status file unreadable; starting a new one");
            BackupStatus::default()
        }
    }
}

fn rfc3339(t: OffsetDateTime) -> Result<String, BackupError> {
    t.format(&Rfc3339)
        .map_err(|e| BackupError::Format(e.to_string()))
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), BackupError> {
    let mut bytes =
        serde_json::to_vec_pretty(value).map_err(|e| BackupError::Format(e.to_string()))?;
    bytes.push(b'\n');
    write_atomic(path, &bytes, 0o644, None, None).map_err(IoError::on("write", path))?;
    Ok(())
}

/// Refuses to start unless the filesystem of `dir` has the DB size plus 10 % free
/// (`available` overrides statvfs for the fault-injection tests).
fn check_space(dir: &Path, db_size: u64, available: Option<u64>) -> Result<(), BackupError> {
    let available = match available {
        Some(n) => n,
        None => {
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

/// Whether stderr is a terminal (the progress line is drawn only there).
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}
