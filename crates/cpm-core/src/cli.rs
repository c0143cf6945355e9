//! `CommonArgs`: the flags every cpm binary shares, flattened into each binary's CLI.
//!
//! Every flag also reads `CPM_<FLAG>` from the environment (flag > env > default). Node identity
//! falls back to the downward-API variables `NODE_NAME` and `NODE_IP`.
//!
//! A command offers only the flags it honours (PRODUCT.md §5): a binary that flattens
//! [`CommonArgs`] but does not use some of them, or a subcommand that ignores a global flag,
//! implements [`Honours`], and [`parse`] refuses such a flag with exit 2 instead of ignoring it.
//! A flag no command of the binary honours ([`Honours::NEVER`]) is hidden from `--help` and
//! refused from the command line and from its `CPM_*` variable. A flag only the selected
//! subcommand ignores ([`Honours::unhonoured`]) is refused from the command line; its variable is
//! ambient context of the container (the agents' DaemonSet sets `CPM_ROOT` for every command an
//! operator may `kubectl exec`), as `KUBECONFIG` is to `kubectl version --client`.
//!
//! ```
//! use clap::Parser;
//! use cpm_core::cli::{CommonArgs, Honours, try_parse_from};
//!
//! #[derive(Debug, Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     common: CommonArgs,
//! }
//!
//! impl Honours for Cli {
//!     // A proxy runs until stopped: it has no single pass to make `--once` of.
//!     const NEVER: &'static [&'static str] = &["once", "dry_run", "check"];
//! }
//!
//! let err = try_parse_from::<Cli, _, _>(["proxy", "--once"]).unwrap_err();
//! assert_eq!(err.exit_code(), 2);
//! assert!(try_parse_from::<Cli, _, _>(["proxy", "--root", "/tmp"]).is_ok());
//! ```

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

use crate::node::NodeRoot;
use crate::reconcile::{Mode, RunOptions};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for containers).
    Json,
}

/// Flags shared by all binaries (PRODUCT.md §5).
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Directory every node path is relative to.
    #[arg(long, global = true, env = "CPM_ROOT", default_value = "/")]
    pub root: PathBuf,
    /// The ControlPlaneConfiguration file.
    #[arg(
        long,
        global = true,
        env = "CPM_CONFIG",
        default_value = "/config/config.yaml"
    )]
    pub config: PathBuf,
    /// The CA bundle directory (Secret cpm-pki).
    #[arg(long, global = true, env = "CPM_PKI_DIR", default_value = "/pki")]
    pub pki_dir: PathBuf,
    /// This node's name (else env NODE_NAME).
    #[arg(long, global = true, env = "CPM_NODE_NAME")]
    pub node_name: Option<String>,
    /// This node's IP address (else env NODE_IP).
    #[arg(long, global = true, env = "CPM_NODE_IP")]
    pub node_ip: Option<IpAddr>,
    /// Kubeconfig for the Kubernetes API (else in-cluster config).
    #[arg(long, global = true, env = "CPM_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Run one pass and exit with its result.
    #[arg(long, global = true, env = "CPM_ONCE")]
    pub once: bool,
    /// Print the plan as unified diffs (secrets as hashes) and write nothing.
    #[arg(long, global = true, env = "CPM_DRY_RUN", conflicts_with = "check")]
    pub dry_run: bool,
    /// Like --dry-run, but exit 3 when anything would change.
    #[arg(long, global = true, env = "CPM_CHECK")]
    pub check: bool,
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "CPM_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Log level or filter (RUST_LOG syntax); RUST_LOG wins when set.
    #[arg(long, global = true, env = "CPM_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Admin server address (/metrics, /livez, /readyz); default per binary.
    #[arg(long, global = true, env = "CPM_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// Periodic resync interval in seconds.
    #[arg(long, global = true, env = "CPM_RESYNC_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub resync_seconds: u64,
}

/// Flags that only a daemon honours: one pass starts no admin server and has no resync.
pub const DAEMON_ONLY: &[&str] = &["admin_addr", "resync_seconds"];

/// A required identity flag is missing.
#[derive(Debug, thiserror::Error)]
#[error("--{flag} is required (or env {env})")]
pub struct MissingFlag {
    /// The flag.
    pub flag: &'static str,
    /// The fallback environment variable.
    pub env: &'static str,
}

impl CommonArgs {
    /// The node root.
    pub fn node_root(&self) -> NodeRoot {
        NodeRoot::new(&self.root)
    }

    /// The pass mode from `--dry-run` / `--check`.
    pub fn mode(&self) -> Mode {
        if self.check {
            Mode::Check
        } else if self.dry_run {
            Mode::DryRun
        } else {
            Mode::Apply
        }
    }

