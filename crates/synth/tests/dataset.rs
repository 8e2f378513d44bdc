//! Properties of whole generated datasets through the public API: determinism,
//! identifiers, ids, references, dates, volume, and both output formats.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use serde_json::Value;
use zorgnet_synth::{
    BSN_SYSTEM, BUNDLE_FULL_URL_BASE, Generator, MAX_ENTRIES_PER_BUNDLE, OutputFormat,
    RESOURCES_PER_PATIENT_MEAN, SEDULA_SYSTEM, SynthConfig, URA_SYSTEM, UZI_ROLE_SYSTEM,
    UZI_SYSTEM, bsn_is_valid, synthetic_bsn, write,
};

/// Patients in the shared dataset: enough for averages and the Caribbean 2 %.
const PATIENTS: usize = 500;
const SEED: u64 = 20_261_031;
/// No date in the data may be on or after this day.
const FIRST_FUTURE_DATE: &str = "2026-11-01";

/// The shared dataset: the directory and each patient's resources.
struct Dataset {
    directory: Vec<Value>,
    patients: Vec<Vec<Value>>,
}

impl Dataset {
    fn all(&self) -> impl Iterator<Item = &Value> {
        self.directory.iter().chain(self.patients.iter().flatten())
    }
}

fn dataset() -> &'static Dataset {
    static DATASET: OnceLock<Dataset> = OnceLock::new();
    DATASET.get_or_init(|| {
        let generator = Generator::new(SynthConfig {
            patients: PATIENTS,
            seed: SEED,
        });
        Dataset {
            directory: generator.directory_resources(),
            patients: (0..PATIENTS)
                .map(|index| generator.patient_resources(index))
                .collect(),
        }
    })
}

fn key(resource: &Value) -> String {
    format!(
        "{}/{}",
        resource["resourceType"].as_str().unwrap_or("?"),
        resource["id"].as_str().unwrap_or("?")
    )
}

/// Every `reference` string anywhere inside `value`.
fn references(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (name, child) in map {
                match (name.as_str(), child) {
                    ("reference", Value::String(reference)) => found.push(reference.clone()),
                    _ => references(child, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| references(item, found)),
        _ => {}
    }
}

/// Every string anywhere inside `value`, with the name of its field.
fn strings<'v>(value: &'v Value, field: &'v str, found: &mut Vec<(&'v str, &'v str)>) {
    match value {
        Value::Object(map) => map
            .iter()
            .for_each(|(name, child)| strings(child, name, found)),
        Value::Array(items) => items.iter().for_each(|item| strings(item, field, found)),
        Value::String(s) => found.push((field, s)),
        _ => {}
    }
}

fn patient_identifier<'v>(patient: &'v Value, system: &str) -> Option<&'v str> {
    patient["identifier"]
        .as_array()?
        .iter()
        .find(|identifier| identifier["system"] == system)
        .and_then(|identifier| identifier["value"].as_str())
}

#[test]
fn same_seed_gives_identical_bytes_and_other_seeds_differ() {
    let render = |seed| {
        let generator = Generator::new(SynthConfig { patients: 20, seed });
        let mut bytes = Vec::new();
        write(&generator, OutputFormat::Ndjson, &mut bytes, |_| {}).expect("write to memory");
        bytes
    };
    assert_eq!(render(7), render(7));
    assert_ne!(render(7), render(8));
}

#[test]
fn a_patient_does_not_depend_on_generation_order() {
    let generator = Generator::new(SynthConfig {
        patients: 50,
        seed: SEED,
    });
    let first = generator.patient_resources(31);
    for index in 0..50 {
        generator.patient_resources(index);
    }
    assert_eq!(generator.patient_resources(31), first);
    let in_stream: Vec<Value> = generator.resources().collect();
    let at = in_stream
        .iter()
        .position(|r| r["id"] == "pat-000031")
        .expect("patient 31 in stream");
    assert_eq!(in_stream[at..at + first.len()], first[..]);
}

#[test]
fn bsn_check_digit() {
    assert!(bsn_is_valid("111222333"));
    assert!(bsn_is_valid("123456782"));
    assert!(!bsn_is_valid("123456789"));
    assert!(!bsn_is_valid("000000000"));
    assert!(!bsn_is_valid("1234567"));
    assert!(!bsn_is_valid("12345678X"));
}

#[test]
fn synthetic_bsns_are_valid_and_unique_per_index() {
    let mut seen = HashSet::new();
    for index in 0..2_000 {
        let bsn = synthetic_bsn(SEED, index);
        assert!(bsn_is_valid(&bsn), "{bsn}");
        assert!(seen.insert(bsn), "duplicate BSN at index {index}");
    }
}

