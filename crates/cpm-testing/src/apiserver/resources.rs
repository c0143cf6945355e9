//! The resources the test API server serves: built-in kinds, CRD-registered kinds, and the
//! discovery documents (`/api`, `/apis`, `/api/v1`, `/apis/<group>/<version>`) kube-rs reads.

use serde_json::{Value, json};

/// What the server does with a resource beyond generic storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Special {
    /// Stored objects.
    None,
    /// `authentication.k8s.io/v1` TokenReview: create-only, answered by the scripted reviewer.
    TokenReview,
    /// `authorization.k8s.io/v1` SubjectAccessReview: create-only, answered by the authorizer.
    SubjectAccessReview,
    /// CustomResourceDefinition: stored, and registers the resource it defines.
    Crd,
}

/// A served resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResourceDef {
    pub(crate) group: String,
    /// Served versions; the first is the preferred one.
    pub(crate) versions: Vec<String>,
    pub(crate) kind: String,
    pub(crate) plural: String,
    pub(crate) singular: String,
    pub(crate) namespaced: bool,
    pub(crate) status: bool,
    pub(crate) short_names: Vec<String>,
    pub(crate) special: Special,
}

impl ResourceDef {
    fn builtin(
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        namespaced: bool,
        status: bool,
    ) -> Self {
        Self {
            group: group.into(),
            versions: vec![version.into()],
            kind: kind.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            namespaced,
            status,
            short_names: vec![],
            special: Special::None,
        }
    }

    fn special(mut self, special: Special) -> Self {
        self.special = special;
        self
    }

    fn short(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(ToString::to_string).collect();
        self
    }

    /// `v1` or `group/version`.
    pub(crate) fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    fn verbs(&self) -> Vec<&'static str> {
        match self.special {
            Special::TokenReview | Special::SubjectAccessReview => vec!["create"],
            _ => vec![
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ],
        }
    }
}

/// The built-in resources.
pub(crate) fn builtins() -> Vec<ResourceDef> {
    vec![
        ResourceDef::builtin("", "v1", "Namespace", "namespaces", false, true).short(&["ns"]),
        ResourceDef::builtin("", "v1", "Node", "nodes", false, true).short(&["no"]),
        ResourceDef::builtin("", "v1", "Pod", "pods", true, true).short(&["po"]),
        ResourceDef::builtin("", "v1", "Secret", "secrets", true, false),
        ResourceDef::builtin("", "v1", "ConfigMap", "configmaps", true, false).short(&["cm"]),
        ResourceDef::builtin("", "v1", "Event", "events", true, false).short(&["ev"]),
        ResourceDef::builtin("", "v1", "ServiceAccount", "serviceaccounts", true, false)
            .short(&["sa"]),
        ResourceDef::builtin("", "v1", "Service", "services", true, true).short(&["svc"]),
        ResourceDef::builtin("apps", "v1", "DaemonSet", "daemonsets", true, true).short(&["ds"]),
        ResourceDef::builtin("batch", "v1", "Job", "jobs", true, true),
        ResourceDef::builtin("batch", "v1", "CronJob", "cronjobs", true, true).short(&["cj"]),
        ResourceDef::builtin(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            true,
            false,
        ),
        ResourceDef::builtin("coordination.k8s.io", "v1", "Lease", "leases", true, false),
        ResourceDef::builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            false,
            false,
        ),
        ResourceDef::builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
            false,
        ),
        ResourceDef::builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "Role",
            "roles",
            true,
            false,
        ),
        ResourceDef::builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
            false,
        ),
        ResourceDef::builtin(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            true,
        )
        .short(&["crd", "crds"])
        .special(Special::Crd),
        ResourceDef::builtin(
            "authentication.k8s.io",
            "v1",
            "TokenReview",
            "tokenreviews",
            false,
            false,
        )
        .special(Special::TokenReview),
        ResourceDef::builtin(
            "authorization.k8s.io",
            "v1",
            "SubjectAccessReview",
            "subjectaccessreviews",
            false,
            false,
        )
        .special(Special::SubjectAccessReview),
    ]
}

