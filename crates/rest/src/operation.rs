//! The inputs of a FHIR operation (`$everything`, `$localize`, `$fetch`) as name–value pairs,
//! the way the handlers and the access layer read them: the URL's query parameters, and for
//! a `POST` the parameters of its `Parameters` body after them (FHIR R4 §3.1.0.1: by name,
//! one `value[x]` each, a name may repeat). An empty body has no parameters.
//!
//! Values become the text a query string would carry: a primitive as written, an
//! `Identifier` as `system|value`, a `Coding` as `system|code`, a `Reference` as its
//! reference. What it is not: support for operations that take resources or nested `part`s
//! as input — none of the node's do, so such a parameter is a 400 rather than ignored.

use crate::error::FhirError;
use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Map, Value};
use zorgnet_fhir::IssueCode;

/// Largest `Parameters` body of an operation: a few simple values, with ample room.
pub const OPERATION_BODY_LIMIT_BYTES: usize = 1024 * 1024;

/// The `value[x]` types whose JSON is a string, taken as written.
const TEXT_VALUE_TYPES: [&str; 14] = [
    "String",
    "Code",
    "Id",
    "Uri",
    "Url",
    "Canonical",
    "Oid",
    "Uuid",
    "Markdown",
    "Date",
    "DateTime",
    "Instant",
    "Time",
    "Base64Binary",
];
/// The `value[x]` types whose JSON is a number or a boolean.
const SCALAR_VALUE_TYPES: [&str; 5] = [
    "Integer",
    "UnsignedInt",
    "PositiveInt",
    "Decimal",
    "Boolean",
];

/// The operation's parameters: the query's, then (for `POST`) the body's.
pub async fn parameters(
    method: &Method,
    query: Option<&str>,
    body: Body,
) -> Result<Vec<(String, String)>, FhirError> {
    let mut pairs = crate::interactions::query_pairs(query);
    if *method == Method::POST {
        let bytes = axum::body::to_bytes(body, OPERATION_BODY_LIMIT_BYTES)
            .await
            .map_err(|_| {
                FhirError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    IssueCode::TooCostly,
                    format!(
                        "an operation's body may be at most {OPERATION_BODY_LIMIT_BYTES} bytes"
                    ),
                )
            })?;
        pairs.extend(body_parameters(&bytes)?);
        crate::format::check_format_parameters(&pairs)?;
    }
    Ok(pairs)
}

/// The parameters of a `POST`ed operation body: none for an empty body, else those of the
/// `Parameters` resource it must be.
pub fn body_parameters(bytes: &[u8]) -> Result<Vec<(String, String)>, FhirError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let resource: Value = serde_json::from_slice(bytes).map_err(|e| {
        FhirError::new(
            StatusCode::BAD_REQUEST,
            IssueCode::Structure,
            format!("malformed JSON: {e}"),
        )
    })?;
    let resource_type = resource.get("resourceType").and_then(Value::as_str);
    if resource_type != Some("Parameters") {
        return Err(FhirError::bad_request(format!(
            "an operation's body must be a Parameters resource, not {}",
            resource_type.unwrap_or("a body without resourceType")
        )));
    }
    let issues = zorgnet_fhir::validate_resource(&resource);
    if !issues.is_empty() {
        return Err(FhirError {
            status: StatusCode::BAD_REQUEST,
            issues,
        });
    }
    resource
        .get("parameter")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|parameter| {
            let parameter = parameter
                .as_object()
                .ok_or_else(|| FhirError::bad_request("Parameters.parameter must hold objects"))?;
            let name = parameter
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| FhirError::bad_request("a parameter without a name"))?;
            Ok((name.to_string(), value_text(name, parameter)?))
        })
        .collect()
}

