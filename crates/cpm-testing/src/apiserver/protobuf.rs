//! Request bodies in Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`),
//! decoded into the JSON the store keeps.
//!
//! client-go's typed clients (kubectl ≥ 1.32's `create configmap`, `create secret`,
//! `auth whoami`, …) send built-in kinds as protobuf and do not retry with JSON when a server
//! answers 415 (they do so only for CBOR), so a server that wants to serve them must read it.
//! The body is the `k8s\0` magic and a `runtime.Unknown` envelope (`apiVersion`, `kind`, the
//! object's message); the object is decoded with the field numbers in
//! `schema/kubernetes-v1.33.schema` ([`schema`]). Well-known messages become their JSON forms (`Time` and
//! `MicroTime` as RFC 3339, `Quantity` and `IntOrString` as strings or numbers, `FieldsV1` as
//! JSON, `ExtraValue` as a list); empty strings and zero times, which Go writes for unset
//! fields, are left out. A kind or field number the schema does not know is refused (the caller
//! answers 415) rather than guessed.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};

use super::schema::{self, Schema, Ty};

/// The media type.
pub(crate) const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

/// One field on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32(u32),
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err("varint too long".into())
}

/// The fields of a message, in wire order.
fn fields(buf: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, String> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let (num, wire) = (key >> 3, key & 7);
        let take = |pos: &mut usize, n: usize| -> Result<&[u8], String> {
            let end = pos
                .checked_add(n)
                .filter(|e| *e <= buf.len())
                .ok_or("truncated field")?;
            let s = &buf[*pos..end];
            *pos = end;
            Ok(s)
        };
        let value = match wire {
            0 => Wire::Varint(varint(buf, &mut pos)?),
            1 => {
                let b = take(&mut pos, 8)?;
                Wire::Fixed64(u64::from_le_bytes(b.try_into().map_err(|_| "fixed64")?))
            }
            2 => {
                let n = usize::try_from(varint(buf, &mut pos)?).map_err(|_| "length")?;
                Wire::Len(take(&mut pos, n)?)
            }
            5 => {
                let b = take(&mut pos, 4)?;
                Wire::Fixed32(u32::from_le_bytes(b.try_into().map_err(|_| "fixed32")?))
            }
            other => return Err(format!("unsupported wire type {other}")),
        };
        out.push((num, value));
    }
    Ok(out)
}

fn text(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string is not UTF-8".to_string())
}

/// The scalar values of one occurrence (several when a repeated scalar is packed).
fn scalars(ty: &Ty, w: Wire<'_>) -> Result<Vec<Value>, String> {
    #[allow(clippy::cast_possible_wrap, clippy::cast_possible_truncation)]
    let int = |v: u64, ty: &Ty| match ty {
        Ty::Int32 => json!(v as i64 as i32),
        Ty::Int64 => json!(v as i64),
        _ => json!(v != 0),
    };
    match (ty, w) {
        (Ty::String, Wire::Len(b)) => Ok(vec![json!(text(b)?)]),
        (Ty::Bytes, Wire::Len(b)) => Ok(vec![json!(B64.encode(b))]),
        (Ty::Bool | Ty::Int32 | Ty::Int64, Wire::Varint(v)) => Ok(vec![int(v, ty)]),
        (Ty::Bool | Ty::Int32 | Ty::Int64, Wire::Len(b)) => {
            let mut pos = 0;
            let mut out = Vec::new();
            while pos < b.len() {
                out.push(int(varint(b, &mut pos)?, ty));
            }
            Ok(out)
        }
        _ => Err(format!("wire type does not match {ty:?}")),
    }
}

fn rfc3339(seconds: i64, nanos: i64, micros: bool) -> Result<Value, String> {
    if seconds == 0 && nanos == 0 {
        return Ok(Value::Null);
    }
    let t = time::OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(|e| e.to_string())?
        .replace_nanosecond(u32::try_from(nanos).unwrap_or(0))
        .map_err(|e| e.to_string())?;
    let date = t
        .format(&time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]"
        ))
        .map_err(|e| e.to_string())?;
    Ok(if micros {
        json!(format!("{date}.{:06}Z", t.microsecond()))
    } else {
        json!(format!("{date}Z"))
    })
}

