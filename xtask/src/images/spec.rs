//! `images/<binary>/image.yaml`: the short declarative part of each image (user, ports,
//! description, why it runs as root in the cluster); everything else is the same for all images.

use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

/// The non-root user and group every image defines (distroless' `nonroot`).
pub const NONROOT: u32 = 65532;

/// One image's declaration.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Spec {
    /// One line for the `org.opencontainers.image.description` label.
    pub description: String,
    /// The image's default user: 65532 (`nonroot`) or 0 (`root`).
    pub user: u32,
    /// TCP ports the binary listens on (the `ExposedPorts` of the config).
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Why the Kubernetes manifests override the user with root, when they do.
    #[serde(default)]
    pub root_in_cluster: Option<String>,
}

/// The spec file of `binary` under the workspace root.
pub fn path(root: &Path, binary: &str) -> std::path::PathBuf {
    root.join("images").join(binary).join("image.yaml")
}

/// Reads and validates `images/<binary>/image.yaml`.
pub fn load(root: &Path, binary: &str) -> anyhow::Result<Spec> {
    let p = path(root, binary);
    let text = std::fs::read_to_string(&p).with_context(|| {
        format!(
            "cannot read {} (every binary needs an image declaration)",
            p.display()
        )
    })?;
    parse(&text).with_context(|| format!("invalid {}", p.display()))
}

/// Parses and validates a spec.
pub fn parse(text: &str) -> anyhow::Result<Spec> {
    let spec: Spec = serde_saphyr::from_str(text)?;
    if spec.user != 0 && spec.user != NONROOT {
        bail!(
            "user {}: only 0 (root) and {NONROOT} (nonroot) exist in the image",
            spec.user
        );
    }
    if spec.description.trim().is_empty() {
        bail!("description is empty");
    }
    if spec.ports.contains(&0) {
        bail!("port 0 is not a port");
    }
    Ok(spec)
}
