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
