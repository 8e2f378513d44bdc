//! The access logs of all sources as one list: each node's `AuditEvent`s (IHE BALP, as
//! `zorgnet_audit::balp` writes them) read back into who, when, what, why and the outcome,
//! newest first, with the source named.
//! Each access by someone else can be reported as suspicious ([`report`]): the portal posts
//! `$report` to the record's own node with the citizen's access token, and the node, which
//! decides whether this citizen may report that record, makes it an alert of its log.
//! What it is not: a verification of the records (the proof page checks one on request).

use crate::i18n::Texts;
use crate::sources::Found;
use serde_json::{Value, json};
use std::time::Duration;
use zorgnet_audit::balp::{ACT_REASON_SYSTEM, URA_SYSTEM, UZI_SYSTEM};

/// One access, as the page shows it.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    /// `recorded`, as the node wrote it (UTC).
    pub(crate) when: String,
    pub(crate) who: String,
    pub(crate) role: String,
    pub(crate) organisation: String,
    pub(crate) what: String,
    pub(crate) why: String,
    /// A break-the-glass (emergency) access.
    pub(crate) emergency: bool,
    pub(crate) outcome: &'static str,
    pub(crate) succeeded: bool,
    pub(crate) source: String,
    /// The link to the proof page of this record.
    pub(crate) proof_href: String,
    /// The index of the record's source, and the record's id there (for the report form).
    pub(crate) source_index: usize,
    pub(crate) id: String,
    /// Whether the page offers to report it: an access by someone else than the citizen
    /// (their own reads and reports are not reported).
    pub(crate) reportable: bool,
}

/// Longest reason the portal passes on with a report, in characters (the nodes' limit,
/// `zorgnet_audit::REPORT_REASON_CHARS_MAX`).
pub(crate) const REPORT_REASON_CHARS_MAX: usize = zorgnet_audit::REPORT_REASON_CHARS_MAX;

/// Why a report was not passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReportFailure {
    /// The node refused it (not the citizen's record, or not theirs to report).
    Refused,
    /// The node found the report invalid (400).
    Invalid,
    /// The node did not answer as it should, or in time.
    Unavailable,
}

/// Reports record `id` of the node at `fhir_base` as suspicious with the citizen's `token`
/// (`POST AuditEvent/{id}/$report`, a `Parameters` with the `reason` when one is given).
pub(crate) async fn report(
    http: &reqwest::Client,
    fhir_base: &str,
    id: u64,
    token: &str,
    reason: Option<&str>,
    timeout: Duration,
) -> Result<(), ReportFailure> {
    let parameter: Vec<Value> = reason
        .map(|reason| json!({"name": "reason", "valueString": reason}))
        .into_iter()
        .collect();
    let body = json!({"resourceType": "Parameters", "parameter": parameter});
    let asked = http
        .post(format!("{fhir_base}/AuditEvent/{id}/$report"))
        .bearer_auth(token)
        .header("content-type", "application/fhir+json")
        .header("accept", "application/fhir+json")
        .body(body.to_string())
        .send();
    match tokio::time::timeout(timeout, asked).await {
        Ok(Ok(answer)) if answer.status().is_success() => Ok(()),
        Ok(Ok(answer)) => {
            let status = answer.status();
            tracing::info!(%status, "a node did not take a citizen's report");
            Err(match status.as_u16() {
                400 => ReportFailure::Invalid,
                401 | 403 | 404 => ReportFailure::Refused,
                _ => ReportFailure::Unavailable,
            })
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "a citizen's report did not reach its node");
            Err(ReportFailure::Unavailable)
        }
        Err(_) => Err(ReportFailure::Unavailable),
    }
}

fn coding_code(value: &Value) -> Option<&str> {
    value["coding"].as_array()?.first()?["code"].as_str()
}

fn identifier_text(who: &Value, t: &Texts) -> Option<String> {
    let identifier = &who["identifier"];
    let value = identifier["value"].as_str()?;
    Some(match identifier["system"].as_str() {
        Some(UZI_SYSTEM) => format!("{} (UZI {value})", t.professional),
        Some(URA_SYSTEM) => format!("URA {value}"),
        _ => value.to_string(),
    })
}

