//! Tests of the defragmentation threshold.

use super::*;

#[test]
fn worth_it_needs_both_absolute_and_relative_free_space() {
    let p = DefragPolicy::standard();
    const MIB: i64 = 1 << 20;
    assert!(p.worth_it(1024 * MIB, 700 * MIB), "324 MiB free, 31 %");
    assert!(!p.worth_it(1024 * MIB, 900 * MIB), "124 MiB free but 12 %");
    assert!(!p.worth_it(100 * MIB, 50 * MIB), "50 % but only 50 MiB");
    assert!(!p.worth_it(0, 0));
}