#[test]
fn patients_carry_valid_unique_bsns() {
    let mut seen = HashSet::new();
    let mut with_bsn = 0;
    for record in &dataset().patients {
        let patient = &record[0];
        assert_eq!(patient["resourceType"], "Patient");
        if let Some(bsn) = patient_identifier(patient, BSN_SYSTEM) {
            assert!(bsn_is_valid(bsn), "{bsn}");
            assert!(seen.insert(bsn.to_owned()), "duplicate BSN {bsn}");
            with_bsn += 1;
        }
    }
    assert!(
        with_bsn >= PATIENTS * 98 / 100,
        "{with_bsn} of {PATIENTS} have a BSN"
    );
}

#[test]
fn caribbean_patients_have_a_sedula_and_some_lack_a_bsn() {
    let caribbean: Vec<&Value> = dataset()
        .patients
        .iter()
        .map(|record| &record[0])
        .filter(|patient| patient_identifier(patient, SEDULA_SYSTEM).is_some())
        .collect();
    assert_eq!(caribbean.len(), PATIENTS / 50);
    let without_bsn = caribbean
        .iter()
        .filter(|p| patient_identifier(p, BSN_SYSTEM).is_none())
        .count();
    assert!(
        without_bsn >= 1 && without_bsn < caribbean.len(),
        "{without_bsn} of {} without BSN",
        caribbean.len()
    );
    for patient in caribbean {
        assert_eq!(patient["address"][0]["country"], "BQ");
        assert!(patient["address"][0].get("postalCode").is_none());
        let sedula = patient_identifier(patient, SEDULA_SYSTEM).unwrap_or_default();
        let birth = patient["birthDate"]
            .as_str()
            .unwrap_or_default()
            .replace('-', "");
        assert!(sedula.starts_with(&birth), "{sedula} vs {birth}");
    }
}

#[test]
fn ids_are_unique_and_fhir_shaped() {
    let mut seen = HashSet::new();
    for resource in dataset().all() {
        let id = resource["id"].as_str().expect("every resource has an id");
        assert!(
            (1..=64).contains(&id.len())
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'),
            "bad id {id}"
        );
        // Ids are unique across types too, so they can serve as file names.
        assert!(seen.insert(id.to_owned()), "duplicate id {id}");
    }
}

#[test]
fn references_resolve_to_earlier_resources() {
    let data = dataset();
    let directory: HashSet<String> = data.directory.iter().map(key).collect();
    for resource in &data.directory {
        let mut found = Vec::new();
        references(resource, &mut found);
        for reference in found {
            assert!(
                directory.contains(&reference),
                "{} refers to missing {reference}",
                key(resource)
            );
        }
    }
    let mut n_references = 0;
    for record in &data.patients {
        let mut earlier: HashSet<String> = HashSet::new();
        for resource in record {
            let mut found = Vec::new();
            references(resource, &mut found);
            for reference in found {
                assert!(
                    directory.contains(&reference) || earlier.contains(&reference),
                    "{} refers to {reference}, which is not earlier in the dataset",
                    key(resource)
                );
                n_references += 1;
            }
            earlier.insert(key(resource));
        }
    }
    assert!(n_references > 10 * PATIENTS);
}

#[test]
fn dates_are_well_formed_and_not_in_the_future() {
    let mut n_dates = 0;
    for resource in dataset().all() {
        let mut found = Vec::new();
        strings(resource, "", &mut found);
        for (field, value) in found {
            let bytes = value.as_bytes();
            let looks_like_date = bytes.len() >= 10
                && bytes[..4].iter().all(u8::is_ascii_digit)
                && bytes[4] == b'-'
                && bytes[7] == b'-';
            if !looks_like_date {
                continue;
            }
            n_dates += 1;
            assert!(
                value < FIRST_FUTURE_DATE,
                "{field} = {value} in {}",
                key(resource)
            );
            match bytes.len() {
                10 => {}
                25 => {
                    assert_eq!(bytes[10], b'T', "{value}");
                    assert!(
                        value.ends_with("+01:00")
                            || value.ends_with("+02:00")
                            || value.ends_with("-04:00"),
                        "{value}"
                    );
                }
                _ => panic!("{field} = {value} is neither a date nor a dateTime with offset"),
            }
        }
    }
    assert!(n_dates > 10 * PATIENTS);
}

#[test]
fn birth_dates_span_the_century() {
    let years: Vec<i32> = dataset()
        .patients
        .iter()
        .filter_map(|record| record[0]["birthDate"].as_str()?.get(..4)?.parse().ok())
        .collect();
    assert!(years.iter().all(|year| (1930..=2024).contains(year)));
    assert!(years.iter().any(|year| *year < 1945) && years.iter().any(|year| *year >= 2015));
}

