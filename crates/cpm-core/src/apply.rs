//! Atomic writes: the only way cpm changes a file on the node.
//!
//! A file is written to a hidden temp file in the same directory, fsynced, given its mode and
//! owner, renamed over the target, and the directory is fsynced. On any error the temp file is
//! removed and the target is untouched, so a crash leaves either the old or the new file, never a
//! mix. Before a file is replaced or deleted its old content can be copied to a bounded backup
//! directory.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! use cpm_core::{apply, fileset::{DesiredFile, FileSet}, node::NodeRoot, plan};
//! let root = NodeRoot::new(dir.path());
//! let mut set = FileSet::new();
//! set.file(DesiredFile::new("etc/x.conf", b"a=1\n".to_vec(), 0o600)).unwrap();
//! let p = plan::plan(&root, &set).unwrap();
//! apply::apply(&root, &p, &apply::ApplyOptions::default()).unwrap();
//! assert!(plan::plan(&root, &set).unwrap().is_empty());
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::fileset::Owner;
use crate::node::NodeRoot;
use crate::plan::{Op, Plan};

/// A hook run on the temp file just before it is renamed over the target. Tests use it to inject
/// a failure (a crash) between write and rename.
pub type BeforeRename = dyn Fn(&Path) -> io::Result<()> + Send + Sync;

/// Where replaced and deleted files are kept, and how many generations.
#[derive(Debug, Clone)]
pub struct BackupPolicy {
    /// Directory relative to the node root, e.g. `etc/kubernetes/cpm/backup/cpm-certs`.
    pub dir: PathBuf,
    /// Name of this generation (a UTC timestamp); made unique if it already exists.
    pub generation: String,
    /// How many generations to keep; older ones are removed.
    pub keep: usize,
}

/// Options of [`apply`].
#[derive(Default)]
pub struct ApplyOptions<'a> {
    /// Backups of replaced and deleted files; none when `None`.
    pub backup: Option<BackupPolicy>,
    /// Failure injection for tests.
    pub before_rename: Option<&'a BeforeRename>,
}

/// A change could not be applied. Earlier operations of the plan stay applied; each file is
/// either old or new, never partial.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// An operation on a path failed.
    #[error("cannot {op} {path}")]
    Io {
        /// The operation kind.
        op: &'static str,
        /// Full path.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: io::Error,
    },
    /// A path escapes the root.
    #[error(transparent)]
    Path(#[from] crate::node::PathError),
}

/// What [`apply`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// Number of operations applied.
    pub applied: usize,
    /// The backup generation directory written, if any (relative to the root).
    pub backup: Option<PathBuf>,
}

/// Applies `plan` under `root`, in order.
pub fn apply(
    root: &NodeRoot,
    plan: &Plan,
    opts: &ApplyOptions<'_>,
) -> Result<ApplyReport, ApplyError> {
    let mut report = ApplyReport::default();
    let mut backup = opts
        .backup
        .as_ref()
        .map(|p| Backup::new(root, p))
        .transpose()?;
    for op in &plan.ops {
        let full = root.join(op.path())?;
        let err = |source| ApplyError::Io {
            op: op.kind(),
            path: full.clone(),
            source,
        };
        match op {
            Op::MkDir { mode, .. } => make_dir(&full, *mode).map_err(err)?,
            Op::ChmodDir { to, .. } | Op::Chmod { to, .. } => {
                fs::set_permissions(&full, fs::Permissions::from_mode(*to)).map_err(err)?;
            }
            Op::Chown { to, .. } => {
                std::os::unix::fs::chown(&full, Some(to.uid), Some(to.gid)).map_err(err)?;
            }
            Op::Create { file } => {
                ensure_parent(&full).map_err(err)?;
                write_atomic(
                    &full,
                    &file.bytes,
                    file.mode,
                    file.owner,
                    opts.before_rename,
                )
                .map_err(err)?;
            }
            Op::Replace { file, old } => {
                if let Some(b) = backup.as_mut() {
                    b.save(&file.path, old)?;
                }
                write_atomic(
                    &full,
                    &file.bytes,
                    file.mode,
                    file.owner,
                    opts.before_rename,
                )
                .map_err(err)?;
            }
            Op::Symlink { target, .. } => {
                ensure_parent(&full).map_err(err)?;
                symlink_atomic(&full, target).map_err(err)?;
            }
            Op::Unlink { .. } => {
                fs::remove_file(&full).map_err(err)?;
                sync_parent(&full).map_err(err)?;
            }
            Op::Delete { path, old } => {
                if let Some(b) = backup.as_mut() {
                    b.save(path, old)?;
                }
                fs::remove_file(&full).map_err(err)?;
                sync_parent(&full).map_err(err)?;
            }
        }
        report.applied += 1;
    }
    if let Some(b) = backup {
        report.backup = b.finish()?;
    }
    Ok(report)
}

