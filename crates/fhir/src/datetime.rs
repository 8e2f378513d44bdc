//! FHIR date, dateTime and instant values as inclusive ranges of epoch milliseconds.
//!
//! `2020` covers the whole year, `2020-03` the month, `2020-03-04T10:00` the minute. Values
//! without a time zone are taken as UTC. Used both for indexing and for search prefixes.

use time::{Date, Month, PrimitiveDateTime, Time, UtcOffset};

/// An inclusive range of instants in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    /// First millisecond covered.
    pub low_ms: i64,
    /// Last millisecond covered.
    pub high_ms: i64,
}

impl DateRange {
    /// The range covering everything (an open Period end, say).
    pub const UNBOUNDED: DateRange = DateRange {
        low_ms: i64::MIN / 4,
        high_ms: i64::MAX / 4,
    };
}

/// Parses a FHIR date, dateTime or instant (also partial) into the range it covers.
pub fn parse_date_range(text: &str) -> Option<DateRange> {
    let bytes = text.as_bytes();
    let year: i32 = digits(bytes, 0, 4)?;
    if bytes.len() == 4 {
        let first = Date::from_calendar_date(year, Month::January, 1).ok()?;
        let last = Date::from_calendar_date(year, Month::December, 31).ok()?;
        return Some(day_span(first, last));
    }
    expect(bytes, 4, b'-')?;
    let month_number: u8 = digits(bytes, 5, 2)?;
    let month = Month::try_from(month_number).ok()?;
    if bytes.len() == 7 {
        let first = Date::from_calendar_date(year, month, 1).ok()?;
        let last = Date::from_calendar_date(year, month, month.length(year)).ok()?;
        return Some(day_span(first, last));
    }
    expect(bytes, 7, b'-')?;
    let day: u8 = digits(bytes, 8, 2)?;
    let date = Date::from_calendar_date(year, month, day).ok()?;
    if bytes.len() == 10 {
        return Some(day_span(date, date));
    }
    expect(bytes, 10, b'T')?;
    let hour: u8 = digits(bytes, 11, 2)?;
    expect(bytes, 13, b':')?;
    let minute: u8 = digits(bytes, 14, 2)?;
    let mut position = 16;
    let mut second = 0u8;
    let mut millisecond = 0u16;
    let mut precision_ms: i64 = 60_000;
    if bytes.get(position) == Some(&b':') {
        second = digits(bytes, 17, 2)?;
        position = 19;
        precision_ms = 1_000;
        if bytes.get(position) == Some(&b'.') {
            let start = position + 1;
            let mut end = start;
            while end < bytes.len() && bytes[end].is_ascii_digit() {
                end += 1;
            }
            if end == start {
                return None;
            }
            let fraction = &text[start..end];
            let padded: String = fraction.chars().chain("000".chars()).take(3).collect();
            millisecond = padded.parse().ok()?;
            precision_ms = if fraction.len() >= 3 {
                1
            } else {
                10i64.pow(3 - fraction.len() as u32)
            };
            position = end;
        }
    }
    // FHIR allows 24:00:00 only as an end-of-day marker in some places; we refuse it like `time`.
    let time = Time::from_hms_milli(hour, minute, second.min(59), millisecond).ok()?;
    let offset = match &bytes[position..] {
        [] => UtcOffset::UTC,
        [b'Z'] => UtcOffset::UTC,
        [sign @ (b'+' | b'-'), ..] if bytes.len() == position + 6 => {
            let hours: i8 = digits(bytes, position + 1, 2)?;
            expect(bytes, position + 3, b':')?;
            let minutes: i8 = digits(bytes, position + 4, 2)?;
            let (hours, minutes) = if *sign == b'-' {
                (-hours, -minutes)
            } else {
                (hours, minutes)
            };
            UtcOffset::from_hms(hours, minutes, 0).ok()?
        }
        _ => return None,
    };
    let instant = PrimitiveDateTime::new(date, time).assume_offset(offset);
    let low_ms = i64::try_from(instant.unix_timestamp_nanos() / 1_000_000).ok()?;
    Some(DateRange {
        low_ms,
        high_ms: low_ms + precision_ms - 1,
    })
}

/// Formats epoch milliseconds as a FHIR instant (`2020-01-02T03:04:05.678Z`).
pub fn format_instant(epoch_ms: i64) -> String {
    let moment = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(epoch_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        moment.year(),
        u8::from(moment.month()),
        moment.day(),
        moment.hour(),
        moment.minute(),
        moment.second(),
        moment.millisecond()
    )
}

