//! `cargo xtask images`: builds every binary once (release, statically linked glibc), assembles
//! one OCI image per binary without a container daemon (scratch base, one reproducible layer),
//! writes `oci-archive` files under `target/images`, and optionally loads, pushes and tests them.

mod compile;
mod oci;
mod registry;
mod selftest;
mod spec;
mod tarball;
#[cfg(test)]
mod tests;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::json;

use crate::cmd::workspace_root;

/// The repository prefix of local image names (`cpm/cpm-certs:0.1.0`).
pub const DEFAULT_PREFIX: &str = "cpm";

/// Flags of `cargo xtask images`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only these binaries (repeatable); default: every binary of the workspace.
    #[arg(long, value_name = "BINARY")]
    pub only: Vec<String>,
    /// Where the archives and the summary go (relative to the workspace root).
    #[arg(long, default_value = "target/images")]
    pub out: PathBuf,
    /// Pipe every archive to `docker load` (needs a reachable Docker daemon).
    #[arg(long)]
    pub load: bool,
    /// Push to REGISTRY[/PREFIX] over the OCI distribution API (plain HTTP: loopback only).
    #[arg(long, value_name = "REGISTRY[/PREFIX]")]
    pub push: Option<String>,
    /// Then check the images: static, reproducible, accepted by skopeo, pushed to and copied
    /// back from a local registry, `--version` runs in each extracted root.
    #[arg(long)]
    pub test: bool,
}

/// One built image and where its archive is.
#[derive(Debug, Clone)]
pub struct Built {
    /// The image.
    pub image: oci::Image,
    /// The name it carries in its archive (`PREFIX/binary:tag`).
    pub reference: String,
    /// The archive's path.
    pub archive: PathBuf,
    /// The archive's size.
    pub archive_size: usize,
    /// The declaration it was made from.
    pub spec: spec::Spec,
}

/// Runs `cargo xtask images`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let root = workspace_root();
    let target = args
        .push
        .as_deref()
        .map(registry::Target::parse)
        .transpose()?;
    if let Some(t) = &target {
        registry::ensure_supported(t)?;
    }
    let all = compile::discover(&root)?;
    let bins = select(all.clone(), &args.only)?;
    let specs = bins
        .iter()
        .map(|b| spec::load(&root, &b.name))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Every binary in one build whatever --only says: one feature unification, so an image's
    // bytes never depend on which others were asked for (and the build is a no-op when warm).
    compile::build(&root, &all)?;
    let exes: Vec<PathBuf> = bins
        .iter()
        .map(|b| compile::exe_path(&root, &b.name))
        .collect();
    for exe in &exes {
        let desc = compile::check_static(exe)?;
        eprintln!("static: {}: {desc}", exe.display());
    }
    let source = source(&root, &bins[0])?;
    let out = root.join(&args.out);
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let prefix = target.as_ref().map_or_else(
        || DEFAULT_PREFIX.to_string(),
        |t| {
            format!("{}/{}", t.host, t.prefix)
                .trim_end_matches('/')
                .to_string()
        },
    );
    let built = parallel(bins.len(), |i| {
        build_one(&bins[i].name, &specs[i], &exes[i], &source, &prefix, &out)
    })?;
    write_summary(&out, &source, &built)?;
    print_table(&built);
    eprintln!(
        "images: {} archives in {} ({:.0?})",
        built.len(),
        out.display(),
        started.elapsed()
    );
    if args.load {
        docker_load(&built)?;
    }
    if let Some(t) = &target {
        let images: Vec<oci::Image> = built.iter().map(|b| b.image.clone()).collect();
        registry::push(t, &images)?;
    }
    if args.test {
        selftest::run(&root, &bins, &exes, &source, &built)?;
        eprintln!(
            "images --test: all checks passed ({:.0?})",
            started.elapsed()
        );
    }
    Ok(())
}

/// The binaries named by `--only` (all when empty); an unknown name is an error.
fn select(all: Vec<compile::Binary>, only: &[String]) -> anyhow::Result<Vec<compile::Binary>> {
    for name in only {
        if !all.iter().any(|b| &b.name == name) {
            let names: Vec<&str> = all.iter().map(|b| b.name.as_str()).collect();
            bail!("--only {name}: no such binary (have {})", names.join(", "));
        }
    }
    let bins: Vec<_> = all
        .into_iter()
        .filter(|b| only.is_empty() || only.contains(&b.name))
        .collect();
    if bins.is_empty() {
        bail!("no binaries found in the workspace");
    }
    Ok(bins)
}

