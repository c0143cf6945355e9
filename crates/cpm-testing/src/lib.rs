//! Dev-only test helpers shared by every crate's tests: temporary node roots ([`root`]), a
//! real-etcd process harness ([`etcd`]), certificate and config fixtures made with cpm's own PKI
//! code ([`fixtures`]), a test Kubernetes API server ([`apiserver`]), the processes of a
//! simulated control plane built on it (`cpm-test-apiserver`, [`control_plane`]), an HTTPS probe
//! that reports the served certificate ([`https`]), and idle checks for daemons ([`idle`]).
//!
//! Never a normal dependency of a shipped crate.
#![allow(clippy::missing_panics_doc)]

pub mod apiserver;
pub mod control_plane;
pub mod etcd;
pub mod fixtures;
pub mod https;
pub mod idle;
pub mod openssl;
pub mod process;
pub mod root;
