//! `NodeRoot`: the directory behind `--root`, under which every node path is built.
//!
//! Every path an agent reads or writes on the node is relative (`etc/kubernetes/pki/ca.crt`) and is
//! joined onto the root, so the agents run unchanged against `/` on a master and against a scratch
//! directory in tests or on a laptop.
//!
//! ```
//! use cpm_core::node::NodeRoot;
//! let root = NodeRoot::new("/tmp/node1");
//! assert_eq!(root.join("etc/kubernetes").unwrap(), std::path::Path::new("/tmp/node1/etc/kubernetes"));
//! assert!(root.join("/etc/passwd").is_err());
//! assert!(root.join("etc/../../x").is_err());
//! ```

use std::path::{Component, Path, PathBuf};

/// A relative path that cannot leave the root.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("node path {path:?} must be relative and free of `..`")]
pub struct PathError {
    /// The rejected path.
    pub path: PathBuf,
}

/// The root directory every node path is relative to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRoot {
    root: PathBuf,
}

impl NodeRoot {
    /// A root at `dir` (`/` in production).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { root: dir.into() }
    }

    /// The root directory itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Joins a relative node path onto the root. Absolute paths, `..` and empty paths are refused.
    pub fn join(&self, rel: impl AsRef<Path>) -> Result<PathBuf, PathError> {
        let rel = rel.as_ref();
        check_relative(rel)?;
        Ok(self.root.join(rel))
    }

    /// Maps an absolute host path (as written in configs, `/etc/kubernetes/…`) under the root.
    pub fn host(&self, abs: impl AsRef<Path>) -> Result<PathBuf, PathError> {
        let abs = abs.as_ref();
        let rel = abs.strip_prefix("/").map_err(|_| PathError {
            path: abs.to_path_buf(),
        })?;
        self.join(rel)
    }
}

/// Checks that `rel` is a non-empty relative path made only of normal components.
pub fn check_relative(rel: &Path) -> Result<(), PathError> {
    let ok = !rel.as_os_str().is_empty()
        && rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if ok {
        Ok(())
    } else {
        Err(PathError {
            path: rel.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests;
