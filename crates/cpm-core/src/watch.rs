//! File triggers: notify watches that mark an agent dirty when an input path changes.
//!
//! The *parent directory* of each input file is watched, not the file, because atomic writers
//! (cpm's own, kubelet's Secret volumes) replace the file's inode by rename. A path that does not
//! exist yet is covered by its nearest existing ancestor. Events are debounced and carry no data:
//! the agent re-reads everything on its next pass.
//!
//! Only events that can change what a pass reads trigger one ([`changes_inputs`]): creation,
//! writes (modify, close after writing), renames, removal, and attribute changes (modes and owners
//! are part of what an agent converges). Opening, reading and closing after reading never do: the
//! pass's own reads of its inputs must not start the next pass (an idle agent does no work,
//! PRODUCT.md §6.9).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecursiveMode;
use notify::event::{AccessKind, AccessMode, EventKind};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

use crate::reconcile::{Trigger, TriggerSender};

/// Keeps the watches alive; dropping it stops them.
pub struct FileWatch {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
    /// The directories actually watched.
    pub dirs: Vec<PathBuf>,
}

impl std::fmt::Debug for FileWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatch")
            .field("dirs", &self.dirs)
            .finish()
    }
}

/// Could not set up a watch.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path}")]
pub struct WatchError {
    /// The directory.
    pub path: PathBuf,
    /// The notify error.
    #[source]
    pub source: notify::Error,
}

/// The directories to watch for `inputs`: a directory itself, a file's parent, or for a missing
/// path its nearest existing ancestor.
pub fn watch_dirs(inputs: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs = BTreeSet::new();
    for input in inputs {
        let mut cur: &Path = input;
        if !cur.is_dir() {
            cur = cur.parent().unwrap_or(Path::new("/"));
        }
        while !cur.is_dir() {
            match cur.parent() {
                Some(p) => cur = p,
                None => break,
            }
        }
        dirs.insert(cur.to_path_buf());
    }
    dirs.into_iter().collect()
}

/// Whether an event of `kind` can change an input: everything but opening, reading and closing
/// without writing. Unknown kinds (`Any`, `Other`: a rescan after a queue overflow, say) count
/// as changes, since a missed change is worse than one pass too many.
pub fn changes_inputs(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Remove(_)
        | EventKind::Any
        | EventKind::Other => true,
    }
}

/// Watches `inputs` and sends [`Trigger::File`] on every debounced change ([`changes_inputs`]).
/// A failed watch (a queue overflow) also triggers: the next pass re-reads everything.
pub fn watch_files(inputs: &[PathBuf], tx: TriggerSender) -> Result<FileWatch, WatchError> {
    let handler = move |result: DebounceEventResult| {
        let changed = match result {
            Ok(events) => events.iter().any(|e| changes_inputs(&e.kind)),
            Err(_) => true,
        };
        if changed {
            let _ = tx.send(Trigger::File);
        }
    };
    let mut debouncer =
        new_debouncer(Duration::from_millis(200), None, handler).map_err(|source| WatchError {
            path: PathBuf::new(),
            source,
        })?;
    let dirs = watch_dirs(inputs);
    for dir in &dirs {
        debouncer
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError {
                path: dir.clone(),
                source,
            })?;
    }
    Ok(FileWatch {
        _debouncer: debouncer,
        dirs,
    })
}

#[cfg(test)]
mod tests;
