//! The public API as other crates use it: search-parameter extraction, invariants and
//! TestScript asserts, variables, `resolve()`, primitive extensions, and the limits.

use serde_json::{Value, json};
use zorgnet_fhirpath::{
    DateTime, Environment, EvalError, Expression, Item, MAX_EXPRESSION_BYTES, ParseError,
};

fn observation() -> Value {
    // Parsed from text, as stored: the number keeps its digits (`185.50`).
    let text = json!({
        "resourceType": "Observation",
        "id": "bw",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": "Patient/example", "display": "Peter"},
        "effectiveDateTime": "2016-03-28T10:30:00.123+02:00",
        "valueQuantity": {"value": 185.50, "unit": "lbs", "system": "http://unitsofmeasure.org", "code": "[lb_av]"},
        "component": [
            {"code": {"text": "a"}, "valueQuantity": {"value": 1, "code": "mm[Hg]"}},
            {"code": {"text": "b"}, "valueString": "x"},
            {"code": {"text": "c"}, "valueQuantity": {"value": 2.0, "code": "mm[Hg]"}}
        ]
    })
    .to_string()
    .replace("185.5", "185.50");
    serde_json::from_str(&text).expect("valid JSON")
}

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "p1",
        "contained": [{"resourceType": "Organization", "id": "org", "name": "Acme"}],
        "managingOrganization": {"reference": "#org"},
        "generalPractitioner": [{"reference": "Practitioner/gp"}],
        "birthDate": "1974-12-25",
        "_birthDate": {"extension": [{
            "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
            "valueDateTime": "1974-12-25T14:35:45-05:00"
        }]},
        "name": [{"family": "Jansen", "given": ["Jan", null], "_given": [null, {"extension": [{"url": "x", "valueString": "y"}]}]}],
        "gender": "male"
    })
}

fn eval<'a>(expression: &str, resource: &'a Value) -> Vec<Item<'a>> {
    Expression::parse(expression)
        .unwrap_or_else(|e| panic!("{expression}: {e}"))
        .evaluate(resource)
        .unwrap_or_else(|e| panic!("{expression}: {e}"))
}

fn json_of(items: &[Item<'_>]) -> Vec<Value> {
    items.iter().map(Item::to_json).collect()
}

#[test]
fn search_parameter_extraction() {
    let obs = observation();
    let subject = eval("Observation.subject", &obs);
    assert_eq!(subject.len(), 1);
    assert_eq!(subject[0].type_name(), "Reference");
    assert_eq!(
        subject[0].to_json(),
        json!({"reference": "Patient/example", "display": "Peter"})
    );

    let quantity = eval("(Observation.value as Quantity)", &obs);
    assert_eq!(quantity[0].type_name(), "Quantity");
    // The decimal keeps its digits.
    assert_eq!(quantity[0].to_json()["value"].to_string(), "185.50");

    let date = eval("Observation.effective", &obs);
    assert_eq!(date[0].type_name(), "dateTime");
    assert_eq!(
        date[0].to_fhirpath_string().as_deref(),
        Some("2016-03-28T10:30:00.123+02:00")
    );

    // The `as` operator filters a collection (R4 `component-value-quantity`).
    let values = eval("Observation.component.value as Quantity", &obs);
    assert_eq!(values.len(), 2);
    // The function form requires a single item.
    assert!(matches!(
        Expression::parse("Observation.component.value.as(Quantity)")
            .unwrap()
            .evaluate(&obs),
        Err(EvalError::NotSingleton(..))
    ));

    let codes = eval("Observation.code.coding", &obs);
    assert_eq!(
        json_of(&codes),
        vec![json!({"system": "http://loinc.org", "code": "29463-7"})]
    );

    // Other resource types in a union give nothing, not an error.
    let pat = patient();
    let names = eval("Patient.name.family | Practitioner.name.family", &pat);
    assert_eq!(json_of(&names), vec![json!("Jansen")]);
}

#[test]
fn extension_value_by_url() {
    let request = json!({
        "resourceType": "MedicationRequest",
        "status": "active",
        "extension": [
            {"url": "http://example.org/a", "valueCode": "first"},
            {"url": "http://example.org/b", "valueBoolean": true}
        ]
    });
    let found = eval(
        "MedicationRequest.extension.where(url='http://example.org/b').value",
        &request,
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].type_name(), "boolean");
    assert_eq!(found[0].to_json(), json!(true));
    let found = eval("extension('http://example.org/a').value", &request);
    assert_eq!(found[0].type_name(), "code");
}

#[test]
fn primitive_extensions_are_reachable() {
    let pat = patient();
    let times = eval("Patient.birthDate.extension.value", &pat);
    assert_eq!(times.len(), 1);
    assert_eq!(times[0].type_name(), "dateTime");
    // A given name with only an extension is an item without a value.
    assert_eq!(eval("Patient.name.given", &pat).len(), 2);
    let has_value = eval("Patient.name.given.select($this.hasValue())", &pat);
    assert_eq!(json_of(&has_value), vec![json!(true), json!(false)]);
    assert_eq!(
        json_of(&eval("Patient.name.given[1].extension.url", &pat)),
        vec![json!("x")]
    );
}

