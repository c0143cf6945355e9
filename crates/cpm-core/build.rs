//! Records the git revision and build profile for `--version`.

use std::process::Command;

fn main() {
    let sha = std::env::var("CPM_GIT_SHA")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        });
    println!(
        "cargo:rustc-env=CPM_GIT_SHA={}",
        sha.unwrap_or_else(|| "unknown".into())
    );
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=CPM_BUILD_PROFILE={profile}");
    println!("cargo:rerun-if-env-changed=CPM_GIT_SHA");
    for p in ["../../.git/HEAD", "../../.git/refs/heads"] {
        if std::path::Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}
