//! cpm-holder entry point: parse flags, run, exit with the table's code.

use std::process::ExitCode;

use clap::Parser;
use cpm_core::exit::{Code, TERMINATION_LOG, report_fatal};

fn main() -> ExitCode {
    let cli = cpm_holder::Cli::parse();
    match cpm_holder::run(cli) {
        Ok(()) => Code::Ok.into(),
        Err(e) => {
            report_fatal(&e, std::path::Path::new(TERMINATION_LOG));
            Code::Failure.into()
        }
    }
}
