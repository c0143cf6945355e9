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
//! delete older generations faster. Everything not selected is deleted, except the pinned
//! backup (the one just written), which is always kept, whatever the names of the others say.
//!
//! Which backups reach [`select`] at all is decided before it (`store::plan_prune`): only this
//! node's verified backups, and none whose name is dated after now plus [`FUTURE_SKEW`]
//! ([`is_future`]).

use std::collections::BTreeSet;

use time::{Date, PrimitiveDateTime};

use crate::store::BackupName;

/// How far past the clock a backup's name may be dated and still be ordered by it: clocks of
/// masters drift and NTP steps them back, so a backup taken a moment ago on a fast clock is
/// still an ordinary backup. Anything later is not something this tool wrote recently and its
/// name cannot be trusted for ordering: it is neither counted nor deleted, only reported.
pub const FUTURE_SKEW: time::Duration = time::Duration::minutes(5);

/// Whether `name` is dated after `now` plus [`FUTURE_SKEW`] (both UTC).
pub fn is_future(name: &BackupName, now: PrimitiveDateTime) -> bool {
    name.time > now.saturating_add(FUTURE_SKEW)
}

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

/// Splits one node's backups into (kept, deleted), each newest first. `pinned` (the backup just
/// written) is always kept and takes one of the `keep` places, even when its name is older than
/// others' (after the clock was stepped back).
pub fn select<'a>(
    backups: &'a [BackupName],
    pinned: Option<&BackupName>,
    policy: &Policy,
) -> (Vec<&'a BackupName>, Vec<&'a BackupName>) {
    let mut sorted: Vec<&BackupName> = backups.iter().collect();
    sorted.sort_by(|a, b| b.order_key().cmp(&a.order_key()));
    let mut kept: Vec<bool> = sorted.iter().map(|b| Some(*b) == pinned).collect();
    // The pinned backup takes one of the `keep` places; the newest others take the rest.
    let others = policy
        .keep
        .saturating_sub(kept.iter().filter(|k| **k).count());
    for k in kept.iter_mut().filter(|k| !**k).take(others) {
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
