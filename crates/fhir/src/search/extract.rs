//! Turns the values a search parameter's paths reach into index values.

use super::{ParamType, SearchParam};
use crate::datetime::{DateRange, parse_date_range};
use serde_json::Value;

/// One indexed value of one search parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    /// Parameter code.
    pub code: String,
    /// The value.
    pub value: IndexValue,
}

/// An indexed value, by parameter type.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexValue {
    /// Token: system (empty when none) and code.
    Token {
        /// Code system or identifier system; empty when absent.
        system: String,
        /// Code or identifier value.
        code: String,
    },
    /// String: normalised for default and `:contains` matching, exact for `:exact`.
    String {
        /// Lower-cased, accents removed.
        normalized: String,
        /// As written.
        exact: String,
    },
    /// Date range.
    Date(DateRange),
    /// Reference: a local `Type/id`, or an absolute URL with an empty type.
    Reference {
        /// Target resource type; empty for absolute and canonical URLs.
        target_type: String,
        /// Target id, or the full URL.
        target_id: String,
    },
    /// Number.
    Number(f64),
    /// Quantity.
    Quantity {
        /// Value.
        value: f64,
        /// Unit system; empty when none.
        system: String,
        /// Unit code (or unit text when no code); empty when none.
        code: String,
    },
    /// URI.
    Uri(String),
}

pub(super) fn extract_param(param: &SearchParam, resource: &Value, out: &mut Vec<IndexEntry>) {
    let mut values = Vec::new();
    for path in &param.paths {
        values.clear();
        path.values(resource, &mut values);
        for value in &values {
            let mut push = |v: IndexValue| {
                out.push(IndexEntry {
                    code: param.code.clone(),
                    value: v,
                })
            };
            match param.param_type {
                ParamType::Token => token_values(value, &path.leaf_type, &mut push),
                ParamType::String => string_values(value, &path.leaf_type, &mut push),
                ParamType::Date => date_values(value, &path.leaf_type, &mut push),
                ParamType::Reference => reference_values(
                    value,
                    path.reference_type.as_deref(),
                    &param.targets,
                    &mut push,
                ),
                ParamType::Number => {
                    if let Some(n) = value.as_f64() {
                        push(IndexValue::Number(n));
                    }
                }
                ParamType::Quantity => quantity_values(value, &mut push),
                ParamType::Uri => {
                    if let Some(s) = value.as_str() {
                        push(IndexValue::Uri(s.to_string()));
                    }
                }
            }
        }
    }
}

fn text(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn token_values(value: &Value, leaf_type: &str, push: &mut impl FnMut(IndexValue)) {
    match leaf_type {
        "CodeableConcept" => {
            for coding in value
                .get("coding")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                token_values(coding, "Coding", push);
            }
        }
        "Coding" => {
            let code = text(value, "code");
            if !code.is_empty() {
                push(IndexValue::Token {
                    system: text(value, "system"),
                    code,
                });
            }
        }
        "Identifier" => {
            let code = text(value, "value");
            if !code.is_empty() {
                push(IndexValue::Token {
                    system: text(value, "system"),
                    code,
                });
            }
        }
        "ContactPoint" => {
            let code = text(value, "value");
            if !code.is_empty() {
                push(IndexValue::Token {
                    system: text(value, "system"),
                    code,
                });
            }
        }
        _ => match value {
            Value::String(s) => push(IndexValue::Token {
                system: String::new(),
                code: s.clone(),
            }),
            Value::Bool(b) => push(IndexValue::Token {
                system: String::new(),
                code: b.to_string(),
            }),
            _ => {}
        },
    }
}

fn string_values(value: &Value, leaf_type: &str, push: &mut impl FnMut(IndexValue)) {
    let mut one = |s: &str| {
        if !s.is_empty() {
            push(IndexValue::String {
                normalized: normalize_string(s),
                exact: s.to_string(),
            });
        }
    };
    let parts: &[&str] = match leaf_type {
        "HumanName" => &["family", "given", "prefix", "suffix", "text"],
        "Address" => &[
            "line",
            "city",
            "district",
            "state",
            "postalCode",
            "country",
            "text",
        ],
        _ => &[],
    };
    if parts.is_empty() {
        if let Some(s) = value.as_str() {
            one(s);
        }
        return;
    }
    for part in parts {
        match value.get(part) {
            Some(Value::String(s)) => one(s),
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).for_each(&mut one),
            _ => {}
        }
    }
}

fn date_values(value: &Value, leaf_type: &str, push: &mut impl FnMut(IndexValue)) {
    match leaf_type {
        "Period" => {
            let start = value
                .get("start")
                .and_then(Value::as_str)
                .and_then(parse_date_range);
            let end = value
                .get("end")
                .and_then(Value::as_str)
                .and_then(parse_date_range);
            // A Period with one bound and the Dutch `ext-TimeInterval.Duration` (MP9's period
            // of use) has the other bound that far from it.
            let duration = time_interval_duration_ms(value);
            let (low_ms, high_ms) = match (start, end, duration) {
                (Some(start), None, Some(ms)) => (start.low_ms, start.low_ms.saturating_add(ms)),
                (None, Some(end), Some(ms)) => (end.high_ms.saturating_sub(ms), end.high_ms),
                _ => (
                    start.map_or(DateRange::UNBOUNDED.low_ms, |r| r.low_ms),
                    end.map_or(DateRange::UNBOUNDED.high_ms, |r| r.high_ms),
                ),
            };
            if start.is_some() || end.is_some() {
                push(IndexValue::Date(DateRange { low_ms, high_ms }));
            }
        }
        "Timing" => {
            for event in value
                .get("event")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(range) = event.as_str().and_then(parse_date_range) {
                    push(IndexValue::Date(range));
                }
            }
        }
        _ => {
            if let Some(range) = value.as_str().and_then(parse_date_range) {
                push(IndexValue::Date(range));
            }
        }
    }
}

