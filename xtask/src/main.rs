//! Project scripts, run with `cargo xtask <command>`.
//!
//! `codegen` reads the official FHIR R4 definitions in `../shared/testdata/fhir-r4/definitions/`
//! and writes the compact model that `zorgnet-fhir` embeds: element definitions per type,
//! the search parameters and the Patient compartment.
//! `codegen --check` fails when the committed model is out of date.
//! This is not a FHIR tool in its own right: it keeps only what the server uses.

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where the generated model lives, relative to the workspace root.
const MODEL_PATH: &str = "crates/fhir/src/generated/r4-model.json";
/// The official definitions, relative to the workspace root.
const DEFINITIONS_DIR: &str = "../shared/testdata/fhir-r4/definitions";
/// Extension that names the FHIR type behind a FHIRPath system type.
const FHIR_TYPE_EXTENSION: &str =
    "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type";
/// Extension that carries the regular expression of a primitive's value.
const REGEX_EXTENSION: &str = "http://hl7.org/fhir/StructureDefinition/regex";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("codegen") => codegen(args.iter().any(|a| a == "--check")),
        _ => bail!("usage: cargo xtask codegen [--check]"),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

fn codegen(check: bool) -> Result<()> {
    let root = workspace_root();
    let definitions = root.join(DEFINITIONS_DIR);
    let model = build_model(&definitions)?;
    let text = serde_json::to_string(&model)? + "\n";
    let target = root.join(MODEL_PATH);
    if check {
        let current = std::fs::read_to_string(&target).unwrap_or_default();
        if current != text {
            bail!("{MODEL_PATH} is out of date: run `cargo xtask codegen`");
        }
        println!("{MODEL_PATH} is up to date");
        return Ok(());
    }
    std::fs::create_dir_all(target.parent().expect("model path has a parent"))?;
    std::fs::write(&target, text).with_context(|| format!("write {}", target.display()))?;
    println!("wrote {MODEL_PATH}");
    Ok(())
}

fn build_model(definitions: &Path) -> Result<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(definitions)
        .with_context(|| format!("list {}", definitions.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();

    let mut value_set_systems = HashMap::new();
    for file in files.iter().filter(|f| file_name_starts(f, "ValueSet-")) {
        let value_set = read_json(file)?;
        if let (Some(url), Some(system)) = (value_set["url"].as_str(), single_system(&value_set)) {
            value_set_systems.insert(url.to_string(), system);
        }
    }

    let mut types = Map::new();
    for file in files
        .iter()
        .filter(|f| file_name_starts(f, "StructureDefinition-"))
    {
        let sd = read_json(file)?;
        let name = sd["id"]
            .as_str()
            .context("StructureDefinition.id")?
            .to_string();
        types.insert(name, structure_definition(&sd, &value_set_systems)?);
    }

    let bundle = read_json(&definitions.join("Bundle-searchParams.json"))?;
    let mut search_params = Vec::new();
    for entry in bundle["entry"].as_array().context("Bundle.entry")? {
        search_params.push(search_parameter(&entry["resource"]));
    }

    let compartment = read_json(&definitions.join("CompartmentDefinition-patient.json"))?;
    let mut patient_compartment = Map::new();
    for resource in compartment["resource"].as_array().context("resource")? {
        if let (Some(code), Some(params)) = (resource["code"].as_str(), resource.get("param")) {
            patient_compartment.insert(code.to_string(), params.clone());
        }
    }

    Ok(json!({
        "fhirVersion": "4.0.1",
        "types": types,
        "searchParameters": search_params,
        "patientCompartment": patient_compartment,
    }))
}

fn file_name_starts(path: &Path, prefix: &str) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(prefix))
}

/// The one code system a value set takes all its codes from, if it has one (no imported
/// value sets, every include naming the same system).
fn single_system(value_set: &Value) -> Option<String> {
    let includes = value_set["compose"]["include"].as_array()?;
    let mut systems = includes.iter().map(|i| {
        if i.get("valueSet").is_some() {
            None
        } else {
            i["system"].as_str()
        }
    });
    let first = systems.next()??;
    systems.all(|s| s == Some(first)).then(|| first.to_string())
}

