//! Pod volumes as the kubelet makes them.
//!
//! - `hostPath` `H` is `<master root>/H` (the simulator's one liberty), checked and created by
//!   its `type` ([`host_path`]): `DirectoryOrCreate` makes missing directories 0755,
//!   `FileOrCreate` an empty 0644 file (its parent must exist), `Directory`, `File`, `Socket`,
//!   `CharDevice`, `BlockDevice` must exist as such, unset checks nothing.
//! - `secret`, `configMap`, `projected` (secret, configMap, serviceAccountToken, downwardAPI
//!   sources) and `downwardAPI` become a [`Payload`] (path → bytes and mode: the item's `mode`,
//!   else `defaultMode`, else 0644; `items` select and rename keys; a missing object or key is
//!   an error unless `optional`), written with the kubelet's atomic layout ([`write_payload`]):
//!   a `..<timestamp>` directory, a `..data` symlink swapped by rename, and user-visible names
//!   that are symlinks through `..data`. Rewritten only when the payload changes. With
//!   `fsGroup` the files belong to that group and are group-readable. Mounted read-only.
//! - `emptyDir` is a directory (mode 0777) of the pod; `medium: Memory` is not a tmpfs here.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMapProjection, DownwardAPIVolumeFile, HostPathVolumeSource, KeyToPath, SecretProjection,
    Volume,
};

use crate::env::{Data, Objects, PodFields};

/// File contents and mode, by path relative to the volume.
pub type Payload = BTreeMap<String, (Vec<u8>, u32)>;

/// Why a volume cannot be set up (the pod stays in `ContainerCreating`).
pub type VolumeError = String;

/// Checks and creates `<root>/<path>` by the hostPath `type`; returns the source to mount.
pub fn host_path(root: &Path, source: &HostPathVolumeSource) -> Result<PathBuf, VolumeError> {
    let on_node = root.join(source.path.trim_start_matches('/'));
    let meta = std::fs::metadata(&on_node).ok();
    let fail = |what: &str| {
        Err(format!(
            "hostPath type check failed: {} is not {what}",
            source.path
        ))
    };
    match source.type_.as_deref().unwrap_or_default() {
        "" => {}
        "DirectoryOrCreate" => match meta {
            None => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .create(&on_node)
                    .and_then(|()| {
                        std::fs::set_permissions(&on_node, std::fs::Permissions::from_mode(0o755))
                    })
                    .map_err(|e| format!("cannot create hostPath {}: {e}", source.path))?;
            }
            Some(m) if m.is_dir() => {}
            Some(_) => return fail("a directory"),
        },
        "Directory" => {
            if !meta.is_some_and(|m| m.is_dir()) {
                return fail("a directory");
            }
        }
        "FileOrCreate" => match meta {
            None => {
                cpm_core::apply::write_atomic(&on_node, b"", 0o644, None, None)
                    .map_err(|e| format!("cannot create hostPath {}: {e}", source.path))?;
            }
            Some(m) if m.is_file() => {}
            Some(_) => return fail("a file"),
        },
        "File" => {
            if !meta.is_some_and(|m| m.is_file()) {
                return fail("a file");
            }
        }
        "Socket" => {
            if !meta.is_some_and(|m| m.file_type().is_socket()) {
                return fail("a socket file");
            }
        }
        "CharDevice" => {
            if !meta.is_some_and(|m| m.file_type().is_char_device()) {
                return fail("a character device");
            }
        }
        "BlockDevice" => {
            if !meta.is_some_and(|m| m.file_type().is_block_device()) {
                return fail("a block device");
            }
        }
        other => return Err(format!("hostPath type {other:?} is not known")),
    }
    Ok(on_node)
}

fn mode_of(item_mode: Option<i32>, default_mode: u32) -> u32 {
    item_mode
        .and_then(|m| u32::try_from(m).ok())
        .map_or(default_mode, |m| m & 0o777)
}

