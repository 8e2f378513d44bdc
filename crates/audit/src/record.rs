//! What one record says: who accessed whose data, when, what, why, from where, and with what
//! outcome (NEN 7513). Serialised as compact JSON, fields in a fixed order, so the same
//! record is always the same bytes.

use serde::{Deserialize, Serialize};

/// One access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When, epoch milliseconds.
    pub at_ms: i64,
    /// Who.
    pub agent: Agent,
    /// Whose data: the ids of the Patients at the source (none when the request named none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patients: Vec<String>,
    /// What was done: the interaction (`read`, `search`, `create`, …, or the operation);
    /// for an alert of the log's monitor, `alert:` and the rule ([`crate::Alert`]).
    pub action: String,
    /// What was asked: method, path and query string; for an alert, the alert as JSON.
    pub request: String,
    /// Why: the purpose of use (`treatment`, `emergency`, …), when the caller gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// The reason given for a break-the-glass access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// On what the access was permitted, when a consent register decided it
    /// (`treatment-relation`, `consent`, `emergency`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bases: Vec<String>,
    /// The outcome: the HTTP status of the answer.
    pub status: u16,
}

/// Who acted, and from where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// What kind of caller.
    pub kind: AgentKind,
    /// The person or system: a UZI number, a citizen's subject at their identity provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The professional's role (a UZI role code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The organisation acting (its URA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organisation: Option<String>,
    /// The client certificate the request came over (its `x5t#S256` thumbprint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

/// The kinds of caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentKind {
    /// A professional, of this organisation or another.
    Professional,
    /// A citizen, about their own data.
    Citizen,
    /// Another organisation's system, without a named professional.
    Organisation,
    /// This organisation's own system (its node key or certificate).
    System,
    /// A caller that did not authenticate (their request was refused).
    Unauthenticated,
}

impl AuditRecord {
    /// The record as the log keeps it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            // A struct of strings and numbers always serialises; keep the failure visible.
            format!("{{\"unserialisable\":{:?}}}", e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_compact_json_that_reads_back() {
        let record = AuditRecord {
            at_ms: 1_765_000_000_000,
            agent: Agent {
                kind: AgentKind::Professional,
                id: Some("900000001".into()),
                role: Some("01.015".into()),
                organisation: Some("00000011".into()),
                certificate: None,
            },
            patients: vec!["p1".into()],
            action: "read".into(),
            request: "GET /fhir/Patient/p1".into(),
            purpose: Some("emergency".into()),
            reason: Some("unconscious at the ED".into()),
            bases: vec!["emergency".into()],
            status: 200,
        };
        let json = record.to_json();
        assert!(
            json.starts_with(
                r#"{"at_ms":1765000000000,"agent":{"kind":"professional","id":"900000001""#
            ),
            "{json}"
        );
        assert!(!json.contains("certificate"), "{json}");
        assert_eq!(serde_json::from_str::<AuditRecord>(&json).unwrap(), record);
        assert_eq!(
            record.clone().to_json(),
            json,
            "the same record, the same bytes"
        );
    }
}
