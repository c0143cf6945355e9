//! Finding the binaries (`cargo metadata`), building them once as static release executables,
//! and proving they are static (`file`, `ldd`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The only target this toolchain has; glibc, linked statically with `+crt-static`.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Packages that have binaries but ship no image.
const NOT_SHIPPED: [&str; 4] = ["xtask", "cpm-testing", "cpm-sim", "cpm-tests"];

/// A binary of the workspace that ships as an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binary {
    /// The binary (and image) name.
    pub name: String,
    /// Its package.
    pub package: String,
    /// The package version (the workspace version).
    pub version: String,
    /// The package's repository URL, for the `source` label.
    pub repository: String,
}

/// Every shipped binary, sorted by name, from `cargo metadata --no-deps`.
pub fn discover(root: &Path) -> anyhow::Result<Vec<Binary>> {
    let out = Command::new(cargo())
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("cargo metadata: invalid JSON")?;
    binaries_of(&meta)
}

/// The shipped binaries named in a `cargo metadata` document.
pub fn binaries_of(meta: &serde_json::Value) -> anyhow::Result<Vec<Binary>> {
    let packages = meta["packages"]
        .as_array()
        .context("cargo metadata: no packages")?;
    let mut bins = Vec::new();
    for p in packages {
        let package = p["name"].as_str().context("cargo metadata: package name")?;
        if NOT_SHIPPED.contains(&package) {
            continue;
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            let is_bin = t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"));
            if is_bin {
                bins.push(Binary {
                    name: t["name"]
                        .as_str()
                        .context("cargo metadata: target name")?
                        .into(),
                    package: package.into(),
                    version: p["version"].as_str().unwrap_or("0.0.0").into(),
                    repository: p["repository"].as_str().unwrap_or("").into(),
                });
            }
        }
    }
    bins.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(bins)
}

/// The cargo that runs xtask (so the same toolchain builds the images).
fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// The directory the static build uses, apart from every other build so neither invalidates
/// the other (its RUSTFLAGS differ).
pub fn target_dir(root: &Path) -> PathBuf {
    root.join("target").join("images-build")
}

/// Builds `bins` in one `cargo build --release` with `+crt-static` for the explicit target (so
/// build scripts and proc-macros stay dynamic host programs), and returns each executable's path.
pub fn build(root: &Path, bins: &[Binary]) -> anyhow::Result<Vec<PathBuf>> {
    let dir = target_dir(root);
    // Unit separators: CARGO_ENCODED_RUSTFLAGS takes precedence over any RUSTFLAGS around.
    let rustflags = [
        "-C",
        "target-feature=+crt-static",
        &format!("--remap-path-prefix={}=/cpm", root.display()),
    ]
    .join("\u{1f}");
    // Symbols stripped too (about 20% smaller; panics still name file and line).
    let mut args: Vec<String> = [
        "build",
        "--release",
        "--locked",
        "--target",
        TARGET,
        "--config",
        "profile.release.strip=\"symbols\"",
    ]
    .map(String::from)
    .to_vec();
    let mut packages: Vec<&str> = bins.iter().map(|b| b.package.as_str()).collect();
    packages.dedup();
    for p in packages {
        args.extend(["-p".into(), p.into()]);
    }
    args.push("--bins".into());
    eprintln!(
        "$ CARGO_TARGET_DIR={} CARGO_ENCODED_RUSTFLAGS='{}' cargo {}",
        dir.display(),
        rustflags.replace('\u{1f}', " "),
        args.join(" ")
    );
    let status = Command::new(cargo())
        .args(&args)
        .env("CARGO_TARGET_DIR", &dir)
        .env("CARGO_ENCODED_RUSTFLAGS", &rustflags)
        .current_dir(root)
        .status()
        .context("cannot run cargo build")?;
    if !status.success() {
        bail!("static release build failed: {status}");
    }
    Ok(bins.iter().map(|b| exe_path(root, &b.name)).collect())
}

/// Where the static build puts `binary`.
pub fn exe_path(root: &Path, binary: &str) -> PathBuf {
    target_dir(root).join(TARGET).join("release").join(binary)
}

/// Fails unless `file` calls `exe` statically linked and `ldd` finds nothing to load; returns
/// `file`'s description.
pub fn check_static(exe: &Path) -> anyhow::Result<String> {
    let file = Command::new("file")
        .arg("-b")
        .arg(exe)
        .output()
        .context("cannot run file (Debian package file)")?;
    let desc = String::from_utf8_lossy(&file.stdout).trim().to_string();
    if !(desc.contains("statically linked") || desc.contains("static-pie linked")) {
        bail!("{}: not static: file says {desc}", exe.display());
    }
    let ldd = Command::new("ldd")
        .arg(exe)
        .output()
        .context("cannot run ldd")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    let said = said.trim();
    if said != "not a dynamic executable" && said != "statically linked" {
        bail!("{}: not static: ldd says {said}", exe.display());
    }
    Ok(desc)
}
