//! The items of FHIRPath collections: nodes of the evaluated resource (borrowed, typed from
//! the R4 model) and the System values expressions compute.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;
use zorgnet_fhir::model::ContextId;

use crate::decimal::Decimal;
use crate::temporal::{DateTime, Time};
use crate::types;

/// A quantity: a decimal value and a unit, either a UCUM code (`'mg'`) or a FHIRPath calendar
/// keyword (`days`).
#[derive(Clone, Debug)]
pub struct Quantity {
    value: Decimal,
    unit: Arc<str>,
}

impl Quantity {
    /// A quantity of `value` in `unit` (`"1"` for no unit).
    pub fn new(value: Decimal, unit: Arc<str>) -> Quantity {
        Quantity { value, unit }
    }

    /// The value.
    pub fn value(&self) -> Decimal {
        self.value
    }

    /// The unit: a UCUM code or a calendar keyword.
    pub fn unit(&self) -> &str {
        &self.unit
    }

    /// True when the unit is a FHIRPath calendar keyword (`year`, `days`, …).
    pub fn is_calendar_unit(&self) -> bool {
        crate::ucum::calendar_to_ucum(&self.unit).is_some()
    }

    pub(crate) fn with_value(&self, value: Decimal) -> Quantity {
        Quantity {
            value,
            unit: self.unit.clone(),
        }
    }
}

impl fmt::Display for Quantity {
    /// `4.5 'mg'`, `7 days`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_calendar_unit() {
            write!(f, "{} {}", self.value, self.unit)
        } else {
            write!(f, "{} '{}'", self.value, self.unit)
        }
    }
}

/// What kind of node a [`Node`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeKind {
    /// A FHIR primitive (`string`, `date`, …): JSON value plus the `_name` sibling.
    Primitive,
    /// A complex type or backbone element: a JSON object.
    Complex,
    /// A resource: a JSON object with `resourceType`.
    Resource,
    /// The target of a reference that could not be found in the document: only its type and
    /// id are known (from the reference string in `value`).
    ReferenceTarget,
}

/// An element of the evaluated resource, borrowed from its JSON.
#[derive(Clone, Copy, Debug)]
pub struct Node<'a> {
    pub(crate) value: Option<&'a Value>,
    pub(crate) extension: Option<&'a Value>,
    pub(crate) type_name: &'a str,
    pub(crate) context: Option<ContextId>,
    pub(crate) kind: NodeKind,
}

impl<'a> Node<'a> {
    /// The JSON of the element: the primitive value, or the object of a complex element or
    /// resource. `None` for a primitive that has only extensions (`"_given": [...]`).
    pub fn json(&self) -> Option<&'a Value> {
        match self.kind {
            NodeKind::ReferenceTarget => None,
            _ => self.value,
        }
    }

    /// For a primitive, the JSON object of its `_name` sibling (its `id` and `extension`).
    pub fn primitive_extension(&self) -> Option<&'a Value> {
        self.extension
    }

    /// The FHIR type name: `Patient`, `HumanName`, `code`, `BackboneElement`, …
    pub fn type_name(&self) -> &'a str {
        self.type_name
    }

    /// True for a FHIR primitive.
    pub fn is_primitive(&self) -> bool {
        self.kind == NodeKind::Primitive
    }

    /// True for a resource (also one only known from a reference).
    pub fn is_resource(&self) -> bool {
        matches!(self.kind, NodeKind::Resource | NodeKind::ReferenceTarget)
    }

    /// A node for a whole resource, or for any JSON value of unknown type.
    pub fn from_json(value: &'a Value) -> Node<'a> {
        types::node_for_untyped(value)
    }
}

/// A `type()` result: namespace (`System`, `FHIR`) and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeInfo {
    /// `System` or `FHIR`.
    pub namespace: &'static str,
    /// The type name in that namespace.
    pub name: Arc<str>,
}

/// One item of a FHIRPath collection.
#[derive(Clone, Debug)]
pub enum Item<'a> {
    /// An element of the input.
    Node(Node<'a>),
    /// `System.Boolean`
    Boolean(bool),
    /// `System.Integer`
    Integer(i64),
    /// `System.Decimal`
    Decimal(Decimal),
    /// `System.String`
    String(Arc<str>),
    /// `System.Date`
    Date(DateTime),
    /// `System.DateTime`
    DateTime(DateTime),
    /// `System.Time`
    Time(Time),
    /// `System.Quantity`
    Quantity(Quantity),
    /// The result of `type()`.
    TypeInfo(TypeInfo),
}

