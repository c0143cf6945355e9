//! Which of a node's backups to keep: a pure function of the backup names and the policy (the
//! time is the UTC start time in each name, so no clock is read and tests choose the times).
//!
//! A backup is kept when any rule selects it:
//!
//! - `keep`: the newest N backups;
//! - `daily`: for each of the N most recent UTC days that have a backup, the newest of that day;
//! - `weekly`: the same for ISO weeks (Monday to Sunday, UTC).
//!
//! Days and weeks without a backup do not count, so a gap in the schedule never makes retention
//! delete older generations faster. Everything not selected is deleted; the newest backup (the
//! one just written) is always kept, since `keep` is at least 1.

use std::collections::BTreeSet;

use time::Date;

use crate::store::BackupName;

/// The retention policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Newest backups to keep (at least 1 in practice).
    pub keep: usize,
    /// Most recent UTC days with a backup whose newest backup is kept.
    pub daily: usize,
    /// Most recent ISO weeks with a backup whose newest backup is kept.
    pub weekly: usize,
}

/// Splits one node's backups into (kept, deleted), each newest first.
pub fn select<'a>(
    backups: &'a [BackupName],
    policy: &Policy,
) -> (Vec<&'a BackupName>, Vec<&'a BackupName>) {
    let mut sorted: Vec<&BackupName> = backups.iter().collect();
    sorted.sort_by(|a, b| b.order_key().cmp(&a.order_key()));
    let mut kept = vec![false; sorted.len()];
    for k in kept.iter_mut().take(policy.keep) {
        *k = true;
    }
    newest_per_bucket(
        &sorted,
        policy.daily,
        |d| (d.year(), d.ordinal()),
        &mut kept,
    );
    newest_per_bucket(
        &sorted,
        policy.weekly,
        |d| {
            let (year, week, _) = d.to_iso_week_date();
            (year, week.into())
        },
        &mut kept,
    );
    let (mut keep, mut delete) = (Vec::new(), Vec::new());
    for (b, k) in sorted.into_iter().zip(kept) {
        if k { keep.push(b) } else { delete.push(b) }
    }
    (keep, delete)
}

/// Marks the first (newest) backup of each of the `n` newest buckets.
fn newest_per_bucket(
    sorted: &[&BackupName],
    n: usize,
    bucket: impl Fn(Date) -> (i32, u16),
    kept: &mut [bool],
) {
    let mut seen = BTreeSet::new();
    for (i, b) in sorted.iter().enumerate() {
        if seen.len() >= n {
            break;
        }
        if seen.insert(bucket(b.time.date())) {
            kept[i] = true;
        }
    }
}

#[cfg(test)]
mod tests;
