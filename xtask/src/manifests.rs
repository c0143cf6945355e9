//! `cargo xtask manifests [--check] [--registry PREFIX]`: writes the Kubernetes objects that
//! deploy cpm under `manifests/`, from Rust types (k8s-openapi; `serde_json::Value` only for the
//! monitoring.coreos.com kinds). The output is deterministic; `--check` compares it with the
//! committed files and fails naming every file that drifted.
//!
//! Every generated file starts with [`common::HEADER`]; a file under `manifests/` with that
//! header that the generator no longer produces is stale (removed on write, reported by
//! `--check`). Hand-written files (README.md) are left alone.

mod agents;
mod common;
mod cron;
mod monitoring;
mod rbac;
mod workloads;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::cmd::workspace_root;
pub use common::Options;
use common::{NAMESPACE, file, meta, yaml};

/// The example configuration the example Secret, the example image-holder pod and the CronJob
/// template are built from.
const EXAMPLE_CONFIG: &str = "docs/examples/control-plane.yaml";

/// The CustomResourceDefinitions cpm serves. The `ControlPlaneNode` CRD (cpm.dev/v1alpha1,
/// cluster-scoped) is added here once its type exists.
fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        cpm_manifests::scheduler::KubeSchedulerWebhookConfiguration::crd(),
        // Plain JSON built from the same constants the agents use: it always deserialises.
        serde_json::from_value(cpm_core::controlplanenode::crd())
            .expect("invariant: the ControlPlaneNode CRD is a valid CustomResourceDefinition"),
    ]
}

/// The generated files: path relative to `manifests/`, and content.
pub fn render(opts: &Options) -> anyhow::Result<BTreeMap<String, String>> {
    let root = workspace_root();
    let example_path = root.join(EXAMPLE_CONFIG);
    let example = std::fs::read_to_string(&example_path)
        .with_context(|| format!("cannot read {}", example_path.display()))?;
    let config = cpm_core::config::ControlPlaneConfiguration::parse(&example, &example_path)
        .with_context(|| format!("{EXAMPLE_CONFIG} is not a valid configuration"))?;

    let mut out = BTreeMap::new();
    let ns = Namespace {
        metadata: meta(NAMESPACE, None, "cpm"),
        ..Default::default()
    };
    out.insert(
        "namespace.yaml".to_string(),
        file("The namespace of cpm's workloads.", &[yaml(&ns)?]),
    );
    for crd in crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        out.insert(
            format!("crds/{name}.yaml"),
            file("A cpm CustomResourceDefinition.", &[yaml(&crd)?]),
        );
    }
    out.insert("rbac/cpm-agents.yaml".to_string(), rbac::agents()?);
    out.insert(
        "rbac/proxy-reloader.yaml".to_string(),
        rbac::proxy_reloader()?,
    );
    out.insert(
        "rbac/metrics-rbac-proxy.yaml".to_string(),
        rbac::metrics_proxy()?,
    );
    out.insert("rbac/prometheus.yaml".to_string(), rbac::prometheus()?);
    out.insert("cpm-agents.yaml".to_string(), agents::render(opts)?);
    out.insert(
        "examples/image-holder-pod.yaml".to_string(),
        agents::render_holder_example(opts, &config.image_repository, config.kubernetes_version)?,
    );
    out.insert(
        "control-plane-proxy.yaml".to_string(),
        workloads::render_proxy(opts)?,
    );
    out.insert(
        "static-pods/kubernetes-api-proxy.yaml".to_string(),
        workloads::render_api_proxy(opts)?,
    );
    out.insert(
        "etcd-backup/cronjob-template.yaml".to_string(),
        workloads::render_backup(opts, &config.etcd.backup)?,
    );
    let secret = Secret {
        metadata: meta("cpm-config", Some(NAMESPACE), "cpm"),
        type_: Some("Opaque".to_string()),
        string_data: Some(BTreeMap::from([("config.yaml".to_string(), example)])),
        ..Default::default()
    };
    out.insert(
        "examples/cpm-config-secret.yaml".to_string(),
        file(
            "An example Secret cpm-config, built from docs/examples/control-plane.yaml. Edit the\n\
             configuration, then apply it before the agents.",
            &[yaml(&secret)?],
        ),
    );
    let rules = monitoring::rules(&config.etcd.backup.schedule)?;
    out.insert(
        "monitoring/cpm-rules.yaml".to_string(),
        monitoring::render_rule_file(&rules)?,
    );
    out.insert(
        "monitoring/prometheusrule.yaml".to_string(),
        monitoring::render_prometheus_rule(&rules)?,
    );
    out.insert(
        "monitoring/servicemonitors.yaml".to_string(),
        monitoring::render_monitors()?,
    );
    Ok(out)
}

/// Files under `dir` (recursively), relative to it, sorted.
fn existing_files(dir: &Path) -> anyhow::Result<Vec<String>> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) -> anyhow::Result<()> {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        for e in rd {
            let p = e?.path();
            if p.is_dir() {
                walk(base, &p, out)?;
            } else if let Ok(rel) = p.strip_prefix(base) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// Generated files that differ from (or are missing in) `dir`, and generated-looking files in
/// `dir` that the generator no longer produces.
pub fn drift(dir: &Path, files: &BTreeMap<String, String>) -> anyhow::Result<Vec<String>> {
    let mut drifted = Vec::new();
    for (rel, content) in files {
        match std::fs::read_to_string(dir.join(rel)) {
            Ok(old) if &old == content => {}
            Ok(_) => drifted.push(format!("{rel} differs")),
            Err(_) => drifted.push(format!("{rel} is missing")),
        }
    }
    for rel in stale(dir, files)? {
        drifted.push(format!("{rel} is no longer generated"));
    }
    Ok(drifted)
}

fn stale(dir: &Path, files: &BTreeMap<String, String>) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for rel in existing_files(dir)? {
        if files.contains_key(&rel) {
            continue;
        }
        let text = std::fs::read_to_string(dir.join(&rel)).unwrap_or_default();
        if text.starts_with(common::HEADER) {
            out.push(rel);
        }
    }
    Ok(out)
}

/// Writes the files into `dir` (only those whose bytes change) and removes stale ones.
pub fn write(dir: &Path, files: &BTreeMap<String, String>) -> anyhow::Result<usize> {
    let mut changed = 0;
    for (rel, content) in files {
        let path: PathBuf = dir.join(rel);
        if std::fs::read_to_string(&path).is_ok_and(|old| &old == content) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        cpm_core::apply::write_atomic(&path, content.as_bytes(), 0o644, None, None)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote manifests/{rel}");
        changed += 1;
    }
    for rel in stale(dir, files)? {
        let path = dir.join(&rel);
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        eprintln!("removed stale manifests/{rel}");
        changed += 1;
    }
    Ok(changed)
}

/// Runs the subcommand.
pub fn run(check: bool, registry: &str) -> anyhow::Result<()> {
    let opts = Options {
        registry: registry.trim_end_matches('/').to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let files = render(&opts)?;
    let dir = workspace_root().join("manifests");
    if check {
        let drifted = drift(&dir, &files)?;
        if !drifted.is_empty() {
            for d in &drifted {
                eprintln!("drift: manifests/{d}");
            }
            bail!(
                "{} file(s) under manifests/ differ from `cargo xtask manifests`: regenerate them",
                drifted.len()
            );
        }
        eprintln!("manifests/: {} files up to date", files.len());
        return Ok(());
    }
    let changed = write(&dir, &files)?;
    eprintln!("manifests/: {} files, {changed} changed", files.len());
    Ok(())
}