/// One type: its kind, and for complex types and resources every element below the root.
/// An element of type `code` with a required binding to a value set of one code system
/// carries that system as `codeSystem`: the system its codes implicitly have, which token
/// search accepts in `system|code`.
fn structure_definition(sd: &Value, value_set_systems: &HashMap<String, String>) -> Result<Value> {
    let kind = sd["kind"].as_str().context("kind")?;
    let mut out = Map::new();
    out.insert("kind".into(), json!(kind));
    if sd["abstract"].as_bool() == Some(true) {
        out.insert("abstract".into(), json!(true));
    }
    if let Some(base) = sd["baseDefinition"].as_str() {
        out.insert(
            "base".into(),
            json!(base.rsplit('/').next().unwrap_or(base)),
        );
    }
    let elements = sd["snapshot"]["element"]
        .as_array()
        .context("snapshot.element")?;
    if kind == "primitive-type" {
        let value = elements
            .iter()
            .find(|e| e["path"].as_str().is_some_and(|p| p.ends_with(".value")));
        if let Some(regex) = value.and_then(|v| type_extension(&v["type"][0], REGEX_EXTENSION)) {
            out.insert("regex".into(), json!(regex));
        }
        return Ok(Value::Object(out));
    }
    let mut list = Vec::new();
    for element in elements.iter().skip(1) {
        let path = element["path"].as_str().context("element.path")?;
        let mut e = Map::new();
        e.insert("path".into(), json!(path));
        e.insert("min".into(), element["min"].clone());
        e.insert("max".into(), element["max"].clone());
        if element["isSummary"].as_bool() == Some(true) {
            e.insert("summary".into(), json!(true));
        }
        if let Some(reference) = element["contentReference"].as_str() {
            e.insert(
                "contentReference".into(),
                json!(reference.trim_start_matches('#')),
            );
        } else {
            let codes: Vec<String> = element["type"]
                .as_array()
                .map(|ts| ts.iter().filter_map(element_type_code).collect())
                .unwrap_or_default();
            if codes == ["code"] && element["binding"]["strength"].as_str() == Some("required") {
                let value_set = element["binding"]["valueSet"].as_str().unwrap_or("");
                let value_set = value_set.split('|').next().unwrap_or(value_set);
                if let Some(system) = value_set_systems.get(value_set) {
                    e.insert("codeSystem".into(), json!(system));
                }
            }
            e.insert("types".into(), json!(codes));
            let targets: Vec<String> = element["type"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|t| t["targetProfile"].as_array().into_iter().flatten())
                .filter_map(|p| p.as_str())
                .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
                .collect();
            if !targets.is_empty() {
                e.insert("targets".into(), json!(targets));
            }
        }
        list.push(Value::Object(e));
    }
    out.insert("elements".into(), Value::Array(list));
    Ok(Value::Object(out))
}

/// The FHIR type code of an element type; FHIRPath system types carry theirs in an extension.
fn element_type_code(t: &Value) -> Option<String> {
    let code = t["code"].as_str()?;
    if code.starts_with("http://hl7.org/fhirpath/") {
        return type_extension(t, FHIR_TYPE_EXTENSION)
            .map(String::from)
            .or_else(|| Some("string".to_string()));
    }
    Some(code.to_string())
}

fn type_extension<'a>(t: &'a Value, url: &str) -> Option<&'a str> {
    t["extension"].as_array()?.iter().find_map(|ext| {
        (ext["url"].as_str() == Some(url))
            .then(|| ext["valueUrl"].as_str().or(ext["valueString"].as_str()))
            .flatten()
    })
}

/// A search parameter, keeping only what search needs.
fn search_parameter(sp: &Value) -> Value {
    let mut out = Map::new();
    for key in [
        "url",
        "code",
        "base",
        "type",
        "expression",
        "target",
        "multipleOr",
        "multipleAnd",
        "comparator",
        "modifier",
        "chain",
    ] {
        if let Some(v) = sp.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(components) = sp["component"].as_array() {
        let list: Vec<Value> = components
            .iter()
            .map(|c| json!({"definition": c["definition"], "expression": c["expression"]}))
            .collect();
        out.insert("component".into(), Value::Array(list));
    }
    Value::Object(out)
}