/// A System-typed view of an item, borrowing where it can.
#[derive(Clone, Debug)]
pub(crate) enum Prim<'x> {
    Boolean(bool),
    Integer(i64),
    Decimal(Decimal),
    String(&'x str),
    Date(DateTime),
    DateTime(DateTime),
    Time(Time),
    Quantity(Cow<'x, Quantity>),
}

impl Prim<'_> {
    pub(crate) fn system_name(&self) -> &'static str {
        match self {
            Prim::Boolean(_) => "Boolean",
            Prim::Integer(_) => "Integer",
            Prim::Decimal(_) => "Decimal",
            Prim::String(_) => "String",
            Prim::Date(_) => "Date",
            Prim::DateTime(_) => "DateTime",
            Prim::Time(_) => "Time",
            Prim::Quantity(_) => "Quantity",
        }
    }
}

fn json_number_prim(number: &serde_json::Number) -> Option<Prim<'static>> {
    if let Some(i) = number.as_i64() {
        return Some(Prim::Integer(i));
    }
    Decimal::parse(&number.to_string()).map(Prim::Decimal)
}

impl<'a> Item<'a> {
    /// A string item.
    pub fn string(text: &str) -> Item<'a> {
        Item::String(Arc::from(text))
    }

    /// A node item for JSON of unknown type (a resource when it has `resourceType`).
    pub fn from_json(value: &'a Value) -> Item<'a> {
        Item::Node(Node::from_json(value))
    }

    /// The node, when the item is one.
    pub fn as_node(&self) -> Option<&Node<'a>> {
        match self {
            Item::Node(node) => Some(node),
            _ => None,
        }
    }

    /// The FHIR type name of the item: the element's type for nodes (`Reference`, `code`,
    /// `Patient`), and for computed values the FHIR primitive that holds them (`boolean`,
    /// `integer`, `decimal`, `string`, `date`, `dateTime`, `time`) or `Quantity`.
    pub fn type_name(&self) -> &str {
        match self {
            Item::Node(node) => node.type_name,
            Item::Boolean(_) => "boolean",
            Item::Integer(_) => "integer",
            Item::Decimal(_) => "decimal",
            Item::String(_) => "string",
            Item::Date(_) => "date",
            Item::DateTime(_) => "dateTime",
            Item::Time(_) => "time",
            Item::Quantity(_) => "Quantity",
            Item::TypeInfo(_) => "TypeInfo",
        }
    }

    /// `FHIR` for nodes, `System` for computed values.
    pub fn namespace(&self) -> &'static str {
        match self {
            Item::Node(_) => "FHIR",
            _ => "System",
        }
    }

    /// The System-typed value of a primitive or quantity, if any.
    pub(crate) fn prim(&self) -> Option<Prim<'_>> {
        Some(match self {
            Item::Boolean(b) => Prim::Boolean(*b),
            Item::Integer(i) => Prim::Integer(*i),
            Item::Decimal(d) => Prim::Decimal(*d),
            Item::String(s) => Prim::String(s),
            Item::Date(d) => Prim::Date(*d),
            Item::DateTime(d) => Prim::DateTime(*d),
            Item::Time(t) => Prim::Time(*t),
            Item::Quantity(q) => Prim::Quantity(Cow::Borrowed(q)),
            Item::TypeInfo(_) => return None,
            Item::Node(node) => return node_prim(node),
        })
    }

    /// The value as the JSON FHIR would hold it: the element's JSON for nodes (`null` for a
    /// primitive with only extensions), and for computed values a boolean, number or string
    /// in FHIR format; a quantity becomes a FHIR Quantity object (UCUM system when the unit
    /// is a UCUM code).
    pub fn to_json(&self) -> Value {
        match self {
            Item::Node(node) => match node.kind {
                NodeKind::ReferenceTarget => {
                    let id = node
                        .value
                        .and_then(Value::as_str)
                        .and_then(|r| types::reference_parts(r).map(|(_, id)| id.to_string()));
                    let mut object = serde_json::Map::new();
                    object.insert("resourceType".into(), Value::from(node.type_name));
                    if let Some(id) = id {
                        object.insert("id".into(), Value::from(id));
                    }
                    Value::Object(object)
                }
                _ => node.value.cloned().unwrap_or(Value::Null),
            },
            Item::Boolean(b) => Value::Bool(*b),
            Item::Integer(i) => Value::from(*i),
            Item::Decimal(d) => decimal_json(d),
            Item::String(s) => Value::from(s.as_ref()),
            Item::Date(d) | Item::DateTime(d) => Value::from(d.to_string()),
            Item::Time(t) => Value::from(t.to_string()),
            Item::Quantity(q) => {
                let mut object = serde_json::Map::new();
                object.insert("value".into(), decimal_json(&q.value));
                match crate::ucum::calendar_to_ucum(&q.unit) {
                    Some(code) => {
                        object.insert("unit".into(), Value::from(q.unit.as_ref()));
                        object.insert("system".into(), Value::from(types::UCUM_URL));
                        object.insert("code".into(), Value::from(code));
                    }
                    None => {
                        object.insert("unit".into(), Value::from(q.unit.as_ref()));
                        object.insert("system".into(), Value::from(types::UCUM_URL));
                        object.insert("code".into(), Value::from(q.unit.as_ref()));
                    }
                }
                Value::Object(object)
            }
            Item::TypeInfo(t) => {
                let mut object = serde_json::Map::new();
                object.insert("namespace".into(), Value::from(t.namespace));
                object.insert("name".into(), Value::from(t.name.as_ref()));
                Value::Object(object)
            }
        }
    }

    /// The FHIRPath `toString()` text of a primitive or quantity (dates in FHIR format,
    /// without `@`); `None` for complex nodes.
    pub fn to_fhirpath_string(&self) -> Option<String> {
        Some(match self.prim()? {
            Prim::Boolean(b) => b.to_string(),
            Prim::Integer(i) => i.to_string(),
            Prim::Decimal(d) => d.to_string(),
            Prim::String(s) => s.to_string(),
            Prim::Date(d) | Prim::DateTime(d) => match self {
                // Keep the text of FHIR values as written (fractional seconds, `+00:00`).
                Item::Node(node) => node.value?.as_str()?.to_string(),
                _ => d.to_string(),
            },
            Prim::Time(t) => match self {
                Item::Node(node) => node.value?.as_str()?.to_string(),
                _ => t.to_string(),
            },
            Prim::Quantity(q) => q.to_string(),
        })
    }
}

