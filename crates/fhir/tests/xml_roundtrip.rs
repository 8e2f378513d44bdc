//! FHIR XML against the official material: every R4 JSON example survives JSON → XML → JSON
//! exactly (numbers by their text), and the XML resources of the test corpus read, and
//! survive XML → JSON → XML → JSON; the Nictiz fixtures, kept in both forms, read from XML
//! to the JSON they were converted to.
//!
//! The test data lives outside the repository (`/work/shared/testdata`, or
//! `ZORGNET_TESTDATA`); when it is missing these tests say SKIPPED, unless
//! `ZORGNET_REQUIRE_TESTDATA=1`, which makes a missing folder a failure.

use serde_json::Value;
use std::path::{Path, PathBuf};
use zorgnet_fhir::xml::{json_to_xml, xml_to_json};

fn testdata() -> Option<PathBuf> {
    let root = std::env::var_os("ZORGNET_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/testdata"));
    if root.is_dir() {
        return Some(root);
    }
    if std::env::var("ZORGNET_REQUIRE_TESTDATA").as_deref() == Ok("1") {
        panic!(
            "ZORGNET_REQUIRE_TESTDATA=1 but {} is missing",
            root.display()
        );
    }
    eprintln!(
        "SKIPPED: the test data folder {} is missing (set ZORGNET_REQUIRE_TESTDATA=1 to fail)",
        root.display()
    );
    None
}

fn files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        if std::env::var("ZORGNET_REQUIRE_TESTDATA").as_deref() == Ok("1") {
            panic!("{} is missing", dir.display());
        }
        eprintln!("SKIPPED: {} is missing", dir.display());
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

/// The first difference between two JSON values, as a path, for failure messages.
fn difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (key, value) in x {
                match y.get(key) {
                    None => return Some(format!("{path}.{key}: missing after the round trip")),
                    Some(other) => {
                        if let Some(d) = difference(value, other, &format!("{path}.{key}")) {
                            return Some(d);
                        }
                    }
                }
            }
            y.keys()
                .find(|k| !x.contains_key(*k))
                .map(|k| format!("{path}.{k}: added by the round trip"))
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| difference(p, q, &format!("{path}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("{path}: {a} became {b}")),
    }
}

#[test]
fn every_official_r4_example_survives_json_to_xml_to_json_exactly() {
    let Some(root) = testdata() else { return };
    let examples = files(&root.join("fhir-r4/examples"), "json");
    let mut passed = 0;
    let mut failures = Vec::new();
    for path in &examples {
        let text = std::fs::read_to_string(path).unwrap();
        let original: Value = serde_json::from_str(&text).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let outcome = json_to_xml(&original)
            .map_err(|e| format!("json_to_xml: {e}"))
            .and_then(|xml| xml_to_json(&xml).map_err(|e| format!("xml_to_json: {e}")))
            .and_then(|back| match difference(&original, &back, "") {
                None if back == original => Ok(()),
                None => Err("values differ".to_string()),
                Some(d) => Err(d),
            });
        match outcome {
            Ok(()) => passed += 1,
            Err(reason) => failures.push(format!("{name}: {reason}")),
        }
    }
    eprintln!(
        "JSON → XML → JSON: {passed} of {} official R4 examples identical",
        examples.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    if !examples.is_empty() {
        assert_eq!(passed, 370, "every official example in the folder");
    }
}

/// XML files under `dir` that hold a FHIR resource (the patch-test collections do not).
fn fhir_xml_files(dir: &Path) -> Vec<PathBuf> {
    files(dir, "xml")
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(p).is_ok_and(|t| t.contains("xmlns=\"http://hl7.org/fhir\""))
        })
        .collect()
}

/// Test-case XML files whose JSON twin holds different content, with the reason.
const KNOWN_TWIN_DIFFERENCES: [(&str, &str); 1] = [(
    "examples/observation-example.xml",
    "the XML has a patient-age extension that its JSON twin lacks",
)];