#[test]
fn average_record_size_is_near_the_documented_mean() {
    let data = dataset();
    let sizes: Vec<usize> = data.patients.iter().map(Vec::len).collect();
    let mean = sizes.iter().sum::<usize>() as f64 / PATIENTS as f64;
    let documented = RESOURCES_PER_PATIENT_MEAN as f64;
    assert!(
        (documented * 0.85..documented * 1.15).contains(&mean),
        "mean {mean:.1}, documented {documented}"
    );
    let (min, max) = (
        sizes.iter().min().copied().unwrap_or(0),
        sizes.iter().max().copied().unwrap_or(0),
    );
    assert!(min >= 5 && max <= 1_000, "sizes range {min}..{max}");
    assert!(
        max > 3 * (mean as usize),
        "older, chronically ill patients have much larger records"
    );
}

#[test]
fn every_expected_resource_type_occurs() {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for resource in dataset().all() {
        *counts
            .entry(resource["resourceType"].as_str().unwrap_or("?"))
            .or_default() += 1;
    }
    for resource_type in [
        "Organization",
        "Endpoint",
        "Location",
        "HealthcareService",
        "Practitioner",
        "PractitionerRole",
        "OrganizationAffiliation",
        "Patient",
        "Encounter",
        "Condition",
        "MedicationStatement",
        "MedicationRequest",
        "MedicationDispense",
        "AllergyIntolerance",
        "Observation",
        "Immunization",
        "Procedure",
        "DiagnosticReport",
        "DocumentReference",
    ] {
        assert!(
            counts.get(resource_type).copied().unwrap_or(0) > 0,
            "no {resource_type}"
        );
    }
    assert_eq!(counts.len(), 19, "unexpected types: {counts:?}");
}

#[test]
fn directory_has_identified_organisations_and_professionals() {
    let directory = &dataset().directory;
    let organisations: Vec<&Value> = directory
        .iter()
        .filter(|r| r["resourceType"] == "Organization")
        .collect();
    assert!(
        organisations
            .iter()
            .any(|o| o["name"] == "Eilandkliniek Saba")
    );
    for kind in ["Z3", "V6", "J8", "R5"] {
        assert!(
            organisations
                .iter()
                .any(|o| o["type"][0]["coding"][0]["code"] == kind),
            "no organisation of type {kind}"
        );
    }
    let mut uras = HashSet::new();
    for organisation in organisations {
        assert_eq!(organisation["identifier"][0]["system"], URA_SYSTEM);
        let ura = organisation["identifier"][0]["value"]
            .as_str()
            .unwrap_or_default();
        assert!(
            ura.len() == 8 && ura.chars().all(|c| c.is_ascii_digit()),
            "URA {ura}"
        );
        assert!(uras.insert(ura.to_owned()), "duplicate URA {ura}");
    }
    for practitioner in directory
        .iter()
        .filter(|r| r["resourceType"] == "Practitioner")
    {
        assert_eq!(practitioner["identifier"][0]["system"], UZI_SYSTEM);
        let uzi = practitioner["identifier"][0]["value"]
            .as_str()
            .unwrap_or_default();
        assert!(
            uzi.len() == 9 && uzi.chars().all(|c| c.is_ascii_digit()),
            "UZI {uzi}"
        );
    }
    let role_codes: HashSet<&str> = directory
        .iter()
        .filter(|r| r["resourceType"] == "PractitionerRole")
        .map(|role| {
            assert_eq!(role["code"][0]["coding"][0]["system"], UZI_ROLE_SYSTEM);
            role["code"][0]["coding"][0]["code"]
                .as_str()
                .unwrap_or_default()
        })
        .collect();
    for code in ["01.015", "17.000", "01.010", "30.000"] {
        assert!(role_codes.contains(code), "no role {code}");
    }
    for endpoint in directory.iter().filter(|r| r["resourceType"] == "Endpoint") {
        assert_eq!(endpoint["connectionType"]["code"], "hl7-fhir-rest");
        let address = endpoint["address"].as_str().unwrap_or_default();
        assert!(
            address.starts_with("https://fhir.") && address.ends_with(".example/fhir"),
            "{address}"
        );
    }
}

#[test]
fn observations_carry_ucum_quantities_or_components() {
    for resource in dataset()
        .all()
        .filter(|r| r["resourceType"] == "Observation")
    {
        let quantities: Vec<&Value> = match resource.get("valueQuantity") {
            Some(quantity) => vec![quantity],
            None => resource["component"]
                .as_array()
                .map(|components| components.iter().map(|c| &c["valueQuantity"]).collect())
                .unwrap_or_default(),
        };
        assert!(!quantities.is_empty(), "{} has no value", key(resource));
        for quantity in quantities {
            assert_eq!(quantity["system"], "http://unitsofmeasure.org");
            assert!(quantity["value"].is_number() && quantity["code"].is_string());
        }
        assert_eq!(resource["code"]["coding"][0]["system"], "http://loinc.org");
    }
}

