//! cpm-certs entry point: parse flags, start logging, run, exit with the table's code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cpm_certs::Cli::parse();
    cpm_core::telemetry::init(cli.common.log_format, &cli.common.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return cpm_core::exit::Code::Failure.into();
        }
    };
    runtime
        .block_on(cpm_certs::run(cli, cpm_certs::system_clock()))
        .into()
}
