//! Certificates checked by the openssl CLI: chain verification, the docs table, and adoption of a
//! kubeadm-style PKI made by openssl.

use std::collections::BTreeSet;

use cpm_certs::catalogue::{NodeIdentity, Signer, leaves};
use cpm_core::config::{ControlPlaneConfiguration, KeyAlgorithm};
use cpm_testing::openssl::{OpensslCert, issue, kubeadm_cas};

use super::*;

fn ca_file(signer: &str) -> String {
    let stem = [Signer::Kubernetes, Signer::FrontProxy, Signer::Etcd]
        .into_iter()
        .find(|s| s.name() == signer)
        .unwrap()
        .stem();
    format!("{stem}.crt")
}

#[test]
fn openssl_verifies_every_leaf_for_every_algorithm() {
    for alg in KeyAlgorithm::ALL {
        let node = Node::with(
            &format!("certificates: {{keyAlgorithm: {}}}\n", alg.name()),
            alg,
            "master-1",
            "127.0.0.1",
        );
        let out = node.run(&["--once"]);
        assert_eq!(code(&out), 0, "{alg}: {}", stderr(&out));
        for (name, stem, signer) in cpm_certs::catalogue::LEAF_FILES {
            let ca = node.pki_path(&ca_file(signer.name()));
            let crt = node.pki_path(&format!("{stem}.crt"));
            let (ok, text) = openssl(&["verify", "-CAfile", s(&ca), s(&crt)]);
            assert!(
                ok && text.trim_end().ends_with(": OK"),
                "{alg} {name}: {text}"
            );
            // And the key is the certificate's (openssl's own view of both public keys).
            let (_, cert_pub) = openssl(&["x509", "-in", s(&crt), "-noout", "-pubkey"]);
            let (_, key_pub) = openssl(&[
                "pkey",
                "-in",
                s(&node.pki_path(&format!("{stem}.key"))),
                "-pubout",
            ]);
            assert_eq!(cert_pub, key_pub, "{alg} {name}");
        }
    }
}

