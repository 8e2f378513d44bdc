//! Dates, date-times and times with partial precision, as FHIRPath compares and computes
//! them: comparison stops at the coarser precision (and is then unknown), time zones are
//! normalised when both sides have one, calendar arithmetic clamps to month ends.

use std::cmp::Ordering;
use std::fmt;

/// How much of a date, date-time or time is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Precision {
    /// `2014`
    Year,
    /// `2014-01`
    Month,
    /// `2014-01-05`
    Day,
    /// `T10` (read as `T10:00`, see [`DateTime::parse_datetime`])
    Hour,
    /// `T10:30`
    Minute,
    /// `T10:30:00`
    Second,
    /// `T10:30:00.000`
    Millisecond,
}

impl Precision {
    /// Seconds and milliseconds are one precision for comparison.
    fn comparison_level(self) -> Precision {
        if self == Precision::Millisecond {
            Precision::Second
        } else {
            self
        }
    }
}

/// A date or date-time (FHIRPath `Date` and `DateTime`, FHIR `date`, `dateTime`, `instant`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTime {
    year: i32,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    millisecond: u16,
    precision: Precision,
    /// Offset from UTC in minutes, when given.
    offset: Option<i16>,
}

/// A time of day (FHIRPath `Time`, FHIR `time`); never has a time zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Time {
    hour: u8,
    minute: u8,
    second: u8,
    millisecond: u16,
    precision: Precision,
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days in `month` (1–12) of `year`.
pub fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i32, month: u8, day: u8) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // day is 1..=31 and month 1..=12 by construction.
    (year, month as u8, day as u8)
}

