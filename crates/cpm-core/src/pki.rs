//! Certificate primitives: key generation, issuance from a CA, and inspection of PEM certificates.
//!
//! Policy (which certificates a node needs, their subjects and SANs) lives in the binaries; this
//! module only knows how to make and read keys and certificates. Private keys are wrapped in
//! [`Key`], whose `Debug` never shows key material.
//!
//! ```
//! use cpm_core::config::KeyAlgorithm;
//! use cpm_core::pki::{Ca, CertSpec, Key, Usage, inspect};
//! let now = time::OffsetDateTime::now_utc();
//! let ca_key = Key::generate(KeyAlgorithm::EcdsaP256).unwrap();
//! let ca_pem = CertSpec::new("kubernetes", Usage::Ca, now, 3650).self_signed(&ca_key).unwrap();
//! let ca = Ca::from_pem(&ca_pem, &ca_key.to_pem()).unwrap();
//! let key = Key::generate(KeyAlgorithm::EcdsaP256).unwrap();
//! let leaf = ca.issue(&CertSpec::new("kube-apiserver", Usage::Server, now, 365), &key).unwrap();
//! let info = inspect(leaf.as_bytes()).unwrap();
//! assert_eq!(info.common_name, "kube-apiserver");
//! assert!(ca.signed(&info));
//! ```

use std::fmt;
use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};
use x509_parser::public_key::PublicKey;

use crate::config::{KeyAlgorithm, San};

/// How far issued certificates are backdated, to tolerate clock skew between nodes (as kubeadm).
pub const BACKDATE: Duration = Duration::minutes(5);

/// A certificate or key could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Key generation failed.
    #[error("cannot generate a {alg} key")]
    Generate {
        /// The algorithm.
        alg: KeyAlgorithm,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// A private key could not be parsed.
    #[error("not a PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    ParseKey(#[source] rcgen::Error),
    /// A certificate could not be parsed.
    #[error("not a PEM X.509 certificate: {0}")]
    ParseCert(String),
    /// Signing failed.
    #[error("cannot sign certificate {common_name:?}")]
    Sign {
        /// The subject.
        common_name: String,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// A SAN could not be encoded.
    #[error("invalid subject alternative name {0:?}")]
    San(String),
    /// The CA key does not belong to the CA certificate.
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    /// The CA certificate is not a CA.
    #[error("the certificate is not a CA (basicConstraints CA:TRUE with keyCertSign is required)")]
    NotCa,
}

/// A private key. `Debug` redacts it; [`Key::to_pem`] is the only way to see it.
pub struct Key {
    pair: KeyPair,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?}, <redacted>)", self.algorithm())
    }
}

impl Key {
    /// Generates a new key.
    pub fn generate(alg: KeyAlgorithm) -> Result<Self, PkiError> {
        let pair = match alg {
            KeyAlgorithm::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
            KeyAlgorithm::Rsa3072 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_3072)
            }
            KeyAlgorithm::Rsa4096 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096)
            }
            KeyAlgorithm::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyAlgorithm::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        }
        .map_err(|source| PkiError::Generate { alg, source })?;
        Ok(Self { pair })
    }

    /// Parses a PEM private key: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1
    /// (`EC PRIVATE KEY`), as kubeadm and openssl write them.
    pub fn from_pem(pem: &str) -> Result<Self, PkiError> {
        KeyPair::from_pem(pem)
            .map(|pair| Self { pair })
            .map_err(PkiError::ParseKey)
    }

    /// The key as PKCS#8 PEM. Secret.
    pub fn to_pem(&self) -> String {
        self.pair.serialize_pem()
    }

    /// The public key as PEM (`PUBLIC KEY`, SubjectPublicKeyInfo), as in kubeadm's `sa.pub`.
    pub fn public_key_pem(&self) -> String {
        self.pair.public_key_pem()
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        self.pair.subject_public_key_info()
    }

    /// The key's algorithm, when it is one cpm issues.
    pub fn algorithm(&self) -> Option<KeyAlgorithm> {
        let spki = self.spki_der();
        let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki).ok()?;
        spki_algorithm(&info)
    }
}

/// What a certificate is for; decides basicConstraints, keyUsage and extKeyUsage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A CA: CA:TRUE, keyCertSign.
    Ca,
    /// A TLS server (serverAuth).
    Server,
    /// A TLS client (clientAuth).
    Client,
    /// Both (serverAuth and clientAuth), as etcd's server and peer certificates.
    ServerClient,
}

impl Usage {
    /// The extended key usages, by name, in a fixed order.
    pub fn ext_key_usages(self) -> &'static [&'static str] {
        match self {
            Usage::Ca => &[],
            Usage::Server => &["serverAuth"],
            Usage::Client => &["clientAuth"],
            Usage::ServerClient => &["serverAuth", "clientAuth"],
        }
    }

    /// The key usages, by name, for a key of `alg` (keyEncipherment only for RSA keys).
    pub fn key_usages(self, alg: KeyAlgorithm) -> Vec<&'static str> {
        let mut out = vec!["digitalSignature"];
        if alg.is_rsa() {
            out.push("keyEncipherment");
        }
        if self == Usage::Ca {
            out.push("keyCertSign");
        }
        out
    }
}

