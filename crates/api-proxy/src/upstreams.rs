//! The upstream file: its format, validation, and the last good list kept across restarts.
//!
//! proxy-reloader writes `etc/kubernetes/api-proxy/upstreams.json`:
//!
//! ```json
//! {"version": 1, "upstreams": ["10.0.0.1:6443", "10.0.0.2:6443"]}
//! ```
//!
//! A file is valid when `version` is 1, `upstreams` is not empty and every entry is an
//! `IP:PORT` socket address (IPv6 as `[addr]:port`) with a non-zero port. Unknown fields are
//! refused. Every valid file the proxy applies is also saved, atomically, as `last-good.json` in
//! the same directory, so a proxy that restarts while the upstream file is missing or broken
//! starts from the last list it trusted.

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The only format version.
pub const VERSION: u32 = 1;

/// The file name of the last good list, beside the upstream file.
pub const LAST_GOOD: &str = "last-good.json";

/// The upstream file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// `IP:PORT` of each API server.
    pub upstreams: Vec<String>,
}

/// An upstream file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamsError {
    /// Reading failed.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: io::Error,
    },
    /// Not the JSON format.
    #[error("{path} is not an upstream file: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error, without the file's content.
        message: String,
    },
    /// Another version.
    #[error("{path}: unsupported version {version} (want {VERSION})")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found.
        version: u32,
    },
    /// An entry is not `IP:PORT`.
    #[error("{path}: upstream {entry:?} is not IP:PORT with a non-zero port")]
    Entry {
        /// The file.
        path: PathBuf,
        /// The entry.
        entry: String,
    },
    /// No upstream at all.
    #[error("{path}: empty upstream list")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// Saving the last good list failed.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: io::Error,
    },
}

/// Parses and validates an upstream file's bytes; `path` is for errors only. The result is
/// sorted and free of duplicates.
pub fn parse(bytes: &[u8], path: &Path) -> Result<Vec<SocketAddr>, UpstreamsError> {
    let file: UpstreamFile = serde_json::from_slice(bytes).map_err(|e| UpstreamsError::Json {
        path: path.to_path_buf(),
        message: cpm_core::yaml::redact(&e.to_string()),
    })?;
    if file.version != VERSION {
        return Err(UpstreamsError::Version {
            path: path.to_path_buf(),
            version: file.version,
        });
    }
    let mut set = BTreeSet::new();
    for entry in &file.upstreams {
        match entry.trim().parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 && !a.ip().is_unspecified() => {
                set.insert(a);
            }
            _ => {
                return Err(UpstreamsError::Entry {
                    path: path.to_path_buf(),
                    entry: entry.clone(),
                });
            }
        }
    }
    if set.is_empty() {
        return Err(UpstreamsError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(set.into_iter().collect())
}

/// Renders a list in the file format (sorted, one line, trailing newline).
pub fn render(upstreams: &[SocketAddr]) -> Vec<u8> {
    let set: BTreeSet<_> = upstreams.iter().collect();
    let file = UpstreamFile {
        version: VERSION,
        upstreams: set.into_iter().map(ToString::to_string).collect(),
    };
    let mut out = serde_json::to_vec(&file).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Reads and validates the file at `path`.
pub fn load(path: &Path) -> Result<Vec<SocketAddr>, UpstreamsError> {
    let bytes = std::fs::read(path).map_err(|source| UpstreamsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&bytes, path)
}

/// The last-good file beside `upstreams_file`.
pub fn last_good_path(upstreams_file: &Path) -> PathBuf {
    upstreams_file
        .parent()
        .unwrap_or(Path::new("."))
        .join(LAST_GOOD)
}

/// Saves `list` as the last good list, atomically; does nothing when the file already holds it.
pub fn save_last_good(path: &Path, list: &[SocketAddr]) -> Result<(), UpstreamsError> {
    let bytes = render(list);
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let err = |source| UpstreamsError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    cpm_core::apply::write_atomic(path, &bytes, 0o644, None, None).map_err(err)
}

/// Where the starting list came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The upstream file.
    File,
    /// The last good list (the upstream file was missing or invalid).
    LastGood,
    /// Neither: only `--upstream` flags.
    Flags,
}

/// The starting list: the upstream file if valid, else the last good list; always with the
/// `--upstream` flags added. Returns the list, its source, and the upstream file's error if any.
pub fn initial(
    file: &Path,
    flags: &[SocketAddr],
) -> (Vec<SocketAddr>, Source, Option<UpstreamsError>) {
    let (base, source, error) = match load(file) {
        Ok(list) => (list, Source::File, None),
        Err(e) => match load(&last_good_path(file)) {
            Ok(list) => (list, Source::LastGood, Some(e)),
            Err(_) => (Vec::new(), Source::Flags, Some(e)),
        },
    };
    (merge(&base, flags), source, error)
}

/// `list` ∪ `flags`, sorted.
pub fn merge(list: &[SocketAddr], flags: &[SocketAddr]) -> Vec<SocketAddr> {
    let set: BTreeSet<_> = list.iter().chain(flags).copied().collect();
    set.into_iter().collect()
}

#[cfg(test)]
mod tests;
