//! The pure part of cpm-certs: from the config, the CA bundle, the node's current files and the
//! time, decide which leaves to keep or renew and compute the desired file set.
//!
//! No IO and no clock: time and key generation are parameters, so every decision is testable.

use std::collections::BTreeMap;
use std::fmt;

use cpm_core::config::{ControlPlaneConfiguration, KeyAlgorithm};
use cpm_core::fileset::{DesiredFile, FileSet, FileSetError};
use cpm_core::pki::bundle::CaBundle;
use cpm_core::pki::{Ca, CertInfo, CertSpec, Key, PkiError, inspect};
use time::{Duration, OffsetDateTime};

use crate::catalogue::{Leaf, NodeIdentity, PKI_DIR, Signer, leaves};

/// Why a leaf is (re)issued. The text is the `reason` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Renewal {
    /// No certificate file.
    Missing,
    /// The certificate does not parse.
    Unparsable,
    /// No key file.
    KeyMissing,
    /// The key does not parse or is not the certificate's.
    KeyMismatch,
    /// Not signed by the current CA (the CA was rotated).
    CaChanged,
    /// Subject CN or O differ.
    SubjectDrift,
    /// SANs differ.
    SanDrift,
    /// The key algorithm differs from `certificates.keyAlgorithm`.
    AlgorithmDrift,
    /// Extended key usages differ.
    UsageDrift,
    /// Within `renewBeforeDays` of expiry (or expired).
    Expiring,
    /// Asked for by `cpm-certs renew`.
    Forced,
}

impl Renewal {
    /// The reason as a metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Renewal::Missing => "missing",
            Renewal::Unparsable => "unparsable",
            Renewal::KeyMissing => "key_missing",
            Renewal::KeyMismatch => "key_mismatch",
            Renewal::CaChanged => "ca_changed",
            Renewal::SubjectDrift => "subject_drift",
            Renewal::SanDrift => "san_drift",
            Renewal::AlgorithmDrift => "algorithm_drift",
            Renewal::UsageDrift => "usage_drift",
            Renewal::Expiring => "expiring",
            Renewal::Forced => "forced",
        }
    }
}

impl fmt::Display for Renewal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the decision needs besides the node's files.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// The configuration.
    pub config: &'a ControlPlaneConfiguration,
    /// The validated CA bundle.
    pub bundle: &'a CaBundle,
    /// This node.
    pub node: &'a NodeIdentity,
    /// Now.
    pub now: OffsetDateTime,
    /// Leaves to reissue regardless (by kubeadm name).
    pub forced: &'a [String],
}

/// The node's current leaf files, by relative path (absent files are not in the map).
pub type Observed = BTreeMap<String, Vec<u8>>;

