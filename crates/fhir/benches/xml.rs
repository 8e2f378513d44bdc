//! FHIR XML against FHIR JSON, writing and reading typical resources: a Patient, an
//! Observation, and a searchset Bundle of 100 entries (50 of each).
//!
//! `cargo bench -p zorgnet-fhir --bench xml`. The aim: writing XML within 2x the time of
//! `serde_json::to_string` of the same value.

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use std::hint::black_box;
use zorgnet_fhir::xml::{json_to_xml, xml_to_json};

fn patient(n: usize) -> Value {
    json!({
        "resourceType": "Patient",
        "id": format!("patient-{n}"),
        "meta": {"versionId": "3", "lastUpdated": "2024-05-01T10:15:00.123+02:00",
                 "profile": ["http://nictiz.nl/fhir/StructureDefinition/nl-core-Patient"]},
        "text": {"status": "generated",
                 "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Jan Jansen, man, 1 januari 1970</p></div>"},
        "identifier": [{"use": "official", "system": "http://fhir.nl/fhir/NamingSystem/bsn",
                        "value": "999911120"}],
        "active": true,
        "name": [{
            "use": "official",
            "family": "van der Jansen",
            "_family": {"extension": [
                {"url": "http://hl7.org/fhir/StructureDefinition/humanname-own-prefix", "valueString": "van der"},
                {"url": "http://hl7.org/fhir/StructureDefinition/humanname-own-name", "valueString": "Jansen"}]},
            "given": ["Jan", "J."],
            "_given": [null, {"extension": [
                {"url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-qualifier", "valueCode": "IN"}]}]
        }],
        "telecom": [{"system": "phone", "value": "+31 6 12345678", "use": "mobile"},
                    {"system": "email", "value": "jan@example.nl", "use": "home"}],
        "gender": "male",
        "birthDate": "1970-01-01",
        "address": [{"use": "home", "line": ["Dorpsstraat 1"], "city": "Utrecht",
                     "postalCode": "3511 AA", "country": "NL"}],
        "managingOrganization": {"reference": "Organization/org-1", "display": "Huisartsenpraktijk"}
    })
}

fn observation(n: usize) -> Value {
    json!({
        "resourceType": "Observation",
        "id": format!("observation-{n}"),
        "meta": {"versionId": "1", "lastUpdated": "2024-05-01T10:15:00.123+02:00"},
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "vital-signs", "display": "Vital Signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9",
                             "display": "Blood pressure panel with all children optional"}],
                 "text": "Blood pressure"},
        "subject": {"reference": format!("Patient/patient-{n}")},
        "effectiveDateTime": "2024-04-30T09:30:00+02:00",
        "performer": [{"reference": "Practitioner/prac-1"}],
        "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6", "display": "Systolic blood pressure"}]},
             "valueQuantity": {"value": 107.50, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4", "display": "Diastolic blood pressure"}]},
             "valueQuantity": {"value": 60, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
        ]
    })
}

fn bundle() -> Value {
    let entries: Vec<Value> = (0..100)
        .map(|n| {
            let resource = if n % 2 == 0 { patient(n) } else { observation(n) };
            json!({
                "fullUrl": format!("https://node.example/fhir/{}/{}", resource["resourceType"].as_str().unwrap_or(""), resource["id"].as_str().unwrap_or("")),
                "resource": resource,
                "search": {"mode": "match"}
            })
        })
        .collect();
    json!({
        "resourceType": "Bundle",
        "id": "search-1",
        "meta": {"lastUpdated": "2024-05-01T10:15:00.123+02:00"},
        "type": "searchset",
        "total": 100,
        "link": [{"relation": "self", "url": "https://node.example/fhir/Patient?_count=100"}],
        "entry": entries
    })
}

fn compare(c: &mut Criterion) {
    // Numbers as a JSON body would bring them (arbitrary precision keeps their text).
    let reparse = |v: Value| -> Value { serde_json::from_str(&v.to_string()).unwrap() };
    for (name, value) in [
        ("patient", reparse(patient(1))),
        ("observation", reparse(observation(1))),
        ("bundle_100", reparse(bundle())),
    ] {
        let json_text = serde_json::to_string(&value).unwrap();
        let xml_text = json_to_xml(&value).unwrap();
        let mut group = c.benchmark_group(name);
        group.bench_function("write_json", |b| {
            b.iter(|| serde_json::to_string(black_box(&value)).unwrap())
        });
        group.bench_function("write_xml", |b| {
            b.iter(|| json_to_xml(black_box(&value)).unwrap())
        });
        group.bench_function("read_json", |b| {
            b.iter(|| serde_json::from_str::<Value>(black_box(&json_text)).unwrap())
        });
        group.bench_function("read_xml", |b| {
            b.iter(|| xml_to_json(black_box(&xml_text)).unwrap())
        });
        group.finish();
    }
}

criterion_group!(benches, compare);
criterion_main!(benches);
