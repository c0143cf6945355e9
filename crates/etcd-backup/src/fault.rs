//! Test-only fault injection, compiled only with the cargo feature `fault-injection` (off by
//! default, so release builds carry no hooks; CI's `--all-features` test run enables it).
//!
//! [`FAULT_ENV`] holds one fault: `truncate:<bytes>` cuts the stream, `write-error:<bytes>` fails
//! the write past that many bytes, `free-space:<bytes>` pretends the filesystem has that much
//! room, `pause:<bytes>:<marker>` writes `marker` after that many bytes and waits until the
//! marker is removed (at most 30 s), so a test can kill etcd mid-stream. `remove-error` fails
//! retention's first deletion.

use std::path::PathBuf;
use std::time::Duration;

use cpm_core::apply::write_atomic;

use crate::store::IoError;

/// The environment variable read when the feature is on.
pub const FAULT_ENV: &str = "CPM_ETCD_BACKUP_FAULT";

/// One injected failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Cut the stream after this many bytes.
    Truncate(u64),
    /// Fail the write that would go past this many bytes.
    WriteError(u64),
    /// Pretend the filesystem has this many bytes available.
    FreeSpace(u64),
    /// Fail retention's first deletion.
    RemoveError,
    /// After this many bytes, write the marker file and sleep.
    Pause {
        /// Bytes before pausing.
        after: u64,
        /// The file written when pausing.
        marker: PathBuf,
    },
}

impl Fault {
    /// Parses a [`FAULT_ENV`] value.
    pub fn parse(s: &str) -> Option<Self> {
        if s == "remove-error" {
            return Some(Self::RemoveError);
        }
        let (kind, rest) = s.split_once(':')?;
        match kind {
            "truncate" => rest.parse().ok().map(Self::Truncate),
            "write-error" => rest.parse().ok().map(Self::WriteError),
            "free-space" => rest.parse().ok().map(Self::FreeSpace),
            "pause" => {
                let (n, marker) = rest.split_once(':')?;
                Some(Self::Pause {
                    after: n.parse().ok()?,
                    marker: marker.into(),
                })
            }
            _ => None,
        }
    }

    /// The fault from the environment: `Ok(None)` when unset or empty, `Err(value)` when
    /// malformed.
    pub fn from_env() -> Result<Option<Self>, String> {
        match std::env::var(FAULT_ENV) {
            Ok(v) if !v.is_empty() => Self::parse(&v).map(Some).ok_or(v),
            _ => Ok(None),
        }
    }
}

/// Applies the stream faults to the next chunk, `seen` bytes into the stream: returns the part
/// of `blob` to keep, or the injected write error.
pub fn on_chunk<'b>(
    fault: Option<&Fault>,
    seen: u64,
    blob: &'b [u8],
    tmp: &std::path::Path,
) -> Result<&'b [u8], IoError> {
    match fault {
        Some(Fault::Truncate(at)) => {
            let left = at.saturating_sub(seen);
            Ok(&blob[..blob.len().min(usize::try_from(left).unwrap_or(usize::MAX))])
        }
        Some(Fault::WriteError(at)) if seen + blob.len() as u64 > *at => {
            Err(IoError::on("write", tmp)(std::io::Error::other(
                "injected write failure (CPM_ETCD_BACKUP_FAULT)",
            )))
        }
        _ => Ok(blob),
    }
}

/// The pause fault: once `seen` reaches its threshold (and only once), writes the marker and
/// waits until the test removes it (it kills etcd first), at most 30 s.
pub async fn maybe_pause(
    fault: Option<&Fault>,
    seen: u64,
    paused: &mut bool,
) -> Result<(), IoError> {
    let Some(Fault::Pause { after, marker }) = fault else {
        return Ok(());
    };
    if *paused || seen < *after {
        return Ok(());
    }
    *paused = true;
    write_atomic(marker, b"paused\n", 0o644, None, None).map_err(IoError::on("write", marker))?;
    for _ in 0..300 {
        if !marker.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
