//! A patient's data as the professional sees it: asked of the organisation's own node
//! (`$fetch` for every source, the own node's Patient for the contacts) with the session's
//! token, and arranged into a timeline, the Basisgegevensset Zorg summary, a medication
//! overview grouped across sources, and notices of what is missing and why.
//!
//! Where each resource came from: the `$fetch` Bundle's OperationOutcome names, in order,
//! each source that answered with how many resources, and the entries follow in that order;
//! the viewer attributes entries by those counts and says "unknown source" when they do not
//! add up. What is missing: the categories the professional's role may not see
//! (`zorgnet_trust::roles`, the table every source applies to other organisations' reads),
//! each source's refusals (the OperationOutcome's `forbidden` issues, with the reason class
//! `role` or `policy` the source gave), and the sources that did not answer.
//! What it is not: a FHIR validator or a clinical interpretation (values are shown as
//! recorded; medication lines are grouped by code or text, not by substance).

use crate::i18n::Texts;
use crate::patient_number::PatientNumber;
use crate::session::Session;
use crate::{FETCH_TIMEOUT, Org, RECENT_LAB_RESULTS, RESPONSE_BYTES_MAX};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use zorgnet_fhir::categories::{DataCategory, categories_of};
use zorgnet_trust::roles::Role;
use zorgnet_web::client::read_body;
use zorgnet_web::record::{Item, LabRow, shown_date, string_at};

/// Why a `$fetch` is asked.
pub(crate) enum Purpose<'a> {
    Treatment,
    /// Break the glass, with the professional's reason.
    Emergency(&'a str),
}

/// Why the node gave no data at all.
#[derive(Debug)]
pub(crate) enum FetchFailure {
    /// The node no longer accepts the session's token (401): log in again.
    SessionExpired,
    /// The node refused (403); its explanation.
    Refused(String),
    /// The node could not be reached, did not answer in time or failed.
    Unavailable(String),
}

/// Why a source withheld something, as far as it said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReasonClass {
    /// The professional's role may not see it.
    Role,
    /// The consent register said no (no treatment relation, an objection); which one is the
    /// patient's business.
    Policy,
}

/// One resource type a source refused.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub(crate) source: String,
    pub(crate) resource_type: String,
    pub(crate) class: ReasonClass,
}

/// What the node's `$fetch` answered.
#[derive(Debug, Default)]
pub(crate) struct Fetched {
    /// Each resource with its source's name.
    pub(crate) resources: Vec<(Value, String)>,
    /// Sources that answered, by name.
    pub(crate) answered: Vec<String>,
    pub(crate) refusals: Vec<Refusal>,
    /// Sources that did not answer, with the node's reason.
    pub(crate) silent: Vec<(String, String)>,
}

/// The resource types a source may refuse, as `$fetch` names them.
fn fetched_types() -> Vec<&'static str> {
    let mut types: Vec<&'static str> = DataCategory::ALL
        .iter()
        .flat_map(|c| c.resource_types().iter().copied())
        .collect();
    types.sort_unstable();
    types.dedup();
    types
}

/// The source's name in a `$fetch` diagnostics text (`{name} (URA {ura}) …`): the name, or
/// the configured organisation's, or the URA.
fn source_name(diagnostics: &str, ura: &str, organisations: &[Org]) -> String {
    let named = diagnostics
        .split_once(" (URA ")
        .map(|(name, _)| name.trim())
        .filter(|name| !name.is_empty());
    match named {
        Some(name) => name.to_string(),
        None => organisations
            .iter()
            .find(|o| o.config.ura == ura)
            .map(|o| o.config.name.clone())
            .unwrap_or_else(|| format!("URA {ura}")),
    }
}

