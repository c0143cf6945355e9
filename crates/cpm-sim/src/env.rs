//! A container's environment and command line, resolved as the kubelet and the runtime do.
//!
//! - Environment: the image's `Env`, overridden by the kubelet's list, which is the service
//!   variables of `default/kubernetes`, then `envFrom`, then `env` in order; each `value` has
//!   its `$(VAR)` references expanded against what is defined before it. `valueFrom` resolves
//!   `fieldRef` (pod fields), `secretKeyRef` and `configMapKeyRef` (with `optional`).
//! - Command line: `command` replaces the image's Entrypoint and drops its Cmd; `args` replaces
//!   Cmd; `$(VAR)` in both expands against the container's environment.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvVar};

use crate::image::ImageSpec;

/// Keys and values of one Secret or ConfigMap.
pub type Data = BTreeMap<String, Vec<u8>>;

/// The pod fields the downward API exposes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFields {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// `spec.nodeName`.
    pub node_name: String,
    /// `spec.serviceAccountName`.
    pub service_account: String,
    /// `status.hostIP`.
    pub host_ip: String,
    /// `status.podIP`.
    pub pod_ip: String,
}

impl PodFields {
    /// The value of a `fieldRef.fieldPath`, or `None` when the simulator does not know it.
    pub fn field(&self, path: &str) -> Option<String> {
        let quoted = |p: &str, prefix: &str| {
            p.strip_prefix(prefix)?
                .strip_suffix("']")
                .map(str::to_string)
        };
        Some(match path {
            "metadata.name" => self.name.clone(),
            "metadata.namespace" => self.namespace.clone(),
            "metadata.uid" => self.uid.clone(),
            "spec.nodeName" => self.node_name.clone(),
            "spec.serviceAccountName" => self.service_account.clone(),
            "status.hostIP" | "status.hostIPs" => self.host_ip.clone(),
            "status.podIP" | "status.podIPs" => self.pod_ip.clone(),
            "metadata.labels" => render_map(&self.labels),
            "metadata.annotations" => render_map(&self.annotations),
            p => {
                if let Some(k) = quoted(p, "metadata.labels['") {
                    self.labels.get(&k).cloned().unwrap_or_default()
                } else if let Some(k) = quoted(p, "metadata.annotations['") {
                    self.annotations.get(&k).cloned().unwrap_or_default()
                } else {
                    return None;
                }
            }
        })
    }
}

/// `key="value"` lines, sorted, as the downward API renders a map.
pub fn render_map(m: &BTreeMap<String, String>) -> String {
    m.iter().map(|(k, v)| format!("{k}={v:?}\n")).collect()
}

/// The Secrets and ConfigMaps of the pod's namespace a container references (absent = not
/// found).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Objects {
    /// Secrets by name.
    pub secrets: BTreeMap<String, Data>,
    /// ConfigMaps by name (`data` and `binaryData` together).
    pub config_maps: BTreeMap<String, Data>,
}