#[test]
fn resolve_contained_bundle_and_references() {
    let pat = patient();
    let organisation = eval("Patient.managingOrganization.resolve().name", &pat);
    assert_eq!(json_of(&organisation), vec![json!("Acme")]);
    // A reference that is not in the document still has a type and an id.
    let gp = eval(
        "Patient.generalPractitioner.where(resolve() is Practitioner)",
        &pat,
    );
    assert_eq!(gp.len(), 1);
    assert_eq!(
        json_of(&eval("Patient.generalPractitioner.resolve().id", &pat)),
        vec![json!("gp")]
    );
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "http://x/fhir/Patient/p1", "resource": patient()},
            {"fullUrl": "http://x/fhir/Observation/bw", "resource": observation()}
        ]
    });
    let gender = eval(
        "Bundle.entry.resource.ofType(Observation).subject.resolve()",
        &bundle,
    );
    assert_eq!(gender[0].type_name(), "Patient");
    let env = Environment::new().with_resource(&bundle);
    let obs = &bundle["entry"][1]["resource"];
    let resolved = Expression::parse("subject.resolve().gender")
        .unwrap()
        .evaluate_with(obs, &env)
        .unwrap();
    assert_eq!(json_of(&resolved), Vec::<Value>::new());
}

#[test]
fn booleans_for_invariants_and_asserts() {
    let pat = patient();
    let env = Environment::new();
    let check = |text: &str| {
        Expression::parse(text)
            .unwrap()
            .evaluate_to_boolean(&pat, &env)
    };
    assert_eq!(check("name.exists() and gender = 'male'"), Ok(Some(true)));
    assert_eq!(check("name.where(family = 'X').exists()"), Ok(Some(false)));
    assert_eq!(check("deceased"), Ok(None));
    // A single non-Boolean item counts as true.
    assert_eq!(check("gender"), Ok(Some(true)));
    assert!(check("name.given").is_err());
    assert_eq!(
        check("birthDate < @2000-01-01 and birthDate >= @1974-01-01"),
        Ok(Some(true))
    );
    // Different precisions that agree as far as both go: unknown.
    assert_eq!(check("birthDate >= @1974"), Ok(None));
}

#[test]
fn variables_and_clock() {
    let pat = patient();
    let env = Environment::new()
        .with_string_variable("family", "Jansen")
        .with_json_variable("other", &pat)
        .with_now(DateTime::parse_datetime("2020-05-01T12:00:00Z").unwrap());
    let run = |text: &str| {
        Expression::parse(text)
            .unwrap()
            .evaluate_with(&pat, &env)
            .map(|items| json_of(&items))
    };
    assert_eq!(run("name.family = %family"), Ok(vec![json!(true)]));
    assert_eq!(run("%other.id"), Ok(vec![json!("p1")]));
    assert_eq!(run("%resource.id"), Ok(vec![json!("p1")]));
    assert_eq!(run("today()"), Ok(vec![json!("2020-05-01")]));
    assert_eq!(
        run("now() - 1 day"),
        Ok(vec![json!("2020-04-30T12:00:00Z")])
    );
    assert_eq!(run("%ucum"), Ok(vec![json!("http://unitsofmeasure.org")]));
    assert!(matches!(run("%nope"), Err(EvalError::UndefinedVariable(_))));
}

#[test]
fn computed_values_become_json() {
    let empty = json!({});
    let items = eval(
        "1 | 2.50 | 'a' | true | @2014-01 | @2014-01-05T10:30:00Z | @T10:30 | 4 'mg' | 2 days",
        &empty,
    );
    assert_eq!(
        json_of(&items),
        vec![
            json!(1),
            serde_json::from_str::<Value>("2.50").unwrap(),
            json!("a"),
            json!(true),
            json!("2014-01"),
            json!("2014-01-05T10:30:00Z"),
            json!("10:30"),
            json!({"value": 4, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}),
            json!({"value": 2, "unit": "days", "system": "http://unitsofmeasure.org", "code": "d"}),
        ]
    );
}

#[test]
fn strict_mode_reports_unknown_elements() {
    let obs = observation();
    let strict = Environment::new().strict(true);
    let run = |text: &str, env: &Environment<'_>| {
        Expression::parse(text)
            .unwrap()
            .evaluate_with(&obs, env)
            .map(|i| i.len())
    };
    assert_eq!(run("Observation.valueQuantity", &Environment::new()), Ok(1));
    assert!(run("Observation.valueQuantity", &strict).is_err());
    assert!(run("Observation.nonsense", &strict).is_err());
    assert_eq!(run("Observation.nonsense", &Environment::new()), Ok(0));
}

#[test]
fn limits_hold() {
    let empty = json!({});
    let long = "1".repeat(MAX_EXPRESSION_BYTES + 1);
    assert!(matches!(
        Expression::parse(&long),
        Err(ParseError::TooLong(_))
    ));
    // Endless growth stops at the collection limit instead of running away.
    let growing = Expression::parse("1.repeat($this + 1)").unwrap();
    assert!(matches!(growing.evaluate(&empty), Err(EvalError::TooLarge)));
    let doubling = Expression::parse("'ab'.repeat($this & $this)").unwrap();
    assert!(doubling.evaluate(&empty).is_err());
    // Invalid regular expressions are errors, not panics.
    assert!(matches!(
        Expression::parse("'a'.matches('(')")
            .unwrap()
            .evaluate(&empty),
        Err(EvalError::Regex(_))
    ));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
    /// Whatever parses evaluates without panicking (errors are fine).
    #[test]
    fn evaluation_never_panics(
        text in "(name|given|family|birthDate|extension|value|[0-9]|'a'|@2014|\\.|\\(|\\)|\\[|\\]|\\+|-|\\*|/|&|\\||=|~|<|>| and | or | is | as |where\\(|select\\(|repeat\\(|first\\(\\)|\\$this|,|%resource|descendants\\(\\)|iif\\(|toString\\(\\)|lowBoundary\\(\\)| 'mg'| days){1,24}"
    ) {
        if let Ok(expression) = Expression::parse(&text) {
            let pat = patient();
            let _ = expression.evaluate(&pat);
        }
    }
}