/// The refused resource types in a "refused by consent: Type: reason; Type: reason" text.
fn refused_types(diagnostics: &str) -> Vec<(String, ReasonClass)> {
    let Some((_, list)) = diagnostics.split_once("refused by consent: ") else {
        return Vec::new();
    };
    let mut starts: Vec<(usize, &str)> = fetched_types()
        .into_iter()
        .flat_map(|t| {
            list.match_indices(&format!("{t}: "))
                .filter(|(at, _)| *at == 0 || list[..*at].ends_with("; "))
                .map(move |(at, _)| (at, t))
                .collect::<Vec<_>>()
        })
        .collect();
    starts.sort_unstable();
    starts
        .iter()
        .enumerate()
        .map(|(i, (at, t))| {
            let end = starts
                .get(i + 1)
                .map(|(next, _)| *next)
                .unwrap_or(list.len());
            let class = if list[*at..end].contains("reason class: role") {
                ReasonClass::Role
            } else {
                ReasonClass::Policy
            };
            (t.to_string(), class)
        })
        .collect()
}

/// Reads a `$fetch` Bundle.
pub(crate) fn read_bundle(bundle: &Value, organisations: &[Org]) -> Fetched {
    let entries: Vec<&Value> = bundle["entry"].as_array().into_iter().flatten().collect();
    let outcome = entries
        .first()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == "OperationOutcome");
    let resources: Vec<Value> = entries
        .iter()
        .skip(usize::from(outcome.is_some()))
        .map(|e| e["resource"].clone())
        .filter(Value::is_object)
        .collect();
    let mut fetched = Fetched::default();
    let mut counts: Vec<(String, usize)> = Vec::new();
    for issue in outcome
        .and_then(|o| o["issue"].as_array())
        .into_iter()
        .flatten()
    {
        let diagnostics = issue["diagnostics"].as_str().unwrap_or_default();
        let ura = issue["details"]["coding"][0]["code"]
            .as_str()
            .unwrap_or_default();
        let name = source_name(diagnostics, ura, organisations);
        match issue["code"].as_str().unwrap_or_default() {
            "informational" => {
                let count = diagnostics
                    .strip_suffix(" resources")
                    .and_then(|rest| rest.rsplit(' ').next())
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(usize::MAX);
                counts.push((name.clone(), count));
                fetched.answered.push(name);
            }
            "forbidden" => {
                for (resource_type, class) in refused_types(diagnostics) {
                    fetched.refusals.push(Refusal {
                        source: name.clone(),
                        resource_type,
                        class,
                    });
                }
            }
            _ => {
                let reason = diagnostics
                    .split_once(" did not answer: ")
                    .map(|(_, reason)| reason.to_string())
                    .unwrap_or_default();
                fetched.silent.push((name, reason));
            }
        }
    }
    let attributed = counts
        .iter()
        .map(|(_, n)| *n)
        .try_fold(0usize, |a, n| a.checked_add(n));
    if attributed == Some(resources.len()) {
        let mut resources = resources.into_iter();
        for (name, count) in counts {
            fetched
                .resources
                .extend(resources.by_ref().take(count).map(|r| (r, name.clone())));
        }
    } else {
        fetched.resources = resources.into_iter().map(|r| (r, String::new())).collect();
    }
    fetched
}

