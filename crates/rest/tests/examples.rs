//! Round trips of real-world example resources through a running node, on every backend:
//!
//! - the official HL7 FHIR R4 examples (`shared/testdata/fhir-r4/examples/`): each one is
//!   stored with `PUT {type}/{id}`, read back and compared with the original;
//! - the Nictiz zib2020 / nl-core examples (`shared/testdata/nictiz-zib2020-nlcore-examples/`):
//!   the same round trip (Dutch name and address parts live in primitive extensions such as
//!   `_family` and `_line`, which must survive), plus a search by BSN for every Patient with one.
//!
//! "Equal" means equal as `serde_json::Value` once `meta.versionId` and `meta.lastUpdated`
//! (which the server assigns) are removed from both sides. Numbers compare as JSON values, so a
//! decimal `1.50` that reads back as `1.5` counts as equal (a known, documented limitation).
//!
//! Some official examples are slightly invalid, so the server may refuse a few: every refusal
//! is printed with its status and OperationOutcome diagnostics, the accepted share must stay at
//! or above [`MIN_ACCEPTED_PERCENT`], and the number of refusals within a per-corpus ceiling.
//!
//! The corpora live outside the repository, in the shared test data folder (`ZORGNET_TESTDATA`,
//! by default `../shared/testdata` beside the repository). Without it these tests say loudly
//! that they were skipped and pass, so that a plain clone builds and tests; with
//! `ZORGNET_REQUIRE_TESTDATA=1` (CI sets it) a missing corpus fails them instead.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use support::{Node, nodes};

/// The environment variable naming the shared test data folder.
const TESTDATA_VARIABLE: &str = "ZORGNET_TESTDATA";

/// The shared test data folder when [`TESTDATA_VARIABLE`] is not set: `../shared/testdata`
/// beside the repository.
const DEFAULT_TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/testdata");

/// The environment variable that, set to `1`, makes a missing corpus a failure, not a skip.
const REQUIRE_TESTDATA_VARIABLE: &str = "ZORGNET_REQUIRE_TESTDATA";

/// The official R4 examples, in the test data folder.
const OFFICIAL_EXAMPLES: &str = "fhir-r4/examples";

/// The Nictiz nl-core examples (converted from XML to JSON, see the folder's `SOURCE.md`), in
/// the test data folder.
const NLCORE_EXAMPLES: &str = "nictiz-zib2020-nlcore-examples/examples";

/// The BSN naming system (Dutch citizen service number).
const BSN: &str = "http://fhir.nl/fhir/NamingSystem/bsn";

/// At least this share (in percent) of each example corpus must be accepted.
const MIN_ACCEPTED_PERCENT: usize = 97;

/// Most official R4 examples the node may refuse. The testdata's `SOURCE.md` warns that a
/// strict parser flags about 2% of them; the node refuses exactly one today, rightly:
/// `Questionnaire-qs1.json` has 32 `display` items without the required (1..1) `linkId`.
/// Raise this only after judging the newly refused files the test prints.
const MAX_REFUSED_OFFICIAL_EXAMPLES: usize = 1;

/// Most nl-core examples the node may refuse. Three are refused today, rightly: the XML to
/// JSON conversion kept XML comments as `fhir_comments` (a DSTU2-only JSON convention that R4
/// does not define and the HL7 validator also rejects) in `nl-core-Encounter-01.json`,
/// `nl-core-NameInformation-complete.json` and `nl-core-Vaccination-event-03.json`.
/// Raise this only after judging the newly refused files the test prints.
const MAX_REFUSED_NLCORE_EXAMPLES: usize = 3;

/// An example file, parsed.
struct Example {
    file: String,
    resource: Value,
}

/// A file the server would not store.
struct Refusal {
    file: String,
    status: u16,
    diagnostics: String,
}

/// What happened to one corpus on one node.
struct RoundTrip {
    total: usize,
    /// `(file, type, id)` of every stored example.
    accepted: Vec<(String, String, String)>,
    refused: Vec<Refusal>,
    /// Accepted examples that did not read back equal, with the differing paths.
    mismatches: Vec<String>,
}

