//! Structural validation of R4 JSON resources against the compiled definitions.
//!
//! Checks: known elements per type, required elements, cardinality (arrays exactly where an
//! element repeats), JSON types and the official regular expressions of primitives, no empty
//! values, no control characters in strings, contained and nested resources, required
//! bindings whose value sets the definitions list (see [`crate::model::Model::value_sets`]),
//! and Dutch rules (a BSN must pass the 11-check).
//! It does not check invariants (FHIRPath constraints), other binding strengths, bindings to
//! terminologies outside the definitions (SNOMED CT, UCUM, MIME types, …) or profiles.
//!
//! Under a required binding, a `code` must be one of the value set's codes. A `Coding` (alone
//! or in a `CodeableConcept`) whose system is one of the value set's systems must carry a code
//! of that system in the value set; a `Coding` of another system is left alone (it may be a
//! translation, and a `CodeableConcept` may also hold only `text`).

use crate::identifiers::{BSN_SYSTEM, bsn_is_valid};
use crate::model::{Context, ElementKind, ElementRule, Model, ValueSetId, r4};
use crate::outcome::{Issue, IssueCode};
use serde_json::{Map, Value};
use std::fmt::Write;

/// Nesting depth beyond which a document is rejected (stops stack exhaustion by hostile input).
pub const MAX_NESTING_DEPTH: usize = 64;
/// Validation stops collecting after this many issues.
pub const MAX_ISSUES: usize = 100;

/// Validates a resource; an empty list means it is acceptable.
pub fn validate_resource(resource: &Value) -> Vec<Issue> {
    let mut validator = Validator {
        model: r4(),
        issues: Vec::new(),
        path: String::new(),
    };
    validator.resource(resource, 0);
    validator.issues
}

/// Walks a resource. `path` is the FHIRPath-like location of the value being checked
/// (`Patient.name[0].given`): one buffer, extended on the way down and cut back on the way
/// up, so that checking a valid resource allocates no location strings.
struct Validator {
    model: &'static Model,
    issues: Vec<Issue>,
    path: String,
}

impl Validator {
    fn push(&mut self, code: IssueCode, message: String) {
        if self.issues.len() < MAX_ISSUES {
            self.issues.push(Issue::error(code, message).at(&self.path));
        }
    }

    /// Runs `f` with `.key` appended to the path.
    fn at_key(&mut self, key: &str, f: impl FnOnce(&mut Self)) {
        let mark = self.path.len();
        self.path.push('.');
        self.path.push_str(key);
        f(self);
        self.path.truncate(mark);
    }

    /// Runs `f` with `[index]` appended to the path.
    fn at_index(&mut self, index: usize, f: impl FnOnce(&mut Self)) {
        let mark = self.path.len();
        // Writing to a String cannot fail.
        let _ = write!(self.path, "[{index}]");
        f(self);
        self.path.truncate(mark);
    }

    fn resource(&mut self, value: &Value, depth: usize) {
        let Some(object) = value.as_object() else {
            self.push(
                IssueCode::Structure,
                "a resource must be a JSON object".into(),
            );
            return;
        };
        let Some(resource_type) = object.get("resourceType").and_then(Value::as_str) else {
            self.push(IssueCode::Structure, "resourceType is missing".into());
            return;
        };
        if !self.model.is_resource_type(resource_type) {
            self.push(
                IssueCode::NotSupported,
                format!("unknown resource type '{resource_type}'"),
            );
            return;
        }
        let root = self.path.is_empty();
        if root {
            self.path.push_str(resource_type);
        }
        if let Some(id) = object.get("id") {
            let valid = id.as_str().is_some_and(is_valid_id);
            if !valid {
                self.at_key("id", |v| {
                    v.push(
                        IssueCode::Value,
                        format!("id {id} is not a valid FHIR id ([A-Za-z0-9\\-\\.]{{1,64}})"),
                    )
                });
            }
        }
        let context_id = self.model.types[resource_type]
            .context
            .expect("resources have a root context");
        self.object(object, context_id, depth, true);
        if root {
            self.path.clear();
        }
    }

