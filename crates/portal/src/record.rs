//! The citizen's record as the pages show it: FHIR resources from all sources turned into a
//! timeline and topics (problems, medication, allergies, lab results with a chart per test,
//! vaccinations, encounters, documents), each item with its source's name and its date; and
//! the whole record as one `collection` Bundle.
//! What it is not: a FHIR validator or a clinical interpretation (values are shown as
//! recorded; a chart only plots numbers).

use crate::i18n::Texts;
use crate::sources::Found;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use zorgnet_web::record::{Item, LabRow, shown_date, string_at};

/// Width and height of a chart's drawing area, in SVG user units.
const CHART_WIDTH: f64 = 600.0;
const CHART_HEIGHT: f64 = 200.0;
/// Margin around the drawing area, in SVG user units.
const CHART_MARGIN: f64 = 20.0;

/// A numeric lab value on its way to a chart.
struct Measurement {
    day: i64,
    value: f64,
    date: String,
    source: String,
}

/// One point of a chart.
#[derive(Debug, Clone)]
pub(crate) struct Point {
    pub(crate) x: String,
    pub(crate) y: String,
    pub(crate) date: String,
    pub(crate) value: String,
    pub(crate) source: String,
}

/// A lab test's values over time, drawn on the server.
#[derive(Debug, Clone)]
pub(crate) struct Chart {
    /// An id for the SVG's title and description.
    pub(crate) id: String,
    pub(crate) test: String,
    pub(crate) unit: String,
    /// `x,y` pairs of the line.
    pub(crate) line: String,
    pub(crate) points: Vec<Point>,
    pub(crate) lowest: String,
    pub(crate) highest: String,
    pub(crate) first: String,
    pub(crate) last: String,
}

/// The record, arranged for the pages.
#[derive(Debug, Default)]
pub(crate) struct RecordView {
    pub(crate) timeline: Vec<Item>,
    pub(crate) problems: Vec<Item>,
    pub(crate) medication: Vec<Item>,
    pub(crate) allergies: Vec<Item>,
    pub(crate) lab: Vec<LabRow>,
    pub(crate) charts: Vec<Chart>,
    pub(crate) vaccinations: Vec<Item>,
    pub(crate) encounters: Vec<Item>,
    pub(crate) documents: Vec<Item>,
}

/// The text of a CodeableConcept: its `text`, else its first coding's display or code.
fn concept(value: &Value) -> Option<String> {
    if let Some(text) = value["text"].as_str() {
        return Some(text.to_string());
    }
    value["coding"].as_array()?.iter().find_map(|coding| {
        coding["display"]
            .as_str()
            .or_else(|| coding["code"].as_str())
            .map(String::from)
    })
}

/// The date an item is shown with.
fn date_of(resource: &Value) -> String {
    string_at(
        resource,
        &[
            "effectiveDateTime",
            "effectivePeriod.start",
            "onsetDateTime",
            "onsetPeriod.start",
            "occurrenceDateTime",
            "authoredOn",
            "whenHandedOver",
            "whenPrepared",
            "performedDateTime",
            "performedPeriod.start",
            "period.start",
            "recordedDate",
            "recorded",
            "issued",
            "dateAsserted",
            "date",
            "context.period.start",
            "created",
        ],
    )
    .unwrap_or_default()
    .to_string()
}

fn is_laboratory(observation: &Value) -> bool {
    observation["category"]
        .as_array()
        .is_some_and(|categories| {
            categories.iter().any(|category| {
                category["coding"]
                    .as_array()
                    .is_some_and(|codings| codings.iter().any(|c| c["code"] == "laboratory"))
            })
        })
}

/// `value unit` of a Quantity.
fn quantity(value: &Value) -> Option<String> {
    let number = value.get("value")?;
    let unit = value["unit"].as_str().or_else(|| value["code"].as_str());
    let comparator = value["comparator"].as_str().unwrap_or_default();
    Some(match unit {
        Some(unit) => format!("{comparator}{number} {unit}"),
        None => format!("{comparator}{number}"),
    })
}