/// The desired state and the decisions behind it.
#[derive(Debug)]
pub struct Desired {
    /// Files to converge to.
    pub set: FileSet,
    /// Leaves to (re)issue, with the reason.
    pub renewals: Vec<(&'static str, Renewal)>,
    /// Expiry of every certificate (CAs and leaves) once the set is applied, by name.
    pub expiry: Vec<(&'static str, OffsetDateTime)>,
}

/// The desired state could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    /// Key generation or signing failed.
    #[error("cannot issue {name}")]
    Issue {
        /// The leaf.
        name: &'static str,
        /// Why.
        #[source]
        source: PkiError,
    },
    /// A path was rejected (an invariant of the catalogue).
    #[error(transparent)]
    FileSet(#[from] FileSetError),
}

/// A key generator: `Key::generate` in production, a cache in benchmarks.
pub type KeyGen<'a> = dyn FnMut(KeyAlgorithm) -> Result<Key, PkiError> + 'a;

/// Decides whether the leaf `spec` must be (re)issued given its current files.
pub fn decide(
    leaf: &Leaf,
    cert: Option<&[u8]>,
    key: Option<&[u8]>,
    ca: &Ca,
    cfg: &ControlPlaneConfiguration,
    now: OffsetDateTime,
) -> Option<Renewal> {
    let Some(cert) = cert else {
        return Some(Renewal::Missing);
    };
    let Ok(info) = inspect(cert) else {
        return Some(Renewal::Unparsable);
    };
    let Some(key) = key else {
        return Some(Renewal::KeyMissing);
    };
    let key_matches = std::str::from_utf8(key)
        .ok()
        .and_then(|k| Key::from_pem(k).ok())
        .is_some_and(|k| k.spki_der() == info.spki_der);
    if !key_matches {
        return Some(Renewal::KeyMismatch);
    }
    if !ca.signed(&info) {
        return Some(Renewal::CaChanged);
    }
    if !subject_matches(leaf, &info) {
        return Some(Renewal::SubjectDrift);
    }
    if info.sans() != leaf.sans {
        return Some(Renewal::SanDrift);
    }
    if info.key_algorithm != Some(cfg.certificates.key_algorithm) {
        return Some(Renewal::AlgorithmDrift);
    }
    let usages: Vec<&str> = info.ext_key_usages.iter().map(String::as_str).collect();
    if usages != leaf.usage.ext_key_usages()
        || info.is_ca
        || !info.key_usages.iter().any(|u| u == "digitalSignature")
    {
        return Some(Renewal::UsageDrift);
    }
    if info.not_after - now <= Duration::days(i64::from(cfg.certificates.renew_before_days)) {
        return Some(Renewal::Expiring);
    }
    None
}

fn subject_matches(leaf: &Leaf, info: &CertInfo) -> bool {
    let mut want = leaf.organizations.clone();
    let mut got = info.organizations.clone();
    want.sort();
    got.sort();
    info.common_name == leaf.common_name && want == got
}

/// Computes the desired PKI of the node: the CA bundle installed under `etc/kubernetes/pki`,
/// kept leaves byte-identical, renewed leaves freshly issued with keys from `keygen`.
pub fn desired(
    inputs: &Inputs<'_>,
    observed: &Observed,
    keygen: &mut KeyGen<'_>,
) -> Result<Desired, DesiredError> {
    let mut set = FileSet::new();
    set.dir(PKI_DIR, 0o755)?;
    set.dir(format!("{PKI_DIR}/etcd"), 0o755)?;
    let mut expiry = Vec::new();
    for (file, bytes) in inputs.bundle.contents() {
        let mut f = DesiredFile::new(
            format!("{PKI_DIR}/{}", file.installed),
            bytes.to_vec(),
            file.mode,
        );
        if file.secret {
            f = f.secret();
        }
        set.file(f)?;
    }
    for (name, ca) in [
        ("ca", &inputs.bundle.kubernetes),
        ("front-proxy-ca", &inputs.bundle.front_proxy),
        ("etcd-ca", &inputs.bundle.etcd),
    ] {
        expiry.push((name, ca.ca.info().not_after));
    }
    let cfg = inputs.config;
    let mut renewals = Vec::new();
    for leaf in leaves(cfg, inputs.node) {
        let ca = match leaf.signer {
            Signer::Kubernetes => &inputs.bundle.kubernetes.ca,
            Signer::FrontProxy => &inputs.bundle.front_proxy.ca,
            Signer::Etcd => &inputs.bundle.etcd.ca,
        };
        let (cert_path, key_path) = (leaf.cert_path(), leaf.key_path());
        let cert = observed.get(&cert_path).map(Vec::as_slice);
        let key = observed.get(&key_path).map(Vec::as_slice);
        let forced = inputs.forced.iter().any(|f| f == leaf.name);
        let decision = if forced {
            Some(Renewal::Forced)
        } else {
            decide(&leaf, cert, key, ca, cfg, inputs.now)
        };
        let (cert_bytes, key_bytes, note) = match (decision, cert, key) {
            (None, Some(c), Some(k)) => (c.to_vec(), k.to_vec(), None),
            (reason, _, _) => {
                let reason = reason.unwrap_or(Renewal::Missing);
                let issue_err = |source| DesiredError::Issue {
                    name: leaf.name,
                    source,
                };
                let new_key = keygen(cfg.certificates.key_algorithm).map_err(issue_err)?;
                let spec = CertSpec {
                    common_name: leaf.common_name.clone(),
                    organizations: leaf.organizations.clone(),
                    sans: leaf.sans.clone(),
                    usage: leaf.usage,
                    now: inputs.now,
                    validity_days: cfg.certificates.validity_days,
                };
                let pem = ca.issue(&spec, &new_key).map_err(issue_err)?;
                renewals.push((leaf.name, reason));
                let note = format!("{}: issue ({reason})", leaf.name);
                (pem.into_bytes(), new_key.to_pem().into_bytes(), Some(note))
            }
        };
        if let Ok(info) = inspect(&cert_bytes) {
            expiry.push((leaf.name, info.not_after));
        }
        let mut key_file = DesiredFile::new(key_path, key_bytes, 0o600).secret();
        let mut cert_file = DesiredFile::new(cert_path, cert_bytes, 0o600);
        if let Some(n) = note {
            key_file = key_file.note(n.clone());
            cert_file = cert_file.note(n);
        }
        set.file(key_file)?;
        set.file(cert_file)?;
    }
    Ok(Desired {
        set,
        renewals,
        expiry,
    })
}

#[cfg(test)]
mod tests;
