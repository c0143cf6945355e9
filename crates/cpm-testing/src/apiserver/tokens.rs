//! Service-account tokens issued by TokenRequest: JWTs (HS256 under a per-server random key,
//! so only this server can verify them) carrying kube-apiserver's claims, remembered with their
//! audiences and expiry. A token authenticates as `system:serviceaccount:<ns>:<name>` while it
//! has not expired and its ServiceAccount (same uid) still exists.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::UserInfo;

/// The shortest token kube-apiserver issues (`spec.expirationSeconds` below is invalid).
pub(crate) const MIN_EXPIRATION: Duration = Duration::from_secs(600);
/// The longest (2^32 seconds).
pub(crate) const MAX_EXPIRATION: Duration = Duration::from_secs(1 << 32);
/// The default `spec.expirationSeconds`.
pub(crate) const DEFAULT_EXPIRATION: Duration = Duration::from_secs(3600);

/// An object a token is bound to (`spec.boundObjectRef`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bound {
    pub(crate) kind: String,
    pub(crate) name: String,
    pub(crate) uid: String,
}

/// What a token was issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) namespace: String,
    pub(crate) name: String,
    /// The ServiceAccount's uid when the token was issued.
    pub(crate) uid: String,
    pub(crate) audiences: Vec<String>,
    pub(crate) expiration: Duration,
    pub(crate) bound: Option<Bound>,
}

/// A remembered token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issued {
    pub(crate) request: Request,
    pub(crate) user: UserInfo,
    pub(crate) expires: SystemTime,
}

/// The tokens a server issued.
pub(crate) struct Tokens {
    key: [u8; 32],
    issuer: String,
    issued: HashMap<String, Issued>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("issuer", &self.issuer)
            .field("issued", &self.issued.len())
            .finish_non_exhaustive()
    }
}

fn hmac_sha256(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    let mut inner = Sha256::new();
    let mut outer = Sha256::new();
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(msg);
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

impl Tokens {
    /// A fresh key; tokens name `issuer` as `iss`.
    pub(crate) fn new(issuer: &str) -> Self {
        Self {
            key: rand::random(),
            issuer: issuer.to_string(),
            issued: HashMap::new(),
        }
    }

    /// The audience every API request's token must carry (kube-apiserver's `--api-audiences`,
    /// which defaults to the issuer).
    pub(crate) fn api_audiences(&self) -> Vec<String> {
        vec![self.issuer.clone()]
    }

    /// Issues a token at `now`; returns it and its expiry. Expired tokens are forgotten.
    pub(crate) fn issue(&mut self, now: SystemTime, request: Request) -> (String, SystemTime) {
        self.issued.retain(|_, t| t.expires > now);
        let expires = now + request.expiration;
        let jti = format!("{:032x}", rand::random::<u128>());
        let mut k8s = json!({
            "namespace": request.namespace,
            "serviceaccount": {"name": request.name, "uid": request.uid},
        });
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        extra.insert(
            "authentication.kubernetes.io/credential-id".into(),
            vec![format!("JTI={jti}")],
        );
        if let Some(b) = &request.bound {
            k8s[b.kind.to_lowercase()] = json!({"name": b.name, "uid": b.uid});
            if b.kind == "Pod" {
                extra.insert(
                    "authentication.kubernetes.io/pod-name".into(),
                    vec![b.name.clone()],
                );
                extra.insert(
                    "authentication.kubernetes.io/pod-uid".into(),
                    vec![b.uid.clone()],
                );
            }
        }
        let sub = format!(
            "system:serviceaccount:{}:{}",
            request.namespace, request.name
        );
        let claims = json!({
            "aud": request.audiences,
            "exp": unix(expires),
            "iat": unix(now),
            "nbf": unix(now),
            "iss": self.issuer,
            "jti": jti,
            "kubernetes.io": k8s,
            "sub": sub,
        });
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": "cpm-test-apiserver"});
        let signing_input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let token = format!(
            "{signing_input}.{}",
            B64.encode(hmac_sha256(&self.key, signing_input.as_bytes()))
        );
        let user = UserInfo {
            username: sub,
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{}", request.namespace),
            ],
            extra,
        };
        self.issued.insert(
            token.clone(),
            Issued {
                request,
                user,
                expires,
            },
        );
        (token, expires)
    }

    /// The token's record, if this server issued it, it verifies and it has not expired at
    /// `now`. The caller checks the audiences and that the ServiceAccount still exists.
    pub(crate) fn lookup(&self, token: &str, now: SystemTime) -> Option<&Issued> {
        let (signing_input, signature) = token.rsplit_once('.')?;
        let want = B64.encode(hmac_sha256(&self.key, signing_input.as_bytes()));
        if want != signature {
            return None;
        }
        self.issued.get(token).filter(|t| t.expires > now)
    }
}

/// The audiences both lists name, in `wanted`'s order.
pub(crate) fn intersect(wanted: &[String], have: &[String]) -> Vec<String> {
    wanted
        .iter()
        .filter(|a| have.contains(a))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests;
