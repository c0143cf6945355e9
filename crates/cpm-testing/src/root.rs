//! `FakeRoot`: a temporary node root with helpers to read back the tree an agent wrote.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use cpm_core::node::NodeRoot;
use cpm_core::plan::sha256_hex;

/// A node root in a temporary directory, removed on drop.
#[derive(Debug)]
pub struct FakeRoot {
    dir: tempfile::TempDir,
}

/// One file of a tree listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Octal mode.
    pub mode: u32,
    /// sha256 of the content (`dir` for directories, `-> target` for symlinks).
    pub digest: String,
    /// Modification time.
    pub mtime: SystemTime,
    /// Inode number.
    pub inode: u64,
}

impl FakeRoot {
    /// A new empty root.
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("cpm-root-")
                .tempdir()
                .expect("invariant: tempdir"),
        }
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The root as a `NodeRoot`.
    pub fn node_root(&self) -> NodeRoot {
        NodeRoot::new(self.dir.path())
    }

    /// Full path of a relative node path.
    pub fn join(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Reads a file under the root.
    pub fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    /// Every path under the root (relative), with mode, digest, mtime and inode.
    pub fn entries(&self) -> BTreeMap<String, Entry> {
        let mut out = BTreeMap::new();
        walk(self.dir.path(), self.dir.path(), &mut out);
        out
    }

    /// A golden-style listing: one line `mode path sha256` per file, sorted, directories as `dir`.
    pub fn listing(&self) -> String {
        self.entries()
            .iter()
            .map(|(p, e)| format!("{:04o} {p} {}\n", e.mode, e.digest))
            .collect()
    }
}

impl Default for FakeRoot {
    fn default() -> Self {
        Self::new()
    }
}

fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let path = e.path();
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let rel = path
            .strip_prefix(base)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        let digest = if md.is_dir() {
            "dir".to_string()
        } else if md.file_type().is_symlink() {
            format!(
                "-> {}",
                std::fs::read_link(&path)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default()
            )
        } else {
            sha256_hex(&std::fs::read(&path).unwrap_or_default())
        };
        let entry = Entry {
            mode: md.permissions().mode() & 0o7777,
            digest,
            mtime: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            inode: md.ino(),
        };
        out.insert(rel, entry);
        if md.is_dir() {
            walk(base, &path, out);
        }
    }
}
