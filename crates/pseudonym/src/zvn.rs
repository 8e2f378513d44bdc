//! The zorgverificatienummer (ZVN, "care verification number"): a number for people in the
//! Caribbean Netherlands (Bonaire, Sint Eustatius, Saba) who have no usable BSN.
//!
//! A ZVN is derived, not issued: HMAC-SHA256 under a ZVN key that only the PRS holds, over
//! either the sédula number and birth date, or a BSN the holder sealed to the PRS. So the
//! same person always gets the same number, nobody without the key can compute it or
//! trace it back to the person, and it is used in the OPRF exactly like a BSN
//! (`nl:zvn:<number>`).
//!
//! Format: 16 digits. The first is always `9`, then 13 digits from the HMAC, then two
//! check digits (ISO 7064 MOD 97-10, as in the IBAN: the whole number mod 97 is 1).
//! A BSN has 9 digits and sédula numbers commonly begin with the birth date, so neither is
//! easily mistaken for a ZVN; the check digits catch every single-digit error and every
//! swap of two adjacent digits.
//!
//! This module does not decide who gets a ZVN, keep a register of them, or look up a
//! sédula number; it only derives and checks the number.

use std::fmt;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use time::{Date, Month};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::identifier::Bsn;
use crate::jwe::RecipientPublicKey;

/// Length of a ZVN in digits.
pub const ZVN_DIGITS: usize = 16;

/// The first digit of every ZVN.
pub const ZVN_PREFIX: u8 = b'9';

/// Digits taken from the HMAC: 10^13 values, so among 100,000 people (three times the
/// population of the islands) the chance that any two share a number is below 0.05 %.
const ZVN_DERIVED_DIGITS: usize = 13;

/// 10^[`ZVN_DERIVED_DIGITS`].
const ZVN_DERIVED_MODULUS: u64 = 10_000_000_000_000;

/// Longest sédula number accepted after normalisation, in characters.
pub const MAX_SEDULA_CHARS: usize = 32;

/// Earliest birth year accepted; also keeps the year at four digits.
pub const MIN_BIRTH_YEAR: i32 = 1850;

/// Domain-separation label in every ZVN derivation; a new version gives new numbers.
const ZVN_LABEL: &[u8] = b"zorgnet-zvn-v1";

const _: () = assert!(1 + ZVN_DERIVED_DIGITS + 2 == ZVN_DIGITS);
const _: () = assert!(ZVN_DERIVED_MODULUS == 10u64.pow(ZVN_DERIVED_DIGITS as u32));

/// A zorgverificatienummer that passed the format and check-digit test.
///
/// Like a BSN it identifies a person, so `Debug` does not print it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Zvn([u8; ZVN_DIGITS]);

impl Zvn {
    /// Parses a ZVN (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        if !zvn_is_valid(text) {
            return Err(Error::InvalidIdentifier("zorgverificatienummer"));
        }
        let mut digits = [0u8; ZVN_DIGITS];
        digits.copy_from_slice(text.as_bytes());
        Ok(Self(digits))
    }

    /// The sixteen digits.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// Builds the number from a PRF output: prefix, 13 digits, check digits.
    fn from_prf_output(output: &[u8]) -> Self {
        let mut first = [0u8; 8];
        first.copy_from_slice(&output[..8]);
        // 2^64 / 10^13 ≈ 1.8 million, so reducing modulo 10^13 skews no value by more
        // than one part in 1.8 million.
        let value = u64::from_be_bytes(first) % ZVN_DERIVED_MODULUS;
        let mut digits = [b'0'; ZVN_DIGITS];
        digits[0] = ZVN_PREFIX;
        let mut rest = value;
        for slot in digits[1..=ZVN_DERIVED_DIGITS].iter_mut().rev() {
            *slot = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        let check = mod97_check_digits(&digits[..ZVN_DIGITS - 2]);
        digits[ZVN_DIGITS - 2] = b'0' + check / 10;
        digits[ZVN_DIGITS - 1] = b'0' + check % 10;
        Self(digits)
    }
}

impl fmt::Display for Zvn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Zvn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Zvn(<redacted>)")
    }
}

/// True when `text` is a ZVN: 16 ASCII digits, starting with `9`, whose value mod 97 is 1.
pub fn zvn_is_valid(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == ZVN_DIGITS
        && bytes[0] == ZVN_PREFIX
        && bytes.iter().all(u8::is_ascii_digit)
        && mod97(bytes) == 1
}

/// The value of a string of ASCII digits modulo 97, digit by digit.
fn mod97(digits: &[u8]) -> u32 {
    digits.iter().fold(0u32, |rest, digit| {
        (rest * 10 + u32::from(digit - b'0')) % 97
    })
}

/// ISO 7064 MOD 97-10 check digits for `body`: 98 − (body·100 mod 97), in 2..=98.
fn mod97_check_digits(body: &[u8]) -> u8 {
    let rest = (mod97(body) * 100) % 97;
    // `rest` is below 97, so the result is in 1..=98 and fits two digits.
    (98 - rest) as u8
}

