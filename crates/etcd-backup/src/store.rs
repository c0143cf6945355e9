//! The backup directory: file names, sidecars, listing, retention and the `verify` check of a
//! file on disk.
//!
//! A backup is `etcd-<node>-<YYYYMMDDTHHMMSSZ>-rev<revision>.db` (`.db.zst` when compressed)
//! with a JSON sidecar `<same>.json`. Retention only ever deletes files of that shape for this
//! node, and of those only verified backups: the sidecar exists, names the file, and records
//! its size and sha256 ([`check_against_sidecar`]). A name alone is never trusted.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::PrimitiveDateTime;
use time::macros::format_description;

use crate::retention::{self, Policy};
use crate::trailer::{Checked, TrailerError, TrailerHasher, hex};

/// Prefix of in-progress temp files (hidden, in the backup directory):
/// `.etcd-backup-<pid>-<8 hex digits>.tmp`.
pub const TEMP_PREFIX: &str = ".etcd-backup-";

/// A temp file left unmodified this long, and locked by no process, is a crashed run's
/// leftover ([`sweep_temp_files`]). The lock is the real test (a live run holds it from the
/// moment it creates the file); the age only covers the instant between creating the file
/// and locking it.
pub const TEMP_SWEEP_AGE: std::time::Duration = std::time::Duration::from_secs(300);

/// The temp file name of a run: `.etcd-backup-<pid>-<random>.tmp`.
pub fn temp_name(pid: u32, random: u32) -> String {
    format!("{TEMP_PREFIX}{pid}-{random:08x}.tmp")
}

/// Whether `name` is exactly the shape [`temp_name`] makes (nothing else is ever swept).
pub fn is_temp_name(name: &str) -> bool {
    let Some(rest) = name
        .strip_prefix(TEMP_PREFIX)
        .and_then(|r| r.strip_suffix(".tmp"))
    else {
        return false;
    };
    let Some((pid, random)) = rest.split_once('-') else {
        return false;
    };
    !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && random.len() == 8
        && random.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Temp files of crashed runs in `dir`: named by [`temp_name`], regular files, unmodified for
/// [`TEMP_SWEEP_AGE`] before `now`, and not locked by any process (a run holds an exclusive
/// `flock` on its temp file until it is renamed). Removes them when `remove` (each while
/// holding its lock, so no run can take it over meanwhile); returns their names. A file that
/// cannot be checked or removed is left, with a warning.
pub fn sweep_temp_files(
    dir: &Path,
    now: std::time::SystemTime,
    remove: bool,
) -> Result<Vec<String>, IoError> {
    let mut swept = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(IoError::on("read directory", dir))?;
    for entry in rd {
        let entry = entry.map_err(IoError::on("read directory", dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !is_temp_name(&name) || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|m| now.duration_since(m).is_ok_and(|age| age >= TEMP_SWEEP_AGE));
        if !stale {
            continue;
        }
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot check a leftover temp file");
                continue;
            }
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => continue,
            Err(std::fs::TryLockError::Error(e)) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot check a leftover temp file");
                continue;
            }
        }
        if remove && let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(file = %path.display(), error = %e, "cannot remove a leftover temp file");
            continue;
        }
        swept.push(name);
    }
    swept.sort();
    Ok(swept)
}

/// The zstd frame magic number, the first four bytes of a zstd file.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// How a backup file is stored.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// The snapshot as etcd sent it (`.db`).
    #[default]
    None,
    /// One zstd stream of the snapshot (`.db.zst`; `zstd -d` gives the `.db`).
    Zstd,
}

impl Compression {
    /// The file name suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::None => ".db",
            Self::Zstd => ".db.zst",
        }
    }

    /// The name used in sidecars and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Zstd => "zstd",
        }
    }
}

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
    /// sha256 of the file as stored (trailer included; of the compressed bytes when
    /// compressed), lowercase hex.
    pub sha256: String,
    /// File size in bytes, as stored.
    pub size: u64,
    /// `none` or `zstd` (absent in sidecars of older versions: `none`).
    #[serde(default)]
    pub compression: Compression,
    /// Compressed backups only: sha256 of the snapshot itself (what `zstd -d` gives back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_sha256: Option<String>,
    /// Compressed backups only: size of the snapshot itself, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_size: Option<u64>,
    /// The etcd server version.
    pub etcd_version: String,
    /// The member that served the snapshot, hex (as etcdctl prints it).
    pub member_id: String,
    /// How long the snapshot took, seconds.
    pub duration_seconds: f64,
}

