//! The controllers the simulator plays, because the control plane's kube-controller-manager
//! is only a stand-in: DaemonSet ([`daemonset`]), CronJob and Job ([`cronjob`]), ServiceAccount
//! tokens and the `kube-root-ca.crt` ConfigMaps ([`tokens`]), and the `default/kubernetes`
//! endpoints the apiserver would publish ([`endpoints`]). Each is a small loop over the API;
//! the decisions are pure functions with unit tests.

pub mod cronjob;
pub mod daemonset;
pub mod endpoints;
pub mod tokens;

use std::time::Duration;

/// How often the controllers' loops look at the API.
pub const RESYNC: Duration = Duration::from_millis(1000);

/// Five random lowercase alphanumerics, as `generateName` suffixes are.
pub fn suffix() -> String {
    use rand::Rng as _;
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}
