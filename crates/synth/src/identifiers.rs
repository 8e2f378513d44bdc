//! Dutch identifiers: the BSN 11-check, deterministic unique synthetic BSNs,
//! sédula numbers, and the seed mixing that keeps every stream independent.
//!
//! The numbers made here are synthetic. A synthetic BSN passes the 11-check and
//! may therefore equal a real person's BSN: never use generated data to look
//! anyone up in a real system.

use crate::calendar::{Day, civil_from_day};

/// Digits in a BSN (burgerservicenummer, the Dutch citizen service number).
const BSN_DIGITS: usize = 9;

/// The 7-digit BSN prefixes we use are `1..=BSN_PREFIX_COUNT` (never all zeros).
const BSN_PREFIX_COUNT: u64 = 9_999_999;

/// Each 7-digit prefix admits at least this many eighth digits that give a valid
/// check digit (the weight 2 maps the ten digits to ten distinct residues mod 11,
/// and at most one of those leaves the impossible check digit 10).
const BSN_SLOTS_PER_PREFIX: u64 = 9;

/// How many distinct BSNs [`synthetic_bsn`] yields per seed; indexes at or beyond
/// this wrap around and repeat earlier numbers.
pub const BSN_CAPACITY: u64 = BSN_PREFIX_COUNT * BSN_SLOTS_PER_PREFIX;

/// Multiplier of the affine permutation of indexes; coprime with
/// `BSN_CAPACITY` (= 3⁴ · 239 · 4649), so the map is a bijection, and large, so
/// that neighbouring indexes get unrelated numbers.
const BSN_INDEX_MULTIPLIER: u64 = 7_654_321;

/// Weights of the first eight BSN digits in the 11-check; the ninth weighs -1.
const BSN_WEIGHTS: [u32; 8] = [9, 8, 7, 6, 5, 4, 3, 2];

/// Whether `s` is a valid BSN: exactly nine ASCII digits d1..d9, not all zero,
/// with 9·d1 + 8·d2 + … + 2·d8 − d9 ≡ 0 (mod 11) (the "11-proef").
pub fn bsn_is_valid(s: &str) -> bool {
    let bytes = s.as_bytes();
    if bytes.len() != BSN_DIGITS || !bytes.iter().all(u8::is_ascii_digit) {
        return false;
    }
    if bytes.iter().all(|&b| b == b'0') {
        return false;
    }
    let digit = |i: usize| u32::from(bytes[i] - b'0');
    let weighted: u32 = (0..8).map(|i| BSN_WEIGHTS[i] * digit(i)).sum();
    (weighted + 11 - digit(8)).is_multiple_of(11)
}

/// A valid BSN for patient `index` of the dataset with `seed`.
///
/// Distinct indexes below [`BSN_CAPACITY`] give distinct BSNs for the same seed;
/// different seeds give (mostly) different BSNs. The index is permuted by an
/// affine bijection whose offset depends on the seed, then split into a 7-digit
/// prefix (never all zeros) and a slot choosing among the eighth digits that
/// admit a check digit.
pub fn synthetic_bsn(seed: u64, index: u64) -> String {
    let offset = mix(seed, BSN_STREAM) % BSN_CAPACITY;
    // Both factors are below 2^27, so the product fits easily.
    let permuted = (BSN_INDEX_MULTIPLIER * (index % BSN_CAPACITY) + offset) % BSN_CAPACITY;
    let (group, slot) = (
        permuted / BSN_SLOTS_PER_PREFIX,
        permuted % BSN_SLOTS_PER_PREFIX,
    );
    let prefix = group + 1;
    let mut digits = [0u32; BSN_DIGITS];
    let mut rest = prefix;
    for position in (0..7).rev() {
        digits[position] = (rest % 10) as u32;
        rest /= 10;
    }
    let partial: u32 = (0..7).map(|i| BSN_WEIGHTS[i] * digits[i]).sum();
    let mut remaining_slot = slot;
    for eighth in 0..10 {
        let check = (partial + BSN_WEIGHTS[7] * eighth) % 11;
        if check == 10 {
            continue;
        }
        if remaining_slot == 0 {
            digits[7] = eighth;
            digits[8] = check;
            break;
        }
        remaining_slot -= 1;
    }
    digits.iter().map(|d| char::from(b'0' + *d as u8)).collect()
}

