//! Field validation (`?fieldValidation=Strict|Warn|Ignore`, kube-apiserver's default `Warn`):
//! fields a kind does not declare are refused (Strict, 400) or dropped (Warn, with a
//! `Warning` header each; Ignore, silently), as the real server's strict decoder and
//! structural pruning do.
//!
//! Built-in kinds: a field is unknown when the object, decoded into its k8s-openapi type and
//! encoded again, loses it (the type is the schema). An object the type cannot decode for a
//! wrong value type is refused with 400 as kube-apiserver's decoder does; missing required
//! fields are not a decoding error (k8s-openapi, like Go, leaves them empty; the real server's
//! validation would answer 422, which the test server does not model). Custom resources: the
//! served version's
//! `openAPIV3Schema` (`properties`, `items`, `additionalProperties`,
//! `x-kubernetes-preserve-unknown-fields`, `x-kubernetes-embedded-resource`).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::resources::ResourceDef;
use super::status::ApiError;

/// What to do with unknown fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Directive {
    /// Drop them silently.
    Ignore,
    /// Drop them with a warning each (the default).
    Warn,
    /// Refuse the request.
    Strict,
}

impl Directive {
    /// The `fieldValidation` query parameter.
    pub(crate) fn parse(param: Option<&str>) -> Result<Self, ApiError> {
        match param {
            None | Some("") | Some("Warn") => Ok(Self::Warn),
            Some("Ignore") => Ok(Self::Ignore),
            Some("Strict") => Ok(Self::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: \"{other}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }
}

/// Checks `obj` (a whole object of `def`, served at `version`) under `directive`: removes the
/// unknown fields and returns the warnings to send, or refuses.
pub(crate) fn check(
    def: &ResourceDef,
    version: &str,
    obj: &mut Value,
    directive: Directive,
) -> Result<Vec<String>, ApiError> {
    // An object of another kind is the store's to refuse, with its own message.
    let kind = obj.get("kind").and_then(Value::as_str);
    let api_version = obj.get("apiVersion").and_then(Value::as_str);
    if kind != Some(def.kind.as_str()) || api_version != Some(def.api_version(version).as_str()) {
        return Ok(Vec::new());
    }
    let unknown = unknown_fields(def, version, obj)?;
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    let rendered: Vec<String> = unknown
        .iter()
        .map(|p| format!("unknown field \"{}\"", render(p)))
        .collect();
    if directive == Directive::Strict {
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
            rendered.join(", "),
            kind = def.kind,
        )));
    }
    for p in &unknown {
        remove(obj, p);
    }
    Ok(if directive == Directive::Warn {
        rendered
    } else {
        Vec::new()
    })
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Key(String),
    Index(usize),
}

/// `spec.containers[0].foo`.
fn render(path: &[Step]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn remove(obj: &mut Value, path: &[Step]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for s in parents {
        let next = match (s, cur) {
            (Step::Key(k), Value::Object(m)) => m.get_mut(k),
            (Step::Index(i), Value::Array(a)) => a.get_mut(*i),
            _ => None,
        };
        let Some(next) = next else { return };
        cur = next;
    }
    if let (Step::Key(k), Value::Object(m)) = (last, cur) {
        m.remove(k);
    }
}

/// The paths of `obj`'s fields that `def` does not declare.
pub(crate) fn unknown_fields(
    def: &ResourceDef,
    version: &str,
    obj: &Value,
) -> Result<Vec<Vec<Step>>, ApiError> {
    let mut out = Vec::new();
    if def.custom() {
        if let Some(schema) = def.schemas.get(version) {
            walk_schema(obj, schema, true, &mut Vec::new(), &mut out);
        }
        return Ok(out);
    }
    let Some(encoded) = builtin_roundtrip(def, obj) else {
        return Ok(out);
    };
    match encoded {
        Ok(encoded) => {
            lost(obj, &encoded, &mut Vec::new(), &mut out);
            Ok(out)
        }
        Err(why) => Err(ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: {why}",
            kind = def.kind
        ))),
    }
}

