//! The R4 type model, compiled once from the generated definitions into lookup tables.
//!
//! A *context* is a place in a JSON document where a known set of keys may appear: the root of a
//! resource, a complex datatype, or a backbone element inside a resource. Each context maps the
//! JSON keys it accepts (choice elements expanded, `value[x]` → `valueString`, …) to a rule.
//! This module knows nothing about search or storage.

use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

/// The generated model, produced by `cargo xtask codegen` from the official R4 definitions.
const GENERATED_MODEL_JSON: &str = include_str!("generated/r4-model.json");

/// Index of a context in [`Model::contexts`].
pub type ContextId = usize;

/// What may stand under one JSON key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElementKind {
    /// A primitive of the named FHIR type (`string`, `date`, …).
    Primitive(String),
    /// A complex type or backbone element whose keys are described by a context.
    Complex(ContextId),
    /// A whole resource (`contained`, `Bundle.entry.resource`): dispatched on `resourceType`.
    Resource,
}

/// The rule for one JSON key in a context.
#[derive(Debug, Clone)]
pub struct ElementRule {
    /// Element name as in the definitions (`value[x]` for choices).
    pub name: String,
    /// Minimum cardinality.
    pub min: u32,
    /// True when the element repeats (max `*` or > 1): JSON must then hold an array.
    pub repeats: bool,
    /// What the value is.
    pub kind: ElementKind,
    /// The FHIR type name of the value (`HumanName`, `BackboneElement`, `date`, …).
    pub type_name: String,
    /// Position of the element among its siblings in the definitions: the order XML requires
    /// (all keys of one choice element share it).
    pub order: usize,
    /// For references: allowed target resource types (empty: any).
    pub targets: Vec<String>,
    /// Part of the summary view (`_summary=true`).
    pub summary: bool,
    /// For a `code` bound (required) to a value set of one code system: that system, which
    /// the element's codes implicitly have.
    pub code_system: Option<String>,
    /// For a `code`, `Coding` or `CodeableConcept` bound (required) to a value set whose codes
    /// the definitions list: that value set, in [`Model::value_sets`].
    pub value_set: Option<ValueSetId>,
}

/// Index of a value set in [`Model::value_sets`].
pub type ValueSetId = usize;

/// The codes of a value set, expanded from the definitions.
#[derive(Debug, Deserialize)]
pub struct ValueSet {
    /// Canonical URL.
    pub url: String,
    /// Code system → the codes of that system in the value set.
    pub codes: HashMap<String, HashSet<String>>,
}

impl ValueSet {
    /// Whether `code` is in the value set, from any of its systems (how a `code` element,
    /// which carries no system, is bound).
    pub fn contains(&self, code: &str) -> bool {
        self.codes.values().any(|codes| codes.contains(code))
    }

    /// Whether `code` of `system` is in the value set; `None` when the value set takes no codes
    /// from `system` at all.
    pub fn contains_in(&self, system: &str, code: &str) -> Option<bool> {
        self.codes.get(system).map(|codes| codes.contains(code))
    }
}

/// The keys one place in a document accepts.
#[derive(Debug, Default)]
pub struct Context {
    /// Human-readable path (`Patient`, `Patient.contact`, `HumanName`).
    pub path: String,
    /// JSON key → rule.
    pub keys: HashMap<String, ElementRule>,
    /// Required elements: name and the JSON keys any one of which satisfies it.
    pub required: Vec<(String, Vec<String>)>,
}

/// One type from the definitions.
#[derive(Debug)]
pub struct TypeInfo {
    /// `primitive-type`, `complex-type` or `resource`.
    pub kind: String,
    /// Abstract types (`Resource`, `DomainResource`, `Element`…) cannot be instantiated.
    pub is_abstract: bool,
    /// The context of its root, for complex types and resources.
    pub context: Option<ContextId>,
    /// For primitives: the anchored regular expression of the value.
    pub regex: Option<regex::Regex>,
}

