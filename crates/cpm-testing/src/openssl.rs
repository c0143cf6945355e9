//! Issues certificates with the `openssl` CLI: a kubeadm-style PKI for adoption tests, and the
//! peer that benchmarks compare cpm's issuance against. Every step is a real `openssl` process.

use std::path::{Path, PathBuf};
use std::process::Command;

use cpm_core::config::{KeyAlgorithm, San};
use cpm_core::pki::Usage;

/// One certificate to issue.
#[derive(Debug, Clone)]
pub struct OpensslCert {
    /// Path stem relative to the output dir (`apiserver`, `etcd/server`).
    pub stem: String,
    /// Subject CN.
    pub common_name: String,
    /// Subject O values.
    pub organizations: Vec<String>,
    /// SANs as written in certificates (`DNS:x` / `IP:y`).
    pub sans: Vec<String>,
    /// extendedKeyUsage value (`serverAuth`, `clientAuth`, `serverAuth,clientAuth`).
    pub ext_key_usage: String,
    /// Stem of the signing CA (`ca`, `front-proxy-ca`, `etcd/ca`).
    pub signer: String,
}

impl OpensslCert {
    /// A request for the same certificate cpm describes with core types.
    pub fn new(
        stem: &str,
        common_name: &str,
        organizations: &[String],
        sans: &[San],
        usage: Usage,
        signer: &str,
    ) -> Self {
        let ext_key_usage = usage.ext_key_usages().join(",");
        Self {
            stem: stem.to_string(),
            common_name: common_name.to_string(),
            organizations: organizations.to_vec(),
            sans: sans
                .iter()
                .map(|s| match s {
                    San::Dns(d) => format!("DNS:{d}"),
                    San::Ip(ip) => format!("IP:{ip}"),
                })
                .collect(),
            ext_key_usage,
            signer: signer.to_string(),
        }
    }
}

/// Runs openssl with `args`; panics with its stderr on failure (test helper).
fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("invariant: run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().expect("invariant: UTF-8 path")
}

/// Generates a private key. `traditional` writes PKCS#1 / SEC1 as kubeadm does.
pub fn genkey(path: &Path, alg: KeyAlgorithm, traditional: bool) {
    let opt = match alg {
        KeyAlgorithm::Rsa2048 => "rsa_keygen_bits:2048",
        KeyAlgorithm::Rsa3072 => "rsa_keygen_bits:3072",
        KeyAlgorithm::Rsa4096 => "rsa_keygen_bits:4096",
        KeyAlgorithm::EcdsaP256 => "ec_paramgen_curve:P-256",
        KeyAlgorithm::EcdsaP384 => "ec_paramgen_curve:P-384",
    };
    let algo = if alg.is_rsa() { "RSA" } else { "EC" };
    openssl(&[
        "genpkey",
        "-algorithm",
        algo,
        "-pkeyopt",
        opt,
        "-out",
        s(path),
    ]);
    if traditional {
        let tmp = path.with_extension("traditional");
        openssl(&["pkey", "-in", s(path), "-traditional", "-out", s(&tmp)]);
        std::fs::rename(&tmp, path).expect("invariant: rename key");
    }
}

fn key_usage(alg: KeyAlgorithm, ca: bool) -> String {
    let mut ku = String::from("critical,digitalSignature");
    if alg.is_rsa() {
        ku.push_str(",keyEncipherment");
    }
    if ca {
        ku.push_str(",keyCertSign");
    }
    ku
}

/// A self-signed CA `<dir>/<stem>.crt` + `.key`, valid 10 years.
pub fn ca(dir: &Path, stem: &str, common_name: &str, alg: KeyAlgorithm, traditional: bool) {
    let (crt, key) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    if let Some(p) = crt.parent() {
        std::fs::create_dir_all(p).expect("invariant: mkdir");
    }
    genkey(&key, alg, traditional);
    let cnf = dir.join(format!(".{}.cnf", stem.replace('/', "-")));
    let text = format!(
        "[req]\ndistinguished_name=dn\nx509_extensions=v3\nprompt=no\n[dn]\nCN={common_name}\n[v3]\nbasicConstraints=critical,CA:TRUE\nkeyUsage={}\nsubjectKeyIdentifier=hash\n",
        key_usage(alg, true)
    );
    cpm_core::apply::write_atomic(&cnf, text.as_bytes(), 0o600, None, None)
        .expect("invariant: write cnf");
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        s(&key),
        "-config",
        s(&cnf),
        "-days",
        "3650",
        "-out",
        s(&crt),
    ]);
    std::fs::remove_file(cnf).ok();
}

/// Issues `cert` under `dir`, signed by the CA at `<dir>/<signer>.crt|key`, valid `days`.
pub fn issue(
    dir: &Path,
    cert: &OpensslCert,
    alg: KeyAlgorithm,
    days: u32,
    traditional: bool,
) -> PathBuf {
    let crt = dir.join(format!("{}.crt", cert.stem));
    let key = dir.join(format!("{}.key", cert.stem));
    let csr = dir.join(format!("{}.csr", cert.stem));
    let ext = dir.join(format!("{}.ext", cert.stem));
    if let Some(p) = crt.parent() {
        std::fs::create_dir_all(p).expect("invariant: mkdir");
    }
    genkey(&key, alg, traditional);
    let mut subj = String::new();
    for o in &cert.organizations {
        subj.push_str(&format!("/O={o}"));
    }
    subj.push_str(&format!("/CN={}", cert.common_name));
    openssl(&[
        "req",
        "-new",
        "-key",
        s(&key),
        "-subj",
        &subj,
        "-out",
        s(&csr),
    ]);
    let mut text = format!(
        "basicConstraints=critical,CA:FALSE\nkeyUsage={}\nextendedKeyUsage={}\nauthorityKeyIdentifier=keyid\n",
        key_usage(alg, false),
        cert.ext_key_usage
    );
    if !cert.sans.is_empty() {
        text.push_str(&format!("subjectAltName={}\n", cert.sans.join(",")));
    }
    cpm_core::apply::write_atomic(&ext, text.as_bytes(), 0o600, None, None)
        .expect("invariant: write ext");
    let serial = format!("0x{:032x}", rand::random::<u128>() >> 1);
    let ca_crt = dir.join(format!("{}.crt", cert.signer));
    let ca_key = dir.join(format!("{}.key", cert.signer));
    openssl(&[
        "x509",
        "-req",
        "-in",
        s(&csr),
        "-CA",
        s(&ca_crt),
        "-CAkey",
        s(&ca_key),
        "-set_serial",
        &serial,
        "-days",
        &days.to_string(),
        "-extfile",
        s(&ext),
        "-out",
        s(&crt),
    ]);
    std::fs::remove_file(csr).ok();
    std::fs::remove_file(ext).ok();
    crt
}

/// The CAs and the service-account key pair in kubeadm's layout under `pki`.
pub fn kubeadm_cas(pki: &Path, alg: KeyAlgorithm, traditional: bool) {
    ca(pki, "ca", "kubernetes", alg, traditional);
    ca(pki, "front-proxy-ca", "front-proxy-ca", alg, traditional);
    ca(pki, "etcd/ca", "etcd-ca", alg, traditional);
    genkey(&pki.join("sa.key"), alg, traditional);
    openssl(&[
        "pkey",
        "-in",
        s(&pki.join("sa.key")),
        "-pubout",
        "-out",
        s(&pki.join("sa.pub")),
    ]);
}