    fn object(
        &mut self,
        object: &Map<String, Value>,
        context_id: usize,
        depth: usize,
        is_resource_root: bool,
    ) {
        if depth > MAX_NESTING_DEPTH {
            self.push(IssueCode::TooCostly, "document nested too deeply".into());
            return;
        }
        if object.is_empty() {
            self.push(IssueCode::Structure, "objects must not be empty".into());
            return;
        }
        let context: &Context = &self.model.contexts[context_id];
        for (key, value) in object {
            if is_resource_root && key == "resourceType" {
                continue;
            }
            if let Some(base) = key.strip_prefix('_') {
                match context.keys.get(base) {
                    Some(rule) if matches!(rule.kind, ElementKind::Primitive(_)) => {
                        self.at_key(key, |v| v.primitive_extension(value, rule, depth));
                    }
                    _ => self.at_key(key, |v| {
                        v.push(
                            IssueCode::Structure,
                            format!("unknown element '{key}' in {}", context.path),
                        )
                    }),
                }
                continue;
            }
            let Some(rule) = context.keys.get(key) else {
                self.at_key(key, |v| {
                    v.push(
                        IssueCode::Structure,
                        format!("unknown element '{key}' in {}", context.path),
                    )
                });
                continue;
            };
            self.at_key(key, |v| v.element(object, key, value, rule, depth));
        }
        for (name, keys) in &context.required {
            let present = keys
                .iter()
                .any(|k| object.contains_key(k) || has_primitive_extension(object, k));
            if !present {
                self.push(
                    IssueCode::Required,
                    format!("required element '{name}' is missing in {}", context.path),
                );
            }
        }
        // A choice element may hold only one of its types at a time.
        let mut seen_choices: Vec<&str> = Vec::new();
        for key in object.keys() {
            if let Some(rule) = context.keys.get(key.as_str())
                && rule.name.ends_with("[x]")
            {
                if seen_choices.contains(&rule.name.as_str()) {
                    self.push(
                        IssueCode::Structure,
                        format!(
                            "more than one type given for choice element '{}'",
                            rule.name
                        ),
                    );
                }
                seen_choices.push(&rule.name);
            }
        }
    }

    fn element(
        &mut self,
        parent: &Map<String, Value>,
        key: &str,
        value: &Value,
        rule: &ElementRule,
        depth: usize,
    ) {
        match value {
            Value::Array(items) => {
                if !rule.repeats {
                    self.push(
                        IssueCode::Structure,
                        format!("'{key}' does not repeat: expected a single value, not an array"),
                    );
                    return;
                }
                if items.is_empty() {
                    self.push(IssueCode::Structure, "arrays must not be empty".into());
                    return;
                }
                let has_extensions = has_primitive_extension(parent, key);
                for (i, item) in items.iter().enumerate() {
                    if item.is_null() && has_extensions {
                        continue;
                    }
                    self.at_index(i, |v| v.single(item, rule, depth));
                }
            }
            _ if rule.repeats => self.push(
                IssueCode::Structure,
                format!("'{key}' repeats: expected an array"),
            ),
            _ => self.single(value, rule, depth),
        }
    }

    fn single(&mut self, value: &Value, rule: &ElementRule, depth: usize) {
        match &rule.kind {
            ElementKind::Primitive(type_name) => {
                if self.primitive(value, type_name)
                    && let (Some(value_set), Some(code)) = (rule.value_set, value.as_str())
                {
                    self.bound_code(value_set, code);
                }
            }
            ElementKind::Complex(context_id) => match value.as_object() {
                Some(object) => {
                    self.object(object, *context_id, depth + 1, false);
                    if rule.type_name == "Identifier" {
                        self.dutch_identifier(object);
                    }
                    if let Some(value_set) = rule.value_set {
                        self.bound_concept(&rule.type_name, object, value_set);
                    }
                }
                None => self.push(
                    IssueCode::Structure,
                    format!("expected an object of type {}", rule.type_name),
                ),
            },
            ElementKind::Resource => self.resource(value, depth + 1),
        }
    }

