//! The number a professional finds a patient by: a BSN (nine digits, 11-check), or, for a
//! person without a usable BSN (Caribbean Netherlands), the zorgverificatienummer (sixteen
//! digits) the pseudonym service derived for them.
//! What it is not: a lookup; the node and the hub find the person by it.

use zorgnet_fhir::identifiers::{BSN_SYSTEM, ZVN_SYSTEM};
use zorgnet_pseudonym::{Bsn, PersonalId, Zvn};

/// A patient's BSN or zorgverificatienummer, checked.
#[derive(Clone)]
pub(crate) struct PatientNumber {
    person: PersonalId,
    digits: String,
}

impl PatientNumber {
    /// The number typed or kept in the session (spaces ignored): nine digits are a BSN,
    /// sixteen a zorgverificatienummer; anything else, or a number failing its check, is
    /// none.
    pub(crate) fn parse(text: &str) -> Option<PatientNumber> {
        let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let person = match digits.len() {
            9 => PersonalId::Bsn(Bsn::parse(&digits).ok()?),
            16 => PersonalId::Zvn(Zvn::parse(&digits).ok()?),
            _ => return None,
        };
        Some(PatientNumber { person, digits })
    }

    /// The person, for the hub.
    pub(crate) fn person(&self) -> &PersonalId {
        &self.person
    }

    /// The digits.
    pub(crate) fn digits(&self) -> &str {
        &self.digits
    }

    /// The identifier system nodes are asked by.
    pub(crate) fn system(&self) -> &'static str {
        match self.person {
            PersonalId::Bsn(_) => BSN_SYSTEM,
            PersonalId::Zvn(_) => ZVN_SYSTEM,
        }
    }

    /// Whether it is a zorgverificatienummer.
    pub(crate) fn is_zvn(&self) -> bool {
        matches!(self.person, PersonalId::Zvn(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nine_digits_are_a_bsn_and_sixteen_a_zorgverificatienummer() {
        let bsn = PatientNumber::parse(" 1234 56782 ").unwrap();
        assert_eq!(
            (bsn.digits(), bsn.system(), bsn.is_zvn()),
            ("123456782", BSN_SYSTEM, false)
        );
        // Sixteen digits starting with 9 whose value mod 97 is 1 (ISO 7064 MOD 97-10).
        let zvn_value = (9_000_000_000_000_000u64..).find(|n| n % 97 == 1).unwrap();
        let zvn = PatientNumber::parse(&zvn_value.to_string()).unwrap();
        assert_eq!((zvn.system(), zvn.is_zvn()), (ZVN_SYSTEM, true));
        assert!(
            PatientNumber::parse(&(zvn_value + 1).to_string()).is_none(),
            "a wrong check digit"
        );
        for refused in [
            "123456789",
            "12345678",
            "",
            "12345678a",
            "12345678901234567",
        ] {
            assert!(PatientNumber::parse(refused).is_none(), "{refused}");
        }
    }
}