/// Normalises a sédula number: surrounding whitespace removed, the separators space, `-`
/// and `.` dropped, letters upper-cased. What remains must be 1 to [`MAX_SEDULA_CHARS`]
/// ASCII letters and digits.
pub fn normalise_sedula(text: &str) -> Result<String> {
    let normalised: String = text
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let valid = !normalised.is_empty()
        && normalised.len() <= MAX_SEDULA_CHARS
        && normalised.bytes().all(|b| b.is_ascii_alphanumeric());
    if valid {
        Ok(normalised)
    } else {
        Err(Error::InvalidIdentifier("sédula number"))
    }
}

/// Parses a birth date written `YYYY-MM-DD` (surrounding whitespace ignored), from
/// [`MIN_BIRTH_YEAR`] on.
pub fn parse_birth_date(text: &str) -> Result<Date> {
    let invalid = Error::InvalidIdentifier("birth date (expected YYYY-MM-DD)");
    let bytes = text.trim().as_bytes();
    let digits_at = |range: std::ops::Range<usize>| -> Option<u32> {
        bytes[range].iter().try_fold(0u32, |value, b| {
            b.is_ascii_digit().then(|| value * 10 + u32::from(b - b'0'))
        })
    };
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return Err(invalid);
    }
    let (Some(year), Some(month), Some(day)) = (digits_at(0..4), digits_at(5..7), digits_at(8..10))
    else {
        return Err(invalid);
    };
    let month = u8::try_from(month)
        .ok()
        .and_then(|m| Month::try_from(m).ok());
    let (Some(month), Ok(day), Ok(year)) = (month, u8::try_from(day), i32::try_from(year)) else {
        return Err(invalid);
    };
    let date = Date::from_calendar_date(year, month, day).map_err(|_| invalid)?;
    check_birth_date(date)?;
    Ok(date)
}

fn check_birth_date(date: Date) -> Result<()> {
    if date.year() < MIN_BIRTH_YEAR {
        return Err(Error::InvalidIdentifier("birth date before 1850"));
    }
    Ok(())
}

/// HMAC-SHA256 under the ZVN key over labelled, length-delimited fields.
fn derive(zvn_key: &[u8; 32], fields: &[&[u8]]) -> Zvn {
    // `new_from_slice` accepts any key length for HMAC.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(zvn_key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(ZVN_LABEL);
    for field in fields {
        mac.update(&[0]);
        mac.update(field);
    }
    let output = Zeroizing::new(mac.finalize().into_bytes());
    Zvn::from_prf_output(&output)
}

/// Variant (a): from a sédula number and birth date.
pub(crate) fn derive_from_sedula(
    zvn_key: &[u8; 32],
    sedula: &str,
    birth_date: Date,
) -> Result<Zvn> {
    let sedula = normalise_sedula(sedula)?;
    check_birth_date(birth_date)?;
    let date = format!(
        "{:04}-{:02}-{:02}",
        birth_date.year(),
        u8::from(birth_date.month()),
        birth_date.day()
    );
    Ok(derive(
        zvn_key,
        &[b"sedula", sedula.as_bytes(), date.as_bytes()],
    ))
}

/// Variant (b): from a BSN.
pub(crate) fn derive_from_bsn(zvn_key: &[u8; 32], bsn: &Bsn) -> Zvn {
    derive(zvn_key, &[b"bsn", bsn.digits()])
}

/// The plaintext of a sealed BSN.
#[derive(Serialize, Deserialize)]
struct SealedBsn {
    bsn: String,
}

impl Drop for SealedBsn {
    fn drop(&mut self) {
        self.bsn.zeroize();
    }
}

/// Holder side of variant (b): encrypts a BSN to the PRS's sealing key
/// ([`crate::Prs::sealing_public_key`]) as a compact JWE, so the BSN never travels in
/// clear. The PRS turns it into a ZVN with [`crate::Prs::zvn_from_sealed_bsn`].
pub fn seal_bsn_for_prs(bsn: &Bsn, prs_sealing_key: &RecipientPublicKey) -> Result<String> {
    let sealed = SealedBsn {
        bsn: String::from_utf8_lossy(bsn.digits()).into_owned(),
    };
    let plaintext =
        Zeroizing::new(serde_json::to_vec(&sealed).map_err(|_| Error::Malformed("sealed BSN"))?);
    prs_sealing_key.encrypt(&plaintext)
}

