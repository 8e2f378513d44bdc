//! A StructureDefinition compiled for validation: its elements (from the snapshot, or from
//! the differential merged onto the base profile's elements) arranged as a tree by element id,
//! with what each element constrains.
//!
//! The tree holds only what the definition says. Elements the definition leaves alone need
//! not be there: the base structure is the business of `zorgnet_fhir::validate_resource`.

use crate::{MAX_ELEMENTS_PER_DEFINITION, ProfileError};
use serde_json::{Map, Value};
use std::collections::HashMap;
use zorgnet_fhirpath::Expression;

/// Index of an element in [`Definition::elements`].
pub(crate) type ElementIndex = usize;

/// A compiled StructureDefinition.
#[derive(Debug)]
pub struct Definition {
    /// Canonical URL.
    pub url: String,
    /// `version`, if given.
    pub version: Option<String>,
    /// `name` (or `title`, or the URL): how messages name it.
    pub name: String,
    /// The type it constrains (`Patient`, `Extension`, `HumanName`).
    pub type_name: String,
    /// `kind`: `resource`, `complex-type`, `primitive-type`.
    pub kind: String,
    /// Where its elements came from: the snapshot, or the differential merged onto the base.
    pub source: ElementSource,
    pub(crate) elements: Vec<Element>,
}

/// Where a definition's elements came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementSource {
    /// The StructureDefinition's own snapshot.
    Snapshot,
    /// Its differential, merged onto its base profile's elements (or, for a base R4 type,
    /// onto nothing: the base structure is checked by the base validator).
    Differential,
}

/// A type an element may have, with its profiles.
#[derive(Debug, Clone)]
pub(crate) struct TypeRef {
    pub code: String,
    pub profiles: Vec<String>,
}

/// A binding of an element to a value set.
#[derive(Debug, Clone)]
pub(crate) struct Binding {
    pub strength: String,
    pub value_set: String,
}

/// An invariant.
#[derive(Debug, Clone)]
pub(crate) struct Constraint {
    pub key: String,
    pub error: bool,
    pub human: String,
    pub source_text: String,
    pub expression: Result<Expression, String>,
}

/// How a repeating element is sliced.
#[derive(Debug, Clone)]
pub(crate) struct Slicing {
    pub discriminators: Vec<(String, String)>,
    pub rules: String,
}

/// One element definition.
#[derive(Debug, Clone)]
pub(crate) struct Element {
    pub id: String,
    pub path: String,
    /// The last path segment (`value[x]`, `coding`).
    pub name: String,
    pub slice_name: Option<String>,
    pub min: Option<u32>,
    /// `None`: not given; `Some(None)`: `*`.
    pub max: Option<Option<u32>>,
    pub types: Vec<TypeRef>,
    pub fixed: Option<Value>,
    pub pattern: Option<Value>,
    pub binding: Option<Binding>,
    pub constraints: Vec<Constraint>,
    pub slicing: Option<Slicing>,
    /// Child elements (`id` = this id + `.name`), in order.
    pub children: Vec<ElementIndex>,
    /// Slices of this element (`id` = this id + `:slice`), in order.
    pub slices: Vec<ElementIndex>,
    /// The raw element, for merging a differential onto it.
    raw: Map<String, Value>,
}

impl Definition {
    /// How many elements the compiled definition holds.
    pub fn element_count(&self) -> usize {
        self.elements.len()
    }

    /// How messages name it: `name (url)`.
    pub(crate) fn label(&self) -> String {
        format!("{} ({})", self.name, self.url)
    }

