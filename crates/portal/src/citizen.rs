//! Who the citizen is, as the portal names them everywhere: one identifier from a verified
//! token's claims, a BSN (`bsn`) or, for a citizen without a usable BSN (Caribbean
//! Netherlands), a zorgverificatienummer (`zvn`).
//! At the nodes the citizen's Patients are searched by it as a FHIR token
//! ([`CitizenId::search_token`]: `system|value` of the BSN's naming system, or of zorgnet's
//! zorgverificatienummer, which a node resolves to its Patients known by a sédula number and
//! birth date, confirmed with the hub); at the hub's referral index and consent register the
//! person ([`CitizenId::person`]) is blinded locally (`zorgnet_hub_client`).
//! What it is not: a judge of access (the nodes and the hub decide what the citizen sees), or
//! printable: `Debug` shows only which kind of number it is, and it never reaches the log.

use serde::Deserialize;
use zorgnet_fhir::identifiers::{BSN_SYSTEM, ZVN_SYSTEM};
use zorgnet_pseudonym::{Bsn, PersonalId, Zvn};
use zorgnet_web::oidc::{LoggedIn, LoginError};

/// The claims of a verified ID token the portal reads beyond `zorgnet_trust`'s.
#[derive(Deserialize)]
pub(crate) struct CitizenClaims {
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    bsn: Option<String>,
    #[serde(default)]
    zvn: Option<String>,
}

/// The citizen's identifier: their BSN or zorgverificatienummer, checked.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct CitizenId {
    person: PersonalId,
    /// The number's digits, as searched by (`Bsn` keeps its own out of reach).
    value: String,
}

impl CitizenId {
    /// The citizen that a verified token's `bsn` and `zvn` claims name: exactly one of them,
    /// a BSN passing the 11-check or a zorgverificatienummer; `None` otherwise.
    pub(crate) fn of_claims(bsn: Option<&str>, zvn: Option<&str>) -> Option<CitizenId> {
        match (bsn, zvn) {
            (Some(bsn), None) => {
                let value = bsn.trim();
                let person = PersonalId::Bsn(Bsn::parse(value).ok()?);
                Some(CitizenId {
                    person,
                    value: value.to_string(),
                })
            }
            (None, Some(zvn)) => {
                let zvn = Zvn::parse(zvn).ok()?;
                Some(CitizenId {
                    value: zvn.as_str().to_string(),
                    person: PersonalId::Zvn(zvn),
                })
            }
            _ => None,
        }
    }

    /// The citizen a completed login names: the verified token names a person (a BSN or a
    /// zorgverificatienummer) and no professional, and its `bsn` or `zvn` claim is that
    /// person.
    pub(crate) fn of_login(logged_in: &LoggedIn<CitizenClaims>) -> Result<CitizenId, LoginError> {
        let person = match (&logged_in.verified.uzi, &logged_in.verified.person) {
            (None, Some(person)) => person,
            _ => {
                return Err(LoginError::Token(
                    "the portal is for citizens: the token names no BSN or zorgverificatienummer"
                        .into(),
                ));
            }
        };
        let claims = &logged_in.claims;
        CitizenId::of_claims(claims.bsn.as_deref(), claims.zvn.as_deref())
            .filter(|citizen| citizen.person() == person)
            .ok_or(LoginError::Token("unreadable bsn or zvn claim".into()))
    }

    /// The person, for the hub (blinded by `zorgnet_hub_client` before it leaves the portal).
    pub(crate) fn person(&self) -> &PersonalId {
        &self.person
    }

    /// The naming system of the number.
    pub(crate) fn system(&self) -> &'static str {
        match self.person {
            PersonalId::Bsn(_) => BSN_SYSTEM,
            PersonalId::Zvn(_) => ZVN_SYSTEM,
        }
    }

    /// The number as a FHIR token search value, `system|value`, for `Patient?identifier=`
    /// and `{type}?patient.identifier=` at a node.
    pub(crate) fn search_token(&self) -> String {
        format!("{}|{}", self.system(), self.value)
    }
}

impl std::fmt::Debug for CitizenId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.person {
            PersonalId::Bsn(_) => "Bsn",
            PersonalId::Zvn(_) => "Zvn",
        };
        write!(f, "CitizenId({kind}, <redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BSN passing the 11-check (a test number).
    const BSN: &str = "123456782";
    /// A zorgverificatienummer (16 digits, starting with 9, mod 97 = 1).
    const ZVN: &str = "9000000000000081";

    #[test]
    fn one_number_of_the_claims_names_the_citizen() {
        let bsn = CitizenId::of_claims(Some(BSN), None).unwrap();
        assert_eq!(
            bsn.search_token(),
            "http://fhir.nl/fhir/NamingSystem/bsn|123456782"
        );
        assert_eq!(
            bsn.person(),
            &PersonalId::Bsn(Bsn::parse(BSN).unwrap()),
            "the hub is asked about the same person"
        );
        let zvn = CitizenId::of_claims(None, Some(ZVN)).unwrap();
        assert_eq!(
            zvn.search_token(),
            "http://zorgnet.nl/fhir/NamingSystem/zvn|9000000000000081"
        );
        assert_eq!(zvn.person(), &PersonalId::Zvn(Zvn::parse(ZVN).unwrap()));
        for (bsn, zvn) in [
            (None, None),
            (Some(BSN), Some(ZVN)),
            (Some("123456789"), None),
            (None, Some("9000000000000082")),
            (None, Some(BSN)),
        ] {
            assert_eq!(CitizenId::of_claims(bsn, zvn), None, "{bsn:?} {zvn:?}");
        }
    }

    #[test]
    fn the_number_is_not_printed() {
        let printed = format!("{:?}", CitizenId::of_claims(None, Some(ZVN)).unwrap());
        assert!(!printed.contains(ZVN), "{printed}");
        let printed = format!("{:?}", CitizenId::of_claims(Some(BSN), None).unwrap());
        assert!(!printed.contains(BSN), "{printed}");
    }
}
