//! Unit tests of the backup status file: round trip, missing file, lenient and strict parts.

use super::*;

fn sample() -> BackupStatus {
    BackupStatus {
        last_success: Some(Success {
            timestamp: "2026-01-02T03:04:05Z".into(),
            timestamp_seconds: 1_767_323_045,
            file: "etcd-master-1-20260102T030400Z-rev42.db".into(),
            revision: 42,
            size_bytes: 20_480,
            duration_seconds: 1.5,
        }),
        last_failure: Some(Failure {
            timestamp: "2026-01-01T03:04:05Z".into(),
            timestamp_seconds: 1_767_236_645,
            error: "etcd status failed".into(),
        }),
        last_retention: Some(Retention {
            timestamp_seconds: 1_767_323_045,
            kept: 7,
            deleted: 1,
            future_count: 1,
            future_files: vec!["etcd-master-1-20301231T000000Z-rev1.db".into()],
            unverified_count: 0,
            unverified_files: vec![],
        }),
    }
}

#[test]
fn round_trips_and_a_missing_file_is_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(FILE_NAME);
    assert_eq!(read(&path).expect("read"), None);
    write(&path, &sample()).expect("write");
    assert_eq!(read(&path).expect("read"), Some(sample()));
    let text = std::fs::read_to_string(&path).expect("read text");
    assert!(text.contains("\"lastSuccess\""), "{text}");
    assert!(text.contains("\"timestampSeconds\": 1767323045"), "{text}");
    assert!(text.contains("\"futureCount\": 1"), "{text}");
}

#[test]
fn unknown_fields_are_ignored_and_bad_fields_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(FILE_NAME);
    let newer = br#"{"lastFailure": {"timestamp": "t", "timestampSeconds": 5, "error": "e", "extra": 1}, "future": true}"#;
    put(&path, newer);
    let got = read(&path).expect("lenient").expect("present");
    assert_eq!(got.last_success, None);
    assert_eq!(got.last_failure.map(|f| f.timestamp_seconds), Some(5));

    put(&path, br#"{"lastSuccess": {"timestampSeconds": "soon"}}"#);
    let err = read(&path).expect_err("bad type");
    let msg = err.to_string();
    assert!(msg.contains("lastSuccess.timestampSeconds"), "{msg}");
    assert!(msg.contains(FILE_NAME), "{msg}");
}

fn put(path: &Path, bytes: &[u8]) {
    crate::apply::write_atomic(path, bytes, 0o644, None, None).expect("write");
}
