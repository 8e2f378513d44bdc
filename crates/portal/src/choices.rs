//! "Mijn keuzes": the citizen's consent directives at the hub's consent register, read back
//! into plain sentences, and the forms' fields turned into a directive to record.
//! The person is always the session's citizen: the caller hands in the session's identifier
//! (a BSN or a zorgverificatienummer), which becomes an exchange token for the referral index
//! here ([`person_token`]); nothing of a form ever names a person.
//! What it is not: the policy (the hub's `consent::decide` decides what a directive means for
//! a read; these texts only describe it), or the routes (`pages`).

use crate::Source;
use crate::citizen::CitizenId;
use crate::i18n::Texts;
use axum::http::StatusCode;
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};
use zorgnet_fhir::categories::DataCategory;
use zorgnet_hub_client::{
    ConsentDirective, ConsentDirectives, HubClient, HubClientError, NewConsentDirective,
};
use zorgnet_pseudonym::ExchangeToken;

/// `recorded_by` of what the citizen recorded through a citizen portal.
const BY_CITIZEN: &str = "citizen";
/// `recorded_by` of what the hub's operator recorded.
const BY_OPERATOR: &str = "operator";

/// A change the citizen just made, shown once on the next page (redirect after POST).
#[derive(Debug, Clone)]
pub(crate) enum Confirmation {
    /// A directive recorded: the version the register stored.
    Recorded(ConsentDirective),
    /// A directive revoked: the revoked version.
    Revoked(ConsentDirective),
}

/// A directive in force (or yet to start), as the page lists it.
pub(crate) struct ChoiceRow {
    /// The directive id, for its revoke button.
    pub(crate) id: String,
    /// What it means, in a sentence.
    pub(crate) text: String,
    /// Since when (or from when, when it starts later), in Dutch time; with its end, if any.
    pub(crate) since: String,
    /// Who recorded it.
    pub(crate) by: String,
}

/// A revoked directive, as the page lists it.
pub(crate) struct RevokedRow {
    pub(crate) text: String,
    pub(crate) when: String,
    pub(crate) by: String,
}

/// A choice the form asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Choice {
    /// Share nothing.
    OptOutAll,
    /// Share nothing of one category.
    OptOutCategory(DataCategory),
    /// No exchange with one organisation (consent deny), of one category or all.
    Deny(String, Option<DataCategory>),
    /// Explicit consent for one organisation, of one category or all.
    Permit(String, Option<DataCategory>),
    /// No break-the-glass access.
    EmergencyOptOut,
}

/// The form values `keuze` takes, one per [`Choice`].
pub(crate) const CHOICE_ALL: &str = "alles";
pub(crate) const CHOICE_CATEGORY: &str = "onderwerp";
pub(crate) const CHOICE_DENY: &str = "organisatie-nee";
pub(crate) const CHOICE_PERMIT: &str = "organisatie-ja";
pub(crate) const CHOICE_EMERGENCY: &str = "noodgeval";

impl Choice {
    /// The choice the form's `keuze`, `onderwerp` (a category code; empty for all) and
    /// `organisatie` (the URA of one of `sources`) name; `None` when they name none.
    pub(crate) fn of_form(
        kind: &str,
        category: Option<&str>,
        organisation: Option<&str>,
        sources: &[Source],
    ) -> Option<Choice> {
        let category = match category.map(str::trim).filter(|c| !c.is_empty()) {
            None => None,
            Some(code) => Some(DataCategory::from_code(code)?),
        };
        let organisation = organisation
            .map(str::trim)
            .filter(|ura| sources.iter().any(|s| s.ura == *ura))
            .map(String::from);
        match kind {
            CHOICE_ALL => Some(Choice::OptOutAll),
            CHOICE_CATEGORY => category.map(Choice::OptOutCategory),
            CHOICE_DENY => Some(Choice::Deny(organisation?, category)),
            CHOICE_PERMIT => Some(Choice::Permit(organisation?, category)),
            CHOICE_EMERGENCY => Some(Choice::EmergencyOptOut),
            _ => None,
        }
    }