struct Cursor<'t> {
    text: &'t [u8],
    at: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, count: usize) -> Option<u32> {
        let slice = self.text.get(self.at..self.at + count)?;
        if !slice.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.at += count;
        Some(
            slice
                .iter()
                .fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0')),
        )
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.text.get(self.at) == Some(&byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn done(&self) -> bool {
        self.at == self.text.len()
    }
}

/// Parses `HH[:MM[:SS[.fff…]]]` into (hour, minute, second, ms, precision).
fn parse_time_part(cursor: &mut Cursor<'_>) -> Option<(u8, u8, u8, u16, Precision)> {
    let hour = cursor.digits(2)?;
    if hour > 23 {
        return None;
    }
    let mut result = (hour as u8, 0u8, 0u8, 0u16, Precision::Hour);
    if !cursor.eat(b':') {
        return Some(result);
    }
    let minute = cursor.digits(2)?;
    if minute > 59 {
        return None;
    }
    result.1 = minute as u8;
    result.4 = Precision::Minute;
    if !cursor.eat(b':') {
        return Some(result);
    }
    let second = cursor.digits(2)?;
    if second > 59 {
        return None;
    }
    result.2 = second as u8;
    result.4 = Precision::Second;
    if cursor.eat(b'.') {
        let start = cursor.at;
        while cursor.text.get(cursor.at).is_some_and(u8::is_ascii_digit) {
            cursor.at += 1;
        }
        let fraction = &cursor.text[start..cursor.at];
        if fraction.is_empty() {
            return None;
        }
        let mut millis = 0u16;
        for i in 0..3 {
            millis = millis * 10 + fraction.get(i).map_or(0, |b| u16::from(b - b'0'));
        }
        result.3 = millis;
        result.4 = Precision::Millisecond;
    }
    Some(result)
}

impl DateTime {
    /// Parses a FHIRPath date literal body or FHIR `date`: `YYYY[-MM[-DD]]`.
    pub fn parse_date(text: &str) -> Option<DateTime> {
        let mut cursor = Cursor {
            text: text.as_bytes(),
            at: 0,
        };
        let value = Self::parse_date_part(&mut cursor)?;
        cursor.done().then_some(value)
    }

    fn parse_date_part(cursor: &mut Cursor<'_>) -> Option<DateTime> {
        let year = cursor.digits(4)?;
        let mut value = DateTime {
            year: year as i32,
            month: 1,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
            millisecond: 0,
            precision: Precision::Year,
            offset: None,
        };
        if cursor.text.get(cursor.at) == Some(&b'-')
            && cursor
                .text
                .get(cursor.at + 1)
                .is_some_and(u8::is_ascii_digit)
        {
            cursor.at += 1;
            let month = cursor.digits(2)?;
            if !(1..=12).contains(&month) {
                return None;
            }
            value.month = month as u8;
            value.precision = Precision::Month;
            if cursor.text.get(cursor.at) == Some(&b'-')
                && cursor
                    .text
                    .get(cursor.at + 1)
                    .is_some_and(u8::is_ascii_digit)
            {
                cursor.at += 1;
                let day = cursor.digits(2)?;
                if day < 1 || day > u32::from(days_in_month(value.year, value.month)) {
                    return None;
                }
                value.day = day as u8;
                value.precision = Precision::Day;
            }
        }
        Some(value)
    }

    /// Parses a date-time: `YYYY[-MM[-DD]][T[HH[:MM[:SS[.fff]]]][Z|±HH:MM]]` (FHIR
    /// `dateTime` and `instant`, and FHIRPath literals after the `@`). A time of hour
    /// precision (`T08`, legal in FHIRPath literals but not in FHIR) is read as `T08:00`.
    pub fn parse_datetime(text: &str) -> Option<DateTime> {
        let mut cursor = Cursor {
            text: text.as_bytes(),
            at: 0,
        };
        let mut value = Self::parse_date_part(&mut cursor)?;
        if cursor.eat(b'T') {
            if value.precision != Precision::Day && !cursor.done() {
                return None;
            }
            if !cursor.done() && cursor.text.get(cursor.at).is_some_and(u8::is_ascii_digit) {
                let (hour, minute, second, millisecond, precision) = parse_time_part(&mut cursor)?;
                value.hour = hour;
                value.minute = minute;
                value.second = second;
                value.millisecond = millisecond;
                value.precision = precision.max(Precision::Minute);
            }
        }
        if !cursor.done() {
            if value.precision < Precision::Hour {
                return None;
            }
            value.offset = Some(parse_offset(&mut cursor)?);
        }
        cursor.done().then_some(value)
    }

    /// The current UTC time at millisecond precision.
    pub fn now() -> DateTime {
        let elapsed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let millis = i64::try_from(elapsed.as_millis()).unwrap_or(0);
        let mut value = DateTime::from_epoch_millis(millis).unwrap_or(DateTime {
            year: 1970,
            month: 1,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
            millisecond: 0,
            precision: Precision::Millisecond,
            offset: Some(0),
        });
        value.offset = Some(0);
        value
    }

    fn from_epoch_millis(millis: i64) -> Option<DateTime> {
        let days = millis.div_euclid(86_400_000);
        let rest = millis.rem_euclid(86_400_000);
        let (year, month, day) = civil_from_days(days);
        Some(DateTime {
            year: i32::try_from(year)
                .ok()
                .filter(|y| (1..=9999).contains(y))?,
            month,
            day,
            hour: (rest / 3_600_000) as u8,
            minute: (rest / 60_000 % 60) as u8,
            second: (rest / 1000 % 60) as u8,
            millisecond: (rest % 1000) as u16,
            precision: Precision::Millisecond,
            offset: None,
        })
    }

    fn epoch_millis(&self) -> i64 {
        let days = days_from_civil(self.year, self.month, self.day);
        days * 86_400_000
            + i64::from(self.hour) * 3_600_000
            + i64::from(self.minute) * 60_000
            + i64::from(self.second) * 1000
            + i64::from(self.millisecond)
    }

    /// The same instant expressed in UTC (unchanged without an offset or a time).
    fn to_utc(self) -> DateTime {
        match self.offset {
            Some(offset) if self.precision >= Precision::Hour && offset != 0 => {
                let millis = self.epoch_millis() - i64::from(offset) * 60_000;
                match DateTime::from_epoch_millis(millis) {
                    Some(mut utc) => {
                        utc.precision = self.precision;
                        utc.offset = Some(0);
                        utc
                    }
                    None => self,
                }
            }
            _ => self,
        }
    }

    /// The precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The offset from UTC in minutes, when given.
    pub fn offset_minutes(&self) -> Option<i16> {
        self.offset
    }

    /// The date part only (precision at most [`Precision::Day`], no offset).
    pub fn date_part(&self) -> DateTime {
        let mut value = *self;
        value.precision = value.precision.min(Precision::Day);
        value.hour = 0;
        value.minute = 0;
        value.second = 0;
        value.millisecond = 0;
        value.offset = None;
        value
    }

    /// The time part, when the value has one.
    pub fn time_part(&self) -> Option<Time> {
        (self.precision >= Precision::Hour).then_some(Time {
            hour: self.hour,
            minute: self.minute,
            second: self.second,
            millisecond: self.millisecond,
            precision: self.precision,
        })
    }

    /// Comparison per FHIRPath: `None` when the result is unknown (different precisions that
    /// agree as far as both go, or a time zone on one side only).
    pub fn compare(&self, other: &DateTime) -> Option<Ordering> {
        let (a, b) = if self.precision >= Precision::Hour && other.precision >= Precision::Hour {
            match (self.offset, other.offset) {
                (Some(_), Some(_)) => (self.to_utc(), other.to_utc()),
                (None, None) => (*self, *other),
                _ => return None,
            }
        } else {
            (*self, *other)
        };
        let common = a
            .precision
            .comparison_level()
            .min(b.precision.comparison_level());
        let parts_a = [
            i64::from(a.year),
            i64::from(a.month),
            i64::from(a.day),
            i64::from(a.hour),
            i64::from(a.minute),
            i64::from(a.second) * 1000 + i64::from(a.millisecond),
        ];
        let parts_b = [
            i64::from(b.year),
            i64::from(b.month),
            i64::from(b.day),
            i64::from(b.hour),
            i64::from(b.minute),
            i64::from(b.second) * 1000 + i64::from(b.millisecond),
        ];
        let levels = match common {
            Precision::Year => 1,
            Precision::Month => 2,
            Precision::Day => 3,
            Precision::Hour => 4,
            Precision::Minute => 5,
            Precision::Second | Precision::Millisecond => 6,
        };
        for i in 0..levels {
            match parts_a[i].cmp(&parts_b[i]) {
                Ordering::Equal => {}
                other => return Some(other),
            }
        }
        (a.precision.comparison_level() == b.precision.comparison_level())
            .then_some(Ordering::Equal)
    }

    /// FHIRPath equivalence: same precision and equal.
    pub fn equivalent(&self, other: &DateTime) -> bool {
        self.precision.comparison_level() == other.precision.comparison_level()
            && self.compare(other) == Some(Ordering::Equal)
    }

    /// Adds `amount` of a calendar unit; `None` when the result leaves years 1–9999.
    pub fn add(&self, amount: i64, unit: CalendarUnit) -> Option<DateTime> {
        let mut value = *self;
        match unit {
            CalendarUnit::Year => {
                value.year = i32::try_from(i64::from(value.year).checked_add(amount)?).ok()?;
                value.day = value.day.min(days_in_month(value.year, value.month));
            }
            CalendarUnit::Month => {
                let months = (i64::from(value.year) * 12 + i64::from(value.month) - 1)
                    .checked_add(amount)?;
                value.year = i32::try_from(months.div_euclid(12)).ok()?;
                value.month = (months.rem_euclid(12) + 1) as u8;
                value.day = value.day.min(days_in_month(value.year, value.month));
            }
            _ => {
                let unit_millis: i64 = match unit {
                    CalendarUnit::Week => 7 * 86_400_000,
                    CalendarUnit::Day => 86_400_000,
                    CalendarUnit::Hour => 3_600_000,
                    CalendarUnit::Minute => 60_000,
                    CalendarUnit::Second => 1000,
                    _ => 1,
                };
                let millis = value
                    .epoch_millis()
                    .checked_add(amount.checked_mul(unit_millis)?)?;
                let moved = DateTime::from_epoch_millis(millis)?;
                value.year = moved.year;
                value.month = moved.month;
                value.day = moved.day;
                value.hour = moved.hour;
                value.minute = moved.minute;
                value.second = moved.second;
                value.millisecond = moved.millisecond;
            }
        }
        (1..=9999).contains(&value.year).then_some(value)
    }

    /// The earliest (`high = false`) or latest instant the value may stand for, to
    /// `digits` of precision (4 year, 6 month, 8 day, 12 minute, 14 second, 17 millisecond).
    /// Without an offset, the lowest boundary takes +14:00 and the highest −12:00.
    pub fn boundary(&self, digits: u32, high: bool, is_date: bool) -> Option<DateTime> {
        let precision = match digits {
            4 => Precision::Year,
            6 => Precision::Month,
            8 => Precision::Day,
            10 => Precision::Hour,
            12 => Precision::Minute,
            14 => Precision::Second,
            17 => Precision::Millisecond,
            _ => return None,
        };
        if is_date && precision > Precision::Day {
            return None;
        }
        let mut value = *self;
        if value.precision < Precision::Month {
            value.month = if high { 12 } else { 1 };
        }
        if value.precision < Precision::Day {
            value.day = if high {
                days_in_month(value.year, value.month)
            } else {
                1
            };
        }
        if value.precision < Precision::Hour {
            value.hour = if high { 23 } else { 0 };
        }
        if value.precision < Precision::Minute {
            value.minute = if high { 59 } else { 0 };
        }
        if value.precision < Precision::Second {
            value.second = if high { 59 } else { 0 };
        }
        if value.precision < Precision::Millisecond {
            value.millisecond = if high { 999 } else { 0 };
        }
        value.precision = precision;
        if precision >= Precision::Hour {
            if value.offset.is_none() {
                value.offset = Some(if high { -12 * 60 } else { 14 * 60 });
            }
        } else {
            value.offset = None;
        }
        Some(value)
    }
}

fn parse_offset(cursor: &mut Cursor<'_>) -> Option<i16> {
    if cursor.eat(b'Z') {
        return Some(0);
    }
    let sign: i16 = if cursor.eat(b'+') {
        1
    } else if cursor.eat(b'-') {
        -1
    } else {
        return None;
    };
    let hours = cursor.digits(2)?;
    if !cursor.eat(b':') {
        return None;
    }
    let minutes = cursor.digits(2)?;
    if hours > 14 || minutes > 59 {
        return None;
    }
    Some(sign * (hours as i16 * 60 + minutes as i16))
}

/// The calendar units date arithmetic accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CalendarUnit {
    /// `year(s)`
    Year,
    /// `month(s)`
    Month,
    /// `week(s)`, `'wk'`
    Week,
    /// `day(s)`, `'d'`
    Day,
    /// `hour(s)`, `'h'`
    Hour,
    /// `minute(s)`, `'min'`
    Minute,
    /// `second(s)`, `'s'`
    Second,
    /// `millisecond(s)`, `'ms'`
    Millisecond,
}