/// Writes `bytes` to `path` atomically with `mode` (and `owner`): temp file in the same directory,
/// fsync, chmod, chown, rename, fsync of the directory. The target is untouched on error.
pub fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<Owner>,
    before_rename: Option<&BeforeRename>,
) -> io::Result<()> {
    let (dir, tmp) = temp_beside(path)?;
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
        if let Some(o) = owner {
            std::os::unix::fs::chown(&tmp, Some(o.uid), Some(o.gid))?;
        }
        if let Some(hook) = before_rename {
            hook(&tmp)?;
        }
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The directory of `path` and a fresh hidden temp name beside it
/// (`.<name>.cpm-tmp-<pid>-<random>`), so the final rename stays within one filesystem.
fn temp_beside(path: &Path) -> io::Result<(&Path, PathBuf)> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no parent directory"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.cpm-tmp-{}-{:08x}",
        name.to_string_lossy(),
        std::process::id(),
        rand::random::<u32>()
    ));
    Ok((dir, tmp))
}

/// Points `link` at `target` atomically: a temp symlink in the same directory renamed over
/// `link` (which may be absent or a symlink), then an fsync of the directory.
pub fn symlink_atomic(link: &Path, target: &Path) -> io::Result<()> {
    let (dir, tmp) = temp_beside(link)?;
    let result = std::os::unix::fs::symlink(target, &tmp)
        .and_then(|()| fs::rename(&tmp, link))
        .and_then(|()| File::open(dir)?.sync_all());
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn make_dir(path: &Path, mode: u32) -> io::Result<()> {
    ensure_parent(path)?;
    match fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
        Err(e) => return Err(e),
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    sync_parent(path)
}

/// Creates missing parent directories (0755, as `mkdir -p` under the usual umask).
fn ensure_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() && !parent.exists() => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent),
        _ => Ok(()),
    }
}

fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => File::open(parent)?.sync_all(),
        _ => Ok(()),
    }
}

/// One backup generation being written.
struct Backup {
    base: PathBuf,
    generation: PathBuf,
    keep: usize,
    used: bool,
}

impl Backup {
    fn new(root: &NodeRoot, policy: &BackupPolicy) -> Result<Self, ApplyError> {
        let base = root.join(&policy.dir)?;
        let mut generation = base.join(&policy.generation);
        let mut n = 1;
        while generation.exists() {
            generation = base.join(format!("{}-{n}", policy.generation));
            n += 1;
        }
        Ok(Self {
            base,
            generation,
            keep: policy.keep.max(1),
            used: false,
        })
    }

    fn save(&mut self, rel: &Path, old: &[u8]) -> Result<(), ApplyError> {
        let target = self.generation.join(rel);
        let err = |source| ApplyError::Io {
            op: "back up",
            path: target.clone(),
            source,
        };
        let parent = target.parent().unwrap_or(&self.generation);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(err)?;
        fs::set_permissions(&self.base, fs::Permissions::from_mode(0o700)).map_err(err)?;
        write_atomic(&target, old, 0o600, None, None).map_err(err)?;
        self.used = true;
        Ok(())
    }

    /// Prunes old generations; returns the one written, relative to the backup base.
    fn finish(self) -> Result<Option<PathBuf>, ApplyError> {
        if !self.used {
            return Ok(None);
        }
        let err = |source| ApplyError::Io {
            op: "prune backups in",
            path: self.base.clone(),
            source,
        };
        let mut generations: Vec<PathBuf> = fs::read_dir(&self.base)
            .map_err(err)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        // Generation names are UTC timestamps (plus a counter), so name order is age order.
        generations.sort();
        let excess = generations.len().saturating_sub(self.keep);
        for old in &generations[..excess] {
            fs::remove_dir_all(old).map_err(err)?;
        }
        Ok(self
            .generation
            .strip_prefix(&self.base)
            .ok()
            .map(Path::to_path_buf))
    }
}

#[cfg(test)]
mod tests;
