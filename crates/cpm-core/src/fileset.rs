//! `DesiredFile` and `FileSet`: what an agent wants on the node, computed without touching it.
//!
//! An agent's pure `desired()` function returns a `FileSet`; [`crate::plan`] compares it with the
//! node and [`crate::apply`] makes the node match. Paths are relative to the node root.
//!
//! ```
//! use cpm_core::fileset::{DesiredFile, FileSet};
//! let mut set = FileSet::new();
//! set.dir("etc/kubernetes/pki", 0o755).unwrap();
//! set.file(DesiredFile::new("etc/kubernetes/pki/ca.crt", b"PEM".to_vec(), 0o644)).unwrap();
//! set.file(DesiredFile::new("etc/kubernetes/pki/ca.key", b"KEY".to_vec(), 0o600).secret()).unwrap();
//! assert_eq!(set.files().len(), 2);
//! ```

use std::path::{Path, PathBuf};

use crate::node::{PathError, check_relative};

/// Numeric file owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// One file as the agent wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredFile {
    /// Path relative to the node root.
    pub path: PathBuf,
    /// Exact content.
    pub bytes: Vec<u8>,
    /// Permission bits (`0o600`).
    pub mode: u32,
    /// Owner to set; `None` keeps whatever the writing process gets.
    pub owner: Option<Owner>,
    /// Secret content: plans show its sha256, never the bytes.
    pub secret: bool,
    /// Why this content changes, shown in plans (`expires in 12 days`).
    pub note: Option<String>,
}

impl DesiredFile {
    /// A plain file with content and mode.
    pub fn new(path: impl Into<PathBuf>, bytes: Vec<u8>, mode: u32) -> Self {
        Self {
            path: path.into(),
            bytes,
            mode,
            owner: None,
            secret: false,
            note: None,
        }
    }

    /// Marks the content secret.
    #[must_use]
    pub fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    /// Sets the owner.
    #[must_use]
    pub fn owned_by(mut self, owner: Owner) -> Self {
        self.owner = Some(owner);
        self
    }

    /// Attaches a reason shown in plans.
    #[must_use]
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

/// A directory the agent wants, with its mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredDir {
    /// Path relative to the node root.
    pub path: PathBuf,
    /// Permission bits.
    pub mode: u32,
}

/// A symbolic link the agent wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredSymlink {
    /// Path of the link, relative to the node root.
    pub path: PathBuf,
    /// What the link points to, written as is (usually an absolute host path).
    pub target: PathBuf,
}

/// A `FileSet` could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileSetError {
    /// A path is absolute or escapes the root.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The same path was added twice.
    #[error("{path:?} is desired twice")]
    Duplicate {
        /// The repeated path.
        path: PathBuf,
    },
}

/// Directories and files an agent wants, plus the paths it owns.
///
/// Order is kept: directories are made first, then files in the order they were added. Owned paths
/// that are not desired are deleted; nothing else is ever deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSet {
    dirs: Vec<DesiredDir>,
    files: Vec<DesiredFile>,
    links: Vec<DesiredSymlink>,
    owned: Vec<PathBuf>,
}

impl FileSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: impl Into<PathBuf>, mode: u32) -> Result<&mut Self, FileSetError> {
        let path = path.into();
        check_relative(&path)?;
        if self.dirs.iter().any(|d| d.path == path) {
            return Err(FileSetError::Duplicate { path });
        }
        self.dirs.push(DesiredDir { path, mode });
        Ok(self)
    }

    /// Adds a file. Its path becomes owned.
    pub fn file(&mut self, file: DesiredFile) -> Result<&mut Self, FileSetError> {
        check_relative(&file.path)?;
        if self.files.iter().any(|f| f.path == file.path)
            || self.links.iter().any(|l| l.path == file.path)
        {
            return Err(FileSetError::Duplicate { path: file.path });
        }
        self.files.push(file);
        Ok(self)
    }

    /// Adds a symbolic link. Its path becomes owned. Planning refuses to replace anything but a
    /// symlink at that path: the agent decides beforehand whether the path is its to take.
    pub fn symlink(
        &mut self,
        path: impl Into<PathBuf>,
        target: impl Into<PathBuf>,
    ) -> Result<&mut Self, FileSetError> {
        let path = path.into();
        check_relative(&path)?;
        if self.get(&path).is_some() || self.links.iter().any(|l| l.path == path) {
            return Err(FileSetError::Duplicate { path });
        }
        self.links.push(DesiredSymlink {
            path,
            target: target.into(),
        });
        Ok(self)
    }

    /// Declares a path owned by the agent: deleted if present and not desired.
    pub fn own(&mut self, path: impl Into<PathBuf>) -> Result<&mut Self, FileSetError> {
        let path = path.into();
        check_relative(&path)?;
        if !self.owned.contains(&path) {
            self.owned.push(path);
        }
        Ok(self)
    }

    /// Desired directories, in order.
    pub fn dirs(&self) -> &[DesiredDir] {
        &self.dirs
    }

    /// Desired symbolic links, in order.
    pub fn links(&self) -> &[DesiredSymlink] {
        &self.links
    }

    /// Desired files, in order.
    pub fn files(&self) -> &[DesiredFile] {
        &self.files
    }

    /// The desired file at `path`, if any.
    pub fn get(&self, path: &Path) -> Option<&DesiredFile> {
        self.files.iter().find(|f| f.path == path)
    }

    /// Owned paths that are not desired: candidates for deletion.
    pub fn orphans(&self) -> impl Iterator<Item = &Path> {
        self.owned
            .iter()
            .map(PathBuf::as_path)
            .filter(|p| self.get(p).is_none())
    }
}

#[cfg(test)]
mod tests;
