//! Retention selection with chosen times: newest N, newest per UTC day and per ISO week, gaps,
//! the pinned new backup, and the future-date cut-off.

use time::PrimitiveDateTime;

use super::*;
use crate::store::{Compression, TIMESTAMP};

/// Backups named by `YYYYMMDDTHHMMSS` (revision = position), the policy, and the expected kept
/// times, newest first.
fn check(times: &[&str], keep: usize, daily: usize, weekly: usize, expected: &[&str]) {
    check_pinned(times, None, keep, daily, weekly, expected);
}

fn at(t: &str) -> PrimitiveDateTime {
    PrimitiveDateTime::parse(&format!("{t}Z"), TIMESTAMP).expect("test time")
}

fn backups(times: &[&str]) -> Vec<BackupName> {
    times
        .iter()
        .enumerate()
        .map(|(i, t)| BackupName {
            node: "master-1".into(),
            time: at(t),
            revision: i64::try_from(i).expect("small"),
            compression: Compression::None,
        })
        .collect()
}

/// As [`check`], with the backup at index `pinned` (the one just written) pinned.
fn check_pinned(
    times: &[&str],
    pinned: Option<usize>,
    keep: usize,
    daily: usize,
    weekly: usize,
    expected: &[&str],
) {
    let backups = backups(times);
    let (kept, deleted) = select(
        &backups,
        pinned.map(|i| &backups[i]),
        &Policy {
            keep,
            daily,
            weekly,
        },
    );
    let got: Vec<String> = kept
        .iter()
        .map(|b| b.timestamp().trim_end_matches('Z').to_string())
        .collect();
    assert_eq!(got, expected, "keep {keep} daily {daily} weekly {weekly}");
    assert_eq!(kept.len() + deleted.len(), backups.len());
}

/// Every 6 hours from Thursday 2026-01-01 to Wednesday 2026-01-14 (56 backups).
fn six_hourly() -> Vec<String> {
    (1..=14)
        .flat_map(|d| (0..4).map(move |h| format!("202601{d:02}T{:02}0000", h * 6)))
        .collect()
}

#[test]
fn keep_only_keeps_the_newest_n() {
    let t = [
        "20260101T000000",
        "20260101T060000",
        "20260101T120000",
        "20260101T180000",
        "20260102T000000",
    ];
    check(
        &t,
        3,
        0,
        0,
        &["20260102T000000", "20260101T180000", "20260101T120000"],
    );
    check(&t, 10, 0, 0, &[t[4], t[3], t[2], t[1], t[0]]);
    check(&[], 3, 2, 2, &[]);
}

#[test]
fn daily_keeps_the_newest_of_each_recent_day() {
    let all = six_hourly();
    let t: Vec<&str> = all.iter().map(String::as_str).collect();
    check(
        &t,
        2,
        3,
        0,
        &[
            "20260114T180000",
            "20260114T120000",
            "20260113T180000",
            "20260112T180000",
        ],
    );
}

#[test]
fn weekly_uses_iso_weeks_monday_to_sunday() {
    // 2026-01-01 is a Thursday: week 2026-W01 runs Mon 2025-12-29 .. Sun 2026-01-04, W02 from
    // Mon 01-05 to Sun 01-11, W03 from Mon 01-12.
    let all = six_hourly();
    let t: Vec<&str> = all.iter().map(String::as_str).collect();
    check(
        &t,
        1,
        0,
        3,
        &["20260114T180000", "20260111T180000", "20260104T180000"],
    );
    // A Sunday and the following Monday are different weeks; the last day of 2025 is in the
    // same ISO week as the first days of 2026.
    check(
        &[
            "20251229T000000",
            "20251231T235959",
            "20260104T235959",
            "20260105T000000",
        ],
        1,
        0,
        5,
        &["20260105T000000", "20260104T235959"],
    );
}

#[test]
fn days_and_weeks_without_backups_do_not_count() {
    check(
        &[
            "20250601T000000",
            "20251201T000000",
            "20260110T000000",
            "20260110T060000",
        ],
        1,
        3,
        0,
        &["20260110T060000", "20251201T000000", "20250601T000000"],
    );
    check(
        &["20250601T000000", "20251201T000000", "20260110T000000"],
        1,
        0,
        2,
        &["20260110T000000", "20251201T000000"],
    );
}

#[test]
fn the_rules_combine_as_a_union() {
    let all = six_hourly();
    let t: Vec<&str> = all.iter().map(String::as_str).collect();
    check(
        &t,
        3,
        2,
        2,
        &[
            "20260114T180000",
            "20260114T120000",
            "20260114T060000",
            "20260113T180000",
            "20260111T180000",
        ],
    );
}

#[test]
fn the_pinned_backup_is_kept_even_when_others_are_named_newer() {
    // After a clock step back the new backup (index 0) is older by name than the others.
    let t = ["20260101T000000", "20260101T060000", "20260101T120000"];
    check_pinned(&t, Some(0), 1, 0, 0, &["20260101T000000"]);
    check_pinned(
        &t,
        Some(0),
        2,
        0,
        0,
        &["20260101T120000", "20260101T000000"],
    );
    // When it is the newest it is simply one of the `keep`.
    check_pinned(
        &t,
        Some(2),
        2,
        0,
        0,
        &["20260101T120000", "20260101T060000"],
    );
}

#[test]
fn names_beyond_the_skew_allowance_are_in_the_future() {
    let now = at("20260101T120000");
    let future = |t: &str| is_future(&backups(&[t])[0], now);
    assert!(!future("20260101T115959"));
    assert!(!future("20260101T120000"));
    assert!(!future("20260101T120500"), "5 minutes ahead is clock skew");
    assert!(future("20260101T120501"));
    assert!(future("20301231T000000"));
}