/// The one `value[x]` of a parameter, as query text.
fn value_text(name: &str, parameter: &Map<String, Value>) -> Result<String, FhirError> {
    if parameter.contains_key("resource") || parameter.contains_key("part") {
        return Err(FhirError::new(
            StatusCode::BAD_REQUEST,
            IssueCode::NotSupported,
            format!(
                "parameter '{name}': this operation takes simple values, not a resource or parts"
            ),
        ));
    }
    let mut values = parameter
        .iter()
        .filter_map(|(key, value)| key.strip_prefix("value").map(|t| (t, value)));
    let (Some((value_type, value)), None) = (values.next(), values.next()) else {
        return Err(FhirError::bad_request(format!(
            "parameter '{name}' needs exactly one value[x]"
        )));
    };
    let text = |v: &Value| v.as_str().map(String::from);
    let joined = |first: &str, second: &str| {
        let second = value.get(second).and_then(Value::as_str)?;
        Some(match value.get(first).and_then(Value::as_str) {
            Some(system) => format!("{system}|{second}"),
            None => second.to_string(),
        })
    };
    let converted = match value_type {
        t if TEXT_VALUE_TYPES.contains(&t) => text(value),
        t if SCALAR_VALUE_TYPES.contains(&t) => {
            (value.is_number() || value.is_boolean()).then(|| value.to_string())
        }
        "Identifier" => joined("system", "value"),
        "Coding" => joined("system", "code"),
        "Reference" => value.get("reference").and_then(text),
        other => {
            return Err(FhirError::new(
                StatusCode::BAD_REQUEST,
                IssueCode::NotSupported,
                format!("parameter '{name}': value{other} is not taken by this operation"),
            ));
        }
    };
    converted.ok_or_else(|| {
        FhirError::bad_request(format!(
            "parameter '{name}': value{value_type} has no usable value"
        ))
    })
}

/// The parameters as a query string, for the paging links of a `POST`ed operation (which
/// are followed with `GET`).
pub(crate) fn as_query(pairs: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter())
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> Result<Vec<(String, String)>, FhirError> {
        body_parameters(body.to_string().as_bytes())
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parameters_become_query_pairs_in_order_and_may_repeat() {
        let body = json!({"resourceType": "Parameters", "parameter": [
            {"name": "_type", "valueCode": "Condition"},
            {"name": "_type", "valueString": "Observation"},
            {"name": "_count", "valueInteger": 5},
            {"name": "_since", "valueInstant": "2024-01-01T00:00:00Z"},
            {"name": "patient.identifier", "valueIdentifier":
                {"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "123456782"}},
            {"name": "category", "valueCoding": {"code": "medication"}},
            {"name": "flag", "valueBoolean": true}
        ]});
        assert_eq!(
            parse(body).unwrap(),
            pairs(&[
                ("_type", "Condition"),
                ("_type", "Observation"),
                ("_count", "5"),
                ("_since", "2024-01-01T00:00:00Z"),
                (
                    "patient.identifier",
                    "http://fhir.nl/fhir/NamingSystem/bsn|123456782"
                ),
                ("category", "medication"),
                ("flag", "true"),
            ])
        );
        assert_eq!(
            parse(json!({"resourceType": "Parameters"})).unwrap(),
            pairs(&[])
        );
        assert_eq!(body_parameters(b"").unwrap(), pairs(&[]));
        assert_eq!(body_parameters(b" \n").unwrap(), pairs(&[]));
    }

    #[test]
    fn other_bodies_are_refused_with_400() {
        for body in [
            json!({"resourceType": "Patient"}),
            json!({"parameter": []}),
            json!([]),
            json!({"resourceType": "Parameters", "parameter": [{"name": "x"}]}),
            json!({"resourceType": "Parameters", "parameter": [{"valueString": "x"}]}),
            json!({"resourceType": "Parameters", "parameter": [{"name": "x", "valueString": 3}]}),
            json!({"resourceType": "Parameters", "parameter": [{"name": "x",
                "resource": {"resourceType": "Patient"}}]}),
            json!({"resourceType": "Parameters", "parameter": [{"name": "x",
                "part": [{"name": "y", "valueString": "z"}]}]}),
            json!({"resourceType": "Parameters", "parameter": [{"name": "x",
                "valueQuantity": {"value": 1}}]}),
            json!({"resourceType": "Parameters", "unknown": 1}),
        ] {
            let refused = parse(body.clone()).expect_err(&body.to_string());
            assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{body}");
        }
        assert_eq!(
            body_parameters(b"{not json").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }
}
