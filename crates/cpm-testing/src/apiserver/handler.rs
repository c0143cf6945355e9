//! Request handling: fault injection, authentication, routing to discovery, OpenAPI, storage
//! verbs, field validation, patches, server-side apply, TokenReview, SubjectAccessReview,
//! SelfSubjectReview and TokenRequest.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::authn::{self, CertOutcome};
use super::listener::Conn;
use super::patch::{self, Managers};
use super::resources::{self, ResourceDef, Special};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{Store, WriteOpts};
use super::validation::{self, Directive};
use super::{Attributes, RequestRecord, Shared, UserInfo, lock, tokens, watch};
use super::{openapi, protobuf, strategic};

/// The response body type: full documents or watch streams.
pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

pub(crate) fn full(code: StatusCode, body: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(
        Full::new(Bytes::from(bytes))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(e: &ApiError) -> Response<Body> {
    full(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.body(),
    )
}

fn decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a query string; later values win.
pub(crate) fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(kv), String::new()),
        })
        .collect()
}

/// Media types a create or update body may have.
const BODY_TYPES: [&str; 3] = ["application/json", "application/yaml", protobuf::MEDIA_TYPE];

/// Entry point for every request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    req: Request<Incoming>,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query_raw = req.uri().query().unwrap_or_default().to_string();
    let query = parse_query(&query_raw);
    let is_watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));

    let verdict = shared.faults.verdict(&method, &path, is_watch);
    if !verdict.delay.is_zero() {
        tokio::time::sleep(verdict.delay).await;
    }

    // Request-header, then x509, then a bearer token, as kube-apiserver's union authenticator;
    // a credential that fails is 401 even where anonymous requests are served. Anonymous
    // requests are served only where a default cluster lets them through
    // (`system:public-info-viewer`, bound to `system:unauthenticated`): GET of the health
    // endpoints and /version. Elsewhere they are refused with 401 (a real server says 403 to
    // system:anonymous).
    let public = method == Method::GET
        && matches!(
            path.as_str(),
            "/healthz" | "/livez" | "/readyz" | "/version"
        );
    let outcome = shared
        .cert_auth
        .authenticate(conn.peer_certs.first(), req.headers());
    let user = match outcome {
        CertOutcome::User { user, .. } => Some(user),
        outcome => match authn::bearer(req.headers()) {
            Some(Some(token)) => shared.authenticate_token(token),
            Some(None) => None,
            None if outcome == CertOutcome::Refused => None,
            None if public => Some(UserInfo::new(
                "system:anonymous",
                &["system:unauthenticated"],
            )),
            None => None,
        },
    };
    let record = |code: u16| RequestRecord {
        method: method.to_string(),
        path: path.clone(),
        query: query_raw.clone(),
        user: user.as_ref().map(|u| u.username.clone()),
        code,
    };

    let resp = if let Some(code) = verdict.fail {
        error(&ApiError::injected(code))
    } else if let Some(user) = &user {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|h| h.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or_default().trim().to_string())
            .unwrap_or_default();
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let ctx = Ctx {
            shared: &shared,
            user,
            method: &method,
            path: &path,
            query: &query,
            content_type,
            accept,
            user_agent,
            body,
            warnings: Mutex::new(Vec::new()),
        };
        let mut resp = match route(&ctx, is_watch) {
            Ok(resp) => resp,
            Err(e) => error(&e),
        };
        for w in lock(&ctx.warnings).iter() {
            let text = format!("299 - {}", serde_json::Value::String(w.clone()));
            if let Ok(v) = header::HeaderValue::try_from(text) {
                resp.headers_mut().append(header::WARNING, v);
            }
        }
        resp
    } else {
        error(&ApiError::unauthorized())
    };
    let n = {
        let mut log = lock(&shared.requests);
        log.push(record(resp.status().as_u16()));
        log.len()
    };
    shared.answered.send_replace(n);
    resp
}

struct Ctx<'a> {
    shared: &'a Arc<Shared>,
    user: &'a UserInfo,
    method: &'a Method,
    path: &'a str,
    query: &'a BTreeMap<String, String>,
    content_type: String,
    accept: String,
    user_agent: String,
    body: Bytes,
    /// Warnings for the response's `Warning` headers.
    warnings: Mutex<Vec<String>>,
}

