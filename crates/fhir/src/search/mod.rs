//! Search parameters: the registry (official R4 plus custom SearchParameter resources),
//! index-value extraction at write time, and query parsing.

mod extract;
mod paths;
mod query;

pub use extract::{IndexEntry, IndexValue, normalize_string};
pub use paths::{CompiledPath, Step, compile_expression};
pub use query::{
    Chain, Criterion, CriterionValue, DEFAULT_PAGE_SIZE, Has, Include, MAX_BOUND_PARAMETERS,
    MAX_CHAIN_EXPANSION, MAX_CRITERIA, MAX_CURSOR_BYTES, MAX_INCLUDES, MAX_NUMBER_CHARS,
    MAX_OR_VALUES, MAX_PAGE_SIZE, MAX_QUERY_BYTES, MAX_SORT_KEYS, PARAMETERS_PER_INDEX_ROWS,
    Prefix, SearchQuery, SortKey, StringMatch, Summary, TokenSystem, check_search_text,
    is_search_text_char, parse_search_query,
};

use crate::model::{Model, SearchParameterDefinition, r4};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The type of a search parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamType {
    /// Numeric value.
    Number,
    /// Date, dateTime, instant, Period, Timing.
    Date,
    /// String (name parts, address parts, …).
    String,
    /// Code, Coding, CodeableConcept, Identifier, boolean, ContactPoint.
    Token,
    /// Reference to another resource.
    Reference,
    /// Quantity with value, system and code.
    Quantity,
    /// URI.
    Uri,
}

impl ParamType {
    /// From the definition's type code; composite and special are not supported.
    pub fn from_code(code: &str) -> Option<ParamType> {
        Some(match code {
            "number" => ParamType::Number,
            "date" => ParamType::Date,
            "string" => ParamType::String,
            "token" => ParamType::Token,
            "reference" => ParamType::Reference,
            "quantity" => ParamType::Quantity,
            "uri" => ParamType::Uri,
            _ => return None,
        })
    }

    /// The type code as used in CapabilityStatement.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::Number => "number",
            ParamType::Date => "date",
            ParamType::String => "string",
            ParamType::Token => "token",
            ParamType::Reference => "reference",
            ParamType::Quantity => "quantity",
            ParamType::Uri => "uri",
        }
    }
}

/// A search parameter as it applies to one resource type.
#[derive(Debug, Clone)]
pub struct SearchParam {
    /// Canonical URL of the SearchParameter.
    pub url: String,
    /// Name used in queries.
    pub code: String,
    /// The resource type it belongs to.
    pub resource_type: String,
    /// Its type.
    pub param_type: ParamType,
    /// Allowed reference targets.
    pub targets: Vec<String>,
    /// Compiled paths for this resource type.
    pub paths: Vec<CompiledPath>,
}

/// A parameter is known by its definition, the type it applies to and its code; the rest is
/// compiled from those.
impl PartialEq for SearchParam {
    fn eq(&self, other: &SearchParam) -> bool {
        self.url == other.url
            && self.resource_type == other.resource_type
            && self.code == other.code
    }
}

impl SearchParam {
    /// The resource types a reference parameter can point to, narrowed by `where(resolve() is T)`
    /// in its expression (R4 `Observation.patient` lists Group too, but only matches Patients).
    pub fn effective_targets(&self) -> Vec<String> {
        let narrowed: Vec<&str> = self
            .paths
            .iter()
            .filter_map(|p| p.reference_type.as_deref())
            .collect();
        if !narrowed.is_empty() && narrowed.len() == self.paths.len() {
            let mut targets: Vec<String> = narrowed.into_iter().map(String::from).collect();
            targets.sort();
            targets.dedup();
            return targets;
        }
        self.targets.clone()
    }

    /// The code system every value of this token parameter implicitly has: when each of its
    /// paths ends in a `code` bound to that one system (`Patient.gender`,
    /// `Observation.status`). Such codes are indexed without a system, so `system|code`
    /// with this system means the same as `|code`.
    pub fn implicit_system(&self) -> Option<&str> {
        let first = self.paths.first()?.leaf_code_system.as_deref()?;
        self.paths
            .iter()
            .all(|p| p.leaf_type == "code" && p.leaf_code_system.as_deref() == Some(first))
            .then_some(first)
    }
}

/// Search parameters handled natively by the store rather than through index rows.
pub const NATIVE_PARAMS: [&str; 2] = ["_id", "_lastUpdated"];

/// All search parameters per resource type.
#[derive(Debug, Clone, Default)]
pub struct SearchRegistry {
    by_type: HashMap<String, BTreeMap<String, Arc<SearchParam>>>,
}