impl CalendarUnit {
    /// The unit for a calendar keyword or a definite-duration UCUM code. `'a'` and `'mo'` are
    /// not calendar units (their length is an average), so they give `None`.
    pub fn from_unit(unit: &str) -> Option<CalendarUnit> {
        Some(match unit {
            "year" | "years" => CalendarUnit::Year,
            "month" | "months" => CalendarUnit::Month,
            "week" | "weeks" | "wk" => CalendarUnit::Week,
            "day" | "days" | "d" => CalendarUnit::Day,
            "hour" | "hours" | "h" => CalendarUnit::Hour,
            "minute" | "minutes" | "min" => CalendarUnit::Minute,
            "second" | "seconds" | "s" => CalendarUnit::Second,
            "millisecond" | "milliseconds" | "ms" => CalendarUnit::Millisecond,
            _ => return None,
        })
    }
}

fn write_offset(f: &mut fmt::Formatter<'_>, offset: i16) -> fmt::Result {
    if offset == 0 {
        return write!(f, "Z");
    }
    let sign = if offset < 0 { '-' } else { '+' };
    let abs = offset.unsigned_abs();
    write!(f, "{sign}{:02}:{:02}", abs / 60, abs % 60)
}

impl fmt::Display for DateTime {
    /// FHIR format without the `@` of literals (`2014-01-05T10:30:00.000+01:00`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.year)?;
        if self.precision >= Precision::Month {
            write!(f, "-{:02}", self.month)?;
        }
        if self.precision >= Precision::Day {
            write!(f, "-{:02}", self.day)?;
        }
        if self.precision >= Precision::Hour {
            write!(f, "T{:02}:{:02}", self.hour, self.minute)?;
        }
        if self.precision >= Precision::Second {
            write!(f, ":{:02}", self.second)?;
        }
        if self.precision >= Precision::Millisecond {
            write!(f, ".{:03}", self.millisecond)?;
        }
        if self.precision >= Precision::Hour
            && let Some(offset) = self.offset
        {
            write_offset(f, offset)?;
        }
        Ok(())
    }
}

