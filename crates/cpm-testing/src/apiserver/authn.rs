//! Authentication in kube-apiserver's union order: request-header (a front proxy's client
//! certificate plus `X-Remote-*` identity headers), then x509 client certificates, then bearer
//! tokens. A front-proxy certificate without a username header falls through to the next
//! authenticator; a request with no credential at all is anonymous.
//!
//! The same pieces serve the `kube-apiserver` front of `cpm-test-apiserver`, which
//! authenticates its clients and passes the identity on in request headers.

use std::collections::BTreeMap;

use http::HeaderMap;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::{ApiServerError, UserInfo};

/// Request-header authentication: which proxy certificates may assert an identity, and in
/// which headers (kube-apiserver's `--requestheader-*` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    /// The CA (PEM, one or more certificates) that must have issued the proxy's certificate.
    pub client_ca_pem: String,
    /// Common names a proxy certificate may carry; empty allows any.
    pub allowed_names: Vec<String>,
    /// Headers holding the username; the first present one wins.
    pub username_headers: Vec<String>,
    /// Headers holding groups; every value of each is one group.
    pub group_headers: Vec<String>,
    /// Prefixes of headers holding extra attributes (`X-Remote-Extra-Scopes: a` is extra
    /// `scopes: [a]`; the key is lowercased and percent-decoded).
    pub extra_headers_prefixes: Vec<String>,
}

impl RequestHeader {
    /// The headers kubeadm and cpm configure (`X-Remote-User`, `X-Remote-Group`,
    /// `X-Remote-Extra-`), any common name.
    pub fn standard(client_ca_pem: &str) -> Self {
        Self {
            client_ca_pem: client_ca_pem.to_string(),
            allowed_names: Vec::new(),
            username_headers: vec!["X-Remote-User".into()],
            group_headers: vec!["X-Remote-Group".into()],
            extra_headers_prefixes: vec!["X-Remote-Extra-".into()],
        }
    }

    /// The identity a request's headers assert, if a username header is present.
    pub(crate) fn user_from_headers(&self, headers: &HeaderMap) -> Option<UserInfo> {
        let username = self
            .username_headers
            .iter()
            .flat_map(|h| headers.get_all(h.as_str()))
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .find(|v| !v.is_empty())?
            .to_string();
        let groups = self
            .group_headers
            .iter()
            .flat_map(|h| headers.get_all(h.as_str()))
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in headers {
            let name = name.as_str();
            let Some(key) = self.extra_headers_prefixes.iter().find_map(|p| {
                name.get(..p.len())
                    .filter(|head| head.eq_ignore_ascii_case(p))
                    .map(|_| &name[p.len()..])
            }) else {
                continue;
            };
            if let Ok(v) = value.to_str() {
                extra
                    .entry(unescape(key).to_lowercase())
                    .or_default()
                    .push(v.to_string());
            }
        }
        Some(UserInfo {
            username,
            groups,
            extra,
        })
    }

    /// Removes every header that could assert an identity, so a client cannot pass one
    /// through a proxy.
    pub(crate) fn strip(&self, headers: &mut HeaderMap) {
        for h in self.username_headers.iter().chain(&self.group_headers) {
            headers.remove(h.as_str());
        }
        let extra: Vec<_> = headers
            .keys()
            .filter(|name| {
                self.extra_headers_prefixes.iter().any(|p| {
                    name.as_str()
                        .get(..p.len())
                        .is_some_and(|head| head.eq_ignore_ascii_case(p))
                })
            })
            .cloned()
            .collect();
        for name in extra {
            headers.remove(name);
        }
    }
}

/// Percent-decoding of an extra key (`url.PathUnescape`); invalid escapes stay as they are.
fn unescape(s: &str) -> String {
    let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2)))
        {
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encoding of an extra key for a header name (the inverse of [`unescape`]).
pub(crate) fn escape_extra_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~!$&'*+^`|".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The CA certificates of a PEM bundle, DER.
pub(crate) fn ca_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, ApiServerError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiServerError::Tls(format!("CA bundle: {e}")))?;
    if certs.is_empty() {
        return Err(ApiServerError::Tls("CA bundle: no certificate".into()));
    }
    Ok(certs)
}

/// Whether `leaf` was issued by one of `cas` (issuer name and signature; rustls has already
/// verified the chain against the union of every CA the listener trusts).
pub(crate) fn issued_by(leaf: &CertificateDer<'_>, cas: &[CertificateDer<'static>]) -> bool {
    let Ok((_, leaf)) = x509_parser::parse_x509_certificate(leaf) else {
        return false;
    };
    cas.iter().any(|ca| {
        x509_parser::parse_x509_certificate(ca).is_ok_and(|(_, ca)| {
            leaf.issuer() == ca.subject() && leaf.verify_signature(Some(ca.public_key())).is_ok()
        })
    })
}

/// The user a client certificate names: CN → username, each O → a group.
pub(crate) fn user_from_cert(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let username = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(UserInfo {
        username,
        groups,
        extra: BTreeMap::new(),
    })
}

/// The common name of a certificate.
pub(crate) fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    cert.subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()
        .map(str::to_string)
}

/// The certificate authenticators of a listener, parsed once.
#[derive(Debug, Clone)]
pub(crate) struct CertAuth {
    /// `--client-ca-file`: x509 client certificates.
    pub(crate) client_cas: Vec<CertificateDer<'static>>,
    /// `--requestheader-client-ca-file` and the header rules.
    pub(crate) request_header: Option<(Vec<CertificateDer<'static>>, RequestHeader)>,
}

/// What the certificate authenticators make of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CertOutcome {
    /// Authenticated (by request-header or x509).
    User {
        /// Who.
        user: UserInfo,
        /// Through a proxy's headers rather than the client's own certificate.
        via_proxy: bool,
    },
    /// A proxy certificate asserted an identity it may not assert (a common name outside the
    /// allowed names): refused unless a later authenticator succeeds.
    Refused,
    /// No opinion: go on to the bearer token.
    Next,
}

impl CertAuth {
    /// Every CA a listener must accept client certificates from.
    pub(crate) fn roots(&self) -> Vec<CertificateDer<'static>> {
        let mut roots = self.client_cas.clone();
        if let Some((cas, _)) = &self.request_header {
            roots.extend(cas.iter().cloned());
        }
        roots
    }

    /// Request-header first, then x509.
    pub(crate) fn authenticate(
        &self,
        peer: Option<&CertificateDer<'_>>,
        headers: &HeaderMap,
    ) -> CertOutcome {
        let Some(leaf) = peer else {
            return CertOutcome::Next;
        };
        let mut refused = false;
        if let Some((cas, rh)) = &self.request_header
            && issued_by(leaf, cas)
            && let Some(user) = rh.user_from_headers(headers)
        {
            let cn = common_name(leaf).unwrap_or_default();
            if rh.allowed_names.is_empty() || rh.allowed_names.contains(&cn) {
                return CertOutcome::User {
                    user,
                    via_proxy: true,
                };
            }
            refused = true;
        }
        if issued_by(leaf, &self.client_cas)
            && let Some(user) = user_from_cert(leaf)
        {
            return CertOutcome::User {
                user,
                via_proxy: false,
            };
        }
        if refused {
            CertOutcome::Refused
        } else {
            CertOutcome::Next
        }
    }
}

/// The bearer token of a request: `Some(None)` for an `Authorization` header that is not a
/// bearer token.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<Option<&str>> {
    let value = headers.get(http::header::AUTHORIZATION)?;
    let token = value.to_str().ok().and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    });
    Some(token)
}

#[cfg(test)]
mod tests;