/// A parsed backup file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupName {
    /// The node.
    pub node: String,
    /// The UTC start time, to the second.
    pub time: PrimitiveDateTime,
    /// The revision.
    pub revision: i64,
    /// `.db` or `.db.zst`.
    pub compression: Compression,
}

impl BackupName {
    /// The file name.
    pub fn file_name(&self) -> String {
        format!(
            "etcd-{}-{}-rev{}{}",
            self.node,
            self.timestamp(),
            self.revision,
            self.compression.suffix()
        )
    }

    /// The sidecar's file name.
    pub fn sidecar_name(&self) -> String {
        format!("{}.json", self.file_name())
    }

    /// The time as in the name, `YYYYMMDDTHHMMSSZ`.
    pub fn timestamp(&self) -> String {
        self.time
            .format(TIMESTAMP)
            .expect("invariant: a date-time formats")
    }

    /// Parses `etcd-<node>-<YYYYMMDDTHHMMSSZ>-rev<digits>.db[.zst]` (a real date and time);
    /// `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        let rest = name.strip_prefix("etcd-")?;
        let (rest, compression) = match rest.strip_suffix(".db.zst") {
            Some(r) => (r, Compression::Zstd),
            None => (rest.strip_suffix(".db")?, Compression::None),
        };
        let (rest, rev) = rest.rsplit_once("-rev")?;
        if rev.is_empty() || !rev.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let revision = rev.parse().ok()?;
        let (node, ts) = rest.rsplit_once('-')?;
        if node.is_empty() || ts.len() != 16 {
            return None;
        }
        let time = PrimitiveDateTime::parse(ts, TIMESTAMP).ok()?;
        Some(Self {
            node: node.to_string(),
            time,
            revision,
            compression,
        })
    }

    /// Sort key: time, then revision, then node (oldest first).
    pub fn order_key(&self) -> (PrimitiveDateTime, i64, &str, Compression) {
        (self.time, self.revision, &self.node, self.compression)
    }
}

/// `YYYYMMDDTHHMMSSZ`.
pub const TIMESTAMP: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

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
    let mut names = backups(dir)?;
    names.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    Ok(names
        .into_iter()
        .map(|n| {
            let sidecar = read_sidecar(&dir.join(n.sidecar_name()));
            (n, sidecar)
        })
        .collect())
}

/// The sidecar at `path`, when it exists and parses.
pub fn read_sidecar(path: &Path) -> Option<Sidecar> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
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

/// Why a file named as one of this node's backups does not count as a verified backup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unverified {
    /// No sidecar next to it.
    #[error("no sidecar {sidecar}")]
    NoSidecar {
        /// The sidecar's name.
        sidecar: String,
    },
    /// The sidecar does not parse.
    #[error("sidecar {sidecar} is not valid: {reason}")]
    BadSidecar {
        /// The sidecar's name.
        sidecar: String,
        /// The parse error.
        reason: String,
    },
    /// The sidecar describes another file.
    #[error("sidecar {sidecar} describes {described}")]
    OtherFile {
        /// The sidecar's name.
        sidecar: String,
        /// Its `file` field.
        described: String,
    },
    /// Size or sha256 differ from the sidecar.
    #[error("{field} is {actual}, its sidecar {sidecar} says {expected}")]
    Mismatch {
        /// The sidecar's name.
        sidecar: String,
        /// `size` or `sha256`.
        field: &'static str,
        /// The sidecar's value.
        expected: String,
        /// The file's.
        actual: String,
    },
    /// The file could not be read.
    #[error("cannot read it: {0}")]
    Unreadable(String),
}

