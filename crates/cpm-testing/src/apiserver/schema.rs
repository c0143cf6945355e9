//! The shapes of the built-in kinds, read once from `schema/kubernetes-v1.33.schema`: for each
//! message its fields' protobuf numbers, JSON names, types and patch strategies. The protobuf
//! decoder and strategic merge patches use them.

use std::collections::HashMap;
use std::sync::OnceLock;

/// A field's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ty {
    String,
    Bytes,
    Bool,
    Int32,
    Int64,
    Message(String),
    Map(Box<Ty>, Box<Ty>),
}

/// How a strategic merge patch treats a field (its `patchStrategy` and `patchMergeKey`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Strategy {
    /// Lists are merged (by `key` for lists of objects, as sets for lists of scalars) instead of
    /// replaced.
    pub(crate) merge: bool,
    /// Fields of the object that the patch leaves out are cleared (`retainKeys`).
    pub(crate) retain_keys: bool,
    /// The merge key of a list of objects.
    pub(crate) key: Option<String>,
}

/// One field of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field {
    pub(crate) name: String,
    pub(crate) ty: Ty,
    pub(crate) repeated: bool,
    pub(crate) strategy: Strategy,
}

/// A message: its fields by number.
#[derive(Debug, Default)]
pub(crate) struct Message {
    pub(crate) by_number: HashMap<u64, Field>,
    by_name: HashMap<String, u64>,
}

impl Message {
    /// The field with this JSON name.
    pub(crate) fn field(&self, json_name: &str) -> Option<&Field> {
        self.by_name
            .get(json_name)
            .and_then(|n| self.by_number.get(n))
    }
}

/// Every message, by schema name (`core.v1.ConfigMap`).
pub(crate) type Schema = HashMap<String, Message>;

fn parse_ty(s: &str) -> Result<Ty, String> {
    Ok(match s {
        "string" => Ty::String,
        "bytes" => Ty::Bytes,
        "bool" => Ty::Bool,
        "int32" => Ty::Int32,
        "int64" => Ty::Int64,
        _ if s.starts_with("map<") => {
            let inner = s
                .strip_prefix("map<")
                .and_then(|r| r.strip_suffix('>'))
                .ok_or_else(|| format!("bad map type {s}"))?;
            let (k, v) = inner
                .split_once(',')
                .ok_or_else(|| format!("bad map type {s}"))?;
            Ty::Map(Box::new(parse_ty(k)?), Box::new(parse_ty(v)?))
        }
        _ if s.contains('.') => Ty::Message(s.to_string()),
        _ => return Err(format!("unknown type {s}")),
    })
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    let (kinds, key) = match s.split_once('@') {
        Some((k, key)) => (k, Some(key.to_string())),
        None => (s, None),
    };
    let mut strategy = Strategy {
        key,
        ..Strategy::default()
    };
    for k in kinds.split('+') {
        match k {
            "merge" => strategy.merge = true,
            "retainKeys" => strategy.retain_keys = true,
            "replace" => {}
            other => return Err(format!("unknown patch strategy {other}")),
        }
    }
    Ok(strategy)
}

pub(crate) fn parse(text: &str) -> Result<Schema, String> {
    let mut schema = Schema::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let mut parts = line.split(' ');
        let name = parts.next().unwrap_or_default().to_string();
        let mut msg = Message::default();
        for f in parts {
            let mut it = f.splitn(4, ':');
            let (Some(num), Some(fname), Some(ty)) = (it.next(), it.next(), it.next()) else {
                return Err(format!("bad field {f} in {name}"));
            };
            let num: u64 = num.parse().map_err(|_| format!("bad number in {f}"))?;
            let (repeated, ty) = match ty.strip_prefix('*') {
                Some(t) => (true, t),
                None => (false, ty),
            };
            let strategy = it
                .next()
                .map(parse_strategy)
                .transpose()?
                .unwrap_or_default();
            msg.by_name.insert(fname.to_string(), num);
            msg.by_number.insert(
                num,
                Field {
                    name: fname.to_string(),
                    ty: parse_ty(ty)?,
                    repeated,
                    strategy,
                },
            );
        }
        schema.insert(name, msg);
    }
    Ok(schema)
}

/// The schema (parsed on first use).
pub(crate) fn get() -> Result<&'static Schema, String> {
    static SCHEMA: OnceLock<Result<Schema, String>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| parse(include_str!("schema/kubernetes-v1.33.schema")))
        .as_ref()
        .map_err(Clone::clone)
}

/// The schema name of a kind (`apps/v1`, `Deployment` → `apps.v1.Deployment`).
pub(crate) fn message_name(api_version: &str, kind: &str) -> Option<String> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let short = match group {
        "" => "core",
        "meta.k8s.io" => "meta",
        g => g.split('.').next()?,
    };
    Some(format!("{short}.{version}.{kind}"))
}
