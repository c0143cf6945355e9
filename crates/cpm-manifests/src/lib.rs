//! cpm-manifests: the control-plane static pods of a master node, their config files, and the
//! kube-scheduler extenders from `KubeSchedulerWebhookConfiguration` objects.
#![warn(clippy::unwrap_used)]

pub mod checksum;
pub mod desired;
pub mod files;
pub mod flags;
pub mod layout;
pub mod pods;
pub mod scheduler;
