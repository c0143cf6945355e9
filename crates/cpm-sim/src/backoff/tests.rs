//! Back-off sequence and reset.

use super::*;

fn check(runs: &[u64], expected: &[u64]) {
    let mut b = Backoff::default();
    let got: Vec<u64> = runs
        .iter()
        .map(|r| b.after_exit(Duration::from_secs(*r)).as_secs())
        .collect();
    assert_eq!(got, expected, "runs {runs:?}");
}

#[test]
fn delays_double_from_ten_seconds_to_five_minutes() {
    check(&[1; 8], &[0, 10, 20, 40, 80, 160, 300, 300]);
}

#[test]
fn ten_minutes_of_running_resets_the_back_off() {
    check(&[1, 1, 1, 600, 1, 599, 1], &[0, 10, 20, 0, 10, 20, 40]);
}
