//! What the viewer asks the hub on an organisation's behalf, with the organisation's key:
//! the professional's roles there (the professional register) and the organisation's
//! treatment relations with a patient (the relation register). The patient's BSN is blinded
//! here and turned into an exchange token for the referral index by the hub's pseudonym
//! service (`zorgnet_hub_client`), so the hub never receives it in clear.
//! What it is not: a policy (the hub decides what a relation allows, the sources what a
//! role may see).

use crate::Org;
use crate::patient_number::PatientNumber;
use serde_json::{Value, json};
use zorgnet_hub_client::{HubClientError, token_value};

/// The professional as the register knows them at one organisation.
pub(crate) struct Professional {
    pub(crate) name: String,
    /// UZI role codes at the organisation, sorted.
    pub(crate) roles: Vec<String>,
}

/// The professional with UZI number `uzi` at `org`: `None` when they hold no role there.
pub(crate) async fn professional(
    org: &Org,
    uzi: &str,
) -> Result<Option<Professional>, HubClientError> {
    let answer = match org.hub.get(&format!("/professionals/{uzi}")).await {
        Ok(answer) => answer,
        Err(HubClientError::Refused { status: 404, .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut roles: Vec<String> = answer["roles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|role| role["ura"] == org.config.ura.as_str())
        .filter_map(|role| role["role"].as_str())
        .filter(|code| zorgnet_trust::is_role_code(code))
        .map(String::from)
        .collect();
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        return Ok(None);
    }
    Ok(Some(Professional {
        name: answer["name"].as_str().unwrap_or_default().to_string(),
        roles,
    }))
}

/// One of the organisation's relations with the patient.
#[derive(Debug, Clone)]
pub(crate) struct Relation {
    pub(crate) kind: String,
    pub(crate) status: String,
    pub(crate) valid_from: String,
    pub(crate) valid_until: String,
}

impl Relation {
    /// Whether the relation is active (the hub also checks its period when it decides).
    pub(crate) fn active(&self) -> bool {
        self.status == "active"
    }
}

/// An exchange token naming the patient, as JSON for a request body.
async fn person_token(org: &Org, patient: &PatientNumber) -> Result<Value, HubClientError> {
    let token = org.hub.referral_index_token(patient.person()).await?;
    Ok(token_value(&token))
}

/// The organisation's relations with the patient.
pub(crate) async fn relations(
    org: &Org,
    patient: &PatientNumber,
) -> Result<Vec<Relation>, HubClientError> {
    let token = person_token(org, patient).await?;
    let answer = org
        .hub
        .post("/relations/query", &json!({"token": token}))
        .await?;
    let text = |relation: &Value, key: &str| relation[key].as_str().unwrap_or("").to_string();
    Ok(answer["relations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|relation| Relation {
            kind: text(relation, "kind"),
            status: text(relation, "status"),
            valid_from: text(relation, "valid_from"),
            valid_until: text(relation, "valid_until"),
        })
        .collect())
}

/// The kinds of relation a professional may register here.
pub(crate) const RELATION_KINDS: [&str; 4] =
    ["referral", "consultation", "co-treatment", "own-patient"];

/// Registers a relation of kind `kind` (one of [`RELATION_KINDS`]) of the organisation with
/// the patient, valid from now for the hub's default period.
pub(crate) async fn register_relation(
    org: &Org,
    patient: &PatientNumber,
    kind: &str,
) -> Result<(), HubClientError> {
    if !RELATION_KINDS.contains(&kind) {
        return Err(HubClientError::Invalid("unknown kind of relation".into()));
    }
    let token = person_token(org, patient).await?;
    org.hub
        .post("/relations", &json!({"token": token, "kind": kind}))
        .await
        .map(|_| ())
}
