//! Content negotiation for every FHIR request, in one tower layer ([`negotiate`]) in front of
//! every handler under `/fhir`: reads, searches, history, operations, metadata and
//! transactions all speak FHIR JSON and FHIR XML, and say so the same way. The handlers, and
//! the embedder's layers inside this one, see and write JSON only: XML is converted here, at
//! the edge, by `zorgnet_fhir::xml`.
//!
//! - The response format is asked by `_format` (which wins over `Accept`, as FHIR says:
//!   `json`, `xml` or a media type of either) or by `Accept` (the JSON or XML type of the
//!   highest quality; JSON when they tie, or when there is no `Accept`). A format that is
//!   neither — or an `Accept` list that lets neither through — is a 406 with an
//!   OperationOutcome (in JSON).
//! - An answer in XML is the JSON answer converted ([`XML_RESPONSE_LIMIT_BYTES`] at most):
//!   resources, Bundles, OperationOutcomes (errors included) and the CapabilityStatement;
//!   answers that are not FHIR JSON (NDJSON, `/metrics`, empty ones) are left as they are.
//! - A query parameter holding a NUL character (`%00`) is a 400.
//! - A `_format` sent in a `POST …/_search` form body or an operation's `Parameters` body
//!   counts as one in the URL: this layer reads those bodies too (within the limits their
//!   handlers set) to choose the answer's format, and the handlers ask
//!   [`check_format_parameters`], the one rule, once the body is read.
//! - A request body is FHIR JSON or FHIR XML (`application/fhir+xml`, `application/xml`,
//!   `text/xml`); an XML body is converted to JSON before any handler or embedder's layer
//!   sees it, and one that is not well-formed FHIR XML — a DOCTYPE included — is a 400.
//!   `POST …/_search` takes `application/x-www-form-urlencoded` instead (FHIR defines form
//!   bodies for `_search` only, so an operation's POST takes a `Parameters` resource), and
//!   `PATCH` also takes `application/json-patch+json`. Anything else is a 415; so is a body
//!   declared in a `charset` other than UTF-8, the one encoding bodies are read in.
//!
//! - `_pretty=true` indents a JSON or XML answer for people ([`PRETTY_BODY_LIMIT_BYTES`] at
//!   most).
//!
//! What it is not: Turtle, which is not supported at all.

use crate::error::FhirError;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use zorgnet_fhir::IssueCode;
use zorgnet_fhir::search::check_search_text;
use zorgnet_fhir::xml::XmlError;

/// The JSON media types of FHIR (R4's, the generic one, and the DSTU2 name clients still send).
const JSON_MEDIA_TYPES: [&str; 3] = [
    "application/fhir+json",
    "application/json",
    "application/json+fhir",
];
/// The XML media types of FHIR (R4's, the generic ones, and the DSTU2 name).
const XML_MEDIA_TYPES: [&str; 4] = [
    "application/fhir+xml",
    "application/xml",
    "text/xml",
    "application/xml+fhir",
];
/// The media type of an answer in XML.
pub const FHIR_XML: &str = "application/fhir+xml; charset=utf-8";
/// The body of `POST …/_search`.
const FORM_MEDIA_TYPE: &str = "application/x-www-form-urlencoded";
/// Largest JSON answer converted to XML; a larger one is a 500 that asks for JSON instead.
pub const XML_RESPONSE_LIMIT_BYTES: usize = 64 * 1024 * 1024;

/// The two formats the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Xml,
}