/// The folder of a corpus, or `None` (said loudly on stderr) when it is missing and not
/// required. Panics when it is missing and [`REQUIRE_TESTDATA_VARIABLE`] is `1`.
fn corpus(relative: &str) -> Option<PathBuf> {
    let testdata = std::env::var_os(TESTDATA_VARIABLE)
        .filter(|value| !value.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_TESTDATA), PathBuf::from);
    let dir = testdata.join(relative);
    if dir.is_dir() {
        return Some(dir);
    }
    let message = format!(
        "the example corpus {relative} not found at {}; set {TESTDATA_VARIABLE} to the testdata folder",
        dir.display()
    );
    if std::env::var(REQUIRE_TESTDATA_VARIABLE).is_ok_and(|value| value == "1") {
        panic!("{message} ({REQUIRE_TESTDATA_VARIABLE}=1 requires it)");
    }
    {
        // Written to the process's stderr, not through the test harness's capture, so
        // that a skip shows in every run.
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: {message} ***\n");
    };
    None
}

/// Every resource JSON file of `dir`, sorted by name. Non-resource JSON (such as a
/// `package.json`) and other files are skipped.
fn load_examples(dir: &Path) -> Vec<Example> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    let examples: Vec<Example> = paths
        .iter()
        .filter_map(|path| {
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
            let resource: Value = serde_json::from_str(&text)
                .unwrap_or_else(|error| panic!("parsing {}: {error}", path.display()));
            resource["resourceType"].is_string().then(|| Example {
                file: file_name(path),
                resource,
            })
        })
        .collect();
    assert!(
        examples.len() > 100,
        "expected the example corpus in {}, found {} resources",
        dir.display(),
        examples.len()
    );
    examples
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// The resource without the server-assigned `meta.versionId` and `meta.lastUpdated` (and
/// without `meta` when nothing else was in it).
fn comparable(resource: &Value) -> Value {
    let mut resource = resource.clone();
    if let Some(object) = resource.as_object_mut() {
        let meta_is_empty = object
            .get_mut("meta")
            .and_then(Value::as_object_mut)
            .map(|meta| {
                meta.remove("versionId");
                meta.remove("lastUpdated");
                meta.is_empty()
            });
        if meta_is_empty == Some(true) {
            object.remove("meta");
        }
    }
    resource
}

/// The JSON paths where `expected` and `actual` differ (at most `limit` of them).
fn differences(expected: &Value, actual: &Value, limit: usize) -> Vec<String> {
    fn walk(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>, limit: usize) {
        if out.len() >= limit || expected == actual {
            return;
        }
        match (expected, actual) {
            (Value::Object(e), Value::Object(a)) => {
                for (key, value) in e {
                    let child = format!("{path}.{key}");
                    match a.get(key) {
                        Some(other) => walk(&child, value, other, out, limit),
                        None => out.push(format!("{child}: missing on read (was {value})")),
                    }
                }
                for key in a.keys().filter(|key| !e.contains_key(*key)) {
                    out.push(format!("{path}.{key}: added on read ({})", a[key]));
                }
            }
            (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
                for (index, (value, other)) in e.iter().zip(a).enumerate() {
                    walk(&format!("{path}[{index}]"), value, other, out, limit);
                }
            }
            _ => out.push(format!("{path}: stored {expected}, read back {actual}")),
        }
        out.truncate(limit);
    }
    let mut out = Vec::new();
    walk("$", expected, actual, &mut out, limit);
    out
}

