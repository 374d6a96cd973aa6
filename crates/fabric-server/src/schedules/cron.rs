//! Cron expressions and their ticks in a time zone.
//!
//! **Syntax.** Five fields (`minute hour day-of-month month day-of-week`) or six with
//! seconds first. Each field is a comma-separated list of `*`, a value, a range `a-b`, and
//! any of these with a step `/n` (`*/15`, `10-40/10`, `5/20` = from 5 to the field's end).
//! Months may be named `jan`..`dec` and days of the week `sun`..`sat` (any case); the day
//! of the week is 0-7 with both 0 and 7 Sunday. As in Vixie cron, when both the day of the
//! month and the day of the week are restricted (neither is `*`), a day matches if either
//! does.
//!
//! **Time zones and DST.** Fields are local times in the schedule's IANA time zone. A local
//! time that a change to daylight saving time skips (02:30 on the night clocks jump from
//! 02:00 to 03:00) fires at the instant of the jump (03:00 local time), once however many
//! ticks fell in the gap. A local time that occurs twice (01:30 on the night clocks fall
//! back) fires once, at its first occurrence.

use std::fmt;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};

/// The longest cron expression accepted, in bytes.
pub const MAX_CRON_BYTES: usize = 256;

/// How many years ahead a tick is looked for (a schedule for February 30th never fires).
const SEARCH_YEARS: i16 = 30;

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    seconds: u64,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// The day-of-month field restricts (is not `*`).
    days_restricted: bool,
    /// The day-of-week field restricts (is not `*`).
    weekdays_restricted: bool,
}

/// Why a cron expression was refused: which field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronError(pub String);

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CronError {}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One field's bounds and names.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The value of `names[0]`.
    first_named: u32,
}

const SECOND: Field = Field {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
    first_named: 0,
};
const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
    first_named: 0,
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
    first_named: 0,
};
const DAY: Field = Field {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
    first_named: 0,
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &MONTHS,
    first_named: 1,
};
const WEEKDAY: Field = Field {
    name: "day of week",
    min: 0,
    max: 7,
    names: &WEEKDAYS,
    first_named: 0,
};

impl Field {
    fn value(&self, text: &str) -> Result<u32, CronError> {
        let lower = text.to_ascii_lowercase();
        if let Some(i) = self.names.iter().position(|n| *n == lower) {
            return Ok(self.first_named + i as u32);
        }
        let value: u32 = text
            .parse()
            .map_err(|_| CronError(format!("{} field: {text:?} is not a number", self.name)))?;
        if !(self.min..=self.max).contains(&value) {
            return Err(CronError(format!(
                "{} field: {value} is out of range {}-{}",
                self.name, self.min, self.max
            )));
        }
        Ok(value)
    }

    /// The bit set of the values `text` names; `true` when it is `*` alone.
    fn parse(&self, text: &str) -> Result<(u64, bool), CronError> {
        let mut bits = 0u64;
        for item in text.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((range, step)) => {
                    let step: u32 = step.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        CronError(format!(
                            "{} field: step {step:?} is not a positive number",
                            self.name
                        ))
                    })?;
                    (range, step)
                }
                None => (item, 1),
            };
            let (from, to) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(CronError(format!(
                        "{} field: the range {range:?} runs backwards",
                        self.name
                    )));
                }
                (a, b)
            } else if range.is_empty() {
                return Err(CronError(format!("{} field: an empty item", self.name)));
            } else {
                let a = self.value(range)?;
                // `a/n` runs from a to the end of the field; `a` alone is a.
                (a, if item.contains('/') { self.max } else { a })
            };
            let mut v = from;
            while v <= to {
                bits |= 1 << v;
                v += step;
            }
        }
        Ok((bits, text == "*"))
    }
}