/// The extension of a Period giving its length when only one bound is known (Nictiz'
/// `TimeInterval.Duration`, used for the period of use of MP9's medication building blocks).
pub const TIME_INTERVAL_DURATION: &str =
    "http://nictiz.nl/fhir/StructureDefinition/ext-TimeInterval.Duration";

/// The length a Period's [`TIME_INTERVAL_DURATION`] gives, in milliseconds: UCUM `s`, `min`,
/// `h`, `d`, `wk`, and `mo` and `a` as their UCUM means (30.4375 and 365.25 days).
fn time_interval_duration_ms(period: &Value) -> Option<i64> {
    const DAY_MS: f64 = 86_400_000.0;
    let duration = period
        .get("extension")?
        .as_array()?
        .iter()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(TIME_INTERVAL_DURATION))?
        .get("valueDuration")?;
    let value = duration.get("value")?.as_f64()?;
    let unit_ms = match duration.get("code").and_then(Value::as_str)? {
        "s" => 1_000.0,
        "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => DAY_MS,
        "wk" => 7.0 * DAY_MS,
        "mo" => 30.4375 * DAY_MS,
        "a" => 365.25 * DAY_MS,
        _ => return None,
    };
    let ms = value * unit_ms;
    (ms.is_finite() && ms >= 0.0 && ms < DateRange::UNBOUNDED.high_ms as f64).then_some(ms as i64)
}

fn reference_values(
    value: &Value,
    required_type: Option<&str>,
    targets: &[String],
    push: &mut impl FnMut(IndexValue),
) {
    let reference = match value {
        Value::String(s) => s.as_str(),
        Value::Object(o) => match o.get("reference").and_then(Value::as_str) {
            Some(r) => r,
            None => return,
        },
        _ => return,
    };
    let Some(value) = parse_reference(reference) else {
        return;
    };
    if let IndexValue::Reference { target_type, .. } = &value {
        if let Some(required) = required_type
            && target_type != required
        {
            return;
        }
        if !target_type.is_empty()
            && !targets.is_empty()
            && !targets.iter().any(|t| t == target_type || t == "Resource")
        {
            return;
        }
    }
    push(value);
}

/// `Patient/123`, `Patient/123/_history/2` → local; absolute URLs kept whole; `#contained` and
/// malformed references give nothing.
pub(crate) fn parse_reference(reference: &str) -> Option<IndexValue> {
    if reference.is_empty() || reference.starts_with('#') {
        return None;
    }
    if reference.contains("://") || reference.starts_with("urn:") {
        return Some(IndexValue::Reference {
            target_type: String::new(),
            target_id: reference.to_string(),
        });
    }
    let mut parts = reference.split('/');
    let target_type = parts.next()?;
    let target_id = parts.next()?;
    match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) | (Some("_history"), Some(_), None) => {}
        _ => return None,
    }
    if target_type.is_empty()
        || target_id.is_empty()
        || !target_type.starts_with(|c: char| c.is_ascii_uppercase())
    {
        return None;
    }
    Some(IndexValue::Reference {
        target_type: target_type.to_string(),
        target_id: target_id.to_string(),
    })
}

fn quantity_values(value: &Value, push: &mut impl FnMut(IndexValue)) {
    let Some(number) = value.get("value").and_then(Value::as_f64) else {
        return;
    };
    let code = value
        .get("code")
        .or_else(|| value.get("unit"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    push(IndexValue::Quantity {
        value: number,
        system: text(value, "system"),
        code,
    });
}

/// Lower-cases and removes accents, so `Jóhanna` matches `johanna` (the FHIR string-search rule).
pub fn normalize_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let folded = match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' => {
                "a"
            }
            'ç' | 'Ç' => "c",
            'è' | 'é' | 'ê' | 'ë' | 'È' | 'É' | 'Ê' | 'Ë' => "e",
            'ì' | 'í' | 'î' | 'ï' | 'Ì' | 'Í' | 'Î' | 'Ï' => "i",
            'ñ' | 'Ñ' => "n",
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' | 'Ø' => {
                "o"
            }
            'ù' | 'ú' | 'û' | 'ü' | 'Ù' | 'Ú' | 'Û' | 'Ü' => "u",
            'ý' | 'ÿ' | 'Ý' => "y",
            'ß' => "ss",
            'æ' | 'Æ' => "ae",
            'œ' | 'Œ' => "oe",
            'ĳ' | 'Ĳ' => "ij",
            _ => {
                out.extend(c.to_lowercase());
                continue;
            }
        };
        out.push_str(folded);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        assert_eq!(
            parse_reference("Patient/1/_history/2"),
            Some(IndexValue::Reference {
                target_type: "Patient".into(),
                target_id: "1".into()
            })
        );
        assert_eq!(parse_reference("#c1"), None);
        assert_eq!(parse_reference("patient/1"), None);
        assert_eq!(parse_reference("Patient/1/x"), None);
        assert!(matches!(
            parse_reference("urn:uuid:abc"),
            Some(IndexValue::Reference { .. })
        ));
    }

    #[test]
    fn normalizes_dutch_and_caribbean_names() {
        assert_eq!(normalize_string("Ëlla van Dóórn"), "ella van doorn");
        assert_eq!(normalize_string("IJsbrand"), "ijsbrand");
    }
}
