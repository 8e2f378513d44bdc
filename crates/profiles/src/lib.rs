//! Profile validation for zorgnet: FHIR R4 resources checked against StructureDefinitions
//! loaded at run time, and against the invariants of the base R4 spec.
//!
//! What it is: a [`ProfileSet`] holding StructureDefinitions (constraint profiles on
//! resources and datatypes, extension definitions), ValueSets and CodeSystems, loaded from
//! JSON values or a folder (loose files, FHIR packages, Bundles); and
//! [`ProfileSet::validate`], which checks a resource against the profiles it declares in
//! `meta.profile` and any the caller names, against each profile's snapshot: element
//! cardinality (also inside repeating backbone elements and slices), `fixed[x]` (exact) and
//! `pattern[x]` (partial) values, slicing (discriminators of type `value`, `pattern`,
//! `exists`, `type`, and, when a discriminator cannot be read, membership by conformance to
//! the slice; slice cardinality; closed slicing), the types a profile narrows a choice
//! element to, profiles on datatypes, bindings (required → error, extensible → warning) to
//! value sets the set knows (loaded ones and the base R4 value sets of required bindings),
//! FHIRPath invariants (severity error → error, warning → warning), and every extension
//! whose definition is loaded. It also evaluates the base R4 invariants (`pat-1`, `dom-3`,
//! `ref-1`, …: embedded, see `data/r4-constraints.json`) on the resource and every datatype
//! and contained resource in it. [`ProfileSet::validate_full`] adds the base structural
//! validation of `zorgnet_fhir` in front.
//!
//! What it is not: a snapshot generator (a profile with only a differential is merged onto
//! its base profile's elements; if that base is not loaded and is not a base R4 type, the
//! profile is reported as unusable), a terminology server (filters, SNOMED CT hierarchies and
//! code systems the set does not hold leave codes undecided, and undecided codes pass), or a
//! reference resolver (`targetProfile` and `resolve()` in discriminators are not followed).
//! It does no IO except [`ProfileSet::load_dir`], never panics on input, and bounds its work
//! by the limits below.
#![deny(missing_docs)]

mod definition;
mod invariants;
mod validator;
mod valueset;

pub use definition::{Definition, ElementSource};

use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use zorgnet_fhir::{Issue, IssueCode, Severity};

/// Most elements one StructureDefinition may have, in elements (the largest nl-core
/// snapshots have a few thousand).
pub const MAX_ELEMENTS_PER_DEFINITION: usize = 20_000;
/// How many profiles deep a differential may derive from another differential, in levels.
pub const MAX_DERIVATION_DEPTH: usize = 16;
/// How deep value sets may include value sets and concepts nest, in levels.
pub const MAX_VALUE_SET_NESTING: usize = 16;
/// How deep into a resource profile checks follow, in elements.
pub const MAX_DEPTH: usize = zorgnet_fhir::validate::MAX_NESTING_DEPTH;
/// Validation stops collecting after this many issues.
pub const MAX_ISSUES: usize = 500;
/// Most FHIRPath invariant evaluations one validation runs, in evaluations.
pub const MAX_INVARIANT_EVALUATIONS: usize = 200_000;
/// Largest file [`ProfileSet::load_dir`] reads, in bytes.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Most files [`ProfileSet::load_dir`] reads, in files.
pub const MAX_FILES: usize = 50_000;
/// How deep [`ProfileSet::load_dir`] descends into folders, in levels.
pub const MAX_DIR_DEPTH: usize = 8;

/// Why something could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// A file or folder could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file is not JSON.
    #[error("{path} is not valid JSON: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A resource is not a usable StructureDefinition, ValueSet or CodeSystem.
    #[error("{0}")]
    Invalid(String),
    /// Something exceeds a limit.
    #[error("{0}")]
    TooLarge(String),
}

/// What a load added.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// StructureDefinitions added.
    pub structure_definitions: usize,
    /// ValueSets added.
    pub value_sets: usize,
    /// CodeSystems added.
    pub code_systems: usize,
    /// Resources of other types, and JSON files that are not resources, passed over.
    pub skipped: usize,
    /// Files that could not be read or parsed, with the reason.
    pub failed: Vec<String>,
}

impl LoadReport {
    fn add(&mut self, other: LoadReport) {
        self.structure_definitions += other.structure_definitions;
        self.value_sets += other.value_sets;
        self.code_systems += other.code_systems;
        self.skipped += other.skipped;
        self.failed.extend(other.failed);
    }
}

/// What [`ProfileSet::validate_with`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidationOptions {
    /// Evaluate the base R4 invariants.
    pub base_invariants: bool,
    /// Check the profiles the resource declares in `meta.profile` (and those of contained
    /// and bundled resources).
    pub declared_profiles: bool,
    /// Check extensions whose definitions are loaded, wherever they are.
    pub extensions: bool,
}