impl SearchRegistry {
    /// The official R4 parameters, for every resource type.
    pub fn r4() -> SearchRegistry {
        let model = r4();
        let mut registry = SearchRegistry::default();
        for definition in &model.search_parameters {
            registry.add_definition(model, definition);
        }
        registry
    }

    /// Adds a parameter from a SearchParameter resource (custom parameters such as the
    /// Nictiz ones). Returns the resource types it now applies to.
    pub fn add_search_parameter(
        &mut self,
        resource: &serde_json::Value,
    ) -> Result<Vec<String>, String> {
        let definition: SearchParameterDefinition = serde_json::from_value(resource.clone())
            .map_err(|e| format!("not a usable SearchParameter: {e}"))?;
        let applied = self.add_definition(r4(), &definition);
        if applied.is_empty() {
            return Err(format!(
                "SearchParameter '{}' cannot be evaluated for any of its base types",
                definition.code
            ));
        }
        Ok(applied)
    }

    fn add_definition(
        &mut self,
        model: &Model,
        definition: &SearchParameterDefinition,
    ) -> Vec<String> {
        let mut applied = Vec::new();
        if NATIVE_PARAMS.contains(&definition.code.as_str()) {
            return applied;
        }
        let Some(param_type) = ParamType::from_code(&definition.param_type) else {
            return applied;
        };
        let Some(expression) = &definition.expression else {
            return applied;
        };
        let bases: Vec<String> = if definition
            .base
            .iter()
            .any(|b| b == "Resource" || b == "DomainResource")
        {
            model
                .resource_types()
                .into_iter()
                .map(String::from)
                .collect()
        } else {
            definition.base.clone()
        };
        for base in bases {
            if !model.is_resource_type(&base) {
                continue;
            }
            let Some(paths) = compile_expression(model, &base, expression) else {
                continue;
            };
            if paths.is_empty() {
                continue;
            }
            let param = SearchParam {
                url: definition.url.clone(),
                code: definition.code.clone(),
                resource_type: base.clone(),
                param_type,
                targets: definition.target.clone(),
                paths,
            };
            self.by_type
                .entry(base.clone())
                .or_default()
                .insert(definition.code.clone(), Arc::new(param));
            applied.push(base);
        }
        applied
    }

    /// The parameter `code` of `resource_type`.
    pub fn get(&self, resource_type: &str, code: &str) -> Option<&Arc<SearchParam>> {
        self.by_type.get(resource_type)?.get(code)
    }

    /// All parameters of `resource_type`, by code.
    pub fn params(&self, resource_type: &str) -> impl Iterator<Item = &Arc<SearchParam>> {
        self.by_type
            .get(resource_type)
            .into_iter()
            .flat_map(|m| m.values())
    }

    /// Every parameter of every resource type.
    pub fn all_params(&self) -> impl Iterator<Item = &Arc<SearchParam>> {
        self.by_type.values().flat_map(|m| m.values())
    }

    /// The index entries of a resource: one per parameter value.
    pub fn extract(&self, resource: &serde_json::Value) -> Vec<IndexEntry> {
        self.extract_where(resource, |_| true)
    }

    /// The index entries of a resource for the parameters `keep` accepts.
    pub fn extract_where(
        &self,
        resource: &serde_json::Value,
        keep: impl Fn(&SearchParam) -> bool,
    ) -> Vec<IndexEntry> {
        let Some(resource_type) = resource.get("resourceType").and_then(|t| t.as_str()) else {
            return Vec::new();
        };
        let mut entries = Vec::new();
        for param in self.params(resource_type).filter(|p| keep(p)) {
            extract::extract_param(param, resource, &mut entries);
        }
        entries.sort_by(|a, b| a.code.cmp(&b.code));
        entries.dedup();
        entries
    }

    /// The top-level members of a `resource_type` that [`SearchRegistry::patient_compartments`]
    /// reads: a resource cut down to these (and `resourceType` and `id`) belongs to the same
    /// compartments as the whole one.
    pub fn patient_compartment_members(&self, resource_type: &str) -> Vec<&str> {
        let mut members: Vec<&str> = r4()
            .patient_compartment
            .get(resource_type)
            .into_iter()
            .flatten()
            .filter_map(|code| self.get(resource_type, code))
            .flat_map(|param| param.paths.iter())
            .filter_map(|path| path.steps.first().map(|step| step.key.as_str()))
            .collect();
        members.sort_unstable();
        members.dedup();
        members
    }

