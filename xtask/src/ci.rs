//! `cargo xtask ci`: exactly what CI runs, in order, failing fast.

use crate::cmd::{self, have};

/// Library crates checked one by one, so none leans on features another crate unifies in.
const CRATES: [&str; 3] = ["cpm-core", "cpm-certs", "cpm-testing"];

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
                "--locked",
                "--no-fail-fast",
            ],
        )?;
    } else {
        cmd::run(
            "cargo",
            &["test", "--workspace", "--locked", "--no-fail-fast"],
        )?;
    }
    cmd::run("cargo", &["test", "--workspace", "--locked", "--doc"])?;
    Ok(())
}
