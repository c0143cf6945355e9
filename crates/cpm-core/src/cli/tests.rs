//! Tests of the shared flags.

use clap::Parser;

use super::*;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
}

fn parse(args: &[&str]) -> Result<CommonArgs, clap::Error> {
    Cli::try_parse_from(std::iter::once("bin").chain(args.iter().copied())).map(|c| c.common)
}

#[test]
fn defaults_and_modes() {
    let a = parse(&[]).unwrap();
    assert_eq!(a.root, PathBuf::from("/"));
    assert_eq!(a.mode(), Mode::Apply);
    assert!(!a.run_options().once);
    let a = parse(&["--check", "--node-name", "m1", "--node-ip", "10.0.0.1"]).unwrap();
    assert_eq!(a.mode(), Mode::Check);
    assert!(a.run_options().once);
    assert_eq!(a.node_name().unwrap(), "m1");
    assert_eq!(a.node_ip().unwrap().to_string(), "10.0.0.1");
}

#[test]
fn bad_usage_is_a_clap_error_with_exit_2() {
    for args in [
        &["--dry-run", "--check"][..],
        &["--node-ip", "not-an-ip"],
        &["--resync-seconds", "0"],
        &["--log-format", "xml"],
    ] {
        let err = parse(args).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{args:?}");
    }
}

/// A binary with a default command and two subcommands, as cpm-certs has.
#[derive(Debug, Parser)]
#[command(name = "tool")]
struct Tool {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Option<ToolCommand>,
}

#[derive(Debug, clap::Subcommand)]
enum ToolCommand {
    /// Honours --root only.
    Show,
    /// Honours --dry-run.
    Init,
}

impl Honours for Tool {
    const NEVER: &'static [&'static str] = &["kubeconfig"];

    fn unhonoured(&self) -> &'static [&'static str] {
        match self.command {
            None => &[],
            Some(ToolCommand::Show) => &["once", "dry_run", "check", "admin_addr"],
            Some(ToolCommand::Init) => &["once", "check", "root"],
        }
    }
}

fn tool(args: &[&str]) -> Result<Tool, clap::Error> {
    try_parse_from(std::iter::once("tool").chain(args.iter().copied()))
}

#[test]
fn honoured_flags_parse_in_every_position() {
    for args in [
        &["--once", "--root", "/x"][..],
        &["show", "--root", "/x"],
        &["--root", "/x", "show"],
        &["init", "--dry-run"],
        &["--dry-run", "init", "--log-level", "debug"],
    ] {
        assert!(tool(args).is_ok(), "{args:?}");
    }
}

#[test]
fn unhonoured_flags_are_refused_with_exit_2_naming_flag_and_command() {
    for (args, flag, command) in [
        (&["show", "--once"][..], "--once", "tool show"),
        (&["--dry-run", "show"], "--dry-run", "tool show"),
        (&["init", "--check"], "--check", "tool init"),
        (&["init", "--root", "/"], "--root", "tool init"),
        (&["--kubeconfig", "k"], "--kubeconfig", "tool"),
        (&["show", "--kubeconfig", "k"], "--kubeconfig", "tool show"),
    ] {
        let err = tool(args).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{args:?}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("{flag} is not honoured by `{command}`")),
            "{args:?}: {text}"
        );
    }
}

#[test]
fn flags_never_honoured_are_hidden_from_help() {
    let help = tool(&["--help"]).unwrap_err().to_string();
    assert!(!help.contains("--kubeconfig"), "{help}");
    assert!(help.contains("--root"), "{help}");
}
