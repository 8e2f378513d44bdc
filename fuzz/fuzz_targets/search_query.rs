//! Fuzzes the search-query parser with arbitrary query strings: it must never panic, and
//! whatever it accepts must hold every search limit and carry no control character, so the
//! store never builds an oversized statement or binds text PostgreSQL refuses.
//!
//! Not a test of search results; the HTTP suites do that. Run with
//! `cargo +nightly fuzz run search_query` from the repository root.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use zorgnet_fhir::search::{
    MAX_BOUND_PARAMETERS, MAX_CRITERIA, MAX_CURSOR_BYTES, MAX_INCLUDES, MAX_QUERY_BYTES,
    MAX_SORT_KEYS, SearchRegistry, is_search_text_char, parse_search_query,
};

/// Types whose parameters cover every parameter kind and the widest chains (`focus` may
/// point at any type), and no type: a search across all types.
const RESOURCE_TYPES: [Option<&str>; 5] = [
    Some("Observation"),
    Some("Patient"),
    Some("RiskAssessment"),
    Some("MedicationRequest"),
    None,
];

fuzz_target!(|data: &[u8]| {
    static REGISTRY: OnceLock<SearchRegistry> = OnceLock::new();
    let registry = REGISTRY.get_or_init(SearchRegistry::r4);
    let Some((selector, query)) = data.split_first() else {
        return;
    };
    let resource_type = RESOURCE_TYPES[usize::from(*selector) % RESOURCE_TYPES.len()];
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query).into_owned().collect();
    let Ok(parsed) = parse_search_query(registry, resource_type, &pairs) else {
        return;
    };
    let bytes: usize = pairs.iter().map(|(n, v)| n.len() + v.len()).sum();
    assert!(bytes <= MAX_QUERY_BYTES);
    assert!(
        pairs
            .iter()
            .all(|(n, v)| n.chars().chain(v.chars()).all(is_search_text_char))
    );
    assert!(parsed.bound_parameters() <= MAX_BOUND_PARAMETERS);
    assert!(parsed.sort.len() <= MAX_SORT_KEYS);
    assert!(parsed.criteria.len() <= MAX_CRITERIA);
    assert!(parsed.include.len() + parsed.revinclude.len() <= MAX_INCLUDES);
    assert!(
        parsed
            .cursor
            .as_ref()
            .is_none_or(|c| c.len() <= MAX_CURSOR_BYTES)
    );
});