/// Asks the organisation's node for the patient's data at every source.
pub(crate) async fn fetch(
    http: &reqwest::Client,
    org: &Org,
    session: &Session,
    patient: &PatientNumber,
    purpose: Purpose<'_>,
) -> Result<Fetched, FetchFailure> {
    let mut parameters = vec![
        json!({"name": "patient.identifier", "valueIdentifier": {"system": patient.system(), "value": patient.digits()}}),
        json!({"name": "uzi", "valueString": session.uzi}),
        json!({"name": "role", "valueString": session.role}),
    ];
    if let Purpose::Emergency(reason) = purpose {
        parameters.push(json!({"name": "purpose", "valueCode": "emergency"}));
        parameters.push(json!({"name": "reason", "valueString": reason}));
    }
    let body = json!({"resourceType": "Parameters", "parameter": parameters});
    let answer = http
        .post(format!("{}/$fetch", org.config.fhir_base))
        .timeout(FETCH_TIMEOUT)
        .bearer_auth(&session.access_token)
        .header("accept", "application/fhir+json")
        .header("content-type", "application/fhir+json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| FetchFailure::Unavailable(e.without_url().to_string()))?;
    let status = answer.status();
    let body = read_body(answer, RESPONSE_BYTES_MAX)
        .await
        .map_err(|e| FetchFailure::Unavailable(e.without_url().to_string()))?;
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match status.as_u16() {
        200 => Ok(read_bundle(&json, std::slice::from_ref(org))),
        401 => Err(FetchFailure::SessionExpired),
        403 => Err(FetchFailure::Refused(outcome_text(&json))),
        _ => Err(FetchFailure::Unavailable(format!(
            "HTTP {status}: {}",
            outcome_text(&json)
        ))),
    }
}

/// The diagnostics of an OperationOutcome, joined.
fn outcome_text(outcome: &Value) -> String {
    outcome["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|issue| issue["diagnostics"].as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The patient as the organisation's own node knows them (name, birth date, contacts), when
/// it does.
pub(crate) async fn own_patient(
    http: &reqwest::Client,
    org: &Org,
    session: &Session,
    patient: &PatientNumber,
) -> Option<Value> {
    let answer = http
        .post(format!("{}/Patient/_search", org.config.fhir_base))
        .timeout(FETCH_TIMEOUT)
        .bearer_auth(&session.access_token)
        .header("accept", "application/fhir+json")
        .form(&[(
            "identifier",
            format!("{}|{}", patient.system(), patient.digits()),
        )])
        .send()
        .await
        .ok()?;
    if !answer.status().is_success() {
        tracing::info!(status = %answer.status(), "the own node did not give the patient");
        return None;
    }
    let body = read_body(answer, RESPONSE_BYTES_MAX).await.ok()?;
    let bundle: Value = serde_json::from_slice(&body).ok()?;
    bundle["entry"]
        .as_array()?
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r["resourceType"] == "Patient")
        .cloned()
}

/// The text of a CodeableConcept: its text, else its first coding's display or code.
fn concept_text(concept: &Value) -> String {
    if let Some(text) = concept["text"].as_str().filter(|t| !t.trim().is_empty()) {
        return text.to_string();
    }
    concept["coding"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|c| c["display"].as_str().or(c["code"].as_str()))
        .unwrap_or_default()
        .to_string()
}

/// The date a resource is about, as recorded.
fn date_of(resource: &Value) -> String {
    let paths: &[&str] = match resource["resourceType"].as_str().unwrap_or_default() {
        "Condition" => &["onsetDateTime", "onsetPeriod.start", "recordedDate"],
        "MedicationStatement" => &["effectiveDateTime", "effectivePeriod.start", "dateAsserted"],
        "MedicationRequest" => &["authoredOn"],
        "MedicationDispense" => &["whenHandedOver", "whenPrepared"],
        "MedicationAdministration" => &["effectiveDateTime", "effectivePeriod.start"],
        "AllergyIntolerance" => &["recordedDate", "onsetDateTime"],
        "Observation" | "DiagnosticReport" => {
            &["effectiveDateTime", "effectivePeriod.start", "issued"]
        }
        "Flag" => &["period.start"],
        "Procedure" => &["performedDateTime", "performedPeriod.start"],
        "Immunization" => &["occurrenceDateTime"],
        "DocumentReference" | "Composition" => &["date"],
        "ImagingStudy" => &["started"],
        "DeviceUseStatement" => &["timingDateTime", "recordedOn"],
        _ => &[],
    };
    string_at(resource, paths).unwrap_or_default().to_string()
}

/// What a resource is called: its code, or what it is about.
fn title_of(resource: &Value) -> String {
    match resource["resourceType"].as_str().unwrap_or_default() {
        "MedicationStatement"
        | "MedicationRequest"
        | "MedicationDispense"
        | "MedicationAdministration" => medication_name(resource),
        "Immunization" => concept_text(&resource["vaccineCode"]),
        "DocumentReference" | "Composition" => resource["title"]
            .as_str()
            .or(resource["description"].as_str())
            .map(String::from)
            .unwrap_or_else(|| concept_text(&resource["type"])),
        "ImagingStudy" => resource["description"].as_str().unwrap_or_default().into(),
        _ => concept_text(&resource["code"]),
    }
}

fn medication_name(resource: &Value) -> String {
    let concept = &resource["medicationCodeableConcept"];
    if concept.is_object() {
        return concept_text(concept);
    }
    resource["medicationReference"]["display"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn quantity(value: &Value) -> Option<String> {
    let number = value.get("value")?;
    let number = match number {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    let unit = value["unit"].as_str().or(value["code"].as_str());
    Some(match unit {
        Some(unit) => format!("{number} {unit}"),
        None => number,
    })
}

/// An Observation's value as text.
fn observation_value(resource: &Value) -> String {
    if let Some(value) = quantity(&resource["valueQuantity"]) {
        return value;
    }
    if resource["valueCodeableConcept"].is_object() {
        return concept_text(&resource["valueCodeableConcept"]);
    }
    for key in [
        "valueString",
        "valueBoolean",
        "valueInteger",
        "valueDateTime",
    ] {
        match &resource[key] {
            Value::String(s) => return s.clone(),
            Value::Null => {}
            other => return other.to_string(),
        }
    }
    String::new()
}

/// An Observation's first reference range as text.
fn reference_range(resource: &Value) -> String {
    let range = &resource["referenceRange"][0];
    if let Some(text) = range["text"].as_str() {
        return text.to_string();
    }
    match (quantity(&range["low"]), quantity(&range["high"])) {
        (Some(low), Some(high)) => format!("{low} – {high}"),
        (Some(low), None) => format!("≥ {low}"),
        (None, Some(high)) => format!("≤ {high}"),
        (None, None) => String::new(),
    }
}

fn is_lab(resource: &Value) -> bool {
    categories_of(resource).contains(&DataCategory::LabResults)
}

/// Whether a medication line is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MedicationState {
    Current,
    Stopped,
    /// Only dispenses are known: no statement or prescription says whether it is in use.
    DispensedOnly,
}

/// One medication across its statements, prescriptions and dispenses at every source.
#[derive(Debug, Clone)]
pub(crate) struct MedicationLine {
    pub(crate) name: String,
    /// `system|code` (the ATC code when there is one), or empty when grouped by text.
    pub(crate) code: String,
    pub(crate) state: MedicationState,
    pub(crate) state_text: &'static str,
    /// The period in use, as recorded (`from – until`).
    pub(crate) period: String,
    pub(crate) last_dispense: String,
    pub(crate) sources: Vec<String>,
    /// Each record of the line: kind, status, date and source.
    pub(crate) records: Vec<Item>,
}

/// The ATC code system.
const ATC_SYSTEM: &str = "http://www.whocc.no/atc";

/// The key a medication is grouped by: the ATC code, else the first coding, else the text.
fn medication_key(resource: &Value) -> (String, String) {
    let codings: Vec<&Value> = resource["medicationCodeableConcept"]["coding"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let pick = codings
        .iter()
        .find(|c| c["system"] == ATC_SYSTEM)
        .or(codings.first());
    if let Some(coding) = pick
        && let (Some(system), Some(code)) = (coding["system"].as_str(), coding["code"].as_str())
    {
        let key = format!("{system}|{code}");
        return (key.clone(), key);
    }
    (
        format!("text:{}", medication_name(resource).trim().to_lowercase()),
        String::new(),
    )
}

/// Whether a statement or prescription says the medication is in use.
fn in_use(resource: &Value) -> Option<bool> {
    let status = resource["status"].as_str().unwrap_or_default();
    let ended = resource["effectivePeriod"]["end"]
        .as_str()
        .or(resource["dispenseRequest"]["validityPeriod"]["end"].as_str())
        .is_some_and(|end| end < today().as_str());
    match resource["resourceType"].as_str()? {
        "MedicationStatement" => {
            Some(matches!(status, "active" | "intended" | "on-hold") && !ended)
        }
        "MedicationRequest" => Some(matches!(status, "active" | "on-hold" | "draft") && !ended),
        _ => None,
    }
}

/// Today's date, `YYYY-MM-DD` (UTC).
fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or_default();
    civil_date(days as i64)
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// A summary part (problems, allergies, …): its items and whether the role may see it.
#[derive(Debug, Default)]
pub(crate) struct Part {
    pub(crate) items: Vec<Item>,
    /// The role may not see this at other organisations (whatever the own node showed).
    pub(crate) hidden_for_role: bool,
    /// The resource types of the part the role may not see, when only some of them.
    pub(crate) partly_hidden: Vec<&'static str>,
}

/// The patient's contacts, from the own node's Patient.
#[derive(Debug, Default)]
pub(crate) struct Contacts {
    /// Whether the own node knows the patient.
    pub(crate) known: bool,
    pub(crate) name: String,
    pub(crate) birth_date: String,
    pub(crate) general_practitioner: Vec<String>,
    pub(crate) managing_organisation: String,
    /// Relationship, name and telecom of each contact person.
    pub(crate) people: Vec<(String, String, String)>,
}

impl Contacts {
    pub(crate) fn of(patient: Option<&Value>) -> Contacts {
        let Some(patient) = patient else {
            return Contacts::default();
        };
        let human_name = |name: &Value| -> String {
            if let Some(text) = name["text"].as_str() {
                return text.to_string();
            }
            let given: Vec<&str> = name["given"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let family = name["family"].as_str().unwrap_or_default();
            format!("{} {family}", given.join(" ")).trim().to_string()
        };
        let telecom = |holder: &Value| -> String {
            holder["telecom"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["value"].as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let reference = |r: &Value| -> String {
            r["display"]
                .as_str()
                .or(r["reference"].as_str())
                .unwrap_or_default()
                .to_string()
        };
        Contacts {
            known: true,
            name: human_name(&patient["name"][0]),
            birth_date: patient["birthDate"].as_str().unwrap_or_default().into(),
            general_practitioner: patient["generalPractitioner"]
                .as_array()
                .into_iter()
                .flatten()
                .map(reference)
                .collect(),
            managing_organisation: reference(&patient["managingOrganization"]),
            people: patient["contact"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|contact| {
                    let relationship = contact["relationship"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(concept_text)
                        .collect::<Vec<_>>()
                        .join(", ");
                    (relationship, human_name(&contact["name"]), telecom(contact))
                })
                .collect(),
        }
    }
}

/// A withheld data category, named for the professional.
#[derive(Debug, Clone)]
pub(crate) struct Withheld {
    pub(crate) label: &'static str,
    pub(crate) code: &'static str,
}

/// A source's refusals, as one line.
#[derive(Debug, Clone)]
pub(crate) struct RefusalLine {
    pub(crate) source: String,
    pub(crate) types: String,
    pub(crate) role: bool,
}

/// The patient's record, arranged for the pages.
#[derive(Debug, Default)]
pub(crate) struct RecordView {
    pub(crate) timeline: Vec<Item>,
    pub(crate) problems: Part,
    pub(crate) allergies: Part,
    pub(crate) alerts: Part,
    pub(crate) medication: Part,
    pub(crate) lab: Part,
    pub(crate) lab_rows: Vec<LabRow>,
    pub(crate) medication_lines: Vec<MedicationLine>,
    /// The categories the role may not see at other organisations.
    pub(crate) withheld_for_role: Vec<Withheld>,
    pub(crate) refusals: Vec<RefusalLine>,
    pub(crate) answered: Vec<String>,
    pub(crate) silent: Vec<(String, String)>,
}

/// Probes of the resource types a summary part shows, for the categories they belong to.
fn probe(resource_type: &str) -> Value {
    match resource_type {
        "Observation" => json!({"resourceType": "Observation",
            "category": [{"coding": [{"code": "laboratory"}]}]}),
        _ => json!({"resourceType": resource_type}),
    }
}

/// The types of `types` the role may not see (each of their categories must be visible).
fn hidden_types(role: Option<Role>, types: &[&'static str]) -> Vec<&'static str> {
    types
        .iter()
        .copied()
        .filter(|t| {
            categories_of(&probe(t))
                .iter()
                .any(|c| !role.is_some_and(|r| r.may_see(c.code())))
        })
        .collect()
}

fn part(role: Option<Role>, types: &[&'static str]) -> Part {
    let hidden = hidden_types(role, types);
    Part {
        items: Vec::new(),
        hidden_for_role: hidden.len() == types.len(),
        partly_hidden: if hidden.len() < types.len() {
            hidden
        } else {
            Vec::new()
        },
    }
}

const PROBLEM_TYPES: [&str; 1] = ["Condition"];
const ALLERGY_TYPES: [&str; 1] = ["AllergyIntolerance"];
const ALERT_TYPES: [&str; 1] = ["Flag"];
const MEDICATION_TYPES: [&str; 3] = [
    "MedicationStatement",
    "MedicationRequest",
    "MedicationDispense",
];
const LAB_TYPES: [&str; 1] = ["Observation"];

/// The label of a data category.
fn category_label(category: DataCategory, t: &Texts) -> &'static str {
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

fn kind_of(resource_type: &str, t: &Texts) -> &'static str {
    match resource_type {
        "Condition" => t.kind_condition,
        "MedicationStatement" => t.kind_statement,
        "MedicationRequest" => t.kind_request,
        "MedicationDispense" => t.kind_dispense,
        "MedicationAdministration" => t.kind_administration,
        "AllergyIntolerance" => t.kind_allergy,
        "Observation" => t.kind_observation,
        "DiagnosticReport" => t.kind_report,
        "Flag" => t.kind_alert,
        "Procedure" => t.kind_procedure,
        "Immunization" => t.kind_immunization,
        "DocumentReference" | "Composition" => t.kind_document,
        "ImagingStudy" => t.kind_imaging,
        _ => t.kind_other,
    }
}

/// The details shown beside a resource's title.
fn details_of(resource: &Value, t: &Texts) -> String {
    let status = |path: &str| concept_text(&resource[path]);
    match resource["resourceType"].as_str().unwrap_or_default() {
        "Condition" => status("clinicalStatus"),
        "AllergyIntolerance" => {
            let reactions: Vec<String> = resource["reaction"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r["manifestation"].as_array().into_iter().flatten())
                .map(concept_text)
                .collect();
            let criticality = resource["criticality"]
                .as_str()
                .map(|c| format!("{}: {c}", t.criticality));
            criticality
                .into_iter()
                .chain(reactions)
                .collect::<Vec<_>>()
                .join("; ")
        }
        "Observation" => {
            let value = observation_value(resource);
            let range = reference_range(resource);
            if range.is_empty() {
                value
            } else {
                format!("{value} ({range})")
            }
        }
        "Flag" => resource["status"].as_str().unwrap_or_default().to_string(),
        "MedicationStatement" | "MedicationRequest" => {
            let dosage = resource["dosage"][0]["text"]
                .as_str()
                .or(resource["dosageInstruction"][0]["text"].as_str())
                .unwrap_or_default();
            let status = resource["status"].as_str().unwrap_or_default();
            [status, dosage]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("; ")
        }
        "MedicationDispense" => quantity(&resource["quantity"]).unwrap_or_default(),
        _ => resource["status"].as_str().unwrap_or_default().to_string(),
    }
}

impl RecordView {
    pub(crate) fn of(fetched: Fetched, role: &str, t: &'static Texts) -> RecordView {
        let role = Role::parse(role);
        let mut view = RecordView {
            problems: part(role, &PROBLEM_TYPES),
            allergies: part(role, &ALLERGY_TYPES),
            alerts: part(role, &ALERT_TYPES),
            medication: part(role, &MEDICATION_TYPES),
            lab: part(role, &LAB_TYPES),
            withheld_for_role: DataCategory::ALL
                .into_iter()
                .filter(|c| !role.is_some_and(|r| r.may_see(c.code())))
                .map(|c| Withheld {
                    label: category_label(c, t),
                    code: c.code(),
                })
                .collect(),
            answered: fetched.answered,
            silent: fetched.silent,
            ..RecordView::default()
        };
        let mut refusals: BTreeMap<(String, bool), Vec<String>> = BTreeMap::new();
        for refusal in fetched.refusals {
            refusals
                .entry((refusal.source, refusal.class == ReasonClass::Role))
                .or_default()
                .push(refusal.resource_type);
        }
        view.refusals = refusals
            .into_iter()
            .map(|((source, role), types)| RefusalLine {
                source,
                types: types.join(", "),
                role,
            })
            .collect();
        let mut medication: BTreeMap<String, Vec<(Value, String)>> = BTreeMap::new();
        let mut lab: Vec<LabRow> = Vec::new();
        for (resource, source) in fetched.resources {
            let resource_type = resource["resourceType"].as_str().unwrap_or_default();
            let date = date_of(&resource);
            let item = Item {
                shown: shown_date(&date),
                date,
                kind: kind_of(resource_type, t),
                title: title_of(&resource),
                details: details_of(&resource, t),
                source: if source.is_empty() {
                    t.unknown_source.to_string()
                } else {
                    source.clone()
                },
            };
            match resource_type {
                "Condition" => view.problems.items.push(item.clone()),
                "AllergyIntolerance" => view.allergies.items.push(item.clone()),
                "Flag" => view.alerts.items.push(item.clone()),
                "MedicationStatement" | "MedicationRequest" | "MedicationDispense" => {
                    view.medication.items.push(item.clone());
                    medication
                        .entry(medication_key(&resource).0)
                        .or_default()
                        .push((resource.clone(), item.source.clone()));
                }
                "Observation" if is_lab(&resource) => lab.push(LabRow {
                    date: item.date.clone(),
                    shown: item.shown.clone(),
                    test: item.title.clone(),
                    value: observation_value(&resource),
                    range: reference_range(&resource),
                    source: item.source.clone(),
                }),
                _ => {}
            }
            if !item.date.is_empty() {
                view.timeline.push(item);
            }
        }
        let newest_first = |a: &Item, b: &Item| b.date.cmp(&a.date);
        view.timeline.sort_by(newest_first);
        for part in [
            &mut view.problems,
            &mut view.allergies,
            &mut view.alerts,
            &mut view.medication,
        ] {
            part.items.sort_by(newest_first);
        }
        lab.sort_by(|a, b| b.date.cmp(&a.date));
        lab.truncate(RECENT_LAB_RESULTS);
        view.lab_rows = lab;
        view.medication_lines = medication
            .into_values()
            .map(|records| medication_line(records, t))
            .collect();
        view.medication_lines.sort_by(|a, b| {
            (a.state != MedicationState::Current, &a.name)
                .cmp(&(b.state != MedicationState::Current, &b.name))
        });
        view
    }

    /// The medication lines in use (the emergency view's medication).
    pub(crate) fn current_medication(&self) -> Vec<&MedicationLine> {
        self.medication_lines
            .iter()
            .filter(|line| line.state != MedicationState::Stopped)
            .collect()
    }
}

fn medication_line(records: Vec<(Value, String)>, t: &'static Texts) -> MedicationLine {
    let (_, code) = medication_key(&records[0].0);
    let mut sources: Vec<String> = records.iter().map(|(_, s)| s.clone()).collect();
    sources.sort();
    sources.dedup();
    let uses: Vec<bool> = records.iter().filter_map(|(r, _)| in_use(r)).collect();
    let state = if uses.iter().any(|u| *u) {
        MedicationState::Current
    } else if uses.is_empty() {
        MedicationState::DispensedOnly
    } else {
        MedicationState::Stopped
    };
    let starts = records.iter().filter_map(|(r, _)| {
        string_at(
            r,
            &["effectivePeriod.start", "effectiveDateTime", "authoredOn"],
        )
    });
    let ends = records
        .iter()
        .filter_map(|(r, _)| string_at(r, &["effectivePeriod.end"]));
    let from = starts.min().map(shown_date).unwrap_or_default();
    let until = ends.max().map(shown_date).unwrap_or_default();
    let period = match (from.is_empty(), until.is_empty()) {
        (true, true) => String::new(),
        _ => format!("{from} – {until}"),
    };
    let last_dispense = records
        .iter()
        .filter(|(r, _)| r["resourceType"] == "MedicationDispense")
        .map(|(r, _)| date_of(r))
        .max()
        .map(|d| shown_date(&d))
        .unwrap_or_default();
    let name = records
        .iter()
        .map(|(r, _)| medication_name(r))
        .find(|n| !n.is_empty())
        .unwrap_or_default();
    let mut items: Vec<Item> = records
        .iter()
        .map(|(r, source)| {
            let date = date_of(r);
            Item {
                shown: shown_date(&date),
                date,
                kind: kind_of(r["resourceType"].as_str().unwrap_or_default(), t),
                title: medication_name(r),
                details: details_of(r, t),
                source: source.clone(),
            }
        })
        .collect();
    items.sort_by(|a, b| b.date.cmp(&a.date));
    MedicationLine {
        name,
        code,
        state,
        state_text: match state {
            MedicationState::Current => t.med_current,
            MedicationState::Stopped => t.med_stopped,
            MedicationState::DispensedOnly => t.med_dispensed_only,
        },
        period,
        last_dispense,
        sources,
        records: items,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(19_782), "2024-02-29");
        assert_eq!(civil_date(-1), "1969-12-31");
    }

    #[test]
    fn refusals_are_read_per_type_with_their_class() {
        let text = "Apotheek (URA 00000033) refused by consent: Condition: not permitted for \
            this requester's role (reason class: role); Observation: not permitted for this \
            requester (reason class: policy; this answer does not say whether the patient is \
            known here); Procedure: not permitted for this requester's role (reason class: role)";
        assert_eq!(
            refused_types(text),
            vec![
                ("Condition".to_string(), ReasonClass::Role),
                ("Observation".to_string(), ReasonClass::Policy),
                ("Procedure".to_string(), ReasonClass::Role),
            ]
        );
        assert!(refused_types("Huisarts (URA 1) answered with 3 resources").is_empty());
    }

    #[test]
    fn medication_groups_by_atc_then_coding_then_text() {
        let atc = json!({"resourceType": "MedicationDispense", "medicationCodeableConcept":
            {"coding": [{"system": "urn:oid:2.16.840.1.113883.2.4.4.7", "code": "1"},
                        {"system": ATC_SYSTEM, "code": "A10BA02"}]}});
        assert_eq!(medication_key(&atc).0, format!("{ATC_SYSTEM}|A10BA02"));
        let text = json!({"resourceType": "MedicationStatement",
            "medicationCodeableConcept": {"text": " Metformine "}});
        assert_eq!(medication_key(&text).0, "text:metformine");
    }

    #[test]
    fn entries_are_attributed_by_the_outcomes_counts() {
        let bundle = json!({"resourceType": "Bundle", "entry": [
            {"resource": {"resourceType": "OperationOutcome", "issue": [
                {"severity": "information", "code": "informational",
                 "diagnostics": "Huisarts (URA 00000011) answered with 1 resources",
                 "details": {"coding": [{"code": "00000011"}]}},
                {"severity": "information", "code": "informational",
                 "diagnostics": " (URA 00000033) answered with 2 resources",
                 "details": {"coding": [{"code": "00000033"}]}},
                {"severity": "warning", "code": "transient",
                 "diagnostics": "Lab (URA 00000044) did not answer: no answer within 5 s",
                 "details": {"coding": [{"code": "00000044"}]}}]}},
            {"resource": {"resourceType": "Condition", "id": "a"}},
            {"resource": {"resourceType": "Condition", "id": "b"}},
            {"resource": {"resourceType": "Condition", "id": "c"}}]});
        let fetched = read_bundle(&bundle, &[]);
        let sources: Vec<&str> = fetched.resources.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(sources, ["Huisarts", "URA 00000033", "URA 00000033"]);
        assert_eq!(
            fetched.silent,
            vec![("Lab".to_string(), "no answer within 5 s".to_string())]
        );
    }
}