    /// The directive to record.
    pub(crate) fn directive(&self) -> NewConsentDirective {
        let consent =
            |ura: &str, category: &Option<DataCategory>, decision: &str| NewConsentDirective {
                kind: "consent".into(),
                category: category.map(|c| c.code().to_string()),
                ura: Some(ura.to_string()),
                decision: Some(decision.into()),
                ..NewConsentDirective::default()
            };
        match self {
            Choice::OptOutAll => NewConsentDirective {
                kind: "opt-out".into(),
                ..NewConsentDirective::default()
            },
            Choice::OptOutCategory(category) => NewConsentDirective {
                kind: "opt-out".into(),
                category: Some(category.code().into()),
                ..NewConsentDirective::default()
            },
            Choice::Deny(ura, category) => consent(ura, category, "deny"),
            Choice::Permit(ura, category) => consent(ura, category, "permit"),
            Choice::EmergencyOptOut => NewConsentDirective {
                kind: "emergency-opt-out".into(),
                ..NewConsentDirective::default()
            },
        }
    }
}

/// A category's name within a sentence, in the language of `t`.
pub(crate) fn category_name(category: DataCategory, t: &Texts) -> &'static str {
    match category {
        DataCategory::PatientSummary => t.cat_patient_summary,
        DataCategory::Medication => t.cat_medication,
        DataCategory::Allergies => t.cat_allergies,
        DataCategory::LabResults => t.cat_lab_results,
        DataCategory::Imaging => t.cat_imaging,
        DataCategory::DischargeReport => t.cat_discharge_report,
        DataCategory::NursingTransfer => t.cat_nursing_transfer,
        DataCategory::GpSummary => t.cat_gp_summary,
    }
}

/// `text` with its first letter a capital (for a list of options).
fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Every category the register knows, as (code, name) for a list of options.
pub(crate) fn category_options(t: &Texts) -> Vec<(&'static str, String)> {
    DataCategory::ALL
        .iter()
        .map(|c| (c.code(), capitalised(category_name(*c, t))))
        .collect()
}

/// The organisations a citizen may name: the portal's sources, once per URA, as (URA, name).
pub(crate) fn organisation_options(sources: &[Source]) -> Vec<(String, String)> {
    let mut seen = std::collections::BTreeSet::new();
    sources
        .iter()
        .filter(|s| seen.insert(s.ura.as_str()))
        .map(|s| (s.ura.clone(), s.name.clone()))
        .collect()
}

/// The category a directive names, within a sentence (the code itself for one the portal does
/// not know).
fn named_category(code: &str, t: &Texts) -> String {
    DataCategory::from_code(code)
        .map(|c| category_name(c, t).to_string())
        .unwrap_or_else(|| code.to_string())
}

/// The organisation with URA `ura`: its name when it is one of `sources`.
fn organisation_name(ura: &str, sources: &[Source], t: &Texts) -> String {
    sources
        .iter()
        .find(|s| s.ura == ura)
        .map(|s| s.name.clone())
        .unwrap_or_else(|| format!("{} {ura}", t.organisation_with_ura))
}

/// What directive `d` means, in one sentence in the language of `t`.
pub(crate) fn describe(d: &ConsentDirective, sources: &[Source], t: &Texts) -> String {
    let about = d
        .category
        .as_deref()
        .map(|code| {
            t.choice_about
                .replace("{category}", &named_category(code, t))
        })
        .unwrap_or_default();
    match (d.kind.as_str(), d.category.as_deref(), d.ura.as_deref()) {
        ("opt-out", None, _) => t.choice_all.to_string(),
        ("opt-out", Some(code), _) => t
            .choice_category
            .replace("{category}", &named_category(code, t)),
        ("consent", _, Some(ura)) => {
            let text = if d.decision == "permit" {
                t.choice_permit
            } else {
                t.choice_deny
            };
            capitalised(
                &text
                    .replace("{organisation}", &organisation_name(ura, sources, t))
                    .replace("{about}", &about),
            )
        }
        ("emergency-opt-out", _, _) => t.choice_emergency.to_string(),
        _ => t.choice_unknown.to_string(),
    }
}

/// Who recorded a version: the citizen, the operator, or an organisation (named when it is
/// one of `sources`).
pub(crate) fn recorder(recorded_by: &str, sources: &[Source], t: &Texts) -> String {
    match recorded_by {
        BY_CITIZEN => t.you.to_string(),
        BY_OPERATOR => t.by_operator.to_string(),
        ura => match sources.iter().find(|s| s.ura == ura) {
            Some(source) => format!("{} {}", t.by_provider, source.name),
            None => format!("{} {ura}", t.by_other_provider),
        },
    }
}

