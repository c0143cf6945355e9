//! A container as an OCI runtime `config.json` for runc: the resolved command line and
//! environment, the mounts, the namespaces and the security context.
//!
//! Security context mapping (pod-level values apply unless the container sets its own):
//! `runAsUser`/`runAsGroup` (else the image's `User`) → `process.user`; `supplementalGroups`
//! and `fsGroup` → `additionalGids`; `runAsNonRoot` refuses a uid 0; `readOnlyRootFilesystem` →
//! `root.readonly`; `allowPrivilegeEscalation: false` → `noNewPrivileges` (also implied when
//! unset and not privileged, as containerd does); `capabilities` start from containerd's
//! default set, then `drop` (`ALL` empties it) and `add`; `privileged` gives every capability
//! and drops the masked paths. The bounding, effective and permitted sets are the result; the
//! kernel clears the effective set for a non-root uid at exec, as it does in a cluster.
//! Not modelled: seccomp profiles (RuntimeDefault is not loaded), AppArmor/SELinux, cgroup
//! limits (`resources`), `procMount`, sysctls.

use std::collections::BTreeSet;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::{Value, json};

/// containerd's default capabilities for a container that is not privileged.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability Linux 5.9+ knows (a privileged container gets them all).
pub const ALL_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The process identity and privileges of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Security {
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
    /// Supplementary groups (`supplementalGroups`, `fsGroup`).
    pub additional_gids: Vec<u32>,
    /// The capability set (bounding = effective = permitted).
    pub capabilities: Vec<String>,
    /// `noNewPrivileges`.
    pub no_new_privileges: bool,
    /// A read-only root filesystem.
    pub readonly_root: bool,
    /// Privileged: every capability, no masked or read-only paths.
    pub privileged: bool,
}

fn cap_name(c: &str) -> String {
    let upper = c.to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// The security of `container` in `pod`, with the image's user as the fallback. `Err` is the
/// `CreateContainerConfigError` message.
pub fn security(
    pod: &PodSpec,
    container: &Container,
    image_user: (u32, u32),
) -> Result<Security, String> {
    let psc = pod.security_context.clone().unwrap_or_default();
    let csc = container.security_context.clone().unwrap_or_default();
    let uid = csc
        .run_as_user
        .or(psc.run_as_user)
        .map_or(Ok(image_user.0), u32::try_from);
    let gid = csc
        .run_as_group
        .or(psc.run_as_group)
        .map_or(Ok(image_user.1), u32::try_from);
    let (Ok(uid), Ok(gid)) = (uid, gid) else {
        return Err("runAsUser and runAsGroup must be non-negative".into());
    };
    if csc.run_as_non_root.or(psc.run_as_non_root) == Some(true) && uid == 0 {
        return Err("container has runAsNonRoot and image will run as root".into());
    }
    let privileged = csc.privileged == Some(true);
    let mut caps: BTreeSet<String> = if privileged {
        ALL_CAPABILITIES.iter().map(ToString::to_string).collect()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    if !privileged && let Some(c) = &csc.capabilities {
        for d in c.drop.iter().flatten() {
            if d.eq_ignore_ascii_case("ALL") {
                caps.clear();
            } else {
                caps.remove(&cap_name(d));
            }
        }
        for a in c.add.iter().flatten() {
            if a.eq_ignore_ascii_case("ALL") {
                caps.extend(ALL_CAPABILITIES.iter().map(ToString::to_string));
            } else {
                caps.insert(cap_name(a));
            }
        }
    }
    let mut additional_gids: Vec<u32> = psc
        .supplemental_groups
        .iter()
        .flatten()
        .chain(psc.fs_group.iter())
        .filter_map(|g| u32::try_from(*g).ok())
        .collect();
    additional_gids.sort_unstable();
    additional_gids.dedup();
    Ok(Security {
        uid,
        gid,
        additional_gids,
        capabilities: caps.into_iter().collect(),
        no_new_privileges: !privileged && csc.allow_privilege_escalation != Some(true),
        readonly_root: csc.read_only_root_filesystem == Some(true),
        privileged,
    })
}

/// How a mount is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// A bind mount of `source`.
    Bind(PathBuf),
    /// A fresh tmpfs.
    Tmpfs,
}

/// One mount of the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The path inside the container.
    pub destination: String,
    /// What is mounted.
    pub kind: MountKind,
    /// Read-only.
    pub readonly: bool,
}

/// Everything `config.json` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// argv.
    pub args: Vec<String>,
    /// `K=V`.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// Identity and privileges.
    pub security: Security,
    /// The root filesystem directory.
    pub rootfs: PathBuf,
    /// Volume and runtime mounts, in order.
    pub mounts: Vec<Mount>,
    /// The network namespace to join.
    pub netns: PathBuf,
    /// The UTS hostname.
    pub hostname: String,
    /// The cgroup path (no limits are set).
    pub cgroups_path: String,
}

const MASKED_PATHS: [&str; 9] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
];
const READONLY_PATHS: [&str; 6] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/proc/scsi",
];

fn runtime_mounts(privileged: bool) -> Vec<Value> {
    let sys_opts = if privileged {
        json!(["nosuid", "noexec", "nodev"])
    } else {
        json!(["nosuid", "noexec", "nodev", "ro"])
    };
    vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_opts}),
    ]
}

/// The OCI runtime config of `bundle`.
pub fn config_json(bundle: &Bundle) -> Value {
    let s = &bundle.security;
    let mut mounts = runtime_mounts(s.privileged);
    for m in &bundle.mounts {
        let ro = if m.readonly { "ro" } else { "rw" };
        mounts.push(match &m.kind {
            MountKind::Bind(source) => json!({
                "destination": m.destination,
                "type": "bind",
                "source": source,
                "options": ["rbind", "rprivate", ro],
            }),
            MountKind::Tmpfs => json!({
                "destination": m.destination,
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777", ro],
            }),
        });
    }
    let caps = &s.capabilities;
    let mut linux = json!({
        "namespaces": [
            {"type": "pid"},
            {"type": "ipc"},
            {"type": "uts"},
            {"type": "mount"},
            {"type": "network", "path": bundle.netns},
        ],
        "cgroupsPath": bundle.cgroups_path,
        "resources": {"devices": [{"allow": false, "access": "rwm"}]},
    });
    if !s.privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": s.uid, "gid": s.gid, "additionalGids": s.additional_gids},
            "args": bundle.args,
            "env": bundle.env,
            "cwd": bundle.cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": s.no_new_privileges,
        },
        "root": {"path": bundle.rootfs, "readonly": s.readonly_root},
        "hostname": bundle.hostname,
        "mounts": mounts,
        "linux": linux,
    })
}

#[cfg(test)]
mod tests;
