//! How a record is stored: its exact JSON bytes compressed with LZ4 against a fixed
//! dictionary of typical record text, so that a log of 10,000,000 records fits in 3 GB.
//!
//! A row of `audit_records` holds its record in one of two ways:
//! - as text in `record`, `packed` NULL: every row written before migration 3 of component
//!   `audit`, and a record longer than [`MAX_PACKED_RECORD_BYTES`];
//! - as an empty `record` and the packed bytes in `packed`: a format byte naming the
//!   dictionary ([`FORMAT_LZ4_DICTIONARY_1`]), the JSON's length in bytes (two bytes,
//!   little-endian) and the LZ4 block of the JSON compressed against that dictionary.
//!
//! Everything the log hashes, chains, proves and verifies is the JSON as appended, never its
//! packed form: the tree, the chain and the checkpoints are the same whichever way a row
//! holds its record. A packed value edited in the database unpacks to other JSON (which
//! breaks the chain at that record) or to nothing, which [`json_of`], the one way every
//! reader reads a row's record back, reports as [`Damage`] and never panics over; it never
//! allocates more than [`MAX_PACKED_RECORD_BYTES`] for a record, whatever the row claims.

use zorgnet_db::sql::SqlValue;

/// The columns of `audit_records` that hold a record, in the order [`json_of`] takes them.
pub(crate) const RECORD_COLUMNS: &str = "record, packed";

/// The format byte of a record compressed as an LZ4 block against [`DICTIONARY_1`].
const FORMAT_LZ4_DICTIONARY_1: u8 = 1;

/// The longest record packed, bytes of JSON: its length fits the packed form's two length
/// bytes, and it bounds what unpacking a row allocates. A longer record (a very long request
/// line) is stored as text.
pub const MAX_PACKED_RECORD_BYTES: usize = u16::MAX as usize;

/// Bytes of the packed form before the LZ4 block: the format byte and the JSON's length.
const HEADER_BYTES: usize = 3;

/// The dictionary of format [`FORMAT_LZ4_DICTIONARY_1`]: representative record text as a
/// node writes it (the fields of [`crate::AuditRecord`] in their order; its own system's
/// writes, a citizen reading their log, and professionals' break-the-glass `$fetch`, search
/// by BSN and read, with their roles, purposes and bases), so that a record's field names and
/// common values compress to references into it. 1,882 bytes: every compression first
/// indexes the dictionary, about 0.3 µs per KiB, so it holds a few whole records rather than
/// every variant (a record of another shape still finds its field names here). The most
/// common shape, a professional's read, comes last: where a sequence occurs twice, LZ4
/// finds the later one.
///
/// **Never change it once released**: every record packed with it is read back with it. A
/// better dictionary is a new constant under a new format byte, and this one stays for the
/// records packed before.
const DICTIONARY_1: &str = concat!(
    r#"{"at_ms":1765432109876,"agent":{"kind":"system","id":"zorgnet-node"},"patients":["019af828-9300-7c4e-8b1d-2f6a0e3c5d7b"],"action":"create","request":"POST /fhir/Patient","status":201}"#,
    r#"{"at_ms":1765432109876,"agent":{"kind":"system","id":"ehr-client"},"action":"update","request":"PUT /fhir/MedicationRequest/019af828-9300-7c4e-8b1d-2f6a0e3c5d7b","status":200}"#,
    r#"{"at_ms":1765432109876,"agent":{"kind":"citizen","id":"https://login.example.nl/ 6f1c2e9a-4b7d-4c3e-9a8f-1d2e3f4a5b6c"},"patients":["019af828-9300-7c4e-8b1d-2f6a0e3c5d7b"],"action":"search","request":"GET /fhir/AuditEvent?patient=019af828-9300-7c4e-8b1d-2f6a0e3c5d7b&_count=50&_sort=-date","status":200}"#,
    r#"{"at_ms":1765432109876,"agent":{"kind":"professional","id":"900012345","role":"01.018","organisation":"00001234","certificate":"X5tS256bZ0mY2kQ7wN4rT1vU8sP3oL6nJ9hG5fD2cA0"},"patients":["019af828-9300-7c4e-8b1d-2f6a0e3c5d7b"],"action":"operation:fetch","request":"GET /fhir/$fetch?patient.identifier=123456782&category=medication","purpose":"emergency","reason":"unconscious at the emergency department","bases":["emergency"],"status":200}"#,
    r#"{"at_ms":1765432109876,"agent":{"kind":"professional","id":"900012345","role":"01.015","organisation":"00001234","certificate":"X5tS256bZ0mY2kQ7wN4rT1vU8sP3oL6nJ9hG5fD2cA0"},"patients":["019af828-9300-7c4e-8b1d-2f6a0e3c5d7b"],"action":"search","request":"GET /fhir/Observation?patient.identifier=http%3A%2F%2Ffhir%2Enl%2Ffhir%2FNamingSystem%2Fbsn%7C123456782&_count=1000","purpose":"treatment","bases":["treatment-relation"],"status":200}"#,
    r#"{"at_ms":1765432109876,"agent":{"kind":"professional","id":"900012345","role":"01.015","organisation":"00001234","certificate":"X5tS256bZ0mY2kQ7wN4rT1vU8sP3oL6nJ9hG5fD2cA0"},"patients":["019af828-9300-7c4e-8b1d-2f6a0e3c5d7b"],"action":"read","request":"GET /fhir/Patient/019af828-9300-7c4e-8b1d-2f6a0e3c5d7b","purpose":"treatment","status":200}"#,
);

