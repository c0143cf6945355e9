//! Integration tests of the node simulator: real runc, real network namespaces, the workspace
//! binaries (`cargo build --bins`, or a `--workspace` test run, builds them first).

mod agents;
mod common;
mod deployed;
mod image_mode;
mod jobs;
mod network;
mod pod;
mod probes;
mod rollout;
mod static_pods;
