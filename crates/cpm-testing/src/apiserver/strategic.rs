//! Strategic merge patch (`application/strategic-merge-patch+json`), as kube-apiserver applies
//! it to built-in kinds, with the patch strategies of `schema/kubernetes-v1.33.schema`:
//!
//! - maps merge key by key, `null` deletes;
//! - lists whose field has `patchStrategy: merge` are merged: lists of objects by their
//!   `patchMergeKey` (an element patches the element with the same key, or is added), lists of
//!   scalars as sets; other lists are replaced;
//! - directives: `$patch: replace | delete` (on a map or a list element),
//!   `$setElementOrder/<list>` (the order of the merged list; elements the patch does not name
//!   keep their order after those it names), `$deleteFromPrimitiveList/<list>`, and
//!   `$retainKeys` (fields of the map the patch does not list are cleared).
//!
//! A kind or field the schema does not describe is patched as a JSON merge patch would (lists
//! replaced), which is also what kubectl sends for custom resources.

use serde_json::{Map, Value};

use super::schema::{self, Field, Schema, Ty};
use super::status::ApiError;

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_FROM: &str = "$deleteFromPrimitiveList/";

fn bad(why: impl Into<String>) -> ApiError {
    ApiError::bad_request(why.into())
}

/// Applies `patch` to `original`, an object of `api_version`/`kind`.
pub(crate) fn apply(
    original: &Value,
    patch: &Value,
    api_version: &str,
    kind: &str,
) -> Result<Value, ApiError> {
    let schema = schema::get().map_err(bad)?;
    let msg = schema::message_name(api_version, kind).filter(|m| schema.contains_key(m));
    let Value::Object(p) = patch else {
        return Err(bad(
            "error decoding patch: a strategic merge patch must be a JSON object",
        ));
    };
    match merge_map(schema, msg.as_deref(), Some(original), p)? {
        Some(v) => Ok(v),
        None => Err(bad(
            "a strategic merge patch may not delete the whole object",
        )),
    }
}

/// The message a field's value is, if any.
fn message_of(field: Option<&Field>) -> Option<&str> {
    match field.map(|f| &f.ty) {
        Some(Ty::Message(m)) => Some(m.as_str()),
        _ => None,
    }
}

