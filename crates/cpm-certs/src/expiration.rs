//! `cpm-certs check-expiration`: every certificate on the node, its CA, expiry and residual time.

use std::fmt::Write as _;
use std::path::PathBuf;

use cpm_core::config::KeyAlgorithm;
use cpm_core::kubeconfig::Kubeconfig;
use cpm_core::node::NodeRoot;
use cpm_core::pki::inspect;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::catalogue::{CA_FILES, LEAF_FILES, PKI_DIR};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns, like `kubeadm certs check-expiration`.
    Table,
    /// One JSON document.
    Json,
}

/// One certificate's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Name (kubeadm's).
    pub name: String,
    /// File path.
    pub path: PathBuf,
    /// `ok`, `expired`, `missing` or `unparsable`.
    pub status: &'static str,
    /// Expiry, RFC 3339.
    pub expires: Option<String>,
    /// Seconds until expiry (negative once expired).
    pub residual_seconds: Option<i64>,
    /// The signing CA's name (leaves only).
    pub authority: Option<&'static str>,
    /// Key algorithm.
    pub key_algorithm: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Leaf certificates, then kubeconfig client certificates.
    pub certificates: Vec<Entry>,
    /// CA certificates.
    pub authorities: Vec<Entry>,
}

/// The kubeconfigs whose client certificates are listed, under `etc/kubernetes` (written by
/// cpm-kubeconfig).
pub const KUBECONFIGS: [&str; 4] = [
    "admin.conf",
    "super-admin.conf",
    "controller-manager.conf",
    "scheduler.conf",
];

/// An entry for a certificate read from `bytes` (`None`: the file is missing; `Some(None)`: the
/// file exists but holds no certificate).
fn entry(
    name: &str,
    path: PathBuf,
    bytes: Option<Option<Vec<u8>>>,
    authority: Option<&'static str>,
    now: OffsetDateTime,
) -> Entry {
    let mut e = Entry {
        name: name.to_string(),
        path,
        status: "missing",
        expires: None,
        residual_seconds: None,
        authority,
        key_algorithm: None,
    };
    let Some(bytes) = bytes else { return e };
    let Some(info) = bytes.and_then(|b| inspect(&b).ok()) else {
        e.status = "unparsable";
        return e;
    };
    let residual = (info.not_after - now).whole_seconds();
    e.status = if residual > 0 { "ok" } else { "expired" };
    e.expires = info.not_after.format(&Rfc3339).ok();
    e.residual_seconds = Some(residual);
    e.key_algorithm = info
        .key_algorithm
        .map(KeyAlgorithm::name)
        .map(str::to_string);
    e
}

fn pki_entry(
    root: &NodeRoot,
    name: &str,
    rel: &str,
    authority: Option<&'static str>,
    now: OffsetDateTime,
) -> Entry {
    let path = root
        .join(format!("{PKI_DIR}/{rel}"))
        .unwrap_or_else(|_| PathBuf::from(rel));
    let bytes = std::fs::read(&path).ok().map(Some);
    entry(name, path, bytes, authority, now)
}

fn kubeconfig_entry(root: &NodeRoot, file: &str, now: OffsetDateTime) -> Entry {
    let path = root
        .join(format!("etc/kubernetes/{file}"))
        .unwrap_or_else(|_| PathBuf::from(file));
    let cert = std::fs::read_to_string(&path).ok().map(|text| {
        Kubeconfig::parse(&text)
            .ok()
            .and_then(|k| k.current().and_then(|(_, user)| user.client_certificate()))
    });
    entry(file, path, cert, Some("ca"), now)
}

/// Reads every certificate under the root: leaves, kubeconfig client certificates, CAs.
pub fn report(root: &NodeRoot, now: OffsetDateTime) -> Report {
    let certificates = LEAF_FILES
        .iter()
        .map(|(name, stem, signer)| {
            pki_entry(root, name, &format!("{stem}.crt"), Some(signer.name()), now)
        })
        .chain(KUBECONFIGS.iter().map(|f| kubeconfig_entry(root, f, now)))
        .collect();
    let authorities = CA_FILES
        .iter()
        .map(|(name, rel)| pki_entry(root, name, rel, None, now))
        .collect();
    Report {
        certificates,
        authorities,
    }
}

/// kubeadm-style short duration: `9y`, `364d`, `23h`, `59m`, `<invalid>` once expired.
pub fn short_duration(seconds: i64) -> String {
    match seconds {
        s if s <= 0 => "<invalid>".into(),
        s if s >= 365 * 86_400 => format!("{}y", s / (365 * 86_400)),
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3_600 => format!("{}h", s / 3_600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Renders the report.
pub fn render(report: &Report, output: Output) -> String {
    match output {
        Output::Json => serde_json::to_string_pretty(report).unwrap_or_default() + "\n",
        Output::Table => {
            let mut out = String::new();
            let row = |out: &mut String, e: &Entry, with_ca: bool| {
                let expires = e
                    .expires
                    .clone()
                    .unwrap_or_else(|| format!("<{}>", e.status));
                let residual = e.residual_seconds.map_or_else(String::new, short_duration);
                let alg = e.key_algorithm.clone().unwrap_or_default();
                if with_ca {
                    let _ = writeln!(
                        out,
                        "{:<26}{:<27}{:<16}{:<24}{}",
                        e.name,
                        expires,
                        residual,
                        e.authority.unwrap_or(""),
                        alg
                    );
                } else {
                    let _ = writeln!(out, "{:<26}{:<27}{:<16}{}", e.name, expires, residual, alg);
                }
            };
            let _ = writeln!(
                out,
                "{:<26}{:<27}{:<16}{:<24}KEY ALGORITHM",
                "CERTIFICATE", "EXPIRES", "RESIDUAL TIME", "CERTIFICATE AUTHORITY"
            );
            for e in &report.certificates {
                row(&mut out, e, true);
            }
            let _ = writeln!(
                out,
                "\n{:<26}{:<27}{:<16}KEY ALGORITHM",
                "CERTIFICATE AUTHORITY", "EXPIRES", "RESIDUAL TIME"
            );
            for e in &report.authorities {
                row(&mut out, e, false);
            }
            out
        }
    }
}