/// The desired content of one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// Subject CN.
    pub common_name: String,
    /// Subject O (groups, for client certificates).
    pub organizations: Vec<String>,
    /// Subject alternative names.
    pub sans: Vec<San>,
    /// What the certificate is for.
    pub usage: Usage,
    /// Issue time (validity starts [`BACKDATE`] earlier).
    pub now: OffsetDateTime,
    /// Validity in days from `now`.
    pub validity_days: u32,
}

impl CertSpec {
    /// A spec with no O and no SANs.
    pub fn new(common_name: &str, usage: Usage, now: OffsetDateTime, validity_days: u32) -> Self {
        Self {
            common_name: common_name.to_string(),
            organizations: Vec::new(),
            sans: Vec::new(),
            usage,
            now,
            validity_days,
        }
    }

    fn params(&self, alg: KeyAlgorithm) -> Result<CertificateParams, PkiError> {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        // rcgen keeps one value per attribute type; more than one O is joined into one entry.
        if !self.organizations.is_empty() {
            p.distinguished_name
                .push(DnType::OrganizationName, self.organizations.join(","));
        }
        p.distinguished_name
            .push(DnType::CommonName, self.common_name.clone());
        p.not_before = self.now - BACKDATE;
        p.not_after = self.now + Duration::days(i64::from(self.validity_days));
        let mut serial = rand::random::<[u8; 16]>();
        serial[0] &= 0x7f;
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        p.subject_alt_names = self
            .sans
            .iter()
            .map(|san| match san {
                San::Ip(ip) => Ok(SanType::IpAddress(*ip)),
                San::Dns(d) => d
                    .as_str()
                    .to_string()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|_| PkiError::San(d.to_string())),
            })
            .collect::<Result<_, _>>()?;
        p.key_usages = self
            .usage
            .key_usages(alg)
            .into_iter()
            .map(|u| match u {
                "keyEncipherment" => KeyUsagePurpose::KeyEncipherment,
                "keyCertSign" => KeyUsagePurpose::KeyCertSign,
                _ => KeyUsagePurpose::DigitalSignature,
            })
            .collect();
        p.extended_key_usages = self
            .usage
            .ext_key_usages()
            .iter()
            .map(|u| {
                if *u == "serverAuth" {
                    ExtendedKeyUsagePurpose::ServerAuth
                } else {
                    ExtendedKeyUsagePurpose::ClientAuth
                }
            })
            .collect();
        if self.usage == Usage::Ca {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        } else {
            // basicConstraints CA:FALSE, as kubeadm writes it.
            p.is_ca = IsCa::ExplicitNoCa;
            p.use_authority_key_identifier_extension = true;
        }
        Ok(p)
    }

    /// Issues this spec as a self-signed certificate (a CA) with `key`; returns PEM.
    pub fn self_signed(&self, key: &Key) -> Result<String, PkiError> {
        let alg = key.algorithm().unwrap_or(KeyAlgorithm::EcdsaP256);
        let params = self.params(alg)?;
        params
            .self_signed(&key.pair)
            .map(|c| c.pem())
            .map_err(|source| PkiError::Sign {
                common_name: self.common_name.clone(),
                source,
            })
    }
}

/// A CA that can sign: its certificate (as given) and key.
pub struct Ca {
    cert_pem: String,
    info: CertInfo,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("subject", &self.info.common_name)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads a CA from PEM, checking that the key matches and that the certificate is a CA.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let info = inspect(cert_pem.as_bytes())?;
        let key = Key::from_pem(key_pem)?;
        if key.spki_der() != info.spki_der {
            return Err(PkiError::KeyMismatch);
        }
        if !info.is_ca || !info.key_usages.iter().any(|u| u == "keyCertSign") {
            return Err(PkiError::NotCa);
        }
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key.pair)
            .map_err(|e| PkiError::ParseCert(e.to_string()))?;
        Ok(Self {
            cert_pem: cert_pem.to_string(),
            info,
            issuer,
        })
    }

    /// The CA certificate PEM, exactly as loaded.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The parsed CA certificate.
    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// Issues `spec` for `key`, signed by this CA; returns PEM.
    pub fn issue(&self, spec: &CertSpec, key: &Key) -> Result<String, PkiError> {
        let alg = key.algorithm().unwrap_or(KeyAlgorithm::EcdsaP256);
        let params = spec.params(alg)?;
        params
            .signed_by(&key.pair, &self.issuer)
            .map(|c| c.pem())
            .map_err(|source| PkiError::Sign {
                common_name: spec.common_name.clone(),
                source,
            })
    }

    /// Whether `cert` was signed by this CA (issuer name and signature both match).
    pub fn signed(&self, cert: &CertInfo) -> bool {
        let Ok((_, ca)) = X509Certificate::from_der(&self.info.der) else {
            return false;
        };
        let Ok((_, leaf)) = X509Certificate::from_der(&cert.der) else {
            return false;
        };
        leaf.issuer() == ca.subject() && leaf.verify_signature(Some(ca.public_key())).is_ok()
    }
}

