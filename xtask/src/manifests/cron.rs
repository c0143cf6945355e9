//! The longest gap between two runs of a CronJob schedule, for the backup-age alert: a
//! schedule is only as frequent as its longest gap (a weekly schedule leaves a week between
//! backups, however often it runs on its day).
//!
//! The schedule language is the one Kubernetes accepts for `CronJob.spec.schedule` (robfig/cron's
//! standard parser): five fields (minute 0-59, hour 0-23, day of month 1-31, month 1-12 or
//! `JAN`-`DEC`, day of week 0-6 or `SUN`-`SAT`), each `*`, `?` (day fields), a value, a range
//! `a-b`, a step `*/n`, `a/n` or `a-b/n`, or a comma list of those; or one of `@yearly`,
//! `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`. When both day fields are
//! restricted a day matches when either does (cron's rule). The gap is measured by walking
//! every run over eight years from a fixed Monday (2024-01-01, so a leap day is covered twice
//! and the result does not depend on the clock), in the CronJob's time zone (cpm's CronJobs use
//! `Etc/UTC`, which has no daylight saving jumps).

use anyhow::{Context, bail};
use time::{Date, Duration, Month, Weekday};

/// One field: which values match.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    matches: Vec<bool>,
    /// Whether the field is restricted (does not start with `*` or `?`).
    restricted: bool,
}

impl Field {
    fn has(&self, v: u32) -> bool {
        self.matches.get(v as usize).copied().unwrap_or(false)
    }
}

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minute: Field,
    hour: Field,
    day_of_month: Field,
    month: Field,
    day_of_week: Field,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn value(s: &str, min: u32, max: u32, names: &[&str]) -> anyhow::Result<u32> {
    let upper = s.to_ascii_uppercase();
    if let Some(i) = names.iter().position(|n| *n == upper) {
        return Ok(u32::try_from(i).unwrap_or(u32::MAX) + min);
    }
    let v: u32 = s
        .parse()
        .with_context(|| format!("{s:?} is not a number or a name"))?;
    if v < min || v > max {
        bail!("{v} is outside {min}-{max}");
    }
    Ok(v)
}

fn field(s: &str, min: u32, max: u32, names: &[&str], question: bool) -> anyhow::Result<Field> {
    let mut matches = vec![false; max as usize + 1];
    let restricted = !(s.starts_with('*') || (question && s.starts_with('?')));
    for part in s.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, n)) => {
                let n: u32 = n.parse().with_context(|| format!("step {n:?}"))?;
                if n == 0 {
                    bail!("step 0 in {part:?}");
                }
                (r, Some(n))
            }
            None => (part, None),
        };
        let (lo, hi) = match range {
            "*" => (min, max),
            "?" if question => (min, max),
            _ => match range.split_once('-') {
                Some((a, b)) => (value(a, min, max, names)?, value(b, min, max, names)?),
                // `a/n` runs from a to the end of the range.
                None if step.is_some() => (value(range, min, max, names)?, max),
                None => {
                    let v = value(range, min, max, names)?;
                    (v, v)
                }
            },
        };
        if lo > hi {
            bail!("empty range {part:?}");
        }
        let step = step.unwrap_or(1) as usize;
        for v in (lo..=hi).step_by(step) {
            matches[v as usize] = true;
        }
    }
    Ok(Field {
        matches,
        restricted,
    })
}

impl Schedule {
    /// Parses a Kubernetes CronJob schedule.
    pub fn parse(schedule: &str) -> anyhow::Result<Self> {
        let expanded = match schedule.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s if s.starts_with('@') => bail!("unknown schedule macro {s:?}"),
            s => s,
        };
        let f: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = f.as_slice() else {
            bail!(
                "{schedule:?}: a schedule has five fields, this has {}",
                f.len()
            );
        };
        let named = |what: &str, r: anyhow::Result<Field>| {
            r.with_context(|| format!("{schedule:?}: {what}"))
        };
        Ok(Self {
            minute: named("minute", field(minute, 0, 59, &[], false))?,
            hour: named("hour", field(hour, 0, 23, &[], false))?,
            day_of_month: named("day of month", field(dom, 1, 31, &[], true))?,
            month: named("month", field(month, 1, 12, &MONTHS, false))?,
            day_of_week: named("day of week", field(dow, 0, 6, &WEEKDAYS, true))?,
        })
    }

    fn runs_on(&self, d: Date) -> bool {
        if !self.month.has(u32::from(u8::from(d.month()))) {
            return false;
        }
        let dom = self.day_of_month.has(u32::from(d.day()));
        let dow = self
            .day_of_week
            .has(u32::from(d.weekday().number_days_from_sunday()));
        if self.day_of_month.restricted && self.day_of_week.restricted {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// The longest time between two consecutive runs, in seconds (see the module docs).
    pub fn longest_gap_seconds(&self) -> anyhow::Result<u64> {
        let minutes_of_day: Vec<i64> = (0..24)
            .filter(|h| self.hour.has(*h))
            .flat_map(|h| {
                (0..60)
                    .filter(|m| self.minute.has(*m))
                    .map(move |m| i64::from(h * 60 + m))
            })
            .collect();
        let start = Date::from_calendar_date(2024, Month::January, 1)?;
        debug_assert_eq!(start.weekday(), Weekday::Monday);
        let days = 8 * 365 + 2;
        let (mut previous, mut longest): (Option<i64>, i64) = (None, 0);
        for day in 0..days {
            let date = start + Duration::days(day);
            if !self.runs_on(date) {
                continue;
            }
            for m in &minutes_of_day {
                let t = day * 1440 + m;
                if let Some(p) = previous {
                    longest = longest.max(t - p);
                }
                previous = Some(t);
            }
        }
        if longest == 0 {
            bail!("the schedule runs at most once in eight years");
        }
        Ok(u64::try_from(longest * 60)?)
    }
}

#[cfg(test)]
mod tests;
