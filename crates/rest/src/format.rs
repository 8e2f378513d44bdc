//! Content negotiation for every FHIR request, in one tower layer ([`negotiate`]) in front of
//! every handler under `/fhir`: reads, searches, history, operations, metadata and
//! transactions all speak JSON only, and say so the same way.
//!
//! - A response format other than JSON — asked by `_format` (which wins over `Accept`, as
//!   FHIR says) or by an `Accept` list without any JSON type, `*/*` or `application/*` —
//!   is a 406 with an OperationOutcome (in JSON, the one format there is).
//! - A query parameter holding a NUL character (`%00`) is a 400.
//! - A `_format` sent in a `POST …/_search` form body or an operation's `Parameters` body
//!   counts as one in the URL: the handlers that read those bodies ask
//!   [`check_format_parameters`], the one rule, once the body is read.
//! - A request body must be FHIR JSON; `POST …/_search` takes
//!   `application/x-www-form-urlencoded` instead (FHIR defines form bodies for `_search`
//!   only, so an operation's POST takes a `Parameters` resource), and `PATCH` also takes
//!   `application/json-patch+json`. Anything else, XML included, is a 415; so is a body declared in a `charset` other than UTF-8, the one
//!   encoding FHIR JSON and form bodies are read in.
//!
//! - `_pretty=true` indents a JSON answer for people ([`PRETTY_BODY_LIMIT_BYTES`] at most).
//!
//! What it is not: a converter. XML and Turtle are not supported at all; when they are,
//! this is the one place that learns to tell them apart.

use crate::error::FhirError;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use zorgnet_fhir::IssueCode;
use zorgnet_fhir::search::check_search_text;

/// The JSON media types of FHIR (R4's, the generic one, and the DSTU2 name clients still send).
const JSON_MEDIA_TYPES: [&str; 3] = [
    "application/fhir+json",
    "application/json",
    "application/json+fhir",
];
/// The body of `POST …/_search`.
const FORM_MEDIA_TYPE: &str = "application/x-www-form-urlencoded";

/// The layer: refuses what the node cannot read or write before any handler runs.
pub(crate) async fn negotiate(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path != "/fhir" && !path.starts_with("/fhir/") {
        return next.run(request).await;
    }
    let checked = check_body(request.method(), path, request.headers())
        .and_then(|()| check_query_text(request.uri().query()))
        .and_then(|()| check_response_format(request.uri().query(), request.headers()));
    if let Err(e) = checked {
        return e.into_response();
    }
    let pretty = pretty_asked(request.uri().query());
    let response = next.run(request).await;
    if pretty {
        prettified(response).await
    } else {
        response
    }
}

/// Largest JSON answer `_pretty=true` indents; a larger one, or one whose size is not known
/// beforehand, is sent as it is.
const PRETTY_BODY_LIMIT_BYTES: usize = 64 * 1024 * 1024;

/// Whether the query asks for `_pretty=true`.
fn pretty_asked(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes())
            .any(|(name, value)| name == "_pretty" && value == "true")
    })
}

/// A JSON answer indented for people (`_pretty=true`); any other answer unchanged.
async fn prettified(response: Response) -> Response {
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| JSON_MEDIA_TYPES.contains(&media_type(v).as_str()));
    // The body's own bound: every JSON answer here is made in memory, so it knows its size.
    let within_limit = axum::body::HttpBody::size_hint(response.body())
        .upper()
        .is_some_and(|n| n <= PRETTY_BODY_LIMIT_BYTES as u64);
    if !json || !within_limit {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, PRETTY_BODY_LIMIT_BYTES).await else {
        return FhirError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            IssueCode::Exception,
            "the answer could not be read to indent it (_pretty)",
        )
        .into_response();
    };
    let indented = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|value| serde_json::to_vec_pretty(&value).ok());
    let body = match indented {
        Some(indented) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            indented
        }
        None => bytes.to_vec(),
    };
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// The media type of a header value, lowercased, without parameters.
fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The `charset` parameter of a header value, unquoted.
fn charset(value: &str) -> Option<&str> {
    value
        .split(';')
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("charset"))
        .map(|(_, v)| v.trim().trim_matches('"'))
}

fn check_body(method: &Method, path: &str, headers: &HeaderMap) -> Result<(), FhirError> {
    if !matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        return Ok(());
    }
    let search = path.ends_with("/_search");
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return if search {
            Err(unsupported_media_type(
                "_search takes an application/x-www-form-urlencoded body",
            ))
        } else {
            Ok(())
        };
    };
    let value = value.to_str().unwrap_or("");
    if let Some(charset) = charset(value).filter(|c| !c.eq_ignore_ascii_case("utf-8")) {
        return Err(unsupported_media_type(&format!(
            "bodies are read as UTF-8 only, not charset={charset}"
        )));
    }
    let media = media_type(value);
    if *method == Method::PATCH && media == crate::patch::JSON_PATCH_MEDIA_TYPE {
        return Ok(());
    }
    match (search, media.as_str()) {
        (true, FORM_MEDIA_TYPE) => Ok(()),
        (true, _) => Err(unsupported_media_type(
            "_search takes an application/x-www-form-urlencoded body",
        )),
        (false, m) if JSON_MEDIA_TYPES.contains(&m) => Ok(()),
        (false, FORM_MEDIA_TYPE) => Err(unsupported_media_type(
            "form-encoded bodies are only for _search; send application/fhir+json \
             (an operation takes a Parameters resource)",
        )),
        (false, m) => Err(unsupported_media_type(&format!(
            "unsupported media type '{m}'; send application/fhir+json"
        ))),
    }
}