#[test]
fn ndjson_lines_parse_and_count_matches() {
    let generator = Generator::new(SynthConfig {
        patients: 60,
        seed: 5,
    });
    let mut bytes = Vec::new();
    let mut reports = Vec::new();
    let written = write(&generator, OutputFormat::Ndjson, &mut bytes, |n| {
        reports.push(n)
    })
    .expect("write");
    let text = String::from_utf8(bytes).expect("UTF-8");
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("line is JSON"))
        .collect();
    assert_eq!(lines.len() as u64, written);
    assert_eq!(lines, generator.resources().collect::<Vec<_>>());
    assert_eq!(
        reports.len(),
        61,
        "once for the directory, once per patient"
    );
    assert!(reports.windows(2).all(|pair| pair[0] < pair[1]));
    assert_eq!(reports.last().copied(), Some(written));
    let estimate = generator.estimated_resource_count() as f64;
    assert!(
        (estimate / written as f64 - 1.0).abs() < 0.5,
        "estimate {estimate} vs {written}"
    );
}

#[test]
fn transaction_bundles_put_every_resource_in_dependency_order() {
    let generator = Generator::new(SynthConfig {
        patients: 60,
        seed: 5,
    });
    let mut bytes = Vec::new();
    let written = write(
        &generator,
        OutputFormat::TransactionBundles,
        &mut bytes,
        |_| {},
    )
    .expect("write");
    let text = String::from_utf8(bytes).expect("UTF-8");
    let mut loaded: HashSet<String> = HashSet::new();
    let mut n_entries = 0u64;
    for line in text.lines() {
        let bundle: Value = serde_json::from_str(line).expect("line is a Bundle");
        assert_eq!(bundle["resourceType"], "Bundle");
        assert_eq!(bundle["type"], "transaction");
        let entries = bundle["entry"].as_array().expect("entries");
        assert!(!entries.is_empty() && entries.len() <= MAX_ENTRIES_PER_BUNDLE);
        let in_bundle: HashSet<String> = entries
            .iter()
            .map(|entry| key(&entry["resource"]))
            .collect();
        for entry in entries {
            let url = key(&entry["resource"]);
            assert_eq!(entry["request"]["method"], "PUT");
            assert_eq!(entry["request"]["url"], url.as_str());
            assert_eq!(
                entry["fullUrl"],
                format!("{BUNDLE_FULL_URL_BASE}/{url}").as_str()
            );
            let mut found = Vec::new();
            references(&entry["resource"], &mut found);
            for reference in found {
                assert!(
                    loaded.contains(&reference) || in_bundle.contains(&reference),
                    "{url} refers ahead to {reference}"
                );
            }
        }
        n_entries += entries.len() as u64;
        loaded.extend(in_bundle);
    }
    assert_eq!(n_entries, written);
    assert_eq!(written as usize, generator.resources().count());
}

#[test]
fn format_follows_the_file_extension() {
    assert_eq!(
        OutputFormat::from_path("data/out.ndjson".as_ref()),
        OutputFormat::Ndjson
    );
    assert_eq!(
        OutputFormat::from_path("data/out.json".as_ref()),
        OutputFormat::TransactionBundles
    );
}

#[test]
fn every_resource_passes_the_structural_fhir_validator() {
    let generator = Generator::new(SynthConfig {
        patients: 80,
        seed: 11,
    });
    let mut n_resources = 0;
    for resource in generator.resources() {
        let issues = zorgnet_fhir::validate_resource(&resource);
        assert!(issues.is_empty(), "{}: {issues:?}", key(&resource));
        n_resources += 1;
    }
    assert!(n_resources > 80 * 20);
    // The validator is live: a wrongly shaped element is reported.
    let mut broken = generator.patient_resources(0).swap_remove(0);
    broken["gender"] = serde_json::json!(["female"]);
    assert!(!zorgnet_fhir::validate_resource(&broken).is_empty());
}

#[test]
fn bsn_check_agrees_with_the_fhir_crate() {
    for index in 0..1_000 {
        let bsn = synthetic_bsn(SEED, index);
        assert!(zorgnet_fhir::identifiers::bsn_is_valid(&bsn));
        let mut wrong = bsn.into_bytes();
        wrong[8] = b'0' + (wrong[8] - b'0' + 1) % 10;
        let wrong = String::from_utf8(wrong).unwrap_or_default();
        assert_eq!(
            bsn_is_valid(&wrong),
            zorgnet_fhir::identifiers::bsn_is_valid(&wrong),
            "{wrong}"
        );
    }
}
