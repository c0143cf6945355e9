//! The cross-binary suite, one test binary: repository-wide rules (tidy), the deployed objects
//! of `manifests/` run as the kubelet would run them, and end-to-end scenarios across binaries
//! as they arrive.

mod backup_cronjob;
mod node;
mod proxy;
mod tidy;
