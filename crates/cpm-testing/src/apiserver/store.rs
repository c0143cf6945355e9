//! Object storage with kube-apiserver semantics: a global, monotonic resourceVersion (like the etcd
//! revision), server-set metadata, optimistic concurrency, finalizers, and a bounded event history
//! that watches resume from (older resourceVersions are `410 Expired`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::patch::{self, Managers};
use super::resources::{ResourceDef, Special, builtins, from_crd};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;

/// Where an object lives: resource (group, plural), namespace ("" when cluster-scoped), name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ObjKey {
    pub(crate) group: String,
    pub(crate) plural: String,
    pub(crate) ns: String,
    pub(crate) name: String,
}

/// A stored object and its field ownership.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) obj: Value,
    pub(crate) managers: Managers,
}

/// A watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change, as watches see it.
#[derive(Debug)]
pub(crate) struct Event {
    pub(crate) rv: u64,
    pub(crate) key: ObjKey,
    pub(crate) ty: EventType,
    /// The object after the change (for a deletion: its last state, at the deletion's RV).
    pub(crate) obj: Value,
    /// The object before the change, for selector transitions.
    pub(crate) prev: Option<Value>,
}

/// What a selector-filtered watcher sees of an event.
pub(crate) fn visible(ev: &Event, matches: impl Fn(&Value) -> bool) -> Option<EventType> {
    let now = matches(&ev.obj);
    let before = ev.prev.as_ref().is_some_and(&matches);
    match (ev.ty, before, now) {
        (EventType::Deleted, _, true) => Some(EventType::Deleted),
        (EventType::Deleted, _, false) => None,
        (_, true, true) => Some(EventType::Modified),
        (_, false, true) => Some(EventType::Added),
        (_, true, false) => Some(EventType::Deleted),
        (_, false, false) => None,
    }
}

/// Request options shared by the write verbs.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteOpts {
    pub(crate) dry_run: bool,
    pub(crate) manager: String,
}

/// The server's state.
pub(crate) struct Store {
    pub(crate) rv: u64,
    pub(crate) defs: Vec<ResourceDef>,
    objects: BTreeMap<ObjKey, Stored>,
    pub(crate) history: VecDeque<Arc<Event>>,
    /// Highest resourceVersion no longer in `history`.
    pub(crate) compacted: u64,
    pub(crate) window: usize,
}

