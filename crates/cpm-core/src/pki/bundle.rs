//! The CA bundle (Secret `cpm-pki`, mounted at `/pki`): the cluster CAs and the service-account
//! key pair, validated as a whole before anything is installed or issued from it.
//!
//! Two layouts are accepted: cpm's flat one (`etcd-ca.crt`) and kubeadm's (`etcd/ca.crt`), so an
//! existing `/etc/kubernetes/pki` can be adopted as it is.

use std::io;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::{Ca, CertSpec, Key, PkiError, Usage};
use crate::config::KeyAlgorithm;

/// Validity of CAs made by [`generate`], as kubeadm's (10 years).
pub const CA_VALIDITY_DAYS: u32 = 3650;

/// One file of the bundle: its name in the bundle directory, the name kubeadm gives it under
/// `/etc/kubernetes/pki`, its mode, and whether it is secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleFile {
    /// Name in cpm's flat layout.
    pub name: &'static str,
    /// Path under `etc/kubernetes/pki` (kubeadm's layout).
    pub installed: &'static str,
    /// Mode on the node.
    pub mode: u32,
    /// Private key material.
    pub secret: bool,
}

const fn file(name: &'static str, installed: &'static str, mode: u32, secret: bool) -> BundleFile {
    BundleFile {
        name,
        installed,
        mode,
        secret,
    }
}

/// Every file of a bundle, CA certificate before its key.
pub const FILES: [BundleFile; 8] = [
    file("ca.crt", "ca.crt", 0o644, false),
    file("ca.key", "ca.key", 0o600, true),
    file("front-proxy-ca.crt", "front-proxy-ca.crt", 0o644, false),
    file("front-proxy-ca.key", "front-proxy-ca.key", 0o600, true),
    file("etcd-ca.crt", "etcd/ca.crt", 0o644, false),
    file("etcd-ca.key", "etcd/ca.key", 0o600, true),
    file("sa.key", "sa.key", 0o600, true),
    file("sa.pub", "sa.pub", 0o600, false),
];

/// The bundle is missing, unreadable or inconsistent. The text names the file.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The directory itself cannot be read.
    #[error("{dir}: CA bundle directory is missing or unreadable")]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The IO error.
        #[source]
        source: io::Error,
    },
    /// A file cannot be read (absent in both layouts, or unreadable).
    #[error("{file}: cannot read CA bundle file")]
    Read {
        /// The file.
        file: PathBuf,
        /// The IO error.
        #[source]
        source: io::Error,
    },
    /// A file does not parse or is not what it must be.
    #[error("{file}: invalid")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        #[source]
        source: PkiError,
    },
    /// A key does not belong to its certificate (or `sa.pub` to `sa.key`).
    #[error("{key}: does not match {cert}")]
    Mismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate (or public key) file.
        cert: PathBuf,
    },
}

/// A loaded CA: its files' exact bytes and the signer.
#[derive(Debug)]
pub struct BundleCa {
    /// The signer.
    pub ca: Ca,
    /// The certificate file's bytes, as read.
    pub cert: Vec<u8>,
    /// The key file's bytes, as read. Secret.
    pub key: Vec<u8>,
}

/// A validated CA bundle.
#[derive(Debug)]
pub struct CaBundle {
    /// The directory it was read from.
    pub dir: PathBuf,
    /// The cluster CA (`ca`).
    pub kubernetes: BundleCa,
    /// The front-proxy CA.
    pub front_proxy: BundleCa,
    /// The etcd CA.
    pub etcd: BundleCa,
    /// `sa.key` bytes. Secret.
    pub sa_key: Vec<u8>,
    /// `sa.pub` bytes.
    pub sa_pub: Vec<u8>,
}

