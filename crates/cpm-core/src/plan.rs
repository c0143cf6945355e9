//! Diffs a [`FileSet`] against the node into an ordered [`Plan`], and renders it for humans.
//!
//! Planning only reads the node. An empty plan means the node already matches, so a second pass
//! on the same inputs writes nothing and leaves mtimes alone. Rendering shows unified diffs for
//! text content and `sha256` digests for secret or binary content.

use std::fmt::Write as _;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::fileset::{DesiredFile, FileSet, Owner};
use crate::node::NodeRoot;

/// One change to the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create a missing directory.
    MkDir {
        /// Relative path.
        path: PathBuf,
        /// Mode to set.
        mode: u32,
    },
    /// Change a directory's mode.
    ChmodDir {
        /// Relative path.
        path: PathBuf,
        /// Current mode.
        from: u32,
        /// Desired mode.
        to: u32,
    },
    /// Create a missing file.
    Create {
        /// The file to write.
        file: DesiredFile,
    },
    /// Replace a file whose content differs.
    Replace {
        /// The file to write.
        file: DesiredFile,
        /// Current content.
        old: Vec<u8>,
    },
    /// Change the mode of a file whose content matches.
    Chmod {
        /// Relative path.
        path: PathBuf,
        /// Current mode.
        from: u32,
        /// Desired mode.
        to: u32,
    },
    /// Change the owner of a file whose content matches.
    Chown {
        /// Relative path.
        path: PathBuf,
        /// Current owner.
        from: Owner,
        /// Desired owner.
        to: Owner,
    },
    /// Create a symbolic link, or atomically replace a symlink pointing elsewhere.
    Symlink {
        /// Relative path of the link.
        path: PathBuf,
        /// The target to write.
        target: PathBuf,
        /// The current target, when a symlink is replaced.
        old: Option<PathBuf>,
    },
    /// Remove an owned symbolic link that is no longer desired.
    Unlink {
        /// Relative path of the link.
        path: PathBuf,
        /// Its current target.
        target: PathBuf,
    },
    /// Delete an owned file that is no longer desired.
    Delete {
        /// Relative path.
        path: PathBuf,
        /// Current content (kept for backups and diffs).
        old: Vec<u8>,
    },
}

impl Op {
    /// The operation's kind, as used in the `op` metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::MkDir { .. } => "mkdir",
            Op::ChmodDir { .. } | Op::Chmod { .. } => "chmod",
            Op::Create { .. } => "create",
            Op::Replace { .. } => "replace",
            Op::Chown { .. } => "chown",
            Op::Delete { .. } | Op::Unlink { .. } => "delete",
            Op::Symlink { .. } => "symlink",
        }
    }

    /// The relative path the operation touches.
    pub fn path(&self) -> &Path {
        match self {
            Op::Create { file } | Op::Replace { file, .. } => &file.path,
            Op::MkDir { path, .. }
            | Op::ChmodDir { path, .. }
            | Op::Chmod { path, .. }
            | Op::Chown { path, .. }
            | Op::Symlink { path, .. }
            | Op::Unlink { path, .. }
            | Op::Delete { path, .. } => path,
        }
    }
}

/// The ordered changes that make the node match a `FileSet`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Directories first, then files in set order, then symlinks, then deletions.
    pub ops: Vec<Op>,
}

/// Planning failed: the node could not be read, or holds something in the way.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A path could not be inspected or read.
    #[error("cannot read {path}")]
    Read {
        /// Full path.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: io::Error,
    },
    /// A directory stands where a file is desired, or the reverse.
    #[error("{path} is in the way: expected a {expected}")]
    InTheWay {
        /// Full path.
        path: PathBuf,
        /// `file` or `directory`.
        expected: &'static str,
    },
    /// A path escapes the root.
    #[error(transparent)]
    Path(#[from] crate::node::PathError),
}

/// Compares `set` with the node under `root`. Reads only.
pub fn plan(root: &NodeRoot, set: &FileSet) -> Result<Plan, PlanError> {
    let mut ops = Vec::new();
    for dir in set.dirs() {
        let full = root.join(&dir.path)?;
        match lstat(&full)? {
            None => ops.push(Op::MkDir {
                path: dir.path.clone(),
                mode: dir.mode,
            }),
            Some(md) if md.is_dir() => {
                let from = md.permissions().mode() & 0o7777;
                if from != dir.mode {
                    ops.push(Op::ChmodDir {
                        path: dir.path.clone(),
                        from,
                        to: dir.mode,
                    });
                }
            }
            Some(_) => {
                return Err(PlanError::InTheWay {
                    path: full,
                    expected: "directory",
                });
            }
        }
    }
    for file in set.files() {
        let full = root.join(&file.path)?;
        match read_file(&full)? {
            None => ops.push(Op::Create { file: file.clone() }),
            Some((old, _)) if old != file.bytes => {
                ops.push(Op::Replace {
                    file: file.clone(),
                    old,
                });
            }
            Some((_, md)) => {
                let from = md.permissions().mode() & 0o7777;
                if from != file.mode {
                    ops.push(Op::Chmod {
                        path: file.path.clone(),
                        from,
                        to: file.mode,
                    });
                }
                let current = Owner {
                    uid: md.uid(),
                    gid: md.gid(),
                };
                if let Some(to) = file.owner.filter(|o| *o != current) {
                    ops.push(Op::Chown {
                        path: file.path.clone(),
                        from: current,
                        to,
                    });
                }
            }
        }
    }
    for link in set.links() {
        let full = root.join(&link.path)?;
        let read_link = |p: &Path| {
            std::fs::read_link(p).map_err(|source| PlanError::Read {
                path: p.to_path_buf(),
                source,
            })
        };
        match lstat(&full)? {
            None => ops.push(Op::Symlink {
                path: link.path.clone(),
                target: link.target.clone(),
                old: None,
            }),
            Some(md) if md.file_type().is_symlink() => {
                let current = read_link(&full)?;
                if current != link.target {
                    ops.push(Op::Symlink {
                        path: link.path.clone(),
                        target: link.target.clone(),
                        old: Some(current),
                    });
                }
            }
            Some(_) => {
                return Err(PlanError::InTheWay {
                    path: full,
                    expected: "symlink",
                });
            }
        }
    }
    for orphan in set.orphans() {
        let full = root.join(orphan)?;
        match lstat(&full)? {
            Some(md) if md.file_type().is_symlink() => {
                let target = std::fs::read_link(&full).map_err(|source| PlanError::Read {
                    path: full.clone(),
                    source,
                })?;
                ops.push(Op::Unlink {
                    path: orphan.to_path_buf(),
                    target,
                });
            }
            Some(_) => {
                if let Some((old, _)) = read_file(&full)? {
                    ops.push(Op::Delete {
                        path: orphan.to_path_buf(),
                        old,
                    });
                }
            }
            None => {}
        }
    }
    Ok(Plan { ops })
}

