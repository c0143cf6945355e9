//! CronJob schedules (robfig/cron's standard five fields, as Kubernetes accepts them): whether
//! a minute is a scheduled one. Mirrors `xtask/src/manifests/cron.rs`, which measures gaps.

use time::OffsetDateTime;

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    fields: [Field; 5],
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    matches: Vec<bool>,
    restricted: bool,
}

impl Field {
    fn has(&self, v: u32) -> bool {
        self.matches.get(v as usize).copied().unwrap_or(false)
    }
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn value(s: &str, min: u32, max: u32, names: &[&str]) -> Result<u32, String> {
    let upper = s.to_ascii_uppercase();
    if let Some(i) = names.iter().position(|n| *n == upper) {
        return Ok(u32::try_from(i).unwrap_or(u32::MAX) + min);
    }
    let v: u32 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number or a name"))?;
    if v < min || v > max {
        return Err(format!("{v} is outside {min}-{max}"));
    }
    Ok(v)
}

fn field(s: &str, min: u32, max: u32, names: &[&str], question: bool) -> Result<Field, String> {
    let mut matches = vec![false; max as usize + 1];
    let restricted = !(s.starts_with('*') || (question && s.starts_with('?')));
    for part in s.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, n)) => {
                let n: u32 = n.parse().map_err(|_| format!("step {n:?}"))?;
                if n == 0 {
                    return Err(format!("step 0 in {part:?}"));
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
                None if step.is_some() => (value(range, min, max, names)?, max),
                None => {
                    let v = value(range, min, max, names)?;
                    (v, v)
                }
            },
        };
        if lo > hi {
            return Err(format!("empty range {part:?}"));
        }
        for v in (lo..=hi).step_by(step.unwrap_or(1) as usize) {
            matches[v as usize] = true;
        }
    }
    Ok(Field {
        matches,
        restricted,
    })
}

impl Schedule {
    /// Parses a CronJob schedule; `Err` says what is wrong.
    pub fn parse(schedule: &str) -> Result<Self, String> {
        let expanded = match schedule.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s if s.starts_with('@') => return Err(format!("unknown schedule macro {s:?}")),
            s => s,
        };
        let f: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = f.as_slice() else {
            return Err(format!("{schedule:?}: a schedule has five fields"));
        };
        Ok(Self {
            fields: [
                field(minute, 0, 59, &[], false)?,
                field(hour, 0, 23, &[], false)?,
                field(dom, 1, 31, &[], true)?,
                field(month, 1, 12, &MONTHS, false)?,
                field(dow, 0, 6, &WEEKDAYS, true)?,
            ],
        })
    }

    /// Whether the schedule fires in the minute of `t` (in `t`'s offset).
    pub fn matches(&self, t: OffsetDateTime) -> bool {
        let [minute, hour, dom, month, dow] = &self.fields;
        let day_dom = dom.has(u32::from(t.day()));
        let day_dow = dow.has(u32::from(t.weekday().number_days_from_sunday()));
        let day = if dom.restricted && dow.restricted {
            day_dom || day_dow
        } else {
            day_dom && day_dow
        };
        minute.has(u32::from(t.minute()))
            && hour.has(u32::from(t.hour()))
            && month.has(u32::from(u8::from(t.month())))
            && day
    }
}

#[cfg(test)]
mod tests;