impl Ctx<'_> {
    fn q(&self, k: &str) -> Option<&str> {
        self.query
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn opts(&self, body_dry_run: bool) -> WriteOpts {
        let manager = self
            .q("fieldManager")
            .map(str::to_string)
            .unwrap_or_else(|| {
                let prog = self.user_agent.split('/').next().unwrap_or_default();
                if prog.is_empty() {
                    "unknown".to_string()
                } else {
                    prog.to_string()
                }
            });
        WriteOpts {
            dry_run: body_dry_run || self.q("dryRun") == Some("All"),
            manager,
        }
    }

    fn json_body(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))
    }

    /// A create or update body: JSON or YAML; any other media type (protobuf, CBOR) is 415,
    /// which clients that can fall back to JSON understand.
    fn object_body(&self) -> Result<Value, ApiError> {
        match self.content_type.as_str() {
            "" | "application/json" | "*/*" => self.json_body(),
            "application/yaml" => {
                let text = std::str::from_utf8(&self.body)
                    .map_err(|_| ApiError::bad_request("error decoding YAML: not UTF-8"))?;
                serde_saphyr::from_str(text)
                    .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
            }
            protobuf::MEDIA_TYPE => protobuf::decode(&self.body).map_err(|why| {
                let mut e = ApiError::unsupported_body_type(&BODY_TYPES);
                e.message = format!(
                    "{}; a protobuf body is read for the kinds the test API server knows, not this one: {why}",
                    e.message
                );
                e
            }),
            _ => Err(ApiError::unsupported_body_type(&BODY_TYPES)),
        }
    }

    /// Field validation of a whole object about to be written (see [`validation`]).
    fn validate(&self, def: &ResourceDef, version: &str, obj: &mut Value) -> Result<(), ApiError> {
        let directive = Directive::parse(self.q("fieldValidation"))?;
        let warnings = validation::check(def, version, obj, directive)?;
        lock(&self.warnings).extend(warnings);
        Ok(())
    }

    fn authorize(&self, attrs: &Attributes) -> Result<(), ApiError> {
        if !self.shared.enforcing() {
            return Ok(());
        }
        // As the real apiserver: system:masters is allowed everything, before any authorizer.
        if self.user.groups.iter().any(|g| g == "system:masters") {
            return Ok(());
        }
        if self.shared.authorize(attrs).allowed {
            return Ok(());
        }
        let ns = (!attrs.namespace.is_empty()).then_some(attrs.namespace.as_str());
        Err(ApiError::forbidden(
            &self.user.username,
            &attrs.verb,
            &attrs.group,
            &attrs.resource,
            ns,
            &attrs.name,
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Collection,
    Item(String),
    Status(String),
    /// `serviceaccounts/<name>/token` (TokenRequest).
    Token(String),
    /// `<workload>/<name>/scale` (an `autoscaling/v1` Scale).
    Scale(String),
}

fn route(ctx: &Ctx<'_>, is_watch: bool) -> Result<Response<Body>, ApiError> {
    let segs: Vec<&str> = ctx.path.split('/').filter(|s| !s.is_empty()).collect();
    let get = ctx.method == Method::GET;
    let non_resource = |ctx: &Ctx<'_>| {
        if ctx
            .user
            .groups
            .iter()
            .any(|g| g == "system:unauthenticated")
        {
            // Only the public-info paths let anonymous requests in (see above).
            return Ok(());
        }
        ctx.authorize(&Attributes {
            user: ctx.user.clone(),
            verb: "get".into(),
            group: String::new(),
            resource: String::new(),
            subresource: String::new(),
            namespace: String::new(),
            name: String::new(),
            path: ctx.path.to_string(),
        })
    };
    match segs.as_slice() {
        ["version"] if get => {
            non_resource(ctx)?;
            Ok(full(
                StatusCode::OK,
                &resources::version(&ctx.shared.git_version),
            ))
        }
        ["openapi", "v3"] if get => {
            non_resource(ctx)?;
            Ok(full(
                StatusCode::OK,
                &openapi::v3_root(&ctx.shared.store().defs),
            ))
        }
        ["openapi", "v3", "api", version] if get => {
            non_resource(ctx)?;
            let doc = openapi::v3_group_version(&ctx.shared.store().defs, "", version)
                .ok_or_else(ApiError::no_route)?;
            Ok(full(StatusCode::OK, &doc))
        }
        ["openapi", "v3", "apis", group, version] if get => {
            non_resource(ctx)?;
            let doc = openapi::v3_group_version(&ctx.shared.store().defs, group, version)
                .ok_or_else(ApiError::no_route)?;
            Ok(full(StatusCode::OK, &doc))
        }
        ["openapi", "v2"] if get => {
            non_resource(ctx)?;
            let accepted: Vec<&str> = ctx
                .accept
                .split(',')
                .map(|a| a.split(';').next().unwrap_or_default().trim())
                .collect();
            let json = ctx.accept.is_empty()
                || accepted
                    .iter()
                    .any(|t| matches!(*t, "application/json" | "*/*" | "application/*"));
            let protobuf = accepted.iter().any(|t| {
                t.starts_with("application/com.github.proto-openapi.spec.v2")
                    && t.ends_with("+protobuf")
            });
            if json {
                Ok(full(StatusCode::OK, &openapi::v2(&ctx.shared.store().defs)))
            } else if protobuf {
                let mut resp = full(StatusCode::OK, &Value::Null);
                *resp.body_mut() = Full::new(Bytes::from(openapi::v2_protobuf()))
                    .map_err(|never| match never {})
                    .boxed();
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(openapi::V2_PROTOBUF),
                );
                Ok(resp)
            } else {
                Err(ApiError::not_acceptable(&[
                    "application/json",
                    openapi::V2_PROTOBUF,
                ]))
            }
        }
        ["healthz" | "livez" | "readyz"] if get => {
            non_resource(ctx)?;
            let mut resp = full(StatusCode::OK, &Value::Null);
            *resp.body_mut() = Full::new(Bytes::from_static(b"ok"))
                .map_err(|never| match never {})
                .boxed();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain"),
            );
            Ok(resp)
        }
        ["api"] if get => {
            non_resource(ctx)?;
            Ok(full(
                StatusCode::OK,
                &resources::api_versions(&ctx.shared.addr.to_string()),
            ))
        }
        ["apis"] if get => {
            non_resource(ctx)?;
            Ok(full(
                StatusCode::OK,
                &resources::api_group_list(&ctx.shared.store().defs),
            ))
        }
        ["api", "v1"] if get => {
            non_resource(ctx)?;
            let doc = resources::resource_list(&ctx.shared.store().defs, "", "v1")
                .ok_or_else(ApiError::no_route)?;
            Ok(full(StatusCode::OK, &doc))
        }
        ["apis", group] if get => {
            non_resource(ctx)?;
            let doc = resources::api_group(&ctx.shared.store().defs, group)
                .ok_or_else(ApiError::no_route)?;
            Ok(full(StatusCode::OK, &doc))
        }
        ["apis", group, version] if get => {
            non_resource(ctx)?;
            let doc = resources::resource_list(&ctx.shared.store().defs, group, version)
                .ok_or_else(ApiError::no_route)?;
            Ok(full(StatusCode::OK, &doc))
        }
        ["api", "v1", rest @ ..] => resource(ctx, "", "v1", rest, is_watch),
        ["apis", group, version, rest @ ..] => resource(ctx, group, version, rest, is_watch),
        _ => Err(ApiError::no_route()),
    }
}