/// The layer: refuses what the node cannot read or write before any handler runs, converts
/// XML bodies to JSON on the way in and JSON answers to XML on the way out.
pub(crate) async fn negotiate(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path != "/fhir" && !path.starts_with("/fhir/") {
        return next.run(request).await;
    }
    let query = request.uri().query().map(str::to_string);
    let query = query.as_deref();
    let pretty = pretty_asked(query);
    let format = response_format(query, request.headers());
    // Refusals before the format is settled are written in the format asked, where one is.
    let asked = *format.as_ref().unwrap_or(&Format::Json);
    let checked = check_body(request.method(), path, request.headers())
        .and_then(|()| check_query_text(query));
    if let Err(e) = checked {
        return render(e.into_response(), asked, pretty).await;
    }
    let mut format = match format {
        Ok(format) => format,
        Err(e) => return e.into_response(),
    };
    let request = match xml_body_as_json(request).await {
        Ok(request) => request,
        Err(e) => return render(e.into_response(), format, pretty).await,
    };
    let request = match format_in_body(request).await {
        Ok((request, Some(in_body))) => {
            format = in_body;
            request
        }
        Ok((request, None)) => request,
        Err(e) => return render(e.into_response(), format, pretty).await,
    };
    let response = next.run(request).await;
    render(response, format, pretty).await
}

/// The answer in the format asked.
async fn render(response: Response, format: Format, pretty: bool) -> Response {
    match format {
        Format::Xml => as_xml(response, pretty).await,
        Format::Json if pretty => prettified(response).await,
        Format::Json => response,
    }
}

/// Whether a header value names one of `types`.
fn names_one_of(value: Option<&HeaderValue>, types: &[&str]) -> bool {
    value
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| types.contains(&media_type(v).as_str()))
}

/// A FHIR JSON answer converted to XML; any other answer unchanged.
async fn as_xml(response: Response, pretty: bool) -> Response {
    if !names_one_of(
        response.headers().get(header::CONTENT_TYPE),
        &JSON_MEDIA_TYPES,
    ) {
        return response;
    }
    let known_too_large = axum::body::HttpBody::size_hint(response.body())
        .upper()
        .is_some_and(|n| n > XML_RESPONSE_LIMIT_BYTES as u64);
    if known_too_large {
        return xml_failure(format!(
            "the answer is larger than {XML_RESPONSE_LIMIT_BYTES} bytes, too large to convert \
             to XML; ask for application/fhir+json"
        ));
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, XML_RESPONSE_LIMIT_BYTES).await else {
        return xml_failure(format!(
            "the answer could not be read, or is larger than {XML_RESPONSE_LIMIT_BYTES} \
             bytes, to convert it to XML; ask for application/fhir+json"
        ));
    };
    if bytes.is_empty() {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let converted = serde_json::from_slice::<serde_json::Value>(&bytes)
        .map_err(|e| e.to_string())
        .and_then(|json| {
            if pretty {
                zorgnet_fhir::xml::json_to_xml_pretty(&json)
            } else {
                zorgnet_fhir::xml::json_to_xml(&json)
            }
            .map_err(|e| e.to_string())
        });
    match converted {
        Ok(xml) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            parts
                .headers
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_XML));
            Response::from_parts(parts, Body::from(xml))
        }
        Err(e) => {
            tracing::error!(error = %crate::error::loggable(&e), "an answer cannot be written as XML");
            xml_failure(format!(
                "the answer cannot be written as XML ({e}); ask for application/fhir+json"
            ))
        }
    }
}

/// A 500 about converting an answer to XML, itself in XML (an OperationOutcome always
/// converts).
fn xml_failure(message: String) -> Response {
    let outcome = zorgnet_fhir::operation_outcome(&[zorgnet_fhir::Issue::error(
        IssueCode::Exception,
        message,
    )]);
    let body = zorgnet_fhir::xml::json_to_xml(&outcome).unwrap_or_default();
    let mut response = (StatusCode::INTERNAL_SERVER_ERROR, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_XML));
    response
}

/// The request with an XML body converted to FHIR JSON (and declared so); any other
/// request unchanged.
async fn xml_body_as_json(request: Request) -> Result<Request, FhirError> {
    if !matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH
    ) || !names_one_of(
        request.headers().get(header::CONTENT_TYPE),
        &XML_MEDIA_TYPES,
    ) {
        return Ok(request);
    }
    let (mut parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, crate::REQUEST_BODY_LIMIT_BYTES)
        .await
        .map_err(|_| body_too_large())?;
    let json = if bytes.iter().all(u8::is_ascii_whitespace) {
        // An empty body stays empty: the handler says whether it may be.
        Vec::new()
    } else {
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| FhirError::bad_request("the XML body is not UTF-8"))?;
        let resource = zorgnet_fhir::xml::xml_to_json(text).map_err(|e| match e {
            XmlError::TooLarge { .. } => body_too_large(),
            e => FhirError::new(
                StatusCode::BAD_REQUEST,
                IssueCode::Structure,
                format!("the body is not FHIR XML: {e}"),
            ),
        })?;
        serde_json::to_vec(&resource).map_err(|e| {
            FhirError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                IssueCode::Exception,
                format!("the XML body could not be passed on as JSON: {e}"),
            )
        })?
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/fhir+json"),
    );
    Ok(Request::from_parts(parts, Body::from(json)))
}

