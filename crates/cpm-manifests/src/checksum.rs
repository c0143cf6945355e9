//! The checksum that makes the kubelet restart a static pod exactly when one of its inputs
//! changes: sha256 over the manifest (without the annotation) and every node file it references.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// The content of a referenced file, or its absence.
pub type FileContent<'a> = Option<&'a [u8]>;

/// sha256 over `manifest` and each `(path, content)` in path order; a missing file counts as
/// missing, so its appearance changes the checksum too.
pub fn checksum(manifest: &str, files: &BTreeMap<String, FileContent<'_>>) -> String {
    let mut h = Sha256::new();
    h.update(b"manifest\0");
    h.update(manifest.as_bytes());
    for (path, content) in files {
        h.update(b"\0file\0");
        h.update(path.as_bytes());
        match content {
            Some(bytes) => {
                h.update(b"\0present\0");
                h.update((bytes.len() as u64).to_be_bytes());
                h.update(bytes);
            }
            None => h.update(b"\0missing"),
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