/// An Observation's value as text.
fn observation_value(observation: &Value) -> String {
    if let Some(q) = observation.get("valueQuantity").and_then(quantity) {
        return q;
    }
    if let Some(c) = observation.get("valueCodeableConcept").and_then(concept) {
        return c;
    }
    for name in [
        "valueString",
        "valueBoolean",
        "valueInteger",
        "valueDateTime",
    ] {
        if let Some(value) = observation.get(name) {
            return value
                .as_str()
                .map_or_else(|| value.to_string(), String::from);
        }
    }
    String::new()
}

/// An Observation's reference ranges as text (`low – high`, or their `text`).
fn reference_range(observation: &Value) -> String {
    observation["referenceRange"]
        .as_array()
        .map(|ranges| {
            ranges
                .iter()
                .filter_map(|range| {
                    let low = range.get("low").and_then(quantity);
                    let high = range.get("high").and_then(quantity);
                    match (low, high, range["text"].as_str()) {
                        (Some(low), Some(high), _) => Some(format!("{low} – {high}")),
                        (Some(low), None, _) => Some(format!("≥ {low}")),
                        (None, Some(high), _) => Some(format!("≤ {high}")),
                        (None, None, text) => text.map(String::from),
                    }
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

fn status_of(resource: &Value) -> Option<String> {
    concept(&resource["clinicalStatus"]).or_else(|| resource["status"].as_str().map(String::from))
}

/// A number that reads well in a chart's text (no trailing zeros).
fn plain_number(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Days since the Unix epoch of a FHIR date or date-time's date.
fn day_of(date: &str) -> Option<i64> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(date.get(..10)?, &format).ok()?;
    Some(i64::from(date.to_julian_day()))
}

impl RecordView {
    /// Arranges `found` (from sources named `sources`) in the language of `t`.
    pub(crate) fn of(found: &[Found], sources: &[String], t: &Texts) -> RecordView {
        let mut view = RecordView::default();
        let mut series: BTreeMap<(String, String), Vec<Measurement>> = BTreeMap::new();
        for item in found {
            let r = &item.resource;
            let source = sources.get(item.source).cloned().unwrap_or_default();
            let date = date_of(r);
            let resource_type = r["resourceType"].as_str().unwrap_or_default();
            let make = |kind: &'static str, title: Option<String>, details: String| Item {
                date: date.clone(),
                shown: shown_date(&date),
                kind,
                title: title.unwrap_or_else(|| resource_type.to_string()),
                details,
                source: source.clone(),
            };
            let item = match resource_type {
                "Condition" => {
                    let item = make(
                        t.kind_condition,
                        concept(&r["code"]),
                        status_of(r).unwrap_or_default(),
                    );
                    view.problems.push(item.clone());
                    item
                }
                "MedicationStatement" | "MedicationRequest" | "MedicationDispense" => {
                    let dosage = r["dosage"]
                        .get(0)
                        .or_else(|| r["dosageInstruction"].get(0))
                        .and_then(|d| d["text"].as_str())
                        .map(String::from);
                    let details = [status_of(r), dosage]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(" · ");
                    let item = make(
                        t.kind_medication,
                        concept(&r["medicationCodeableConcept"]).or_else(|| {
                            r["medicationReference"]["display"]
                                .as_str()
                                .map(String::from)
                        }),
                        details,
                    );
                    view.medication.push(item.clone());
                    item
                }
                "AllergyIntolerance" => {
                    let details = [r["criticality"].as_str().map(String::from), status_of(r)]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(" · ");
                    let item = make(t.kind_allergy, concept(&r["code"]), details);
                    view.allergies.push(item.clone());
                    item
                }
                "Observation" if is_laboratory(r) => {
                    let test = concept(&r["code"]).unwrap_or_else(|| "Observation".into());
                    let value = observation_value(r);
                    let range = reference_range(r);
                    view.lab.push(LabRow {
                        date: date.clone(),
                        shown: shown_date(&date),
                        test: test.clone(),
                        value: value.clone(),
                        range,
                        source: source.clone(),
                    });
                    let number = r["valueQuantity"]["value"].as_f64();
                    if let (Some(number), Some(day)) = (number, day_of(&date)) {
                        let unit = r["valueQuantity"]["unit"]
                            .as_str()
                            .or_else(|| r["valueQuantity"]["code"].as_str())
                            .unwrap_or_default()
                            .to_string();
                        series
                            .entry((test.clone(), unit))
                            .or_default()
                            .push(Measurement {
                                day,
                                value: number,
                                date: date.clone(),
                                source: source.clone(),
                            });
                    }
                    make(t.kind_lab, Some(test), value)
                }
                "Observation" => make(
                    t.kind_observation,
                    concept(&r["code"]),
                    observation_value(r),
                ),
                "Immunization" => {
                    let item = make(
                        t.kind_immunization,
                        concept(&r["vaccineCode"]),
                        r["status"].as_str().unwrap_or_default().to_string(),
                    );
                    view.vaccinations.push(item.clone());
                    item
                }
                "Encounter" => {
                    let title = r["type"]
                        .get(0)
                        .and_then(concept)
                        .or_else(|| r["class"]["display"].as_str().map(String::from))
                        .or_else(|| r["class"]["code"].as_str().map(String::from));
                    let details = r["serviceProvider"]["display"]
                        .as_str()
                        .or_else(|| r["status"].as_str())
                        .unwrap_or_default()
                        .to_string();
                    let item = make(t.kind_encounter, title, details);
                    view.encounters.push(item.clone());
                    item
                }
                "DocumentReference" => {
                    let title = r["description"]
                        .as_str()
                        .map(String::from)
                        .or_else(|| concept(&r["type"]));
                    let details = r["content"]
                        .get(0)
                        .and_then(|c| c["attachment"]["title"].as_str())
                        .unwrap_or_default()
                        .to_string();
                    let item = make(t.kind_document, title, details);
                    view.documents.push(item.clone());
                    item
                }
                "Procedure" => make(
                    t.kind_procedure,
                    concept(&r["code"]),
                    status_of(r).unwrap_or_default(),
                ),
                "DiagnosticReport" => make(
                    t.kind_report,
                    concept(&r["code"]),
                    r["conclusion"].as_str().unwrap_or_default().to_string(),
                ),
                // Reference data (Patient, Practitioner, Organization, …) has no date of care.
                _ if date.is_empty() => continue,
                "Patient" | "Practitioner" | "PractitionerRole" | "Organization" | "Location"
                | "Medication" | "Endpoint" | "HealthcareService" => continue,
                _ => make(t.kind_other, concept(&r["code"]), String::new()),
            };
            if !item.date.is_empty() {
                view.timeline.push(item);
            }
        }
        let newest_first = |a: &Item, b: &Item| b.date.cmp(&a.date);
        view.timeline.sort_by(newest_first);
        for topic in [
            &mut view.problems,
            &mut view.medication,
            &mut view.allergies,
            &mut view.vaccinations,
            &mut view.encounters,
            &mut view.documents,
        ] {
            topic.sort_by(newest_first);
        }
        view.lab.sort_by(|a, b| b.date.cmp(&a.date));
        view.charts = series
            .into_iter()
            .filter(|(_, values)| values.len() >= 2)
            .enumerate()
            .map(|(index, ((test, unit), values))| chart(index, test, unit, values))
            .collect();
        view
    }
}

/// The chart of one test's values (at least two).
fn chart(index: usize, test: String, unit: String, mut values: Vec<Measurement>) -> Chart {
    values.sort_by(|a, b| a.day.cmp(&b.day).then(a.date.cmp(&b.date)));
    let (first_day, last_day) = (values[0].day, values[values.len() - 1].day);
    let lowest = values.iter().map(|v| v.value).fold(f64::INFINITY, f64::min);
    let highest = values
        .iter()
        .map(|v| v.value)
        .fold(f64::NEG_INFINITY, f64::max);
    let days = (last_day - first_day).max(1) as f64;
    let spread = if highest > lowest {
        highest - lowest
    } else {
        1.0
    };
    let count = values.len();
    let points: Vec<Point> = values
        .iter()
        .enumerate()
        .map(|(i, measurement)| {
            let (day, value) = (measurement.day, measurement.value);
            // Values of one day are spread evenly rather than drawn on top of each other.
            let x = if last_day == first_day {
                CHART_MARGIN + (CHART_WIDTH - 2.0 * CHART_MARGIN) * i as f64 / (count - 1) as f64
            } else {
                CHART_MARGIN + (CHART_WIDTH - 2.0 * CHART_MARGIN) * (day - first_day) as f64 / days
            };
            let y = CHART_HEIGHT
                - CHART_MARGIN
                - (CHART_HEIGHT - 2.0 * CHART_MARGIN) * (value - lowest) / spread;
            Point {
                x: format!("{x:.1}"),
                y: format!("{y:.1}"),
                date: measurement.date.clone(),
                value: plain_number(value),
                source: measurement.source.clone(),
            }
        })
        .collect();
    let line = points
        .iter()
        .map(|p| format!("{},{}", p.x, p.y))
        .collect::<Vec<_>>()
        .join(" ");
    Chart {
        id: format!("grafiek-{index}"),
        test,
        unit,
        line,
        lowest: plain_number(lowest),
        highest: plain_number(highest),
        first: values[0]
            .date
            .get(..10)
            .unwrap_or(&values[0].date)
            .to_string(),
        last: values[count - 1]
            .date
            .get(..10)
            .unwrap_or(&values[count - 1].date)
            .to_string(),
        points,
    }
}

/// The whole record as a FHIR `collection` Bundle: every resource found, with its URL at its
/// source as `fullUrl`, and, when sources are missing, an OperationOutcome naming them.
pub(crate) fn bundle(found: &[Found], missing: &[(String, String)], timestamp: &str) -> Value {
    let mut entries: Vec<Value> = found
        .iter()
        .map(|f| json!({"fullUrl": f.full_url, "resource": f.resource}))
        .collect();
    if !missing.is_empty() {
        let issues: Vec<Value> = missing
            .iter()
            .map(|(source, why)| {
                json!({"severity": "warning", "code": "incomplete",
                    "diagnostics": format!("{source}: {why}")})
            })
            .collect();
        entries.push(json!({
            "fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
            "resource": {"resourceType": "OperationOutcome", "issue": issues},
        }));
    }
    json!({
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": timestamp,
        "entry": entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use zorgnet_web::Lang;

    fn found(resource: Value) -> Found {
        Found {
            source: 0,
            full_url: "http://x/fhir/T/1".into(),
            resource,
        }
    }

    fn lab(date: &str, value: f64) -> Found {
        found(json!({"resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"code": "laboratory"}]}],
            "code": {"text": "Hemoglobine"}, "effectiveDateTime": date,
            "valueQuantity": {"value": value, "unit": "mmol/l"},
            "referenceRange": [{"low": {"value": 7.5, "unit": "mmol/l"},
                "high": {"value": 10, "unit": "mmol/l"}}]}))
    }

    #[test]
    fn items_are_sorted_by_topic_and_date() {
        let t = Texts::of(Lang::Nl);
        let view = RecordView::of(
            &[
                found(
                    json!({"resourceType": "Condition", "code": {"coding": [{"display": "Astma"}]},
                    "onsetDateTime": "2020-01-02"}),
                ),
                lab("2021-03-04", 8.1),
                lab("2022-03-04T10:00:00+01:00", 9.25),
                found(json!({"resourceType": "Practitioner", "id": "p"})),
            ],
            &["Huisarts".into()],
            t,
        );
        assert_eq!(view.problems[0].title, "Astma");
        assert_eq!(view.problems[0].source, "Huisarts");
        let dates: Vec<&str> = view.timeline.iter().map(|i| i.date.as_str()).collect();
        assert_eq!(
            dates,
            ["2022-03-04T10:00:00+01:00", "2021-03-04", "2020-01-02"]
        );
        assert_eq!(view.lab[0].value, "9.25 mmol/l");
        assert_eq!(view.lab[0].shown, "2022-03-04 10:00");
        assert_eq!(view.timeline[2].shown, "2020-01-02");
        assert_eq!(view.lab[0].range, "7.5 mmol/l – 10 mmol/l");
        let [chart] = view.charts.as_slice() else {
            panic!("one chart: {:?}", view.charts)
        };
        assert_eq!(
            (chart.lowest.as_str(), chart.highest.as_str()),
            ("8.1", "9.25")
        );
        assert_eq!(chart.line, "20.0,180.0 580.0,20.0");
        assert_eq!(
            (chart.first.as_str(), chart.last.as_str()),
            ("2021-03-04", "2022-03-04")
        );
    }
}