fn body_too_large() -> FhirError {
    FhirError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        IssueCode::TooCostly,
        format!(
            "request body larger than {} bytes",
            crate::REQUEST_BODY_LIMIT_BYTES
        ),
    )
}

/// The format a `_format` in a `POST …/_search` form body or an operation's `Parameters`
/// body asks for, read within the limits those handlers set (a larger body is theirs to
/// refuse, so it is refused the same way here); the request goes on with its body.
async fn format_in_body(request: Request) -> Result<(Request, Option<Format>), FhirError> {
    if *request.method() != Method::POST {
        return Ok((request, None));
    }
    let last = request.uri().path().rsplit('/').next().unwrap_or("");
    let search = last == "_search";
    let operation = last.starts_with('$') || last.starts_with("%24");
    if !(search || operation) {
        return Ok((request, None));
    }
    let limit = if search {
        crate::interactions::SEARCH_BODY_LIMIT_BYTES
    } else {
        crate::operation::OPERATION_BODY_LIMIT_BYTES
    };
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        FhirError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            IssueCode::TooCostly,
            if search {
                format!("a _search body may be at most {limit} bytes")
            } else {
                format!("an operation's body may be at most {limit} bytes")
            },
        )
    })?;
    let pairs: Vec<(String, String)> = if search {
        form_urlencoded::parse(&bytes).into_owned().collect()
    } else {
        // A body that is no `Parameters` is the handler's to refuse.
        crate::operation::body_parameters(&bytes).unwrap_or_default()
    };
    let format = formats(
        pairs
            .iter()
            .filter(|(name, _)| name == "_format")
            .map(|(_, value)| value.as_str()),
    )?;
    Ok((Request::from_parts(parts, Body::from(bytes)), format))
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
        (false, m) if JSON_MEDIA_TYPES.contains(&m) || XML_MEDIA_TYPES.contains(&m) => Ok(()),
        (false, FORM_MEDIA_TYPE) => Err(unsupported_media_type(
            "form-encoded bodies are only for _search; send application/fhir+json or \
             application/fhir+xml (an operation takes a Parameters resource)",
        )),
        (false, m) => Err(unsupported_media_type(&format!(
            "unsupported media type '{m}'; send application/fhir+json or application/fhir+xml"
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
        format!(
            "{asked} cannot be served: this server speaks application/fhir+json and \
             application/fhir+xml"
        ),
    )
}

/// The format of the answer: `_format`'s, else `Accept`'s, else JSON.
fn response_format(query: Option<&str>, headers: &HeaderMap) -> Result<Format, FhirError> {
    let pairs = crate::interactions::query_pairs(query);
    let asked = formats(
        pairs
            .iter()
            .filter(|(name, _)| name == "_format")
            .map(|(_, value)| value.as_str()),
    )?;
    if let Some(format) = asked {
        return Ok(format);
    }
    let accept: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let accept = accept.join(",");
    if accept.trim().is_empty() {
        return Ok(Format::Json);
    }
    accepted_format(&accept).ok_or_else(|| not_acceptable(&format!("Accept: {accept}")))
}

/// Refuses with 406 a `_format` among a request's parameters that names neither JSON nor
/// XML: for the parameters a `_search` form or an operation's `Parameters` body carries.
pub(crate) fn check_format_parameters(pairs: &[(String, String)]) -> Result<(), FhirError> {
    formats(
        pairs
            .iter()
            .filter(|(name, _)| name == "_format")
            .map(|(_, value)| value.as_str()),
    )
    .map(|_| ())
}

/// The format the `_format` values ask for (the first; `None` when there are none), or a
/// 406 for one that names neither JSON nor XML.
fn formats<'a>(values: impl Iterator<Item = &'a str>) -> Result<Option<Format>, FhirError> {
    let mut first = None;
    for value in values {
        let format =
            format_named(value).ok_or_else(|| not_acceptable(&format!("_format={value}")))?;
        first.get_or_insert(format);
    }
    Ok(first)
}

