//! Compiles the FHIRPath expressions of search parameters into typed JSON paths.
//!
//! Search expressions in R4 are almost all simple: `Patient.name`, `(Observation.value as
//! Quantity)`, `Condition.subject.where(resolve() is Patient)`, `Patient.telecom.where(system='email')`.
//! Those forms are compiled against the type model, so every path knows the JSON keys it walks
//! (choice elements expanded to `valueQuantity`, …) and the FHIR type it ends on. Anything
//! else (`exists()`, `extension(…)`, indexers) is reported as unsupported, and the parameter is
//! then not offered for that resource type — the CapabilityStatement stays honest.

use crate::model::{ElementKind, Model, capitalise};
use serde_json::Value;

/// One step through a JSON document.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Step {
    /// The JSON key.
    pub key: String,
    /// Keep only items whose child `.0` equals the string `.1` (from `where(x='y')`).
    pub filter: Option<(String, String)>,
}

/// A path from a resource root to values of one FHIR type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CompiledPath {
    /// Steps from the root.
    pub steps: Vec<Step>,
    /// FHIR type of the values reached (`CodeableConcept`, `date`, `Reference`, …).
    pub leaf_type: String,
    /// From `where(resolve() is T)`: only references to this resource type count.
    pub reference_type: Option<String>,
    /// For a `code` leaf bound to one code system: that system (see
    /// [`crate::model::ElementRule::code_system`]).
    pub leaf_code_system: Option<String>,
}

impl CompiledPath {
    /// Collects the values this path reaches in `resource`.
    pub fn values<'a>(&self, resource: &'a Value, out: &mut Vec<&'a Value>) {
        collect(resource, &self.steps, out);
    }
}

fn collect<'a>(value: &'a Value, steps: &[Step], out: &mut Vec<&'a Value>) {
    let Some((step, rest)) = steps.split_first() else {
        out.push(value);
        return;
    };
    let Some(child) = value.as_object().and_then(|o| o.get(&step.key)) else {
        return;
    };
    let items: &[Value] = match child {
        Value::Array(items) => items,
        single => std::slice::from_ref(single),
    };
    for item in items {
        if let Some((field, expected)) = &step.filter
            && item.get(field).and_then(Value::as_str) != Some(expected.as_str())
        {
            continue;
        }
        collect(item, rest, out);
    }
}

/// Compiles the branches of `expression` that apply to `resource_type`.
/// Returns `None` if a branch for this type uses a form we cannot evaluate.
pub fn compile_expression(
    model: &Model,
    resource_type: &str,
    expression: &str,
) -> Option<Vec<CompiledPath>> {
    let mut paths = Vec::new();
    let mut applies = false;
    for branch in split_top_level(expression, '|') {
        let branch = branch.trim();
        let head = branch.trim_start_matches('(');
        let root = head.split(['.', ' ']).next().unwrap_or("");
        if root != resource_type && root != "Resource" && root != "DomainResource" {
            continue;
        }
        applies = true;
        paths.extend(compile_branch(model, resource_type, branch)?);
    }
    applies.then_some(paths)
}

#[derive(Debug)]
enum Segment {
    Name(String),
    Cast(String),
    WhereResolveIs(String),
    WhereEquals(String, String),
}