/// A search parameter exactly as the definitions give it (compiled later by `search`).
#[derive(Debug, Clone, Deserialize)]
pub struct SearchParameterDefinition {
    /// Canonical URL.
    pub url: String,
    /// The name used in queries.
    pub code: String,
    /// Resource types it applies to.
    pub base: Vec<String>,
    /// token, string, date, reference, …
    #[serde(rename = "type")]
    pub param_type: String,
    /// FHIRPath expression (absent for a few special parameters).
    #[serde(default)]
    pub expression: Option<String>,
    /// Allowed reference targets.
    #[serde(default)]
    pub target: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawModel {
    types: HashMap<String, RawType>,
    search_parameters: Vec<SearchParameterDefinition>,
    patient_compartment: HashMap<String, Vec<String>>,
    value_sets: Vec<ValueSet>,
}

#[derive(Deserialize)]
struct RawType {
    kind: String,
    #[serde(default, rename = "abstract")]
    is_abstract: bool,
    #[serde(default)]
    regex: Option<String>,
    #[serde(default)]
    elements: Vec<RawElement>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawElement {
    path: String,
    min: u32,
    max: String,
    #[serde(default)]
    types: Vec<String>,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    content_reference: Option<String>,
    #[serde(default)]
    summary: bool,
    #[serde(default)]
    code_system: Option<String>,
    #[serde(default)]
    value_set: Option<ValueSetId>,
}

/// The compiled R4 model.
#[derive(Debug)]
pub struct Model {
    /// Type name → information.
    pub types: HashMap<String, TypeInfo>,
    /// All contexts; [`TypeInfo::context`] and [`ElementKind::Complex`] index into it.
    pub contexts: Vec<Context>,
    /// The official search parameters.
    pub search_parameters: Vec<SearchParameterDefinition>,
    /// Resource type → the reference parameters that put it in a Patient's compartment.
    pub patient_compartment: HashMap<String, Vec<String>>,
    /// The value sets of the required bindings the validator checks, each stored once.
    ///
    /// `cargo xtask codegen` expands them from the ValueSets and CodeSystems of the
    /// definitions (all concepts of a complete code system, nested ones included, or the
    /// listed concepts; value sets within value sets; excludes). Of the 366 required bindings
    /// on `code`, `Coding` and `CodeableConcept` elements in R4, 349 are checked (220 value
    /// sets) and 17 are not, because the definitions cannot list their codes:
    /// 12 bind MIME types (`urn:ietf:bcp:13`: `Attachment.contentType`, `Binary.contentType`,
    /// `CapabilityStatement.format` and `.patchFormat`, `ElementDefinition.mapping.language`,
    /// `Endpoint.payloadMimeType`, `Signature.targetFormat` and `.sigFormat`,
    /// `Subscription.channel.payload`, and three in `TestScript.setup.action`), 3 bind UCUM
    /// units (`…EvidenceSynthesis…unitOfMeasure` twice,
    /// `ResearchElementDefinition.characteristic.unitOfMeasure`), 1 binds ISO 4217 currencies
    /// (`Money.currency`), and 1 binds a LOINC answer list that is not in the definitions
    /// (`MolecularSequence.structureVariant.variantType`). A value set with a `filter` would
    /// be skipped too; no required binding in R4 has one.
    pub value_sets: Vec<ValueSet>,
}

/// The process-wide R4 model, built on first use (a few tens of milliseconds).
pub fn r4() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let raw: RawModel =
            serde_json::from_str(GENERATED_MODEL_JSON).expect("the generated model is valid JSON");
        Model::compile(raw)
    })
}

impl Model {
    /// True for a concrete (non-abstract) resource type name.
    pub fn is_resource_type(&self, name: &str) -> bool {
        self.types
            .get(name)
            .is_some_and(|t| t.kind == "resource" && !t.is_abstract)
    }

    /// All concrete resource type names, sorted.
    pub fn resource_types(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .types
            .iter()
            .filter(|(_, t)| t.kind == "resource" && !t.is_abstract)
            .map(|(n, _)| n.as_str())
            .collect();
        names.sort_unstable();
        names
    }

