//! `cargo xtask images --test`: every check that needs the real static build. Each binary has a
//! declaration (and the reverse); images are reproducible; skopeo reads the archives; each
//! extracted root runs its binary's `--version` under chroot as the image's user with no host
//! file; a local `docker-registry` takes the pushes, and `skopeo` reads them back unchanged.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use hyper::{Method, StatusCode};

use super::{Built, compile, oci, registry, spec};

/// Runs every check; `bins`, `exes` and `built` are parallel.
pub fn run(
    root: &Path,
    bins: &[compile::Binary],
    exes: &[PathBuf],
    source: &oci::Source,
    built: &[Built],
) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("images-test-")
        .tempdir_in(root.join("target"))
        .context("cannot create a temp dir under target/")?;
    step("declarations", || declarations(root))?;
    step("reproducible", || reproducible(bins, exes, source, built))?;
    step("skopeo inspect oci-archive", || inspect_archives(built))?;
    step("chroot --version", || chroot_version(tmp.path(), built))?;
    step("registry push, skopeo inspect and copy", || {
        registry_round_trip(tmp.path(), built)
    })?;
    Ok(())
}

fn step(name: &str, f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    let t = Instant::now();
    f().with_context(|| format!("images --test: {name}"))?;
    eprintln!("images --test: {name}: ok ({:.1?})", t.elapsed());
    Ok(())
}

/// Every shipped binary has `images/<binary>/image.yaml`, and every folder of `images/` is a
/// shipped binary.
fn declarations(root: &Path) -> anyhow::Result<()> {
    let bins: BTreeSet<String> = compile::discover(root)?
        .into_iter()
        .map(|b| b.name)
        .collect();
    for b in &bins {
        spec::load(root, b)?;
    }
    let dir = root.join("images");
    for e in std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let e = e?;
        if e.file_type()?.is_dir() {
            let name = e.file_name().to_string_lossy().into_owned();
            ensure!(
                bins.contains(&name),
                "images/{name}/ declares an image but the workspace has no binary {name}"
            );
        }
    }
    Ok(())
}

/// Assembling again from the same executables gives byte-identical archives and digests.
fn reproducible(
    bins: &[compile::Binary],
    exes: &[PathBuf],
    source: &oci::Source,
    built: &[Built],
) -> anyhow::Result<()> {
    super::parallel(built.len(), |i| {
        let (bin, exe, b) = (&bins[i], &exes[i], &built[i]);
        let bytes = std::fs::read(exe).with_context(|| format!("cannot read {}", exe.display()))?;
        let again = oci::assemble(oci::Input {
            binary: &bin.name,
            exe: &bytes,
            spec: &b.spec,
            source,
        })?;
        ensure!(
            again.manifest.digest == b.image.manifest.digest
                && again.layer.digest == b.image.layer.digest
                && again.config.digest == b.image.config.digest,
            "{}: a second assembly gave another digest",
            bin.name
        );
        let archive = again.archive(&b.reference, source.epoch)?;
        let on_disk = std::fs::read(&b.archive)?;
        ensure!(
            archive == on_disk,
            "{}: a second archive differs from {}",
            bin.name,
            b.archive.display()
        );
        eprintln!("  {} {} (twice)", bin.name, b.image.manifest.digest);
        Ok(())
    })?;
    Ok(())
}