/// Checks that `dir/<name>` is a verified backup: its sidecar exists, parses, names this file,
/// and records the file's size and sha256. The size is compared first (no read when it
/// differs); then the whole file is hashed in constant memory (1 MiB buffer). Nothing is
/// cached: every call reads every byte, see the README for the cost.
pub fn check_against_sidecar(dir: &Path, name: &BackupName) -> Result<(), Unverified> {
    let sidecar_name = name.sidecar_name();
    let bytes = match std::fs::read(dir.join(&sidecar_name)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Unverified::NoSidecar {
                sidecar: sidecar_name,
            });
        }
        Err(e) => return Err(Unverified::Unreadable(format!("{sidecar_name}: {e}"))),
    };
    let sidecar: Sidecar = serde_json::from_slice(&bytes).map_err(|e| Unverified::BadSidecar {
        sidecar: sidecar_name.clone(),
        reason: e.to_string(),
    })?;
    let file_name = name.file_name();
    if sidecar.file != file_name {
        return Err(Unverified::OtherFile {
            sidecar: sidecar_name,
            described: sidecar.file,
        });
    }
    let path = dir.join(&file_name);
    let size = std::fs::symlink_metadata(&path)
        .map_err(|e| Unverified::Unreadable(e.to_string()))?
        .len();
    let mismatch = |field, expected: String, actual: String| Unverified::Mismatch {
        sidecar: sidecar_name.clone(),
        field,
        expected,
        actual,
    };
    if size != sidecar.size {
        return Err(mismatch("size", sidecar.size.to_string(), size.to_string()));
    }
    let (len, sha256) = hash_file(&path).map_err(|e| Unverified::Unreadable(e.to_string()))?;
    if len != sidecar.size {
        return Err(mismatch("size", sidecar.size.to_string(), len.to_string()));
    }
    if sha256 != sidecar.sha256 {
        return Err(mismatch("sha256", sidecar.sha256, sha256));
    }
    Ok(())
}

/// Size and sha256 (hex) of a file, read 1 MiB at a time.
fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut r = Hashing {
        inner: std::fs::File::open(path)?,
        hash: Sha256::new(),
        len: 0,
    };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((r.len, hex(&r.hash.finalize())))
}

/// What retention would do in the backup directory: the verdict on each of this node's files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrunePlan {
    /// Verified backups kept (the new one included), newest first.
    pub keep: Vec<String>,
    /// Verified backups to delete with their sidecars, newest first.
    pub delete: Vec<String>,
    /// Named as this node's backups but dated after now plus [`retention::FUTURE_SKEW`]:
    /// neither counted nor deleted.
    pub future: Vec<String>,
    /// Named as this node's backups but not verified (file name, why): neither counted nor
    /// deleted.
    pub unverified: Vec<(String, Unverified)>,
}

/// Decides retention for this node's backups in `dir` (see [`retention`]), `written` being the
/// new backup (pinned: never deleted; it need not exist yet, for `--dry-run`) and `now` the UTC
/// clock. Every other backup of this node not dated in the future is hashed against its
/// sidecar ([`check_against_sidecar`]); only verified ones are counted and may be deleted.
/// Reads only.
pub fn plan_prune(
    dir: &Path,
    node: &str,
    policy: &Policy,
    written: &BackupName,
    now: PrimitiveDateTime,
) -> Result<PrunePlan, IoError> {
    let mut plan = PrunePlan::default();
    let mut verified = vec![written.clone()];
    let mut mine: Vec<BackupName> = backups(dir)?
        .into_iter()
        .filter(|n| n.node == node && n.file_name() != written.file_name())
        .collect();
    mine.sort_by(|a, b| b.order_key().cmp(&a.order_key()));
    for n in mine {
        if retention::is_future(&n, now) {
            plan.future.push(n.file_name());
            continue;
        }
        match check_against_sidecar(dir, &n) {
            Ok(()) => verified.push(n),
            Err(why) => plan.unverified.push((n.file_name(), why)),
        }
    }
    let (keep, delete) = retention::select(&verified, Some(written), policy);
    plan.keep = keep.iter().map(|n| n.file_name()).collect();
    plan.delete = delete.iter().map(|n| n.file_name()).collect();
    Ok(plan)
}