fn resource(
    ctx: &Ctx<'_>,
    group: &str,
    version: &str,
    segs: &[&str],
    is_watch: bool,
) -> Result<Response<Body>, ApiError> {
    let (def, ns, target) = {
        let store = ctx.shared.store();
        let (ns, rest) = match segs {
            ["namespaces", ns, plural, ..]
                if store
                    .def(group, version, plural)
                    .is_some_and(|d| d.namespaced) =>
            {
                (Some(ns.to_string()), &segs[2..])
            }
            _ => (None, segs),
        };
        let (plural, target) = match rest {
            [plural] => (*plural, Target::Collection),
            [plural, name] => (*plural, Target::Item(name.to_string())),
            [plural, name, "status"] => (*plural, Target::Status(name.to_string())),
            [plural @ "serviceaccounts", name, "token"] if group.is_empty() => {
                (*plural, Target::Token(name.to_string()))
            }
            [
                plural @ ("deployments" | "replicasets" | "statefulsets"),
                name,
                "scale",
            ] if group == "apps" => (*plural, Target::Scale(name.to_string())),
            _ => return Err(ApiError::no_route()),
        };
        let def = store
            .def(group, version, plural)
            .ok_or_else(ApiError::no_route)?;
        (def, ns, target)
    };
    if matches!(target, Target::Status(_)) && !def.status {
        return Err(ApiError::no_route());
    }
    if def.namespaced && ns.is_none() && target != Target::Collection {
        return Err(ApiError::no_route());
    }
    if let Target::Token(name) = &target {
        if ctx.method != Method::POST {
            return Err(ApiError::method_not_allowed());
        }
        let ns = ns.unwrap_or_default();
        ctx.authorize(&Attributes {
            user: ctx.user.clone(),
            verb: "create".into(),
            group: String::new(),
            resource: "serviceaccounts".into(),
            subresource: "token".into(),
            namespace: ns.clone(),
            name: name.clone(),
            path: String::new(),
        })?;
        return token_request(ctx, &def, &ns, name);
    }
    if let Target::Scale(name) = &target {
        return scale(ctx, &def, &ns.unwrap_or_default(), name);
    }
    let verb = match (ctx.method.clone(), &target) {
        (Method::GET, Target::Collection) if is_watch => "watch",
        (Method::GET, Target::Collection) => "list",
        (Method::GET, _) => "get",
        (Method::POST, Target::Collection) => "create",
        (Method::PUT, Target::Item(_) | Target::Status(_)) => "update",
        (Method::PATCH, Target::Item(_) | Target::Status(_)) => "patch",
        (Method::DELETE, Target::Item(_)) => "delete",
        (Method::DELETE, Target::Collection) => "deletecollection",
        _ => return Err(ApiError::method_not_allowed()),
    };
    if def.create_only() {
        if verb != "create" {
            return Err(ApiError::method_not_allowed());
        }
    } else if def.namespaced && ns.is_none() && verb == "create" {
        return Err(ApiError::no_route());
    }
    let (name, status_only) = match &target {
        Target::Collection => (String::new(), false),
        Target::Item(n) | Target::Token(n) | Target::Scale(n) => (n.clone(), false),
        Target::Status(n) => (n.clone(), true),
    };
    ctx.authorize(&Attributes {
        user: ctx.user.clone(),
        verb: verb.into(),
        group: def.group.clone(),
        resource: def.plural.clone(),
        subresource: if status_only {
            "status".into()
        } else {
            String::new()
        },
        namespace: ns.clone().unwrap_or_default(),
        name: name.clone(),
        path: String::new(),
    })?;
    let ns_str = ns.clone().unwrap_or_default();
    let out = |obj: Value| render(&def, version, obj);
    match verb {
        "watch" => {
            let params = watch::WatchParams::from_query(&def, version, ns, ctx.query)?;
            Ok(watch::start(ctx.shared.clone(), params))
        }
        "list" => list(ctx, &def, version, ns.as_deref()),
        "get" => Ok(full(
            StatusCode::OK,
            &out(ctx.shared.store().get(&def, &ns_str, &name)?),
        )),
        "create" => match def.special {
            Special::TokenReview => token_review(ctx),
            Special::SubjectAccessReview => subject_access_review(ctx),
            Special::SelfSubjectReview => self_subject_review(ctx),
            _ => {
                let mut obj = ctx.object_body()?;
                ctx.validate(&def, version, &mut obj)?;
                let created =
                    ctx.shared
                        .store()
                        .create(&def, &ns_str, obj, &ctx.opts(false), None)?;
                ctx.shared.notify();
                Ok(full(StatusCode::CREATED, &out(created)))
            }
        },
        "update" => {
            let mut obj = ctx.object_body()?;
            ctx.validate(&def, version, &mut obj)?;
            let updated = ctx.shared.store().update(
                &def,
                &ns_str,
                &name,
                obj,
                status_only,
                &ctx.opts(false),
            )?;
            ctx.shared.notify();
            Ok(full(StatusCode::OK, &out(updated)))
        }
        "patch" => {
            let (code, obj) = patch(ctx, &def, version, &ns_str, &name, status_only)?;
            ctx.shared.notify();
            Ok(full(code, &out(obj)))
        }
        "delete" => {
            let opts = if ctx.body.is_empty() {
                json!({})
            } else {
                ctx.json_body()?
            };
            let body_dry_run = opts
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|v| v == "All"));
            let pre = opts.get("preconditions").cloned().unwrap_or_default();
            let deleted =
                ctx.shared
                    .store()
                    .delete(&def, &ns_str, &name, &pre, &ctx.opts(body_dry_run))?;
            ctx.shared.notify();
            Ok(full(StatusCode::OK, &out(deleted)))
        }
        "deletecollection" => {
            let labels = LabelSelector::parse(ctx.q("labelSelector").unwrap_or_default())
                .map_err(ApiError::bad_request)?;
            let fields =
                FieldSelector::parse(ctx.q("fieldSelector").unwrap_or_default(), &def.kind)
                    .map_err(ApiError::bad_request)?;
            let opts = ctx.opts(false);
            let mut items = Vec::new();
            {
                let mut store = ctx.shared.store();
                for (key, _) in store.list(&def, ns.as_deref(), &labels, &fields) {
                    items.push(out(store.delete(
                        &def,
                        &key.ns,
                        &key.name,
                        &Value::Null,
                        &opts,
                    )?));
                }
            }
            ctx.shared.notify();
            let rv = ctx.shared.store().rv;
            Ok(full(
                StatusCode::OK,
                &list_doc(&def, version, rv, &items, None),
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// Sets the apiVersion a client asked for (custom resources may be served at several versions).
fn render(def: &ResourceDef, version: &str, mut obj: Value) -> Value {
    if let Value::Object(m) = &mut obj {
        m.insert("apiVersion".into(), json!(def.api_version(version)));
        m.insert("kind".into(), json!(def.kind));
    }
    obj
}

fn list_doc(
    def: &ResourceDef,
    version: &str,
    rv: u64,
    items: &[Value],
    page: Option<(String, usize)>,
) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some((token, remaining)) = page {
        meta["continue"] = json!(token);
        meta["remainingItemCount"] = json!(remaining);
    }
    json!({
        "kind": format!("{}List", def.kind),
        "apiVersion": def.api_version(version),
        "metadata": meta,
        "items": items,
    })
}

fn list(
    ctx: &Ctx<'_>,
    def: &ResourceDef,
    version: &str,
    ns: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let labels = LabelSelector::parse(ctx.q("labelSelector").unwrap_or_default())
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(ctx.q("fieldSelector").unwrap_or_default(), &def.kind)
        .map_err(ApiError::bad_request)?;
    let limit: usize = match ctx.q("limit") {
        Some(l) => l
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        None => 0,
    };
    let store = ctx.shared.store();
    let (list_rv, start_after) = match ctx.q("continue") {
        Some(token) => {
            let (rv, ns, name) = decode_continue(token)?;
            if rv < store.compacted {
                return Err(ApiError {
                    code: 410,
                    reason: "Expired",
                    message: "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".into(),
                    details: None,
                });
            }
            (rv, Some((ns, name)))
        }
        None => {
            check_list_rv(
                &store,
                ctx.q("resourceVersion"),
                ctx.q("resourceVersionMatch"),
            )?;
            (store.rv, None)
        }
    };
    let all = store.list(def, ns, &labels, &fields);
    drop(store);
    let mut rest: Vec<_> = all
        .into_iter()
        .filter(|(k, _)| {
            start_after
                .as_ref()
                .is_none_or(|(ns, name)| (&k.ns, &k.name) > (ns, name))
        })
        .collect();
    let mut page = None;
    if limit > 0 && rest.len() > limit {
        let remaining = rest.len() - limit;
        rest.truncate(limit);
        if let Some((last, _)) = rest.last() {
            page = Some((encode_continue(list_rv, &last.ns, &last.name), remaining));
        }
    }
    let items: Vec<Value> = rest
        .into_iter()
        .map(|(_, v)| render(def, version, v))
        .collect();
    Ok(full(
        StatusCode::OK,
        &list_doc(def, version, list_rv, &items, page),
    ))
}

/// A list at an exact, compacted resourceVersion is 410; otherwise the current state is served.
fn check_list_rv(store: &Store, rv: Option<&str>, rv_match: Option<&str>) -> Result<(), ApiError> {
    let Some(rv) = rv.filter(|rv| *rv != "0") else {
        return Ok(());
    };
    let n: u64 = rv
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?;
    if rv_match == Some("Exact") && n != store.rv && n < store.compacted {
        return Err(ApiError::expired(n, store.compacted + 1));
    }
    Ok(())
}

fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    B64.encode(
        json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{ns}/{name}")}).to_string(),
    )
}

fn decode_continue(token: &str) -> Result<(u64, String, String), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = B64.decode(token).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    let (ns, name) = start.split_once('/').ok_or_else(bad)?;
    Ok((rv, ns.to_string(), name.to_string()))
}

