//! Touchstone's variable syntax in TestScripts and fixtures: `${name}`, `${CURRENTDATE}` and
//! the date arithmetic `${DATE, T, D, +N}` / `${DATE, T, M, -N}` (T a variable holding a
//! date — in the fixtures always the test date; D days, M months, with the day clamped to the
//! end of a shorter month).

use time::{Date, Duration, Month};

/// `YYYY-MM-DD`.
pub fn format_date(date: Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> Option<Date> {
    let mut parts = text.trim().splitn(3, '-');
    let year = parts.next()?.parse().ok()?;
    let month = Month::try_from(parts.next()?.parse::<u8>().ok()?).ok()?;
    let day = parts.next()?.parse().ok()?;
    Date::from_calendar_date(year, month, day).ok()
}

/// `date` plus `months` calendar months, the day clamped to the target month's length.
pub fn add_months(date: Date, months: i64) -> Option<Date> {
    let index = i64::from(date.year()) * 12 + i64::from(u8::from(date.month())) - 1 + months;
    let year = i32::try_from(index.div_euclid(12)).ok()?;
    let month = Month::try_from(u8::try_from(index.rem_euclid(12) + 1).ok()?).ok()?;
    (1..=date.day())
        .rev()
        .find_map(|day| Date::from_calendar_date(year, month, day).ok())
}

/// Evaluates one `DATE, var, unit, offset` body (without `${` and `}`); `lookup` gives the
/// variable's text.
fn date_expression(
    body: &str,
    lookup: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<String, String> {
    let parts: Vec<&str> = body.split(',').map(str::trim).collect();
    let [_, variable, unit, offset] = parts.as_slice() else {
        return Err(format!("unreadable date expression '${{{body}}}'"));
    };
    let base_text = lookup(variable)?;
    let base = parse_date(&base_text)
        .ok_or_else(|| format!("variable {variable} = '{base_text}' is not a date"))?;
    let offset: i64 = offset
        .parse()
        .map_err(|_| format!("unreadable offset in '${{{body}}}'"))?;
    let date = match *unit {
        "D" => base.checked_add(Duration::days(offset)),
        "M" => add_months(base, offset),
        "Y" => add_months(base, offset * 12),
        _ => None,
    }
    .ok_or_else(|| format!("cannot evaluate '${{{body}}}'"))?;
    Ok(format_date(date))
}

/// Replaces every `${…}` in `text`: `${DATE, v, D|M|Y, ±N}` by date arithmetic on variable
/// `v`, `${CURRENTDATE}` by `today`, any other `${name}` by `lookup(name)`. An error names what
/// could not be substituted.
pub fn substitute(
    text: &str,
    today: Date,
    lookup: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated '${{' in '{text}'"))?;
        let body = after[..end].trim();
        let mut resolve = |name: &str| -> Result<String, String> {
            if name == "CURRENTDATE" {
                Ok(format_date(today))
            } else {
                let value = lookup(name)?;
                // A variable's value may itself hold `${CURRENTDATE}` (a defaultValue).
                if value.contains("${") {
                    substitute(&value, today, &mut |n| {
                        Err(format!("nested variable '{n}' in '{value}'"))
                    })
                } else {
                    Ok(value)
                }
            }
        };
        if body.starts_with("DATE,") || body.starts_with("DATE ,") {
            out.push_str(&date_expression(body, &mut resolve)?);
        } else {
            out.push_str(&resolve(body)?);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_arithmetic() {
        let t = parse_date("2025-06-16").unwrap();
        let mut fixed = |name: &str| {
            if name == "T" {
                Ok("2025-06-16".to_string())
            } else {
                Err(name.to_string())
            }
        };
        assert_eq!(
            substitute("${DATE, T, D, -21}T08:00", t, &mut fixed).unwrap(),
            "2025-05-26T08:00"
        );
        assert_eq!(
            substitute("${DATE, T, M, +8}", t, &mut fixed).unwrap(),
            "2026-02-16"
        );
        assert_eq!(
            substitute("${DATE, T, D,+0}", t, &mut fixed).unwrap(),
            "2025-06-16"
        );
        assert_eq!(
            add_months(parse_date("2025-01-31").unwrap(), 1).unwrap(),
            parse_date("2025-02-28").unwrap()
        );
        assert_eq!(
            add_months(parse_date("2025-03-15").unwrap(), -4).unwrap(),
            parse_date("2024-11-15").unwrap()
        );
        assert!(substitute("${unknown}", t, &mut fixed).is_err());
    }
}
