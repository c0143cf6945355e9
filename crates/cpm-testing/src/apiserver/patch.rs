//! Patches: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and a subset of server-side apply
//! with per-manager field ownership (strategic merge patch is in `strategic.rs`).
//!
//! Server-side apply subset:
//! - fields are tracked as leaf paths; maps recurse, lists and scalars are atomic leaves (the real
//!   server merges `listType=map`/`set` lists element-wise; here a list is owned as a whole);
//! - `metadata.labels.*`, `metadata.annotations.*`, `metadata.finalizers` and
//!   `metadata.ownerReferences` are tracked; other metadata is not; an empty map owns nothing;
//! - applying a value to a field another manager owns with a *different* current value is a
//!   conflict (409, reason `Conflict`) unless `force=true`, which moves ownership; equal values are
//!   co-owned;
//! - a field the applier owned before and no longer applies is removed when no other manager owns
//!   it;
//! - non-apply writes (PUT, merge/JSON patch) move ownership of the fields they change to their
//!   manager (`fieldManager` or the User-Agent's program name), as the real server does;
//! - ownership is kept internally; `metadata.managedFields` is not rendered.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::status::ApiError;

/// A field path, one segment per map key.
pub(crate) type FieldPath = Vec<String>;

/// Field ownership of one object: manager → owned leaf paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Managers(pub(crate) BTreeMap<String, BTreeSet<FieldPath>>);

/// Applies an RFC 7386 merge patch.
pub(crate) fn merge(doc: &mut Value, patch: &Value) {
    json_patch::merge(doc, patch);
}

/// Applies an RFC 6902 JSON patch: 400 if the body is not a patch, 422 if it does not apply
/// (a failing `test` op, a missing path).
pub(crate) fn json_patch(doc: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let patch: json_patch::Patch = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let mut out = doc.clone();
    json_patch::patch(&mut out, &patch.0).map_err(|_| ApiError::patch_unprocessable())?;
    Ok(out)
}

/// `.spec.replicas` style rendering.
pub(crate) fn render(path: &FieldPath) -> String {
    path.iter().map(|s| format!(".{s}")).collect()
}

fn walk(v: &Value, prefix: &mut FieldPath, out: &mut BTreeMap<FieldPath, Value>) {
    match v {
        Value::Object(m) => {
            // An empty map owns nothing: `data: {}` neither sets nor conflicts.
            for (k, child) in m {
                prefix.push(k.clone());
                walk(child, prefix, out);
                prefix.pop();
            }
        }
        other => {
            out.insert(prefix.clone(), other.clone());
        }
    }
}

/// The tracked leaves of an object (see the module doc for which metadata counts).
pub(crate) fn leaves(obj: &Value) -> BTreeMap<FieldPath, Value> {
    let mut out = BTreeMap::new();
    let Some(m) = obj.as_object() else { return out };
    for (k, v) in m {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                for mk in ["labels", "annotations", "finalizers", "ownerReferences"] {
                    if let Some(mv) = v.get(mk) {
                        walk(mv, &mut vec!["metadata".into(), mk.into()], &mut out);
                    }
                }
            }
            _ => walk(v, &mut vec![k.clone()], &mut out),
        }
    }
    out
}

fn related(a: &FieldPath, b: &FieldPath) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

fn get<'a>(obj: &'a Value, path: &FieldPath) -> Option<&'a Value> {
    path.iter().try_fold(obj, |cur, seg| cur.get(seg))
}

fn set(obj: &mut Value, path: &FieldPath, value: Value) {
    let mut cur = obj;
    for seg in &path[..path.len().saturating_sub(1)] {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(m) = cur else { return };
        cur = m
            .entry(seg.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if let (Some(last), Value::Object(m)) = (path.last(), &mut *cur) {
        m.insert(last.clone(), value);
    } else if let Some(last) = path.last() {
        let mut m = Map::new();
        m.insert(last.clone(), value);
        *cur = Value::Object(m);
    }
}

fn remove(obj: &mut Value, path: &FieldPath) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for seg in parents {
        match cur.get_mut(seg) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Value::Object(m) = cur {
        m.remove(last);
    }
}

/// A server-side apply conflict: the other manager and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conflict {
    pub(crate) manager: String,
    pub(crate) path: FieldPath,
}

/// Server-side apply of `config` by `manager` onto `current` (the object without server-set
/// metadata handling, which the caller does). Returns the new object and ownership, or the
/// conflicts.
pub(crate) fn apply(
    current: &Value,
    managers: &Managers,
    config: &Value,
    manager: &str,
    force: bool,
) -> Result<(Value, Managers), Vec<Conflict>> {
    let applied = leaves(config);
    let mut owners = managers.clone();
    let mut conflicts = Vec::new();
    for (path, value) in &applied {
        for (other, owned) in &managers.0 {
            if other == manager {
                continue;
            }
            for q in owned.iter().filter(|q| related(q, path)) {
                if get(current, path) != Some(value) {
                    conflicts.push(Conflict {
                        manager: other.clone(),
                        path: q.clone(),
                    });
                }
            }
        }
    }
    conflicts.sort_by(|a, b| (&a.manager, &a.path).cmp(&(&b.manager, &b.path)));
    conflicts.dedup();
    if !conflicts.is_empty() {
        if !force {
            return Err(conflicts);
        }
        for c in &conflicts {
            if let Some(set) = owners.0.get_mut(&c.manager) {
                set.remove(&c.path);
            }
        }
    }
    let mut obj = current.clone();
    // Fields this manager applied before and no longer applies, owned by nobody else: removed.
    let previous = owners.0.get(manager).cloned().unwrap_or_default();
    for old in previous {
        let still_applied = applied.keys().any(|p| related(p, &old));
        let owned_by_other = owners
            .0
            .iter()
            .any(|(m, s)| m != manager && s.iter().any(|q| related(q, &old)));
        if !still_applied && !owned_by_other {
            remove(&mut obj, &old);
        }
    }
    for (path, value) in &applied {
        set(&mut obj, path, value.clone());
    }
    owners
        .0
        .insert(manager.to_string(), applied.keys().cloned().collect());
    owners.0.retain(|_, s| !s.is_empty());
    Ok((obj, owners))
}

/// Records a non-apply write by `manager`: it takes ownership of every field it changed; removed
/// fields are owned by nobody.
pub(crate) fn record_update(managers: &mut Managers, old: &Value, new: &Value, manager: &str) {
    let before = leaves(old);
    let after = leaves(new);
    let changed: BTreeSet<FieldPath> = after
        .iter()
        .filter(|(p, v)| before.get(*p) != Some(*v))
        .map(|(p, _)| p.clone())
        .collect();
    let removed: BTreeSet<FieldPath> = before
        .keys()
        .filter(|p| !after.contains_key(*p))
        .cloned()
        .collect();
    for (m, owned) in managers.0.iter_mut() {
        owned.retain(|q| {
            let gone = removed
                .iter()
                .any(|r| related(r, q) && !after.keys().any(|a| a == q));
            let taken = m != manager && changed.iter().any(|c| related(c, q));
            !gone && !taken
        });
    }
    if !changed.is_empty() {
        managers
            .0
            .entry(manager.to_string())
            .or_default()
            .extend(changed);
    }
    managers.0.retain(|_, s| !s.is_empty());
}

#[cfg(test)]
mod tests;