/// The resource a CRD object defines, or why it cannot be served.
pub(crate) fn from_crd(crd: &Value) -> Result<ResourceDef, String> {
    let spec = crd.get("spec").ok_or("spec: Required value")?;
    let s = |p: &str| spec.pointer(p).and_then(Value::as_str).map(str::to_string);
    let group = s("/group").ok_or("spec.group: Required value")?;
    let plural = s("/names/plural").ok_or("spec.names.plural: Required value")?;
    let kind = s("/names/kind").ok_or("spec.names.kind: Required value")?;
    let singular = s("/names/singular").unwrap_or_else(|| kind.to_lowercase());
    let scope = s("/scope").ok_or("spec.scope: Required value")?;
    let namespaced = match scope.as_str() {
        "Namespaced" => true,
        "Cluster" => false,
        other => return Err(format!("spec.scope: Unsupported value: \"{other}\"")),
    };
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name != format!("{plural}.{group}") {
        return Err(format!(
            "metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
        ));
    }
    let mut versions = Vec::new();
    let mut status = false;
    let list = spec
        .get("versions")
        .and_then(Value::as_array)
        .ok_or("spec.versions: Required value")?;
    // The storage version first, as the preferred one.
    let mut ordered: Vec<&Value> = list.iter().collect();
    ordered.sort_by_key(|v| !v.get("storage").and_then(Value::as_bool).unwrap_or(false));
    for v in ordered {
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let vname = v
            .get("name")
            .and_then(Value::as_str)
            .ok_or("spec.versions[].name: Required value")?;
        versions.push(vname.to_string());
        status |= v.pointer("/subresources/status").is_some();
    }
    if versions.is_empty() {
        return Err(
            "spec.versions: Invalid value: must have exactly one version marked as storage version"
                .into(),
        );
    }
    let short_names = spec
        .pointer("/names/shortNames")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Ok(ResourceDef {
        group,
        versions,
        kind,
        plural,
        singular,
        namespaced,
        status,
        short_names,
        special: Special::None,
    })
}

/// `/api`.
pub(crate) fn api_versions(addr: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr}],
    })
}

fn group_versions(defs: &[ResourceDef]) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for d in defs.iter().filter(|d| !d.group.is_empty()) {
        let entry = match groups.iter_mut().position(|(g, _)| *g == d.group) {
            Some(i) => &mut groups[i].1,
            None => {
                groups.push((d.group.clone(), Vec::new()));
                let last = groups.len() - 1;
                &mut groups[last].1
            }
        };
        for v in &d.versions {
            if !entry.contains(v) {
                entry.push(v.clone());
            }
        }
    }
    groups
}

fn group_doc(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

/// `/apis`.
pub(crate) fn api_group_list(defs: &[ResourceDef]) -> Value {
    let groups: Vec<Value> = group_versions(defs)
        .iter()
        .map(|(g, vs)| group_doc(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`, if served.
pub(crate) fn api_group(defs: &[ResourceDef], group: &str) -> Option<Value> {
    group_versions(defs)
        .iter()
        .find(|(g, _)| g == group)
        .map(|(g, vs)| {
            let mut doc = group_doc(g, vs);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            doc
        })
}

/// `/api/v1` or `/apis/<group>/<version>`, if served.
pub(crate) fn resource_list(defs: &[ResourceDef], group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for d in defs
        .iter()
        .filter(|d| d.group == group && d.versions.iter().any(|v| v == version))
    {
        let mut r = json!({
            "name": d.plural,
            "singularName": d.singular,
            "namespaced": d.namespaced,
            "kind": d.kind,
            "verbs": d.verbs(),
        });
        if !d.short_names.is_empty() {
            r["shortNames"] = json!(d.short_names);
        }
        resources.push(r);
        if d.status {
            resources.push(json!({
                "name": format!("{}/status", d.plural),
                "singularName": "",
                "namespaced": d.namespaced,
                "kind": d.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// `/version`.
pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-cpm-testing",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}