/// What cpm reads from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject CN.
    pub common_name: String,
    /// Subject O values.
    pub organizations: Vec<String>,
    /// Issuer CN.
    pub issuer_common_name: String,
    /// DNS SANs, as written.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ips: Vec<IpAddr>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// The key algorithm, when it is one cpm issues.
    pub key_algorithm: Option<KeyAlgorithm>,
    /// basicConstraints CA:TRUE.
    pub is_ca: bool,
    /// keyUsage names (`digitalSignature`, `keyEncipherment`, `keyCertSign`, …).
    pub key_usages: Vec<String>,
    /// extKeyUsage names (`serverAuth`, `clientAuth`).
    pub ext_key_usages: Vec<String>,
    /// Serial number, hex.
    pub serial: String,
    /// DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// The whole certificate, DER.
    pub der: Vec<u8>,
}

impl CertInfo {
    /// The SANs as a sorted set of [`San`]s, for order-insensitive comparison.
    pub fn sans(&self) -> Vec<San> {
        let mut out: Vec<San> = self
            .dns_names
            .iter()
            .filter_map(|d| d.parse().ok())
            .chain(self.ips.iter().copied().map(San::Ip))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Parses the first certificate of a PEM file.
pub fn inspect(pem: &[u8]) -> Result<CertInfo, PkiError> {
    let bad = |m: &str| PkiError::ParseCert(m.to_string());
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| bad(&e.to_string()))?;
    if pem.label != "CERTIFICATE" {
        return Err(bad(&format!("PEM block is {:?}", pem.label)));
    }
    let (_, cert) = X509Certificate::from_der(&pem.contents).map_err(|e| bad(&e.to_string()))?;
    let name_values = |name: &x509_parser::x509::X509Name<'_>, oid| -> Vec<String> {
        name.iter_by_oid(oid)
            .filter_map(|a| a.as_str().ok().map(str::to_string))
            .collect()
    };
    let cn = x509_parser::oid_registry::OID_X509_COMMON_NAME;
    let org = x509_parser::oid_registry::OID_X509_ORGANIZATION_NAME;
    let mut info = CertInfo {
        common_name: name_values(cert.subject(), &cn)
            .into_iter()
            .next()
            .unwrap_or_default(),
        organizations: name_values(cert.subject(), &org)
            .iter()
            .flat_map(|o| o.split(',').map(str::to_string))
            .collect(),
        issuer_common_name: name_values(cert.issuer(), &cn)
            .into_iter()
            .next()
            .unwrap_or_default(),
        dns_names: Vec::new(),
        ips: Vec::new(),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        key_algorithm: spki_algorithm(cert.public_key()),
        is_ca: cert.is_ca(),
        key_usages: Vec::new(),
        ext_key_usages: Vec::new(),
        serial: cert.raw_serial_as_string().replace(':', ""),
        spki_der: cert.public_key().raw.to_vec(),
        der: pem.contents.clone(),
    };
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(d) => info.dns_names.push((*d).to_string()),
                        GeneralName::IPAddress(b) => {
                            if let Ok(a) = <[u8; 4]>::try_from(*b) {
                                info.ips.push(IpAddr::from(a));
                            } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                                info.ips.push(IpAddr::from(a));
                            }
                        }
                        _ => {}
                    }
                }
            }
            ParsedExtension::KeyUsage(ku) => {
                let flags = [
                    (ku.digital_signature(), "digitalSignature"),
                    (ku.non_repudiation(), "contentCommitment"),
                    (ku.key_encipherment(), "keyEncipherment"),
                    (ku.data_encipherment(), "dataEncipherment"),
                    (ku.key_agreement(), "keyAgreement"),
                    (ku.key_cert_sign(), "keyCertSign"),
                    (ku.crl_sign(), "cRLSign"),
                ];
                info.key_usages = flags
                    .iter()
                    .filter(|(on, _)| *on)
                    .map(|(_, n)| (*n).to_string())
                    .collect();
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                if eku.server_auth {
                    info.ext_key_usages.push("serverAuth".into());
                }
                if eku.client_auth {
                    info.ext_key_usages.push("clientAuth".into());
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

fn spki_algorithm(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Option<KeyAlgorithm> {
    match spki.parsed().ok()? {
        PublicKey::RSA(rsa) => match rsa.key_size() {
            2048 => Some(KeyAlgorithm::Rsa2048),
            3072 => Some(KeyAlgorithm::Rsa3072),
            4096 => Some(KeyAlgorithm::Rsa4096),
            _ => None,
        },
        PublicKey::EC(ec) => match ec.key_size() {
            256 => Some(KeyAlgorithm::EcdsaP256),
            384 => Some(KeyAlgorithm::EcdsaP384),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests;

pub mod bundle;
