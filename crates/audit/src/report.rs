//! A citizen's report of an access to their data as suspicious: an alert at the
//! organisation that keeps the log, raised by the person the access was about rather than
//! by the [`crate::Monitor`]'s rules. It becomes a record of the same log
//! ([`CitizenReport::to_record`]: agent the citizen, action `alert:citizen-report`, the
//! Patients of the reported record, and in `request` the report as JSON with the reported
//! record's sequence number and the citizen's reason), so it is chained, proven and served
//! as a BALP `AuditEvent` (a Security Alert) like the monitor's alerts.

use crate::monitor::ALERT_ACTION_PREFIX;
use crate::record::{Agent, AuditRecord};
use serde::{Deserialize, Serialize};

/// The rule name of a citizen's report, as in its record's action, its alert's JSON and the
/// `rule` label of `zorgnet_audit_alerts_total`.
pub const CITIZEN_REPORT_RULE: &str = "citizen-report";
/// Longest reason a citizen gives with a report, in characters.
pub const REPORT_REASON_CHARS_MAX: usize = 500;

/// A citizen's report of one record of the log as suspicious.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CitizenReport {
    /// Always [`CITIZEN_REPORT_RULE`].
    pub rule: String,
    /// The citizen who reports (kind citizen, id their issuer and subject).
    pub agent: Agent,
    /// The Patients of the reported record (all of them the citizen's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patients: Vec<String>,
    /// The sequence number of the reported record in the log.
    pub seq: u64,
    /// The citizen's reason, at most [`REPORT_REASON_CHARS_MAX`] characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the report was made, epoch milliseconds.
    pub at_ms: i64,
}

impl CitizenReport {
    /// A report by `agent` of record `seq` about `patients`, made at `at_ms`.
    pub fn new(
        agent: Agent,
        patients: Vec<String>,
        seq: u64,
        reason: Option<String>,
        at_ms: i64,
    ) -> CitizenReport {
        CitizenReport {
            rule: CITIZEN_REPORT_RULE.to_string(),
            agent,
            patients,
            seq,
            reason,
            at_ms,
        }
    }

    /// The report as a record of the log: by the citizen, about the reported record's
    /// Patients, with action `alert:citizen-report`, the report as JSON for its request and
    /// status 200 (raised).
    pub fn to_record(&self) -> AuditRecord {
        AuditRecord {
            at_ms: self.at_ms,
            agent: self.agent.clone(),
            patients: self.patients.clone(),
            action: format!("{ALERT_ACTION_PREFIX}{CITIZEN_REPORT_RULE}"),
            request: serde_json::to_string(self).unwrap_or_else(|e| {
                // A struct of strings and numbers always serialises; keep the failure visible.
                format!("{{\"unserialisable\":{:?}}}", e.to_string())
            }),
            purpose: None,
            reason: None,
            bases: Vec::new(),
            status: 200,
        }
    }

    /// The report a record of [`CitizenReport::to_record`] holds; `None` for any other.
    pub fn from_record(record: &AuditRecord) -> Option<CitizenReport> {
        let rule = record.action.strip_prefix(ALERT_ACTION_PREFIX)?;
        if rule != CITIZEN_REPORT_RULE {
            return None;
        }
        serde_json::from_str::<CitizenReport>(&record.request)
            .ok()
            .filter(|r| r.rule == CITIZEN_REPORT_RULE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::AgentKind;

    #[test]
    fn a_report_is_an_alert_record_that_reads_back() {
        let agent = Agent {
            kind: AgentKind::Citizen,
            id: Some("https://idp anna".into()),
            role: None,
            organisation: None,
            certificate: None,
        };
        let report = CitizenReport::new(
            agent.clone(),
            vec!["p1".into()],
            7,
            Some("ik ken deze arts niet".into()),
            1_765_000_000_000,
        );
        let record = report.to_record();
        assert_eq!(record.action, "alert:citizen-report");
        assert_eq!(record.agent, agent);
        assert_eq!(record.patients, ["p1"]);
        assert!(record.request.contains("\"seq\":7"), "{}", record.request);
        assert_eq!(CitizenReport::from_record(&record), Some(report));
        assert_eq!(
            crate::Alert::from_record(&record),
            None,
            "not a monitor's alert"
        );
        let mut other = record.clone();
        other.action = "alert:unrelated-patients".into();
        assert_eq!(CitizenReport::from_record(&other), None);
    }
}