#[test]
fn the_xml_resources_of_the_test_cases_read_and_round_trip() {
    let Some(root) = testdata() else { return };
    let mut paths = fhir_xml_files(&root.join("fhir-test-cases/r4"));
    paths.extend(fhir_xml_files(&root.join("fhir-test-cases/r4/examples")));
    let mut failures = Vec::new();
    for path in &paths {
        let name = path.display().to_string();
        let xml = std::fs::read_to_string(path).unwrap();
        let outcome = xml_to_json(&xml)
            .map_err(|e| format!("xml_to_json: {e}"))
            .and_then(|json| {
                let again = json_to_xml(&json).map_err(|e| format!("json_to_xml: {e}"))?;
                let back = xml_to_json(&again).map_err(|e| format!("xml_to_json again: {e}"))?;
                match difference(&json, &back, "") {
                    None if json == back => Ok(json),
                    None => Err("values differ".to_string()),
                    Some(d) => Err(d),
                }
            })
            .and_then(|json| {
                // Where the folder also has the JSON form (converted by other tooling), the
                // XML reads to it, compared as `normalise` says.
                let twin = path.with_extension("json");
                let Ok(text) = std::fs::read_to_string(&twin) else {
                    return Ok(());
                };
                if KNOWN_TWIN_DIFFERENCES
                    .iter()
                    .any(|(file, _)| path.ends_with(file))
                {
                    return Ok(());
                }
                let mut expected: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                normalise(&mut expected);
                let mut actual = json;
                normalise(&mut actual);
                match difference(&expected, &actual, "") {
                    None => Ok(()),
                    Some(d) => Err(format!("differs from {}: {d}", twin.display())),
                }
            });
        if let Err(reason) = outcome {
            failures.push(format!("{name}: {reason}"));
        }
    }
    eprintln!(
        "XML → JSON → XML → JSON: {} of {} test-case XML resources",
        paths.len() - failures.len(),
        paths.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The Nictiz fixtures, in XML and converted to JSON by other tooling: the XML reads to the
/// same JSON, compared as [`normalise`] says.
#[test]
fn the_nictiz_fixtures_read_from_xml_to_their_json_form() {
    let Some(root) = testdata() else { return };
    let folder = root.join("nictiz-mp9-3.0-testscripts-r4");
    let paths = fhir_xml_files(&folder.join("fixtures-xml"));
    let mut compared = 0;
    let mut failures = Vec::new();
    for path in &paths {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let xml = std::fs::read_to_string(path).unwrap();
        let json = match xml_to_json(&xml) {
            Ok(json) => json,
            Err(e) => {
                failures.push(format!("{name}: xml_to_json: {e}"));
                continue;
            }
        };
        match json_to_xml(&json).map(|again| xml_to_json(&again)) {
            Ok(Ok(back)) if back == json => {}
            Ok(Ok(back)) => failures.push(format!(
                "{name}: XML → JSON → XML → JSON changed: {:?}",
                difference(&json, &back, "")
            )),
            Ok(Err(e)) | Err(e) => failures.push(format!("{name}: round trip: {e}")),
        }
        let twin = folder
            .join("fixtures-json")
            .join(path.with_extension("json").file_name().unwrap());
        let Ok(text) = std::fs::read_to_string(&twin) else {
            continue;
        };
        let mut expected: Value = serde_json::from_str(&text).unwrap();
        normalise(&mut expected);
        let mut actual = json.clone();
        normalise(&mut actual);
        compared += 1;
        if let Some(d) = difference(&expected, &actual, "") {
            failures.push(format!("{name}: differs from its JSON form: {d}"));
        }
    }
    eprintln!(
        "Nictiz fixtures: {} XML files, {} failures; {compared} compared with their JSON form",
        paths.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What the other converters' JSON may write differently without changing the content, made
/// alike: XML comments kept as `fhir_comments` (a DSTU2 convention R4 dropped) are dropped;
/// line ends are `\n`; in a narrative, character references and `&apos;`/`&quot;` are read
/// as the characters they stand for and whitespace after the closing tag is dropped; a number
/// is compared by its value (`1.0e0` and `1.0`).
fn normalise(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.shift_remove("fhir_comments");
            for (key, item) in map.iter_mut() {
                if key == "div"
                    && let Value::String(div) = item
                {
                    *div = normalise_div(div);
                } else {
                    normalise(item);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        Value::String(text) if text.contains('\r') => {
            *text = text.replace("\r\n", "\n").replace('\r', "\n");
        }
        Value::Number(number) => {
            *value = Value::String(format!("{:?}", number.as_f64()));
        }
        _ => {}
    }
}

fn normalise_div(div: &str) -> String {
    let div = div.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = String::with_capacity(div.len());
    let mut rest = div.trim_end();
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let end = rest.find(';').unwrap_or(0);
        let name = &rest[1..end.max(1)];
        let decoded = match name {
            "apos" => Some('\''),
            "quot" => Some('"'),
            _ => name
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32)
                .filter(|c| !matches!(c, '<' | '&')),
        };
        match decoded {
            Some(c) if end > 0 => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            _ => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}