/// Provenance: `SOURCE_DATE_EPOCH` or the last commit's time (else 0), the commit (else
/// `unknown`), the repository URL and version of the workspace.
fn source(root: &Path, any: &compile::Binary) -> anyhow::Result<oci::Source> {
    let git = Command::new("git")
        .args(["log", "-1", "--format=%ct %H"])
        .current_dir(root)
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let (commit_time, revision) = git.split_once(' ').unwrap_or(("", ""));
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) if !s.is_empty() => s
            .trim()
            .parse::<u64>()
            .with_context(|| format!("SOURCE_DATE_EPOCH={s}: not a number of seconds"))?,
        _ => commit_time.parse().unwrap_or(0),
    };
    Ok(oci::Source {
        epoch,
        revision: if revision.is_empty() {
            "unknown".into()
        } else {
            revision.into()
        },
        url: any.repository.clone(),
        version: any.version.clone(),
    })
}

/// Assembles one image and writes its archive as `out/<binary>.tar`.
fn build_one(
    binary: &str,
    spec: &spec::Spec,
    exe_path: &Path,
    source: &oci::Source,
    prefix: &str,
    out: &Path,
) -> anyhow::Result<Built> {
    let exe =
        std::fs::read(exe_path).with_context(|| format!("cannot read {}", exe_path.display()))?;
    let image = oci::assemble(oci::Input {
        binary,
        exe: &exe,
        spec,
        source,
    })?;
    let reference = format!("{prefix}/{binary}:{}", image.tag);
    let bytes = image.archive(&reference, source.epoch)?;
    let archive = out.join(format!("{binary}.tar"));
    write_file(&archive, &bytes)?;
    Ok(Built {
        image,
        reference,
        archive,
        archive_size: bytes.len(),
        spec: spec.clone(),
    })
}

/// Runs `f` for every index of `0..n` on as many threads as there are cores (gzip is the slow
/// part of assembling); results in index order, the first error wins.
pub fn parallel<T: Send>(
    n: usize,
    f: impl Fn(usize) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<Vec<T>> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let workers = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(n.max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<anyhow::Result<T>>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let r = f(i);
                    results.lock().expect("invariant: no panic while locked")[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("invariant: no panic while locked")
        .into_iter()
        .map(|r| r.expect("invariant: every index ran"))
        .collect()
}

/// Writes a file under `target/` atomically.
pub fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    cpm_core::apply::write_atomic(path, bytes, 0o644, None, None)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `out/images.json`: every image with its digests and sizes.
fn write_summary(out: &Path, source: &oci::Source, built: &[Built]) -> anyhow::Result<()> {
    let images: Vec<_> = built
        .iter()
        .map(|b| {
            json!({
                "binary": b.image.binary,
                "reference": b.reference,
                "archive": b.archive.file_name().map(|n| n.to_string_lossy().into_owned()),
                "manifestDigest": b.image.manifest.digest,
                "configDigest": b.image.config.digest,
                "layerDigest": b.image.layer.digest,
                "layerSize": b.image.layer.bytes.len(),
                "layerUncompressedSize": b.image.layer_tar_size,
                "binarySize": b.image.exe_size,
                "archiveSize": b.archive_size,
                "user": b.spec.user,
            })
        })
        .collect();
    let doc = json!({
        "version": source.version,
        "revision": source.revision,
        "created": oci::rfc3339(source.epoch)?,
        "images": images,
    });
    let mut text = serde_json::to_vec_pretty(&doc)?;
    text.push(b'\n');
    write_file(&out.join("images.json"), &text)
}

fn mib(n: usize) -> String {
    #[allow(clippy::cast_precision_loss)] // sizes far below 2^52
    let m = n as f64 / (1024.0 * 1024.0);
    format!("{m:.1} MiB")
}

/// Prints the summary table on stdout.
fn print_table(built: &[Built]) {
    println!(
        "{:<20} {:<34} {:>10} {:>10}  manifest digest",
        "binary", "reference", "binary", "layer.gz"
    );
    for b in built {
        println!(
            "{:<20} {:<34} {:>10} {:>10}  {}",
            b.image.binary,
            b.reference,
            mib(b.image.exe_size),
            mib(b.image.layer.bytes.len()),
            b.image.manifest.digest
        );
    }
}

/// Pipes every archive to `docker load`, or says clearly why it cannot.
fn docker_load(built: &[Built]) -> anyhow::Result<()> {
    let info = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    match info {
        Ok(o) if o.status.success() => {}
        Ok(o) => bail!(
            "--load: no Docker daemon reachable ({}); the archives are written, load them later \
             with `docker load -i {}`",
            String::from_utf8_lossy(&o.stderr).trim(),
            built[0].archive.display()
        ),
        Err(e) => bail!("--load: cannot run docker ({e}); the archives are written"),
    }
    for b in built {
        eprintln!("$ docker load < {}", b.archive.display());
        let file = std::fs::File::open(&b.archive)
            .with_context(|| format!("cannot open {}", b.archive.display()))?;
        let status = Command::new("docker")
            .arg("load")
            .stdin(file)
            .status()
            .context("cannot run docker load")?;
        if !status.success() {
            bail!("docker load < {} failed: {status}", b.archive.display());
        }
    }
    std::io::stderr().flush().ok();
    Ok(())
}
