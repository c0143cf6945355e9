//! Reproducible tarballs: ustar headers written by hand, entries sorted by path, one fixed mtime,
//! numeric owners only (no user or group names, no pax headers), and a stable gzip.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, bail};

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file with its contents.
    File(Vec<u8>),
}

/// One tar entry: a relative path (no leading `/`, no trailing `/`), its kind, mode and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative path, e.g. `usr/local/bin/cpm-certs`.
    pub path: String,
    /// Directory or file.
    pub kind: Kind,
    /// Permission bits (e.g. `0o755`, `0o1777`).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
}

impl Entry {
    /// A directory entry.
    pub fn dir(path: &str, mode: u32, uid: u32, gid: u32) -> Self {
        Entry {
            path: path.into(),
            kind: Kind::Dir,
            mode,
            uid,
            gid,
        }
    }

    /// A file entry owned by root.
    pub fn file(path: &str, mode: u32, bytes: Vec<u8>) -> Self {
        Entry {
            path: path.into(),
            kind: Kind::File(bytes),
            mode,
            uid: 0,
            gid: 0,
        }
    }
}

const BLOCK: usize = 512;

/// Writes `entries` as a ustar archive, sorted by path, every mtime set to `mtime`. Fails on
/// duplicate, absolute, `..` or over-long (≥ 100 bytes) paths and on missing parent directories.
pub fn tar(entries: &[Entry], mtime: u64) -> anyhow::Result<Vec<u8>> {
    let mut sorted: BTreeMap<&str, &Entry> = BTreeMap::new();
    for e in entries {
        let p = e.path.as_str();
        if p.is_empty()
            || p.starts_with('/')
            || p.ends_with('/')
            || p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
        {
            bail!("tar entry {p:?}: not a clean relative path");
        }
        if sorted.insert(p, e).is_some() {
            bail!("tar entry {p:?}: duplicate path");
        }
    }
    for p in sorted.keys() {
        if let Some((parent, _)) = p.rsplit_once('/') {
            match sorted.get(parent) {
                Some(e) if e.kind == Kind::Dir => {}
                _ => bail!("tar entry {p:?}: parent directory {parent:?} is not an entry"),
            }
        }
    }
    let mut out = Vec::new();
    for e in sorted.values() {
        let (name, size, typeflag) = match &e.kind {
            Kind::Dir => (format!("{}/", e.path), 0, b'5'),
            Kind::File(b) => (e.path.clone(), b.len() as u64, b'0'),
        };
        out.extend_from_slice(&header(&name, e.mode, e.uid, e.gid, size, mtime, typeflag)?);
        if let Kind::File(b) = &e.kind {
            out.extend_from_slice(b);
            out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
        }
    }
    // End of archive: two zero blocks.
    out.resize(out.len() + 2 * BLOCK, 0);
    Ok(out)
}

/// One ustar header block.
fn header(
    name: &str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: u64,
    typeflag: u8,
) -> anyhow::Result<[u8; BLOCK]> {
    let mut h = [0u8; BLOCK];
    if name.len() >= 100 {
        bail!("tar entry {name:?}: path longer than 99 bytes (ustar name field)");
    }
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], u64::from(mode)).context(name.to_string())?;
    octal(&mut h[108..116], u64::from(uid)).context(name.to_string())?;
    octal(&mut h[116..124], u64::from(gid)).context(name.to_string())?;
    octal(&mut h[124..136], size).context(name.to_string())?;
    octal(&mut h[136..148], mtime).context(name.to_string())?;
    h[156] = typeflag;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    octal(&mut h[329..337], 0)?; // devmajor
    octal(&mut h[337..345], 0)?; // devminor
    // The checksum is computed with its own field as eight spaces, then written as six octal
    // digits, a NUL and a space.
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let digits = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(digits.as_bytes());
    Ok(h)
}

/// Writes `value` as zero-padded octal digits followed by a NUL, filling `field`.
fn octal(field: &mut [u8], value: u64) -> anyhow::Result<()> {
    let width = field.len() - 1;
    let s = format!("{value:0width$o}");
    if s.len() > width {
        bail!("value {value} does not fit a {width}-digit octal tar field");
    }
    field[..width].copy_from_slice(s.as_bytes());
    field[width] = 0;
    Ok(())
}

/// Gzips `data` with a fixed header (mtime 0, no file name, OS "unknown") at the default level
/// (level 9 is three times slower for 1% less), so the same input always gives the same bytes with
/// the locked flate2/miniz_oxide versions.
pub fn gzip(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::default());
    enc.write_all(data).context("gzip")?;
    enc.finish().context("gzip")
}
