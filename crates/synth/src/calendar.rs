//! Calendar arithmetic on plain day numbers and FHIR date / dateTime formatting.
//!
//! Dates are `Day`s: days since 1970-01-01 in the proleptic Gregorian calendar.
//! This module knows two time zones, the European Netherlands (CET/CEST) and the
//! Caribbean Netherlands (AST, UTC-4, no daylight saving); it is not a general
//! time-zone library.

/// Days since 1970-01-01.
pub(crate) type Day = i32;

/// Minutes in a day; times of day are minutes after local midnight.
pub(crate) const MINUTES_PER_DAY: u32 = 24 * 60;

/// Mean length of a year in days, for converting ages to day counts.
pub(crate) const DAYS_PER_YEAR: f64 = 365.2425;

/// Where an event took place, which decides the UTC offset of its dateTime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Zone {
    /// European Netherlands: +01:00 in winter, +02:00 in summer (EU rule since 1996).
    Netherlands,
    /// Bonaire, Sint Eustatius and Saba: -04:00 all year.
    Caribbean,
}

/// The day number of a civil date (Howard Hinnant's `days_from_civil`).
pub(crate) const fn day_from_civil(year: i32, month: u32, day: u32) -> Day {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12; // March = 0
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year as i32;
    era * 146_097 + day_of_era - 719_468
}

/// The civil date `(year, month, day)` of a day number (Howard Hinnant's `civil_from_days`).
pub(crate) fn civil_from_day(day: Day) -> (i32, u32, u32) {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day_of_month = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = (if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    }) as u32;
    let year = year_of_era + era * 400 + i32::from(month <= 2);
    (year, month, day_of_month)
}

/// The calendar year of a day number.
pub(crate) fn year_of(day: Day) -> i32 {
    civil_from_day(day).0
}

/// Day of the week, 0 = Sunday … 6 = Saturday (1970-01-01 was a Thursday).
fn weekday(day: Day) -> i32 {
    (day + 4).rem_euclid(7)
}

/// The last Sunday of `month` (31 days long) in `year`.
fn last_sunday_of(year: i32, month: u32) -> Day {
    let last = day_from_civil(year, month, 31);
    last - weekday(last)
}

/// UTC offset of local time in `zone` on `day`. The switch days themselves count
/// as summer (March) and winter (October); the hour of the switch is ignored.
fn utc_offset(zone: Zone, day: Day) -> &'static str {
    match zone {
        Zone::Caribbean => "-04:00",
        Zone::Netherlands => {
            let year = year_of(day);
            if day >= last_sunday_of(year, 3) && day < last_sunday_of(year, 10) {
                "+02:00"
            } else {
                "+01:00"
            }
        }
    }
}

/// A FHIR `date`: `YYYY-MM-DD`.
pub(crate) fn date(day: Day) -> String {
    let (year, month, day_of_month) = civil_from_day(day);
    format!("{year:04}-{month:02}-{day_of_month:02}")
}

/// A FHIR `dateTime` / `instant` with seconds and the zone's UTC offset, e.g.
/// `2019-03-14T09:30:00+01:00`. `minute` is minutes after local midnight and is
/// clamped to the day.
pub(crate) fn date_time(day: Day, minute: u32, zone: Zone) -> String {
    let (year, month, day_of_month) = civil_from_day(day);
    let minute = minute.min(MINUTES_PER_DAY - 1);
    let (hour, minute) = (minute / 60, minute % 60);
    let offset = utc_offset(zone, day);
    format!("{year:04}-{month:02}-{day_of_month:02}T{hour:02}:{minute:02}:00{offset}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        assert_eq!(day_from_civil(1970, 1, 1), 0);
        assert_eq!(day_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_day(-1), (1969, 12, 31));
        for day in day_from_civil(1920, 1, 1)..day_from_civil(2030, 1, 1) {
            let (year, month, day_of_month) = civil_from_day(day);
            assert_eq!(day_from_civil(year, month, day_of_month), day);
        }
    }

    #[test]
    fn formats() {
        let winter = day_from_civil(2019, 3, 14);
        assert_eq!(date(winter), "2019-03-14");
        assert_eq!(
            date_time(winter, 9 * 60 + 30, Zone::Netherlands),
            "2019-03-14T09:30:00+01:00"
        );
        let summer = day_from_civil(2024, 7, 1);
        assert_eq!(
            date_time(summer, 0, Zone::Netherlands),
            "2024-07-01T00:00:00+02:00"
        );
        assert_eq!(
            date_time(summer, 14 * 60 + 5, Zone::Caribbean),
            "2024-07-01T14:05:00-04:00"
        );
    }

    #[test]
    fn daylight_saving_switch_days() {
        // 2025: summer time from Sunday 30 March to Sunday 26 October.
        assert_eq!(last_sunday_of(2025, 3), day_from_civil(2025, 3, 30));
        assert_eq!(last_sunday_of(2025, 10), day_from_civil(2025, 10, 26));
        assert_eq!(
            utc_offset(Zone::Netherlands, day_from_civil(2025, 3, 29)),
            "+01:00"
        );
        assert_eq!(
            utc_offset(Zone::Netherlands, day_from_civil(2025, 3, 30)),
            "+02:00"
        );
        assert_eq!(
            utc_offset(Zone::Netherlands, day_from_civil(2025, 10, 25)),
            "+02:00"
        );
        assert_eq!(
            utc_offset(Zone::Netherlands, day_from_civil(2025, 10, 26)),
            "+01:00"
        );
    }
}
