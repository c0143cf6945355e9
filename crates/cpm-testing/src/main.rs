//! `cpm-test-apiserver`: the test API server and the control-plane stand-ins of cpm's simulated
//! cluster as processes (see `cpm_testing::control_plane`). Invoked as `kube-apiserver`,
//! `kube-controller-manager` or `kube-scheduler`, it runs that command.

use std::process::ExitCode;

use cpm_core::cli::LogFormat;
use cpm_core::exit::{Code, report_fatal};
use cpm_testing::control_plane::{Command, cli, run};

fn main() -> ExitCode {
    let cli = cli::try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit());
    let level = match &cli.command {
        Command::Store(args) => args.log_level.clone(),
        _ => "info".to_string(),
    };
    cpm_core::telemetry::init(LogFormat::Text, &level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            report_fatal(&e, std::path::Path::new(cpm_core::exit::TERMINATION_LOG));
            return Code::Failure.into();
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => Code::Ok.into(),
        Err(e) => {
            report_fatal(&e, std::path::Path::new(cpm_core::exit::TERMINATION_LOG));
            e.exit_code().into()
        }
    }
}
