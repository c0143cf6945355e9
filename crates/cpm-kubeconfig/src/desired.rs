//! The pure part of cpm-kubeconfig: which kubeconfigs to keep or regenerate, and what to do with
//! the root kubeconfig symlink, from the config, the cluster CA, the node's files and the time.

use std::net::IpAddr;
use std::path::PathBuf;

use cpm_core::config::{ControlPlaneConfiguration, HttpsEndpoint, KeyAlgorithm};
use cpm_core::fileset::{DesiredFile, FileSet, FileSetError};
use cpm_core::kubeconfig::{Kubeconfig, render};
use cpm_core::pki::{Ca, CertSpec, Key, PkiError, Usage, inspect};
use time::{Duration, OffsetDateTime};

use crate::catalogue::{
    APISERVER_PORT, KUBERNETES_DIR, ROOT_KUBECONFIG, ROOT_KUBECONFIG_TARGET, SPECS, Server, Spec,
};

/// Why a kubeconfig is (re)written. The text is the `reason` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// No file.
    Missing,
    /// Not a kubeconfig, or its certificate or key is not PEM (truncated, garbage).
    Unparsable,
    /// No current context, cluster, user, CA or client certificate data.
    MissingData,
    /// The embedded CA is not the current cluster CA, or the client certificate is not signed
    /// by it.
    CaChanged,
    /// The server URL is not the one this kubeconfig must use.
    ServerChanged,
    /// The client certificate's CN or O differ.
    SubjectDrift,
    /// The key is not the certificate's.
    KeyMismatch,
    /// The key algorithm differs from `certificates.keyAlgorithm`.
    AlgorithmDrift,
    /// The client certificate expires within `renewBeforeDays`.
    Expiring,
}

impl Renewal {
    /// The reason as a metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Renewal::Missing => "missing",
            Renewal::Unparsable => "unparsable",
            Renewal::MissingData => "missing_data",
            Renewal::CaChanged => "ca_changed",
            Renewal::ServerChanged => "server_changed",
            Renewal::SubjectDrift => "subject_drift",
            Renewal::KeyMismatch => "key_mismatch",
            Renewal::AlgorithmDrift => "algorithm_drift",
            Renewal::Expiring => "expiring",
        }
    }
}

/// What is at `root/.kube/config` now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkObserved {
    /// Nothing.
    Absent,
    /// A symlink to `target`; `dangling` when the target does not resolve.
    Symlink {
        /// Its target as written.
        target: PathBuf,
        /// The target does not exist.
        dangling: bool,
    },
    /// A regular file, directory or anything else that is not a symlink.
    NotASymlink,
}

/// The state of the root kubeconfig symlink after the pass (the `state` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Our symlink is (or will be) in place.
    Ok,
    /// A regular file (or directory) is there; left alone.
    ForeignFile,
    /// A symlink to something else that exists; left alone.
    ForeignSymlink,
    /// `rootKubeconfigSymlink: false` and no symlink of ours is there.
    Disabled,
}

impl LinkState {
    /// Every state, for exporting all of them.
    pub const ALL: [LinkState; 4] = [
        Self::Ok,
        Self::ForeignFile,
        Self::ForeignSymlink,
        Self::Disabled,
    ];

    /// The state as a metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Ok => "ok",
            LinkState::ForeignFile => "foreign_file",
            LinkState::ForeignSymlink => "foreign_symlink",
            LinkState::Disabled => "disabled",
        }
    }
}

/// Everything the decision needs besides the node's files.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// The configuration.
    pub config: &'a ControlPlaneConfiguration,
    /// The cluster CA (`ca.crt`/`ca.key` of the bundle).
    pub ca: &'a Ca,
    /// This node's IP (server of the component kubeconfigs).
    pub node_ip: IpAddr,
    /// Now.
    pub now: OffsetDateTime,
}

