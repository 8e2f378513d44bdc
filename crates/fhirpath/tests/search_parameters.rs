//! Every FHIRPath expression of the R4 search parameters parses, and evaluates without error
//! on the official R4 examples of its base types (when the shared test data is present).

use std::path::PathBuf;

use serde_json::Value;
use zorgnet_fhirpath::Expression;

const DEFAULT_TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/testdata");

#[test]
fn all_r4_search_parameter_expressions_parse() {
    let model = zorgnet_fhir::model::r4();
    let mut failures = Vec::new();
    let mut count = 0;
    for parameter in &model.search_parameters {
        let Some(expression) = &parameter.expression else {
            continue;
        };
        count += 1;
        if let Err(error) = Expression::parse(expression) {
            failures.push(format!("{} `{expression}`: {error}", parameter.url));
        }
    }
    assert!(count > 1000, "only {count} expressions");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn search_parameters_evaluate_on_the_r4_examples() {
    let root = std::env::var_os("ZORGNET_TESTDATA")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_TESTDATA), PathBuf::from);
    let dir = root.join("fhir-r4/examples");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        if std::env::var("ZORGNET_REQUIRE_TESTDATA").is_ok_and(|v| v == "1") {
            panic!("{} missing (ZORGNET_REQUIRE_TESTDATA=1)", dir.display());
        }
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED: {} not found ***\n",
            dir.display()
        );
        return;
    };
    let model = zorgnet_fhir::model::r4();
    let mut examples: Vec<Value> = Vec::new();
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        if let Ok(value) = serde_json::from_str::<Value>(&text) {
            examples.push(value);
        }
    }
    let mut evaluations = 0;
    let mut failures = Vec::new();
    for parameter in &model.search_parameters {
        let Some(text) = &parameter.expression else {
            continue;
        };
        let Ok(expression) = Expression::parse(text) else {
            continue;
        };
        for example in &examples {
            let resource_type = example["resourceType"].as_str().unwrap_or_default();
            if !parameter
                .base
                .iter()
                .any(|b| b == resource_type || b == "Resource" || b == "DomainResource")
            {
                continue;
            }
            evaluations += 1;
            if let Err(error) = expression.evaluate(example) {
                failures.push(format!(
                    "{} on {resource_type}/{}: {error}",
                    parameter.code, example["id"]
                ));
            }
        }
    }
    println!("{evaluations} evaluations, {} failed", failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
