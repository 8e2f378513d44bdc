//! OperationOutcome issues: what validation, parsing and search report, and their JSON form.
//!
//! The mapping from issues to HTTP status codes lives in the server, not here.

use serde_json::{Value, json};

/// How bad an issue is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The request cannot be completed.
    Error,
    /// Worth knowing; the request went ahead.
    Warning,
    /// Information only.
    Information,
}

/// The FHIR issue-type code (a subset of http://hl7.org/fhir/issue-type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueCode {
    /// Structural problem: unknown element, wrong JSON shape.
    Structure,
    /// A required element is missing.
    Required,
    /// A value is not valid for its type.
    Value,
    /// A code is not in the value set its element is bound to.
    CodeInvalid,
    /// Content is invalid for a business rule.
    Invariant,
    /// Something is not supported by this server.
    NotSupported,
    /// The request is too large or too deep.
    TooCostly,
    /// Generic invalid content.
    Invalid,
    /// Not found.
    NotFound,
    /// Deleted.
    Deleted,
    /// Version conflict.
    Conflict,
    /// Duplicate or multiple matches.
    Duplicate,
    /// Something went wrong on our side.
    Exception,
    /// Informational.
    Informational,
    /// Security: not allowed.
    Forbidden,
    /// Processing problem.
    Processing,
    /// Some of the answer was withheld (by policy).
    Suppressed,
}

impl IssueCode {
    /// The code as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            IssueCode::Structure => "structure",
            IssueCode::Required => "required",
            IssueCode::Value => "value",
            IssueCode::CodeInvalid => "code-invalid",
            IssueCode::Invariant => "invariant",
            IssueCode::NotSupported => "not-supported",
            IssueCode::TooCostly => "too-costly",
            IssueCode::Invalid => "invalid",
            IssueCode::NotFound => "not-found",
            IssueCode::Deleted => "deleted",
            IssueCode::Conflict => "conflict",
            IssueCode::Duplicate => "duplicate",
            IssueCode::Exception => "exception",
            IssueCode::Informational => "informational",
            IssueCode::Forbidden => "forbidden",
            IssueCode::Processing => "processing",
            IssueCode::Suppressed => "suppressed",
        }
    }
}

/// One OperationOutcome issue.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    /// Severity.
    pub severity: Severity,
    /// Issue type.
    pub code: IssueCode,
    /// Human-readable explanation.
    pub diagnostics: String,
    /// Where in the resource or request (FHIRPath-like, `Patient.name[0].given`).
    pub expression: Option<String>,
}

impl Issue {
    /// An error.
    pub fn error(code: IssueCode, diagnostics: impl Into<String>) -> Issue {
        Issue {
            severity: Severity::Error,
            code,
            diagnostics: diagnostics.into(),
            expression: None,
        }
    }

    /// A warning.
    pub fn warning(code: IssueCode, diagnostics: impl Into<String>) -> Issue {
        Issue {
            severity: Severity::Warning,
            ..Issue::error(code, diagnostics)
        }
    }

    /// Information.
    pub fn information(diagnostics: impl Into<String>) -> Issue {
        Issue {
            severity: Severity::Information,
            ..Issue::error(IssueCode::Informational, diagnostics)
        }
    }

    /// Attaches a location.
    pub fn at(mut self, expression: &str) -> Issue {
        if !expression.is_empty() {
            self.expression = Some(expression.to_string());
        }
        self
    }

    fn to_json(&self) -> Value {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        };
        let mut issue = json!({
            "severity": severity,
            "code": self.code.as_str(),
            "diagnostics": self.diagnostics,
        });
        if let Some(expression) = &self.expression {
            issue["expression"] = json!([expression]);
        }
        issue
    }
}

/// An OperationOutcome resource holding the issues.
pub fn operation_outcome(issues: &[Issue]) -> Value {
    let issues: Vec<Value> = if issues.is_empty() {
        vec![Issue::information("all ok").to_json()]
    } else {
        issues.iter().map(Issue::to_json).collect()
    };
    json!({"resourceType": "OperationOutcome", "issue": issues})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_carries_location_and_code() {
        let outcome = operation_outcome(&[Issue::error(IssueCode::Value, "bad").at("Patient.x")]);
        assert_eq!(outcome["issue"][0]["code"], "value");
        assert_eq!(outcome["issue"][0]["severity"], "error");
        assert_eq!(outcome["issue"][0]["expression"][0], "Patient.x");
    }
}