/// Stream number reserved for the BSN permutation offset in [`mix`].
const BSN_STREAM: u64 = 0xB5B5;

/// A synthetic sédula number (the identity-card number of the Caribbean
/// Netherlands): the birth date as `YYYYMMDD` followed by the patient's ordinal
/// among Caribbean patients, zero-padded to at least four digits. Unique per
/// ordinal by construction.
pub(crate) fn sedula(birth: Day, caribbean_ordinal: u64) -> String {
    let (year, month, day) = civil_from_day(birth);
    format!("{year:04}{month:02}{day:02}{caribbean_ordinal:04}")
}

/// SplitMix64 of `seed` and `stream`: a well-spread 64-bit value so that nearby
/// seeds and streams give unrelated numbers.
pub(crate) fn mix(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn known_bsns() {
        assert!(bsn_is_valid("111222333"));
        assert!(bsn_is_valid("123456782"));
        assert!(!bsn_is_valid("123456789"));
        assert!(!bsn_is_valid("000000000"));
        assert!(!bsn_is_valid("12345678"));
        assert!(!bsn_is_valid("1234567820"));
        assert!(!bsn_is_valid("12345678a"));
        assert!(!bsn_is_valid(""));
    }

    #[test]
    fn index_multiplier_is_coprime() {
        fn gcd(a: u64, b: u64) -> u64 {
            if b == 0 { a } else { gcd(b, a % b) }
        }
        assert_eq!(gcd(BSN_INDEX_MULTIPLIER, BSN_CAPACITY), 1);
    }

    #[test]
    fn synthetic_bsns_are_valid_and_unique() {
        for seed in [0, 1, 42] {
            let mut seen = HashSet::new();
            for index in 0..100_000 {
                let bsn = synthetic_bsn(seed, index);
                assert!(bsn_is_valid(&bsn), "{bsn} for seed {seed} index {index}");
                assert!(seen.insert(bsn), "duplicate at seed {seed} index {index}");
            }
        }
        assert_ne!(synthetic_bsn(1, 0), synthetic_bsn(2, 0));
    }

    #[test]
    fn every_slot_exists_for_extreme_prefixes() {
        // The lowest and highest prefixes still fill all nine slots: invert the
        // permutation to find the indexes that land there.
        fn inverse(a: u64, m: u64) -> u64 {
            let (mut old_r, mut r, mut old_s, mut s) = (a as i128, m as i128, 1i128, 0i128);
            while r != 0 {
                let q = old_r / r;
                (old_r, r) = (r, old_r - q * r);
                (old_s, s) = (s, old_s - q * s);
            }
            old_s.rem_euclid(m as i128) as u64
        }
        let seed = 7;
        let offset = mix(seed, BSN_STREAM) % BSN_CAPACITY;
        let inverse_multiplier = inverse(BSN_INDEX_MULTIPLIER, BSN_CAPACITY);
        let mut seen = HashSet::new();
        for permuted in (0..9).chain(BSN_CAPACITY - 9..BSN_CAPACITY) {
            let index = (permuted + BSN_CAPACITY - offset) % BSN_CAPACITY * inverse_multiplier
                % BSN_CAPACITY;
            let bsn = synthetic_bsn(seed, index);
            assert!(bsn_is_valid(&bsn), "{bsn}");
            assert!(seen.insert(bsn));
        }
        assert_eq!(seen.len(), 18);
    }

    #[test]
    fn sedula_format() {
        let birth = crate::calendar::day_from_civil(1980, 2, 7);
        assert_eq!(sedula(birth, 12), "198002070012");
        assert_eq!(sedula(birth, 123_456), "19800207123456");
    }
}