fn compile_branch(model: &Model, resource_type: &str, branch: &str) -> Option<Vec<CompiledPath>> {
    let mut text = branch.trim();
    let mut trailing_cast = None;
    if text.starts_with('(') && text.ends_with(')') {
        text = text[1..text.len() - 1].trim();
    }
    if split_top_level(text, ' ').contains(&"is") {
        return None;
    }
    let words = split_top_level(text, ' ');
    if let [path, "as", type_name] = words.as_slice() {
        trailing_cast = Some(type_name.trim().to_string());
        text = path.trim();
    } else if words.len() != 1 {
        return None;
    }
    let mut parts = split_top_level(text, '.').into_iter();
    parts.next()?;
    let mut segments = Vec::new();
    for part in parts {
        let part = part.trim();
        // `extension('url')` is `extension.where(url='url')`.
        if let Some(url) = part
            .strip_prefix("extension(")
            .and_then(|p| p.strip_suffix(')'))
            .and_then(|p| p.trim().strip_prefix('\''))
            .and_then(|p| p.strip_suffix('\''))
        {
            if url.contains('\'') {
                return None;
            }
            segments.push(Segment::Name("extension".into()));
            segments.push(Segment::WhereEquals("url".into(), url.to_string()));
            continue;
        }
        segments.push(parse_segment(part)?);
    }
    if let Some(cast) = trailing_cast {
        segments.push(Segment::Cast(cast));
    }

    let context = model.types.get(resource_type)?.context?;
    // Each path so far, with the element context its last step leads into.
    let mut partial: Vec<(CompiledPath, Option<usize>)> = vec![(
        CompiledPath {
            steps: Vec::new(),
            leaf_type: resource_type.to_string(),
            reference_type: None,
            leaf_code_system: None,
        },
        Some(context),
    )];
    let mut reference_type = None;
    let mut i = 0;
    while i < segments.len() {
        match &segments[i] {
            Segment::Name(name) => {
                let cast = match segments.get(i + 1) {
                    Some(Segment::Cast(t)) => {
                        i += 1;
                        Some(t.clone())
                    }
                    _ => None,
                };
                let mut next = Vec::new();
                for (path, context) in &partial {
                    let context = &model.contexts[(*context)?];
                    for (key, rule) in alternatives(context, name, cast.as_deref()) {
                        let mut steps = path.steps.clone();
                        steps.push(Step { key, filter: None });
                        let next_context = match rule.kind {
                            ElementKind::Complex(id) => Some(id),
                            _ => None,
                        };
                        let path = CompiledPath {
                            steps,
                            leaf_type: rule.type_name.clone(),
                            reference_type: None,
                            leaf_code_system: rule.code_system.clone(),
                        };
                        next.push((path, next_context));
                    }
                }
                if next.is_empty() {
                    return None;
                }
                partial = next;
            }
            Segment::Cast(_) => return None,
            Segment::WhereResolveIs(type_name) => reference_type = Some(type_name.clone()),
            Segment::WhereEquals(field, value) => {
                for (path, _) in &mut partial {
                    path.steps.last_mut()?.filter = Some((field.clone(), value.clone()));
                }
            }
        }
        i += 1;
    }
    Some(
        partial
            .into_iter()
            .map(|(path, _)| CompiledPath {
                reference_type: reference_type.clone(),
                ..path
            })
            .collect(),
    )
}

fn alternatives(
    context: &crate::model::Context,
    name: &str,
    cast: Option<&str>,
) -> Vec<(String, crate::model::ElementRule)> {
    if let Some(rule) = context.keys.get(name) {
        if cast.is_none() || cast == Some(rule.type_name.as_str()) {
            return vec![(name.to_string(), rule.clone())];
        }
        return Vec::new();
    }
    let choice = format!("{name}[x]");
    let mut found: Vec<(String, crate::model::ElementRule)> = context
        .keys
        .iter()
        .filter(|(_, rule)| rule.name == choice)
        .filter(|(_, rule)| cast.is_none_or(|c| c == rule.type_name))
        .map(|(k, r)| (k.clone(), r.clone()))
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    if let (Some(c), true) = (cast, found.is_empty()) {
        let key = format!("{name}{}", capitalise(c));
        if let Some(rule) = context.keys.get(&key) {
            found.push((key, rule.clone()));
        }
    }
    found
}

fn parse_segment(part: &str) -> Option<Segment> {
    if let Some(inner) = part
        .strip_prefix("where(")
        .and_then(|p| p.strip_suffix(')'))
    {
        if let Some(type_name) = inner.strip_prefix("resolve() is ") {
            return Some(Segment::WhereResolveIs(type_name.trim().to_string()));
        }
        let (field, value) = inner.split_once('=')?;
        let value = value.trim().strip_prefix('\'')?.strip_suffix('\'')?;
        let field = field.trim();
        if !field.chars().all(|c| c.is_ascii_alphanumeric()) {
            return None;
        }
        return Some(Segment::WhereEquals(field.to_string(), value.to_string()));
    }
    for function in ["as(", "ofType("] {
        if let Some(inner) = part
            .strip_prefix(function)
            .and_then(|p| p.strip_suffix(')'))
        {
            return Some(Segment::Cast(inner.trim().to_string()));
        }
    }
    if !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Some(Segment::Name(part.to_string()));
    }
    None
}