/// The keys of one Secret or ConfigMap as files.
fn keys_payload(
    out: &mut Payload,
    kind: &str,
    name: &str,
    data: Option<&Data>,
    items: Option<&Vec<KeyToPath>>,
    optional: bool,
    default_mode: u32,
) -> Result<(), VolumeError> {
    let Some(data) = data else {
        return if optional {
            Ok(())
        } else {
            Err(format!("{kind} \"{name}\" not found"))
        };
    };
    match items {
        Some(items) => {
            for i in items {
                match data.get(&i.key) {
                    Some(bytes) => {
                        out.insert(
                            i.path.clone(),
                            (bytes.clone(), mode_of(i.mode, default_mode)),
                        );
                    }
                    None if optional => {}
                    None => {
                        return Err(format!(
                            "configured to use key {} of {kind} {name}, which does not exist",
                            i.key
                        ));
                    }
                }
            }
        }
        None => {
            for (k, bytes) in data {
                out.insert(k.clone(), (bytes.clone(), default_mode));
            }
        }
    }
    Ok(())
}

fn downward_items(
    out: &mut Payload,
    items: &[DownwardAPIVolumeFile],
    fields: &PodFields,
    default_mode: u32,
) -> Result<(), VolumeError> {
    for i in items {
        let Some(f) = &i.field_ref else {
            return Err(format!(
                "downwardAPI {}: resourceFieldRef is not modelled",
                i.path
            ));
        };
        let value = fields.field(&f.field_path).ok_or_else(|| {
            format!(
                "downwardAPI {}: fieldPath {:?} is not supported",
                i.path, f.field_path
            )
        })?;
        out.insert(
            i.path.clone(),
            (value.into_bytes(), mode_of(i.mode, default_mode)),
        );
    }
    Ok(())
}

/// Issues ServiceAccount tokens for projected volumes: (audience, expirationSeconds) → token.
pub type TokenSource<'a> = dyn FnMut(Option<&str>, i64) -> Result<String, String> + 'a;

/// The payload of a `secret`, `configMap`, `projected` or `downwardAPI` volume; `None` for
/// other kinds.
pub fn payload(
    volume: &Volume,
    objects: &Objects,
    fields: &PodFields,
    token: &mut TokenSource<'_>,
) -> Option<Result<Payload, VolumeError>> {
    let mut out = Payload::new();
    let result = if let Some(s) = &volume.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        keys_payload(
            &mut out,
            "secret",
            &name,
            objects.secrets.get(&name),
            s.items.as_ref(),
            s.optional == Some(true),
            mode_of(s.default_mode, 0o644),
        )
    } else if let Some(c) = &volume.config_map {
        keys_payload(
            &mut out,
            "configmap",
            &c.name,
            objects.config_maps.get(&c.name),
            c.items.as_ref(),
            c.optional == Some(true),
            mode_of(c.default_mode, 0o644),
        )
    } else if let Some(d) = &volume.downward_api {
        downward_items(
            &mut out,
            d.items.as_deref().unwrap_or_default(),
            fields,
            mode_of(d.default_mode, 0o644),
        )
    } else if let Some(p) = &volume.projected {
        let default_mode = mode_of(p.default_mode, 0o644);
        p.sources.iter().flatten().try_for_each(|src| {
            if let Some(SecretProjection {
                name,
                items,
                optional,
            }) = &src.secret
            {
                keys_payload(
                    &mut out,
                    "secret",
                    name,
                    objects.secrets.get(name),
                    items.as_ref(),
                    *optional == Some(true),
                    default_mode,
                )
            } else if let Some(ConfigMapProjection {
                name,
                items,
                optional,
            }) = &src.config_map
            {
                keys_payload(
                    &mut out,
                    "configmap",
                    name,
                    objects.config_maps.get(name),
                    items.as_ref(),
                    *optional == Some(true),
                    default_mode,
                )
            } else if let Some(t) = &src.service_account_token {
                let jwt = token(t.audience.as_deref(), t.expiration_seconds.unwrap_or(3600))?;
                out.insert(t.path.clone(), (jwt.into_bytes(), default_mode));
                Ok(())
            } else if let Some(d) = &src.downward_api {
                downward_items(
                    &mut out,
                    d.items.as_deref().unwrap_or_default(),
                    fields,
                    default_mode,
                )
            } else {
                Err(
                    "projected source not modelled (clusterTrustBundle, podCertificate)"
                        .to_string(),
                )
            }
        })
    } else {
        return None;
    };
    Some(result.map(|()| out))
}