impl CaBundle {
    /// Reads and validates the bundle in `dir`: every CA parses, is a CA and matches its key;
    /// `sa.pub` is the public half of `sa.key`.
    pub fn load(dir: &Path) -> Result<Self, BundleError> {
        std::fs::read_dir(dir).map_err(|source| BundleError::Dir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let read = |f: &BundleFile| -> Result<(PathBuf, Vec<u8>), BundleError> {
            let flat = dir.join(f.name);
            let kubeadm = dir.join(f.installed);
            let path = if flat.exists() || !kubeadm.exists() {
                flat
            } else {
                kubeadm
            };
            std::fs::read(&path)
                .map(|b| (path.clone(), b))
                .map_err(|source| BundleError::Read { file: path, source })
        };
        let load_ca = |i: usize| -> Result<BundleCa, BundleError> {
            let (cert_path, cert) = read(&FILES[i])?;
            let (key_path, key) = read(&FILES[i + 1])?;
            let invalid = |file: &Path| {
                let file = file.to_path_buf();
                move |source| BundleError::Invalid { file, source }
            };
            let cert_text = String::from_utf8_lossy(&cert);
            let key_text = String::from_utf8_lossy(&key);
            super::inspect(&cert).map_err(invalid(&cert_path))?;
            Key::from_pem(&key_text).map_err(invalid(&key_path))?;
            let ca = Ca::from_pem(&cert_text, &key_text).map_err(|e| match e {
                PkiError::KeyMismatch => BundleError::Mismatch {
                    key: key_path.clone(),
                    cert: cert_path.clone(),
                },
                other => BundleError::Invalid {
                    file: cert_path.clone(),
                    source: other,
                },
            })?;
            Ok(BundleCa { ca, cert, key })
        };
        let kubernetes = load_ca(0)?;
        let front_proxy = load_ca(2)?;
        let etcd = load_ca(4)?;
        let (sa_key_path, sa_key) = read(&FILES[6])?;
        let (sa_pub_path, sa_pub) = read(&FILES[7])?;
        let key = Key::from_pem(&String::from_utf8_lossy(&sa_key)).map_err(|source| {
            BundleError::Invalid {
                file: sa_key_path.clone(),
                source,
            }
        })?;
        if normalize_pem(&key.public_key_pem()) != normalize_pem(&String::from_utf8_lossy(&sa_pub))
        {
            return Err(BundleError::Mismatch {
                key: sa_key_path,
                cert: sa_pub_path,
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            kubernetes,
            front_proxy,
            etcd,
            sa_key,
            sa_pub,
        })
    }

    /// Every file's content, in [`FILES`] order.
    pub fn contents(&self) -> [(&'static BundleFile, &[u8]); 8] {
        [
            (&FILES[0], &self.kubernetes.cert),
            (&FILES[1], &self.kubernetes.key),
            (&FILES[2], &self.front_proxy.cert),
            (&FILES[3], &self.front_proxy.key),
            (&FILES[4], &self.etcd.cert),
            (&FILES[5], &self.etcd.key),
            (&FILES[6], &self.sa_key),
            (&FILES[7], &self.sa_pub),
        ]
    }
}

fn normalize_pem(s: &str) -> String {
    s.split_whitespace().collect()
}

/// Makes a new bundle: three CAs (`kubernetes`, `front-proxy-ca`, `etcd-ca`) and a
/// service-account key pair, all with `alg`. Returns `(file, content)` in [`FILES`] order.
pub fn generate(
    alg: KeyAlgorithm,
    now: OffsetDateTime,
    validity_days: u32,
) -> Result<Vec<(BundleFile, Vec<u8>)>, PkiError> {
    let mut out = Vec::with_capacity(FILES.len());
    for (i, cn) in ["kubernetes", "front-proxy-ca", "etcd-ca"]
        .into_iter()
        .enumerate()
    {
        let key = Key::generate(alg)?;
        let cert = CertSpec::new(cn, Usage::Ca, now, validity_days).self_signed(&key)?;
        out.push((FILES[2 * i], cert.into_bytes()));
        out.push((FILES[2 * i + 1], key.to_pem().into_bytes()));
    }
    let sa = Key::generate(alg)?;
    out.push((FILES[6], sa.to_pem().into_bytes()));
    out.push((FILES[7], sa.public_key_pem().into_bytes()));
    Ok(out)
}

#[cfg(test)]
mod tests;
