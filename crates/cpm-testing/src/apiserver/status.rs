//! `Status` error bodies with the codes, reasons and messages kube-apiserver uses.

use serde_json::{Value, json};

/// An API error, rendered as a `kind: Status` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code, also `.code`.
    pub code: u16,
    /// `.reason` (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, …).
    pub reason: &'static str,
    /// `.message`.
    pub message: String,
    /// `.details`: name, group and kind (kube-apiserver puts the resource plural in `kind` for
    /// NotFound, AlreadyExists and Conflict, and the Kind for Invalid).
    pub details: Option<Details>,
}

/// `.details` of a `Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Details {
    /// The object name.
    pub name: String,
    /// The API group (empty for core).
    pub group: String,
    /// The resource plural or Kind.
    pub kind: String,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        Self {
            code,
            reason,
            message,
            details: None,
        }
    }

    fn with(mut self, group: &str, kind: &str, name: &str) -> Self {
        self.details = Some(Details {
            name: name.to_string(),
            group: group.to_string(),
            kind: kind.to_string(),
        });
        self
    }

    /// 404 for a known resource and a missing object.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(group, plural)),
        )
        .with(group, plural, name)
    }

    /// 404 for a path the server does not serve.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
        )
    }

    /// 409 AlreadyExists.
    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(group, plural)),
        )
        .with(group, plural, name)
    }

    /// 409 Conflict on a stale resourceVersion or failed precondition.
    pub fn conflict(group: &str, plural: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                qualified(group, plural)
            ),
        )
        .with(group, plural, name)
    }

    /// 409 Conflict from server-side apply.
    pub fn apply_conflict(group: &str, plural: &str, name: &str, message: String) -> Self {
        Self::new(409, "Conflict", message).with(group, plural, name)
    }

    /// 422 Invalid.
    pub fn invalid(group: &str, kind: &str, name: &str, why: &str) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {why}"),
        )
        .with(group, kind, name)
    }

    /// 422 for a JSON patch that does not apply (failing `test` op, missing path).
    pub fn patch_unprocessable() -> Self {
        Self::new(
            422,
            "Invalid",
            "the server rejected our request due to an error in our request".into(),
        )
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into())
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized".into())
    }

    /// 403 Forbidden.
    pub fn forbidden(
        user: &str,
        verb: &str,
        group: &str,
        plural: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Self {
        let scope = match ns {
            Some(ns) => format!(" in the namespace \"{ns}\""),
            None => " at the cluster scope".to_string(),
        };
        let subject = if name.is_empty() {
            qualified(group, plural)
        } else {
            format!("{} \"{name}\"", qualified(group, plural))
        };
        Self::new(
            403,
            "Forbidden",
            format!(
                "{subject} is forbidden: User \"{user}\" cannot {verb} resource \"{plural}\" in API group \"{group}\"{scope}"
            ),
        )
        .with(group, plural, name)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
        )
    }

    /// 410 Expired: a resourceVersion older than the retained history.
    pub fn expired(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"
            ),
        )
    }

    /// 415 UnsupportedMediaType for a body the server cannot decode (CBOR, a patch type the
    /// resource does not take), as kube-apiserver words it.
    pub fn unsupported_body_type(accepted: &[&str]) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
    }

    /// 406 NotAcceptable: no response media type the client accepts.
    pub fn not_acceptable(offered: &[&str]) -> Self {
        Self::new(
            406,
            "NotAcceptable",
            format!(
                "only the following media types are accepted: {}",
                offered.join(", ")
            ),
        )
    }

    /// An injected server error (500, 503, …).
    pub fn injected(code: u16) -> Self {
        let reason = match code {
            503 => "ServiceUnavailable",
            504 => "Timeout",
            429 => "TooManyRequests",
            _ => "InternalError",
        };
        Self::new(code, reason, format!("injected fault: HTTP {code}"))
    }

    /// The `kind: Status` body.
    pub fn body(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            let mut details = json!({"name": d.name, "kind": d.kind});
            if !d.group.is_empty() {
                details["group"] = json!(d.group);
            }
            v["details"] = details;
        }
        v
    }
}

/// `plural` or `plural.group`, as kube-apiserver names a resource in messages.
fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}
