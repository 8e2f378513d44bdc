//! Each rule kind against tiny hand-written profiles: a table of resources with the error
//! (or warning) each must give, or none.

use serde_json::{Value, json};
use zorgnet_fhir::{Issue, Severity};
use zorgnet_profiles::{ProfileSet, has_errors};

const BASE: &str = "http://hl7.org/fhir/StructureDefinition/";

/// A profile of `type_name` given by differential elements only (merged onto the base).
fn profile(name: &str, type_name: &str, elements: Value) -> Value {
    json!({
        "resourceType": "StructureDefinition",
        "url": format!("http://example.org/StructureDefinition/{name}"),
        "name": name,
        "status": "draft",
        "kind": if type_name == "Extension" { "complex-type" } else { "resource" },
        "abstract": false,
        "type": type_name,
        "baseDefinition": format!("{BASE}{type_name}"),
        "derivation": "constraint",
        "differential": {"element": elements}
    })
}

fn url(name: &str) -> String {
    format!("http://example.org/StructureDefinition/{name}")
}

fn set_of(resources: Vec<Value>) -> ProfileSet {
    let mut set = ProfileSet::new();
    for r in resources {
        set.add(r).unwrap();
    }
    set
}

/// What a case expects: no errors, an error whose text holds the string, or a warning.
enum Expect {
    Clean,
    Error(&'static str),
    Warning(&'static str),
}

fn check(set: &ProfileSet, profile_name: &str, cases: Vec<(&str, Value, Expect)>) {
    let profile_url = url(profile_name);
    for (label, resource, expect) in cases {
        let issues = set.validate(&resource, &[profile_url.as_str()]);
        let found = |severity: Severity, text: &str| {
            issues
                .iter()
                .any(|i| i.severity == severity && i.diagnostics.contains(text))
        };
        match expect {
            Expect::Clean => assert!(
                !has_errors(&issues),
                "{profile_name}/{label}: expected no errors, got {}",
                list(&issues)
            ),
            Expect::Error(text) => assert!(
                found(Severity::Error, text),
                "{profile_name}/{label}: expected an error with '{text}', got {}",
                list(&issues)
            ),
            Expect::Warning(text) => {
                assert!(
                    found(Severity::Warning, text),
                    "{profile_name}/{label}: expected a warning with '{text}', got {}",
                    list(&issues)
                );
                assert!(
                    !has_errors(&issues),
                    "{profile_name}/{label}: {}",
                    list(&issues)
                );
            }
        }
    }
}

fn list(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(|i| {
            format!(
                "\n  {:?} {} @ {}",
                i.severity,
                i.diagnostics,
                i.expression.as_deref().unwrap_or("")
            )
        })
        .collect()
}

#[test]
fn cardinality() {
    let set = set_of(vec![profile(
        "Card",
        "Patient",
        json!([
            {"id": "Patient.name", "path": "Patient.name", "min": 1, "max": "1"},
            {"id": "Patient.contact.name", "path": "Patient.contact.name", "min": 1},
            {"id": "Patient.photo", "path": "Patient.photo", "max": "0"}
        ]),
    )]);
    let name = json!([{"family": "Jansen"}]);
    check(
        &set,
        "Card",
        vec![
            (
                "ok",
                json!({"resourceType": "Patient", "name": name}),
                Expect::Clean,
            ),
            (
                "missing",
                json!({"resourceType": "Patient"}),
                Expect::Error("requires at least 1"),
            ),
            (
                "too many",
                json!({"resourceType": "Patient", "name": [{"family": "a"}, {"family": "b"}]}),
                Expect::Error("allows at most 1"),
            ),
            (
                "inside a repeating backbone element",
                json!({"resourceType": "Patient", "name": name, "contact": [
                    {"name": {"family": "x"}}, {"gender": "male"}
                ]}),
                Expect::Error("Patient.contact.name has 0 value(s)"),
            ),
            (
                "prohibited",
                json!({"resourceType": "Patient", "name": name, "photo": [{"url": "http://x"}]}),
                Expect::Error("not allowed"),
            ),
        ],
    );
    // The location of the backbone case is the contact that lacks the name.
    let issues = set.validate(
        &json!({"resourceType": "Patient", "name": name, "contact": [
            {"name": {"family": "x"}}, {"gender": "male"}
        ]}),
        &[url("Card").as_str()],
    );
    assert!(
        issues
            .iter()
            .any(|i| i.diagnostics.contains("Patient.contact.name")
                && i.expression.as_deref() == Some("Patient.contact[1]")),
        "{}",
        list(&issues)
    );
}

#[test]
fn fixed_values() {
    let set = set_of(vec![profile(
        "Fixed",
        "Patient",
        json!([
            {"id": "Patient.gender", "path": "Patient.gender", "fixedCode": "female"},
            {"id": "Patient.multipleBirthInteger", "path": "Patient.multipleBirthInteger", "fixedInteger": 2}
        ]),
    )]);
    check(
        &set,
        "Fixed",
        vec![
            (
                "ok",
                json!({"resourceType": "Patient", "gender": "female"}),
                Expect::Clean,
            ),
            (
                "absent is fine",
                json!({"resourceType": "Patient"}),
                Expect::Clean,
            ),
            (
                "other code",
                json!({"resourceType": "Patient", "gender": "male"}),
                Expect::Error("fixed value \"female\""),
            ),
            (
                "other number",
                json!({"resourceType": "Patient", "multipleBirthInteger": 3}),
                Expect::Error("fixed value 2"),
            ),
        ],
    );
}

#[test]
fn pattern_values() {
    let set = set_of(vec![profile(
        "Pattern",
        "Observation",
        json!([
            {"id": "Observation.code", "path": "Observation.code", "patternCodeableConcept": {
                "coding": [{"system": "http://loinc.org", "code": "8867-4"}]
            }}
        ]),
    )]);
    let observation =
        |code: Value| json!({"resourceType": "Observation", "status": "final", "code": code});
    check(
        &set,
        "Pattern",
        vec![
            (
                "exact",
                observation(json!({"coding": [{"system": "http://loinc.org", "code": "8867-4"}]})),
                Expect::Clean,
            ),
            (
                "more is fine",
                observation(json!({"coding": [
                    {"system": "http://snomed.info/sct", "code": "364075005"},
                    {"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}
                ], "text": "Hartfrequentie"})),
                Expect::Clean,
            ),
            (
                "other code",
                observation(json!({"coding": [{"system": "http://loinc.org", "code": "1-8"}]})),
                Expect::Error("does not match the pattern"),
            ),
        ],
    );
}

#[test]
fn slicing_by_value() {
    let set = set_of(vec![profile(
        "SliceValue",
        "Patient",
        json!([
            {"id": "Patient.identifier", "path": "Patient.identifier",
             "slicing": {"discriminator": [{"type": "value", "path": "system"}], "rules": "closed"}},
            {"id": "Patient.identifier:bsn", "path": "Patient.identifier", "sliceName": "bsn",
             "min": 1, "max": "1"},
            {"id": "Patient.identifier:bsn.system", "path": "Patient.identifier.system",
             "min": 1, "fixedUri": "http://fhir.nl/fhir/NamingSystem/bsn"},
            {"id": "Patient.identifier:local", "path": "Patient.identifier", "sliceName": "local",
             "max": "1"},
            {"id": "Patient.identifier:local.system", "path": "Patient.identifier.system",
             "fixedUri": "urn:oid:2.16.840.1.113883.2.4.6.3"},
            {"id": "Patient.identifier:local.value", "path": "Patient.identifier.value", "min": 1}
        ]),
    )]);
    let bsn = json!({"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "999911120"});
    let local = |value: Option<&str>| {
        let mut id = json!({"system": "urn:oid:2.16.840.1.113883.2.4.6.3"});
        if let Some(v) = value {
            id["value"] = v.into();
        }
        id
    };
    check(
        &set,
        "SliceValue",
        vec![
            (
                "both slices",
                json!({"resourceType": "Patient", "identifier": [bsn, local(Some("1"))]}),
                Expect::Clean,
            ),
            (
                "required slice missing",
                json!({"resourceType": "Patient", "identifier": [local(Some("1"))]}),
                Expect::Error("slice 'bsn'"),
            ),
            (
                "slice too often",
                json!({"resourceType": "Patient", "identifier": [bsn, bsn]}),
                Expect::Error("allows at most 1"),
            ),
            (
                "closed slicing",
                json!({"resourceType": "Patient", "identifier": [bsn, {"system": "http://other", "value": "1"}]}),
                Expect::Error("matches none of its slices"),
            ),
            (
                "a slice's own rules",
                json!({"resourceType": "Patient", "identifier": [bsn, local(None)]}),
                Expect::Error("Patient.identifier:local.value"),
            ),
        ],
    );
}

#[test]
fn slicing_by_pattern() {
    let vital = json!({"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
        "code": "vital-signs"
    }]});
    let set = set_of(vec![profile(
        "SlicePattern",
        "Observation",
        json!([
            {"id": "Observation.category", "path": "Observation.category",
             "slicing": {"discriminator": [{"type": "pattern", "path": "$this"}], "rules": "open"}},
            {"id": "Observation.category:vs", "path": "Observation.category", "sliceName": "vs",
             "min": 1, "max": "1", "patternCodeableConcept": vital}
        ]),
    )]);
    let observation = |categories: Value| {
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
               "category": categories})
    };
    let other = json!({"coding": [{"system": "http://example.org", "code": "a"}]});
    check(
        &set,
        "SlicePattern",
        vec![
            ("ok", observation(json!([vital])), Expect::Clean),
            (
                "open: others allowed",
                observation(json!([other, vital])),
                Expect::Clean,
            ),
            (
                "missing",
                observation(json!([other])),
                Expect::Error("slice 'vs' of Observation.category has 0"),
            ),
        ],
    );
}

#[test]
fn bindings() {
    let value_set = json!({
        "resourceType": "ValueSet",
        "url": "http://example.org/ValueSet/colours",
        "status": "active",
        "compose": {"include": [{"system": "http://example.org/colour",
            "concept": [{"code": "red"}, {"code": "green"}]}]}
    });
    let set = set_of(vec![
        value_set,
        profile(
            "Binding",
            "Observation",
            json!([
                {"id": "Observation.code", "path": "Observation.code",
                 "binding": {"strength": "required", "valueSet": "http://example.org/ValueSet/colours"}},
                {"id": "Observation.method", "path": "Observation.method",
                 "binding": {"strength": "extensible", "valueSet": "http://example.org/ValueSet/colours|1.0"}},
                {"id": "Observation.status", "path": "Observation.status",
                 "binding": {"strength": "required", "valueSet": "http://hl7.org/fhir/ValueSet/observation-status"}}
            ]),
        ),
    ]);
    let colour =
        |code: &str| json!({"coding": [{"system": "http://example.org/colour", "code": code}]});
    let observation =
        |code: Value| json!({"resourceType": "Observation", "status": "final", "code": code});
    let mut with_method = observation(colour("red"));
    with_method["method"] = colour("blue");
    check(
        &set,
        "Binding",
        vec![
            (
                "in the value set",
                observation(colour("green")),
                Expect::Clean,
            ),
            (
                "not in the value set",
                observation(colour("blue")),
                Expect::Error("http://example.org/colour|blue is not in the value set"),
            ),
            (
                "text only, required",
                observation(json!({"text": "red"})),
                Expect::Error("no code given"),
            ),
            ("extensible", with_method, Expect::Warning("(extensible)")),
        ],
    );
    // A base R4 value set (through the model) binds too.
    let bad_status =
        json!({"resourceType": "Observation", "status": "done", "code": colour("red")});
    let issues = set.validate(&bad_status, &[url("Binding").as_str()]);
    assert!(
        issues
            .iter()
            .any(|i| i.severity == Severity::Error && i.diagnostics.contains("observation-status")),
        "{}",
        list(&issues)
    );
}

#[test]
fn invariants() {
    let set = set_of(vec![profile(
        "Invariant",
        "Patient",
        json!([
            {"id": "Patient", "path": "Patient", "constraint": [
                {"key": "zn-1", "severity": "error", "human": "a name or an identifier",
                 "expression": "name.exists() or identifier.exists()"},
                {"key": "zn-2", "severity": "warning", "human": "a birth date is useful",
                 "expression": "birthDate.exists()"}
            ]},
            {"id": "Patient.contact", "path": "Patient.contact", "constraint": [
                {"key": "zn-3", "severity": "error", "human": "a contact has a telecom",
                 "expression": "telecom.exists()"}
            ]}
        ]),
    )]);
    check(
        &set,
        "Invariant",
        vec![
            (
                "ok",
                json!({"resourceType": "Patient", "name": [{"family": "a"}], "birthDate": "2000-01-01"}),
                Expect::Clean,
            ),
            (
                "error",
                json!({"resourceType": "Patient", "birthDate": "2000-01-01"}),
                Expect::Error("zn-1"),
            ),
            (
                "warning",
                json!({"resourceType": "Patient", "name": [{"family": "a"}]}),
                Expect::Warning("zn-2"),
            ),
            (
                "on a backbone element",
                json!({"resourceType": "Patient", "name": [{"family": "a"}], "birthDate": "2000-01-01",
                       "contact": [{"telecom": [{"system": "phone", "value": "1"}]}, {"gender": "male"}]}),
                Expect::Error("zn-3"),
            ),
        ],
    );
    // The base invariants run without any profile: pat-1 (a contact needs details).
    let issues = ProfileSet::new().validate(
        &json!({"resourceType": "Patient", "contact": [{"gender": "male"}]}),
        &[],
    );
    assert!(
        issues.iter().any(|i| i.severity == Severity::Error
            && i.diagnostics.contains("pat-1")
            && i.expression.as_deref() == Some("Patient.contact[0]")),
        "{}",
        list(&issues)
    );
}

#[test]
fn choice_types_and_extensions() {
    let extension = json!({
        "resourceType": "StructureDefinition",
        "url": "http://example.org/StructureDefinition/ext-colour",
        "name": "ExtColour",
        "status": "draft",
        "kind": "complex-type",
        "abstract": false,
        "type": "Extension",
        "baseDefinition": format!("{BASE}Extension"),
        "derivation": "constraint",
        "differential": {"element": [
            {"id": "Extension.url", "path": "Extension.url", "fixedUri": "http://example.org/StructureDefinition/ext-colour"},
            {"id": "Extension.value[x]", "path": "Extension.value[x]", "min": 1, "type": [{"code": "code"}]}
        ]}
    });
    let set = set_of(vec![
        extension,
        profile(
            "Choice",
            "Observation",
            json!([
                {"id": "Observation.value[x]", "path": "Observation.value[x]", "type": [{"code": "Quantity"}]}
            ]),
        ),
    ]);
    let observation = |extra: Value| {
        let mut o =
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}});
        for (k, v) in extra.as_object().unwrap() {
            o[k] = v.clone();
        }
        o
    };
    check(
        &set,
        "Choice",
        vec![
            (
                "quantity",
                observation(json!({"valueQuantity": {"value": 1}})),
                Expect::Clean,
            ),
            (
                "string",
                observation(json!({"valueString": "x"})),
                Expect::Error("type String is not allowed"),
            ),
            (
                "extension by its own definition",
                observation(
                    json!({"extension": [{"url": "http://example.org/StructureDefinition/ext-colour", "valueString": "red"}]}),
                ),
                Expect::Error("type String is not allowed for element Extension.value[x]"),
            ),
            (
                "extension right",
                observation(
                    json!({"extension": [{"url": "http://example.org/StructureDefinition/ext-colour", "valueCode": "red"}]}),
                ),
                Expect::Clean,
            ),
        ],
    );
}