impl Default for ValidationOptions {
    fn default() -> Self {
        ValidationOptions {
            base_invariants: true,
            declared_profiles: true,
            extensions: true,
        }
    }
}

/// StructureDefinitions, ValueSets and CodeSystems to validate with.
///
/// Adding is cheap; the first validation after an addition compiles the set (snapshots
/// into element trees, differentials merged onto their bases, value sets expanded), once.
#[derive(Debug, Default)]
pub struct ProfileSet {
    structure_definitions: HashMap<String, Arc<Value>>,
    value_sets: HashMap<String, Arc<Value>>,
    code_systems: HashMap<String, Arc<Value>>,
    compiled: OnceLock<Compiled>,
}

/// The compiled form of a set.
#[derive(Debug, Default)]
pub(crate) struct Compiled {
    /// URL (and `url|version`) → definition, or why it cannot be used.
    pub definitions: HashMap<String, Result<Arc<Definition>, String>>,
    /// URL (and `url|version`) → expansion.
    pub expansions: HashMap<String, valueset::Expansion>,
}

impl Clone for ProfileSet {
    fn clone(&self) -> Self {
        ProfileSet {
            structure_definitions: self.structure_definitions.clone(),
            value_sets: self.value_sets.clone(),
            code_systems: self.code_systems.clone(),
            compiled: OnceLock::new(),
        }
    }
}

/// The canonical base of the R4 types.
const CORE_PREFIX: &str = "http://hl7.org/fhir/StructureDefinition/";

impl ProfileSet {
    /// An empty set: validation then checks the base invariants only.
    pub fn new() -> ProfileSet {
        ProfileSet::default()
    }

    /// A set holding the StructureDefinitions, ValueSets and CodeSystems of a folder and its
    /// subfolders (loose `*.json` files, unpacked FHIR packages, Bundles of them). Files
    /// that cannot be read or parsed are passed over; [`ProfileSet::add_dir`] lists them.
    pub fn load_dir(path: &Path) -> Result<ProfileSet, ProfileError> {
        let mut set = ProfileSet::new();
        set.add_dir(path)?;
        Ok(set)
    }

    /// Adds what a folder holds (see [`ProfileSet::load_dir`]).
    pub fn add_dir(&mut self, path: &Path) -> Result<LoadReport, ProfileError> {
        let mut report = LoadReport::default();
        let mut files = 0usize;
        self.add_dir_at(path, 0, &mut files, &mut report)?;
        Ok(report)
    }

    fn add_dir_at(
        &mut self,
        path: &Path,
        depth: usize,
        files: &mut usize,
        report: &mut LoadReport,
    ) -> Result<(), ProfileError> {
        let io = |source| ProfileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for entry in entries {
            if entry.is_dir() {
                if depth < MAX_DIR_DEPTH {
                    self.add_dir_at(&entry, depth + 1, files, report)?;
                }
                continue;
            }
            if entry.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            *files += 1;
            if *files > MAX_FILES {
                return Err(ProfileError::TooLarge(format!(
                    "{} holds more than MAX_FILES ({MAX_FILES}) JSON files",
                    path.display()
                )));
            }
            match read_json(&entry) {
                Ok(value) => match self.add(value) {
                    Ok(added) => report.add(added),
                    Err(e) => report.failed.push(format!("{}: {e}", entry.display())),
                },
                Err(e) => report.failed.push(e.to_string()),
            }
        }
        Ok(())
    }

    /// Adds a StructureDefinition, ValueSet or CodeSystem (a later one with the same URL and
    /// version replaces an earlier one), or each of those in a Bundle; other resources are
    /// counted as skipped.
    pub fn add(&mut self, resource: Value) -> Result<LoadReport, ProfileError> {
        let mut report = LoadReport::default();
        self.add_at(resource, &mut report, 0)?;
        Ok(report)
    }