/// Kubernetes' `$(VAR)` expansion: defined variables are replaced, `$$` is a literal `$`,
/// anything else stays as written.
pub fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$$") {
            out.push('$');
            rest = t;
        } else if let Some((name, t)) = tail
            .strip_prefix("$(")
            .and_then(|t| t.split_once(')'))
            .filter(|(name, _)| env.contains_key(*name))
        {
            out.push_str(&env[name]);
            rest = t;
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Why a container's configuration cannot be made (`CreateContainerConfigError`).
pub type ConfigError = String;

fn lookup(
    kind: &str,
    objects: &BTreeMap<String, Data>,
    name: &str,
    key: &str,
    optional: bool,
    namespace: &str,
) -> Result<Option<String>, ConfigError> {
    let Some(data) = objects.get(name) else {
        return if optional {
            Ok(None)
        } else {
            Err(format!("{} \"{name}\" not found", kind.to_lowercase()))
        };
    };
    match data.get(key) {
        Some(bytes) => Ok(Some(String::from_utf8_lossy(bytes).into_owned())),
        None if optional => Ok(None),
        None => Err(format!(
            "couldn't find key {key} in {kind} {namespace}/{name}"
        )),
    }
}

fn var_value(
    v: &EnvVar,
    defined: &BTreeMap<String, String>,
    fields: &PodFields,
    objects: &Objects,
) -> Result<Option<String>, ConfigError> {
    let Some(from) = &v.value_from else {
        return Ok(Some(expand(
            v.value.as_deref().unwrap_or_default(),
            defined,
        )));
    };
    if let Some(f) = &from.field_ref {
        return fields.field(&f.field_path).map(Some).ok_or_else(|| {
            format!(
                "env {}: fieldPath {:?} is not supported",
                v.name, f.field_path
            )
        });
    }
    if let Some(s) = &from.secret_key_ref {
        return lookup(
            "Secret",
            &objects.secrets,
            &s.name,
            &s.key,
            s.optional == Some(true),
            &fields.namespace,
        );
    }
    if let Some(c) = &from.config_map_key_ref {
        return lookup(
            "ConfigMap",
            &objects.config_maps,
            &c.name,
            &c.key,
            c.optional == Some(true),
            &fields.namespace,
        );
    }
    Err(format!(
        "env {}: resourceFieldRef is not modelled by the simulator",
        v.name
    ))
}

/// The kubelet's environment list for `container` (without the image's `Env`).
pub fn kubelet_env(
    container: &Container,
    service_env: &[(String, String)],
    fields: &PodFields,
    objects: &Objects,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut env: BTreeMap<String, String> = service_env.iter().cloned().collect();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (kind, map, name, optional) = if let Some(s) = &from.secret_ref {
            (
                "Secret",
                &objects.secrets,
                s.name.as_str(),
                s.optional == Some(true),
            )
        } else if let Some(c) = &from.config_map_ref {
            (
                "ConfigMap",
                &objects.config_maps,
                c.name.as_str(),
                c.optional == Some(true),
            )
        } else {
            continue;
        };
        match map.get(name) {
            Some(data) => {
                for (k, v) in data {
                    env.insert(
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(v).into_owned(),
                    );
                }
            }
            None if optional => {}
            None => return Err(format!("{} \"{name}\" not found", kind.to_lowercase())),
        }
    }
    for v in container.env.iter().flatten() {
        if let Some(value) = var_value(v, &env, fields, objects)? {
            env.insert(v.name.clone(), value);
        }
    }
    Ok(env)
}

/// The process environment (`K=V`): the image's `Env` with the kubelet's list over it.
pub fn process_env(image_env: &[String], kubelet: &BTreeMap<String, String>) -> Vec<String> {
    let mut out: Vec<String> = image_env
        .iter()
        .filter(|kv| {
            let k = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
            !kubelet.contains_key(k)
        })
        .cloned()
        .collect();
    out.extend(kubelet.iter().map(|(k, v)| format!("{k}={v}")));
    out
}

/// The command line: `command`/`args` over the image's Entrypoint/Cmd, `$(VAR)` expanded.
pub fn command_line(
    container: &Container,
    image: &ImageSpec,
    env: &BTreeMap<String, String>,
) -> Result<Vec<String>, ConfigError> {
    let (entry, args) = match (&container.command, &container.args) {
        (Some(c), Some(a)) => (c.clone(), a.clone()),
        (Some(c), None) => (c.clone(), Vec::new()),
        (None, Some(a)) => (image.entrypoint.clone(), a.clone()),
        (None, None) => (image.entrypoint.clone(), image.cmd.clone()),
    };
    let mut argv: Vec<String> = entry.iter().chain(&args).map(|a| expand(a, env)).collect();
    if argv.is_empty() {
        return Err("no command specified".to_string());
    }
    if !image.prefix_args.is_empty() && runs_image_binary(&argv[0], image) {
        argv.splice(1..1, image.prefix_args.iter().cloned());
    }
    Ok(argv)
}

/// Whether argv\[0\] names the image's binary (its path, or its name looked up on `PATH`).
pub fn runs_image_binary(argv0: &str, image: &ImageSpec) -> bool {
    argv0 == image.binary_path || image.binary_path.rsplit('/').next() == Some(argv0)
}

/// The variables the kubelet gives every container for Service `default/kubernetes`
/// (`KUBERNETES_SERVICE_HOST`, …) with the first service IP and port 443.
pub fn kubernetes_service_env(service_ip: &str) -> Vec<(String, String)> {
    let tcp = format!("tcp://{service_ip}:443");
    [
        ("KUBERNETES_SERVICE_HOST", service_ip.to_string()),
        ("KUBERNETES_SERVICE_PORT", "443".into()),
        ("KUBERNETES_SERVICE_PORT_HTTPS", "443".into()),
        ("KUBERNETES_PORT", tcp.clone()),
        ("KUBERNETES_PORT_443_TCP", tcp),
        ("KUBERNETES_PORT_443_TCP_PROTO", "tcp".into()),
        ("KUBERNETES_PORT_443_TCP_PORT", "443".into()),
        ("KUBERNETES_PORT_443_TCP_ADDR", service_ip.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[cfg(test)]
mod tests;