/// A Go `time.Duration` as Go prints it (`1h2m3s`, `1.5s`, `0s`).
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let (h, rest) = (n / 3_600_000_000_000, n % 3_600_000_000_000);
    let (m, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let (s, frac) = (rest / 1_000_000_000, rest % 1_000_000_000);
    let secs = if frac == 0 {
        format!("{s}s")
    } else {
        format!("{s}.{}s", format!("{frac:09}").trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => format!("{sign}{secs}"),
        (0, _) => format!("{sign}{m}m{secs}"),
        _ => format!("{sign}{h}h{m}m{secs}"),
    }
}

/// A message as JSON.
fn message(schema: &Schema, name: &str, buf: &[u8]) -> Result<Value, String> {
    let defs = &schema
        .get(name)
        .ok_or_else(|| format!("message {name} is not in the schema"))?
        .by_number;
    let mut raw: HashMap<&str, Value> = HashMap::new();
    let mut obj = Map::new();
    for (num, w) in fields(buf)? {
        let f = defs
            .get(&num)
            .ok_or_else(|| format!("field {num} of {name} is not in the schema"))?;
        let values = match (&f.ty, w) {
            (Ty::Message(m), Wire::Len(b)) => vec![message(schema, m, b)?],
            (Ty::Map(k, v), Wire::Len(b)) => {
                let mut key = None;
                let mut value = None;
                for (n, w) in fields(b)? {
                    let decoded = match (n, v.as_ref(), w) {
                        (2, Ty::Message(m), Wire::Len(b)) => message(schema, m, b)?,
                        (1, _, w) => scalars(k, w)?.pop().unwrap_or(Value::Null),
                        (2, ty, w) => scalars(ty, w)?.pop().unwrap_or(Value::Null),
                        _ => return Err(format!("bad map entry in {name}.{}", f.name)),
                    };
                    if n == 1 {
                        key = Some(decoded);
                    } else {
                        value = Some(decoded);
                    }
                }
                let key = key
                    .as_ref()
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let entry = obj
                    .entry(f.name.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = entry {
                    m.insert(key, value.unwrap_or_else(|| default_of(v)));
                }
                continue;
            }
            (ty, w) => scalars(ty, w)?,
        };
        for v in values {
            if f.repeated {
                let entry = obj
                    .entry(f.name.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(a) = entry {
                    a.push(v);
                }
            } else {
                raw.insert(f.name.as_str(), v.clone());
                obj.insert(f.name.clone(), v);
            }
        }
    }
    let int = |k: &str| raw.get(k).and_then(Value::as_i64).unwrap_or(0);
    let special = match name {
        "meta.v1.Time" => Some(rfc3339(int("seconds"), int("nanos"), false)?),
        "meta.v1.MicroTime" => Some(rfc3339(int("seconds"), int("nanos"), true)?),
        "meta.v1.Duration" => Some(json!(go_duration(int("duration")))),
        "resource.Quantity" => Some(obj.remove("string").unwrap_or_else(|| json!("0"))),
        "intstr.IntOrString" => Some(if int("type") == 1 {
            obj.remove("strVal").unwrap_or_else(|| json!(""))
        } else {
            json!(int("intVal"))
        }),
        "meta.v1.FieldsV1" => {
            let raw = obj.remove("Raw");
            let bytes = raw
                .as_ref()
                .and_then(Value::as_str)
                .and_then(|b| B64.decode(b).ok())
                .unwrap_or_default();
            Some(serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({})))
        }
        "authentication.v1.ExtraValue" | "authorization.v1.ExtraValue" => {
            Some(obj.remove("items").unwrap_or_else(|| json!([])))
        }
        _ => None,
    };
    if let Some(v) = special {
        return Ok(v);
    }
    obj.retain(|_, v| !(v.is_null() || v.as_str() == Some("")));
    Ok(Value::Object(obj))
}

fn default_of(ty: &Ty) -> Value {
    match ty {
        Ty::String | Ty::Bytes => json!(""),
        Ty::Bool => json!(false),
        Ty::Int32 | Ty::Int64 => json!(0),
        Ty::Message(_) | Ty::Map(..) => json!({}),
    }
}

/// A protobuf request body as a JSON object (with `apiVersion` and `kind`).
pub(crate) fn decode(body: &[u8]) -> Result<Value, String> {
    let schema = schema::get()?;
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or("the body does not start with the k8s protobuf magic")?;
    let unknown = message(schema, "runtime.Unknown", envelope)?;
    if unknown
        .get("contentEncoding")
        .and_then(Value::as_str)
        .is_some_and(|e| !e.is_empty())
    {
        return Err("content encodings are not supported".into());
    }
    let s = |p: &str| {
        unknown
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let (api_version, kind) = (s("/typeMeta/apiVersion"), s("/typeMeta/kind"));
    let raw = B64
        .decode(s("/raw"))
        .map_err(|_| "the envelope's raw object is not bytes".to_string())?;
    let name = schema::message_name(api_version, kind)
        .ok_or_else(|| format!("apiVersion {api_version:?}"))?;
    let mut obj = message(schema, &name, &raw)?;
    if let Value::Object(m) = &mut obj {
        m.insert("apiVersion".into(), json!(api_version));
        m.insert("kind".into(), json!(kind));
    }
    Ok(obj)
}

#[cfg(test)]
mod tests;
