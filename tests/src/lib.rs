//! Harness of the cross-binary suite: locating the workspace's binaries and running them.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The path of a workspace binary built next to this test (`target/<profile>/<name>`).
/// `cargo test --workspace` and `cargo nextest run --workspace` build every binary first.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("invariant: test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("invariant: target/<profile>/deps");
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} is not built: run the suite with --workspace",
        bin.display()
    );
    bin
}

/// Runs a workspace binary with `args`.
pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(binary(name))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .env_remove("RUST_LOG")
        .output()
        .expect("invariant: spawn")
}