impl Time {
    /// Parses `HH[:MM[:SS[.fff]]]` (no time zone).
    pub fn parse(text: &str) -> Option<Time> {
        let mut cursor = Cursor {
            text: text.as_bytes(),
            at: 0,
        };
        let (hour, minute, second, millisecond, precision) = parse_time_part(&mut cursor)?;
        cursor.done().then_some(Time {
            hour,
            minute,
            second,
            millisecond,
            precision,
        })
    }

    /// The precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    fn parts(&self) -> [i64; 3] {
        [
            i64::from(self.hour),
            i64::from(self.minute),
            i64::from(self.second) * 1000 + i64::from(self.millisecond),
        ]
    }

    /// Comparison per FHIRPath (`None`: unknown, different precisions).
    pub fn compare(&self, other: &Time) -> Option<Ordering> {
        let common = self
            .precision
            .comparison_level()
            .min(other.precision.comparison_level());
        let levels = match common {
            Precision::Minute => 2,
            Precision::Second | Precision::Millisecond => 3,
            _ => 1,
        };
        let (a, b) = (self.parts(), other.parts());
        for i in 0..levels {
            match a[i].cmp(&b[i]) {
                Ordering::Equal => {}
                other => return Some(other),
            }
        }
        (self.precision.comparison_level() == other.precision.comparison_level())
            .then_some(Ordering::Equal)
    }

    /// FHIRPath equivalence.
    pub fn equivalent(&self, other: &Time) -> bool {
        self.precision.comparison_level() == other.precision.comparison_level()
            && self.compare(other) == Some(Ordering::Equal)
    }

    /// Adds an amount of hours, minutes, seconds or milliseconds, wrapping at midnight.
    pub fn add(&self, amount: i64, unit: CalendarUnit) -> Option<Time> {
        let unit_millis: i64 = match unit {
            CalendarUnit::Hour => 3_600_000,
            CalendarUnit::Minute => 60_000,
            CalendarUnit::Second => 1000,
            CalendarUnit::Millisecond => 1,
            _ => return None,
        };
        let current = i64::from(self.hour) * 3_600_000
            + i64::from(self.minute) * 60_000
            + i64::from(self.second) * 1000
            + i64::from(self.millisecond);
        let total = current
            .checked_add(amount.checked_mul(unit_millis)?)?
            .rem_euclid(86_400_000);
        Some(Time {
            hour: (total / 3_600_000) as u8,
            minute: (total / 60_000 % 60) as u8,
            second: (total / 1000 % 60) as u8,
            millisecond: (total % 1000) as u16,
            precision: self.precision,
        })
    }

    /// The earliest or latest time the value may stand for, to `digits` (2, 4, 6, 9).
    pub fn boundary(&self, digits: u32, high: bool) -> Option<Time> {
        let precision = match digits {
            2 => Precision::Hour,
            4 => Precision::Minute,
            6 => Precision::Second,
            9 => Precision::Millisecond,
            _ => return None,
        };
        let mut value = *self;
        if value.precision < Precision::Minute {
            value.minute = if high { 59 } else { 0 };
        }
        if value.precision < Precision::Second {
            value.second = if high { 59 } else { 0 };
        }
        if value.precision < Precision::Millisecond {
            value.millisecond = if high { 999 } else { 0 };
        }
        value.precision = precision;
        Some(value)
    }

    /// The current UTC time of day.
    pub fn now() -> Time {
        DateTime::now().time_part().unwrap_or(Time {
            hour: 0,
            minute: 0,
            second: 0,
            millisecond: 0,
            precision: Precision::Millisecond,
        })
    }
}

