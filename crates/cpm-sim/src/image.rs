//! Images: what runs for an image reference, and where its files come from.
//!
//! One table ([`resolve`]) maps a reference to an [`ImageSpec`]: the executable that stands for
//! the image's binary ([`Source`]), the path the image has it at, and the image config a
//! container runtime applies (Entrypoint, Cmd, Env, User, WorkingDir).
//!
//! - `<prefix>/<bin>:<tag>` for a binary of this workspace (`prefix` is the manifests'
//!   registry, `cpm` by default) → the workspace build of `<bin>` at `/usr/local/bin/<bin>`, with
//!   the config `cargo xtask images` writes (User 65532:65532, `PATH=/usr/local/bin`).
//! - `*/etcd:*` → Debian's `/usr/bin/etcd` (3.4, whatever tag the manifest names) at
//!   `/usr/local/bin/etcd`, root, as registry.k8s.io/etcd runs.
//! - `*/kube-apiserver:*`, `*/kube-controller-manager:*`, `*/kube-scheduler:*` → not runnable
//!   yet ([`Source::NotRunnable`]): the test API server binary that will stand for them is being
//!   built separately; switching is one entry of [`CONTROL_PLANE`].
//! - Anything else is an image the simulator cannot "pull" (`ErrImagePull`).
//!
//! Two ways to build a container's root filesystem ([`RootfsMode`]): **process mode** (the
//! default) bind-mounts the host's `/usr` (minus `/usr/local`) and the merged-`/usr` links
//! read-only and the executable at the image's path; **image mode** unpacks the OCI archive
//! `target/images/<bin>.tar` that `cargo xtask images` writes ([`unpack_oci_archive`]) and
//! takes the image config from it.

use std::path::{Path, PathBuf};

use crate::error::{Result, SimError, run};

/// The binaries of this workspace that ship as images (`images/<bin>/`).
pub const WORKSPACE_IMAGES: [&str; 9] = [
    "api-proxy",
    "cpm-certs",
    "cpm-etcd",
    "cpm-holder",
    "cpm-kubeconfig",
    "cpm-manifests",
    "etcd-backup",
    "metrics-rbac-proxy",
    "proxy-reloader",
];

/// The control-plane images and what stands for each: the one table to change when the test
/// API server binary lands (`Source::Workspace("cpm-test-apiserver")`, with its mode as
/// `prefix_args` if it takes one).
pub const CONTROL_PLANE: [(&str, Source); 3] = [
    ("kube-apiserver", Source::NotRunnable(NOT_YET)),
    ("kube-controller-manager", Source::NotRunnable(NOT_YET)),
    ("kube-scheduler", Source::NotRunnable(NOT_YET)),
];

const NOT_YET: &str = "the simulator has no executable for this control-plane image yet (the cpm-test-apiserver binary is not built)";

/// What stands for an image's binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A binary this workspace builds (`<bin dir>/<name>`).
    Workspace(&'static str),
    /// An executable of this machine.
    Host(&'static str),
    /// Nothing yet; a container that runs the image's binary waits with this message.
    NotRunnable(&'static str),
}

/// The image config a runtime applies, and where the image's binary is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// The reference as written in the pod.
    pub reference: String,
    /// What stands for the image's binary (process mode).
    pub source: Source,
    /// Where the image has its binary.
    pub binary_path: String,
    /// Arguments inserted after argv\[0\] when the binary runs (a mode of a multi-call stand-in).
    pub prefix_args: Vec<String>,
    /// The workspace image archive (`target/images/<name>.tar`) for image mode, if any.
    pub archive: Option<&'static str>,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env` (`K=V`).
    pub env: Vec<String>,
    /// `User` (uid, gid).
    pub user: (u32, u32),
    /// `WorkingDir`.
    pub working_dir: String,
}

/// How containers get their root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootfsMode {
    /// Host `/usr` read-only plus the executable at the image's path.
    Process,
    /// The image unpacked from `<dir>/<bin>.tar` (`target/images`).
    Image(PathBuf),
}

const STANDARD_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Splits `registry/path/name:tag` (or `@digest`) into (repository, name).
fn split(reference: &str) -> (&str, &str) {
    let no_digest = reference.split('@').next().unwrap_or(reference);
    let no_tag = match no_digest.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => no_digest,
    };
    match no_tag.rsplit_once('/') {
        Some((prefix, name)) => (prefix, name),
        None => ("", no_tag),
    }
}

