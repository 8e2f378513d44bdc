//! Type knowledge from the R4 model: which JSON keys hold which element (choice types
//! included), the FHIR type of each node, and the type hierarchy `is`/`as`/`ofType` use.

use std::sync::Arc;

use serde_json::{Map, Value};
use zorgnet_fhir::model::{ElementKind, ElementRule, Model, r4};

use crate::error::EvalError;
use crate::item::{Item, Node, NodeKind};
use crate::parser::TypeSpec;

/// The UCUM code system.
pub(crate) const UCUM_URL: &str = "http://unitsofmeasure.org";

const SYSTEM_TYPE_PREFIX: &str = "http://hl7.org/fhirpath/System.";

pub(crate) fn model() -> &'static Model {
    r4()
}

/// A node for JSON whose type is not known from a parent: a resource when it has a known
/// `resourceType`, otherwise typed from the JSON kind.
pub(crate) fn node_for_untyped(value: &Value) -> Node<'_> {
    if let Some(node) = resource_node(value) {
        return node;
    }
    inferred_node(Some(value), None)
}

/// A node for a resource object.
pub(crate) fn resource_node(value: &Value) -> Option<Node<'_>> {
    let resource_type = value.get("resourceType")?.as_str()?;
    let context = model().types.get(resource_type).and_then(|t| t.context);
    Some(Node {
        value: Some(value),
        extension: None,
        type_name: resource_type,
        context,
        kind: NodeKind::Resource,
    })
}

fn inferred_node<'a>(value: Option<&'a Value>, extension: Option<&'a Value>) -> Node<'a> {
    let (type_name, kind) = match value {
        Some(Value::Bool(_)) => ("boolean", NodeKind::Primitive),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => ("integer", NodeKind::Primitive),
        Some(Value::Number(_)) => ("decimal", NodeKind::Primitive),
        Some(Value::String(_)) | None => ("string", NodeKind::Primitive),
        Some(other) => {
            if let Some(node) = resource_node(other) {
                return node;
            }
            ("Element", NodeKind::Complex)
        }
    };
    Node {
        value,
        extension,
        type_name,
        context: None,
        kind,
    }
}

/// The FHIR type name of a rule, with the System types of a few R4 elements (`Extension.url`,
/// `Resource.id`, …) mapped to their FHIR primitives.
fn rule_type_name(rule: &'static ElementRule) -> &'static str {
    match rule.type_name.strip_prefix(SYSTEM_TYPE_PREFIX) {
        Some("String") => "string",
        Some("Boolean") => "boolean",
        Some("Integer") => "integer",
        Some("Decimal") => "decimal",
        Some("Date") => "date",
        Some("DateTime") => "dateTime",
        Some("Time") => "time",
        Some(_) => "string",
        None => &rule.type_name,
    }
}

/// Pushes the nodes under `key` of `object`, typed by `rule` (or from the JSON without one).
fn push_key<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    rule: Option<&'static ElementRule>,
    in_resource: bool,
    out: &mut Vec<Item<'a>>,
) {
    let value = object.get(key);
    let primitive = match rule {
        Some(rule) => matches!(rule.kind, ElementKind::Primitive(_)),
        None => {
            !matches!(value, Some(Value::Object(_)) | Some(Value::Array(_))) || {
                // An array of primitives.
                value
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().all(|v| !v.is_object()))
            }
        }
    };
    let extension = if primitive {
        object
            .iter()
            .find(|(k, _)| k.strip_prefix('_') == Some(key))
            .map(|(_, v)| v)
    } else {
        None
    };
    if value.is_none() && extension.is_none() {
        return;
    }
    let make = |value: Option<&'a Value>, extension: Option<&'a Value>| -> Option<Node<'a>> {
        let value = value.filter(|v| !v.is_null());
        let extension = extension.filter(|v| !v.is_null());
        if value.is_none() && extension.is_none() {
            return None;
        }
        let Some(rule) = rule else {
            return Some(inferred_node(value, extension));
        };
        Some(match rule.kind {
            ElementKind::Primitive(_) => Node {
                value,
                extension,
                type_name: if in_resource && key == "id" {
                    "id"
                } else {
                    rule_type_name(rule)
                },
                context: None,
                kind: NodeKind::Primitive,
            },
            ElementKind::Complex(context) => Node {
                value,
                extension: None,
                type_name: rule_type_name(rule),
                context: Some(context),
                kind: NodeKind::Complex,
            },
            ElementKind::Resource => value
                .and_then(resource_node)
                .unwrap_or_else(|| inferred_node(value, extension)),
        })
    };
    match (value, extension) {
        (Some(Value::Array(values)), ext) => {
            let exts = ext.and_then(Value::as_array);
            for (i, v) in values.iter().enumerate() {
                if let Some(node) = make(Some(v), exts.and_then(|e| e.get(i))) {
                    out.push(Item::Node(node));
                }
            }
            // Extensions beyond the values (malformed, but reachable).
            if let Some(exts) = exts {
                for e in exts.iter().skip(values.len()) {
                    if let Some(node) = make(None, Some(e)) {
                        out.push(Item::Node(node));
                    }
                }
            }
        }
        (None, Some(Value::Array(exts))) => {
            for e in exts {
                if let Some(node) = make(None, Some(e)) {
                    out.push(Item::Node(node));
                }
            }
        }
        (value, ext) => {
            if let Some(node) = make(value, ext) {
                out.push(Item::Node(node));
            }
        }
    }
}