    /// The root context of a complex type or resource.
    pub fn type_context(&self, name: &str) -> Option<&Context> {
        self.types
            .get(name)
            .and_then(|t| t.context)
            .map(|id| &self.contexts[id])
    }

    fn compile(raw: RawModel) -> Model {
        // Phase 1: give every place with children a context id, so that contexts can refer to
        // each other (and to themselves, through contentReference) before they are filled.
        let mut context_ids: HashMap<(String, String), ContextId> = HashMap::new();
        let mut children: HashMap<(String, String), Vec<&RawElement>> = HashMap::new();
        for (type_name, raw_type) in &raw.types {
            if raw_type.kind == "primitive-type" {
                continue;
            }
            let key = (type_name.clone(), type_name.clone());
            let next = context_ids.len();
            context_ids.entry(key).or_insert(next);
            for element in &raw_type.elements {
                let Some((parent, _)) = element.path.rsplit_once('.') else {
                    continue;
                };
                children
                    .entry((type_name.clone(), parent.to_string()))
                    .or_default()
                    .push(element);
                let next = context_ids.len();
                context_ids
                    .entry((type_name.clone(), parent.to_string()))
                    .or_insert(next);
            }
        }

        // Phase 2: fill every context.
        let mut contexts: Vec<Context> =
            (0..context_ids.len()).map(|_| Context::default()).collect();
        for ((type_name, path), id) in &context_ids {
            let context = &mut contexts[*id];
            context.path = path.clone();
            let Some(elements) = children.get(&(type_name.clone(), path.clone())) else {
                continue;
            };
            for (order, element) in elements.iter().enumerate() {
                let name = element.path.rsplit('.').next().unwrap_or(&element.path);
                let repeats = element.max != "1" && element.max != "0";
                if element.max == "0" {
                    continue;
                }
                let mut keys_for_element = Vec::new();
                if let Some(reference) = &element.content_reference {
                    let target = context_ids
                        .get(&(type_name.clone(), reference.clone()))
                        .copied();
                    if let Some(target) = target {
                        keys_for_element.push(name.to_string());
                        context.keys.insert(
                            name.to_string(),
                            ElementRule {
                                name: name.to_string(),
                                min: element.min,
                                repeats,
                                kind: ElementKind::Complex(target),
                                type_name: "BackboneElement".into(),
                                order,
                                targets: Vec::new(),
                                summary: element.summary,
                                code_system: None,
                                value_set: None,
                            },
                        );
                    }
                } else {
                    let choice = name.strip_suffix("[x]");
                    for type_code in &element.types {
                        let key = match choice {
                            Some(stem) => format!("{stem}{}", capitalise(type_code)),
                            None => name.to_string(),
                        };
                        let kind = element_kind(
                            type_name,
                            &element.path,
                            type_code,
                            &raw.types,
                            &context_ids,
                        );
                        keys_for_element.push(key.clone());
                        context.keys.insert(
                            key,
                            ElementRule {
                                name: name.to_string(),
                                min: element.min,
                                repeats,
                                kind,
                                type_name: type_code.clone(),
                                order,
                                targets: element.targets.clone(),
                                summary: element.summary,
                                code_system: element.code_system.clone(),
                                value_set: element.value_set,
                            },
                        );
                    }
                }
                if element.min > 0 && !keys_for_element.is_empty() {
                    context.required.push((name.to_string(), keys_for_element));
                }
            }
        }

        let mut types = HashMap::new();
        for (type_name, raw_type) in &raw.types {
            let regex = raw_type.regex.as_ref().map(|r| {
                regex::Regex::new(&format!("^(?:{r})$")).expect("definition regexes compile")
            });
            types.insert(
                type_name.clone(),
                TypeInfo {
                    kind: raw_type.kind.clone(),
                    is_abstract: raw_type.is_abstract,
                    context: context_ids
                        .get(&(type_name.clone(), type_name.clone()))
                        .copied(),
                    regex,
                },
            );
        }
        Model {
            types,
            contexts,
            search_parameters: raw.search_parameters,
            patient_compartment: raw.patient_compartment,
            value_sets: raw.value_sets,
        }
    }
}

