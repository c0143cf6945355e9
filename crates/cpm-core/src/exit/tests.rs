//! Tests of the exit-code table and error-chain rendering.

use super::*;

#[derive(Debug, thiserror::Error)]
#[error("outer {0}")]
struct Outer(&'static str, #[source] Inner);

#[derive(Debug, thiserror::Error)]
#[error("inner")]
struct Inner;

#[test]
fn chain_joins_causes_on_one_line() {
    let e = Outer("x", Inner);
    assert_eq!(chain(&e), "outer x: caused by: inner");
}

#[test]
fn codes_match_the_table() {
    assert_eq!(Code::Ok as u8, 0);
    assert_eq!(Code::Failure as u8, 1);
    assert_eq!(Code::Usage as u8, 2);
    assert_eq!(Code::Drift as u8, 3);
}

#[test]
fn fatal_report_writes_termination_log_when_present() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("termination-log");
    std::fs::File::create(&log).unwrap();
    report_fatal(&Outer("y", Inner), &log);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "outer y: caused by: inner"
    );
    let absent = dir.path().join("absent");
    report_fatal(&Inner, &absent);
    assert!(!absent.exists());
}

/// A writer that fails every write with one error kind.
struct Failing(std::io::ErrorKind);

impl std::io::Write for Failing {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(self.0.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn output_to_a_closed_pipe_is_quiet_and_other_write_errors_fail() {
    let mut buf = Vec::new();
    assert_eq!(print_to(&mut buf, "a\n"), Code::Ok);
    assert_eq!(buf, b"a\n");
    assert_eq!(
        print_to(&mut Failing(std::io::ErrorKind::BrokenPipe), "a"),
        Code::Ok
    );
    assert_eq!(
        print_to(&mut Failing(std::io::ErrorKind::StorageFull), "a"),
        Code::Failure
    );
}