#[test]
fn unknown_and_unusable_profiles() {
    let mut derived = profile(
        "Derived",
        "Patient",
        json!([{"id": "Patient.name", "path": "Patient.name", "min": 1}]),
    );
    derived["baseDefinition"] = "http://example.org/StructureDefinition/NotLoaded".into();
    let set = set_of(vec![derived]);
    let patient = json!({"resourceType": "Patient", "meta": {"profile": ["http://example.org/StructureDefinition/Declared"]}});
    let issues = set.validate(&patient, &["http://example.org/StructureDefinition/Named"]);
    assert!(
        issues
            .iter()
            .any(|i| i.severity == Severity::Error && i.diagnostics.contains("Named is not known"))
    );
    assert!(issues.iter().any(
        |i| i.severity == Severity::Warning && i.diagnostics.contains("Declared is not known")
    ));
    let issues = set.validate(&patient, &[url("Derived").as_str()]);
    assert!(
        issues
            .iter()
            .any(|i| i.severity == Severity::Error && i.diagnostics.contains("is not loaded")),
        "{}",
        list(&issues)
    );
    // A profile on another type.
    let set = set_of(vec![profile("OnPatient", "Patient", json!([]))]);
    let issues = set.validate(
        &json!({"resourceType": "Practitioner"}),
        &[url("OnPatient").as_str()],
    );
    assert!(
        issues
            .iter()
            .any(|i| i.diagnostics.contains("not on Practitioner"))
    );
    // Profiles on base types are the base spec itself.
    let issues = set.validate(
        &json!({"resourceType": "Practitioner"}),
        &["http://hl7.org/fhir/StructureDefinition/Practitioner"],
    );
    assert!(!has_errors(&issues), "{}", list(&issues));
}

