//! A line of a record as both front-ends show it (an [`Item`] of a timeline or a topic, a
//! [`LabRow`]), and the FHIR pieces it is made of alike: a string at one of several paths
//! of a resource, and a date as shown.
//! What it is not: how a front-end arranges a record (which resource becomes which line,
//! what its title and details say: each front-end's `record`), a FHIR validator, or a
//! clinical interpretation (values are shown as recorded).

use serde_json::Value;

/// One line of a timeline or of a part of the record.
#[derive(Debug, Clone)]
pub struct Item {
    /// The date as recorded (`YYYY-MM-DD`, or a longer date-time); empty when none.
    pub date: String,
    /// The date as shown ([`shown_date`]).
    pub shown: String,
    /// What kind of thing it is, in the page's language.
    pub kind: &'static str,
    /// What it is called.
    pub title: String,
    /// What is shown beside the title (a status, a value, a dosage).
    pub details: String,
    /// The name of the source it came from.
    pub source: String,
}

/// A lab result.
#[derive(Debug, Clone)]
pub struct LabRow {
    /// The date as recorded (for sorting).
    pub date: String,
    /// The date as shown ([`shown_date`]).
    pub shown: String,
    /// The test.
    pub test: String,
    /// The result, with its unit.
    pub value: String,
    /// The reference range, as text.
    pub range: String,
    /// The name of the source it came from.
    pub source: String,
}

/// The string at the first of `paths` (each dotted: `effectivePeriod.start`) that holds one
/// in `resource`.
pub fn string_at<'a>(resource: &'a Value, paths: &[&str]) -> Option<&'a str> {
    paths.iter().find_map(|path| {
        path.split('.')
            .try_fold(resource, |value, step| value.get(step))
            .and_then(Value::as_str)
    })
}

/// A FHIR date or date-time as shown: the date, and the time to the minute when there is one
/// (`YYYY-MM-DD HH:MM`, as recorded, in the time zone it was recorded in); anything else as
/// it stands.
pub fn shown_date(date: &str) -> String {
    match (date.get(..10), date.get(11..16)) {
        (Some(day), Some(time)) if date.as_bytes().get(10) == Some(&b'T') => {
            format!("{day} {time}")
        }
        _ => date.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates_are_shown_to_the_minute() {
        assert_eq!(shown_date("2022-03-04T10:00:00+01:00"), "2022-03-04 10:00");
        assert_eq!(shown_date("2022-03-04T23:59:59.123Z"), "2022-03-04 23:59");
        assert_eq!(shown_date("2022-03-04"), "2022-03-04");
        assert_eq!(shown_date("2022-03"), "2022-03");
        assert_eq!(shown_date(""), "");
    }

    #[test]
    fn the_first_path_with_a_string_wins() {
        let resource = json!({"effectivePeriod": {"start": "2020-01-02"}, "issued": 3,
            "recordedDate": "2019-01-01"});
        let paths = [
            "effectiveDateTime",
            "issued",
            "effectivePeriod.start",
            "recordedDate",
        ];
        assert_eq!(string_at(&resource, &paths), Some("2020-01-02"));
        assert_eq!(string_at(&resource, &["effectivePeriod.end"]), None);
        assert_eq!(string_at(&resource, &[]), None);
    }
}
