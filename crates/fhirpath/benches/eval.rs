//! Per-evaluation cost of typical search-parameter expressions on typical resources (parsed
//! once, evaluated many times), plus the cost of parsing. Target: at most 2 µs per
//! evaluation.
//!
//! Run: `cargo bench -p zorgnet-fhirpath --bench eval -- --quick`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::Value;
use zorgnet_fhirpath::Expression;

const OBSERVATION: &str = r#"{
  "resourceType": "Observation",
  "id": "example",
  "meta": {"versionId": "1", "lastUpdated": "2024-01-01T10:00:00Z"},
  "status": "final",
  "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs", "display": "Vital Signs"}]}],
  "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body Weight"}, {"system": "http://snomed.info/sct", "code": "27113001"}]},
  "subject": {"reference": "Patient/example"},
  "encounter": {"reference": "Encounter/example"},
  "effectiveDateTime": "2016-03-28",
  "valueQuantity": {"value": 185, "unit": "lbs", "system": "http://unitsofmeasure.org", "code": "[lb_av]"}
}"#;

const MEDICATION_REQUEST: &str = r#"{
  "resourceType": "MedicationRequest",
  "id": "medrx0301",
  "extension": [
    {"url": "http://nictiz.nl/fhir/StructureDefinition/ext-StopType", "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "410546004"}]}},
    {"url": "http://nictiz.nl/fhir/StructureDefinition/ext-MedicationTreatment", "valueIdentifier": {"system": "urn:oid:2.16.840.1.113883.2.4.3.11.999.77.1.1", "value": "MBH_300_1"}},
    {"url": "http://nictiz.nl/fhir/StructureDefinition/ext-RenderedDosageInstruction", "valueString": "1 tablet per day"}
  ],
  "identifier": [{"system": "http://www.bmc.nl/portal/prescriptions", "value": "12345689"}],
  "status": "active",
  "intent": "order",
  "medicationReference": {"reference": "Medication/med0311"},
  "subject": {"reference": "Patient/pat1", "display": "Donald Duck"},
  "authoredOn": "2015-01-15",
  "requester": {"reference": "Practitioner/f007"},
  "dosageInstruction": [{"sequence": 1, "text": "one tablet daily", "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}}}]
}"#;

fn bench(c: &mut Criterion) {
    let observation: Value = serde_json::from_str(OBSERVATION).expect("valid JSON");
    let request: Value = serde_json::from_str(MEDICATION_REQUEST).expect("valid JSON");
    let cases: [(&str, &str, &Value); 5] = [
        ("subject", "Observation.subject", &observation),
        (
            "value_as_quantity",
            "(Observation.value as Quantity)",
            &observation,
        ),
        (
            "extension_where_url",
            "MedicationRequest.extension.where(url='http://nictiz.nl/fhir/StructureDefinition/ext-MedicationTreatment').value",
            &request,
        ),
        (
            "code_token",
            "Observation.code.coding.where(system = 'http://loinc.org').code",
            &observation,
        ),
        (
            "subject_resolve_is_patient",
            "Observation.subject.where(resolve() is Patient)",
            &observation,
        ),
    ];
    // Build the R4 model before measuring.
    let _ = Expression::parse("Observation.subject")
        .expect("parses")
        .evaluate(&observation);
    for (name, text, resource) in cases {
        let expression = Expression::parse(text).expect("parses");
        assert!(
            !expression.evaluate(resource).expect("evaluates").is_empty(),
            "{name} finds something"
        );
        c.bench_function(&format!("eval/{name}"), |b| {
            b.iter(|| black_box(expression.evaluate(black_box(resource))))
        });
    }
    c.bench_function("parse/extension_where_url", |b| {
        b.iter(|| {
            black_box(Expression::parse(black_box(
                "MedicationRequest.extension.where(url='http://example.org/x').value",
            )))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