fn element_kind(
    owner: &str,
    path: &str,
    type_code: &str,
    types: &HashMap<String, RawType>,
    context_ids: &HashMap<(String, String), ContextId>,
) -> ElementKind {
    if type_code == "Resource" {
        return ElementKind::Resource;
    }
    if (type_code == "BackboneElement" || type_code == "Element")
        && let Some(id) = context_ids.get(&(owner.to_string(), path.to_string()))
    {
        return ElementKind::Complex(*id);
    }
    match types.get(type_code) {
        Some(t) if t.kind == "primitive-type" => ElementKind::Primitive(type_code.to_string()),
        _ => context_ids
            .get(&(type_code.to_string(), type_code.to_string()))
            .map_or(ElementKind::Primitive("string".into()), |id| {
                ElementKind::Complex(*id)
            }),
    }
}

/// `dateTime` → `DateTime`, as in choice-element JSON keys.
pub fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patient_context_knows_its_elements() {
        let model = r4();
        let patient = model.type_context("Patient").unwrap();
        assert!(patient.keys["name"].repeats);
        assert_eq!(
            patient.keys["birthDate"].kind,
            ElementKind::Primitive("date".into())
        );
        assert!(patient.keys.contains_key("deceasedBoolean"));
        assert!(patient.keys.contains_key("deceasedDateTime"));
        assert!(!patient.keys.contains_key("deceased"));
        assert!(matches!(
            patient.keys["contact"].kind,
            ElementKind::Complex(_)
        ));
    }

    #[test]
    fn required_elements_are_listed() {
        let observation = r4().type_context("Observation").unwrap();
        let names: Vec<&str> = observation
            .required
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        assert!(names.contains(&"status"));
        assert!(names.contains(&"code"));
    }

    #[test]
    fn content_reference_recurses() {
        let model = r4();
        let questionnaire = model.type_context("Questionnaire").unwrap();
        let ElementKind::Complex(item) = questionnaire.keys["item"].kind else {
            panic!("item is complex")
        };
        let ElementKind::Complex(nested) = model.contexts[item].keys["item"].kind else {
            panic!("item.item is complex")
        };
        assert_eq!(item, nested);
    }

    #[test]
    fn required_bindings_carry_their_value_sets() {
        let model = r4();
        let gender = &model.type_context("Patient").unwrap().keys["gender"];
        let value_set = &model.value_sets[gender.value_set.unwrap()];
        assert_eq!(
            value_set.url,
            "http://hl7.org/fhir/ValueSet/administrative-gender"
        );
        assert!(value_set.contains("female") && !value_set.contains("x"));
        assert_eq!(
            value_set.contains_in("http://hl7.org/fhir/administrative-gender", "male"),
            Some(true)
        );
        assert_eq!(
            value_set.contains_in("http://snomed.info/sct", "male"),
            None
        );
        // Stored once, however many elements bind it.
        let contact_gender = model
            .contexts
            .iter()
            .find(|c| c.path == "Patient.contact")
            .unwrap()
            .keys["gender"]
            .value_set;
        assert_eq!(contact_gender, gender.value_set);
        let urls: HashSet<&str> = model.value_sets.iter().map(|v| v.url.as_str()).collect();
        assert_eq!(urls.len(), model.value_sets.len());
        assert_eq!(model.value_sets.len(), 220);
        // A CodeableConcept bound as required, and one bound only by example.
        let condition = model.type_context("Condition").unwrap();
        assert!(condition.keys["clinicalStatus"].value_set.is_some());
        assert!(condition.keys["code"].value_set.is_none());
    }

    #[test]
    fn resource_types_are_concrete() {
        let model = r4();
        assert!(model.is_resource_type("Patient"));
        assert!(!model.is_resource_type("DomainResource"));
        assert!(!model.is_resource_type("HumanName"));
        assert_eq!(model.resource_types().len(), 146);
    }
}
