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