/// The days `first` to `last`, both included. Computed from `last` itself, not from the day
/// after it, which does not exist for 9999-12-31.
fn day_span(first: Date, last: Date) -> DateRange {
    const DAY_MS: i64 = 86_400_000;
    let to_ms = |d: Date| d.midnight().assume_utc().unix_timestamp() * 1_000;
    DateRange {
        low_ms: to_ms(first),
        high_ms: to_ms(last) + DAY_MS - 1,
    }
}

fn digits<T: std::str::FromStr>(bytes: &[u8], start: usize, len: usize) -> Option<T> {
    let slice = bytes.get(start..start + len)?;
    if !slice.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(slice).ok()?.parse().ok()
}

fn expect(bytes: &[u8], position: usize, byte: u8) -> Option<()> {
    (bytes.get(position) == Some(&byte)).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn range(text: &str) -> (String, String) {
        let r = parse_date_range(text).unwrap();
        (format_instant(r.low_ms), format_instant(r.high_ms))
    }

    #[test]
    fn partial_dates_cover_their_span() {
        assert_eq!(
            range("2020"),
            (
                "2020-01-01T00:00:00.000Z".into(),
                "2020-12-31T23:59:59.999Z".into()
            )
        );
        assert_eq!(
            range("2020-02"),
            (
                "2020-02-01T00:00:00.000Z".into(),
                "2020-02-29T23:59:59.999Z".into()
            )
        );
        assert_eq!(
            range("2020-12-31"),
            (
                "2020-12-31T00:00:00.000Z".into(),
                "2020-12-31T23:59:59.999Z".into()
            )
        );
        assert_eq!(
            range("2020-12-31T10:00"),
            (
                "2020-12-31T10:00:00.000Z".into(),
                "2020-12-31T10:00:59.999Z".into()
            )
        );
        assert_eq!(
            range("2020-12-31T10:00:05+01:00"),
            (
                "2020-12-31T09:00:05.000Z".into(),
                "2020-12-31T09:00:05.999Z".into()
            )
        );
        assert_eq!(
            range("2020-12-31T10:00:05.5Z"),
            (
                "2020-12-31T10:00:05.500Z".into(),
                "2020-12-31T10:00:05.599Z".into()
            )
        );
    }

    #[test]
    fn rejects_malformed_dates() {
        for bad in [
            "",
            "20",
            "2020-13",
            "2020-02-30",
            "2020-01-01T25:00",
            "2020-01-01X",
            "2020-01-01T10:00:00+1",
            "abcd",
        ] {
            assert!(parse_date_range(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_edges_of_the_calendar_parse() {
        assert_eq!(
            range("9999"),
            (
                "9999-01-01T00:00:00.000Z".into(),
                "9999-12-31T23:59:59.999Z".into()
            )
        );
        assert_eq!(range("9999-12").1, "9999-12-31T23:59:59.999Z");
        assert_eq!(range("9999-12-31").1, "9999-12-31T23:59:59.999Z");
        assert_eq!(range("0000").0, "0000-01-01T00:00:00.000Z");
        // A leap second counts as the second before it; an offset may reach past the year.
        assert_eq!(
            range("9999-12-31T23:59:60+14:00").0,
            "9999-12-31T09:59:59.000Z"
        );
        for text in [
            "9999-12-31T23:59:59.999-14:00",
            "0000-01-01T00:00:00+14:00",
            "0000-01-01T00:00:00.000000001-14:00",
        ] {
            let r = parse_date_range(text).unwrap();
            assert!(r.low_ms <= r.high_ms, "{text}");
        }
    }

    proptest! {
        /// Every day of the calendar's span, and every partial form of it, covers itself.
        #[test]
        fn days_cover_themselves(year in 0i32..=9999, month in 1u8..=12, day in 1u8..=28) {
            let day_text = format!("{year:04}-{month:02}-{day:02}");
            let day_range = parse_date_range(&day_text).unwrap();
            let month_range = parse_date_range(&day_text[..7]).unwrap();
            let year_range = parse_date_range(&day_text[..4]).unwrap();
            prop_assert_eq!(day_range.high_ms - day_range.low_ms, 86_400_000 - 1);
            prop_assert!(year_range.low_ms <= month_range.low_ms && month_range.low_ms <= day_range.low_ms);
            prop_assert!(day_range.high_ms <= month_range.high_ms && month_range.high_ms <= year_range.high_ms);
        }

        #[test]
        fn never_panics(text in "\\PC{0,40}") {
            let _ = parse_date_range(&text);
        }

        #[test]
        fn instants_round_trip(ms in -2_000_000_000_000i64..4_000_000_000_000i64) {
            let text = format_instant(ms);
            let r = parse_date_range(&text).unwrap();
            prop_assert_eq!(r.low_ms, ms);
            prop_assert_eq!(r.high_ms, ms);
        }
    }
}
