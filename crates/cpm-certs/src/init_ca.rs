//! `cpm-certs init-ca`: a new CA bundle for a new cluster (the content of Secret `cpm-pki`).

use std::path::{Path, PathBuf};

use cpm_core::apply::{ApplyOptions, apply};
use cpm_core::config::KeyAlgorithm;
use cpm_core::fileset::{DesiredFile, FileSet};
use cpm_core::node::NodeRoot;
use cpm_core::pki::PkiError;
use cpm_core::pki::bundle::{FILES, generate};
use cpm_core::plan::plan;
use time::OffsetDateTime;

/// `init-ca` failed.
#[derive(Debug, thiserror::Error)]
pub enum InitCaError {
    /// A bundle file already exists: a CA is never overwritten.
    #[error("{0}: exists; refusing to overwrite a CA bundle")]
    Exists(PathBuf),
    /// Generation failed.
    #[error("cannot generate the CA bundle")]
    Generate(#[source] PkiError),
    /// Writing failed.
    #[error("cannot write the CA bundle")]
    Write(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Writes a new bundle into `out` (created 0700 if missing). Refuses if any bundle file exists.
pub fn init_ca(
    out: &Path,
    alg: KeyAlgorithm,
    now: OffsetDateTime,
    validity_days: u32,
) -> Result<Vec<PathBuf>, InitCaError> {
    if let Some(existing) = FILES.iter().map(|f| out.join(f.name)).find(|p| p.exists()) {
        return Err(InitCaError::Exists(existing));
    }
    let files = generate(alg, now, validity_days).map_err(InitCaError::Generate)?;
    let mut set = FileSet::new();
    let mut written = Vec::new();
    for (f, bytes) in files {
        let mut d = DesiredFile::new(f.name, bytes, f.mode);
        if f.secret {
            d = d.secret();
        }
        set.file(d).map_err(|e| InitCaError::Write(Box::new(e)))?;
        written.push(out.join(f.name));
    }
    if !out.exists() {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(out)
            .map_err(|e| InitCaError::Write(Box::new(e)))?;
    }
    let root = NodeRoot::new(out);
    let p = plan(&root, &set).map_err(|e| InitCaError::Write(Box::new(e)))?;
    apply(&root, &p, &ApplyOptions::default()).map_err(|e| InitCaError::Write(Box::new(e)))?;
    Ok(written)
}
