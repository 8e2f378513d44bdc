//! The one place where failures become HTTP responses: every error is an OperationOutcome
//! with a status that tells the client what to do next. A client's mistake (4xx) is not
//! logged; a server failure (5xx) is logged at ERROR, its text passed through
//! [`loggable`] first, since an error text may quote an id or a value from the request.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use zorgnet_fhir::{Issue, IssueCode, operation_outcome};
use zorgnet_store::StoreError;

/// The media type of every response body.
pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// An error response: status plus issues.
#[derive(Debug)]
pub struct FhirError {
    /// HTTP status.
    pub status: StatusCode,
    /// Issues for the OperationOutcome.
    pub issues: Vec<Issue>,
}

impl FhirError {
    /// An error with one issue.
    pub fn new(status: StatusCode, code: IssueCode, message: impl Into<String>) -> FhirError {
        FhirError {
            status,
            issues: vec![Issue::error(code, message)],
        }
    }

    /// 400 with an `invalid` issue.
    pub fn bad_request(message: impl Into<String>) -> FhirError {
        FhirError::new(StatusCode::BAD_REQUEST, IssueCode::Invalid, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> FhirError {
        FhirError::new(StatusCode::NOT_FOUND, IssueCode::NotFound, message)
    }

    /// Validation issues: structural problems (unknown elements, wrong JSON shape) are 400,
    /// content that is well-formed but invalid is 422.
    pub fn from_validation(issues: Vec<Issue>) -> FhirError {
        let structural = issues.iter().any(|i| {
            matches!(
                i.code,
                IssueCode::Structure | IssueCode::NotSupported | IssueCode::TooCostly
            )
        });
        let status = if structural {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        FhirError { status, issues }
    }

    /// A problem with the request itself (a search that cannot be parsed): 400.
    pub fn from_issue(issue: Issue) -> FhirError {
        FhirError {
            status: StatusCode::BAD_REQUEST,
            issues: vec![issue],
        }
    }
}

impl From<StoreError> for FhirError {
    fn from(e: StoreError) -> FhirError {
        let (status, code) = match &e {
            StoreError::NotFound(_) => (StatusCode::NOT_FOUND, IssueCode::NotFound),
            StoreError::Gone(_) => (StatusCode::GONE, IssueCode::Deleted),
            StoreError::VersionConflict { .. } => {
                (StatusCode::PRECONDITION_FAILED, IssueCode::Conflict)
            }
            StoreError::PreconditionFailed(_) => {
                (StatusCode::PRECONDITION_FAILED, IssueCode::Duplicate)
            }
            StoreError::Invalid(_) => (StatusCode::BAD_REQUEST, IssueCode::Invalid),
            StoreError::Conflict(_) => (StatusCode::CONFLICT, IssueCode::Conflict),
            _ => {
                metrics::counter!("zorgnet_storage_errors_total").increment(1);
                tracing::error!(error = %loggable(&e.to_string()), "storage failure");
                return FhirError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    IssueCode::Exception,
                    "storage failure; see the server log",
                );
            }
        };
        FhirError::new(status, code, e.to_string())
    }
}

impl IntoResponse for FhirError {
    fn into_response(self) -> Response {
        let body = operation_outcome(&self.issues).to_string();
        let mut response = (self.status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
        response
    }
}

/// How many digits a BSN has.
const BSN_DIGITS: usize = 9;

/// `text` fit for a log line: every run of exactly nine digits — the shape of a BSN,
/// whether or not it passes the 11-check, also when a client chose it as a resource id — is
/// replaced by `*********`. For error texts, which may quote input; never a reason to log
/// input on purpose.
pub fn loggable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if digits.len() == BSN_DIGITS {
            out.push_str(&"*".repeat(BSN_DIGITS));
        } else {
            out.push_str(digits);
        }
        digits.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(c);
        }
    }
    flush(&mut digits, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nine_digit_numbers_are_masked_in_log_text() {
        assert_eq!(
            loggable("Patient/123456782 matched but cannot be read"),
            "Patient/********* matched but cannot be read"
        );
        assert_eq!(
            loggable("bsn|123456789,999999999"),
            "bsn|*********,*********"
        );
        assert_eq!(
            loggable("URA 00000011, 1234567890 rows, 12345678, v2"),
            "URA 00000011, 1234567890 rows, 12345678, v2"
        );
        assert_eq!(loggable(""), "");
    }
}
