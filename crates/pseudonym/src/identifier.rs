//! Validated identifiers: the person's number that goes into the OPRF (a BSN or a
//! zorgverificatienummer) and the recipient that a pseudonym is made for.
//! Parsing happens once, here; everything else takes these types.
//! Not a registry: whether a recipient is known and allowed is the hub's decision.

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::zvn::Zvn;

/// Length of a BSN in digits.
pub const BSN_DIGITS: usize = 9;

/// Length of a URA number (UZI-register abonneenummer, an organisation) in digits.
pub const URA_DIGITS: usize = 8;

/// Longest research-project name accepted in a recipient id, in bytes.
pub const MAX_PROJECT_NAME_BYTES: usize = 64;

/// A BSN (burgerservicenummer) that passed the 11-check.
///
/// It is personal data: `Debug` prints no digits, there is no `Display`, and the digits
/// are wiped from memory when the value is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Bsn([u8; BSN_DIGITS]);

impl Bsn {
    /// Parses nine digits (surrounding whitespace ignored) that pass the 11-check.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        if !zorgnet_fhir::identifiers::bsn_is_valid(text) {
            return Err(Error::InvalidIdentifier("BSN"));
        }
        let mut digits = [0u8; BSN_DIGITS];
        digits.copy_from_slice(text.as_bytes());
        Ok(Self(digits))
    }

    /// The nine ASCII digits. Only for the cryptographic code in this crate.
    pub(crate) fn digits(&self) -> &[u8; BSN_DIGITS] {
        &self.0
    }
}

impl Drop for Bsn {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Bsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bsn(<redacted>)")
    }
}

/// The number a person is known by in the OPRF: a BSN, or for people without a usable
/// BSN (Caribbean Netherlands), a zorgverificatienummer.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum PersonalId {
    /// A BSN; OPRF input `nl:bsn:<nine digits>`.
    Bsn(Bsn),
    /// A zorgverificatienummer; OPRF input `nl:zvn:<sixteen digits>`.
    Zvn(Zvn),
}

impl PersonalId {
    /// The OPRF input string, as the national PRS protocol defines it for a BSN
    /// (`nl:bsn:<BSN>`) and by analogy for a zorgverificatienummer (`nl:zvn:<ZVN>`).
    /// Wiped from memory when dropped.
    pub(crate) fn oprf_input(&self) -> Zeroizing<Vec<u8>> {
        let (prefix, digits): (&[u8], &[u8]) = match self {
            PersonalId::Bsn(bsn) => (b"nl:bsn:", bsn.digits()),
            PersonalId::Zvn(zvn) => (b"nl:zvn:", zvn.as_str().as_bytes()),
        };
        let mut input = Zeroizing::new(Vec::with_capacity(prefix.len() + digits.len()));
        input.extend_from_slice(prefix);
        input.extend_from_slice(digits);
        input
    }
}

impl From<Bsn> for PersonalId {
    fn from(bsn: Bsn) -> Self {
        PersonalId::Bsn(bsn)
    }
}

impl From<Zvn> for PersonalId {
    fn from(zvn: Zvn) -> Self {
        PersonalId::Zvn(zvn)
    }
}

/// Who a pseudonym is for. Each recipient has its own OPRF key, so its pseudonyms cannot
/// be linked to another recipient's without the PRS's keys.
///
/// Canonical text forms (also the RFC 9497 `info` for the recipient's key and the JWE
/// audience): `ura:<8 digits>` for a care organisation, `nvi` for the referral index,
/// `project:<name>` for a research project (`name`: lowercase letters, digits and `-`,
/// starting with a letter or digit, at most [`MAX_PROJECT_NAME_BYTES`] bytes).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct RecipientId(String);

impl RecipientId {
    /// The referral index (NVI, Nationale Verwijsindex).
    pub fn referral_index() -> Self {
        Self("nvi".to_owned())
    }

    /// A care organisation by its URA number.
    pub fn organisation(ura: &str) -> Result<Self> {
        if ura.len() != URA_DIGITS || !ura.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::InvalidIdentifier("URA number"));
        }
        Ok(Self(format!("ura:{ura}")))
    }

    /// A research project (secondary use) by its registered name.
    pub fn research_project(name: &str) -> Result<Self> {
        let valid = !name.is_empty()
            && name.len() <= MAX_PROJECT_NAME_BYTES
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(Error::InvalidIdentifier("research project name"));
        }
        Ok(Self(format!("project:{name}")))
    }

    /// Parses the canonical text form.
    pub fn parse(text: &str) -> Result<Self> {
        if text == "nvi" {
            Ok(Self::referral_index())
        } else if let Some(ura) = text.strip_prefix("ura:") {
            Self::organisation(ura)
        } else if let Some(name) = text.strip_prefix("project:") {
            Self::research_project(name)
        } else {
            Err(Error::InvalidIdentifier("recipient id"))
        }
    }

    /// The canonical text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RecipientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for RecipientId {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        Self::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bsn_parses_only_with_11_check() {
        assert!(Bsn::parse("123456782").is_ok());
        assert!(Bsn::parse(" 111222333\n").is_ok());
        assert!(matches!(
            Bsn::parse("123456789"),
            Err(Error::InvalidIdentifier("BSN"))
        ));
        assert!(Bsn::parse("12345678").is_err());
        assert!(Bsn::parse("12345678a").is_err());
        assert!(Bsn::parse("").is_err());
    }

    #[test]
    fn bsn_debug_is_redacted() {
        let bsn = Bsn::parse("123456782").unwrap();
        let text = format!("{bsn:?} {:?}", PersonalId::Bsn(bsn.clone()));
        assert!(!text.contains("123456782"), "{text}");
    }

    #[test]
    fn oprf_input_is_the_national_format() {
        let id = PersonalId::Bsn(Bsn::parse("123456782").unwrap());
        assert_eq!(id.oprf_input().as_slice(), b"nl:bsn:123456782");
    }

    #[test]
    fn recipient_ids() {
        assert_eq!(
            RecipientId::parse("nvi").unwrap(),
            RecipientId::referral_index()
        );
        assert_eq!(
            RecipientId::parse("ura:12345678").unwrap().as_str(),
            "ura:12345678"
        );
        assert_eq!(
            RecipientId::parse("project:diabetes-2027")
                .unwrap()
                .to_string(),
            "project:diabetes-2027"
        );
        for bad in [
            "",
            "NVI",
            "ura:1234567",
            "ura:123456789",
            "ura:1234567a",
            "project:",
            "project:-x",
            "project:Upper",
            "project:a b",
            "other:1",
        ] {
            assert!(RecipientId::parse(bad).is_err(), "{bad}");
        }
        let long = format!("project:{}", "a".repeat(MAX_PROJECT_NAME_BYTES + 1));
        assert!(RecipientId::parse(&long).is_err());
    }
}