fn is_choice_of(rule: &ElementRule, name: &str) -> bool {
    rule.name.len() == name.len() + 3 && rule.name.starts_with(name) && rule.name.ends_with("[x]")
}

/// The rule of `id` or `extension` on any element (from `Extension`, which has both).
fn element_rule(name: &str) -> Option<&'static ElementRule> {
    model()
        .type_context("Extension")
        .and_then(|c| c.keys.get(name))
}

/// Whether a node's type defines an element name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The type defines the element (present or not).
    Known,
    /// The type is known and does not define it.
    Unknown,
    /// The node's type is not known (JSON the model does not describe).
    Untyped,
}

/// The children of `node` named `name` (choice elements by their base name: `value` finds
/// `valueQuantity`). In strict mode a choice key used directly (`valueQuantity`) is an
/// error; whether the name is an element at all is returned for the caller to judge over
/// the whole input collection.
pub(crate) fn children_named<'a>(
    node: &Node<'a>,
    name: &str,
    strict: bool,
    out: &mut Vec<Item<'a>>,
) -> Result<Lookup, EvalError> {
    match node.kind {
        NodeKind::ReferenceTarget => {
            if name == "id"
                && let Some((_, id)) = node.value.and_then(Value::as_str).and_then(reference_parts)
            {
                out.push(Item::String(Arc::from(id)));
            }
            Ok(Lookup::Known)
        }
        NodeKind::Primitive => {
            if name != "extension" && name != "id" {
                return Ok(Lookup::Unknown);
            }
            if let Some(Value::Object(object)) = node.extension {
                push_key(object, name, element_rule(name), false, out);
            }
            Ok(Lookup::Known)
        }
        NodeKind::Complex | NodeKind::Resource => {
            let Some(Value::Object(object)) = node.value else {
                return Ok(Lookup::Untyped);
            };
            let in_resource = node.kind == NodeKind::Resource;
            let Some(context_id) = node.context else {
                push_key(object, name, None, in_resource, out);
                return Ok(Lookup::Untyped);
            };
            let context = &model().contexts[context_id];
            if let Some(rule) = context.keys.get(name) {
                if strict && rule.name != name {
                    return Err(EvalError::UnknownElement {
                        name: name.to_string(),
                        type_name: node.type_name.to_string(),
                    });
                }
                push_key(object, name, Some(rule), in_resource, out);
                return Ok(Lookup::Known);
            }
            for key in object.keys() {
                if key.len() > name.len()
                    && key.starts_with(name)
                    && key.as_bytes()[name.len()].is_ascii_uppercase()
                    && let Some(rule) = context.keys.get(key.as_str())
                    && is_choice_of(rule, name)
                {
                    push_key(object, key, Some(rule), in_resource, out);
                    return Ok(Lookup::Known);
                }
            }
            if context.keys.values().any(|rule| is_choice_of(rule, name)) {
                return Ok(Lookup::Known);
            }
            // A key the model does not know is still reachable, typed from its JSON.
            push_key(object, name, None, in_resource, out);
            Ok(Lookup::Unknown)
        }
    }
}

/// All children of `node`, in document order.
pub(crate) fn all_children<'a>(node: &Node<'a>, out: &mut Vec<Item<'a>>) {
    match node.kind {
        NodeKind::ReferenceTarget => {}
        NodeKind::Primitive => {
            if let Some(Value::Object(object)) = node.extension {
                for key in ["id", "extension"] {
                    push_key(object, key, element_rule(key), false, out);
                }
            }
        }
        NodeKind::Complex | NodeKind::Resource => {
            let Some(Value::Object(object)) = node.value else {
                return;
            };
            let in_resource = node.kind == NodeKind::Resource;
            let context = node.context.map(|id| &model().contexts[id]);
            for key in object.keys() {
                if key == "resourceType" || key == "fhir_comments" {
                    continue;
                }
                let key = match key.strip_prefix('_') {
                    // Primitive extensions go with their value, or alone when it is absent.
                    Some(base) if object.contains_key(base) => continue,
                    Some(base) => base,
                    None => key.as_str(),
                };
                let rule = context.and_then(|c| c.keys.get(key));
                push_key(object, key, rule, in_resource, out);
            }
        }
    }
}

