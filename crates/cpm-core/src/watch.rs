//! File triggers: notify watches that mark an agent dirty when an input path changes.
//!
//! The *parent directory* of each input file is watched, not the file, because atomic writers
//! (cpm's own, kubelet's Secret volumes) replace the file's inode by rename. A path that does not
//! exist yet is covered by its nearest existing ancestor. Events are debounced and carry no data:
//! the agent re-reads everything on its next pass.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecursiveMode;
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

/// Watches `inputs` and sends [`Trigger::File`] on every debounced change.
pub fn watch_files(inputs: &[PathBuf], tx: TriggerSender) -> Result<FileWatch, WatchError> {
    let handler = move |result: DebounceEventResult| {
        if let Ok(events) = result
            && !events.is_empty()
        {
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
