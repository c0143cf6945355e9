//! Running commands with explicit argument vectors, echoing them first.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, bail};

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("invariant: xtask has a parent")
        .to_path_buf()
}

/// Runs `program args…` in the workspace root, inheriting stdio; fails on a non-zero exit.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("{program} {} failed: {status}", args.join(" "));
    }
    Ok(())
}

/// Builds the binary of `package` in release mode and returns its path (under
/// `CARGO_TARGET_DIR` when set, relative to the workspace root, else `target/`).
pub fn release_binary(package: &str) -> anyhow::Result<PathBuf> {
    run("cargo", &["build", "--locked", "--release", "-p", package])?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                workspace_root().join(p)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"));
    Ok(target.join("release").join(package))
}

/// Runs a command and captures its output (no check of the exit code).
pub fn output(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> anyhow::Result<Output> {
    let program = program.as_ref();
    Command::new(program)
        .args(args)
        .current_dir(workspace_root())
        .output()
        .with_context(|| format!("cannot run {}", program.to_string_lossy()))
}

/// Whether `program` is on PATH.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}