/// Merges the map `patch` into `original` (absent: a new value); `None` deletes it.
fn merge_map(
    schema: &Schema,
    msg: Option<&str>,
    original: Option<&Value>,
    patch: &Map<String, Value>,
) -> Result<Option<Value>, ApiError> {
    match patch.get(PATCH).and_then(Value::as_str) {
        Some("delete") => return Ok(None),
        Some("replace") => return Ok(Some(clean(&Value::Object(patch.clone())))),
        Some("merge") | None => {}
        Some(other) => return Err(bad(format!("unknown patch type: {other}"))),
    }
    let message = msg.and_then(|m| schema.get(m));
    let mut out = match original {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    for (key, value) in patch {
        if key == PATCH || key == RETAIN_KEYS {
            continue;
        }
        if let Some(list) = key.strip_prefix(DELETE_FROM) {
            if let (Some(Value::Array(items)), Value::Array(gone)) = (out.get_mut(list), value) {
                items.retain(|i| !gone.contains(i));
            }
            continue;
        }
        if key.starts_with(SET_ORDER) {
            continue;
        }
        let field = message.and_then(|m| m.field(key));
        let merged = merge_value(schema, field, out.get(key), value)?;
        match merged {
            Some(v) => out.insert(key.clone(), v),
            None => out.remove(key),
        };
    }
    for (key, order) in patch {
        if let (Some(list), Value::Array(order)) = (key.strip_prefix(SET_ORDER), order) {
            let field = message.and_then(|m| m.field(list));
            let merge_key = field.and_then(|f| f.strategy.key.as_deref());
            if let Some(Value::Array(items)) = out.get_mut(list) {
                reorder(items, order, merge_key);
            }
        }
    }
    if let Some(Value::Array(keep)) = patch.get(RETAIN_KEYS) {
        out.retain(|k, _| keep.iter().any(|x| x.as_str() == Some(k.as_str())));
    }
    Ok(Some(Value::Object(out)))
}

/// Merges one field's patch value into its current value; `None` deletes the field.
fn merge_value(
    schema: &Schema,
    field: Option<&Field>,
    current: Option<&Value>,
    patch: &Value,
) -> Result<Option<Value>, ApiError> {
    match patch {
        Value::Null => Ok(None),
        Value::Object(p) => match field.map(|f| &f.ty) {
            Some(Ty::Map(_, value_ty)) if !field.is_some_and(|f| f.repeated) => {
                // A map field: keys merge; values that are messages merge in turn.
                match p.get(PATCH).and_then(Value::as_str) {
                    Some("delete") => return Ok(None),
                    Some("replace") => return Ok(Some(clean(patch))),
                    _ => {}
                }
                let mut out = match current {
                    Some(Value::Object(m)) => m.clone(),
                    _ => Map::new(),
                };
                let value_msg = match value_ty.as_ref() {
                    Ty::Message(m) => Some(m.as_str()),
                    _ => None,
                };
                for (k, v) in p.iter().filter(|(k, _)| !k.starts_with('$')) {
                    let merged = match (v, value_msg) {
                        (Value::Null, _) => None,
                        (Value::Object(vm), Some(m)) => merge_map(schema, Some(m), out.get(k), vm)?,
                        _ => Some(clean(v)),
                    };
                    match merged {
                        Some(v) => out.insert(k.clone(), v),
                        None => out.remove(k),
                    };
                }
                Ok(Some(Value::Object(out)))
            }
            _ => merge_map(schema, message_of(field), current, p),
        },
        Value::Array(items) => {
            let Some(f) = field.filter(|f| f.repeated && f.strategy.merge) else {
                return Ok(Some(clean(patch)));
            };
            let current = match current {
                Some(Value::Array(c)) => c.clone(),
                _ => Vec::new(),
            };
            merge_list(schema, f, current, items).map(Some)
        }
        scalar => Ok(Some(scalar.clone())),
    }
}

/// A merged list (the field's strategy is `merge`).
fn merge_list(
    schema: &Schema,
    field: &Field,
    mut current: Vec<Value>,
    patch: &[Value],
) -> Result<Value, ApiError> {
    if patch
        .iter()
        .any(|i| i.get(PATCH).and_then(Value::as_str) == Some("replace"))
    {
        let kept: Vec<Value> = patch
            .iter()
            .filter(|i| i.get(PATCH).is_none())
            .map(clean)
            .collect();
        return Ok(Value::Array(kept));
    }
    let Some(key) = field.strategy.key.as_deref() else {
        // A set of scalars.
        for item in patch {
            if !current.contains(item) {
                current.push(item.clone());
            }
        }
        return Ok(Value::Array(current));
    };
    let elem = message_of(Some(field));
    for item in patch {
        let Value::Object(p) = item else {
            return Err(bad(format!(
                "a list merged by {key:?} holds objects, not {item}"
            )));
        };
        let id = p.get(key).ok_or_else(|| {
            bad(format!(
                "map: {item} does not contain declared merge key: {key}"
            ))
        })?;
        let at = current.iter().position(|c| c.get(key) == Some(id));
        match merge_map(schema, elem, at.map(|i| &current[i]), p)? {
            Some(v) => match at {
                Some(i) => current[i] = v,
                None => current.push(v),
            },
            None => {
                if let Some(i) = at {
                    current.remove(i);
                }
            }
        }
    }
    Ok(Value::Array(current))
}

/// Orders `items` as `order` names them (by merge key for objects, by value for scalars);
/// items it does not name follow in their current order.
fn reorder(items: &mut [Value], order: &[Value], key: Option<&str>) {
    let id = |v: &Value| match key {
        Some(k) => v.get(k).cloned(),
        None => Some(v.clone()),
    };
    let wanted: Vec<Option<Value>> = order.iter().map(id).collect();
    let rank = |v: &Value| {
        let me = id(v);
        wanted.iter().position(|w| *w == me).unwrap_or(wanted.len())
    };
    items.sort_by_key(rank);
}

/// A value with every directive removed (a new value must not carry them).
fn clean(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), clean(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(clean).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests;
