//! A container's root filesystem and the files the runtime adds (`/etc/hosts`,
//! `/etc/hostname`, `/etc/resolv.conf`, the termination-message file).
//!
//! Process mode: an empty directory per container in which the host's `/usr` entries (all
//! but `local`) are bind-mounted read-only, the merged-`/usr` links (`/bin`, `/lib`, `/lib64`,
//! `/sbin`) are recreated as links (or bind-mounted where the host has directories), and the
//! executable standing for the image's binary is bind-mounted read-only at the image's path
//! (`/usr/local/bin/<bin>`). `/etc/passwd` and `/etc/group` (root, nonroot 65532), `/root`,
//! `/home/nonroot` and a sticky `/tmp` are laid out as `cargo xtask images` lays them out, so
//! the rest of the filesystem looks like the image's.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use crate::oci::{Mount, MountKind};

fn io(what: &str, path: &Path, e: &std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

fn mirror_entry(
    host: &Path,
    inside: &Path,
    dest: String,
    mounts: &mut Vec<Mount>,
) -> Result<(), String> {
    let Ok(meta) = std::fs::symlink_metadata(host) else {
        return Ok(());
    };
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(host).map_err(|e| io("read link", host, &e))?;
        std::os::unix::fs::symlink(&target, inside).map_err(|e| io("link", inside, &e))?;
    } else if meta.is_dir() {
        std::fs::create_dir_all(inside).map_err(|e| io("create", inside, &e))?;
        mounts.push(Mount {
            destination: dest,
            kind: MountKind::Bind(host.to_path_buf()),
            readonly: true,
        });
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io("create", parent, &e))?;
    }
    cpm_core::apply::write_atomic(path, bytes, mode, None, None).map_err(|e| io("write", path, &e))
}

fn dir(path: &Path, mode: u32, owner: Option<u32>) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| io("create", path, &e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io("chmod", path, &e))?;
    if let Some(id) = owner {
        std::os::unix::fs::chown(path, Some(id), Some(id)).map_err(|e| io("chown", path, &e))?;
    }
    Ok(())
}

/// Lays out a process-mode root filesystem in `rootfs` with `executable` at `binary_path`;
/// returns the mounts that complete it.
pub fn process_rootfs(
    rootfs: &Path,
    executable: Option<(&Path, &str)>,
) -> Result<Vec<Mount>, String> {
    let mut mounts = Vec::new();
    dir(rootfs, 0o755, None)?;
    for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        mirror_entry(
            &Path::new("/").join(top),
            &rootfs.join(top),
            format!("/{top}"),
            &mut mounts,
        )?;
    }
    dir(&rootfs.join("usr"), 0o755, None)?;
    let usr = std::fs::read_dir("/usr").map_err(|e| io("read", Path::new("/usr"), &e))?;
    let mut names: Vec<String> = usr
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names.iter().filter(|n| *n != "local") {
        mirror_entry(
            &Path::new("/usr").join(name),
            &rootfs.join("usr").join(name),
            format!("/usr/{name}"),
            &mut mounts,
        )?;
    }
    dir(&rootfs.join("usr/local/bin"), 0o755, None)?;
    if let Some((exe, at)) = executable {
        let inside = rootfs.join(at.trim_start_matches('/'));
        write(&inside, b"", 0o755)?;
        mounts.push(Mount {
            destination: at.to_string(),
            kind: MountKind::Bind(exe.to_path_buf()),
            readonly: true,
        });
    }
    write(&rootfs.join("etc/passwd"), b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n", 0o644)?;
    write(
        &rootfs.join("etc/group"),
        b"root:x:0:\nnonroot:x:65532:\n",
        0o644,
    )?;
    dir(&rootfs.join("root"), 0o700, None)?;
    dir(&rootfs.join("home/nonroot"), 0o700, Some(65532))?;
    dir(&rootfs.join("tmp"), 0o1777, None)?;
    Ok(mounts)
}

/// The runtime's files for a container, written under `dir`, and their mounts: `/etc/hosts`
/// (localhost and the host name), `/etc/hostname`, an empty `/etc/resolv.conf` (no DNS), and
/// the termination-message file at `termination_path`.
pub fn runtime_files(
    dir: &Path,
    hostname: &str,
    ip: &str,
    termination_path: &str,
) -> Result<Vec<Mount>, String> {
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{hostname}\n"
    );
    let files: [(&str, String, &str); 4] = [
        ("hosts", hosts, "/etc/hosts"),
        ("hostname", format!("{hostname}\n"), "/etc/hostname"),
        ("resolv.conf", String::new(), "/etc/resolv.conf"),
        ("termination-log", String::new(), termination_path),
    ];
    let mut mounts = Vec::new();
    for (name, text, dest) in files {
        let path = dir.join(name);
        write(
            &path,
            text.as_bytes(),
            if name == "termination-log" {
                0o666
            } else {
                0o644
            },
        )?;
        mounts.push(Mount {
            destination: dest.to_string(),
            kind: MountKind::Bind(path),
            readonly: name != "termination-log",
        });
    }
    Ok(mounts)
}