fn decimal_json(value: &Decimal) -> Value {
    serde_json::from_str::<Value>(&value.to_string()).unwrap_or(Value::Null)
}

const QUANTITY_TYPES: &[&str] = &[
    "Quantity",
    "Age",
    "Count",
    "Distance",
    "Duration",
    "MoneyQuantity",
    "SimpleQuantity",
];

fn node_prim<'x>(node: &'x Node<'_>) -> Option<Prim<'x>> {
    let value = node.value?;
    match node.kind {
        NodeKind::Primitive => {}
        NodeKind::Complex if QUANTITY_TYPES.contains(&node.type_name) => {
            let number = value.get("value")?.as_number()?;
            let number = Decimal::parse(&number.to_string())?;
            let unit = value
                .get("code")
                .and_then(Value::as_str)
                .or_else(|| value.get("unit").and_then(Value::as_str))
                .unwrap_or("1");
            return Some(Prim::Quantity(Cow::Owned(Quantity::new(
                number,
                Arc::from(unit),
            ))));
        }
        _ => return None,
    }
    match value {
        Value::Bool(b) => Some(Prim::Boolean(*b)),
        Value::Number(n) => match node.type_name {
            "decimal" => Decimal::parse(&n.to_string()).map(Prim::Decimal),
            _ => json_number_prim(n),
        },
        Value::String(s) => Some(match node.type_name {
            "date" => DateTime::parse_date(s).map_or(Prim::String(s), Prim::Date),
            "dateTime" | "instant" => {
                DateTime::parse_datetime(s).map_or(Prim::String(s), Prim::DateTime)
            }
            "time" => Time::parse(s).map_or(Prim::String(s), Prim::Time),
            _ => Prim::String(s),
        }),
        _ => None,
    }
}