impl Cron {
    /// Parses five fields (minute first) or six (second first).
    pub fn parse(text: &str) -> Result<Self, CronError> {
        if text.len() > MAX_CRON_BYTES {
            return Err(CronError(format!(
                "{} bytes; the limit is {MAX_CRON_BYTES}",
                text.len()
            )));
        }
        let fields: Vec<&str> = text.split_whitespace().collect();
        let (second, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(CronError(format!(
                    "{n} fields; a cron expression has 5 (minute hour day-of-month month \
                     day-of-week) or 6 (second first)"
                )));
            }
        };
        let (seconds, _) = SECOND.parse(second)?;
        let (minutes, _) = MINUTE.parse(rest[0])?;
        let (hours, _) = HOUR.parse(rest[1])?;
        let (days, days_any) = DAY.parse(rest[2])?;
        let (months, _) = MONTH.parse(rest[3])?;
        let (mut weekdays, weekdays_any) = WEEKDAY.parse(rest[4])?;
        // 7 is Sunday too.
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        Ok(Self {
            seconds,
            minutes,
            hours,
            days,
            months,
            weekdays,
            days_restricted: !days_any,
            weekdays_restricted: !weekdays_any,
        })
    }

    fn day_matches(&self, date: Date) -> bool {
        let day = self.days & (1 << date.day()) != 0;
        let weekday = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => day || weekday,
            _ => day && weekday,
        }
    }

    /// The first local time at or after `from` (whole seconds) that the fields match.
    fn next_local(&self, from: DateTime) -> Option<DateTime> {
        let (mut y, mut mo, mut d) = (from.year(), from.month(), from.day());
        let (mut h, mut mi, mut s) = (from.hour(), from.minute(), from.second());
        let last_year = y.saturating_add(SEARCH_YEARS);
        let next_day = |y: &mut i16, mo: &mut i8, d: &mut i8| {
            *d += 1;
            let days = Date::new(*y, *mo, 1).map_or(28, |date| date.days_in_month());
            if *d > days {
                *d = 1;
                *mo += 1;
                if *mo > 12 {
                    *mo = 1;
                    *y += 1;
                }
            }
        };
        while y <= last_year {
            match next_bit(self.months, mo as u32, 12) {
                Some(m) if m == mo as u32 => {}
                Some(m) => {
                    (mo, d, h, mi, s) = (m as i8, 1, 0, 0, 0);
                }
                None => {
                    (y, mo, d, h, mi, s) = (y + 1, 1, 1, 0, 0, 0);
                    continue;
                }
            }
            let first = Date::new(y, mo, 1).ok()?;
            let found = (d..=first.days_in_month())
                .find(|&day| Date::new(y, mo, day).is_ok_and(|date| self.day_matches(date)));
            match found {
                Some(day) if day == d => {}
                Some(day) => (d, h, mi, s) = (day, 0, 0, 0),
                None => {
                    (d, h, mi, s) = (first.days_in_month(), 0, 0, 0);
                    next_day(&mut y, &mut mo, &mut d);
                    continue;
                }
            }
            match next_bit(self.hours, h as u32, 23) {
                Some(x) if x == h as u32 => {}
                Some(x) => (h, mi, s) = (x as i8, 0, 0),
                None => {
                    (h, mi, s) = (0, 0, 0);
                    next_day(&mut y, &mut mo, &mut d);
                    continue;
                }
            }
            match next_bit(self.minutes, mi as u32, 59) {
                Some(x) if x == mi as u32 => {}
                Some(x) => (mi, s) = (x as i8, 0),
                None => {
                    (mi, s) = (0, 0);
                    h += 1;
                    if h > 23 {
                        h = 0;
                        next_day(&mut y, &mut mo, &mut d);
                    }
                    continue;
                }
            }
            match next_bit(self.seconds, s as u32, 59) {
                Some(x) => s = x as i8,
                None => {
                    s = 0;
                    mi += 1;
                    if mi > 59 {
                        mi = 0;
                        h += 1;
                        if h > 23 {
                            h = 0;
                            next_day(&mut y, &mut mo, &mut d);
                        }
                    }
                    continue;
                }
            }
            return DateTime::new(y, mo, d, h, mi, s, 0).ok();
        }
        None
    }

    /// The first tick strictly after `after`, in `tz` (see the module's notes on DST);
    /// `None` when the fields match no date in the next [`SEARCH_YEARS`] years.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = tz.to_datetime(after);
        let mut from = DateTime::new(
            start.year(),
            start.month(),
            start.day(),
            start.hour(),
            start.minute(),
            start.second(),
            0,
        )
        .ok()?
        .checked_add(jiff::SignedDuration::from_secs(1))
        .ok()?;
        // Local times map to instants in order, so the first match whose instant is after
        // `after` is the answer; only the second pass over a repeated hour needs more
        // than one step.
        for _ in 0..100_000 {
            let local = self.next_local(from)?;
            let instant = resolve(tz, local)?;
            if instant > after {
                return Some(instant);
            }
            from = local.checked_add(jiff::SignedDuration::from_secs(1)).ok()?;
        }
        None
    }

    /// The last tick at or before `now`, given a tick `known` at or before `now` (the
    /// schedule's due tick): what fires after downtime, when only the latest missed tick
    /// does. Looks back from `now` over growing windows, so a frequent schedule after a
    /// long downtime costs the ticks of one window, not of the whole downtime.
    pub fn last_at_or_before(&self, known: Timestamp, now: Timestamp, tz: &TimeZone) -> Timestamp {
        let latest_from = |start: Timestamp| {
            let mut last = None;
            let mut probe = self.next_after(start, tz);
            while let Some(tick) = probe.filter(|tick| *tick <= now) {
                last = Some(tick);
                probe = self.next_after(tick, tz);
            }
            last
        };
        for window_secs in [2, 120, 7_200, 172_800, 5_529_600, 63_244_800] {
            let Ok(start) = now.checked_sub(jiff::SignedDuration::from_secs(window_secs)) else {
                break;
            };
            if start < known {
                break;
            }
            if let Some(last) = latest_from(start) {
                return last;
            }
        }
        latest_from(known).unwrap_or(known).max(known)
    }
}