    /// Run options from `--once`, the mode and `--resync-seconds`.
    pub fn run_options(&self) -> RunOptions {
        let mut opts = RunOptions::new(self.once, self.mode());
        opts.resync = std::time::Duration::from_secs(self.resync_seconds);
        opts
    }

    /// The daemon-only flags ([`DAEMON_ONLY`]) when one pass was asked for (`--once`,
    /// `--dry-run`, `--check`), else none: an agent's [`Honours::unhonoured`] for its default
    /// command.
    pub fn unhonoured_in_one_pass(&self) -> &'static [&'static str] {
        if self.once || self.dry_run || self.check {
            DAEMON_ONLY
        } else {
            &[]
        }
    }

    /// This node's name: `--node-name`, `CPM_NODE_NAME`, then `NODE_NAME`.
    pub fn node_name(&self) -> Result<String, MissingFlag> {
        self.node_name
            .clone()
            .or_else(|| std::env::var("NODE_NAME").ok().filter(|s| !s.is_empty()))
            .ok_or(MissingFlag {
                flag: "node-name",
                env: "NODE_NAME",
            })
    }

    /// This node's IP: `--node-ip`, `CPM_NODE_IP`, then `NODE_IP`.
    pub fn node_ip(&self) -> Result<IpAddr, MissingFlag> {
        self.node_ip
            .or_else(|| std::env::var("NODE_IP").ok().and_then(|s| s.parse().ok()))
            .ok_or(MissingFlag {
                flag: "node-ip",
                env: "NODE_IP",
            })
    }
}

/// A command line whose commands honour only part of the shared flags they offer.
pub trait Honours: clap::Parser {
    /// Flags (clap ids: the field names, such as `dry_run`) that no command of this binary
    /// honours: hidden from `--help` and refused when given.
    const NEVER: &'static [&'static str] = &[];

    /// Flags the command selected by this parse does not honour (a subcommand that ignores a
    /// global flag): refused when given.
    fn unhonoured(&self) -> &'static [&'static str] {
        &[]
    }
}

/// Parses the process's command line and environment like `C::parse()`, and exits 2 with a
/// usage error when a flag the selected command does not honour is given.
pub fn parse<C: Honours>() -> C {
    try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// [`parse`] from explicit arguments (the first is the binary name); the error exits 2.
pub fn try_parse_from<C, I, T>(args: I) -> Result<C, clap::Error>
where
    C: Honours,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut cmd = C::command();
    for id in C::NEVER {
        cmd = cmd.mut_arg(*id, |a| a.hide(true));
    }
    let matches = cmd.try_get_matches_from_mut(args)?;
    let cli = C::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))?;
    let never = C::NEVER.iter().map(|id| (id, ValueSource::EnvVariable));
    let unhonoured = cli
        .unhonoured()
        .iter()
        .map(|id| (id, ValueSource::CommandLine));
    for (id, weakest) in never.chain(unhonoured) {
        if let Some(source) = given(&matches, id).filter(|s| *s >= weakest) {
            return Err(refusal(&mut cmd, &matches, id, source));
        }
    }
    Ok(cli)
}

/// Where `id`'s value came from, for the command or the selected subcommand (globals propagate
/// down); `None` when the flag does not exist there.
fn given(matches: &ArgMatches, id: &str) -> Option<ValueSource> {
    let mut level = Some(matches);
    let mut strongest = None;
    while let Some(m) = level {
        if m.try_contains_id(id).is_ok() {
            strongest = strongest.max(m.value_source(id));
        }
        level = m.subcommand().map(|(_, sub)| sub);
    }
    strongest
}

fn refusal(cmd: &mut Command, matches: &ArgMatches, id: &str, source: ValueSource) -> clap::Error {
    let arg = cmd.get_arguments().find(|a| a.get_id() == id);
    let flag = arg
        .and_then(clap::Arg::get_long)
        .map_or_else(|| id.to_string(), |l| format!("--{l}"));
    let env = arg
        .and_then(clap::Arg::get_env)
        .map(|e| e.to_string_lossy().into_owned());
    let mut name = cmd.get_name().to_string();
    let mut level = matches.subcommand();
    while let Some((sub, m)) = level {
        name = format!("{name} {sub}");
        level = m.subcommand();
    }
    let how = match (source, env) {
        (ValueSource::EnvVariable, Some(env)) => format!("{flag} (set by {env})"),
        _ => flag,
    };
    cmd.error(
        clap::error::ErrorKind::ArgumentConflict,
        format!("{how} is not honoured by `{name}`; remove it"),
    )
}

#[cfg(test)]
mod tests;
