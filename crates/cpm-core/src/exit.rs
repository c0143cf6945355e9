//! The one exit-code table shared by every cpm binary, and fatal-error reporting.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success, including "nothing to do" and a clean SIGTERM |
//! | 1 | runtime failure |
//! | 2 | usage or config error (clap's own code for argument errors) |
//! | 3 | drift found under `--check` |

use std::error::Error;
use std::path::Path;

/// A process exit code from the table above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Success, including "nothing to do".
    Ok = 0,
    /// A runtime failure (IO, network, a peer that misbehaves).
    Failure = 1,
    /// Bad operator input: usage, config or input files.
    Usage = 2,
    /// `--check` found drift.
    Drift = 3,
}

impl From<Code> for std::process::ExitCode {
    fn from(code: Code) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

/// Where Kubernetes reads a container's termination message.
pub const TERMINATION_LOG: &str = "/dev/termination-log";

/// Renders an error and its chain of causes on one line: `a: caused by: b: caused by: c`.
pub fn chain(err: &(dyn Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(cause) = cur {
        out.push_str(": caused by: ");
        out.push_str(&cause.to_string());
        cur = cause.source();
    }
    out
}

/// Reports a fatal error: one `error: …` line on stderr, and the same text in the Kubernetes
/// termination-message file when that file exists. The caller still exits non-zero.
pub fn report_fatal(err: &(dyn Error + 'static), termination_log: &Path) {
    let line = chain(err);
    eprintln!("error: {line}");
    if termination_log.exists() {
        // Best effort: the file is owned by the kubelet and is not a node file of ours.
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(termination_log)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// Writes command output (a plan, a table, YAML) to stdout and returns the exit code it leaves.
/// A reader that went away (`cpm-manifests crd | head`) is not an error: the rest is dropped
/// quietly, as `cat` does; any other write error is a failure reported on stderr.
pub fn print(text: &str) -> Code {
    print_to(&mut std::io::stdout().lock(), text)
}

fn print_to(out: &mut impl std::io::Write, text: &str) -> Code {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Code::Ok,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Code::Ok,
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            Code::Failure
        }
    }
}

#[cfg(test)]
mod tests;
