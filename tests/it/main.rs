//! The cross-binary suite, one test binary: repository-wide rules (tidy), the deployed objects
//! of `manifests/` run as the kubelet would run them, the control-plane static pods cpm renders
//! run by the test API server's processes, and end-to-end scenarios across binaries as they
//! arrive.

mod backup_cronjob;
mod control_plane;
mod node;
mod proxy;
mod tidy;
