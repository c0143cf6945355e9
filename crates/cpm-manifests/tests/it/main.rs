//! cpm-manifests' suite: golden manifests per (version × config case) validated offline against
//! the Kubernetes OpenAPI schemas, checksums over every input, and the agent on a fake root.

mod agent;
mod cluster;
mod golden;
mod rollout;
mod scheduler;