fn split_top_level(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut in_string = false;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '\'' => in_string = !in_string,
            '(' if !in_string => depth += 1,
            ')' if !in_string => depth -= 1,
            c if c == separator && depth == 0 && !in_string => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::r4;

    fn keys(paths: &[CompiledPath]) -> Vec<String> {
        paths
            .iter()
            .map(|p| {
                let keys: Vec<&str> = p.steps.iter().map(|s| s.key.as_str()).collect();
                format!("{}:{}", keys.join("."), p.leaf_type)
            })
            .collect()
    }

    #[test]
    fn simple_and_choice_paths() {
        let model = r4();
        let paths =
            compile_expression(model, "Patient", "Patient.name | Practitioner.name").unwrap();
        assert_eq!(keys(&paths), ["name:HumanName"]);
        let paths = compile_expression(model, "Observation", "Observation.effective").unwrap();
        let mut found = keys(&paths);
        found.sort();
        assert_eq!(
            found,
            [
                "effectiveDateTime:dateTime",
                "effectiveInstant:instant",
                "effectivePeriod:Period",
                "effectiveTiming:Timing"
            ]
        );
        let paths = compile_expression(
            model,
            "Observation",
            "(Observation.value as Quantity) | (Observation.value as SampledData)",
        )
        .unwrap();
        assert_eq!(
            keys(&paths),
            ["valueQuantity:Quantity", "valueSampledData:SampledData"]
        );
    }

    #[test]
    fn extension_functions_filter_by_url() {
        let model = r4();
        let url =
            "http://nictiz.nl/fhir/StructureDefinition/ext-MedicationAgreement.NextPractitioner";
        let paths = compile_expression(
            model,
            "MedicationRequest",
            &format!("MedicationRequest.extension('{url}').value"),
        )
        .unwrap();
        assert!(
            paths
                .iter()
                .any(|p| keys(std::slice::from_ref(p)) == ["extension.valueReference:Reference"])
        );
        assert!(
            paths
                .iter()
                .all(|p| p.steps[0].filter == Some(("url".into(), url.into())))
        );
        let nested = compile_expression(
            model,
            "MedicationRequest",
            "MedicationRequest.dispenseRequest.extension('http://x/y').value",
        )
        .unwrap();
        assert!(nested.iter().any(|p| keys(std::slice::from_ref(p))
            == ["dispenseRequest.extension.valueReference:Reference"]));
        assert!(compile_expression(model, "Patient", "Patient.extension('a'b').value").is_none());
    }

    #[test]
    fn where_filters() {
        let model = r4();
        let paths = compile_expression(
            model,
            "Condition",
            "Condition.subject.where(resolve() is Patient)",
        )
        .unwrap();
        assert_eq!(paths[0].reference_type.as_deref(), Some("Patient"));
        let paths =
            compile_expression(model, "Patient", "Patient.telecom.where(system='email')").unwrap();
        assert_eq!(
            paths[0].steps[0].filter,
            Some(("system".into(), "email".into()))
        );
        assert_eq!(keys(&paths), ["telecom:ContactPoint"]);
    }

    #[test]
    fn medication_cast_and_unsupported_forms() {
        let model = r4();
        let paths = compile_expression(
            model,
            "MedicationStatement",
            "(MedicationStatement.medication as CodeableConcept)",
        )
        .unwrap();
        assert_eq!(keys(&paths), ["medicationCodeableConcept:CodeableConcept"]);
        assert!(
            compile_expression(
                model,
                "Patient",
                "Patient.deceased.exists() and Patient.deceased != false"
            )
            .is_none()
        );
        assert!(compile_expression(model, "Observation", "Patient.name").is_none());
    }

    #[test]
    fn collects_values_through_arrays() {
        let model = r4();
        let paths = compile_expression(model, "Patient", "Patient.name.given").unwrap();
        let patient = serde_json::json!({"resourceType": "Patient", "name": [{"given": ["A", "B"]}, {"given": ["C"]}]});
        let mut out = Vec::new();
        paths[0].values(&patient, &mut out);
        assert_eq!(out.len(), 3);
    }
}