/// A control character (`%00`, `%1B`, …) in a query parameter's name or value: no FHIR value
/// holds one, and PostgreSQL cannot compare a NUL, so it is the client's mistake, not a
/// storage failure. Checked here for every interaction, searches or not.
fn check_query_text(query: Option<&str>) -> Result<(), FhirError> {
    for (name, value) in crate::interactions::query_pairs(query) {
        let shown: String = name
            .chars()
            .filter(|c| zorgnet_fhir::search::is_search_text_char(*c))
            .collect();
        check_search_text(&format!("query parameter '{shown}'"), &name)
            .and_then(|()| {
                check_search_text(&format!("the value of query parameter '{shown}'"), &value)
            })
            .map_err(FhirError::from_issue)?;
    }
    Ok(())
}

fn unsupported_media_type(message: &str) -> FhirError {
    FhirError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        IssueCode::NotSupported,
        message,
    )
}

fn not_acceptable(asked: &str) -> FhirError {
    FhirError::new(
        StatusCode::NOT_ACCEPTABLE,
        IssueCode::NotSupported,
        format!("{asked} cannot be served: this server speaks application/fhir+json only"),
    )
}

fn check_response_format(query: Option<&str>, headers: &HeaderMap) -> Result<(), FhirError> {
    let formats: Vec<String> = crate::interactions::query_pairs(query)
        .into_iter()
        .filter(|(name, _)| name == "_format")
        .map(|(_, value)| value)
        .collect();
    if !formats.is_empty() {
        return check_formats(formats.iter().map(String::as_str));
    }
    let accept: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let accept = accept.join(",");
    if accept.trim().is_empty() || accepts_json(&accept) {
        Ok(())
    } else {
        Err(not_acceptable(&format!("Accept: {accept}")))
    }
}

/// Refuses with 406 a `_format` among a request's parameters that does not name JSON: for
/// the parameters a `_search` form or an operation's `Parameters` body carries, which this
/// layer does not read.
pub(crate) fn check_format_parameters(pairs: &[(String, String)]) -> Result<(), FhirError> {
    check_formats(
        pairs
            .iter()
            .filter(|(name, _)| name == "_format")
            .map(|(_, value)| value.as_str()),
    )
}

fn check_formats<'a>(mut formats: impl Iterator<Item = &'a str>) -> Result<(), FhirError> {
    match formats.find(|f| !is_json_format(f)) {
        Some(other) => Err(not_acceptable(&format!("_format={other}"))),
        None => Ok(()),
    }
}

/// Whether a `_format` value names JSON: `json` or a JSON media type. A `+` sent unencoded
/// in a query decodes to a space (`application/fhir json`), so a space counts as a `+`.
fn is_json_format(value: &str) -> bool {
    let format = media_type(value).replace(' ', "+");
    format == "json" || JSON_MEDIA_TYPES.contains(&format.as_str())
}

/// Whether an `Accept` list lets any JSON type through (RFC 9110 §12.5.1): each JSON type
/// takes the quality of the most specific range that matches it, and one above zero is
/// enough. A quality that is not a number is taken as 1, the default.
fn accepts_json(accept: &str) -> bool {
    let ranges: Vec<(String, f32)> = accept
        .split(',')
        .filter(|r| !r.trim().is_empty())
        .map(|range| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let quality = parts
                .filter_map(|p| p.split_once('='))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
                .map_or(1.0, |(_, q)| q.trim().parse::<f32>().unwrap_or(1.0));
            (media, quality)
        })
        .collect();
    JSON_MEDIA_TYPES.iter().any(|json| {
        let (kind, _) = json.split_once('/').unwrap_or((json, ""));
        let specificity = |range: &str| {
            if range == *json {
                Some(3)
            } else if range.strip_suffix("/*") == Some(kind) {
                Some(2)
            } else if range == "*/*" {
                Some(1)
            } else {
                None
            }
        };
        ranges
            .iter()
            .filter_map(|(range, quality)| specificity(range).map(|s| (s, *quality)))
            .max_by_key(|(s, _)| *s)
            .is_some_and(|(_, quality)| quality > 0.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_lists_with_json_or_a_wildcard_are_served_json() {
        for served in [
            "application/fhir+json",
            "application/json",
            "application/json+fhir",
            "*/*",
            "application/*",
            "application/fhir+xml, application/fhir+json;q=0.5",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            "application/fhir+json; fhirVersion=4.0",
            "APPLICATION/FHIR+JSON",
            "application/fhir+json;q=nonsense",
        ] {
            assert!(accepts_json(served), "{served}");
        }
        for refused in [
            "application/fhir+xml",
            "text/xml",
            "application/xml, text/turtle",
            "application/fhir+json;q=0",
            "application/json;q=0, application/fhir+json;q=0, application/json+fhir;q=0, */*",
            "text/*",
        ] {
            assert!(!accepts_json(refused), "{refused}");
        }
    }

    #[test]
    fn format_values_name_json_or_something_else() {
        for json in [
            "json",
            "JSON",
            "application/json",
            "application/fhir+json",
            "application/fhir json",
            "application/fhir+json;fhirVersion=4.0",
        ] {
            assert!(is_json_format(json), "{json}");
        }
        for other in ["xml", "application/fhir+xml", "text/xml", "ttl", "html", ""] {
            assert!(!is_json_format(other), "{other}");
        }
    }
}