pub(crate) fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn new_uid() -> String {
    let n: u128 = rand::random();
    let h = format!("{n:032x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn meta(obj: &Value, field: &str) -> Option<String> {
    obj.pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let Value::Object(root) = obj else {
        unreachable!("just made an object")
    };
    let m = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    let Value::Object(m) = m else {
        unreachable!("just made an object")
    };
    m
}

/// DNS-1123 subdomain, as most kinds require for `metadata.name`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Everything but metadata and status: what bumps `metadata.generation`.
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Value::Object(m) = &mut v {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    v
}

fn without_rv(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(Value::Object(m)) = v.get_mut("metadata") {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    v
}

impl Store {
    pub(crate) fn new(window: usize) -> Self {
        Self {
            rv: 1,
            defs: builtins(),
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            compacted: 1,
            window,
        }
    }

    /// The namespaces kube-apiserver creates when it starts, as it creates them.
    pub(crate) fn create_system_namespaces(&mut self) {
        let Some(def) = self.def("", "v1", "namespaces") else {
            return;
        };
        let opts = WriteOpts {
            dry_run: false,
            manager: "kube-apiserver".into(),
        };
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let ns = json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            });
            // A fresh store has none of them; nothing else can fail here.
            let _ = self.create(&def, "", ns, &opts, None);
        }
    }

    /// The resource served at `group/version/plural`.
    pub(crate) fn def(&self, group: &str, version: &str, plural: &str) -> Option<ResourceDef> {
        self.defs
            .iter()
            .find(|d| {
                d.group == group && d.plural == plural && d.versions.iter().any(|v| v == version)
            })
            .cloned()
    }

    /// Drops all retained history: any watch or continue from an older resourceVersion now gets
    /// 410 Expired.
    pub(crate) fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    pub(crate) fn set_window(&mut self, window: usize) {
        self.window = window;
        self.trim();
    }

    fn trim(&mut self) {
        while self.history.len() > self.window {
            if let Some(ev) = self.history.pop_front() {
                self.compacted = ev.rv;
            }
        }
    }

    fn key(def: &ResourceDef, ns: &str, name: &str) -> ObjKey {
        ObjKey {
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

    /// Stores `new` (or deletes when `None`) at a new resourceVersion and records the event.
    fn commit(
        &mut self,
        key: ObjKey,
        new: Option<Stored>,
        ty: EventType,
        prev: Option<Value>,
    ) -> Value {
        self.rv += 1;
        let rv = self.rv;
        let obj = match new {
            Some(mut stored) => {
                meta_mut(&mut stored.obj).insert("resourceVersion".into(), json!(rv.to_string()));
                let obj = stored.obj.clone();
                self.objects.insert(key.clone(), stored);
                obj
            }
            None => {
                let mut last = self
                    .objects
                    .remove(&key)
                    .map(|s| s.obj)
                    .unwrap_or(Value::Null);
                meta_mut(&mut last).insert("resourceVersion".into(), json!(rv.to_string()));
                last
            }
        };
        self.history.push_back(Arc::new(Event {
            rv,
            key,
            ty,
            obj: obj.clone(),
            prev,
        }));
        self.trim();
        obj
    }

    /// Secrets: `stringData` is write-only and merged into `data` (base64), as in Kubernetes.
    fn fold_string_data(def: &ResourceDef, obj: &mut Value) {
        use base64::Engine as _;
        if def.group.is_empty()
            && def.kind == "Secret"
            && let Value::Object(m) = obj
            && let Some(Value::Object(sd)) = m.remove("stringData")
        {
            let data = m.entry("data").or_insert_with(|| Value::Object(Map::new()));
            if !data.is_object() {
                *data = Value::Object(Map::new());
            }
            if let Value::Object(d) = data {
                for (k, v) in sd {
                    let text = v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string());
                    d.insert(
                        k,
                        json!(base64::engine::general_purpose::STANDARD.encode(text)),
                    );
                }
            }
        }
    }

    fn check_types(def: &ResourceDef, obj: &Value) -> Result<(), ApiError> {
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if kind.is_empty() {
            return Err(ApiError::bad_request(
                "Object 'Kind' is missing in the request body",
            ));
        }
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
        Ok(())
    }

    fn check_namespace(def: &ResourceDef, ns: &str, obj: &mut Value) -> Result<(), ApiError> {
        if !def.namespaced {
            meta_mut(obj).remove("namespace");
            return Ok(());
        }
        match meta(obj, "namespace") {
            Some(body_ns) if !body_ns.is_empty() && body_ns != ns => Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            )),
            _ => {
                meta_mut(obj).insert("namespace".into(), json!(ns));
                Ok(())
            }
        }
    }

    /// GET one object.
    pub(crate) fn get(&self, def: &ResourceDef, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&Self::key(def, ns, name))
            .map(|s| s.obj.clone())
            .ok_or_else(|| ApiError::not_found(&def.group, &def.plural, name))
    }

    pub(crate) fn stored(&self, def: &ResourceDef, ns: &str, name: &str) -> Option<&Stored> {
        self.objects.get(&Self::key(def, ns, name))
    }

    /// The objects of `def` (in `ns` when given), in key order, with the selectors applied.
    pub(crate) fn list(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Vec<(ObjKey, Value)> {
        self.objects
            .iter()
            .filter(|(k, _)| k.group == def.group && k.plural == def.plural)
            .filter(|(k, _)| ns.is_none_or(|ns| k.ns == ns))
            .filter(|(_, s)| labels.matches(&s.obj) && fields.matches(&s.obj))
            .map(|(k, s)| (k.clone(), s.obj.clone()))
            .collect()
    }

    /// POST.
    pub(crate) fn create(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        mut obj: Value,
        opts: &WriteOpts,
        managers: Option<Managers>,
    ) -> Result<Value, ApiError> {
        Self::check_types(def, &obj)?;
        Self::check_namespace(def, ns, &mut obj)?;
        Self::fold_string_data(def, &mut obj);
        let mut name = meta(&obj, "name").unwrap_or_default();
        if name.is_empty() {
            match meta(&obj, "generateName") {
                Some(prefix) if !prefix.is_empty() => name = format!("{prefix}{}", random_suffix()),
                _ => {
                    return Err(ApiError::invalid(
                        &def.group,
                        &def.kind,
                        "",
                        "metadata.name: Required value: name or generateName is required",
                    ));
                }
            }
        }
        if def.group == "rbac.authorization.k8s.io" {
            // RBAC names are path segments (`system:node`), as in the real apiserver.
            if name == "." || name == ".." || name.contains('/') || name.contains('%') {
                return Err(ApiError::invalid(
                    &def.group,
                    &def.kind,
                    &name,
                    &format!(
                        "metadata.name: Invalid value: \"{name}\": may not be '.' or '..' and may not contain '/' or '%'"
                    ),
                ));
            }
        } else if !valid_name(&name) {
            return Err(ApiError::invalid(
                &def.group,
                &def.kind,
                &name,
                &format!(
                    "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                ),
            ));
        }
        let key = Self::key(def, ns, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&def.group, &def.plural, &name));
        }
        if def.special == Special::Crd {
            let mut def_obj = obj.clone();
            meta_mut(&mut def_obj).insert("name".into(), json!(name));
            let crd = from_crd(&def_obj)
                .map_err(|why| ApiError::invalid(&def.group, &def.kind, &name, &why))?;
            obj["status"] = crd_status(&def_obj);
            if !opts.dry_run {
                self.defs
                    .retain(|d| !(d.group == crd.group && d.plural == crd.plural));
                self.defs.push(crd);
            }
        } else if def.status && !def.group.is_empty() && !is_builtin_group(&def.group) {
            // Custom resources with a status subresource ignore status on create.
            if let Value::Object(m) = &mut obj {
                m.remove("status");
            }
        }
        {
            let m = meta_mut(&mut obj);
            m.insert("name".into(), json!(name));
            m.insert("uid".into(), json!(new_uid()));
            m.insert("creationTimestamp".into(), json!(now_rfc3339()));
            m.insert("generation".into(), json!(1));
            for server_set in [
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "managedFields",
                "selfLink",
            ] {
                m.remove(server_set);
            }
        }
        let managers = managers.unwrap_or_else(|| {
            let mut m = Managers::default();
            patch::record_update(&mut m, &json!({}), &obj, &opts.manager);
            m
        });
        if opts.dry_run {
            return Ok(obj);
        }
        Ok(self.commit(key, Some(Stored { obj, managers }), EventType::Added, None))
    }

    /// PUT (main resource or `/status`). An empty resourceVersion is unconditional.
    pub(crate) fn update(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        mut obj: Value,
        status_only: bool,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        Self::check_types(def, &obj)?;
        Self::check_namespace(def, ns, &mut obj)?;
        match meta(&obj, "name") {
            Some(n) if n == name => {}
            Some(n) if !n.is_empty() => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            _ => {
                meta_mut(&mut obj).insert("name".into(), json!(name));
            }
        }
        let key = Self::key(def, ns, name);
        let Some(prior) = self.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(&def.group, &def.plural, name));
        };
        self.replace(def, key, &prior, obj, status_only, None, opts)
    }

    /// The shared tail of PUT, PATCH and apply: preconditions, server-owned metadata, status
    /// subresource rules, generation, no-op detection, finalizers, commit.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn replace(
        &mut self,
        def: &ResourceDef,
        key: ObjKey,
        prior: &Stored,
        mut obj: Value,
        status_only: bool,
        managers: Option<Managers>,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        Self::fold_string_data(def, &mut obj);
        let old = &prior.obj;
        let current_rv = meta(old, "resourceVersion").unwrap_or_default();
        if let Some(rv) = meta(&obj, "resourceVersion").filter(|rv| !rv.is_empty())
            && rv != current_rv
        {
            return Err(ApiError::conflict(
                &def.group,
                &def.plural,
                &key.name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        if def.status {
            if status_only {
                let status = obj.get("status").cloned();
                obj = old.clone();
                match status {
                    Some(s) => obj["status"] = s,
                    None => {
                        if let Value::Object(m) = &mut obj {
                            m.remove("status");
                        }
                    }
                }
            } else if let Value::Object(m) = &mut obj {
                match old.get("status") {
                    Some(s) => {
                        m.insert("status".into(), s.clone());
                    }
                    None => {
                        m.remove("status");
                    }
                }
            }
        }
        {
            let old_meta = old.get("metadata").cloned().unwrap_or_default();
            let m = meta_mut(&mut obj);
            for owned in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "name",
                "namespace",
            ] {
                match old_meta.get(owned) {
                    Some(v) => m.insert(owned.into(), v.clone()),
                    None => m.remove(owned),
                };
            }
            m.insert("resourceVersion".into(), json!(current_rv));
            m.remove("managedFields");
            m.remove("selfLink");
        }
        if spec_part(&obj) != spec_part(old) {
            let generation = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1)
                + 1;
            meta_mut(&mut obj).insert("generation".into(), json!(generation));
        }
        let mut managers = managers.unwrap_or_else(|| {
            let mut m = prior.managers.clone();
            patch::record_update(&mut m, old, &obj, &opts.manager);
            m
        });
        if without_rv(&obj) == without_rv(old) {
            return Ok(old.clone());
        }
        if def.special == Special::Crd {
            let crd = from_crd(&obj)
                .map_err(|why| ApiError::invalid(&def.group, &def.kind, &key.name, &why))?;
            if !opts.dry_run {
                self.defs
                    .retain(|d| !(d.group == crd.group && d.plural == crd.plural));
                self.defs.push(crd);
            }
        }
        if opts.dry_run {
            return Ok(obj);
        }
        let finalizers_empty = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if finalizers_empty && obj.pointer("/metadata/deletionTimestamp").is_some() {
            self.objects.insert(
                key.clone(),
                Stored {
                    obj: obj.clone(),
                    managers: std::mem::take(&mut managers),
                },
            );
            return Ok(self.remove(def, key, Some(old.clone())));
        }
        Ok(self.commit(
            key,
            Some(Stored { obj, managers }),
            EventType::Modified,
            Some(old.clone()),
        ))
    }

    fn remove(&mut self, def: &ResourceDef, key: ObjKey, prev: Option<Value>) -> Value {
        let deleted = self.commit(key, None, EventType::Deleted, prev);
        if def.special == Special::Crd
            && let Ok(crd) = from_crd(&deleted)
        {
            self.defs
                .retain(|d| !(d.group == crd.group && d.plural == crd.plural));
            let owned: Vec<ObjKey> = self
                .objects
                .keys()
                .filter(|k| k.group == crd.group && k.plural == crd.plural)
                .cloned()
                .collect();
            for k in owned {
                let prev = self.objects.get(&k).map(|s| s.obj.clone());
                self.commit(k, None, EventType::Deleted, prev);
            }
        }
        deleted
    }

    /// DELETE. Honours `preconditions` (uid, resourceVersion) and finalizers.
    pub(crate) fn delete(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        preconditions: &Value,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        let key = Self::key(def, ns, name);
        let Some(prior) = self.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(&def.group, &def.plural, name));
        };
        for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
            if let Some(want) = preconditions.get(field).and_then(Value::as_str)
                && meta(&prior.obj, field).as_deref() != Some(want)
            {
                return Err(ApiError::conflict(
                    &def.group,
                    &def.plural,
                    name,
                    &format!(
                        "Precondition failed: {label} in precondition: {want}, {label} in object meta: {}",
                        meta(&prior.obj, field).unwrap_or_default()
                    ),
                ));
            }
        }
        if opts.dry_run {
            return Ok(prior.obj);
        }
        let has_finalizers = prior
            .obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if prior.obj.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(prior.obj);
            }
            let mut obj = prior.obj.clone();
            let m = meta_mut(&mut obj);
            m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            return Ok(self.commit(
                key,
                Some(Stored {
                    obj,
                    managers: prior.managers,
                }),
                EventType::Modified,
                Some(prior.obj),
            ));
        }
        Ok(self.remove(def, key, Some(prior.obj)))
    }
}

fn is_builtin_group(group: &str) -> bool {
    builtins().iter().any(|d| d.group == group)
}

/// The status kube-apiserver's CRD controllers set soon after creation; set at once here.
fn crd_status(crd: &Value) -> Value {
    let names = crd.pointer("/spec/names").cloned().unwrap_or_default();
    let now = now_rfc3339();
    json!({
        "acceptedNames": names,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
        "storedVersions": crd.pointer("/spec/versions").and_then(Value::as_array).map(|vs| vs.iter().filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true)).filter_map(|v| v.get("name").cloned()).collect::<Vec<_>>()).unwrap_or_default(),
    })
}