    fn primitive_extension(&mut self, value: &Value, rule: &ElementRule, depth: usize) {
        match value {
            Value::Object(object) => self.element_object(object, depth + 1),
            Value::Array(items) if rule.repeats => {
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::Null => {}
                        Value::Object(object) => {
                            self.at_index(i, |v| v.element_object(object, depth + 1))
                        }
                        _ => self.push(
                            IssueCode::Structure,
                            "primitive extensions must be objects or null".into(),
                        ),
                    }
                }
            }
            _ => self.push(
                IssueCode::Structure,
                "primitive extension has the wrong shape".into(),
            ),
        }
    }

    /// The `_name` companion of a primitive: only `id` and `extension` (the R4 `Element` type,
    /// which has no StructureDefinition of its own in the definitions package).
    fn element_object(&mut self, object: &Map<String, Value>, depth: usize) {
        if depth > MAX_NESTING_DEPTH {
            self.push(IssueCode::TooCostly, "document nested too deeply".into());
            return;
        }
        let extension_context = self.model.types["Extension"]
            .context
            .expect("Extension has a context");
        for (key, value) in object {
            match (key.as_str(), value) {
                ("id", Value::String(_)) => self.at_key("id", |v| {
                    v.primitive(value, "string");
                }),
                ("extension", Value::Array(items)) if !items.is_empty() => {
                    self.at_key("extension", |v| {
                        for (i, item) in items.iter().enumerate() {
                            v.at_index(i, |v| match item.as_object() {
                                Some(o) => v.object(o, extension_context, depth + 1, false),
                                None => v.push(
                                    IssueCode::Structure,
                                    "expected an Extension object".into(),
                                ),
                            });
                        }
                    });
                }
                _ => self.at_key(key, |v| {
                    v.push(
                        IssueCode::Structure,
                        format!(
                            "unknown or malformed element '{key}' in a primitive's extension object"
                        ),
                    )
                }),
            }
        }
    }

    /// Checks a primitive value against its type; true when it is valid.
    fn primitive(&mut self, value: &Value, type_name: &str) -> bool {
        if let Some(c) = value.as_str().and_then(control_character) {
            self.push(
                IssueCode::Value,
                format!(
                    "a {type_name} may not contain the control character U+{:04X} (below U+0020 \
                     only tab, CR and LF are allowed)",
                    u32::from(c)
                ),
            );
            return false;
        }
        let ok = match type_name {
            "boolean" => value.is_boolean(),
            "integer" => value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
            "positiveInt" => value
                .as_i64()
                .is_some_and(|n| n > 0 && i32::try_from(n).is_ok()),
            "unsignedInt" => value
                .as_i64()
                .is_some_and(|n| n >= 0 && i32::try_from(n).is_ok()),
            "decimal" => value.is_number(),
            "xhtml" => value
                .as_str()
                .is_some_and(|s| s.trim_start().starts_with("<div")),
            _ => match value.as_str() {
                Some(s) => self.string_matches(type_name, s),
                None => false,
            },
        };
        if !ok {
            self.push(
                IssueCode::Value,
                format!("{} is not a valid {type_name}", short(value)),
            );
        }
        ok
    }

    /// A `code` under a required binding.
    fn bound_code(&mut self, value_set: ValueSetId, code: &str) {
        let Some(value_set) = self.model.value_sets.get(value_set) else {
            return;
        };
        if !value_set.contains(code) {
            self.push(
                IssueCode::CodeInvalid,
                format!(
                    "'{code}' is not a code of the value set {} (a required binding)",
                    value_set.url
                ),
            );
        }
    }

    /// A `Coding` or `CodeableConcept` under a required binding: each Coding of one of the
    /// value set's systems must carry a code of it.
    fn bound_concept(
        &mut self,
        type_name: &str,
        object: &Map<String, Value>,
        value_set: ValueSetId,
    ) {
        match type_name {
            "Coding" => self.bound_coding(object, value_set),
            "CodeableConcept" => {
                let Some(codings) = object.get("coding").and_then(Value::as_array) else {
                    return;
                };
                self.at_key("coding", |v| {
                    for (i, coding) in codings.iter().enumerate() {
                        if let Some(coding) = coding.as_object() {
                            v.at_index(i, |v| v.bound_coding(coding, value_set));
                        }
                    }
                });
            }
            _ => {}
        }
    }

    fn bound_coding(&mut self, coding: &Map<String, Value>, value_set: ValueSetId) {
        let Some(value_set) = self.model.value_sets.get(value_set) else {
            return;
        };
        let Some(system) = coding.get("system").and_then(Value::as_str) else {
            return;
        };
        match coding.get("code").and_then(Value::as_str) {
            Some(code) => {
                if value_set.contains_in(system, code) == Some(false) {
                    self.at_key("code", |v| {
                        v.push(
                            IssueCode::CodeInvalid,
                            format!(
                                "'{code}' is not a code of {system} in the value set {} \
                                 (a required binding)",
                                value_set.url
                            ),
                        )
                    });
                }
            }
            None => {
                if value_set.codes.contains_key(system) {
                    self.push(
                        IssueCode::CodeInvalid,
                        format!(
                            "a Coding of {system} needs a code from the value set {} \
                             (a required binding)",
                            value_set.url
                        ),
                    );
                }
            }
        }
    }

    fn string_matches(&self, type_name: &str, s: &str) -> bool {
        if s.is_empty() {
            return false;
        }
        if matches!(type_name, "string" | "markdown") {
            return !s.trim().is_empty();
        }
        match self
            .model
            .types
            .get(type_name)
            .and_then(|t| t.regex.as_ref())
        {
            Some(regex) => regex.is_match(s),
            None => true,
        }
    }

    fn dutch_identifier(&mut self, identifier: &Map<String, Value>) {
        if identifier.get("system").and_then(Value::as_str) != Some(BSN_SYSTEM) {
            return;
        }
        if let Some(value) = identifier.get("value").and_then(Value::as_str)
            && !bsn_is_valid(value)
        {
            self.at_key("value", |v| {
                v.push(
                    IssueCode::Value,
                    format!("'{value}' is not a valid BSN (9 digits passing the 11-check)"),
                )
            });
        }
    }
}

