//! proxy-reloader entry point: parse flags, start logging, run, exit with the table's code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = proxy_reloader::Cli::parse();
    cpm_core::telemetry::init(cli.common.log_format, &cli.common.log_level);
    cpm_core::runner::block_on(proxy_reloader::run(cli))
}
