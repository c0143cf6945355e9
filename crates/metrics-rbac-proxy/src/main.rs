//! metrics-rbac-proxy entry point: parse flags, start logging, run, exit with the table's code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = metrics_rbac_proxy::Cli::parse();
    cpm_core::telemetry::init(cli.common.log_format, &cli.common.log_level);
    cpm_core::runner::block_on(metrics_rbac_proxy::run(cli))
}
