//! Project scripts, run with `cargo xtask <command>`.
//!
//! `codegen` reads the official FHIR R4 definitions in `../shared/testdata/fhir-r4/definitions/`
//! and writes the compact model that `zorgnet-fhir` embeds: element definitions per type,
//! the search parameters, the Patient compartment, and the codes of every value set that an
//! element binds as required (expanded from the ValueSets and CodeSystems of the definitions;
//! bindings whose codes cannot be listed from them are reported and left out).
//! `codegen --check` fails when the committed model is out of date.
//! This is not a FHIR tool in its own right: it keeps only what the server uses.

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
/// Element types whose required bindings the validator checks.
const BOUND_TYPES: [&str; 3] = ["code", "Coding", "CodeableConcept"];

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

    let mut terminology = Terminology::default();
    for file in files.iter().filter(|f| file_name_starts(f, "ValueSet-")) {
        let value_set = read_json(file)?;
        if let Some(url) = value_set["url"].as_str() {
            terminology.value_sets.insert(url.to_string(), value_set);
        }
    }
    for file in files.iter().filter(|f| file_name_starts(f, "CodeSystem-")) {
        let code_system = read_json(file)?;
        if let Some(url) = code_system["url"].as_str() {
            terminology
                .code_systems
                .insert(url.to_string(), code_system);
        }
    }

    let mut bindings = Bindings::default();
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
        types.insert(
            name,
            structure_definition(&sd, &terminology, &mut bindings)?,
        );
    }
    bindings.report();

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
        "valueSets": bindings.value_sets,
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
/// search accepts in `system|code`. An element of type `code`, `Coding` or `CodeableConcept`
/// with a required binding to a value set that can be expanded carries `valueSet`, the index
/// of the expansion in the model's `valueSets`.
fn structure_definition(
    sd: &Value,
    terminology: &Terminology,
    bindings: &mut Bindings,
) -> Result<Value> {
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
            let required = element["binding"]["strength"].as_str() == Some("required");
            let value_set = element["binding"]["valueSet"].as_str().unwrap_or("");
            let value_set = value_set.split('|').next().unwrap_or(value_set);
            if required && codes == ["code"] {
                let system = terminology
                    .value_sets
                    .get(value_set)
                    .and_then(single_system);
                if let Some(system) = system {
                    e.insert("codeSystem".into(), json!(system));
                }
            }
            let bound_type = matches!(codes.as_slice(), [c] if BOUND_TYPES.contains(&c.as_str()));
            if required
                && bound_type
                && let Some(index) = bindings.bind(path, value_set, terminology)
            {
                e.insert("valueSet".into(), json!(index));
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

/// The ValueSets and CodeSystems of the definitions, by canonical URL.
#[derive(Default)]
struct Terminology {
    value_sets: HashMap<String, Value>,
    code_systems: HashMap<String, Value>,
}

/// A value set's codes: code system → codes.
type Expansion = BTreeMap<String, BTreeSet<String>>;

impl Terminology {
    /// Every code of the value set at `url`, or why it cannot be listed from the definitions
    /// alone. `stack` holds the value sets being expanded, to stop a value set including itself.
    fn expand(&self, url: &str, stack: &mut Vec<String>) -> Result<Expansion, String> {
        if stack.iter().any(|u| u == url) {
            return Err(format!("value set {url} includes itself"));
        }
        let value_set = self
            .value_sets
            .get(url)
            .ok_or_else(|| format!("value set {url} is not in the definitions"))?;
        let compose = value_set
            .get("compose")
            .ok_or_else(|| format!("value set {url} has no compose"))?;
        stack.push(url.to_string());
        let expansion = self.compose(compose, stack);
        stack.pop();
        let expansion = expansion?;
        if expansion.values().all(BTreeSet::is_empty) {
            return Err(format!("value set {url} has no codes"));
        }
        Ok(expansion)
    }

    /// The includes, less the excludes.
    fn compose(&self, compose: &Value, stack: &mut Vec<String>) -> Result<Expansion, String> {
        let mut codes = Expansion::new();
        for include in compose["include"].as_array().into_iter().flatten() {
            for (system, more) in self.part(include, stack)? {
                codes.entry(system).or_default().extend(more);
            }
        }
        for exclude in compose["exclude"].as_array().into_iter().flatten() {
            for (system, less) in self.part(exclude, stack)? {
                if let Some(kept) = codes.get_mut(&system) {
                    kept.retain(|code| !less.contains(code));
                }
            }
        }
        codes.retain(|_, kept| !kept.is_empty());
        Ok(codes)
    }

    /// One `include` or `exclude`: the codes of its system (all of them, or the listed
    /// concepts) that are also in each of its value sets.
    fn part(&self, part: &Value, stack: &mut Vec<String>) -> Result<Expansion, String> {
        let system = part["system"].as_str();
        if part.get("filter").is_some() {
            return Err(format!("a filter on {}", system.unwrap_or("(no system)")));
        }
        let mut sets = Vec::new();
        if let Some(system) = system {
            let codes = match part["concept"].as_array() {
                Some(concepts) => concepts
                    .iter()
                    .filter_map(|c| c["code"].as_str().map(String::from))
                    .collect(),
                None => self.all_codes(system)?,
            };
            sets.push(Expansion::from([(system.to_string(), codes)]));
        }
        for nested in part["valueSet"].as_array().into_iter().flatten() {
            let url = nested.as_str().unwrap_or_default();
            sets.push(self.expand(url.split('|').next().unwrap_or(url), stack)?);
        }
        let mut sets = sets.into_iter();
        let first = sets
            .next()
            .ok_or("an include names neither a system nor a value set")?;
        Ok(sets.fold(first, |kept, other| {
            kept.into_iter()
                .filter_map(|(system, codes)| {
                    let also = other.get(&system)?;
                    Some((system, codes.intersection(also).cloned().collect()))
                })
                .collect()
        }))
    }

    /// Every concept of a code system the definitions hold completely, nested ones included.
    fn all_codes(&self, system: &str) -> Result<BTreeSet<String>, String> {
        let code_system = self
            .code_systems
            .get(system)
            .ok_or_else(|| format!("code system {system} is not in the definitions"))?;
        if code_system["content"].as_str() != Some("complete") {
            return Err(format!(
                "code system {system} is not complete in the definitions ({})",
                code_system["content"]
            ));
        }
        fn collect(concepts: &Value, out: &mut BTreeSet<String>) {
            for concept in concepts.as_array().into_iter().flatten() {
                if let Some(code) = concept["code"].as_str() {
                    out.insert(code.to_string());
                }
                collect(&concept["concept"], out);
            }
        }
        let mut codes = BTreeSet::new();
        collect(&code_system["concept"], &mut codes);
        Ok(codes)
    }
}

/// The required bindings met so far: the expanded value sets (each stored once, elements
/// refer to them by index) and what could not be checked.
#[derive(Default)]
struct Bindings {
    /// `{"url", "codes": {system: [code]}}` in the order first bound.
    value_sets: Vec<Value>,
    /// Value set URL → its index in `value_sets`, or why it cannot be expanded.
    expanded: HashMap<String, Result<usize, String>>,
    checked: usize,
    /// `(element path, reason)` of every binding left unchecked.
    skipped: Vec<(String, String)>,
}

impl Bindings {
    /// The index of the expansion of `url` for the element at `path`, or `None` (noted) when
    /// the definitions cannot list its codes.
    fn bind(&mut self, path: &str, url: &str, terminology: &Terminology) -> Option<usize> {
        if !self.expanded.contains_key(url) {
            let expansion = terminology.expand(url, &mut Vec::new()).map(|codes| {
                self.value_sets.push(json!({"url": url, "codes": codes}));
                self.value_sets.len() - 1
            });
            self.expanded.insert(url.to_string(), expansion);
        }
        match &self.expanded[url] {
            Ok(index) => {
                self.checked += 1;
                Some(*index)
            }
            Err(reason) => {
                self.skipped.push((path.to_string(), reason.clone()));
                None
            }
        }
    }

    /// Says how many required bindings the model checks and which it leaves unchecked.
    fn report(&self) {
        println!(
            "required bindings: {} checked ({} value sets), {} not checked:",
            self.checked,
            self.value_sets.len(),
            self.skipped.len()
        );
        for (path, reason) in &self.skipped {
            println!("  {path}: {reason}");
        }
    }
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