/// The last Sunday of `month` in `year`, if the calendar has it.
fn last_sunday(year: i32, month: Month) -> Option<Date> {
    let (next_year, next) = match month {
        Month::December => (year + 1, Month::January),
        other => (year, other.next()),
    };
    let last = Date::from_calendar_date(next_year, next, 1)
        .ok()?
        .previous_day()?;
    Some(last - time::Duration::days(i64::from(last.weekday().number_days_from_sunday())))
}

/// `moment` in Dutch time (in Europe: CET, and CEST from the last Sunday of March to the last
/// Sunday of October, both at 01:00 UTC).
fn dutch(moment: OffsetDateTime) -> OffsetDateTime {
    let utc = moment.to_offset(UtcOffset::UTC);
    let at_one = |month| {
        last_sunday(utc.year(), month)
            .map(|day| {
                PrimitiveDateTime::new(day, Time::from_hms(1, 0, 0).unwrap_or(Time::MIDNIGHT))
            })
            .map(PrimitiveDateTime::assume_utc)
    };
    let summer = match (at_one(Month::March), at_one(Month::October)) {
        (Some(start), Some(end)) => start <= utc && utc < end,
        _ => false,
    };
    let hours = if summer { 2 } else { 1 };
    utc.to_offset(UtcOffset::from_hms(hours, 0, 0).unwrap_or(UtcOffset::UTC))
}

/// An RFC 3339 instant of the register as shown: date and time to the minute, Dutch time (the
/// text itself when it is not one).
pub(crate) fn shown_instant(text: &str) -> String {
    match OffsetDateTime::parse(text, &Rfc3339) {
        Ok(moment) => {
            let local = dutch(moment);
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}",
                local.year(),
                u8::from(local.month()),
                local.day(),
                local.hour(),
                local.minute()
            )
        }
        Err(_) => text.to_string(),
    }
}

/// Whether the RFC 3339 instant `text` lies after now.
fn is_future(text: &str) -> bool {
    OffsetDateTime::parse(text, &Rfc3339).is_ok_and(|moment| moment > OffsetDateTime::now_utc())
}

/// The directives as the page lists them: those active (newest first), and those revoked
/// (most recently revoked first).
pub(crate) fn rows(
    directives: &ConsentDirectives,
    sources: &[Source],
    t: &Texts,
) -> (Vec<ChoiceRow>, Vec<RevokedRow>) {
    let mut current: Vec<&ConsentDirective> = directives.current.iter().collect();
    current.sort_by(|a, b| b.recorded_at.cmp(&a.recorded_at));
    let mut active = Vec::new();
    let mut revoked = Vec::new();
    for d in current {
        let text = describe(d, sources, t);
        if d.status == "active" {
            let mut since = if is_future(&d.valid_from) {
                format!("{} {}", t.choice_from, shown_instant(&d.valid_from))
            } else {
                shown_instant(&d.valid_from)
            };
            if let Some(until) = &d.valid_until {
                since = format!("{since}, {} {}", t.choice_until, shown_instant(until));
            }
            active.push(ChoiceRow {
                id: d.directive_id.clone(),
                text,
                since,
                by: recorder(&d.recorded_by, sources, t),
            });
        } else {
            revoked.push(RevokedRow {
                text,
                when: shown_instant(&d.recorded_at),
                by: recorder(&d.recorded_by, sources, t),
            });
        }
    }
    (active, revoked)
}

/// An exchange token for the referral index naming `citizen` (the session's or the app's,
/// from the verified token), by BSN or zorgverificatienummer alike.
pub(crate) async fn person_token(
    hub: &HubClient,
    citizen: &CitizenId,
) -> Result<ExchangeToken, HubClientError> {
    hub.referral_index_token(citizen.person()).await
}