/// The format a `_format` value names: `json`, `xml` or a media type of either. A `+` sent
/// unencoded in a query decodes to a space (`application/fhir json`), so a space counts as a
/// `+`.
fn format_named(value: &str) -> Option<Format> {
    let format = media_type(value).replace(' ', "+");
    if format == "json" || JSON_MEDIA_TYPES.contains(&format.as_str()) {
        Some(Format::Json)
    } else if format == "xml" || XML_MEDIA_TYPES.contains(&format.as_str()) {
        Some(Format::Xml)
    } else {
        None
    }
}

/// The format an `Accept` list prefers (RFC 9110 §12.5.1): each media type of a format takes
/// the quality of the most specific range that matches it, a format the best quality of its
/// types, and the better format is served (JSON when they tie); `None` when neither has a
/// quality above zero. A quality that is not a number is taken as 1, the default.
fn accepted_format(accept: &str) -> Option<Format> {
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
    let quality_of = |media: &str| -> f32 {
        let (kind, _) = media.split_once('/').unwrap_or((media, ""));
        let specificity = |range: &str| {
            if range == media {
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
            .map_or(0.0, |(_, quality)| quality)
    };
    let best = |types: &[&str]| types.iter().map(|t| quality_of(t)).fold(0.0f32, f32::max);
    let (json, xml) = (best(&JSON_MEDIA_TYPES), best(&XML_MEDIA_TYPES));
    if json <= 0.0 && xml <= 0.0 {
        None
    } else if json >= xml {
        Some(Format::Json)
    } else {
        Some(Format::Xml)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_lists_choose_json_or_xml_by_quality() {
        for json in [
            "application/fhir+json",
            "application/json",
            "application/json+fhir",
            "*/*",
            "application/*",
            "application/fhir+xml;q=0.5, application/fhir+json",
            "application/fhir+json; fhirVersion=4.0",
            "APPLICATION/FHIR+JSON",
            "application/fhir+json;q=nonsense",
            "application/fhir+json, application/fhir+xml",
        ] {
            assert_eq!(accepted_format(json), Some(Format::Json), "{json}");
        }
        for xml in [
            "application/fhir+xml",
            "text/xml",
            "application/xml, text/turtle",
            "application/fhir+xml, application/fhir+json;q=0.5",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            "application/fhir+json;q=0, application/xml",
            "text/*",
        ] {
            assert_eq!(accepted_format(xml), Some(Format::Xml), "{xml}");
        }
        for neither in [
            "text/turtle",
            "application/fhir+json;q=0",
            "application/json;q=0, application/fhir+json;q=0, application/json+fhir;q=0, \
             application/xml;q=0, text/xml;q=0, application/fhir+xml;q=0, \
             application/xml+fhir;q=0, */*",
            "image/*",
        ] {
            assert_eq!(accepted_format(neither), None, "{neither}");
        }
    }

    #[test]
    fn format_values_name_json_xml_or_something_else() {
        for json in [
            "json",
            "JSON",
            "application/json",
            "application/fhir+json",
            "application/fhir json",
            "application/fhir+json;fhirVersion=4.0",
        ] {
            assert_eq!(format_named(json), Some(Format::Json), "{json}");
        }
        for xml in [
            "xml",
            "XML",
            "application/fhir+xml",
            "application/fhir xml",
            "text/xml",
            "application/xml",
        ] {
            assert_eq!(format_named(xml), Some(Format::Xml), "{xml}");
        }
        for other in ["ttl", "html", "", "application/xhtml+xml"] {
            assert_eq!(format_named(other), None, "{other}");
        }
    }
}