    fn add_at(
        &mut self,
        resource: Value,
        report: &mut LoadReport,
        depth: usize,
    ) -> Result<(), ProfileError> {
        let resource_type = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .map(String::from);
        let url = resource
            .get("url")
            .and_then(Value::as_str)
            .map(String::from);
        match resource_type.as_deref() {
            Some("Bundle") if depth == 0 => {
                let entries = match resource {
                    Value::Object(mut bundle) => bundle.remove("entry"),
                    _ => None,
                };
                if let Some(Value::Array(entries)) = entries {
                    for entry in entries {
                        if let Value::Object(mut entry) = entry
                            && let Some(inner) = entry.remove("resource")
                        {
                            // One bad entry does not spoil the others.
                            if let Err(e) = self.add_at(inner, report, depth + 1) {
                                report.failed.push(e.to_string());
                            }
                        }
                    }
                }
            }
            Some(kind @ ("StructureDefinition" | "ValueSet" | "CodeSystem")) => {
                let Some(url) = url else {
                    return Err(ProfileError::Invalid(format!("a {kind} without url")));
                };
                let version = resource
                    .get("version")
                    .and_then(Value::as_str)
                    .map(String::from);
                let resource = Arc::new(resource);
                let map = match kind {
                    "StructureDefinition" => {
                        report.structure_definitions += 1;
                        &mut self.structure_definitions
                    }
                    "ValueSet" => {
                        report.value_sets += 1;
                        &mut self.value_sets
                    }
                    _ => {
                        report.code_systems += 1;
                        &mut self.code_systems
                    }
                };
                if let Some(version) = version {
                    map.insert(format!("{url}|{version}"), resource.clone());
                }
                map.insert(url, resource);
                self.compiled = OnceLock::new();
            }
            _ => report.skipped += 1,
        }
        Ok(())
    }

    /// True when nothing is loaded.
    pub fn is_empty(&self) -> bool {
        self.structure_definitions.is_empty()
            && self.value_sets.is_empty()
            && self.code_systems.is_empty()
    }

    /// The URLs of the StructureDefinitions held.
    pub fn profile_urls(&self) -> Vec<&str> {
        let mut urls: Vec<&str> = self
            .structure_definitions
            .keys()
            .filter(|k| !k.contains('|'))
            .map(String::as_str)
            .collect();
        urls.sort_unstable();
        urls
    }

    /// The compiled definition of a profile URL (`url` or `url|version`), or why it cannot be
    /// used; `None` when the set does not hold it.
    pub fn definition(&self, url: &str) -> Option<Result<Arc<Definition>, String>> {
        let compiled = self.compiled();
        compiled
            .definitions
            .get(url)
            .or_else(|| {
                url.split_once('|')
                    .and_then(|(u, _)| compiled.definitions.get(u))
            })
            .cloned()
    }

    /// Whether the set, or the base R4 spec, knows the value set `url`.
    pub fn knows_value_set(&self, url: &str) -> bool {
        self.expansion(url).is_some()
    }

    pub(crate) fn compiled(&self) -> &Compiled {
        self.compiled.get_or_init(|| self.compile())
    }

    pub(crate) fn expansion(&self, url: &str) -> Option<&valueset::Expansion> {
        let compiled = self.compiled();
        let plain = url.split_once('|').map_or(url, |(u, _)| u);
        compiled
            .expansions
            .get(url)
            .or_else(|| compiled.expansions.get(plain))
            .or_else(|| model_value_sets().get(plain))
    }

    fn compile(&self) -> Compiled {
        let mut compiled = Compiled::default();
        // Value sets.
        let code_system = |url: &str| -> Option<HashSet<String>> {
            self.code_systems
                .get(url)
                .and_then(|cs| valueset::code_system_codes(cs))
        };
        let value_set = |url: &str| -> Option<Value> {
            let plain = url.split_once('|').map_or(url, |(u, _)| u);
            self.value_sets
                .get(url)
                .or_else(|| self.value_sets.get(plain))
                .map(|v| (**v).clone())
        };
        for (key, vs) in &self.value_sets {
            compiled.expansions.insert(
                key.clone(),
                valueset::expand(vs, &value_set, &code_system, 0),
            );
        }
        // StructureDefinitions, bases before what derives from them.
        let keys: Vec<String> = self.structure_definitions.keys().cloned().collect();
        for key in keys {
            let mut visiting = Vec::new();
            self.compile_definition(&key, &mut compiled.definitions, &mut visiting);
        }
        compiled
    }

    fn compile_definition(
        &self,
        key: &str,
        memo: &mut HashMap<String, Result<Arc<Definition>, String>>,
        visiting: &mut Vec<String>,
    ) -> Option<Result<Arc<Definition>, String>> {
        if let Some(done) = memo.get(key) {
            return Some(done.clone());
        }
        let sd = self.structure_definitions.get(key)?;
        if visiting.iter().any(|v| v == key) || visiting.len() > MAX_DERIVATION_DEPTH {
            return Some(Err(format!(
                "the profile {key} derives from itself, or more than MAX_DERIVATION_DEPTH \
                 ({MAX_DERIVATION_DEPTH}) levels deep"
            )));
        }
        visiting.push(key.to_string());
        let result = self.build_definition(sd, memo, visiting);
        visiting.pop();
        memo.insert(key.to_string(), result.clone());
        Some(result)
    }