/// Why a row's record cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    /// The packed column holds something other than bytes.
    #[error("its packed column holds {0} instead of bytes")]
    NotBytes(&'static str),
    /// The `record` column holds something beside the packed bytes (the log leaves it
    /// empty).
    #[error("its record column holds a value beside its packed bytes")]
    RecordBesidePacked,
    /// The packed bytes end before the LZ4 block.
    #[error("its packed bytes end after {0} bytes, before their header does")]
    Truncated(usize),
    /// The format byte names no format this build reads.
    #[error("its packed bytes name format {0}, which this build does not know")]
    UnknownFormat(u8),
    /// The LZ4 block does not decompress to the length the header claims.
    #[error("its packed bytes do not decompress to the {claimed} bytes they claim: {why}")]
    Decompress {
        /// The length the header claims.
        claimed: usize,
        /// What the decompressor said.
        why: String,
    },
    /// The JSON is not UTF-8.
    #[error("it unpacks to bytes that are not UTF-8")]
    NotText,
}

/// The packed form of `json`; `None` when it is longer than [`MAX_PACKED_RECORD_BYTES`] and
/// is stored as text.
pub(crate) fn pack(json: &str) -> Option<Vec<u8>> {
    let length = u16::try_from(json.len()).ok()?;
    let block = lz4_flex::block::compress_with_dict(json.as_bytes(), DICTIONARY_1.as_bytes());
    let mut packed = Vec::with_capacity(HEADER_BYTES + block.len());
    packed.push(FORMAT_LZ4_DICTIONARY_1);
    packed.extend_from_slice(&length.to_le_bytes());
    packed.extend_from_slice(&block);
    Some(packed)
}