/// Whether `object` has the `_key` companion of primitive element `key`.
fn has_primitive_extension(object: &Map<String, Value>, key: &str) -> bool {
    object.keys().any(|k| k.strip_prefix('_') == Some(key))
}

/// The first character below U+0020 other than tab, LF and CR: FHIR strings may not hold one
/// (R4 datatypes, `string`), and PostgreSQL cannot store U+0000 in text at all.
fn control_character(s: &str) -> Option<char> {
    s.chars()
        .find(|c| *c < ' ' && !matches!(c, '\t' | '\n' | '\r'))
}

/// A FHIR id: 1–64 characters from `[A-Za-z0-9\-\.]`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn short(value: &Value) -> String {
    const MAX_SHOWN_CHARS: usize = 60;
    let text = value.to_string();
    if text.chars().count() > MAX_SHOWN_CHARS {
        let cut: String = text.chars().take(MAX_SHOWN_CHARS).collect();
        format!("{cut}…")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Severity;
    use serde_json::json;

    fn messages(resource: Value) -> Vec<String> {
        validate_resource(&resource)
            .into_iter()
            .map(|i| format!("{} {}", i.expression.unwrap_or_default(), i.diagnostics))
            .collect()
    }

    #[test]
    fn accepts_a_plain_patient() {
        let issues = messages(json!({
            "resourceType": "Patient", "id": "p1",
            "identifier": [{"system": BSN_SYSTEM, "value": "123456782"}],
            "name": [{"family": "Jansen", "given": ["Jan"], "_given": [{"extension": [{"url": "http://x", "valueString": "y"}]}]}],
            "birthDate": "1970-03", "deceasedBoolean": false, "gender": "male"
        }));
        assert!(issues.is_empty(), "{issues:?}");
    }

    #[test]
    fn rejects_unknown_elements_and_wrong_shapes() {
        let issues = messages(json!({
            "resourceType": "Patient", "nmae": [{"family": "X"}], "gender": ["male"],
            "name": {"family": "Y"}, "birthDate": "1970-13-01", "active": "yes"
        }));
        let text = issues.join("\n");
        assert!(text.contains("unknown element 'nmae'"), "{text}");
        assert!(
            text.contains("Patient.gender 'gender' does not repeat"),
            "{text}"
        );
        assert!(text.contains("'name' repeats"), "{text}");
        assert!(
            text.contains("Patient.birthDate \"1970-13-01\" is not a valid date"),
            "{text}"
        );
        assert!(
            text.contains("Patient.active \"yes\" is not a valid boolean"),
            "{text}"
        );
    }

    #[test]
    fn requires_required_elements() {
        let issues = messages(json!({"resourceType": "Observation", "status": "final"}));
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert!(issues[0].contains("required element 'code'"));
    }

    #[test]
    fn checks_bsn_eleven_test() {
        let issues = messages(json!({
            "resourceType": "Patient",
            "identifier": [{"system": BSN_SYSTEM, "value": "123456789"}]
        }));
        assert_eq!(issues.len(), 1);
        assert!(issues[0].contains("not a valid BSN"));
    }

    #[test]
    fn rejects_bad_ids_empty_values_and_unknown_types() {
        assert!(!messages(json!({"resourceType": "Patient", "id": "a b"})).is_empty());
        assert!(!messages(json!({"resourceType": "Patient", "name": []})).is_empty());
        assert!(!messages(json!({"resourceType": "Patient", "name": [{}]})).is_empty());
        assert!(!messages(json!({"resourceType": "Patient", "gender": ""})).is_empty());
        assert!(!messages(json!({"resourceType": "Patientt"})).is_empty());
        assert!(!messages(json!({"resourceType": "DomainResource"})).is_empty());
        assert!(!messages(json!(["not", "an", "object"])).is_empty());
    }

    #[test]
    fn validates_contained_and_bundled_resources() {
        let issues = messages(json!({
            "resourceType": "Bundle", "type": "collection",
            "entry": [{"resource": {"resourceType": "Patient", "foo": 1}}]
        }));
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert!(
            issues[0].contains("Bundle.entry[0].resource.foo"),
            "{issues:?}"
        );
        let issues = messages(json!({
            "resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "contained": [{"resourceType": "Patient", "id": "p", "birthDate": "x"}]
        }));
        assert_eq!(issues.len(), 1, "{issues:?}");
    }

    #[test]
    fn rejects_two_types_for_one_choice() {
        let issues = messages(json!({
            "resourceType": "Patient", "deceasedBoolean": true, "deceasedDateTime": "2020-01-01"
        }));
        assert_eq!(issues.len(), 1, "{issues:?}");
    }

    fn issues_of(resource: Value) -> Vec<Issue> {
        validate_resource(&resource)
    }

    #[test]
    fn refuses_codes_outside_a_required_value_set() {
        let issues = issues_of(json!({"resourceType": "Patient", "gender": "x"}));
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].code, IssueCode::CodeInvalid);
        assert_eq!(issues[0].expression.as_deref(), Some("Patient.gender"));
        assert!(
            issues[0].diagnostics.contains("'x'")
                && issues[0]
                    .diagnostics
                    .contains("http://hl7.org/fhir/ValueSet/administrative-gender"),
            "{issues:?}"
        );
        let issues = issues_of(json!({
            "resourceType": "Observation", "status": "bogus", "code": {"text": "x"}
        }));
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].code, IssueCode::CodeInvalid);
        assert_eq!(issues[0].expression.as_deref(), Some("Observation.status"));
        // In a datatype, in a repeating element, in a backbone element.
        let issues = messages(json!({
            "resourceType": "Patient",
            "name": [{"use": "official"}, {"use": "nickname", "family": "X"}, {"use": "bijnaam", "family": "Y"}],
            "telecom": [{"system": "fax", "value": "1"}, {"system": "pigeon", "value": "2"}],
            "contact": [{"gender": "unknown"}, {"gender": "M"}]
        }));
        assert_eq!(issues.len(), 3, "{issues:?}");
        let text = issues.join("\n");
        for path in [
            "Patient.name[2].use",
            "Patient.telecom[1].system",
            "Patient.contact[1].gender",
        ] {
            assert!(text.contains(path), "{path} in {text}");
        }
    }

    #[test]
    fn accepts_every_code_of_a_required_value_set() {
        for gender in ["male", "female", "other", "unknown"] {
            assert_eq!(
                issues_of(json!({"resourceType": "Patient", "gender": gender})),
                []
            );
        }
        // Nested concepts of the code system count: `corrected` sits under `amended`,
        // `maiden` under `old`.
        for status in [
            "registered",
            "final",
            "amended",
            "corrected",
            "entered-in-error",
        ] {
            let observation =
                json!({"resourceType": "Observation", "status": status, "code": {"text": "x"}});
            assert_eq!(issues_of(observation), [], "{status}");
        }
        let patient =
            json!({"resourceType": "Patient", "name": [{"use": "maiden", "family": "X"}]});
        assert_eq!(issues_of(patient), []);
        // units-of-time lists its UCUM codes itself, so it is checked although UCUM is not
        // in the definitions.
        let timing = |unit: &str| {
            json!({
                "resourceType": "MedicationRequest", "status": "active", "intent": "order",
                "medicationCodeableConcept": {"text": "x"}, "subject": {"reference": "Patient/1"},
                "dosageInstruction": [{"timing": {"repeat": {"duration": 1, "durationUnit": unit}}}]
            })
        };
        assert_eq!(issues_of(timing("h")), []);
        let issues = issues_of(timing("hour"));
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].code, IssueCode::CodeInvalid);
    }

    #[test]
    fn leaves_bindings_to_outside_terminologies_unchecked() {
        // MIME types (BCP 13) and currencies (ISO 4217) are not in the definitions.
        let issues = issues_of(json!({
            "resourceType": "DocumentReference", "status": "current",
            "content": [{"attachment": {"contentType": "application/x-zorgnet"}}]
        }));
        assert_eq!(issues, []);
        let issues = issues_of(json!({
            "resourceType": "Invoice", "status": "issued",
            "totalNet": {"value": 1, "currency": "XZZ"}
        }));
        assert_eq!(issues, []);
        let model = r4();
        let attachment = model.type_context("Attachment").unwrap();
        assert_eq!(attachment.keys["contentType"].value_set, None);
    }

    #[test]
    fn checks_codings_of_the_bound_system_only() {
        const CLINICAL: &str = "http://terminology.hl7.org/CodeSystem/condition-clinical";
        let condition = |coding: Value| {
            json!({
                "resourceType": "Condition", "subject": {"reference": "Patient/1"},
                "clinicalStatus": {"coding": coding}
            })
        };
        assert_eq!(
            issues_of(condition(json!([{"system": CLINICAL, "code": "active"}]))),
            []
        );
        assert_eq!(
            issues_of(condition(
                json!([{"system": CLINICAL, "code": "remission"}])
            )),
            []
        );
        let issues = issues_of(condition(json!([
            {"system": "http://snomed.info/sct", "code": "55561003"},
            {"system": CLINICAL, "code": "bogus"}
        ])));
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].code, IssueCode::CodeInvalid);
        assert_eq!(
            issues[0].expression.as_deref(),
            Some("Condition.clinicalStatus.coding[1].code")
        );
        assert!(issues[0].diagnostics.contains("'bogus'"), "{issues:?}");
        let issues = issues_of(condition(
            json!([{"system": CLINICAL, "display": "Active"}]),
        ));
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].code, IssueCode::CodeInvalid);
        // Another system, or text alone, is not judged.
        assert_eq!(
            issues_of(condition(
                json!([{"system": "http://snomed.info/sct", "code": "55561003"}])
            )),
            []
        );
        let text_only = json!({
            "resourceType": "Condition", "subject": {"reference": "Patient/1"},
            "clinicalStatus": {"text": "active"}
        });
        assert_eq!(issues_of(text_only), []);
    }

    #[test]
    fn refuses_control_characters_in_every_string() {
        let refused = [
            json!({"resourceType": "Patient", "name": [{"family": "Jan\u{0}sen"}]}),
            json!({"resourceType": "Patient", "name": [{"given": ["a", "b\u{1}"]}]}),
            json!({"resourceType": "Patient", "gender": "male\u{0}"}),
            json!({"resourceType": "Patient", "birthDate": "1970\u{0}"}),
            json!({"resourceType": "Patient", "implicitRules": "http://x/\u{1f}"}),
            json!({"resourceType": "Patient", "text": {"status": "generated", "div": "<div>\u{0}</div>"}}),
            json!({"resourceType": "Patient", "extension": [{"url": "http://x", "valueString": "\u{7}"}]}),
            json!({"resourceType": "Patient", "extension": [{"url": "http://x", "valueMarkdown": "a\u{0}"}]}),
            json!({"resourceType": "Patient", "name": [{"id": "n\u{0}", "family": "X"}]}),
            json!({"resourceType": "Patient", "name": [{"family": "X", "_family": {"id": "\u{0}"}}]}),
            json!({"resourceType": "Patient", "name": [{"family": "X", "_family": {"extension": [{"url": "http://x", "valueCode": "a\u{b}"}]}}]}),
            json!({"resourceType": "Patient", "name\u{0}": [{"family": "X"}]}),
            json!({"resourceType": "Patient\u{0}"}),
            json!({
                "resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "contained": [{"resourceType": "Patient", "id": "p", "name": [{"text": "\u{0}"}]}]
            }),
            json!({
                "resourceType": "Bundle", "type": "collection",
                "entry": [{"resource": {"resourceType": "Patient", "name": [{"text": "\u{c}"}]}}]
            }),
        ];
        for resource in refused {
            let issues = issues_of(resource.clone());
            assert!(
                !issues.is_empty() && issues.iter().all(|i| i.severity == Severity::Error),
                "{resource}: {issues:?}"
            );
        }
        let issues =
            messages(json!({"resourceType": "Patient", "name": [{"family": "Jan\u{0}sen"}]}));
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert!(
            issues[0].contains("Patient.name[0].family") && issues[0].contains("U+0000"),
            "{issues:?}"
        );
    }

    #[test]
    fn accepts_tab_cr_and_lf() {
        let patient = json!({
            "resourceType": "Patient",
            "name": [{"text": "Jan\tJansen\r\nAmsterdam\n"}],
            "extension": [{"url": "http://x", "valueMarkdown": "# a\n\n* b\r\n"}],
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">\n\t<p>x</p>\r\n</div>"}
        });
        assert_eq!(issues_of(patient), []);
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let mut extension = json!({"url": "http://x", "valueString": "leaf"});
        for _ in 0..200 {
            extension = json!({"url": "http://x", "extension": [extension]});
        }
        let issues = messages(json!({"resourceType": "Patient", "extension": [extension]}));
        assert!(
            issues.iter().any(|i| i.contains("nested too deeply")),
            "{issues:?}"
        );
    }
}
