//! cpm-certs: issues, renews and rotates the control-plane certificates of a master node.
//!
//! It installs the CA bundle (Secret `cpm-pki`) under `etc/kubernetes/pki` and keeps the seven
//! kubeadm leaf certificates valid: renewed before `renewBeforeDays`, on SAN, subject, usage or
//! key-algorithm drift, when a key is missing or does not match, and when the signing CA changed.
//! Valid certificates (an adopted kubeadm PKI included) are left byte-identical.
#![warn(clippy::unwrap_used)]

pub mod agent;
pub mod catalogue;
pub mod desired;
pub mod expiration;
pub mod init_ca;
pub mod metrics;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Parser, Subcommand};
use cpm_core::cli::{CommonArgs, DAEMON_ONLY, Honours};
use cpm_core::config::KeyAlgorithm;
use cpm_core::exit::{Code, TERMINATION_LOG, report_fatal};
use cpm_core::runner::{RunnerOptions, run_agent};
use prometheus_client::registry::Registry;
use time::OffsetDateTime;

use crate::agent::{CertsAgent, Clock};
use crate::catalogue::LEAF_FILES;
use crate::expiration::Output;

/// The admin server's default address.
pub const ADMIN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9601);

/// The cpm-certs command line.
#[derive(Debug, Parser)]
#[command(name = "cpm-certs", version = cpm_core::build::LONG_VERSION, about = "Issues, renews and rotates the control-plane certificates of a master node")]
pub struct Cli {
    /// Flags shared by all cpm binaries.
    #[command(flatten)]
    pub common: CommonArgs,
    /// What to do; without a command, reconcile the node's PKI.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// cpm-certs' commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new CA bundle (ca, front-proxy-ca, etcd-ca, sa key pair) in a directory.
    InitCa {
        /// Directory to write the bundle into.
        #[arg(long)]
        out: PathBuf,
        /// Key algorithm of the CAs and the service-account key.
        #[arg(long, default_value = "ECDSA-P256")]
        key_algorithm: KeyAlgorithm,
        /// CA validity in days.
        #[arg(long, default_value_t = cpm_core::pki::bundle::CA_VALIDITY_DAYS, value_parser = clap::value_parser!(u32).range(1..=36500))]
        validity_days: u32,
    },
    /// List every certificate on the node with its CA, expiry and residual time.
    CheckExpiration {
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Reissue one leaf certificate (kubeadm name) or `all`, now.
    Renew {
        /// `apiserver`, `apiserver-kubelet-client`, `apiserver-etcd-client`, `front-proxy-client`,
        /// `etcd-server`, `etcd-peer`, `etcd-healthcheck-client`, or `all`.
        name: String,
    },
}

impl Honours for Cli {
    // cpm-certs never talks to the Kubernetes API.
    const NEVER: &'static [&'static str] = &["kubeconfig"];

    fn unhonoured(&self) -> &'static [&'static str] {
        match self.command {
            // `--dry-run` prints the bundle's plan; nothing else of the node's flags applies.
            Some(Command::InitCa { .. }) => &[
                "root",
                "config",
                "pki_dir",
                "node_name",
                "node_ip",
                "once",
                "check",
                "admin_addr",
                "resync_seconds",
            ],
            // Reads the node's certificates under --root, writes nothing.
            Some(Command::CheckExpiration { .. }) => &[
                "config",
                "pki_dir",
                "node_name",
                "node_ip",
                "once",
                "dry_run",
                "check",
                "admin_addr",
                "resync_seconds",
            ],
            // One forced pass (`--dry-run` and `--check` apply to it).
            Some(Command::Renew { .. }) => DAEMON_ONLY,
            None => self.common.unhonoured_in_one_pass(),
        }
    }
}

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(OffsetDateTime::now_utc)
}

/// Runs the command line with the given clock; returns the exit code.
pub async fn run(cli: Cli, clock: Clock) -> Code {
    match cli.command {
        Some(Command::InitCa {
            out,
            key_algorithm,
            validity_days,
        }) => match init_ca::init_ca(
            &out,
            key_algorithm,
            clock(),
            validity_days,
            cli.common.dry_run,
        ) {
            Ok(done) if cli.common.dry_run => cpm_core::exit::print(&done.plan),
            Ok(done) => {
                let listing: String = done
                    .files
                    .iter()
                    .map(|f| format!("{}\n", f.display()))
                    .collect();
                cpm_core::exit::print(&listing)
            }
            Err(e) => {
                let code = if matches!(e, init_ca::InitCaError::Exists(_)) {
                    Code::Usage
                } else {
                    Code::Failure
                };
                report_fatal(&e, Path::new(TERMINATION_LOG));
                code
            }
        },
        Some(Command::CheckExpiration { output }) => {
            let report = expiration::report(&cli.common.node_root(), clock());
            cpm_core::exit::print(&expiration::render(&report, output))
        }
        Some(Command::Renew { name }) => {
            let forced: Vec<String> = if name == "all" {
                LEAF_FILES
                    .iter()
                    .map(|(n, _, _)| (*n).to_string())
                    .collect()
            } else if LEAF_FILES.iter().any(|(n, _, _)| *n == name) {
                vec![name]
            } else {
                let names: Vec<_> = LEAF_FILES.iter().map(|(n, _, _)| *n).collect();
                eprintln!(
                    "error: unknown certificate {name:?}; expected one of {} or all",
                    names.join(", ")
                );
                return Code::Usage;
            };
            let mut common = cli.common;
            common.once = true;
            reconcile(common, clock, forced).await
        }
        None => reconcile(cli.common, clock, Vec::new()).await,
    }
}

async fn reconcile(common: CommonArgs, clock: Clock, forced: Vec<String>) -> Code {
    let mut registry = Registry::default();
    let cert_metrics = metrics::CertMetrics::register(&mut registry);
    let mut agent = CertsAgent::new(common.clone(), clock, Some(cert_metrics));
    agent.forced = forced;
    // Init: every input must be valid before the first pass (exit 2 otherwise).
    if let Err(e) = agent.load_inputs() {
        report_fatal(&e, Path::new(TERMINATION_LOG));
        return Code::Usage;
    }
    let opts = RunnerOptions {
        default_admin: ADMIN_ADDR,
        watch: agent.inputs(),
        watchers: Vec::new(),
    };
    run_agent(&mut agent, &common, registry, opts).await
}