/// PRS side of variant (b): the BSN inside a decrypted sealed-BSN plaintext.
pub(crate) fn open_sealed_bsn(plaintext: &[u8]) -> Result<Bsn> {
    let sealed: SealedBsn = serde_json::from_slice(plaintext)
        .map_err(|_| Error::Malformed("sealed BSN is not {\"bsn\":…}"))?;
    Bsn::parse(&sealed.bsn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 32] = [7; 32];

    fn date(text: &str) -> Date {
        parse_birth_date(text).unwrap()
    }

    #[test]
    fn format_and_check_digits() {
        let zvn = derive_from_sedula(&KEY, "198002070012", date("1980-02-07")).unwrap();
        let text = zvn.as_str();
        assert_eq!(text.len(), ZVN_DIGITS);
        assert!(text.starts_with('9'));
        assert!(zvn_is_valid(text));
        assert_eq!(Zvn::parse(text).unwrap(), zvn);
        assert!(!zorgnet_fhir::identifiers::bsn_is_valid(text));
        // The IBAN example GB82 WEST 1234 5698 7654 32, rearranged and with letters as
        // numbers, is the ISO 7064 MOD 97-10 example: check digits 82, remainder 1.
        assert_eq!(mod97_check_digits(b"32142829123456987654321611"), 82);
        assert_eq!(mod97(b"3214282912345698765432161182"), 1);
        assert!(!zvn_is_valid("123456782"));
        assert!(!zvn_is_valid("8000000000000000"));
        assert!(!zvn_is_valid("900000000000000x"));
    }

    #[test]
    fn debug_is_redacted() {
        let zvn = derive_from_sedula(&KEY, "A1", date("2001-01-01")).unwrap();
        assert!(!format!("{zvn:?}").contains(zvn.as_str()));
    }

    #[test]
    fn inputs_are_normalised() {
        let d = date("1975-12-31");
        let plain = derive_from_sedula(&KEY, "ab123456", d).unwrap();
        for variant in [" AB123456 ", "ab-123.456", "Ab 123 456\t"] {
            assert_eq!(
                derive_from_sedula(&KEY, variant, d).unwrap(),
                plain,
                "{variant}"
            );
        }
        assert_eq!(date(" 1975-12-31\n"), d);
        for bad in [
            "31-12-1975",
            "1975-13-01",
            "1975-02-30",
            "1975-1-01",
            "1849-12-31",
            "abcd-ef-gh",
            "",
        ] {
            assert!(parse_birth_date(bad).is_err(), "{bad}");
        }
        for bad in [
            "",
            " - ",
            "ab_12",
            &"1".repeat(MAX_SEDULA_CHARS + 1),
            "sédula",
        ] {
            assert!(normalise_sedula(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn differs_by_input_variant_and_key() {
        let d = date("1990-06-15");
        let a = derive_from_sedula(&KEY, "1234", d).unwrap();
        assert_ne!(a, derive_from_sedula(&KEY, "1235", d).unwrap());
        assert_ne!(
            a,
            derive_from_sedula(&KEY, "1234", date("1990-06-16")).unwrap()
        );
        assert_ne!(a, derive_from_sedula(&[8; 32], "1234", d).unwrap());
        let bsn = Bsn::parse("123456782").unwrap();
        let b = derive_from_bsn(&KEY, &bsn);
        assert!(zvn_is_valid(b.as_str()));
        assert_eq!(b, derive_from_bsn(&KEY, &bsn));
        assert_ne!(b, derive_from_bsn(&[8; 32], &bsn));
        assert_ne!(b, derive_from_bsn(&KEY, &Bsn::parse("111222333").unwrap()));
    }

    fn any_date() -> impl Strategy<Value = Date> {
        (MIN_BIRTH_YEAR..=2100i32, 1u8..=12, 1u8..=28).prop_map(|(y, m, d)| {
            Date::from_calendar_date(y, Month::try_from(m).unwrap(), d).unwrap()
        })
    }

    proptest! {
        #[test]
        fn every_single_digit_change_is_detected(
            key in any::<[u8; 32]>(),
            sedula in "[A-Z0-9]{1,20}",
            birth in any_date(),
            position in 0..ZVN_DIGITS,
            replacement in 0u8..=9,
        ) {
            let zvn = derive_from_sedula(&key, &sedula, birth).unwrap();
            prop_assert!(zvn_is_valid(zvn.as_str()));
            let mut digits = zvn.as_str().as_bytes().to_vec();
            prop_assume!(digits[position] != b'0' + replacement);
            digits[position] = b'0' + replacement;
            prop_assert!(!zvn_is_valid(std::str::from_utf8(&digits).unwrap()));
        }

        #[test]
        fn every_adjacent_swap_is_detected(
            key in any::<[u8; 32]>(),
            sedula in "[A-Z0-9]{1,20}",
            birth in any_date(),
            position in 0..ZVN_DIGITS - 1,
        ) {
            let zvn = derive_from_sedula(&key, &sedula, birth).unwrap();
            let mut digits = zvn.as_str().as_bytes().to_vec();
            prop_assume!(digits[position] != digits[position + 1]);
            digits.swap(position, position + 1);
            prop_assert!(!zvn_is_valid(std::str::from_utf8(&digits).unwrap()));
        }

        #[test]
        fn derivation_is_stable(
            key in any::<[u8; 32]>(),
            sedula in "[a-zA-Z0-9]{1,20}",
            birth in any_date(),
        ) {
            let first = derive_from_sedula(&key, &sedula, birth).unwrap();
            let again = derive_from_sedula(&key, &format!(" {} ", sedula.to_lowercase()), birth).unwrap();
            prop_assert_eq!(first, again);
        }
    }
}
