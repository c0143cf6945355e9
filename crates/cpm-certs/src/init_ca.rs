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

/// What `init-ca` wrote, or under `--dry-run` would write.
#[derive(Debug)]
pub struct InitCa {
    /// The bundle's files, in `out`.
    pub files: Vec<PathBuf>,
    /// The plan: `mkdir` and `create` lines, private keys as sha256 only.
    pub plan: String,
}

/// Writes a new bundle into `out` (created 0700 if missing), or with `dry_run` only plans it and
/// touches nothing. Refuses if any bundle file exists.
pub fn init_ca(
    out: &Path,
    alg: KeyAlgorithm,
    now: OffsetDateTime,
    validity_days: u32,
    dry_run: bool,
) -> Result<InitCa, InitCaError> {
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
    let root = NodeRoot::new(out);
    if dry_run {
        let p = plan(&root, &set).map_err(|e| InitCaError::Write(Box::new(e)))?;
        let mkdir = if out.exists() {
            String::new()
        } else {
            format!("mkdir {} (mode 0700)\n", out.display())
        };
        return Ok(InitCa {
            files: written,
            plan: mkdir + &p.render(),
        });
    }
    if !out.exists() {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(out)
            .map_err(|e| InitCaError::Write(Box::new(e)))?;
    }
    let p = plan(&root, &set).map_err(|e| InitCaError::Write(Box::new(e)))?;
    apply(&root, &p, &ApplyOptions::default()).map_err(|e| InitCaError::Write(Box::new(e)))?;
    Ok(InitCa {
        files: written,
        plan: p.render(),
    })
}