#[test]
fn hostile_input_does_not_panic() {
    let set = set_of(vec![profile(
        "Card",
        "Patient",
        json!([{"id": "Patient.name", "path": "Patient.name", "min": 1}]),
    )]);
    let mut deep = json!({"family": "x"});
    for _ in 0..200 {
        deep = json!({"extension": [{"url": "u", "extension": [deep]}]});
    }
    for resource in [
        json!(null),
        json!([]),
        json!({"resourceType": 5}),
        json!({"resourceType": "Patient", "name": "not an array"}),
        json!({"resourceType": "Patient", "name": [null, 1, "x"]}),
        json!({"resourceType": "Patient", "extension": [deep]}),
    ] {
        let _ = set.validate(&resource, &[url("Card").as_str()]);
        let _ = set.validate_full(&resource, &[]);
    }
    // Bad definitions are refused or reported, never a panic.
    let mut set = ProfileSet::new();
    assert!(
        set.add(json!({"resourceType": "StructureDefinition"}))
            .is_err()
    );
    set.add(
        json!({"resourceType": "StructureDefinition", "url": "http://x/a", "type": "Patient",
        "baseDefinition": "http://x/b", "differential": {"element": []}}),
    )
    .unwrap();
    set.add(
        json!({"resourceType": "StructureDefinition", "url": "http://x/b", "type": "Patient",
        "baseDefinition": "http://x/a", "differential": {"element": []}}),
    )
    .unwrap();
    let issues = set.validate(&json!({"resourceType": "Patient"}), &["http://x/a"]);
    assert!(
        issues
            .iter()
            .any(|i| i.diagnostics.contains("derives from itself")),
        "{}",
        list(&issues)
    );
}