/// The Secrets and ConfigMaps a volume reads (names).
pub fn referenced(volume: &Volume) -> (Vec<String>, Vec<String>) {
    let mut secrets = Vec::new();
    let mut config_maps = Vec::new();
    if let Some(s) = &volume.secret {
        secrets.extend(s.secret_name.clone());
    }
    if let Some(c) = &volume.config_map {
        config_maps.push(c.name.clone());
    }
    for src in volume
        .projected
        .iter()
        .flat_map(|p| p.sources.iter().flatten())
    {
        if let Some(s) = &src.secret {
            secrets.push(s.name.clone());
        }
        if let Some(c) = &src.config_map {
            config_maps.push(c.name.clone());
        }
    }
    (secrets, config_maps)
}

fn read_current(dir: &Path, payload: &Payload) -> Option<Payload> {
    let data = dir.join("..data");
    let mut current = Payload::new();
    for path in payload.keys() {
        let p = data.join(path);
        let bytes = std::fs::read(&p).ok()?;
        let mode = std::fs::metadata(&p).ok()?.permissions().mode() & 0o777;
        current.insert(path.clone(), (bytes, mode));
    }
    Some(current)
}

fn listed(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(dir.join(&rel)) else {
            continue;
        };
        for e in rd.flatten() {
            let r = rel.join(e.file_name());
            if e.path().is_dir() {
                stack.push(r);
            } else {
                names.push(r.display().to_string());
            }
        }
    }
    names.sort();
    names
}

fn owned_by(dir: &Path, payload: &Payload, fs_group: Option<u32>) -> bool {
    let Some(gid) = fs_group else { return true };
    payload.keys().all(|p| {
        std::fs::metadata(dir.join(p)).is_ok_and(|m| std::os::unix::fs::MetadataExt::gid(&m) == gid)
    })
}

/// Writes `payload` into volume directory `dir` with the kubelet's atomic layout; `false`
/// when it already holds exactly that payload. `fs_group` owns the files when set.
pub fn write_payload(
    dir: &Path,
    payload: &Payload,
    fs_group: Option<u32>,
) -> std::io::Result<bool> {
    std::fs::create_dir_all(dir)?;
    let effective: Payload = payload
        .iter()
        .map(|(p, (bytes, mode))| {
            let mode = if fs_group.is_some() {
                mode | 0o440
            } else {
                *mode
            };
            (p.clone(), (bytes.clone(), mode))
        })
        .collect();
    let payload = &effective;
    let data_link = dir.join("..data");
    let old_target = std::fs::read_link(&data_link).ok();
    if let Some(old) = &old_target
        && read_current(dir, payload).as_ref() == Some(payload)
        && listed(&dir.join(old)).len() == payload.len()
        && owned_by(&dir.join(old), payload, fs_group)
    {
        return Ok(false);
    }
    let now = time::OffsetDateTime::now_utc();
    let stamp = format!(
        "..{:04}_{:02}_{:02}_{:02}_{:02}_{:02}.{:09}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.nanosecond()
    );
    let ts_dir = dir.join(&stamp);
    std::fs::create_dir(&ts_dir)?;
    std::fs::set_permissions(&ts_dir, std::fs::Permissions::from_mode(0o755))?;
    let owner = fs_group.map(|gid| cpm_core::fileset::Owner { uid: 0, gid });
    for (path, (bytes, mode)) in payload {
        let file = ts_dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        cpm_core::apply::write_atomic(&file, bytes, *mode, owner, None)?;
    }
    cpm_core::apply::symlink_atomic(&data_link, Path::new(&stamp))?;
    let top: std::collections::BTreeSet<String> = payload
        .keys()
        .filter_map(|p| p.split('/').next().map(str::to_string))
        .collect();
    for name in &top {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link)?;
        }
    }
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !top.contains(&name) {
            std::fs::remove_file(e.path())?;
        }
    }
    if let Some(old) = old_target {
        std::fs::remove_dir_all(dir.join(old))?;
    }
    Ok(true)
}

/// Makes an `emptyDir` at `dir` (0777).
pub fn empty_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
}

#[cfg(test)]
mod tests;
