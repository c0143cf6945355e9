//! OpenAPI documents, as far as clients use them: `/openapi/v3` (the index of group-versions),
//! `/openapi/v3/<api|apis/group>/<version>` (paths and operations of every served resource,
//! each PATCH tagged with `x-kubernetes-group-version-kind` and the `fieldValidation`
//! parameter, which is how kubectl decides that the server validates fields itself), and
//! `/openapi/v2` in JSON, or as protobuf (what kubectl asks for when it validates on the client
//! side: a `kind: List`, or a kind the v3 documents lack, such as a custom resource whose CRD is
//! applied in the same run) as a document without definitions, so kubectl skips client-side
//! schema validation as it does for any kind a server has no schema for.
//!
//! Schemas are those of custom resources (their `openAPIV3Schema`); built-in kinds carry an
//! object schema without properties. PATCH operations do not offer
//! `application/strategic-merge-patch+json`, so kubectl computes strategic merge patches from
//! its compiled-in types instead of asking for schemas the server does not have.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::resources::ResourceDef;

/// `api/v1` or `apis/<group>/<version>`.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The group-versions served, in a stable order.
fn group_versions(defs: &[ResourceDef]) -> Vec<(String, String)> {
    let mut gvs: Vec<(String, String)> = defs
        .iter()
        .flat_map(|d| d.versions.iter().map(|v| (d.group.clone(), v.clone())))
        .collect();
    gvs.sort();
    gvs.dedup();
    gvs
}

fn hash(doc: &Value) -> String {
    let digest = Sha256::digest(doc.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02X}")).collect()
}

/// `/openapi/v3`: where each group-version's document is, with a content hash so clients'
/// caches notice a change (a CRD added or removed).
pub(crate) fn v3_root(defs: &[ResourceDef]) -> Value {
    let mut paths = Map::new();
    for (group, version) in group_versions(defs) {
        let path = gv_path(&group, &version);
        let doc = v3_group_version(defs, &group, &version).unwrap_or_default();
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", hash(&doc))}),
        );
    }
    json!({ "paths": paths })
}

/// The schema name kube-apiserver uses for a kind (`io.k8s.api.apps.v1.Deployment` for
/// built-ins, the reversed group for custom resources).
fn schema_name(def: &ResourceDef, version: &str) -> String {
    let group = if def.group.is_empty() {
        "core".to_string()
    } else {
        def.group.clone()
    };
    if def.custom() {
        let reversed: Vec<&str> = group.rsplit('.').collect();
        format!("{}.{version}.{}", reversed.join("."), def.kind)
    } else {
        let short = group.split('.').next().unwrap_or_default();
        format!("io.k8s.api.{short}.{version}.{}", def.kind)
    }
}

fn query(name: &str, ty: &str, v3: bool) -> Value {
    if v3 {
        json!({"name": name, "in": "query", "schema": {"type": ty}, "uniqueItems": true})
    } else {
        json!({"name": name, "in": "query", "type": ty, "uniqueItems": true})
    }
}

/// The operations of one resource, as `(path, item)` pairs.
fn operations(def: &ResourceDef, version: &str, v3: bool) -> Vec<(String, Value)> {
    let gvk = json!({"group": def.group, "version": version, "kind": def.kind});
    let base = if def.group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{}/{version}", def.group)
    };
    let scope = if def.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", def.plural)
    } else {
        format!("{base}/{}", def.plural)
    };
    let ok = json!({"200": {"description": "OK"}});
    let op = |action: &str, params: Vec<Value>| {
        json!({
            "operationId": format!("{action}{}", def.kind),
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
            "parameters": params,
            "responses": ok,
        })
    };
    let writes = || {
        vec![
            query("dryRun", "string", v3),
            query("fieldManager", "string", v3),
            query("fieldValidation", "string", v3),
        ]
    };
    if def.create_only() {
        return vec![(scope, json!({"post": op("post", writes())}))];
    }
    let mut patch = op("patch", {
        let mut p = writes();
        p.push(query("force", "boolean", v3));
        p
    });
    let patch_types = [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
    ];
    if v3 {
        let content: Map<String, Value> = patch_types
            .iter()
            .map(|t| ((*t).to_string(), json!({"schema": {"type": "object"}})))
            .collect();
        patch["requestBody"] = json!({"content": content, "required": true});
    } else {
        patch["consumes"] = json!(patch_types);
    }
    vec![
        (
            scope.clone(),
            json!({"get": op("list", vec![]), "post": op("post", writes())}),
        ),
        (
            format!("{scope}/{{name}}"),
            json!({
                "get": op("get", vec![]),
                "put": op("put", writes()),
                "patch": patch,
                "delete": op("delete", vec![query("dryRun", "string", v3)]),
            }),
        ),
    ]
}

fn schema(def: &ResourceDef, version: &str) -> Value {
    let mut s = def
        .schemas
        .get(version)
        .cloned()
        .unwrap_or_else(|| json!({"type": "object"}));
    s["x-kubernetes-group-version-kind"] =
        json!([{"group": def.group, "version": version, "kind": def.kind}]);
    s
}

/// `/openapi/v3/<api/v1 | apis/group/version>`, if served.
pub(crate) fn v3_group_version(defs: &[ResourceDef], group: &str, version: &str) -> Option<Value> {
    let served: Vec<&ResourceDef> = defs
        .iter()
        .filter(|d| d.group == group && d.versions.iter().any(|v| v == version))
        .collect();
    if served.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for def in served {
        paths.extend(operations(def, version, true));
        schemas.insert(schema_name(def, version), schema(def, version));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "unversioned"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// `/openapi/v2` (JSON).
pub(crate) fn v2(defs: &[ResourceDef]) -> Value {
    let mut paths = Map::new();
    let mut definitions = Map::new();
    for def in defs {
        for version in &def.versions {
            paths.extend(operations(def, version, false));
            definitions.insert(schema_name(def, version), schema(def, version));
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "unversioned"},
        "paths": paths,
        "definitions": definitions,
    })
}

/// The protobuf media type of `/openapi/v2`.
pub(crate) const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// `/openapi/v2` as a gnostic `openapi.v2.Document` message: `swagger`, `info`, and empty
/// `paths` and `definitions`.
pub(crate) fn v2_protobuf() -> Vec<u8> {
    fn field(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
        out.push((number << 3) | 2);
        // Every value here is shorter than 128 bytes: a one-byte length.
        out.push(u8::try_from(bytes.len()).unwrap_or(0));
        out.extend_from_slice(bytes);
    }
    let mut info = Vec::new();
    field(&mut info, 1, b"Kubernetes");
    field(&mut info, 2, b"unversioned");
    let mut doc = Vec::new();
    field(&mut doc, 1, b"2.0");
    field(&mut doc, 2, &info);
    field(&mut doc, 8, b"");
    field(&mut doc, 9, b"");
    doc
}