/// The image behind `reference`; `cpm_prefix` is the registry prefix of cpm's images (`cpm`).
/// `Err` is the `ErrImagePull` message.
pub fn resolve(reference: &str, cpm_prefix: &str) -> Result<ImageSpec, String> {
    let (prefix, name) = split(reference);
    let base = |source, binary_path: String| ImageSpec {
        reference: reference.to_string(),
        source,
        binary_path,
        prefix_args: Vec::new(),
        archive: None,
        entrypoint: Vec::new(),
        cmd: Vec::new(),
        env: vec![STANDARD_PATH.to_string()],
        user: (0, 0),
        working_dir: "/".to_string(),
    };
    if prefix == cpm_prefix
        && let Some(bin) = WORKSPACE_IMAGES.iter().find(|b| **b == name)
    {
        let path = format!("/usr/local/bin/{bin}");
        return Ok(ImageSpec {
            archive: Some(bin),
            entrypoint: vec![path.clone()],
            env: vec!["PATH=/usr/local/bin".to_string()],
            user: (65532, 65532),
            ..base(Source::Workspace(bin), path)
        });
    }
    if name == "etcd" {
        return Ok(base(
            Source::Host("/usr/bin/etcd"),
            "/usr/local/bin/etcd".into(),
        ));
    }
    if let Some((bin, source)) = CONTROL_PLANE.iter().find(|(n, _)| *n == name) {
        return Ok(base(source.clone(), format!("/usr/local/bin/{bin}")));
    }
    Err(format!(
        "failed to pull image {reference:?}: not in the simulator's image table (cpm images under {cpm_prefix:?}, etcd, kube-apiserver, kube-controller-manager, kube-scheduler)"
    ))
}

/// The executable on this machine that stands for `spec`'s binary in process mode.
pub fn executable(spec: &ImageSpec, bin_dir: &Path) -> Result<PathBuf, String> {
    match &spec.source {
        Source::Workspace(bin) => {
            let p = bin_dir.join(bin);
            if p.is_file() {
                Ok(p)
            } else {
                Err(format!("{} is not built (cargo build --bins)", p.display()))
            }
        }
        Source::Host(p) => {
            if Path::new(p).is_file() {
                Ok(PathBuf::from(p))
            } else {
                Err(format!("{p} is not installed (bash .ci/install-deps)"))
            }
        }
        Source::NotRunnable(why) => Err((*why).to_string()),
    }
}

/// The image config of an unpacked OCI archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`.
    pub env: Vec<String>,
    /// `User` as uid:gid.
    pub user: (u32, u32),
    /// `WorkingDir`.
    pub working_dir: String,
}

/// Reads the `User` field of an image config (`uid`, `uid:gid`; names are not resolved).
pub fn parse_user(user: &str) -> Option<(u32, u32)> {
    if user.is_empty() {
        return Some((0, 0));
    }
    match user.split_once(':') {
        Some((u, g)) => Some((u.parse().ok()?, g.parse().ok()?)),
        None => {
            let u = user.parse().ok()?;
            Some((u, u))
        }
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(SimError::io("read", path))?;
    serde_json::from_str(&text).map_err(|e| SimError::Parse {
        what: path.display().to_string(),
        message: e.to_string(),
    })
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout.join("blobs").join(digest.replace(':', "/"))
}

/// Unpacks the OCI archive `archive` (an OCI image layout in a tar) into `rootfs` (layers in
/// order, numeric owners and modes kept) and returns the image config, as a runtime would.
pub fn unpack_oci_archive(archive: &Path, work: &Path, rootfs: &Path) -> Result<ArchiveConfig> {
    let layout = work.join("layout");
    for d in [&layout, &rootfs.to_path_buf()] {
        std::fs::create_dir_all(d).map_err(SimError::io("create", d.as_path()))?;
    }
    let (a, l) = (archive.display().to_string(), layout.display().to_string());
    run(&["tar", "-xf", &a, "-C", &l])?;
    let index = read_json(&layout.join("index.json"))?;
    let what = || archive.display().to_string();
    let digest = |v: &serde_json::Value, ptr: &str| {
        v.pointer(ptr)
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| SimError::invalid(what(), format!("no {ptr}")))
    };
    let manifest = read_json(&blob(&layout, &digest(&index, "/manifests/0/digest")?))?;
    let config = read_json(&blob(&layout, &digest(&manifest, "/config/digest")?))?;
    let layers = manifest
        .get("layers")
        .and_then(serde_json::Value::as_array)
        .cloned()
        .unwrap_or_default();
    let r = rootfs.display().to_string();
    for layer in &layers {
        let b = blob(&layout, &digest(layer, "/digest")?)
            .display()
            .to_string();
        run(&["tar", "--numeric-owner", "-p", "-xzf", &b, "-C", &r])?;
    }
    let strings = |ptr: &str| -> Vec<String> {
        config
            .pointer(ptr)
            .and_then(serde_json::Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let user_text = config
        .pointer("/config/User")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    Ok(ArchiveConfig {
        entrypoint: strings("/config/Entrypoint"),
        cmd: strings("/config/Cmd"),
        env: strings("/config/Env"),
        user: parse_user(user_text).ok_or_else(|| {
            SimError::invalid(what(), format!("User {user_text:?} is not numeric"))
        })?,
        working_dir: config
            .pointer("/config/WorkingDir")
            .and_then(serde_json::Value::as_str)
            .filter(|w| !w.is_empty())
            .unwrap_or("/")
            .to_string(),
    })
}

#[cfg(test)]
mod tests;