impl fmt::Display for Time {
    /// `HH:MM[:SS[.fff]]` (FHIR format, without the `@T` of literals).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}", self.hour)?;
        if self.precision >= Precision::Minute {
            write!(f, ":{:02}", self.minute)?;
        }
        if self.precision >= Precision::Second {
            write!(f, ":{:02}", self.second)?;
        }
        if self.precision >= Precision::Millisecond {
            write!(f, ".{:03}", self.millisecond)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dt(text: &str) -> DateTime {
        DateTime::parse_datetime(text).expect("valid date-time")
    }

    #[test]
    fn parses_partial_precision() {
        assert_eq!(dt("2015").precision(), Precision::Year);
        assert_eq!(dt("2015-02-04T14").to_string(), "2015-02-04T14:00");
        assert_eq!(
            dt("2015-02-04T14:34:28.123+10:00").to_string(),
            "2015-02-04T14:34:28.123+10:00"
        );
        assert!(DateTime::parse_datetime("2015-13").is_none());
        assert!(DateTime::parse_datetime("2015-02-30").is_none());
        assert!(DateTime::parse_date("2015-02-04T10").is_none());
        assert_eq!(Time::parse("14:34").unwrap().to_string(), "14:34");
    }

    #[test]
    fn compares_with_precision_and_zones() {
        let a = dt("2017-11-05T01:30:00.0-04:00");
        let b = dt("2017-11-05T01:15:00.0-05:00");
        assert_eq!(a.compare(&b), Some(Ordering::Less));
        assert_eq!(dt("2012-04-15").compare(&dt("2012-04-15T10:00:00")), None);
        assert_eq!(
            dt("2012-04-15T15:30:31").compare(&dt("2012-04-15T15:30:31.0")),
            Some(Ordering::Equal)
        );
        assert_eq!(
            dt("2012-04-15T15:00:00Z").compare(&dt("2012-04-15T10:00:00")),
            None
        );
    }

    #[test]
    fn calendar_arithmetic_clamps() {
        assert_eq!(
            dt("2020-01-31")
                .add(1, CalendarUnit::Month)
                .unwrap()
                .to_string(),
            "2020-02-29"
        );
        assert_eq!(
            dt("1973-12-25")
                .add(1, CalendarUnit::Week)
                .unwrap()
                .to_string(),
            "1974-01-01"
        );
        assert_eq!(civil_from_days(days_from_civil(2000, 2, 29)), (2000, 2, 29));
    }
}
