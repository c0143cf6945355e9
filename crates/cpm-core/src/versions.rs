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

#[cfg(test)]
mod tests;
