//! The built-in version map: which Kubernetes minors this build supports, and the image tags of
//! the control-plane components and etcd for each.
//!
//! The map is data pinned in this build; moving to a newer patch release is a change here.
//! etcd follows kubeadm's pairing for each minor.
//!
//! ```
//! use cpm_core::versions::{lookup, SUPPORTED};
//! let v = lookup("1.33".parse().unwrap()).unwrap();
//! assert_eq!(v.kubernetes, "v1.33.5");
//! assert!(SUPPORTED.len() >= 4);
//! ```

use crate::config::KubernetesMinor;

/// The images of one Kubernetes minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    /// The minor.
    pub minor: KubernetesMinor,
    /// Tag of kube-apiserver, kube-controller-manager and kube-scheduler (`v1.33.5`).
    pub kubernetes: &'static str,
    /// Tag of the etcd image (`3.5.21-0`).
    pub etcd: &'static str,
}

const fn v(minor: u32, kubernetes: &'static str, etcd: &'static str) -> Versions {
    Versions {
        minor: KubernetesMinor { major: 1, minor },
        kubernetes,
        etcd,
    }
}

/// Every supported minor, oldest first.
pub const SUPPORTED: [Versions; 4] = [
    v(31, "v1.31.13", "3.5.15-0"),
    v(32, "v1.32.9", "3.5.16-0"),
    v(33, "v1.33.5", "3.5.21-0"),
    v(34, "v1.34.1", "3.6.4-0"),
];

/// The versions of `minor`, if this build supports it.
pub fn lookup(minor: KubernetesMinor) -> Option<&'static Versions> {
    SUPPORTED.iter().find(|v| v.minor == minor)
}

/// The supported range as text (`1.31–1.34`), for error messages and docs.
pub fn supported_range() -> String {
    format!(
        "{}–{}",
        SUPPORTED[0].minor,
        SUPPORTED[SUPPORTED.len() - 1].minor
    )
}

/// The numbers of an etcd tag (`3.6.4-0` → `[3, 6, 4, 0]`; a missing revision is 0).
fn etcd_version(tag: &str) -> Option<[u32; 4]> {
    let mut p = tag.split(['.', '-']);
    let mut out = [0; 4];
    for (i, slot) in out.iter_mut().enumerate() {
        match p.next() {
            Some(n) => *slot = n.parse().ok()?,
            None if i == 3 => {}
            None => return None,
        }
    }
    Some(out)
}

/// How etcd may move from the tag it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdMove {
    /// Only forward: etcd is never put back to an older release, as kubeadm does; a Kubernetes
    /// downgrade keeps the etcd it has.
    Forward,
    /// Undoing a failed upgrade step: back to the map's older patch release of the same minor,
    /// but never to an older minor (an older etcd minor cannot read a newer one's data without
    /// etcd's own downgrade procedure).
    UndoUpgrade,
    /// Not at all: the tag that runs stays as it is, whatever the map says (nothing may tell
    /// etcd where to go, such as an unreadable rollout record). With nothing running, the map.
    Keep,
}

/// The etcd tag to run given the version map's `mapped` tag and the `running` one.
pub fn etcd_tag<'a>(mapped: &'a str, running: Option<&'a str>, how: EtcdMove) -> &'a str {
    if let (EtcdMove::Keep, Some(r)) = (how, running) {
        return r;
    }
    let (Some(r), Some(rv), Some(mv)) = (
        running,
        running.and_then(etcd_version),
        etcd_version(mapped),
    ) else {
        return mapped;
    };
    let newer = match how {
        EtcdMove::Forward => rv > mv,
        EtcdMove::UndoUpgrade => rv[..2] > mv[..2],
        EtcdMove::Keep => true,
    };
    if newer { r } else { mapped }
}

#[cfg(test)]
mod tests;
