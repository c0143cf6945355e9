//! cpm-kubeconfig entry point: parse flags, start logging, run, exit with the table's code.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cpm_core::cli::parse::<cpm_kubeconfig::Cli>();
    cpm_core::telemetry::init(cli.common.log_format, &cli.common.log_level);
    cpm_core::runner::block_on(cpm_kubeconfig::run(cli, cpm_kubeconfig::system_clock()))
}