fn lstat(path: &Path) -> Result<Option<std::fs::Metadata>, PlanError> {
    match std::fs::symlink_metadata(path) {
        Ok(md) => Ok(Some(md)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PlanError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads a regular file (through symlinks). `None` when absent; an error for a directory.
fn read_file(path: &Path) -> Result<Option<(Vec<u8>, std::fs::Metadata)>, PlanError> {
    let read_err = |source| PlanError::Read {
        path: path.to_path_buf(),
        source,
    };
    let md = match std::fs::metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A dangling symlink counts as absent; the write replaces it.
            return Ok(None);
        }
        Err(e) => return Err(read_err(e)),
    };
    if md.is_dir() {
        return Err(PlanError::InTheWay {
            path: path.to_path_buf(),
            expected: "file",
        });
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    Ok(Some((bytes, md)))
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl Plan {
    /// Whether the node already matches.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Counts of operations by kind, in a fixed order, zeros included.
    pub fn summary(&self) -> Vec<(&'static str, usize)> {
        [
            "mkdir", "create", "replace", "chmod", "chown", "symlink", "delete",
        ]
        .into_iter()
        .map(|k| (k, self.ops.iter().filter(|op| op.kind() == k).count()))
        .collect()
    }

    /// Renders the plan as text: one header line per operation, unified diffs for text content,
    /// digests for secret or binary content. Never contains secret bytes.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for op in &self.ops {
            render_op(&mut out, op);
        }
        out
    }
}

fn render_op(out: &mut String, op: &Op) {
    let p = op.path().display();
    match op {
        Op::MkDir { mode, .. } => {
            let _ = writeln!(out, "mkdir {p} (mode {mode:04o})");
        }
        Op::ChmodDir { from, to, .. } | Op::Chmod { from, to, .. } => {
            let _ = writeln!(out, "mode {p} {from:04o} -> {to:04o}");
        }
        Op::Chown { from, to, .. } => {
            let _ = writeln!(
                out,
                "owner {p} {}:{} -> {}:{}",
                from.uid, from.gid, to.uid, to.gid
            );
        }
        Op::Create { file } => {
            let _ = writeln!(out, "create {p} (mode {:04o})", file.mode);
            render_note(out, file);
            render_content(out, file, b"", "/dev/null");
        }
        Op::Replace { file, old } => {
            let _ = writeln!(out, "replace {p} (mode {:04o})", file.mode);
            render_note(out, file);
            render_content(out, file, old, &format!("a/{p}"));
        }
        Op::Symlink { target, old, .. } => {
            let was = old
                .as_ref()
                .map(|o| format!(" (was -> {})", o.display()))
                .unwrap_or_default();
            let _ = writeln!(out, "symlink {p} -> {}{was}", target.display());
        }
        Op::Unlink { target, .. } => {
            let _ = writeln!(out, "delete {p} (symlink -> {})", target.display());
        }
        Op::Delete { old, .. } => {
            let _ = writeln!(out, "delete {p} (sha256 {})", sha256_hex(old));
        }
    }
}

fn render_note(out: &mut String, file: &DesiredFile) {
    if let Some(note) = &file.note {
        let _ = writeln!(out, "  # {note}");
    }
}

fn render_content(out: &mut String, file: &DesiredFile, old: &[u8], old_name: &str) {
    let text = (std::str::from_utf8(old), std::str::from_utf8(&file.bytes));
    match text {
        (Ok(old_text), Ok(new_text)) if !file.secret => {
            let diff = similar::TextDiff::from_lines(old_text, new_text);
            let new_name = format!("b/{}", file.path.display());
            let _ = write!(
                out,
                "{}",
                diff.unified_diff()
                    .context_radius(3)
                    .header(old_name, &new_name)
            );
        }
        _ => {
            let from = if old.is_empty() {
                "none".to_string()
            } else {
                sha256_hex(old)
            };
            let kind = if file.secret { "secret" } else { "binary" };
            let _ = writeln!(
                out,
                "  {kind} content: sha256 {from} -> {}",
                sha256_hex(&file.bytes)
            );
        }
    }
}

#[cfg(test)]
mod tests;