/// All issue diagnostics of an OperationOutcome (or the raw body when it is not one).
fn diagnostics(reply: &support::Reply) -> String {
    match reply.body["issue"].as_array() {
        Some(issues) => issues
            .iter()
            .map(|issue| {
                format!(
                    "[{}/{}] {}: {}",
                    issue["severity"].as_str().unwrap_or("?"),
                    issue["code"].as_str().unwrap_or("?"),
                    issue["expression"][0].as_str().unwrap_or("(no location)"),
                    issue["diagnostics"].as_str().unwrap_or("(no diagnostics)")
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        None => reply.text.chars().take(500).collect(),
    }
}

/// Stores every example (`PUT {type}/{id}`, or `POST {type}` when it has no id), reads each
/// accepted one back and compares it with the original.
async fn round_trip(node: &Node, examples: &[Example]) -> RoundTrip {
    let mut outcome = RoundTrip {
        total: examples.len(),
        accepted: Vec::new(),
        refused: Vec::new(),
        mismatches: Vec::new(),
    };
    for example in examples {
        let resource_type = example.resource["resourceType"].as_str().unwrap();
        let stored = match example.resource["id"].as_str() {
            Some(id) => {
                node.put(&format!("{resource_type}/{id}"), &example.resource)
                    .await
            }
            None => node.post(resource_type, &example.resource).await,
        };
        if !matches!(stored.status, 200 | 201) {
            assert!(
                (400..500).contains(&stored.status)
                    && stored.body["resourceType"] == "OperationOutcome",
                "[{}] {}: a refusal must be a 4xx OperationOutcome, got {}: {}",
                node.backend,
                example.file,
                stored.status,
                stored.text
            );
            outcome.refused.push(Refusal {
                file: example.file.clone(),
                status: stored.status,
                diagnostics: diagnostics(&stored),
            });
            continue;
        }
        let id = stored.body["id"]
            .as_str()
            .unwrap_or_else(|| {
                panic!(
                    "[{}] {}: no id in the stored resource: {}",
                    node.backend, example.file, stored.text
                )
            })
            .to_string();
        let read = node.get(&format!("{resource_type}/{id}")).await;
        assert_eq!(
            read.status, 200,
            "[{}] {}: reading {resource_type}/{id} back: {}",
            node.backend, example.file, read.text
        );
        let mut expected = comparable(&example.resource);
        if example.resource.get("id").is_none() {
            expected["id"] = Value::String(id.clone());
        }
        let actual = comparable(&read.body);
        if expected != actual {
            outcome.mismatches.push(format!(
                "{} ({resource_type}/{id}):\n      {}",
                example.file,
                differences(&expected, &actual, 10).join("\n      ")
            ));
        }
        outcome
            .accepted
            .push((example.file.clone(), resource_type.to_string(), id));
    }
    outcome
}

/// Prints the refusals and asserts the acceptance share, the refusal ceiling and that every
/// accepted example read back equal.
fn check(node: &Node, corpus: &str, outcome: &RoundTrip, max_refused: usize) {
    let b = node.backend;
    eprintln!(
        "[{b}] {corpus}: {} of {} accepted ({:.1}%), {} refused",
        outcome.accepted.len(),
        outcome.total,
        100.0 * outcome.accepted.len() as f64 / outcome.total as f64,
        outcome.refused.len()
    );
    for refusal in &outcome.refused {
        eprintln!(
            "[{b}] {corpus}: REFUSED {} -> {}: {}",
            refusal.file, refusal.status, refusal.diagnostics
        );
    }
    assert!(
        outcome.mismatches.is_empty(),
        "[{b}] {corpus}: {} accepted example(s) did not read back equal:\n  {}",
        outcome.mismatches.len(),
        outcome.mismatches.join("\n  ")
    );
    assert!(
        outcome.accepted.len() * 100 >= outcome.total * MIN_ACCEPTED_PERCENT,
        "[{b}] {corpus}: only {} of {} examples accepted (need {MIN_ACCEPTED_PERCENT}%)",
        outcome.accepted.len(),
        outcome.total
    );
    assert!(
        outcome.refused.len() <= max_refused,
        "[{b}] {corpus}: {} examples refused, at most {max_refused} may be (see the list above)",
        outcome.refused.len()
    );
}

#[tokio::test]
async fn official_r4_examples_round_trip() {
    let Some(dir) = corpus(OFFICIAL_EXAMPLES) else {
        return;
    };
    let examples = load_examples(&dir);
    for node in nodes().await {
        let outcome = round_trip(&node, &examples).await;
        check(
            &node,
            "official R4 examples",
            &outcome,
            MAX_REFUSED_OFFICIAL_EXAMPLES,
        );
    }
}

#[tokio::test]
async fn dutch_nlcore_examples_survive_store_read_search() {
    let Some(dir) = corpus(NLCORE_EXAMPLES) else {
        return;
    };
    let examples = load_examples(&dir);
    for node in nodes().await {
        let b = node.backend;
        let outcome = round_trip(&node, &examples).await;
        check(
            &node,
            "nl-core examples",
            &outcome,
            MAX_REFUSED_NLCORE_EXAMPLES,
        );

        let mut searched = 0;
        for example in examples
            .iter()
            .filter(|e| e.resource["resourceType"] == "Patient")
        {
            let Some((_, _, id)) = outcome
                .accepted
                .iter()
                .find(|(file, _, _)| *file == example.file)
            else {
                continue; // refused, and reported above
            };
            let bsns = example.resource["identifier"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|identifier| identifier["system"] == BSN)
                .filter_map(|identifier| identifier["value"].as_str());
            for bsn in bsns {
                let found = node
                    .search_ids(&format!("Patient?identifier={BSN}|{bsn}"))
                    .await;
                assert_eq!(
                    found,
                    std::slice::from_ref(id),
                    "[{b}] {}: searching its BSN {bsn}",
                    example.file
                );
                searched += 1;
            }
        }
        assert!(
            searched >= 2,
            "[{b}] the nl-core corpus has two Patients with a BSN, searched {searched}"
        );
    }
}