/// What the node has now.
#[derive(Debug, Default)]
pub struct Observed {
    /// Each kubeconfig's bytes, by file name (absent files are not in the map).
    pub files: std::collections::BTreeMap<&'static str, Vec<u8>>,
    /// What is at `root/.kube/config`.
    pub link: Option<LinkObserved>,
    /// Whether `root/.kube` exists.
    pub kube_dir_exists: bool,
}

/// The desired state and the decisions behind it.
#[derive(Debug)]
pub struct Desired {
    /// Files and the symlink to converge to.
    pub set: FileSet,
    /// Kubeconfigs to (re)write, with the reason.
    pub renewals: Vec<(&'static str, Renewal)>,
    /// Client certificate expiry of every kubeconfig once applied, by file name.
    pub expiry: Vec<(&'static str, OffsetDateTime)>,
    /// The symlink's state once applied.
    pub link: LinkState,
}

/// The desired state could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    /// Key generation or signing failed.
    #[error("cannot issue the client certificate of {file}")]
    Issue {
        /// The kubeconfig.
        file: &'static str,
        /// Why.
        #[source]
        source: PkiError,
    },
    /// A path was rejected (an invariant of the catalogue).
    #[error(transparent)]
    FileSet(#[from] FileSetError),
}

/// A key generator: `Key::generate` in production.
pub type KeyGen<'a> = dyn FnMut(KeyAlgorithm) -> Result<Key, PkiError> + 'a;

/// The server URL `spec` must use.
pub fn server(spec: &Spec, config: &ControlPlaneConfiguration, node_ip: IpAddr) -> HttpsEndpoint {
    match spec.server {
        Server::ControlPlaneEndpoint => config.control_plane_endpoint(),
        Server::LocalApiserver => HttpsEndpoint::new(&node_ip.to_string(), APISERVER_PORT),
    }
}

/// Whether the kubeconfig `existing` can stay as it is; the reason to rewrite it otherwise.
pub fn decide(spec: &Spec, existing: Option<&[u8]>, inputs: &Inputs<'_>) -> Option<Renewal> {
    let Some(bytes) = existing else {
        return Some(Renewal::Missing);
    };
    let Some(k) = std::str::from_utf8(bytes)
        .ok()
        .and_then(|t| Kubeconfig::parse(t).ok())
    else {
        return Some(Renewal::Unparsable);
    };
    let Some((cluster, user)) = k.current() else {
        return Some(Renewal::MissingData);
    };
    let (Some(ca_pem), Some(cert_pem), Some(key_pem)) =
        (cluster.ca(), user.client_certificate(), user.client_key())
    else {
        return Some(Renewal::MissingData);
    };
    let (Ok(embedded_ca), Ok(cert)) = (inspect(&ca_pem), inspect(&cert_pem)) else {
        return Some(Renewal::Unparsable);
    };
    let Some(key) = std::str::from_utf8(&key_pem)
        .ok()
        .and_then(|k| Key::from_pem(k).ok())
    else {
        return Some(Renewal::Unparsable);
    };
    if embedded_ca.der != inputs.ca.info().der || !inputs.ca.signed(&cert) {
        return Some(Renewal::CaChanged);
    }
    if cluster.server.trim_end_matches('/') != server(spec, inputs.config, inputs.node_ip).as_str()
    {
        return Some(Renewal::ServerChanged);
    }
    let mut groups = cert.organizations.clone();
    groups.sort();
    let mut want: Vec<String> = spec.groups.iter().map(|g| (*g).to_string()).collect();
    want.sort();
    if cert.common_name != spec.user || groups != want {
        return Some(Renewal::SubjectDrift);
    }
    if key.spki_der() != cert.spki_der {
        return Some(Renewal::KeyMismatch);
    }
    if cert.key_algorithm != Some(inputs.config.certificates.key_algorithm) {
        return Some(Renewal::AlgorithmDrift);
    }
    if cert.not_after - inputs.now
        <= Duration::days(i64::from(inputs.config.certificates.renew_before_days))
    {
        return Some(Renewal::Expiring);
    }
    None
}

/// What to do with the root symlink: the desired link (if any) and the resulting state.
/// Never takes a path holding a regular file or a live symlink to something else.
pub fn decide_link(enabled: bool, observed: &LinkObserved) -> (bool, LinkState) {
    let ours = |t: &PathBuf| t.as_os_str() == ROOT_KUBECONFIG_TARGET;
    match (enabled, observed) {
        (true, LinkObserved::Absent) => (true, LinkState::Ok),
        (true, LinkObserved::Symlink { target, dangling }) if ours(target) || *dangling => {
            (true, LinkState::Ok)
        }
        (true, LinkObserved::Symlink { .. }) => (false, LinkState::ForeignSymlink),
        (_, LinkObserved::NotASymlink) => (
            false,
            if enabled {
                LinkState::ForeignFile
            } else {
                LinkState::Disabled
            },
        ),
        (false, _) => (false, LinkState::Disabled),
    }
}

/// Computes the four kubeconfigs (kept byte-identical when valid) and the root symlink.
pub fn desired(
    inputs: &Inputs<'_>,
    observed: &Observed,
    keygen: &mut KeyGen<'_>,
) -> Result<Desired, DesiredError> {
    let mut set = FileSet::new();
    set.dir(KUBERNETES_DIR, 0o755)?;
    let mut renewals = Vec::new();
    let mut expiry = Vec::new();
    let cfg = inputs.config;
    for spec in &SPECS {
        let existing = observed.files.get(spec.file).map(Vec::as_slice);
        let bytes = match (decide(spec, existing, inputs), existing) {
            (None, Some(b)) => b.to_vec(),
            (reason, _) => {
                let reason = reason.unwrap_or(Renewal::Missing);
                let issue_err = |source| DesiredError::Issue {
                    file: spec.file,
                    source,
                };
                let key = keygen(cfg.certificates.key_algorithm).map_err(issue_err)?;
                let mut cert_spec = CertSpec::new(
                    spec.user,
                    Usage::Client,
                    inputs.now,
                    cfg.certificates.validity_days,
                );
                cert_spec.organizations = spec.groups.iter().map(|g| (*g).to_string()).collect();
                let cert = inputs.ca.issue(&cert_spec, &key).map_err(issue_err)?;
                renewals.push((spec.file, reason));
                let server = server(spec, cfg, inputs.node_ip);
                render(
                    &cfg.cluster_name,
                    server.as_str(),
                    inputs.ca.cert_pem(),
                    spec.user,
                    &cert,
                    &key.to_pem(),
                )
                .into_bytes()
            }
        };
        if let Some(at) = Kubeconfig::parse(&String::from_utf8_lossy(&bytes))
            .ok()
            .and_then(|k| k.current().and_then(|(_, u)| u.client_certificate()))
            .and_then(|c| inspect(&c).ok())
            .map(|i| i.not_after)
        {
            expiry.push((spec.file, at));
        }
        let mut file = DesiredFile::new(spec.path(), bytes, 0o600).secret();
        if let Some((_, reason)) = renewals.iter().find(|(f, _)| *f == spec.file) {
            file = file.note(format!("{}: write ({})", spec.file, reason.as_str()));
        }
        set.file(file)?;
    }
    let (want_link, link) = decide_link(
        cfg.root_kubeconfig_symlink,
        observed.link.as_ref().unwrap_or(&LinkObserved::Absent),
    );
    if want_link {
        if !observed.kube_dir_exists {
            set.dir("root/.kube", 0o700)?;
        }
        set.symlink(ROOT_KUBECONFIG, ROOT_KUBECONFIG_TARGET)?;
    } else if !cfg.root_kubeconfig_symlink
        && matches!(&observed.link, Some(LinkObserved::Symlink { target, .. }) if target.as_os_str() == ROOT_KUBECONFIG_TARGET)
    {
        // Switched off: remove the symlink, but only ours.
        set.own(ROOT_KUBECONFIG)?;
    }
    Ok(Desired {
        set,
        renewals,
        expiry,
        link,
    })
}

#[cfg(test)]
mod tests;