/// `(type, id)` of a relative or absolute literal reference (`Patient/123`,
/// `http://x/fhir/Patient/123/_history/2`).
pub(crate) fn reference_parts(reference: &str) -> Option<(&str, &str)> {
    let reference = match reference.find("/_history/") {
        Some(at) => &reference[..at],
        None => reference,
    };
    let mut parts = reference.rsplit('/');
    let id = parts.next()?;
    let resource_type = parts.next()?;
    (model().is_resource_type(resource_type) && !id.is_empty()).then_some((resource_type, id))
}

/// A node standing for the target of `reference` when only its type and id are known.
pub(crate) fn reference_target<'a>(reference_value: &'a Value) -> Option<Node<'a>> {
    let (resource_type, _) = reference_parts(reference_value.as_str()?)?;
    let (type_name, info) = model().types.get_key_value(resource_type)?;
    Some(Node {
        value: Some(reference_value),
        extension: None,
        type_name: type_name.as_str(),
        context: info.context,
        kind: NodeKind::ReferenceTarget,
    })
}

/// A type a specifier names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TypeRef {
    /// A FHIR type (`Patient`, `string`, `Quantity`).
    Fhir(String),
    /// A System type (`String`, `Integer`, …).
    System(&'static str),
    /// A System name that is no System type (`System.Patient`): nothing is of it.
    Nothing,
}

const SYSTEM_TYPES: &[&str] = &[
    "Boolean", "Integer", "Decimal", "String", "Date", "DateTime", "Time", "Quantity",
];

fn system_type(name: &str) -> Option<&'static str> {
    SYSTEM_TYPES.iter().find(|t| **t == name).copied()
}

fn is_fhir_type(name: &str) -> bool {
    model().types.contains_key(name)
        || matches!(
            name,
            "Resource" | "DomainResource" | "Element" | "BackboneElement"
        )
}

/// The type a specifier names: unqualified names are FHIR types first, then System types.
pub(crate) fn resolve_type(spec: &TypeSpec) -> Result<TypeRef, EvalError> {
    let unknown = || {
        EvalError::UnknownType(match &spec.namespace {
            Some(ns) => format!("{ns}.{}", spec.name),
            None => spec.name.clone(),
        })
    };
    match spec.namespace.as_deref() {
        Some("System") => Ok(system_type(&spec.name).map_or(TypeRef::Nothing, TypeRef::System)),
        Some("FHIR") => {
            if is_fhir_type(&spec.name) {
                Ok(TypeRef::Fhir(spec.name.clone()))
            } else {
                Err(unknown())
            }
        }
        Some(_) => Err(unknown()),
        None => {
            if is_fhir_type(&spec.name) {
                Ok(TypeRef::Fhir(spec.name.clone()))
            } else {
                system_type(&spec.name)
                    .map(TypeRef::System)
                    .ok_or_else(unknown)
            }
        }
    }
}

/// The base type of a FHIR type, as FHIRPath sees the hierarchy.
pub(crate) fn parent_type(name: &str) -> Option<&'static str> {
    Some(match name {
        "code" | "id" | "markdown" => "string",
        "url" | "canonical" | "oid" | "uuid" => "uri",
        "positiveInt" | "unsignedInt" => "integer",
        "Age" | "Count" | "Distance" | "Duration" | "MoneyQuantity" | "SimpleQuantity" => {
            "Quantity"
        }
        "BackboneElement" => "Element",
        "Bundle" | "Binary" | "Parameters" | "DomainResource" => "Resource",
        "Resource" | "Element" => return None,
        other => match model().types.get(other).map(|t| t.kind.as_str()) {
            Some("resource") => "DomainResource",
            Some("complex-type") => "Element",
            _ => return None,
        },
    })
}

/// Whether FHIR type `name` is `target` or derives from it. With `exact_primitives`, a
/// primitive matches only itself (`code` is not taken `as(string)`).
pub(crate) fn derives_from(name: &str, target: &str, exact_primitives: bool) -> bool {
    if name == target {
        return true;
    }
    if exact_primitives && name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return false;
    }
    let mut current = name;
    for _ in 0..8 {
        match parent_type(current) {
            Some(parent) if parent == target => return true,
            Some(parent) => current = parent,
            None => return false,
        }
    }
    false
}

/// Whether an item is of a type (`is`), or with `exact_primitives` (`as`, `ofType`).
pub(crate) fn item_is(item: &Item<'_>, type_ref: &TypeRef, exact_primitives: bool) -> bool {
    match (item, type_ref) {
        (Item::Node(node), TypeRef::Fhir(name)) => {
            derives_from(node.type_name, name, exact_primitives)
        }
        (_, TypeRef::Nothing) | (Item::Node(_), TypeRef::System(_)) => false,
        (Item::Quantity(_), TypeRef::Fhir(name)) => name == "Quantity",
        (Item::TypeInfo(_), _) | (_, TypeRef::Fhir(_)) => false,
        (other, TypeRef::System(name)) => other.prim().is_some_and(|p| p.system_name() == *name),
    }
}