fn patch(
    ctx: &Ctx<'_>,
    def: &ResourceDef,
    version: &str,
    ns: &str,
    name: &str,
    status_only: bool,
) -> Result<(StatusCode, Value), ApiError> {
    let opts = ctx.opts(false);
    match ctx.content_type.as_str() {
        "application/apply-patch+yaml" => apply(ctx, def, version, ns, name, status_only, &opts),
        ct @ ("application/merge-patch+json"
        | "application/strategic-merge-patch+json"
        | "application/json-patch+json") => {
            let mut store = ctx.shared.store();
            let prior = store
                .stored(def, ns, name)
                .cloned()
                .ok_or_else(|| ApiError::not_found(&def.group, &def.plural, name))?;
            let mut new = if ct == "application/json-patch+json" {
                patch::json_patch(&prior.obj, &ctx.body)?
            } else if ct == "application/strategic-merge-patch+json" {
                if def.custom() {
                    // As kube-apiserver: custom resources have no patch strategies.
                    return Err(ApiError::unsupported_body_type(&[
                        "application/json-patch+json",
                        "application/merge-patch+json",
                        "application/apply-patch+yaml",
                    ]));
                }
                let p = ctx.json_body()?;
                strategic::apply(&prior.obj, &p, &def.api_version(version), &def.kind)?
            } else {
                let p = ctx.json_body()?;
                if !p.is_object() {
                    return Err(ApiError::bad_request(
                        "error decoding patch: a merge patch must be a JSON object",
                    ));
                }
                let mut new = prior.obj.clone();
                patch::merge(&mut new, &p);
                new
            };
            check_patched(def, name, &new)?;
            ctx.validate(def, version, &mut new)?;
            let key = store_key(def, ns, name);
            let updated = store.replace(def, key, &prior, new, status_only, None, &opts)?;
            Ok((StatusCode::OK, updated))
        }
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

fn store_key(def: &ResourceDef, ns: &str, name: &str) -> super::store::ObjKey {
    super::store::ObjKey {
        group: def.group.clone(),
        plural: def.plural.clone(),
        ns: if def.namespaced {
            ns.to_string()
        } else {
            String::new()
        },
        name: name.to_string(),
    }
}

/// A patch may not change the kind, apiVersion or name.
fn check_patched(def: &ResourceDef, name: &str, obj: &Value) -> Result<(), ApiError> {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind != def.kind
        || !def
            .versions
            .iter()
            .any(|v| def.api_version(v) == api_version)
    {
        return Err(ApiError::bad_request(
            "the patch changes the object's apiVersion or kind",
        ));
    }
    let patched_name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if patched_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({patched_name}) does not match the name on the URL ({name})"
        )));
    }
    Ok(())
}