/// The record a row holds, from its [`RECORD_COLUMNS`] (`record` and `packed`), which it
/// takes: the text, or the packed bytes unpacked. Never allocates more than
/// [`MAX_PACKED_RECORD_BYTES`] for packed bytes.
pub(crate) fn json_of(record: &mut SqlValue, packed: &mut SqlValue) -> Result<String, Damage> {
    let packed = match std::mem::replace(packed, SqlValue::Null) {
        SqlValue::Null => return Ok(record.take_text()),
        SqlValue::Blob(bytes) => bytes,
        SqlValue::Int(_) => return Err(Damage::NotBytes("an integer")),
        SqlValue::Real(_) => return Err(Damage::NotBytes("a real number")),
        SqlValue::Text(_) | SqlValue::Shared(_) => return Err(Damage::NotBytes("text")),
    };
    if !matches!(record, SqlValue::Text(text) if text.is_empty()) {
        return Err(Damage::RecordBesidePacked);
    }
    let Some((&[format, low, high], block)) = packed.split_first_chunk::<HEADER_BYTES>() else {
        return Err(Damage::Truncated(packed.len()));
    };
    if format != FORMAT_LZ4_DICTIONARY_1 {
        return Err(Damage::UnknownFormat(format));
    }
    let claimed = usize::from(u16::from_le_bytes([low, high]));
    let mut json = vec![0; claimed];
    let written =
        lz4_flex::block::decompress_into_with_dict(block, &mut json, DICTIONARY_1.as_bytes())
            .map_err(|e| Damage::Decompress {
                claimed,
                why: e.to_string(),
            })?;
    if written != claimed {
        return Err(Damage::Decompress {
            claimed,
            why: format!("they decompress to {written}"),
        });
    }
    String::from_utf8(json).map_err(|_| Damage::NotText)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sha2::Digest as _;

    fn stored(packed: Vec<u8>) -> Result<String, Damage> {
        json_of(
            &mut SqlValue::Text(String::new()),
            &mut SqlValue::Blob(packed),
        )
    }

    #[test]
    fn a_node_record_packs_to_under_half_and_unpacks_to_its_exact_bytes() {
        let json = r#"{"at_ms":1765987654321,"agent":{"kind":"professional","id":"938451276","role":"01.015","organisation":"47120593","certificate":"q0Vd8kPz3uYHc1mWbE6rJt9LxG2sNfA7oKi5hRvZ4Tw"},"patients":["0194b2c1-5e3f-7a21-8d6c-9b0e4f1a2c3d"],"action":"read","request":"GET /fhir/Patient/0194b2c1-5e3f-7a21-8d6c-9b0e4f1a2c3d","purpose":"treatment","status":200}"#;
        let packed = pack(json).unwrap();
        assert!(packed.len() * 2 < json.len(), "{} bytes", packed.len());
        assert_eq!(packed[0], FORMAT_LZ4_DICTIONARY_1);
        assert_eq!(stored(packed).unwrap(), json);
    }

    #[test]
    fn the_released_dictionary_and_format_never_change() {
        let digest: [u8; 32] = sha2::Sha256::digest(DICTIONARY_1.as_bytes()).into();
        assert_eq!(
            hex(&digest),
            "79a4e56aa389e5d6173408f81f54c45793c995daeb4585c48a4056d8156775fc",
            "DICTIONARY_1 was changed: records packed with it would no longer read back"
        );
        assert_eq!(DICTIONARY_1.len(), 1_882);
        // Packed by the first build that packed records.
        let packed = vec![
            1, 216, 0, 9, 163, 6, 16, 49, 255, 0, 0, 2, 0, 15, 88, 1, 20, 128, 51, 56, 52, 53, 49,
            50, 55, 54, 15, 4, 15, 88, 1, 11, 140, 52, 55, 49, 50, 48, 53, 57, 51, 28, 1, 47, 112,
            49, 250, 0, 29, 47, 112, 49, 216, 0, 12, 96, 34, 58, 50, 48, 48, 125,
        ];
        assert_eq!(
            stored(packed).unwrap(),
            r#"{"at_ms":1765100000000,"agent":{"kind":"professional","id":"938451276","role":"01.015","organisation":"47120593"},"patients":["p1"],"action":"read","request":"GET /fhir/Patient/p1","purpose":"treatment","status":200}"#
        );
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn text_rows_read_as_they_are_and_long_records_stay_text() {
        assert_eq!(
            json_of(&mut SqlValue::Text("{\"n\":1}".into()), &mut SqlValue::Null).unwrap(),
            "{\"n\":1}"
        );
        let long = format!(
            "{{\"request\":\"{}\"}}",
            "x".repeat(MAX_PACKED_RECORD_BYTES)
        );
        assert_eq!(pack(&long), None);
        let longest = "y".repeat(MAX_PACKED_RECORD_BYTES);
        assert_eq!(stored(pack(&longest).unwrap()).unwrap(), longest);
        assert_eq!(stored(pack("").unwrap()).unwrap(), "");
    }

    #[test]
    fn damaged_packed_values_are_named() {
        let packed = pack(r#"{"action":"read"}"#).unwrap();
        for mut beside in [
            SqlValue::Text("{}".into()),
            SqlValue::Blob(vec![0]),
            SqlValue::Null,
        ] {
            assert_eq!(
                json_of(&mut beside, &mut SqlValue::Blob(packed.clone())),
                Err(Damage::RecordBesidePacked)
            );
        }
        assert_eq!(
            json_of(&mut SqlValue::Text(String::new()), &mut SqlValue::Int(1)),
            Err(Damage::NotBytes("an integer"))
        );
        assert_eq!(stored(vec![1, 0]), Err(Damage::Truncated(2)));
        let mut unknown = packed.clone();
        unknown[0] = 2;
        assert_eq!(stored(unknown), Err(Damage::UnknownFormat(2)));
        let mut huge = packed.clone();
        huge[1..3].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(
            matches!(stored(huge), Err(Damage::Decompress { claimed, .. }) if claimed == 65_535)
        );
        let mut short = packed.clone();
        short[1] -= 1;
        assert!(matches!(stored(short), Err(Damage::Decompress { .. })));
        let mut cut = packed;
        cut.truncate(cut.len() - 2);
        assert!(matches!(stored(cut), Err(Damage::Decompress { .. })));
        let not_text = pack("\u{e9}").unwrap();
        let mut bad = not_text.clone();
        // The one literal byte of `é`'s two replaced by a byte that starts no character.
        let last = bad.len() - 1;
        bad[last] = 0xff;
        assert_eq!(stored(bad), Err(Damage::NotText));
    }

    proptest! {
        #[test]
        fn any_bytes_unpack_or_are_named_without_a_panic(
            body in proptest::collection::vec(any::<u8>(), 0..400),
            length in any::<u16>(),
        ) {
            let mut packed = vec![FORMAT_LZ4_DICTIONARY_1];
            packed.extend_from_slice(&length.to_le_bytes());
            packed.extend_from_slice(&body);
            if let Ok(json) = stored(packed) {
                prop_assert_eq!(json.len(), usize::from(length));
            }
        }

        #[test]
        fn any_text_packs_and_unpacks_to_itself(json in ".{0,600}") {
            prop_assert_eq!(stored(pack(&json).unwrap()).unwrap(), json);
        }
    }
}