/// Runs a command, fails with its stderr on a non-zero exit, returns its stdout.
fn capture(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `skopeo inspect` of each archive reports our manifest digest, labels and config.
fn inspect_archives(built: &[Built]) -> anyhow::Result<()> {
    for b in built {
        let reference = format!("oci-archive:{}", b.archive.display());
        let info: serde_json::Value = serde_json::from_str(&capture(
            Command::new("skopeo").args(["inspect", &reference]),
        )?)?;
        ensure!(
            info["Digest"] == b.image.manifest.digest.as_str(),
            "{reference}: skopeo says digest {}, expected {}",
            info["Digest"],
            b.image.manifest.digest
        );
        let labels = &info["Labels"];
        for (k, want) in [
            ("org.opencontainers.image.title", b.image.binary.as_str()),
            ("org.opencontainers.image.version", b.image.tag.as_str()),
        ] {
            ensure!(labels[k] == want, "{reference}: label {k} is {}", labels[k]);
        }
        for k in [
            "org.opencontainers.image.revision",
            "org.opencontainers.image.source",
            "org.opencontainers.image.created",
        ] {
            ensure!(labels[k].is_string(), "{reference}: label {k} missing");
        }
        let config: serde_json::Value = serde_json::from_str(&capture(
            Command::new("skopeo").args(["inspect", "--config", &reference]),
        )?)?;
        let user = format!("{0}:{0}", b.spec.user);
        ensure!(
            config["config"]["User"] == user.as_str(),
            "{reference}: User {}",
            config["config"]["User"]
        );
        let entry = format!("/{}/{}", oci::BIN_DIR, b.image.binary);
        ensure!(
            config["config"]["Entrypoint"] == serde_json::json!([entry]),
            "{reference}: Entrypoint {}",
            config["config"]["Entrypoint"]
        );
    }
    Ok(())
}

/// Unpacks each layer with the system `tar` into an empty directory and runs the binary's
/// `--version` there under `chroot`, as the image's user, with an empty environment.
fn chroot_version(tmp: &Path, built: &[Built]) -> anyhow::Result<()> {
    for b in built {
        let rootfs = tmp.join("rootfs").join(&b.image.binary);
        std::fs::create_dir_all(&rootfs)?;
        let layer = tmp.join(format!("{}.layer.tar.gz", b.image.binary));
        super::write_file(&layer, &b.image.layer.bytes)?;
        capture(
            Command::new("tar")
                .args(["-xzf"])
                .arg(&layer)
                .arg("-C")
                .arg(&rootfs)
                .arg("--numeric-owner"),
        )?;
        let listing = capture(
            Command::new("find")
                .arg(".")
                .arg("-printf")
                .arg("%P %m %U:%G\n")
                .current_dir(&rootfs),
        )?;
        let mut listing: Vec<&str> = listing.lines().filter(|l| !l.starts_with(' ')).collect();
        listing.sort_unstable();
        let bin = format!("usr/local/bin/{} 755 0:0", b.image.binary);
        for want in [
            bin.as_str(),
            "etc/passwd 644 0:0",
            "tmp 1777 0:0",
            "home/nonroot 700 65532:65532",
        ] {
            ensure!(
                listing.contains(&want),
                "{}: rootfs lacks {want:?}: {listing:?}",
                b.image.binary
            );
        }
        ensure!(
            listing.len() == oci::rootfs(&b.image.binary, &[]).len(),
            "{}: unexpected rootfs {listing:?}",
            b.image.binary
        );
        let user = format!("--userspec={0}:{0}", b.spec.user);
        let exe = format!("/{}/{}", oci::BIN_DIR, b.image.binary);
        let out = capture(
            Command::new(which("chroot")?)
                .arg(&user)
                .arg(&rootfs)
                .args([exe.as_str(), "--version"])
                .env_clear(),
        )?;
        let want = format!("{} {}", b.image.binary, b.image.tag);
        ensure!(
            out.starts_with(&want),
            "{}: chroot --version printed {out:?}",
            b.image.binary
        );
        eprintln!("  {} as {}: {}", b.image.binary, b.spec.user, out.trim());
        std::fs::remove_dir_all(&rootfs)?;
    }
    Ok(())
}

/// The full path of `program` on PATH (for commands run with an empty environment).
fn which(program: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
        .with_context(|| format!("{program} not found on PATH"))
}

/// A `docker-registry` on 127.0.0.1, killed on drop.
struct LocalRegistry {
    child: Child,
    host: String,
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn start_registry(tmp: &Path) -> anyhow::Result<LocalRegistry> {
    let port = free_port()?;
    let host = format!("127.0.0.1:{port}");
    let data = tmp.join("registry-data");
    std::fs::create_dir_all(&data)?;
    let config = tmp.join("registry.yaml");
    let text = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
        data.display()
    );
    super::write_file(&config, text.as_bytes())?;
    let log = std::fs::File::create(tmp.join("registry.log"))?;
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start docker-registry (Debian package docker-registry)")?;
    let reg = LocalRegistry { child, host };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ok = rt.block_on(registry::request(
            &reg.host,
            Method::GET,
            "/v2/",
            None,
            bytes::Bytes::new(),
        ));
        if matches!(ok, Ok(ref r) if r.status == StatusCode::OK) {
            return Ok(reg);
        }
        if Instant::now() > deadline {
            bail!(
                "docker-registry on {} not ready after 15 s (log: {})",
                reg.host,
                tmp.join("registry.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Pushes every image to a fresh local registry (twice: the second uploads nothing), then
/// `skopeo inspect` reports the same digest and `skopeo copy` into an OCI layout gives back the
/// same manifest and blobs.
fn registry_round_trip(tmp: &Path, built: &[Built]) -> anyhow::Result<()> {
    let reg = start_registry(tmp)?;
    let target = registry::Target::parse(&format!("{}/cpm-test", reg.host))?;
    let images: Vec<oci::Image> = built.iter().map(|b| b.image.clone()).collect();
    let first = registry::push(&target, &images)?;
    let second = registry::push(&target, &images)?;
    for (p, again) in first.iter().zip(&second) {
        ensure!(
            p.uploaded == 2,
            "{}: first push uploaded {} blobs",
            p.reference,
            p.uploaded
        );
        ensure!(
            again.uploaded == 0,
            "{}: second push uploaded again",
            again.reference
        );
    }
    for b in built {
        let reference = format!(
            "docker://{}",
            target.reference(&b.image.binary, &b.image.tag)
        );
        let info: serde_json::Value =
            serde_json::from_str(&capture(Command::new("skopeo").args([
                "inspect",
                "--tls-verify=false",
                &reference,
            ]))?)?;
        ensure!(
            info["Digest"] == b.image.manifest.digest.as_str(),
            "{reference}: skopeo says {}, pushed {}",
            info["Digest"],
            b.image.manifest.digest
        );
        let layout = tmp.join("copy").join(&b.image.binary);
        std::fs::create_dir_all(&layout)?;
        let dest = format!("oci:{}:{}", layout.display(), b.image.tag);
        capture(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &reference,
            &dest,
        ]))?;
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
        ensure!(
            index["manifests"][0]["digest"] == b.image.manifest.digest.as_str(),
            "{dest}: copied back as {}",
            index["manifests"][0]["digest"]
        );
        for blob in [&b.image.layer, &b.image.config, &b.image.manifest] {
            let p = layout.join("blobs/sha256").join(blob.hex());
            let got = std::fs::read(&p).with_context(|| format!("{dest}: {}", p.display()))?;
            ensure!(
                oci::sha256(&got) == blob.digest,
                "{}: digest differs",
                p.display()
            );
        }
        eprintln!("  {reference} -> {dest}: {}", b.image.manifest.digest);
    }
    Ok(())
}
