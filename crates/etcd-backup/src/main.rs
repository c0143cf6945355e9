//! etcd-backup entry point: parse flags, start logging, run, exit with the table's code.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cpm_core::cli::parse::<etcd_backup::Cli>();
    cpm_core::telemetry::init(cli.common.log_format, &cli.common.log_level);
    cpm_core::runner::block_on(etcd_backup::run(cli))
}
