//! `cargo xtask ci`: exactly what CI runs, in order, failing fast.

use crate::cmd::{self, have};

/// Crates checked one by one with their default features, so none leans on features another
/// crate unifies in. Clippy and the tests run with all features, so feature-gated code is built
/// and tested too.
const CRATES: [&str; 12] = [
    "cpm-core",
    "cpm-certs",
    "cpm-etcd",
    "cpm-kubeconfig",
    "cpm-manifests",
    "cpm-testing",
    "cpm-sim",
    "api-proxy",
    "proxy-reloader",
    "etcd-backup",
    "metrics-rbac-proxy",
    "cpm-holder",
];

pub fn run(no_install: bool) -> anyhow::Result<()> {
    if !no_install {
        cmd::run("bash", &[".ci/install-deps"])?;
    }
    cmd::run("cargo", &["fmt", "--all", "--check"])?;
    cmd::run(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    for c in CRATES {
        cmd::run("cargo", &["check", "--locked", "-p", c])?;
    }
    if have("cargo-nextest") {
        cmd::run(
            "cargo",
            &[
                "nextest",
                "run",
                "--workspace",
                "--all-features",
                "--locked",
                "--no-fail-fast",
            ],
        )?;
    } else {
        cmd::run(
            "cargo",
            &[
                "test",
                "--workspace",
                "--all-features",
                "--locked",
                "--no-fail-fast",
            ],
        )?;
    }
    cmd::run(
        "cargo",
        &["test", "--workspace", "--all-features", "--locked", "--doc"],
    )?;
    // Static release build of every binary, then the image checks (slow: minutes cold).
    cmd::run("cargo", &["xtask", "images", "--test"])?;
    // The README's main job, so a change that breaks what an operator runs first fails CI.
    cmd::run("cargo", &["xtask", "demo"])?;
    Ok(())
}
