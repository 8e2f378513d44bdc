//! Dutch identifier systems and their checks.

/// BSN (burgerservicenummer, the Dutch citizen service number).
pub const BSN_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/bsn";
/// URA (UZI-register abonneenummer): identifies a care organisation.
pub const URA_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/ura";
/// UZI number of a person (professional).
pub const UZI_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers";
/// AGB code (Algemeen GegevensBeheer zorgverleners).
pub const AGB_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/agb-z";
/// Identifier system zorgnet uses for the sédula number, the identity-card number of
/// residents of Bonaire, Sint Eustatius and Saba. There is no national NamingSystem for it.
pub const SEDULA_SYSTEM: &str = "http://zorgnet.nl/fhir/NamingSystem/sedula";
/// Identifier system zorgnet uses for the zorgverificatienummer: the number the pseudonym
/// service derives (keyed, one way) from a sédula number and birth date for a person without
/// a usable BSN, sixteen digits. A node knows it for a Patient once the hub has derived it;
/// a Patient does not carry it.
pub const ZVN_SYSTEM: &str = "http://zorgnet.nl/fhir/NamingSystem/zvn";

/// True when `value` is a BSN: nine digits passing the 11-check
/// (9·d1 + 8·d2 + … + 2·d8 − 1·d9 divisible by 11), and not all zeros.
pub fn bsn_is_valid(value: &str) -> bool {
    let bytes = value.as_bytes();
    if bytes.len() != 9 || !bytes.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let digits: Vec<i64> = bytes.iter().map(|b| i64::from(b - b'0')).collect();
    let weighted: i64 = digits[..8]
        .iter()
        .zip((2..=9).rev())
        .map(|(d, w)| d * w)
        .sum::<i64>()
        - digits[8];
    weighted % 11 == 0 && digits.iter().any(|d| *d != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_bsns() {
        assert!(bsn_is_valid("123456782"));
        assert!(bsn_is_valid("111222333"));
        assert!(!bsn_is_valid("123456789"));
        assert!(!bsn_is_valid("000000000"));
        assert!(!bsn_is_valid("12345678"));
        assert!(!bsn_is_valid("12345678a"));
        assert!(!bsn_is_valid("1234567820"));
    }

    proptest! {
        #[test]
        fn changing_one_digit_breaks_the_check(prefix in 0u32..100_000_000, position in 0usize..9, delta in 1u8..10) {
            let candidate = (0..10).map(|last| format!("{prefix:08}{last}")).find(|s| bsn_is_valid(s));
            if let Some(valid) = candidate {
                let mut bytes = valid.into_bytes();
                bytes[position] = b'0' + (bytes[position] - b'0' + delta) % 10;
                let changed = String::from_utf8(bytes).unwrap();
                prop_assert!(!bsn_is_valid(&changed) || changed.bytes().all(|b| b == b'0'));
            }
        }
    }
}