    /// Compiles from a list of raw elements (a snapshot, or a merged differential).
    pub(crate) fn compile(
        sd: &Map<String, Value>,
        raw_elements: Vec<Map<String, Value>>,
        source: ElementSource,
    ) -> Result<Definition, ProfileError> {
        let url = text(sd, "url").unwrap_or_default();
        let type_name = text(sd, "type").ok_or_else(|| {
            ProfileError::Invalid(format!("StructureDefinition {url} has no type"))
        })?;
        if raw_elements.len() > MAX_ELEMENTS_PER_DEFINITION {
            return Err(ProfileError::TooLarge(format!(
                "StructureDefinition {url} has {} elements, more than MAX_ELEMENTS_PER_DEFINITION \
                 ({MAX_ELEMENTS_PER_DEFINITION})",
                raw_elements.len()
            )));
        }
        let mut elements: Vec<Element> = Vec::with_capacity(raw_elements.len() + 1);
        let mut by_id: HashMap<String, ElementIndex> = HashMap::new();
        // The root first, even when a differential does not list it.
        let root_raw = match raw_elements.first() {
            Some(first) if element_id(first).as_deref() == Some(type_name.as_str()) => None,
            _ => {
                let mut root = Map::new();
                root.insert("id".into(), Value::String(type_name.clone()));
                root.insert("path".into(), Value::String(type_name.clone()));
                Some(root)
            }
        };
        for raw in root_raw.into_iter().chain(raw_elements) {
            let Some(id) = element_id(&raw) else {
                continue;
            };
            if by_id.contains_key(&id) {
                continue;
            }
            let element = Element::from_raw(id.clone(), raw)?;
            by_id.insert(id, elements.len());
            elements.push(element);
        }
        // Elements a differential skips on the way down (`Patient.contact` above
        // `Patient.contact.name`) are made, bare.
        let mut index = 1;
        while index < elements.len() && elements.len() <= MAX_ELEMENTS_PER_DEFINITION {
            if let (Some(parent), _) = parent_of(&elements[index].id)
                && !by_id.contains_key(&parent)
            {
                let mut raw = Map::new();
                raw.insert("id".into(), Value::String(parent.clone()));
                raw.insert("path".into(), Value::String(strip_slices(&parent)));
                if let Some(slice) = parent
                    .rsplit('.')
                    .next()
                    .and_then(|last| last.split_once(':'))
                    .map(|(_, s)| s.to_string())
                {
                    raw.insert("sliceName".into(), Value::String(slice));
                }
                by_id.insert(parent.clone(), elements.len());
                elements.push(Element::from_raw(parent, raw)?);
            }
            index += 1;
        }
        // Link children and slices by id.
        for index in 1..elements.len() {
            let id = elements[index].id.clone();
            let (parent_id, is_slice) = parent_of(&id);
            let Some(parent) = parent_id.and_then(|p| find_parent(&by_id, &p)) else {
                continue;
            };
            if parent == index {
                continue;
            }
            if is_slice {
                elements[parent].slices.push(index);
            } else {
                elements[parent].children.push(index);
            }
        }
        Ok(Definition {
            name: text(sd, "name")
                .or_else(|| text(sd, "title"))
                .unwrap_or_else(|| url.clone()),
            url,
            version: text(sd, "version"),
            type_name,
            kind: text(sd, "kind").unwrap_or_default(),
            source,
            elements,
        })
    }

    /// The raw elements in order, for deriving another definition from this one.
    pub(crate) fn raw_elements(&self) -> Vec<Map<String, Value>> {
        self.elements.iter().map(|e| e.raw.clone()).collect()
    }
}

/// Finds the parent element, also when an intermediate element is missing (a differential
/// that names `Patient.identifier:bsn.system` without `Patient.identifier:bsn`): then the
/// closest existing ancestor is not used, and the element is left unlinked.
fn find_parent(by_id: &HashMap<String, ElementIndex>, parent: &str) -> Option<ElementIndex> {
    by_id.get(parent).copied()
}

/// The id of an element's parent and whether the element is a slice of it:
/// `Patient.identifier:bsn` → (`Patient.identifier`, slice); `Patient.identifier:bsn.system`
/// → (`Patient.identifier:bsn`, child); `a:s/t` (a reslice) → (`a:s`, slice).
pub(crate) fn parent_of(id: &str) -> (Option<String>, bool) {
    let last_dot = id.rfind('.');
    let last_segment = match last_dot {
        Some(dot) => &id[dot + 1..],
        None => id,
    };
    if let Some(colon) = last_segment.rfind(':') {
        let slice = &last_segment[colon + 1..];
        let base_end = id.len() - last_segment.len() + colon;
        if let Some(slash) = slice.rfind('/') {
            let parent = format!("{}:{}", &id[..base_end], &slice[..slash]);
            return (Some(parent), true);
        }
        return (Some(id[..base_end].to_string()), true);
    }
    (last_dot.map(|dot| id[..dot].to_string()), false)
}

/// An element's id, or one made from its path and slice name.
pub(crate) fn element_id(raw: &Map<String, Value>) -> Option<String> {
    if let Some(id) = text(raw, "id") {
        return Some(id);
    }
    let path = text(raw, "path")?;
    Some(match text(raw, "sliceName") {
        Some(slice) => format!("{path}:{slice}"),
        None => path,
    })
}

pub(crate) fn text(object: &Map<String, Value>, key: &str) -> Option<String> {
    object.get(key).and_then(Value::as_str).map(String::from)
}

/// The value of the first key `prefix…` (`fixedUri`, `patternCodeableConcept`).
fn prefixed<'a>(raw: &'a Map<String, Value>, prefix: &str) -> Option<&'a Value> {
    raw.iter()
        .find(|(k, _)| {
            k.strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()))
        })
        .map(|(_, v)| v)
}

