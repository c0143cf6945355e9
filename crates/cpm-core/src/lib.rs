//! Shared mechanisms of the cpm node agents.
//!
//! Mechanisms, not policy: which certificates or manifests a node needs lives in each binary's
//! library; this crate holds what every agent does the same way.
//!
//! | module | what it holds |
//! |---|---|
//! | [`config`] | `ControlPlaneConfiguration`: strict parsing, defaults, field-path errors |
//! | [`node`] | `NodeRoot`, the path type behind `--root` |
//! | [`fileset`] | `DesiredFile` and `FileSet`: what an agent wants on disk |
//! | [`plan`] | diffs a `FileSet` against the node into a `Plan`; renders unified diffs |
//! | [`apply`] | atomic writes (temp file, fsync, rename, fsync dir), bounded backups |
//! | [`reconcile`] | the agent loop: triggers, backoff, `--once`, `--dry-run`, `--check` |
//! | [`watch`] | notify-based file triggers |
//! | [`cli`] | `CommonArgs`, flattened into each binary's CLI |
//! | [`telemetry`] | logging setup (text or JSON on stderr) |
//! | `admin` | `/metrics`, `/livez`, `/readyz` (feature `admin-http`) |
//! | `runner` | runs an agent as a one-shot or a daemon with watches and the admin server (feature `admin-http`) |
//! | [`metrics`] | the per-process registry and the standard reconcile metrics |
//! | [`exit`] | the exit-code table |
//! | [`versions`] | the built-in version map (supported minors, image tags) |
//! | [`kubeconfig`] | reading and rendering kubeconfig files |
//! | `etcd` | the etcd client over mTLS from PEM files (feature `etcd`) |
//! | `http` | a small HTTP(S) GET client for health gates (feature `http-client`) |
//! | `staticpod` | static pods as k8s-openapi objects, and their checksum annotation (feature `kube`) |
//! | `pki` | key generation, certificate issuance and inspection (feature `pki`) |
#![warn(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod apply;
pub mod backup_status;
pub mod build;
pub mod cli;
pub mod config;
pub mod exit;
pub mod fileset;
pub mod kubeconfig;
pub mod metrics;
pub mod node;
pub mod plan;
pub mod reconcile;
pub mod telemetry;
pub mod versions;
pub mod watch;
pub mod yaml;

#[cfg(feature = "admin-http")]
pub mod admin;
#[cfg(feature = "kube")]
pub mod controlplanenode;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "http-client")]
pub mod http;
#[cfg(feature = "kube")]
pub mod kube;
#[cfg(feature = "kube")]
pub mod lease;
#[cfg(feature = "pki")]
pub mod pki;
#[cfg(feature = "admin-http")]
pub mod runner;
#[cfg(feature = "kube")]
pub mod staticpod;
