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

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecursiveMode, Watcher};

use crate::reconcile::{Trigger, TriggerSender};

/// How long a burst of events (an atomic writer's temp file and rename, the kubelet's `..data`
/// swap of a Secret volume) may take to finish before the one trigger it causes is sent.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Keeps the watches alive; dropping it stops them (and the thread that debounces them).
pub struct FileWatch {
    _watcher: notify::RecommendedWatcher,
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

/// Watches `inputs` and sends one [`Trigger::File`] per burst of changes ([`changes_inputs`],
/// [`DEBOUNCE`]). A failed watch (a queue overflow) also triggers: the next pass re-reads
/// everything.
///
/// Nothing runs while nothing changes: the watcher's thread blocks in the kernel, and the
/// debouncing thread blocks on its channel (no ticking timer, so an idle agent is not woken).
pub fn watch_files(inputs: &[PathBuf], tx: TriggerSender) -> Result<FileWatch, WatchError> {
    let (raw_tx, raw_rx) = std::sync::mpsc::channel::<()>();
    let handler = move |result: notify::Result<notify::Event>| {
        let changed = match result {
            Ok(event) => changes_inputs(&event.kind),
            Err(_) => true,
        };
        if changed {
            let _ = raw_tx.send(());
        }
    };
    let mut watcher = notify::recommended_watcher(handler).map_err(|source| WatchError {
        path: PathBuf::new(),
        source,
    })?;
    let dirs = watch_dirs(inputs);
    for dir in &dirs {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError {
                path: dir.clone(),
                source,
            })?;
    }
    // Ends when the watcher (holding the only sender) is dropped, or the agent is gone.
    std::thread::Builder::new()
        .name("cpm-watch".into())
        .spawn(move || {
            while raw_rx.recv().is_ok() {
                std::thread::sleep(DEBOUNCE);
                while raw_rx.try_recv().is_ok() {}
                if tx.send(Trigger::File).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| WatchError {
            path: PathBuf::new(),
            source: notify::Error::io(e),
        })?;
    Ok(FileWatch {
        _watcher: watcher,
        dirs,
    })
}

#[cfg(test)]
mod tests;