impl Element {
    fn from_raw(id: String, raw: Map<String, Value>) -> Result<Element, ProfileError> {
        let path = text(&raw, "path").unwrap_or_else(|| strip_slices(&id));
        let name = path.rsplit('.').next().unwrap_or(&path).to_string();
        let min = raw
            .get("min")
            .and_then(Value::as_u64)
            .map(|m| u32::try_from(m).unwrap_or(u32::MAX));
        let max = raw.get("max").and_then(Value::as_str).map(|m| {
            if m == "*" {
                None
            } else {
                Some(m.parse::<u32>().unwrap_or(u32::MAX))
            }
        });
        let types = raw
            .get("type")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| {
                let code = t.get("code")?.as_str()?.to_string();
                let profiles = t
                    .get("profile")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect();
                Some(TypeRef { code, profiles })
            })
            .collect();
        let binding = raw.get("binding").and_then(|b| {
            Some(Binding {
                strength: b.get("strength")?.as_str()?.to_string(),
                value_set: b.get("valueSet")?.as_str()?.to_string(),
            })
        });
        let constraints = raw
            .get("constraint")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| {
                let key = c.get("key")?.as_str()?.to_string();
                let expression = c.get("expression")?.as_str()?.to_string();
                Some(Constraint {
                    error: c.get("severity").and_then(Value::as_str) != Some("warning"),
                    human: c
                        .get("human")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    expression: Expression::parse(&expression).map_err(|e| e.to_string()),
                    source_text: expression,
                    key,
                })
            })
            .collect();
        let slicing = raw.get("slicing").map(|s| Slicing {
            discriminators: s
                .get("discriminator")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|d| {
                    Some((
                        d.get("type")?.as_str()?.to_string(),
                        d.get("path")?.as_str()?.to_string(),
                    ))
                })
                .collect(),
            rules: s
                .get("rules")
                .and_then(Value::as_str)
                .unwrap_or("open")
                .to_string(),
        });
        Ok(Element {
            slice_name: text(&raw, "sliceName"),
            fixed: prefixed(&raw, "fixed").cloned(),
            pattern: prefixed(&raw, "pattern").cloned(),
            id,
            path,
            name,
            min,
            max,
            types,
            binding,
            constraints,
            slicing,
            children: Vec::new(),
            slices: Vec::new(),
            raw,
        })
    }

    /// True when the element is a choice (`value[x]`).
    pub(crate) fn choice_stem(&self) -> Option<&str> {
        self.name.strip_suffix("[x]")
    }
}

/// `Patient.identifier:bsn.system` → `Patient.identifier.system`.
fn strip_slices(id: &str) -> String {
    id.split('.')
        .map(|segment| segment.split(':').next().unwrap_or(segment))
        .collect::<Vec<_>>()
        .join(".")
}

/// Merges a differential onto base elements: each differential element replaces the
/// properties it sets on the base element of the same id, or is inserted after the last
/// element of its parent's subtree when it is new (a slice, or an element inside a datatype).
pub(crate) fn merge_differential(
    mut base: Vec<Map<String, Value>>,
    differential: &[Value],
) -> Vec<Map<String, Value>> {
    for raw in differential {
        let Some(object) = raw.as_object() else {
            continue;
        };
        let Some(id) = element_id(object) else {
            continue;
        };
        if let Some(existing) = base
            .iter_mut()
            .find(|e| element_id(e).as_deref() == Some(id.as_str()))
        {
            for (key, value) in object {
                // Constraints add up; everything else is replaced.
                if key == "constraint"
                    && let (Some(Value::Array(old)), Value::Array(new)) =
                        (existing.get_mut("constraint"), value)
                {
                    for c in new {
                        if !old.contains(c) {
                            old.push(c.clone());
                        }
                    }
                    continue;
                }
                existing.insert(key.clone(), value.clone());
            }
            continue;
        }
        let mut element = object.clone();
        element.insert("id".into(), Value::String(id.clone()));
        // A new slice inherits what its sliced element says of types and bindings.
        let (parent, is_slice) = parent_of(&id);
        if is_slice
            && let Some(parent) = &parent
            && let Some(sliced) = base
                .iter()
                .find(|e| element_id(e).as_deref() == Some(parent.as_str()))
        {
            for key in ["type", "binding"] {
                if !element.contains_key(key)
                    && let Some(v) = sliced.get(key)
                {
                    element.insert(key.into(), v.clone());
                }
            }
        }
        // Insert after the last element whose id starts with the parent's id.
        let position = parent
            .as_deref()
            .and_then(|p| {
                base.iter().rposition(|e| {
                    element_id(e).is_some_and(|eid| {
                        eid == p
                            || eid.starts_with(&format!("{p}."))
                            || eid.starts_with(&format!("{p}:"))
                    })
                })
            })
            .map_or(base.len(), |i| i + 1);
        base.insert(position, element);
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_of_ids() {
        assert_eq!(
            parent_of("Patient.identifier:bsn"),
            (Some("Patient.identifier".into()), true)
        );
        assert_eq!(
            parent_of("Patient.identifier:bsn.system"),
            (Some("Patient.identifier:bsn".into()), false)
        );
        assert_eq!(
            parent_of("Observation.value[x]:valueQuantity"),
            (Some("Observation.value[x]".into()), true)
        );
        assert_eq!(parent_of("Patient"), (None, false));
        assert_eq!(parent_of("a.b:s/t"), (Some("a.b:s".into()), true));
    }
}
