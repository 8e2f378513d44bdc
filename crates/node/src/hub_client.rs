//! The hub's client as the node uses it: everything of `zorgnet_hub_client`, and the person a
//! Patient of the node's store names.

pub use zorgnet_hub_client::*;

use serde_json::Value;
use zorgnet_pseudonym::{Bsn, PersonalId};
use zorgnet_store::PersonIdentity;

/// The person behind a Patient resource: the BSN, or for a patient without one a
/// zorgverificatienummer from the hub (sédula number and birth date); `None` when the
/// Patient has neither.
pub async fn person_of_patient(
    hub: &HubClient,
    patient: &Value,
) -> Result<Option<PersonalId>, HubClientError> {
    match PersonIdentity::of_patient(patient) {
        Some(identity) => person_of(hub, &identity).await,
        None => Ok(None),
    }
}

/// The person an identity names: the BSN as it is, a sédula number and birth date as the
/// zorgverificatienummer the hub derives from them; `None` when the hub will not derive
/// one (a malformed sédula number or birth date).
pub async fn person_of(
    hub: &HubClient,
    identity: &PersonIdentity,
) -> Result<Option<PersonalId>, HubClientError> {
    let (sedula, birth_date) = match identity {
        PersonIdentity::Bsn(bsn) => return Ok(Bsn::parse(bsn).ok().map(PersonalId::from)),
        PersonIdentity::Sedula { number, birth_date } => (number, birth_date),
    };
    hub.zvn_of_sedula(sedula, birth_date).await
}