/// Reads one AuditEvent of source `source` (index `index`).
fn access(event: &Value, source: &str, index: usize, t: &Texts) -> Option<Access> {
    let id = event["id"].as_str()?;
    let agents = event["agent"].as_array()?;
    let requestor = agents.iter().find(|a| a["requestor"] == true)?;
    let citizen = requestor["role"]
        .as_array()
        .and_then(|roles| roles.first())
        .and_then(coding_code)
        == Some("PAT");
    let who = if citizen {
        format!("{} ({})", t.you, t.via_portal)
    } else {
        identifier_text(&requestor["who"], t)
            .or_else(|| {
                (coding_code(&requestor["type"]) == Some("110150")).then(|| t.system.to_string())
            })
            .or_else(|| requestor["who"]["display"].as_str().map(String::from))
            .unwrap_or_default()
    };
    let role = if citizen {
        String::new()
    } else {
        requestor["role"]
            .as_array()
            .and_then(|roles| roles.first())
            .and_then(coding_code)
            .unwrap_or_default()
            .to_string()
    };
    let organisation = agents
        .iter()
        .filter(|a| a["requestor"] != true)
        .find_map(|a| {
            (a["who"]["identifier"]["system"] == URA_SYSTEM)
                .then(|| identifier_text(&a["who"], t))
                .flatten()
        })
        .unwrap_or_default();
    let purpose = requestor["purposeOfUse"]
        .as_array()
        .and_then(|p| p.first())
        .cloned()
        .unwrap_or(Value::Null);
    let purpose_code = purpose["coding"]
        .as_array()
        .and_then(|c| c.first())
        .filter(|c| c["system"] == ACT_REASON_SYSTEM)
        .and_then(|c| c["code"].as_str());
    let emergency = matches!(purpose_code, Some("ETREAT" | "BTG"));
    let reason = purpose["text"].as_str();
    let why = match (purpose_code, reason) {
        (Some("TREAT"), _) => t.purpose_treatment.to_string(),
        (Some(_), Some(reason)) if emergency => format!("{}: {reason}", t.purpose_emergency),
        (Some(_), None) if emergency => t.purpose_emergency.to_string(),
        (_, Some(text)) => text.to_string(),
        _ => String::new(),
    };
    let interaction = event["subtype"]
        .as_array()
        .and_then(|s| s.first())
        .and_then(|s| s["code"].as_str())
        .unwrap_or_default();
    let target = event["entity"].as_array().and_then(|entities| {
        entities.iter().find_map(|e| {
            e["description"]
                .as_str()
                .or_else(|| e["what"]["reference"].as_str())
                .or_else(|| e["what"]["display"].as_str())
        })
    });
    let what = match target {
        Some(target) => format!("{interaction}: {target}"),
        None => interaction.to_string(),
    };
    let succeeded = event["outcome"] == "0";
    let outcome = match event["outcome"].as_str() {
        Some("0") => t.outcome_ok,
        Some("4") => t.outcome_refused,
        _ => t.outcome_failed,
    };
    let proof_href = format!(
        "/wie-keek/bewijs?{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("source", &index.to_string())
            .append_pair("id", id)
            .finish()
    );
    Some(Access {
        when: event["recorded"].as_str().unwrap_or_default().to_string(),
        who,
        role,
        organisation,
        what,
        why,
        emergency,
        outcome,
        succeeded,
        source: source.to_string(),
        proof_href,
        source_index: index,
        id: id.to_string(),
        reportable: !citizen,
    })
}

/// The accesses in `found` (AuditEvents of the sources named `sources`), newest first.
pub(crate) fn accesses(found: &[Found], sources: &[String], t: &Texts) -> Vec<Access> {
    let mut accesses: Vec<Access> = found
        .iter()
        .filter(|f| f.resource["resourceType"] == "AuditEvent")
        .filter_map(|f| {
            let source = sources.get(f.source)?;
            access(&f.resource, source, f.source, t)
        })
        .collect();
    accesses.sort_by(|a, b| b.when.cmp(&a.when));
    accesses
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::i18n::Texts;
    use zorgnet_audit::balp::{LogSource, audit_event};
    use zorgnet_audit::{Agent, AgentKind, AuditRecord};
    use zorgnet_web::Lang;

    fn event(kind: AgentKind, purpose: Option<&str>, status: u16) -> Value {
        let record = AuditRecord {
            at_ms: 1_767_225_600_000,
            agent: Agent {
                kind,
                id: Some(if kind == AgentKind::Citizen {
                    "https://idp anna".into()
                } else {
                    "900000001".into()
                }),
                role: Some("01.015".into()),
                organisation: Some("00000022".into()),
                certificate: None,
            },
            patients: vec!["p1".into()],
            action: "read".into(),
            request: "GET /fhir/Patient/p1".into(),
            purpose: purpose.map(String::from),
            reason: purpose
                .filter(|p| *p == "emergency")
                .map(|_| "bewusteloos".into()),
            bases: Vec::new(),
            status,
        };
        audit_event(
            7,
            &record,
            &LogSource {
                ura: "00000011",
                name: "Huisarts",
                base_url: "",
            },
        )
    }

    fn one(event: Value) -> Access {
        let found = Found {
            source: 0,
            full_url: String::new(),
            resource: event,
        };
        let [access] = accesses(&[found], &["Huisarts".into()], Texts::of(Lang::Nl))
            .try_into()
            .unwrap();
        access
    }

    #[test]
    fn balp_events_read_back() {
        let professional = one(event(AgentKind::Professional, Some("treatment"), 200));
        assert_eq!(professional.who, "Zorgverlener (UZI 900000001)");
        assert_eq!(professional.role, "01.015");
        assert_eq!(professional.organisation, "URA 00000022");
        assert_eq!(professional.why, "Behandeling");
        assert!(!professional.emergency && professional.succeeded);
        assert_eq!(professional.what, "read: Patient/p1");
        assert_eq!(professional.proof_href, "/wie-keek/bewijs?source=0&id=7");
        assert_eq!(professional.when, "2026-01-01T00:00:00.000Z");

        let emergency = one(event(AgentKind::Professional, Some("emergency"), 403));
        assert!(emergency.emergency);
        assert_eq!(emergency.why, "NOODTOEGANG: bewusteloos");
        assert_eq!(emergency.outcome, "Geweigerd");

        assert!(professional.reportable && professional.id == "7");
        let citizen = one(event(AgentKind::Citizen, None, 200));
        assert!(citizen.who.starts_with("U zelf"), "{}", citizen.who);
        assert_eq!(citizen.role, "");
        assert!(
            !citizen.reportable,
            "the citizen's own reads are not reported"
        );
    }
}