    /// The ids of the Patients whose compartment `resource` belongs to.
    pub fn patient_compartments(&self, resource: &serde_json::Value) -> Vec<String> {
        let Some(resource_type) = resource.get("resourceType").and_then(|t| t.as_str()) else {
            return Vec::new();
        };
        let mut patients = Vec::new();
        if resource_type == "Patient"
            && let Some(id) = resource.get("id").and_then(|i| i.as_str())
        {
            patients.push(id.to_string());
        }
        if let Some(codes) = r4().patient_compartment.get(resource_type) {
            for code in codes {
                let Some(param) = self.get(resource_type, code) else {
                    continue;
                };
                let mut entries = Vec::new();
                extract::extract_param(param, resource, &mut entries);
                for entry in entries {
                    if let IndexValue::Reference {
                        target_type,
                        target_id,
                    } = entry.value
                        && target_type == "Patient"
                    {
                        patients.push(target_id);
                    }
                }
            }
        }
        patients.sort();
        patients.dedup();
        patients
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn registry_covers_the_issue_parameters() {
        let registry = SearchRegistry::r4();
        let required = [
            (
                "Patient",
                [
                    "identifier",
                    "family",
                    "given",
                    "name",
                    "birthdate",
                    "gender",
                    "general-practitioner",
                ]
                .as_slice(),
            ),
            ("Organization", &["identifier", "name"]),
            (
                "Observation",
                &["patient", "subject", "code", "date", "category", "status"],
            ),
            (
                "Condition",
                &["patient", "code", "clinical-status", "category"],
            ),
            ("MedicationStatement", &["patient", "code", "status"]),
            ("MedicationRequest", &["patient", "code", "status"]),
            ("MedicationDispense", &["patient", "code", "status"]),
            (
                "AllergyIntolerance",
                &["patient", "code", "clinical-status", "date"],
            ),
            ("Procedure", &["patient", "code", "date", "status"]),
            ("Immunization", &["patient", "date", "status"]),
            (
                "DiagnosticReport",
                &["patient", "code", "date", "category", "status"],
            ),
            (
                "DocumentReference",
                &["patient", "date", "category", "status"],
            ),
            ("Composition", &["patient", "date", "category", "status"]),
            ("Consent", &["patient", "date", "category", "status"]),
            ("AuditEvent", &["patient", "date"]),
            ("Provenance", &["patient"]),
            ("Encounter", &["patient", "date", "status"]),
            ("Endpoint", &["organization", "identifier", "status"]),
            (
                "PractitionerRole",
                &["practitioner", "organization", "role"],
            ),
            ("Location", &["organization", "name"]),
            ("HealthcareService", &["organization"]),
            (
                "OrganizationAffiliation",
                &["primary-organization", "participating-organization"],
            ),
        ];
        for (resource_type, codes) in required {
            for code in codes {
                assert!(
                    registry.get(resource_type, code).is_some(),
                    "{resource_type}.{code}"
                );
            }
        }
        assert!(registry.get("Patient", "_tag").is_some());
    }

    #[test]
    fn extracts_patient_values() {
        let registry = SearchRegistry::r4();
        let patient = json!({
            "resourceType": "Patient", "id": "p1",
            "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "123456782"}],
            "name": [{"family": "van den Berg", "given": ["Jóhanna"]}],
            "gender": "female", "birthDate": "1980-05-02",
            "generalPractitioner": [{"reference": "Organization/gp1"}]
        });
        let entries = registry.extract(&patient);
        let has = |code: &str, value: IndexValue| {
            entries.iter().any(|e| e.code == code && e.value == value)
        };
        assert!(has(
            "identifier",
            IndexValue::Token {
                system: "http://fhir.nl/fhir/NamingSystem/bsn".into(),
                code: "123456782".into()
            }
        ));
        assert!(has(
            "given",
            IndexValue::String {
                normalized: "johanna".into(),
                exact: "Jóhanna".into()
            }
        ));
        assert!(
            has(
                "gender",
                IndexValue::Token {
                    system: "http://hl7.org/fhir/administrative-gender".into(),
                    code: "female".into()
                }
            ) || has(
                "gender",
                IndexValue::Token {
                    system: String::new(),
                    code: "female".into()
                }
            )
        );
        assert!(has(
            "general-practitioner",
            IndexValue::Reference {
                target_type: "Organization".into(),
                target_id: "gp1".into()
            }
        ));
        assert!(
            entries
                .iter()
                .any(|e| e.code == "birthdate" && matches!(e.value, IndexValue::Date(_)))
        );
    }

    #[test]
    fn compartment_membership() {
        let registry = SearchRegistry::r4();
        let observation = json!({
            "resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "subject": {"reference": "Patient/p1"}, "performer": [{"reference": "Practitioner/d1"}]
        });
        assert_eq!(registry.patient_compartments(&observation), ["p1"]);
    }
}