fn apply(
    ctx: &Ctx<'_>,
    def: &ResourceDef,
    version: &str,
    ns: &str,
    name: &str,
    status_only: bool,
    opts: &WriteOpts,
) -> Result<(StatusCode, Value), ApiError> {
    let Some(manager) = ctx.q("fieldManager") else {
        return Err(ApiError::bad_request(
            "PATCH /apply requires fieldManager: fieldManager is required for apply requests",
        ));
    };
    let force = matches!(ctx.q("force"), Some("true" | "1"));
    let text = std::str::from_utf8(&ctx.body)
        .map_err(|_| ApiError::bad_request("error decoding YAML: not UTF-8"))?;
    let mut config: Value = serde_saphyr::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if !config.is_object() {
        return Err(ApiError::bad_request(
            "error decoding YAML: the applied configuration must be an object",
        ));
    }
    let kind = config
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let api_version = config
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if kind != def.kind
        || !def
            .versions
            .iter()
            .any(|v| def.api_version(v) == api_version)
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) and kind ({kind}) do not match the resource {}",
            def.plural
        )));
    }
    match config.pointer("/metadata/name").and_then(Value::as_str) {
        Some(n) if n == name => {}
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        None => {
            return Err(ApiError::bad_request(
                "metadata.name is required in an applied configuration",
            ));
        }
    }
    if def.namespaced
        && let Some(body_ns) = config
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
        && body_ns != ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    if def.status
        && !status_only
        && let Value::Object(m) = &mut config
    {
        m.remove("status");
    }
    ctx.validate(def, version, &mut config)?;
    let mut store = ctx.shared.store();
    let Some(prior) = store.stored(def, ns, name).cloned() else {
        if status_only {
            return Err(ApiError::not_found(&def.group, &def.plural, name));
        }
        let mut managers = Managers::default();
        managers.0.insert(
            manager.to_string(),
            patch::leaves(&config).into_keys().collect(),
        );
        let created = store.create(def, ns, config, opts, Some(managers))?;
        return Ok((StatusCode::CREATED, created));
    };
    let current_rv = prior
        .obj
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if let Some(rv) = config
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        && !rv.is_empty()
        && rv != current_rv
    {
        return Err(ApiError::conflict(
            &def.group,
            &def.plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    if status_only {
        config = json!({"status": config.get("status").cloned().unwrap_or_default()});
    }
    let (new, managers) = patch::apply(&prior.obj, &prior.managers, &config, manager, force)
        .map_err(|conflicts| {
            let n = conflicts.len();
            let list: Vec<String> = conflicts
                .iter()
                .map(|c| {
                    format!(
                        "conflict with \"{}\" using {api_version}: {}",
                        c.manager,
                        patch::render(&c.path)
                    )
                })
                .collect();
            let message = if n == 1 {
                format!("Apply failed with 1 conflict: {}", list.join(""))
            } else {
                format!("Apply failed with {n} conflicts: {}", list.join("\n"))
            };
            ApiError::apply_conflict(&def.group, &def.plural, name, message)
        })?;
    let key = store_key(def, ns, name);
    let updated = store.replace(def, key, &prior, new, status_only, Some(managers), opts)?;
    Ok((StatusCode::OK, updated))
}

/// The `autoscaling/v1` Scale of a workload.
fn scale_of(obj: &Value) -> Value {
    let m = |k: &str| {
        obj.pointer(&format!("/metadata/{k}"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|l| {
            l.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m("name"),
            "namespace": m("namespace"),
            "uid": m("uid"),
            "resourceVersion": m("resourceVersion"),
            "creationTimestamp": m("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

/// The `scale` subresource: GET the Scale, or PUT / PATCH it to set the workload's
/// `spec.replicas` (a resourceVersion in the Scale is a precondition).
fn scale(
    ctx: &Ctx<'_>,
    def: &ResourceDef,
    ns: &str,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let verb = match *ctx.method {
        Method::GET => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        _ => return Err(ApiError::method_not_allowed()),
    };
    ctx.authorize(&Attributes {
        user: ctx.user.clone(),
        verb: verb.into(),
        group: def.group.clone(),
        resource: def.plural.clone(),
        subresource: "scale".into(),
        namespace: ns.to_string(),
        name: name.to_string(),
        path: String::new(),
    })?;
    let mut store = ctx.shared.store();
    let prior = store
        .stored(def, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&def.group, &def.plural, name))?;
    let current = scale_of(&prior.obj);
    let wanted = match verb {
        "get" => return Ok(full(StatusCode::OK, &current)),
        "update" => ctx.object_body()?,
        _ => match ctx.content_type.as_str() {
            "application/json-patch+json" => patch::json_patch(&current, &ctx.body)?,
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                let mut s = current.clone();
                patch::merge(&mut s, &ctx.json_body()?);
                s
            }
            other => return Err(ApiError::unsupported_media_type(other)),
        },
    };
    let replicas = wanted
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .ok_or_else(|| {
            ApiError::invalid(
                "autoscaling",
                "Scale",
                name,
                "spec.replicas: Required value",
            )
        })?;
    if replicas < 0 {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            name,
            &format!(
                "spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
            ),
        ));
    }
    let mut obj = prior.obj.clone();
    obj["spec"]["replicas"] = json!(replicas);
    if let Some(rv) = wanted
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
    {
        obj["metadata"]["resourceVersion"] = json!(rv);
    }
    let key = store_key(def, ns, name);
    let updated = store.replace(def, key, &prior, obj, false, None, &ctx.opts(false))?;
    drop(store);
    ctx.shared.notify();
    Ok(full(StatusCode::OK, &scale_of(&updated)))
}

fn user_json(u: &UserInfo) -> Value {
    let mut v = json!({"username": u.username, "groups": u.groups});
    if !u.extra.is_empty() {
        v["extra"] = json!(u.extra);
    }
    v
}

fn token_review(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let mut review = ctx.object_body()?;
    let token = review
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let audiences: Vec<String> = review
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let status = match ctx.shared.review_token(&token, &audiences) {
        Some((u, audiences)) => {
            json!({"authenticated": true, "user": user_json(&u), "audiences": audiences})
        }
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    review["status"] = status;
    review["metadata"] = json!({"creationTimestamp": null});
    Ok(full(StatusCode::CREATED, &review))
}

/// Who the caller is, as kube-apiserver tells it: with `system:authenticated` added.
fn self_subject_review(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let mut review = ctx.object_body()?;
    let mut user = ctx.user.clone();
    if !user.groups.iter().any(|g| g == "system:authenticated") {
        user.groups.push("system:authenticated".into());
    }
    review["apiVersion"] = json!("authentication.k8s.io/v1");
    review["kind"] = json!("SelfSubjectReview");
    review["metadata"] = json!({"creationTimestamp": super::store::now_rfc3339()});
    review["status"] = json!({"userInfo": user_json(&user)});
    Ok(full(StatusCode::CREATED, &review))
}

/// TokenRequest: a token for an existing ServiceAccount, for the requested audiences (the API
/// server's by default) and lifetime (1 h by default, 10 min at least).
fn token_request(
    ctx: &Ctx<'_>,
    def: &ResourceDef,
    ns: &str,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let mut request = ctx.object_body()?;
    let kind = request.get("kind").and_then(Value::as_str);
    if kind.is_some_and(|k| k != "TokenRequest") {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({}) does not match TokenRequest",
            kind.unwrap_or_default()
        )));
    }
    let invalid =
        |why: String| ApiError::invalid("authentication.k8s.io", "TokenRequest", name, &why);
    let seconds = match request.pointer("/spec/expirationSeconds") {
        None | Some(Value::Null) => tokens::DEFAULT_EXPIRATION.as_secs(),
        Some(v) => v.as_u64().ok_or_else(|| {
            invalid(format!(
                "spec.expirationSeconds: Invalid value: {v}: may not specify a duration less than 10 minutes"
            ))
        })?,
    };
    if seconds < tokens::MIN_EXPIRATION.as_secs() {
        return Err(invalid(format!(
            "spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration less than 10 minutes"
        )));
    }
    if seconds > tokens::MAX_EXPIRATION.as_secs() {
        return Err(invalid(format!(
            "spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration larger than 2^32 seconds"
        )));
    }
    let sa = ctx.shared.store().get(def, ns, name)?;
    let uid = sa
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut audiences: Vec<String> = request
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if audiences.is_empty() {
        audiences = lock(&ctx.shared.tokens).api_audiences();
    }
    let bound = match request.pointer("/spec/boundObjectRef") {
        Some(r @ Value::Object(_)) => Some(bound_object(ctx, ns, r)?),
        _ => None,
    };
    let (token, expires) = lock(&ctx.shared.tokens).issue(
        SystemTime::now(),
        tokens::Request {
            namespace: ns.to_string(),
            name: name.to_string(),
            uid,
            audiences: audiences.clone(),
            expiration: std::time::Duration::from_secs(seconds),
            bound,
        },
    );
    let expires = time::OffsetDateTime::from(expires)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    request["apiVersion"] = json!("authentication.k8s.io/v1");
    request["kind"] = json!("TokenRequest");
    request["metadata"] = json!({
        "name": name,
        "namespace": ns,
        "creationTimestamp": super::store::now_rfc3339(),
    });
    request["spec"]["audiences"] = json!(audiences);
    request["spec"]["expirationSeconds"] = json!(seconds);
    request["status"] = json!({"token": token, "expirationTimestamp": expires});
    Ok(full(StatusCode::CREATED, &request))
}

/// The object a token is bound to: a Pod or Secret in the namespace, or a Node, which must
/// exist (and match its uid when one is given).
fn bound_object(ctx: &Ctx<'_>, ns: &str, r: &Value) -> Result<tokens::Bound, ApiError> {
    let s = |k: &str| {
        r.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (kind, name, uid) = (s("kind"), s("name"), s("uid"));
    let plural = match kind.as_str() {
        "Pod" => "pods",
        "Secret" => "secrets",
        "Node" => "nodes",
        other => {
            return Err(ApiError::invalid(
                "authentication.k8s.io",
                "TokenRequest",
                "",
                &format!(
                    "spec.boundObjectRef.kind: Unsupported value: \"{other}\": supported values: \"Node\", \"Pod\", \"Secret\""
                ),
            ));
        }
    };
    let store = ctx.shared.store();
    let def = store.def("", "v1", plural).ok_or_else(ApiError::no_route)?;
    let obj = store.get(&def, ns, &name)?;
    let actual = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !uid.is_empty() && uid != actual {
        return Err(ApiError::conflict(
            "",
            plural,
            &name,
            &format!(
                "the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"
            ),
        ));
    }
    Ok(tokens::Bound {
        kind,
        name,
        uid: actual,
    })
}

fn subject_access_review(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let mut review = ctx.object_body()?;
    let spec = review.get("spec").cloned().unwrap_or_default();
    let s = |p: &str| {
        spec.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let groups = spec
        .get("groups")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let non_resource = spec.get("nonResourceAttributes").is_some();
    let attrs = Attributes {
        user: UserInfo {
            username: s("/user"),
            groups,
            extra: BTreeMap::new(),
        },
        verb: if non_resource {
            s("/nonResourceAttributes/verb")
        } else {
            s("/resourceAttributes/verb")
        },
        group: s("/resourceAttributes/group"),
        resource: s("/resourceAttributes/resource"),
        subresource: s("/resourceAttributes/subresource"),
        namespace: s("/resourceAttributes/namespace"),
        name: s("/resourceAttributes/name"),
        path: s("/nonResourceAttributes/path"),
    };
    if spec.get("resourceAttributes").is_none() && !non_resource {
        return Err(ApiError::invalid(
            "authorization.k8s.io",
            "SubjectAccessReview",
            "",
            "spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    }
    let d = ctx.shared.authorize(&attrs);
    review["status"] = json!({"allowed": d.allowed, "reason": d.reason});
    review["metadata"] = json!({"creationTimestamp": null});
    Ok(full(StatusCode::CREATED, &review))
}
