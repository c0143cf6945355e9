//! Schedule matching.

use time::macros::datetime;

use super::*;

fn check(schedule: &str, at: OffsetDateTime, expected: bool) {
    let s = Schedule::parse(schedule).expect("valid");
    assert_eq!(s.matches(at), expected, "{schedule} at {at}");
}

#[test]
fn the_backup_schedule_fires_every_six_hours_on_the_hour() {
    check("0 */6 * * *", datetime!(2025-03-01 06:00 UTC), true);
    check("0 */6 * * *", datetime!(2025-03-01 06:01 UTC), false);
    check("0 */6 * * *", datetime!(2025-03-01 07:00 UTC), false);
    check("@hourly", datetime!(2025-03-01 07:00 UTC), true);
}

#[test]
fn restricted_day_fields_match_when_either_does() {
    // 2025-03-03 is a Monday, 2025-03-04 a Tuesday.
    check("0 0 1 * MON", datetime!(2025-03-03 00:00 UTC), true);
    check("0 0 1 * MON", datetime!(2025-03-04 00:00 UTC), false);
    check("0 0 * * MON", datetime!(2025-03-03 00:00 UTC), true);
    check("*/15 * * JAN-MAR *", datetime!(2025-03-04 10:45 UTC), true);
}

#[test]
fn malformed_schedules_are_refused() {
    for bad in [
        "",
        "* * * *",
        "61 * * * *",
        "*/0 * * * *",
        "@often",
        "5-1 * * * *",
    ] {
        assert!(Schedule::parse(bad).is_err(), "{bad:?}");
    }
}