/// Parses the leaf table of docs/certificates.md into rows of cells.
fn docs_rows() -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/certificates.md"),
    )
    .unwrap();
    let table: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("| name | file | signed by"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect();
    table
        .iter()
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

fn expand(cell: &str, subs: &[(&str, &str)]) -> Vec<String> {
    let mut out = cell.to_string();
    for (k, v) in subs {
        out = out.replace(k, v);
    }
    out.split(", ")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn docs_table_matches_openssl() {
    let node = Node::with(
        "apiserver: {certSANs: [api.example.com, 203.0.113.10]}\nclusterDomain: cluster.example\nserviceSubnet: 10.100.0.0/16\npodSubnet: 10.244.0.0/16\n",
        KeyAlgorithm::EcdsaP256,
        "master-7",
        "192.0.2.10",
    );
    assert_eq!(code(&node.run(&["--once"])), 0);
    let rows = docs_rows();
    assert_eq!(rows.len(), 7, "one row per leaf");
    for row in rows {
        let [name, file, signer, subject, dns, ips, eku] = <[String; 7]>::try_from(row).unwrap();
        let dns_subs = [
            ("<node-name>", "master-7"),
            ("<clusterDomain>", "cluster.example"),
            ("<certSANs>", "api.example.com"),
        ];
        let ip_subs = [
            ("<node-ip>", "192.0.2.10"),
            ("<serviceIP>", "10.100.0.1"),
            ("<certSANs>", "203.0.113.10"),
        ];
        let crt = node.pki_path(&file);
        let (ok, text) = openssl(&["x509", "-in", s(&crt), "-noout", "-text"]);
        assert!(ok, "{name}: {text}");
        let subject = subject.replace("<node-name>", "master-7");
        assert!(
            text.contains(&format!("Subject: {subject}\n")),
            "{name}: subject {subject:?} not in\n{text}"
        );
        let (ok, _) = openssl(&[
            "verify",
            "-CAfile",
            s(&node.pki_path(&ca_file(&signer))),
            s(&crt),
        ]);
        assert!(ok, "{name} not signed by {signer}");
        let mut want: BTreeSet<String> = expand(&dns, &dns_subs)
            .into_iter()
            .map(|d| format!("DNS:{d}"))
            .collect();
        want.extend(expand(&ips, &ip_subs).into_iter().map(|ip| {
            // openssl prints IPv6 addresses expanded.
            let shown = if ip == "::1" {
                "0:0:0:0:0:0:0:1".to_string()
            } else {
                ip
            };
            format!("IP Address:{shown}")
        }));
        let got: BTreeSet<String> = text
            .lines()
            .skip_while(|l| !l.contains("X509v3 Subject Alternative Name"))
            .nth(1)
            .map(|l| l.trim().split(", ").map(str::to_string).collect())
            .unwrap_or_default();
        assert_eq!(got, want, "{name}: SANs");
        let got_eku = text
            .lines()
            .skip_while(|l| !l.contains("X509v3 Extended Key Usage"))
            .nth(1)
            .unwrap_or("")
            .trim();
        assert_eq!(got_eku, eku, "{name}: extended key usage");
        assert!(
            text.contains("X509v3 Key Usage: critical\n                Digital Signature\n"),
            "{name}: key usage"
        );
        assert!(
            text.contains("X509v3 Basic Constraints: critical\n                CA:FALSE"),
            "{name}: basic constraints"
        );
    }
}

/// The same seven leaves, as openssl requests, from the catalogue.
fn openssl_leaves(cfg: &ControlPlaneConfiguration, node: &NodeIdentity) -> Vec<OpensslCert> {
    leaves(cfg, node)
        .iter()
        .map(|l| {
            OpensslCert::new(
                l.stem,
                &l.common_name,
                &l.organizations,
                &l.sans,
                l.usage,
                l.signer.stem(),
            )
        })
        .collect()
}

#[test]
fn an_existing_kubeadm_pki_made_by_openssl_is_adopted_untouched() {
    // kubeadm's defaults: RSA-2048 keys in the traditional PKCS#1 encoding, CAs in place.
    let node = Node::with(
        "certificates: {keyAlgorithm: RSA-2048}\n",
        KeyAlgorithm::EcdsaP256,
        "master-1",
        "127.0.0.1",
    );
    let pki = node.root.join("etc/kubernetes/pki");
    kubeadm_cas(&pki, KeyAlgorithm::Rsa2048, true);
    let cfg = ControlPlaneConfiguration::load(&node.config).unwrap();
    let identity = NodeIdentity {
        name: "master-1".parse().unwrap(),
        ip: "127.0.0.1".parse().unwrap(),
    };
    for c in openssl_leaves(&cfg, &identity) {
        issue(&pki, &c, KeyAlgorithm::Rsa2048, 365, true);
    }
    for f in ["ca.key", "apiserver.key", "etcd/peer.key"] {
        assert!(
            std::fs::read_to_string(pki.join(f))
                .unwrap()
                .starts_with("-----BEGIN RSA PRIVATE KEY-----"),
            "{f}: PKCS#1 like kubeadm"
        );
    }
    // Modes as kubeadm leaves them (0600 keys, 0644 certs) are tightened, content is not touched.
    let before = node.root.entries();
    let mut args = node.args();
    let i = args.iter().position(|a| a == "--pki-dir").unwrap();
    args[i + 1] = s(&pki).to_string();
    args.push("--once".into());
    let out = cpm_certs(&args);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let after = node.root.entries();
    for (path, e) in &before {
        assert_eq!(after[path].digest, e.digest, "{path} was rewritten");
        assert_eq!(after[path].inode, e.inode, "{path} was replaced");
    }
    assert!(
        stderr(&out).contains("planned=") && !stderr(&out).contains("issued"),
        "{}",
        stderr(&out)
    );
    // A second pass plans nothing at all.
    args.pop();
    args.push("--check".into());
    assert_eq!(code(&cpm_certs(&args)), 0);
}