/// The smallest set bit of `bits` at or above `from`, up to `max`.
fn next_bit(bits: u64, from: u32, max: u32) -> Option<u32> {
    (from..=max).find(|v| bits & (1 << v) != 0)
}

/// The instant of a local time: its only one, the first of a repeated one, and for a
/// skipped one the instant the clocks skipped it.
fn resolve(tz: &TimeZone, local: DateTime) -> Option<Timestamp> {
    match tz.to_ambiguous_timestamp(local).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(local).ok(),
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(local).ok(),
        AmbiguousOffset::Gap { after, .. } => {
            // Read with the later offset the local time falls before the jump; the jump
            // is the first transition after that.
            let early = after.to_timestamp(local).ok()?;
            tz.following(early).next().map(|t| t.timestamp())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn ticks(cron: &str, tz: &str, after: &str, n: usize) -> Vec<String> {
        let cron = Cron::parse(cron).unwrap();
        let tz = TimeZone::get(tz).unwrap();
        let mut at = ts(after);
        (0..n)
            .map(|_| {
                at = cron.next_after(at, &tz).unwrap();
                at.to_string()
            })
            .collect()
    }

    #[test]
    fn five_fields_tick_on_minutes_and_six_on_seconds() {
        assert_eq!(
            ticks("*/15 * * * *", "UTC", "2026-01-01T00:07:30Z", 3),
            [
                "2026-01-01T00:15:00Z",
                "2026-01-01T00:30:00Z",
                "2026-01-01T00:45:00Z"
            ]
        );
        assert_eq!(
            ticks("* * * * * *", "UTC", "2026-01-01T00:00:00.500Z", 3),
            [
                "2026-01-01T00:00:01Z",
                "2026-01-01T00:00:02Z",
                "2026-01-01T00:00:03Z"
            ]
        );
        assert_eq!(
            ticks("10,40 0 12 * * *", "UTC", "2026-01-01T12:00:10Z", 2),
            ["2026-01-01T12:00:40Z", "2026-01-02T12:00:10Z"]
        );
    }

    #[test]
    fn ranges_lists_steps_and_names() {
        // 09:00 on weekdays.
        assert_eq!(
            ticks("0 9 * * mon-fri", "UTC", "2026-01-02T10:00:00Z", 2),
            ["2026-01-05T09:00:00Z", "2026-01-06T09:00:00Z"]
        );
        // Quarterly, by month names.
        assert_eq!(
            ticks("0 0 1 jan,apr,JUL,oct *", "UTC", "2026-01-01T00:00:00Z", 2),
            ["2026-04-01T00:00:00Z", "2026-07-01T00:00:00Z"]
        );
        // A step from a start value, and 7 as Sunday.
        assert_eq!(
            ticks("5/20 * * * *", "UTC", "2026-01-01T00:00:00Z", 3),
            [
                "2026-01-01T00:05:00Z",
                "2026-01-01T00:25:00Z",
                "2026-01-01T00:45:00Z"
            ]
        );
        assert_eq!(
            ticks("0 0 * * 7", "UTC", "2026-01-01T00:00:00Z", 1),
            ["2026-01-04T00:00:00Z"]
        );
        // Day of month and day of week both restricted: either matches (the 13th, or a Friday).
        assert_eq!(
            ticks("0 0 13 * fri", "UTC", "2026-02-10T00:00:00Z", 3),
            [
                "2026-02-13T00:00:00Z",
                "2026-02-20T00:00:00Z",
                "2026-02-27T00:00:00Z"
            ]
        );
        // February 29th, across years.
        assert_eq!(
            ticks("0 0 29 2 *", "UTC", "2026-01-01T00:00:00Z", 1),
            ["2028-02-29T00:00:00Z"]
        );
        // Past the end of a month and a year.
        assert_eq!(
            ticks("0 0 31 * *", "UTC", "2026-11-15T00:00:00Z", 2),
            ["2026-12-31T00:00:00Z", "2027-01-31T00:00:00Z"]
        );
    }

    #[test]
    fn a_date_that_never_comes_has_no_tick() {
        let cron = Cron::parse("0 0 30 2 *").unwrap();
        assert_eq!(
            cron.next_after(ts("2026-01-01T00:00:00Z"), &TimeZone::UTC),
            None
        );
    }

    #[test]
    fn bad_expressions_say_which_field() {
        for (text, says) in [
            ("* * * *", "4 fields"),
            ("* * * * * * *", "7 fields"),
            ("60 * * * *", "minute field: 60 is out of range 0-59"),
            ("* 24 * * *", "hour field"),
            ("* * 0 * *", "day of month field"),
            ("* * * 13 *", "month field"),
            ("* * * * 8", "day of week field"),
            ("* * * * mon-sun-x", "day of week field"),
            ("*/0 * * * *", "step"),
            ("30-10 * * * *", "backwards"),
            ("a * * * *", "not a number"),
            ("1,,2 * * * *", "empty item"),
            ("61 * * * * *", "second field"),
        ] {
            let err = Cron::parse(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text:?}: {err}");
        }
        let long = format!("{} * * * *", "1,".repeat(200) + "1");
        assert!(
            Cron::parse(&long)
                .unwrap_err()
                .to_string()
                .contains("limit is 256")
        );
    }

    #[test]
    fn a_time_zone_moves_the_ticks() {
        // 09:00 in Tokyo (UTC+9, no DST) is 00:00 UTC.
        assert_eq!(
            ticks("0 9 * * *", "Asia/Tokyo", "2026-06-01T01:00:00Z", 1),
            ["2026-06-02T00:00:00Z"]
        );
    }

    #[test]
    fn a_skipped_local_time_fires_at_the_jump() {
        // New York springs forward on 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00Z).
        assert_eq!(
            ticks("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 3),
            [
                "2026-03-08T07:00:00Z", // the jump, 03:00 EDT
                "2026-03-09T06:30:00Z", // 02:30 EDT
                "2026-03-10T06:30:00Z",
            ]
        );
        // Every 20 minutes: the ticks in the gap fire once, at the jump, then on as usual.
        assert_eq!(
            ticks(
                "*/20 * * * *",
                "America/New_York",
                "2026-03-08T06:30:00Z",
                4
            ),
            [
                "2026-03-08T06:40:00Z", // 01:40 EST
                "2026-03-08T07:00:00Z", // 02:00-02:40 skipped: the jump (03:00 EDT)
                "2026-03-08T07:20:00Z", // 03:20 EDT
                "2026-03-08T07:40:00Z",
            ]
        );
    }

    #[test]
    fn a_repeated_local_time_fires_once() {
        // New York falls back on 2026-11-01: 02:00 EDT becomes 01:00 EST; 01:30 happens
        // at 05:30Z and at 06:30Z.
        assert_eq!(
            ticks("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
            ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
        );
        // Hourly across the fold: 01:00 fires once (its first occurrence).
        assert_eq!(
            ticks("0 * * * *", "America/New_York", "2026-11-01T04:30:00Z", 3),
            [
                "2026-11-01T05:00:00Z", // 01:00 EDT
                "2026-11-01T07:00:00Z", // 02:00 EST (01:00 EST is a repeat)
                "2026-11-01T08:00:00Z",
            ]
        );
    }

    #[test]
    fn the_last_tick_before_now_is_found_after_a_long_downtime() {
        let tz = TimeZone::UTC;
        let every_second = Cron::parse("* * * * * *").unwrap();
        let known = ts("2026-01-01T00:00:00Z");
        let now = ts("2026-03-01T12:34:56.700Z");
        assert_eq!(
            every_second.last_at_or_before(known, now, &tz),
            ts("2026-03-01T12:34:56Z")
        );
        let yearly = Cron::parse("0 0 1 1 *").unwrap();
        assert_eq!(yearly.last_at_or_before(known, now, &tz), known);
        let nightly = Cron::parse("0 3 * * *").unwrap();
        assert_eq!(
            nightly.last_at_or_before(known, now, &tz),
            ts("2026-03-01T03:00:00Z")
        );
        // Nothing missed: the known tick is the last.
        assert_eq!(every_second.last_at_or_before(now, now, &tz), now);
    }
}