    fn build_definition(
        &self,
        sd: &Value,
        memo: &mut HashMap<String, Result<Arc<Definition>, String>>,
        visiting: &mut Vec<String>,
    ) -> Result<Arc<Definition>, String> {
        let Some(object) = sd.as_object() else {
            return Err("a StructureDefinition must be an object".into());
        };
        let url = object.get("url").and_then(Value::as_str).unwrap_or("?");
        let elements = |part: &str| -> Vec<serde_json::Map<String, Value>> {
            object
                .get(part)
                .and_then(|p| p.get("element"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|e| e.as_object().cloned())
                .collect()
        };
        let snapshot = elements("snapshot");
        if !snapshot.is_empty() {
            return Definition::compile(object, snapshot, ElementSource::Snapshot)
                .map(Arc::new)
                .map_err(|e| e.to_string());
        }
        let Some(differential) = object
            .get("differential")
            .and_then(|d| d.get("element"))
            .and_then(Value::as_array)
        else {
            return Err(format!(
                "the profile {url} has neither a snapshot nor a differential"
            ));
        };
        let base_url = object
            .get("baseDefinition")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let base_elements = match self.compile_definition(base_url, memo, visiting) {
            Some(Ok(base)) => base.raw_elements(),
            Some(Err(why)) => {
                return Err(format!(
                    "the profile {url} has no snapshot, and its base {base_url} cannot be used: \
                     {why}"
                ));
            }
            None if base_url
                .strip_prefix(CORE_PREFIX)
                .is_some_and(|t| zorgnet_fhir::model::r4().types.contains_key(t)) =>
            {
                // The base structure is the base validator's business: the differential alone
                // says what the profile adds.
                Vec::new()
            }
            None => {
                return Err(format!(
                    "the profile {url} has no snapshot, and its base {base_url} is not loaded: \
                     load the base profile or a snapshot"
                ));
            }
        };
        let merged = definition::merge_differential(base_elements, differential);
        Definition::compile(object, merged, ElementSource::Differential)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }

    /// Validates a resource against the profiles it declares in `meta.profile` and the
    /// `profiles` named here, and evaluates the base R4 invariants. It does not repeat the
    /// base structural checks of `zorgnet_fhir::validate_resource` (see
    /// [`ProfileSet::validate_full`]). A named profile the set does not hold is an error; a
    /// declared one a warning.
    pub fn validate(&self, resource: &Value, profiles: &[&str]) -> Vec<Issue> {
        self.validate_with(resource, profiles, &ValidationOptions::default())
    }

    /// [`ProfileSet::validate`] with options.
    pub fn validate_with(
        &self,
        resource: &Value,
        profiles: &[&str],
        options: &ValidationOptions,
    ) -> Vec<Issue> {
        validator::validate(self, resource, profiles, options)
    }

    /// The base structural validation of `zorgnet_fhir`, then [`ProfileSet::validate`]
    /// (when the structure is sound enough to walk: profile checks run on a resource with
    /// structural errors too, but an issue the base validation already made at the same
    /// place is not repeated).
    pub fn validate_full(&self, resource: &Value, profiles: &[&str]) -> Vec<Issue> {
        let mut issues = zorgnet_fhir::validate_resource(resource);
        if resource
            .get("resourceType")
            .and_then(Value::as_str)
            .is_none()
        {
            return issues;
        }
        let more = self.validate(resource, profiles);
        let base_places: Vec<(IssueCode, String)> = issues
            .iter()
            .filter(|i| i.severity == Severity::Error)
            .map(|i| (i.code, i.expression.clone().unwrap_or_default()))
            .collect();
        for issue in more {
            let place = issue.expression.clone().unwrap_or_default();
            let repeated = base_places.iter().any(|(code, expression)| {
                *code == issue.code
                    && matches!(code, IssueCode::CodeInvalid | IssueCode::Required)
                    && (expression == &place || expression.starts_with(&format!("{place}.")))
            });
            if !repeated && issues.len() < MAX_ISSUES {
                issues.push(issue);
            }
        }
        issues
    }
}

/// The base R4 value sets of the model, by URL.
fn model_value_sets() -> &'static HashMap<String, valueset::Expansion> {
    static SETS: OnceLock<HashMap<String, valueset::Expansion>> = OnceLock::new();
    SETS.get_or_init(|| {
        zorgnet_fhir::model::r4()
            .value_sets
            .iter()
            .map(|vs| (vs.url.clone(), valueset::from_model(vs)))
            .collect()
    })
}

fn read_json(path: &Path) -> Result<Value, ProfileError> {
    let io = |source| ProfileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_FILE_BYTES {
        return Err(ProfileError::TooLarge(format!(
            "{} is {size} bytes, more than MAX_FILE_BYTES ({MAX_FILE_BYTES})",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    serde_json::from_slice(&bytes).map_err(|e| ProfileError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Whether an issue list holds an error (or worse).
pub fn has_errors(issues: &[Issue]) -> bool {
    issues.iter().any(|i| i.severity == Severity::Error)
}
