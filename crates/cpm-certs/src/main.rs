//! cpm-certs entry point: parse flags, start logging, run, exit with the table's code.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cpm_core::cli::parse::<cpm_certs::Cli>();
    cpm_core::telemetry::init(cli.common.log_format, &cli.common.log_level);
    cpm_core::runner::block_on(cpm_certs::run(cli, cpm_certs::system_clock()))
}
