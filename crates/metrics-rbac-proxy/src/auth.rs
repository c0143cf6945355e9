//! Authentication (TokenReview, or a verified client certificate) and authorisation (static
//! allow rules, then SubjectAccessReview), with cached decisions.
//!
//! Token answers are cached under the sha256 of the token (the token itself is never stored or
//! logged), authorisation answers under the sha256 of the user's attributes and the route.
//! An API error or timeout is returned as an error, never cached, and never turns into an allow.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes as SarResourceAttributes, SubjectAccessReview,
    SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;

use crate::cache::{Cache, CacheOptions, Key, Lookup};
use crate::metrics::ProxyMetrics;
use crate::routes::{AllowRule, ResourceAttributes};

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Username (a client certificate's CN).
    pub name: String,
    /// UID (empty for certificates).
    pub uid: String,
    /// Groups (a client certificate's O values).
    pub groups: Vec<String>,
    /// Extra attributes from the TokenReview.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    /// A user from a certificate subject.
    pub fn from_cert(name: String, groups: Vec<String>) -> Self {
        Self {
            name,
            uid: String::new(),
            groups,
            extra: BTreeMap::new(),
        }
    }
}

/// The Kubernetes API could not answer a review.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The API answered with an error, or the request failed.
    #[error("{kind} failed")]
    Api {
        /// `tokenreview` or `subjectaccessreview`.
        kind: &'static str,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
    /// No answer in time.
    #[error("{kind}: no answer within {timeout:?}")]
    Timeout {
        /// `tokenreview` or `subjectaccessreview`.
        kind: &'static str,
        /// The deadline.
        timeout: Duration,
    },
}

/// What a route asks the authoriser for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The proxy path (the non-resource path of the review).
    pub path: String,
    /// Resource attributes instead of the path.
    pub resource: Option<ResourceAttributes>,
}

/// Authentication and authorisation settings.
#[derive(Debug, Clone)]
pub struct AuthOptions {
    /// TokenReview audiences (empty: the API server's own).
    pub audiences: Vec<String>,
    /// Deadline of one review call.
    pub review_timeout: Duration,
    /// Static allow rules, checked before any SubjectAccessReview.
    pub allow: Vec<AllowRule>,
    /// Decision cache settings.
    pub cache: CacheOptions,
}

/// The authenticator and authoriser with their caches.
pub struct Auth {
    client: kube::Client,
    opts: AuthOptions,
    tokens: Cache<Option<User>>,
    decisions: Cache<bool>,
    metrics: ProxyMetrics,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("opts", &self.opts)
            .field("tokens", &self.tokens.len())
            .field("decisions", &self.decisions.len())
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// An authenticator using `client` for reviews.
    pub fn new(client: kube::Client, opts: AuthOptions, metrics: ProxyMetrics) -> Self {
        Self {
            client,
            tokens: Cache::new(opts.cache, Option::is_some),
            decisions: Cache::new(opts.cache, |allowed| *allowed),
            opts,
            metrics,
        }
    }

    /// The user a bearer token belongs to (`None`: not a valid token for our audiences).
    pub async fn authenticate_token(&self, token: &str) -> Result<Option<User>, ReviewError> {
        let mut parts: Vec<&[u8]> = vec![b"token", token.as_bytes()];
        parts.extend(self.opts.audiences.iter().map(String::as_bytes));
        let key = Key::of(&parts);
        let (result, lookup) = self
            .tokens
            .get_or_fetch(key, || self.token_review(token))
            .await;
        self.metrics.cache_lookup("authn", lookup == Lookup::Hit);
        result
    }

    /// Whether `user` may GET `target`: a static rule, else a SubjectAccessReview.
    pub async fn authorize(&self, user: &User, target: &Target) -> Result<bool, ReviewError> {
        if target.resource.is_none()
            && self
                .opts
                .allow
                .iter()
                .any(|r| r.allows(&user.name, &user.groups, &target.path))
        {
            return Ok(true);
        }
        let extra: Vec<String> = user
            .extra
            .iter()
            .map(|(k, v)| format!("{k}={}", v.join(",")))
            .collect();
        let mut parts: Vec<&[u8]> = vec![
            b"sar",
            user.name.as_bytes(),
            user.uid.as_bytes(),
            target.path.as_bytes(),
        ];
        parts.push(b"groups");
        parts.extend(user.groups.iter().map(String::as_bytes));
        parts.push(b"extra");
        parts.extend(extra.iter().map(String::as_bytes));
        let key = Key::of(&parts);
        let (result, lookup) = self
            .decisions
            .get_or_fetch(key, || self.subject_access_review(user, target))
            .await;
        self.metrics.cache_lookup("authz", lookup == Lookup::Hit);
        result
    }

    async fn token_review(&self, token: &str) -> Result<Option<User>, ReviewError> {
        const KIND: &str = "tokenreview";
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: (!self.opts.audiences.is_empty()).then(|| self.opts.audiences.clone()),
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = self
            .call(KIND, api.create(&PostParams::default(), &review))
            .await?;
        let Some(status) = answer.status else {
            return Ok(None);
        };
        if status.authenticated != Some(true) {
            return Ok(None);
        }
        if !self.opts.audiences.is_empty() {
            let granted = status.audiences.unwrap_or_default();
            if !granted.iter().any(|a| self.opts.audiences.contains(a)) {
                return Ok(None);
            }
        }
        let Some(u) = status.user else {
            return Ok(None);
        };
        let Some(name) = u.username.filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        Ok(Some(User {
            name,
            uid: u.uid.unwrap_or_default(),
            groups: u.groups.unwrap_or_default(),
            extra: u.extra.unwrap_or_default(),
        }))
    }

    async fn subject_access_review(
        &self,
        user: &User,
        target: &Target,
    ) -> Result<bool, ReviewError> {
        const KIND: &str = "subjectaccessreview";
        let (resource_attributes, non_resource_attributes) = match &target.resource {
            Some(r) => (
                Some(SarResourceAttributes {
                    verb: Some(r.verb.clone().unwrap_or_else(|| "get".into())),
                    group: r.group.clone(),
                    version: r.version.clone(),
                    resource: r.resource.clone(),
                    subresource: r.subresource.clone(),
                    namespace: r.namespace.clone(),
                    name: r.name.clone(),
                    ..Default::default()
                }),
                None,
            ),
            None => (
                None,
                Some(NonResourceAttributes {
                    path: Some(target.path.clone()),
                    verb: Some("get".into()),
                }),
            ),
        };
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
                groups: Some(user.groups.clone()),
                extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
                resource_attributes,
                non_resource_attributes,
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = self
            .call(KIND, api.create(&PostParams::default(), &review))
            .await?;
        Ok(answer
            .status
            .is_some_and(|s| s.allowed && s.denied != Some(true)))
    }

    /// Runs one review call under the deadline and counts it.
    async fn call<T>(
        &self,
        kind: &'static str,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, ReviewError> {
        let timeout = self.opts.review_timeout;
        let result = match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(ReviewError::Api { kind, source }),
            Err(_) => Err(ReviewError::Timeout { kind, timeout }),
        };
        self.metrics.review(kind, result.is_ok());
        result
    }
}