/// What a failed call to the register becomes: the portal's status and the message, in the
/// language of `t`. Logs the failure's class only (never the person, token or detail).
pub(crate) fn failure(error: &HubClientError, t: &Texts) -> (StatusCode, &'static str) {
    match error {
        HubClientError::Unreachable(_) => {
            tracing::warn!("the consent register could not be reached");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                t.error_register_unreachable,
            )
        }
        HubClientError::Refused { status: 404, .. } => {
            (StatusCode::NOT_FOUND, t.error_choice_not_found)
        }
        HubClientError::Refused { status: 409, .. } => {
            (StatusCode::CONFLICT, t.error_choice_revoked)
        }
        HubClientError::Refused { status, .. } => {
            tracing::warn!(status, "the consent register refused the portal's request");
            (StatusCode::BAD_GATEWAY, t.error_register_refused)
        }
        HubClientError::Invalid(_) => (StatusCode::BAD_REQUEST, t.error_choice_invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::i18n::Texts;
    use zorgnet_web::Lang;

    fn sources() -> Vec<Source> {
        vec![Source {
            name: "Huisarts De Linde".into(),
            ura: "00000011".into(),
            fhir_base: "http://127.0.0.1:7/fhir".into(),
        }]
    }

    fn directive(
        kind: &str,
        category: Option<&str>,
        ura: Option<&str>,
        decision: &str,
    ) -> ConsentDirective {
        ConsentDirective {
            directive_id: "d".into(),
            version: 1,
            kind: kind.into(),
            category: category.map(String::from),
            ura: ura.map(String::from),
            decision: decision.into(),
            status: "active".into(),
            valid_from: "2025-07-01T10:00:00.000Z".into(),
            valid_until: None,
            recorded_at: "2025-07-01T10:00:00.000Z".into(),
            recorded_by: "citizen".into(),
        }
    }

    #[test]
    fn directives_read_as_sentences() {
        let nl = Texts::of(Lang::Nl);
        let en = Texts::of(Lang::En);
        let medication = directive("opt-out", Some("medication"), None, "deny");
        assert_eq!(
            describe(&medication, &sources(), nl),
            "U deelt geen gegevens over medicatie"
        );
        assert_eq!(
            describe(&medication, &sources(), en),
            "You share no data about medication"
        );
        let deny = directive("consent", Some("lab-results"), Some("00000011"), "deny");
        assert_eq!(
            describe(&deny, &sources(), nl),
            "Huisarts De Linde mag uw gegevens over laboratoriumuitslagen niet inzien en niet delen"
        );
        let permit = directive("consent", None, Some("00000099"), "permit");
        assert!(
            describe(&permit, &sources(), en)
                .starts_with("The care provider with URA number 00000099 may see your data")
        );
        assert_eq!(
            recorder("00000011", &sources(), nl),
            "Uw zorgverlener Huisarts De Linde"
        );
        assert_eq!(recorder("citizen", &sources(), nl), "U zelf");
        assert_eq!(
            recorder("operator", &sources(), en),
            "The network's operator"
        );
    }

    #[test]
    fn forms_name_known_categories_and_sources_only() {
        let sources = sources();
        assert_eq!(
            Choice::of_form(CHOICE_CATEGORY, Some("medication"), None, &sources),
            Some(Choice::OptOutCategory(DataCategory::Medication))
        );
        assert_eq!(
            Choice::of_form(CHOICE_CATEGORY, Some(""), None, &sources),
            None
        );
        assert_eq!(
            Choice::of_form(CHOICE_CATEGORY, Some("x"), None, &sources),
            None
        );
        assert_eq!(
            Choice::of_form(CHOICE_DENY, Some(""), Some("00000011"), &sources),
            Some(Choice::Deny("00000011".into(), None))
        );
        assert_eq!(
            Choice::of_form(CHOICE_PERMIT, None, Some("00000099"), &sources),
            None
        );
        assert_eq!(Choice::of_form("iets", None, None, &sources), None);
        let directive = Choice::Permit("00000011".into(), Some(DataCategory::Imaging)).directive();
        assert_eq!(
            serde_json::to_value(&directive).unwrap(),
            serde_json::json!({"kind": "consent", "category": "imaging", "ura": "00000011", "decision": "permit"})
        );
    }

    #[test]
    fn instants_are_shown_in_dutch_time() {
        assert_eq!(
            shown_instant("2025-01-15T10:30:00.000Z"),
            "2025-01-15 11:30"
        );
        assert_eq!(
            shown_instant("2025-07-01T10:30:00.000Z"),
            "2025-07-01 12:30"
        );
        // 2025's summer time starts 30 March and ends 26 October, at 01:00 UTC.
        assert_eq!(shown_instant("2025-03-30T00:59:00Z"), "2025-03-30 01:59");
        assert_eq!(shown_instant("2025-03-30T01:00:00Z"), "2025-03-30 03:00");
        assert_eq!(shown_instant("2025-10-26T00:59:00Z"), "2025-10-26 02:59");
        assert_eq!(shown_instant("2025-10-26T01:00:00Z"), "2025-10-26 02:00");
        assert_eq!(shown_instant("gisteren"), "gisteren");
    }
}