/// Decodes and encodes `obj` through the k8s-openapi type of `def`: `None` for a kind without
/// a type here or an object lacking a required field, `Some(Err)` for a value of the wrong type.
fn builtin_roundtrip(def: &ResourceDef, obj: &Value) -> Option<Result<Value, String>> {
    use k8s_openapi::api::{apps, batch, coordination, core, discovery, rbac};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions;
    fn rt<T: DeserializeOwned + Serialize>(v: &Value) -> Option<Result<Value, String>> {
        match serde_json::from_value::<T>(v.clone()) {
            Ok(t) => Some(serde_json::to_value(t).map_err(|e| e.to_string())),
            Err(e) if e.to_string().starts_with("missing field") => None,
            Err(e) => Some(Err(e.to_string())),
        }
    }
    match (def.group.as_str(), def.kind.as_str()) {
        ("", "Namespace") => rt::<core::v1::Namespace>(obj),
        ("", "Node") => rt::<core::v1::Node>(obj),
        ("", "Pod") => rt::<core::v1::Pod>(obj),
        ("", "Secret") => rt::<core::v1::Secret>(obj),
        ("", "ConfigMap") => rt::<core::v1::ConfigMap>(obj),
        ("", "Event") => rt::<core::v1::Event>(obj),
        ("", "ServiceAccount") => rt::<core::v1::ServiceAccount>(obj),
        ("", "Service") => rt::<core::v1::Service>(obj),
        ("apps", "Deployment") => rt::<apps::v1::Deployment>(obj),
        ("apps", "DaemonSet") => rt::<apps::v1::DaemonSet>(obj),
        ("apps", "StatefulSet") => rt::<apps::v1::StatefulSet>(obj),
        ("apps", "ReplicaSet") => rt::<apps::v1::ReplicaSet>(obj),
        ("batch", "Job") => rt::<batch::v1::Job>(obj),
        ("batch", "CronJob") => rt::<batch::v1::CronJob>(obj),
        ("discovery.k8s.io", "EndpointSlice") => rt::<discovery::v1::EndpointSlice>(obj),
        ("coordination.k8s.io", "Lease") => rt::<coordination::v1::Lease>(obj),
        ("rbac.authorization.k8s.io", "ClusterRole") => rt::<rbac::v1::ClusterRole>(obj),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            rt::<rbac::v1::ClusterRoleBinding>(obj)
        }
        ("rbac.authorization.k8s.io", "Role") => rt::<rbac::v1::Role>(obj),
        ("rbac.authorization.k8s.io", "RoleBinding") => rt::<rbac::v1::RoleBinding>(obj),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            rt::<apiextensions::v1::CustomResourceDefinition>(obj)
        }
        _ => None,
    }
}

/// Fields of `input` that `encoded` lost (null values are not fields).
fn lost(input: &Value, encoded: &Value, path: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    match (input, encoded) {
        (Value::Object(i), Value::Object(e)) => {
            for (k, v) in i {
                if v.is_null() {
                    continue;
                }
                path.push(Step::Key(k.clone()));
                match e.get(k) {
                    Some(ev) => lost(v, ev, path, out),
                    None => out.push(path.clone()),
                }
                path.pop();
            }
        }
        (Value::Array(i), Value::Array(e)) => {
            for (n, (v, ev)) in i.iter().zip(e).enumerate() {
                path.push(Step::Index(n));
                lost(v, ev, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn flag(schema: &Map<String, Value>, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool) == Some(true)
}

/// Fields of `v` that a structural `schema` does not declare.
fn walk_schema(
    v: &Value,
    schema: &Value,
    root: bool,
    path: &mut Vec<Step>,
    out: &mut Vec<Vec<Step>>,
) {
    let Value::Object(schema) = schema else {
        return;
    };
    match v {
        Value::Object(m) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
            let embedded = flag(schema, "x-kubernetes-embedded-resource");
            for (k, child) in m {
                if (root || embedded) && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                path.push(Step::Key(k.clone()));
                match (props.and_then(|p| p.get(k)), additional) {
                    (Some(s), _) => walk_schema(child, s, false, path, out),
                    (None, Some(s @ Value::Object(_))) => walk_schema(child, s, false, path, out),
                    (None, Some(Value::Bool(true))) => {}
                    (None, _) if preserve => {}
                    (None, _) => out.push(path.clone()),
                }
                path.pop();
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (n, item) in items.iter().enumerate() {
                    path.push(Step::Index(n));
                    walk_schema(item, item_schema, false, path, out);
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