/// Deletes the backups `plan` marks for deletion, each with its sidecar; returns the deleted
/// names. Nothing else in `dir` is touched.
pub fn apply_prune(dir: &Path, plan: &PrunePlan) -> Result<Vec<String>, IoError> {
    let mut deleted = Vec::new();
    for name in &plan.delete {
        let db = dir.join(name);
        std::fs::remove_file(&db).map_err(IoError::on("remove old backup", &db))?;
        let sidecar = dir.join(format!("{name}.json"));
        match std::fs::remove_file(&sidecar) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(IoError::on("remove old sidecar", &sidecar)(e)),
        }
        deleted.push(name.clone());
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
    /// A zstd file does not decompress.
    #[error("{}: not a valid zstd stream", path.display())]
    Decompress {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file does not match its sidecar.
    #[error("{}: {field} is {actual}, its sidecar {} says {expected}", path.display(), sidecar.display())]
    Sidecar {
        /// The file.
        path: PathBuf,
        /// The sidecar.
        sidecar: PathBuf,
        /// The sidecar field that differs.
        field: &'static str,
        /// The sidecar's value.
        expected: String,
        /// The file's.
        actual: String,
    },
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// How the file is stored (detected from its first bytes, not its name).
    pub compression: Compression,
    /// Size of the file as stored, bytes.
    pub size: u64,
    /// sha256 of the file as stored, hex.
    pub sha256: String,
    /// The snapshot itself (decompressed when compressed), its trailer checked.
    pub snapshot: Checked,
    /// The sidecar that was compared, when one sits next to the file.
    pub sidecar: Option<PathBuf>,
}

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    len: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// Feeds everything `r` yields to a trailer hasher, 1 MiB at a time.
fn check_stream(r: &mut impl Read) -> std::io::Result<TrailerHasher> {
    let mut h = TrailerHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(h),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
    }
}

/// Checks a backup file in constant memory: decompresses it when it is zstd (by its magic
/// number), checks etcd's sha256 trailer, and when `<FILE>.json` exists compares the sizes and
/// hashes it records.
pub fn verify_file(path: &Path) -> Result<Verified, VerifyError> {
    let file = std::fs::File::open(path).map_err(IoError::on("open", path))?;
    let mut hr = Hashing {
        inner: file,
        hash: Sha256::new(),
        len: 0,
    };
    let mut magic = Vec::with_capacity(4);
    (&mut hr)
        .take(4)
        .read_to_end(&mut magic)
        .map_err(IoError::on("read", path))?;
    let compression = if magic == ZSTD_MAGIC {
        Compression::Zstd
    } else {
        Compression::None
    };
    let invalid = |source| VerifyError::Invalid {
        path: path.to_path_buf(),
        source,
    };
    let hasher = match compression {
        Compression::None => {
            let mut r = std::io::Cursor::new(magic).chain(&mut hr);
            check_stream(&mut r).map_err(IoError::on("read", path))?
        }
        Compression::Zstd => {
            let r = std::io::Cursor::new(magic).chain(&mut hr);
            let mut d = zstd::stream::read::Decoder::new(r).map_err(IoError::on("read", path))?;
            let h = check_stream(&mut d).map_err(|source| VerifyError::Decompress {
                path: path.to_path_buf(),
                source,
            })?;
            drop(d);
            // Anything after the last frame still counts for the file's hash and size.
            std::io::copy(&mut hr, &mut std::io::sink()).map_err(IoError::on("read", path))?;
            h
        }
    };
    let snapshot = hasher.finish().map_err(invalid)?;
    let verified = Verified {
        compression,
        size: hr.len,
        sha256: hex(&hr.hash.finalize()),
        snapshot,
        sidecar: None,
    };
    let sidecar_path = PathBuf::from(format!("{}.json", path.display()));
    let Some(sidecar) = read_sidecar(&sidecar_path) else {
        return Ok(verified);
    };
    let mismatch = |field, expected: String, actual: String| VerifyError::Sidecar {
        path: path.to_path_buf(),
        sidecar: sidecar_path.clone(),
        field,
        expected,
        actual,
    };
    let checks = [
        ("size", sidecar.size.to_string(), verified.size.to_string()),
        ("sha256", sidecar.sha256.clone(), verified.sha256.clone()),
        (
            "compression",
            sidecar.compression.name().to_string(),
            compression.name().to_string(),
        ),
    ];
    for (field, expected, actual) in checks {
        if expected != actual {
            return Err(mismatch(field, expected, actual));
        }
    }
    if let Some(expected) = &sidecar.snapshot_sha256
        && *expected != verified.snapshot.sha256
    {
        return Err(mismatch(
            "snapshotSha256",
            expected.clone(),
            verified.snapshot.sha256.clone(),
        ));
    }
    Ok(Verified {
        sidecar: Some(sidecar_path),
        ..verified
    })
}

#[cfg(test)]
mod tests;
