//! The longest gap of the schedule shapes operators write, and the errors of malformed ones.

use super::*;

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

fn check(schedule: &str, expected: u64) {
    let got = Schedule::parse(schedule)
        .and_then(|s| s.longest_gap_seconds())
        .unwrap_or_else(|e| panic!("{schedule}: {e:#}"));
    assert_eq!(got, expected, "{schedule}");
}

#[test]
fn regular_schedules() {
    check("0 */6 * * *", 6 * HOUR);
    check("*/15 * * * *", 900);
    check("* * * * *", 60);
    check("30 2 * * *", DAY);
    check("@daily", DAY);
    check("@hourly", HOUR);
}

#[test]
fn weekly_and_uneven_schedules_are_as_long_as_their_longest_gap() {
    check("0 0 * * 1", 7 * DAY);
    check("0 3 * * MON", 7 * DAY);
    check("@weekly", 7 * DAY);
    // Monday and Friday: the gap from Friday to Monday is the long one.
    check("0 0 * * 1,5", 4 * DAY);
    check("0 1,2 * * *", 23 * HOUR);
    check("0 0-12/6 * * *", 12 * HOUR);
    check("0 0 * * 1-5", 3 * DAY);
    // The first of the month: 31 days at most; with cron's either-day rule, also Sundays.
    check("@monthly", 31 * DAY);
    check("0 0 1 * 0", 7 * DAY);
    check("0 0 29 2 *", (4 * 365 + 1) * DAY);
    check("0 0 1 jan,jul *", 184 * DAY);
}

#[test]
fn malformed_schedules_are_errors() {
    for bad in [
        "",
        "0 */6 * *",
        "0 */6 * * * *",
        "60 * * * *",
        "0 24 * * *",
        "0 0 0 * *",
        "0 0 * 13 *",
        "0 0 * * 7",
        "*/0 * * * *",
        "5-1 * * * *",
        "0 0 * * FUNDAY",
        "@reboot",
        "0 0 30 2 *",
    ] {
        let r = Schedule::parse(bad).and_then(|s| s.longest_gap_seconds());
        assert!(r.is_err(), "{bad:?} gave {r:?}");
    }
}
