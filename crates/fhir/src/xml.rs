//! FHIR XML (`application/fhir+xml`) to and from FHIR JSON, driven by the R4 type model.
//!
//! The two forms carry the same content ([R4 XML](https://hl7.org/fhir/R4/xml.html),
//! [R4 JSON](https://hl7.org/fhir/R4/json.html)); what tells them apart, and how each
//! difference is bridged here:
//!
//! - The root element is named after the resource type, in the namespace
//!   [`FHIR_NAMESPACE`]; JSON says `resourceType`. A resource inside another
//!   (`contained`, `Bundle.entry.resource`, `Parameters.parameter.resource`,
//!   `Bundle.entry.response.outcome`) is wrapped: `<contained><Patient>…</Patient></contained>`.
//! - A primitive is an element whose `value` attribute holds its text; its `id` attribute and
//!   `extension` children are JSON's `_name: {"id", "extension"}`. A repeating primitive is a
//!   JSON array, aligned with the `_name` array by `null`s. Whether a value is a JSON string,
//!   number (`integer`, `positiveInt`, `unsignedInt`, `decimal`) or boolean comes from the
//!   element's type in [`crate::model`]; a number keeps its exact text (`1.50` stays `1.50`).
//! - `Element.id` and `Extension.url` are XML attributes; a resource's `id` is an element.
//! - Which elements repeat (JSON arrays) and their order (XML requires the order of the
//!   definitions, JSON takes keys in any order) come from the model ([`ElementRule::order`]).
//! - The narrative `div` is XHTML in the namespace [`XHTML_NAMESPACE`], kept verbatim: the
//!   JSON string is the element's source text (line ends normalised to `\n`, as an XML reader
//!   must), and a JSON `div` is written as it is, after checking that it is one well-formed
//!   XHTML `div` element that declares its namespace.
//!
//! What it refuses (an [`XmlError`], never a panic): a DOCTYPE (no DTDs, hence no entity
//! declarations and no external entities: only the five predefined entities and character
//! references are read), documents larger than [`MAX_XML_BYTES`], nesting deeper than
//! [`MAX_DEPTH`], more than [`MAX_ATTRIBUTES`] attributes on an element, text where FHIR XML
//! has none, elements or attributes the model does not know at that place, values that do
//! not fit their type, and JSON that XML cannot hold (a control character, misaligned `_`
//! arrays). XML comments and the attributes of other namespaces (`xsi:schemaLocation`) are
//! dropped; an empty JSON array, which FHIR JSON does not allow, is written as nothing.
//! Numbers keep their text as serde_json keeps it (`1.0e0` reads as `1.0e+0`, the same
//! number). What it is not: a validator (cardinality, bindings and invariants are
//! `crate::validate`'s).

use crate::model::{self, ContextId, ElementKind, ElementRule, Model};
use quick_xml::NsReader;
use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::name::ResolveResult;
use serde_json::{Map, Number, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

/// The namespace of every FHIR element.
pub const FHIR_NAMESPACE: &str = "http://hl7.org/fhir";
/// The namespace of the narrative's `div`.
pub const XHTML_NAMESPACE: &str = "http://www.w3.org/1999/xhtml";
/// Largest XML document [`xml_to_json`] reads, in bytes (the server's request body limit).
pub const MAX_XML_BYTES: usize = 64 * 1024 * 1024;
/// Deepest nesting read or written, in elements (XML) or elements of the path (JSON):
/// resources nested in `contained` and entries, and XHTML inside a narrative, all count.
pub const MAX_DEPTH: usize = 128;
/// Most attributes read on one element (checking them for duplicates takes time that grows
/// with the square of their number); FHIR elements have at most three, XHTML a few.
pub const MAX_ATTRIBUTES: usize = 64;

/// Why a document could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    /// The XML is larger than [`MAX_XML_BYTES`].
    #[error("the XML document is {size} bytes; at most {MAX_XML_BYTES} bytes are read")]
    TooLarge {
        /// Size of the document in bytes.
        size: usize,
    },
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("{path}: nested deeper than {MAX_DEPTH} levels")]
    TooDeep {
        /// Where the limit was reached.
        path: String,
    },
    /// A `<!DOCTYPE …>`: DTDs and the entities they declare are never read.
    #[error(
        "a DOCTYPE is not allowed in FHIR XML (no DTDs, no entity declarations, no external entities)"
    )]
    Doctype,
    /// Not well-formed XML.
    #[error("malformed XML near byte {position}: {message}")]
    Malformed {
        /// Byte offset of the problem in the document.
        position: u64,
        /// What the XML reader reported.
        message: String,
    },
    /// Well-formed XML that is not FHIR XML (unknown element, text where a value attribute
    /// belongs, a value that does not fit its type…).
    #[error("{path}: {message}")]
    Structure {
        /// Path of the element (`Patient.name.given`).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// JSON that has no XML form (unknown element, wrong JSON shape, a character XML cannot
    /// hold…).
    #[error("{path}: {message}")]
    Unwritable {
        /// Path of the element (`Patient.name.given`).
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// A fast multiplicative hash, eight bytes at a time, for the element-name tables below:
/// they hold only the model's own names (input is looked up in them, never inserted), so a
/// weak hash cannot be abused to make them slow.
#[derive(Default)]
struct NameHasher(u64);

impl NameHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for NameHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }
}

/// A context's JSON keys: their rules and their place in [`Lookup::ordered`].
type Keys = HashMap<&'static str, (&'static ElementRule, usize), BuildHasherDefault<NameHasher>>;

/// How many keys past the last one found [`Lookup::rule`] compares before it hashes.
const ORDERED_SCAN: usize = 4;

/// The model, and what the conversion needs to know about its contexts.
struct Lookup {
    model: &'static Model,
    /// Indexed by context: its keys (the model's own tables, with a faster hash).
    keys: Vec<Keys>,
    /// Indexed by context: its keys in the order of the definitions. JSON usually comes in
    /// that order, so the next key is usually just after the last one.
    ordered: Vec<Vec<(&'static str, &'static ElementRule)>>,
    /// The context of `Extension` (whose `url` is an attribute).
    extension: ContextId,
}

fn lookup() -> &'static Lookup {
    static LOOKUP: OnceLock<Lookup> = OnceLock::new();
    LOOKUP.get_or_init(|| {
        let model = model::r4();
        let extension = model
            .types
            .get("Extension")
            .and_then(|t| t.context)
            .expect("the R4 model defines Extension");
        let ordered: Vec<Vec<(&'static str, &'static ElementRule)>> = model
            .contexts
            .iter()
            .map(|context| {
                let mut keys: Vec<(&'static str, &'static ElementRule)> = context
                    .keys
                    .iter()
                    .map(|(key, rule)| (key.as_str(), rule))
                    .collect();
                keys.sort_by_key(|(key, rule)| (rule.order, *key));
                keys
            })
            .collect();
        let keys = ordered
            .iter()
            .map(|ordered| {
                ordered
                    .iter()
                    .enumerate()
                    .map(|(place, (key, rule))| (*key, (*rule, place)))
                    .collect()
            })
            .collect();
        Lookup {
            model,
            keys,
            ordered,
            extension,
        }
    })
}

impl Lookup {
    /// The rule of `key` in `context`; `cursor` is just past the place of the key found last
    /// in this object (0 for the first), and is moved past this one.
    fn rule(
        &self,
        context: ContextId,
        key: &str,
        cursor: &mut usize,
    ) -> Option<(&'static str, &'static ElementRule)> {
        let ordered = &self.ordered[context];
        // From the last key found: XML repeats an element in a row.
        let start = cursor.saturating_sub(1).min(ordered.len());
        let end = (start + ORDERED_SCAN).min(ordered.len());
        for (place, (candidate, rule)) in ordered[start..end].iter().enumerate() {
            if candidate.len() == key.len() && *candidate == key {
                *cursor = start + place + 1;
                return Some((candidate, rule));
            }
        }
        let (&candidate, &(rule, place)) = self.keys[context].get_key_value(key)?;
        *cursor = place + 1;
        Some((candidate, rule))
    }
}

/// The concrete resource type `name`, as the model spells it, and its root context.
fn resource_type(model: &'static Model, name: &str) -> Option<(&'static str, ContextId)> {
    let (name, info) = model.types.get_key_value(name)?;
    if info.kind != "resource" || info.is_abstract {
        return None;
    }
    Some((name.as_str(), info.context?))
}

/// Primitive types whose JSON form is a number.
fn is_number_type(type_name: &str) -> bool {
    matches!(
        type_name,
        "integer" | "positiveInt" | "unsignedInt" | "decimal" | "integer64"
    )
}

fn join(path: &[&str]) -> String {
    if path.is_empty() {
        "(document)".to_string()
    } else {
        path.join(".")
    }
}

// ------------------------------------------------------------------------------------------
// JSON → XML
// ------------------------------------------------------------------------------------------

/// The XML form of a FHIR JSON resource, without an XML declaration or indentation.
pub fn json_to_xml(resource: &Value) -> Result<String, XmlError> {
    write_resource(resource, false)
}

/// As [`json_to_xml`], indented for people (two spaces a level; the narrative `div` is kept
/// exactly as it is).
pub fn json_to_xml_pretty(resource: &Value) -> Result<String, XmlError> {
    write_resource(resource, true)
}

fn write_resource(resource: &Value, pretty: bool) -> Result<String, XmlError> {
    let mut writer = Writer {
        out: String::with_capacity(1024),
        path: Vec::new(),
        lookup: lookup(),
        pretty,
        level: 0,
        spare: Vec::new(),
    };
    writer.resource(resource, true)?;
    if pretty {
        writer.out.push('\n');
    }
    Ok(writer.out)
}

struct Writer<'a> {
    out: String,
    path: Vec<&'a str>,
    lookup: &'static Lookup,
    pretty: bool,
    /// XML element depth, for indentation.
    level: usize,
    /// Emptied child lists, reused (one is needed per level being written).
    spare: Vec<Vec<Child<'a>>>,
}

/// One child element of an object being written: the JSON key without `_`, its value and
/// its `_key` (primitive id and extensions).
struct Child<'a> {
    key: &'a str,
    rule: &'static ElementRule,
    value: Option<&'a Value>,
    ext: Option<&'a Value>,
}

impl<'a> Writer<'a> {
    fn error(&self, message: impl Into<String>) -> XmlError {
        XmlError::Unwritable {
            path: join(&self.path),
            message: message.into(),
        }
    }

    fn enter(&mut self, name: &'a str) -> Result<(), XmlError> {
        self.path.push(name);
        if self.path.len() > MAX_DEPTH {
            return Err(XmlError::TooDeep {
                path: join(&self.path),
            });
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.path.pop();
    }

    fn newline(&mut self) {
        if self.pretty && !self.out.is_empty() {
            self.out.push('\n');
            for _ in 0..self.level {
                self.out.push_str("  ");
            }
        }
    }

    fn start_tag(&mut self, name: &str) {
        self.newline();
        self.out.push('<');
        self.out.push_str(name);
    }

    fn end_tag(&mut self, name: &str) {
        self.newline();
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
    }

    fn attribute(&mut self, name: &str, value: &str) -> Result<(), XmlError> {
        self.out.push(' ');
        self.out.push_str(name);
        self.out.push_str("=\"");
        if let Err(message) = escape_attribute(&mut self.out, value) {
            return Err(self.error(format!("attribute '{name}': {message}")));
        }
        self.out.push('"');
        Ok(())
    }

    /// A resource: `<Patient>…</Patient>`, with the FHIR namespace when it is the root.
    fn resource(&mut self, value: &'a Value, root: bool) -> Result<(), XmlError> {
        let Some(object) = value.as_object() else {
            return Err(self.error("a resource must be a JSON object"));
        };
        let Some(name) = object.get("resourceType").and_then(Value::as_str) else {
            return Err(self.error("a resource needs a resourceType"));
        };
        let Some((name, context)) = resource_type(self.lookup.model, name) else {
            return Err(self.error(format!("'{name}' is not a FHIR resource type")));
        };
        self.enter(name)?;
        self.element(name, object, context, root, true)?;
        self.leave();
        Ok(())
    }

    /// An element with children (a resource, a complex type or a backbone element).
    fn element(
        &mut self,
        name: &str,
        object: &'a Map<String, Value>,
        context: ContextId,
        namespace: bool,
        resource: bool,
    ) -> Result<(), XmlError> {
        let lookup = self.lookup;
        let extension = context == lookup.extension;
        let mut cursor = 0;
        self.start_tag(name);
        if namespace {
            self.out.push_str(" xmlns=\"");
            self.out.push_str(FHIR_NAMESPACE);
            self.out.push('"');
        }
        let mut children = self.spare.pop().unwrap_or_default();
        children.clear();
        let mut any_underscore = false;
        for (key, value) in object {
            let key = key.as_str();
            if resource && key == "resourceType" {
                continue;
            }
            let (base, underscore) = match key.strip_prefix('_') {
                Some(base) => (base, true),
                None => (key, false),
            };
            let attribute = (!resource && base == "id") || (extension && base == "url");
            if attribute {
                if underscore {
                    return Err(self.error(format!(
                        "'{key}': '{base}' is an XML attribute, which has no id or extensions"
                    )));
                }
                let Some(text) = value.as_str() else {
                    return Err(self.error(format!("'{key}' must be a string")));
                };
                self.attribute(base, text)?;
                continue;
            }
            let Some((_, rule)) = lookup.rule(context, base, &mut cursor) else {
                return Err(self.error(format!("unknown element '{key}'")));
            };
            if underscore && !matches!(rule.kind, ElementKind::Primitive(_)) {
                return Err(self.error(format!("'{key}': only primitive elements have a '_' form")));
            }
            let existing = if underscore || any_underscore {
                children.iter_mut().find(|c| c.key == base)
            } else {
                None
            };
            any_underscore |= underscore;
            match existing {
                Some(child) if underscore => child.ext = Some(value),
                Some(child) => child.value = Some(value),
                None => children.push(Child {
                    key: base,
                    rule,
                    value: (!underscore).then_some(value),
                    ext: underscore.then_some(value),
                }),
            }
        }
        if children.is_empty() {
            self.out.push_str("/>");
            self.spare.push(children);
            return Ok(());
        }
        if !children.is_sorted_by_key(|c| c.rule.order) {
            children.sort_by_key(|c| c.rule.order);
        }
        self.out.push('>');
        self.level += 1;
        for child in &children {
            self.child(child)?;
        }
        self.level -= 1;
        self.end_tag(name);
        self.spare.push(children);
        Ok(())
    }

    fn child(&mut self, child: &Child<'a>) -> Result<(), XmlError> {
        let key = child.key;
        self.enter(key)?;
        let rule = child.rule;
        match &rule.kind {
            ElementKind::Primitive(type_name) if rule.repeats => {
                let values = self.array(key, child.value)?;
                let exts = self.array(key, child.ext)?;
                if !values.is_empty() && !exts.is_empty() && values.len() != exts.len() {
                    return Err(self.error(format!(
                        "'{key}' has {} values but '_{key}' has {}: the arrays must align",
                        values.len(),
                        exts.len()
                    )));
                }
                for i in 0..values.len().max(exts.len()) {
                    self.primitive(key, type_name, values.get(i), exts.get(i))?;
                }
            }
            ElementKind::Primitive(type_name) => {
                if matches!(child.value, Some(Value::Array(_)))
                    || matches!(child.ext, Some(Value::Array(_)))
                {
                    return Err(self.error(format!("'{key}' does not repeat: no array")));
                }
                self.primitive(key, type_name, child.value, child.ext)?;
            }
            ElementKind::Complex(context) => {
                let context = *context;
                if rule.repeats {
                    for item in self.array(key, child.value)? {
                        let object = self.object(key, item)?;
                        self.element(key, object, context, false, false)?;
                    }
                } else {
                    let object = self.object(key, child.value.unwrap_or(&Value::Null))?;
                    self.element(key, object, context, false, false)?;
                }
            }
            ElementKind::Resource => {
                let items: &'a [Value] = if rule.repeats {
                    self.array(key, child.value)?
                } else {
                    child.value.map(std::slice::from_ref).unwrap_or_default()
                };
                for item in items {
                    self.start_tag(key);
                    self.out.push('>');
                    self.level += 1;
                    self.resource(item, false)?;
                    self.level -= 1;
                    self.end_tag(key);
                }
            }
        }
        self.leave();
        Ok(())
    }

    /// The items of a repeating element's JSON array (none when absent). An empty array,
    /// which FHIR JSON does not allow but careless JSON has, is written as nothing: XML has no
    /// way to write one.
    fn array(&self, key: &str, value: Option<&'a Value>) -> Result<&'a [Value], XmlError> {
        match value {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(_) => Err(self.error(format!("'{key}' repeats: its JSON form is an array"))),
        }
    }

    fn object(&self, key: &str, value: &'a Value) -> Result<&'a Map<String, Value>, XmlError> {
        value
            .as_object()
            .ok_or_else(|| self.error(format!("'{key}' must be a JSON object")))
    }

    /// One primitive: `<name id=".." value="..">extensions</name>`.
    fn primitive(
        &mut self,
        name: &str,
        type_name: &str,
        value: Option<&'a Value>,
        ext: Option<&'a Value>,
    ) -> Result<(), XmlError> {
        let value = value.filter(|v| !v.is_null());
        let ext = ext.filter(|v| !v.is_null());
        if type_name == "xhtml" {
            let Some(Value::String(div)) = value else {
                return Err(self.error(format!("'{name}' must be an XHTML string")));
            };
            if ext.is_some() {
                return Err(self.error(format!("'_{name}' cannot be written in XML")));
            }
            if let Err(message) = check_div(div, self.path.len()) {
                return Err(self.error(message));
            }
            self.newline();
            self.out.push_str(div);
            return Ok(());
        }
        if value.is_none() && ext.is_none() {
            return Err(self.error(format!(
                "'{name}' has neither a value nor an id or extensions"
            )));
        }
        self.start_tag(name);
        let mut extensions: &'a [Value] = &[];
        if let Some(ext) = ext {
            let Some(ext) = ext.as_object() else {
                return Err(self.error(format!("'_{name}' must be a JSON object")));
            };
            for (key, item) in ext {
                match (key.as_str(), item) {
                    ("id", Value::String(id)) => self.attribute("id", id)?,
                    ("extension", Value::Array(items)) if !items.is_empty() => extensions = items,
                    _ => {
                        return Err(self.error(format!(
                            "'_{name}' may hold only an id string and an extension array, \
                             not '{key}' as given"
                        )));
                    }
                }
            }
        }
        if let Some(value) = value {
            match value {
                Value::String(text) => self.attribute("value", text)?,
                Value::Number(number) => {
                    // Digits, sign, point and exponent only: nothing to escape.
                    self.out.push_str(" value=\"");
                    self.out.push_str(number.as_str());
                    self.out.push('"');
                }
                Value::Bool(flag) => {
                    self.out.push_str(if *flag {
                        " value=\"true\""
                    } else {
                        " value=\"false\""
                    });
                }
                _ => {
                    return Err(self.error(format!(
                        "'{name}' is a primitive: a string, number or boolean"
                    )));
                }
            }
        }
        if extensions.is_empty() {
            self.out.push_str("/>");
            return Ok(());
        }
        self.out.push('>');
        self.level += 1;
        let extension = self.lookup.extension;
        for item in extensions {
            self.enter("extension")?;
            let object = self.object("extension", item)?;
            self.element("extension", object, extension, false, false)?;
            self.leave();
        }
        self.level -= 1;
        self.end_tag(name);
        Ok(())
    }
}

/// Writes `value` escaped for a double-quoted attribute. Tabs and line ends become character
/// references, which survive the attribute-value normalisation of any XML reader.
fn escape_attribute(out: &mut String, value: &str) -> Result<(), String> {
    let bytes = value.as_bytes();
    let mut written = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        if !ATTRIBUTE_SPECIAL[usize::from(byte)] {
            continue;
        }
        let replacement = match byte {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'"' => "&quot;",
            b'\t' => "&#9;",
            b'\n' => "&#10;",
            b'\r' => "&#13;",
            0..=0x1f => return Err(format!("U+{byte:04X} cannot be written in XML 1.0")),
            0xef if bytes.get(i + 1) == Some(&0xbf)
                && matches!(bytes.get(i + 2), Some(0xbe | 0xbf)) =>
            {
                return Err("U+FFFE and U+FFFF cannot be written in XML".to_string());
            }
            _ => continue,
        };
        out.push_str(&value[written..i]);
        out.push_str(replacement);
        written = i + 1;
    }
    out.push_str(&value[written..]);
    Ok(())
}

/// The bytes [`escape_attribute`] looks at: markup, control characters, and the first
/// byte of U+FFFE and U+FFFF.
const ATTRIBUTE_SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'&' as usize] = true;
    table[b'<' as usize] = true;
    table[b'"' as usize] = true;
    table[0xef] = true;
    table
};

/// Whether `div` is one well-formed XHTML `div` element that declares its namespace, with
/// nothing before or after it: what may be copied into an XML document as it is.
fn check_div(div: &str, depth: usize) -> Result<(), String> {
    let bytes = div.as_bytes();
    for (i, &byte) in bytes.iter().enumerate() {
        let bad = matches!(byte, 0..=0x08 | 0x0b | 0x0c | 0x0e..=0x1f)
            || (byte == 0xef
                && bytes.get(i + 1) == Some(&0xbf)
                && matches!(bytes.get(i + 2), Some(0xbe | 0xbf)));
        if bad {
            return Err("the narrative holds a character XML 1.0 cannot hold".to_string());
        }
    }
    if !div.starts_with("<div") {
        return Err("the narrative must be a <div> element and start with '<div'".to_string());
    }
    // A plain reader (no namespace bookkeeping): the root must declare the XHTML namespace
    // itself, and everything inside it must be balanced and well-formed.
    let mut reader = quick_xml::Reader::from_str(div);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.check_comments = true;
    let (start, empty) = match next_xhtml_event(&mut reader)? {
        Event::Start(e) => (e, false),
        Event::Empty(e) => (e, true),
        _ => return Err("the narrative must be a <div> element".to_string()),
    };
    check_xhtml_attributes(&start)?;
    let declared = limited(&start).flatten().any(|a| {
        a.key.as_ref() == "xmlns" && decode_attribute(&a.value).is_ok_and(|v| v == XHTML_NAMESPACE)
    });
    if start.name().as_ref() != "div" || !declared {
        return Err(format!(
            "the narrative must be a <div xmlns=\"{XHTML_NAMESPACE}\"> element"
        ));
    }
    let mut open = usize::from(!empty);
    while open > 0 {
        match next_xhtml_event(&mut reader)? {
            Event::Start(e) => {
                check_xhtml_attributes(&e)?;
                open += 1;
                if depth + open > MAX_DEPTH {
                    return Err(format!(
                        "the narrative nests deeper than {MAX_DEPTH} levels"
                    ));
                }
            }
            Event::Empty(e) => check_xhtml_attributes(&e)?,
            Event::End(_) => open -= 1,
            Event::GeneralRef(reference) => {
                resolve_reference(&reference).map_err(|e| not_well_formed(&e))?;
            }
            Event::Text(_) | Event::CData(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Decl(_) | Event::DocType(_) => {
                return Err(not_well_formed(&"a declaration inside <div>"));
            }
            Event::Eof => return Err(not_well_formed(&"it ends inside an element")),
        }
    }
    match next_xhtml_event(&mut reader)? {
        Event::Eof => Ok(()),
        _ => Err("nothing may follow the narrative's </div>".to_string()),
    }
}

fn not_well_formed(problem: &dyn std::fmt::Display) -> String {
    format!("the narrative is not well-formed XHTML: {problem}")
}

fn next_xhtml_event<'i>(reader: &mut quick_xml::Reader<&'i [u8]>) -> Result<Event<'i>, String> {
    match reader.read_event() {
        Ok(Event::DocType(_)) => Err(not_well_formed(&XmlError::Doctype)),
        Ok(event) => Ok(event),
        Err(e) => Err(not_well_formed(&e)),
    }
}

/// The attributes of an element, checked (well-formed, no duplicates), at most
/// [`MAX_ATTRIBUTES`] of them.
fn limited<'a>(start: &'a BytesStart) -> impl Iterator<Item = Result<Attribute<'a>, String>> {
    start
        .attributes()
        .take(MAX_ATTRIBUTES + 1)
        .enumerate()
        .map(|(i, attribute)| {
            if i == MAX_ATTRIBUTES {
                Err(format!(
                    "more than {MAX_ATTRIBUTES} attributes on one element"
                ))
            } else {
                attribute.map_err(|e| e.to_string())
            }
        })
}

fn check_xhtml_attributes(start: &BytesStart) -> Result<(), String> {
    for attribute in limited(start) {
        let attribute = attribute.map_err(|e| not_well_formed(&e))?;
        decode_attribute(&attribute.value).map_err(|e| not_well_formed(&e))?;
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// XML → JSON
// ------------------------------------------------------------------------------------------

/// The FHIR JSON form of a FHIR XML resource.
pub fn xml_to_json(xml: &str) -> Result<Value, XmlError> {
    if xml.len() > MAX_XML_BYTES {
        return Err(XmlError::TooLarge { size: xml.len() });
    }
    let xml = xml.strip_prefix('\u{feff}').unwrap_or(xml);
    Parser::new(xml).document()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ns {
    Fhir,
    Xhtml,
    Other,
}

/// The JSON object of one element, built as its children arrive: repeating primitives keep
/// their values and `_` entries aligned.
#[derive(Default)]
struct Builder {
    slots: Vec<(&'static str, Slot)>,
}

enum Slot {
    One(Value),
    Many(Vec<Value>),
    Primitive(Option<Value>, Option<Value>),
    Primitives(Vec<Value>, Vec<Value>),
}

impl Builder {
    fn find(&mut self, key: &str) -> Option<&mut Slot> {
        self.slots
            .iter_mut()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, slot)| slot)
    }

    fn once(&mut self, key: &'static str, slot: Slot) -> Result<(), String> {
        if self.find(key).is_some() {
            return Err(format!(
                "'{key}' does not repeat, but appears more than once"
            ));
        }
        self.slots.push((key, slot));
        Ok(())
    }

    fn complex(&mut self, key: &'static str, repeats: bool, value: Value) -> Result<(), String> {
        if !repeats {
            return self.once(key, Slot::One(value));
        }
        match self.find(key) {
            Some(Slot::Many(items)) => items.push(value),
            _ => self.slots.push((key, Slot::Many(vec![value]))),
        }
        Ok(())
    }

    fn primitive(
        &mut self,
        key: &'static str,
        repeats: bool,
        value: Option<Value>,
        ext: Option<Value>,
    ) -> Result<(), String> {
        if !repeats {
            return self.once(key, Slot::Primitive(value, ext));
        }
        let value = value.unwrap_or(Value::Null);
        let ext = ext.unwrap_or(Value::Null);
        match self.find(key) {
            Some(Slot::Primitives(values, exts)) => {
                values.push(value);
                exts.push(ext);
            }
            _ => self
                .slots
                .push((key, Slot::Primitives(vec![value], vec![ext]))),
        }
        Ok(())
    }

    fn finish_into(self, map: &mut Map<String, Value>) {
        for (key, slot) in self.slots {
            match slot {
                Slot::One(value) => {
                    map.insert(key.to_string(), value);
                }
                Slot::Many(items) => {
                    map.insert(key.to_string(), Value::Array(items));
                }
                Slot::Primitive(value, ext) => {
                    if let Some(value) = value {
                        map.insert(key.to_string(), value);
                    }
                    if let Some(ext) = ext {
                        map.insert(format!("_{key}"), ext);
                    }
                }
                Slot::Primitives(values, exts) => {
                    if values.iter().any(|v| !v.is_null()) {
                        map.insert(key.to_string(), Value::Array(values));
                    }
                    if exts.iter().any(|v| !v.is_null()) {
                        map.insert(format!("_{key}"), Value::Array(exts));
                    }
                }
            }
        }
    }
}

struct Parser<'i> {
    xml: &'i str,
    reader: NsReader<&'i [u8]>,
    path: Vec<&'static str>,
    lookup: &'static Lookup,
}

impl<'i> Parser<'i> {
    fn new(xml: &'i str) -> Parser<'i> {
        let mut reader = NsReader::from_str(xml);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.check_comments = true;
        config.expand_empty_elements = false;
        config.trim_text(false);
        Parser {
            xml,
            reader,
            path: Vec::new(),
            lookup: lookup(),
        }
    }

    fn structure(&self, message: impl Into<String>) -> XmlError {
        XmlError::Structure {
            path: join(&self.path),
            message: message.into(),
        }
    }

    fn malformed(&self, message: impl std::fmt::Display) -> XmlError {
        XmlError::Malformed {
            position: self.reader.buffer_position(),
            message: message.to_string(),
        }
    }

    fn enter(&mut self, name: &'static str) -> Result<(), XmlError> {
        self.path.push(name);
        if self.path.len() > MAX_DEPTH {
            return Err(XmlError::TooDeep {
                path: join(&self.path),
            });
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.path.pop();
    }

    fn next(&mut self) -> Result<Event<'i>, XmlError> {
        match self.reader.read_event() {
            Ok(Event::DocType(_)) => Err(XmlError::Doctype),
            Ok(event) => Ok(event),
            Err(e) => Err(XmlError::Malformed {
                position: self.reader.error_position(),
                message: e.to_string(),
            }),
        }
    }

    fn namespace(&self, start: &BytesStart) -> Result<Ns, XmlError> {
        match self.reader.resolver().resolve_element(start.name()).0 {
            ResolveResult::Bound(ns) if ns.0 == FHIR_NAMESPACE => Ok(Ns::Fhir),
            ResolveResult::Bound(ns) if ns.0 == XHTML_NAMESPACE => Ok(Ns::Xhtml),
            ResolveResult::Unknown(prefix) => {
                Err(self.malformed(format!("the namespace prefix '{prefix}' is not declared")))
            }
            _ => Ok(Ns::Other),
        }
    }

    /// Every attribute of `start` is well-formed and its value can be read.
    fn check_attributes(&self, start: &BytesStart) -> Result<(), XmlError> {
        for attribute in limited(start) {
            let attribute = attribute.map_err(|e| self.malformed(e))?;
            decode_attribute(&attribute.value).map_err(|e| self.malformed(e))?;
        }
        Ok(())
    }

    /// The attributes of a FHIR element: the unprefixed ones in `allowed` (decoded), in the
    /// order given; namespace declarations and attributes of other namespaces are ignored.
    fn fhir_attributes<const N: usize>(
        &self,
        start: &BytesStart,
        allowed: [&str; N],
    ) -> Result<[Option<String>; N], XmlError> {
        let mut found: [Option<String>; N] = std::array::from_fn(|_| None);
        for attribute in limited(start) {
            let attribute = attribute.map_err(|e| self.malformed(e))?;
            let name = attribute.key.as_ref();
            if name == "xmlns" || name.contains(':') {
                continue;
            }
            let Some(index) = allowed.iter().position(|a| *a == name) else {
                return Err(self.structure(format!("unexpected attribute '{name}'")));
            };
            let value = decode_attribute(&attribute.value)
                .map_err(|e| self.structure(format!("attribute '{name}': {e}")))?;
            found[index] = Some(value.into_owned());
        }
        Ok(found)
    }

    fn document(mut self) -> Result<Value, XmlError> {
        let resource = loop {
            match self.next()? {
                Event::Start(e) => break self.resource(&e, false)?,
                Event::Empty(e) => break self.resource(&e, true)?,
                Event::Decl(declaration) => {
                    if let Some(Ok(encoding)) = declaration.encoding()
                        && !matches!(
                            encoding.to_ascii_lowercase().as_str(),
                            "utf-8" | "utf8" | "us-ascii"
                        )
                    {
                        return Err(self.structure(format!(
                            "the document declares encoding '{encoding}'; FHIR XML is read as UTF-8"
                        )));
                    }
                }
                Event::Text(text) if is_blank(&text) => {}
                Event::Comment(_) | Event::PI(_) => {}
                Event::Eof => return Err(self.structure("the document has no root element")),
                _ => return Err(self.structure("unexpected content before the root element")),
            }
        };
        loop {
            match self.next()? {
                Event::Eof => return Ok(resource),
                Event::Text(text) if is_blank(&text) => {}
                Event::Comment(_) | Event::PI(_) => {}
                _ => return Err(self.structure("unexpected content after the root element")),
            }
        }
    }

    /// A resource element (the root, or the one child of `contained`, `resource`…).
    fn resource(&mut self, start: &BytesStart, empty: bool) -> Result<Value, XmlError> {
        let lookup = self.lookup;
        let local = start.local_name();
        let local: &str = local.as_ref();
        if self.namespace(start)? != Ns::Fhir {
            return Err(self.structure(format!(
                "<{}> is not in the FHIR namespace {FHIR_NAMESPACE}",
                start.name().as_ref()
            )));
        }
        let Some((name, context)) = resource_type(lookup.model, local) else {
            return Err(self.structure(format!("'{local}' is not a FHIR resource type")));
        };
        self.fhir_attributes(start, [])?;
        self.enter(name)?;
        let mut builder = Builder::default();
        if !empty {
            self.content(context, true, &mut builder)?;
        }
        let mut map = Map::new();
        map.insert("resourceType".to_string(), Value::String(name.to_string()));
        builder.finish_into(&mut map);
        self.leave();
        Ok(Value::Object(map))
    }

    /// The children of an element with children, up to its end tag.
    fn content(
        &mut self,
        context: ContextId,
        resource: bool,
        builder: &mut Builder,
    ) -> Result<(), XmlError> {
        let mut cursor = 0;
        loop {
            match self.next()? {
                Event::Start(e) => {
                    self.child(context, resource, &e, false, builder, &mut cursor)?
                }
                Event::Empty(e) => self.child(context, resource, &e, true, builder, &mut cursor)?,
                Event::End(_) => return Ok(()),
                Event::Comment(_) | Event::PI(_) => {}
                event => self.not_content(&event)?,
            }
        }
    }

    /// Whitespace between elements is fine; any other text or markup is not FHIR XML.
    fn not_content(&self, event: &Event) -> Result<(), XmlError> {
        match event {
            Event::Text(text) if is_blank(text) => Ok(()),
            Event::Text(_) | Event::CData(_) | Event::GeneralRef(_) => Err(self.structure(
                "text is not allowed here: FHIR XML keeps values in 'value' attributes",
            )),
            Event::Eof => Err(self.structure("the document ends inside this element")),
            _ => Err(self.structure("unexpected markup")),
        }
    }

    fn child(
        &mut self,
        context: ContextId,
        resource: bool,
        start: &BytesStart,
        empty: bool,
        builder: &mut Builder,
        cursor: &mut usize,
    ) -> Result<(), XmlError> {
        let lookup = self.lookup;
        let ns = self.namespace(start)?;
        let local = start.local_name();
        let local: &str = local.as_ref();
        let Some((key, rule)) = lookup.rule(context, local, cursor) else {
            return Err(self.structure(format!("unknown element '{local}'")));
        };
        let xhtml = matches!(&rule.kind, ElementKind::Primitive(t) if t == "xhtml");
        let expected = if xhtml { Ns::Xhtml } else { Ns::Fhir };
        if ns != expected {
            let namespace = if xhtml {
                XHTML_NAMESPACE
            } else {
                FHIR_NAMESPACE
            };
            return Err(self.structure(format!(
                "<{}> must be in the namespace {namespace}",
                start.name().as_ref()
            )));
        }
        if (!resource && key == "id") || (context == lookup.extension && key == "url") {
            return Err(self.structure(format!("'{key}' is an attribute here, not an element")));
        }
        self.enter(key)?;
        let added = match &rule.kind {
            ElementKind::Primitive(_) if xhtml => {
                let div = self.div(start, empty)?;
                builder.once(key, Slot::One(Value::String(div)))
            }
            ElementKind::Primitive(type_name) => {
                let (value, ext) = self.primitive(start, empty, type_name)?;
                builder.primitive(key, rule.repeats, value, ext)
            }
            ElementKind::Complex(child) => {
                let value = self.complex(start, empty, *child)?;
                builder.complex(key, rule.repeats, value)
            }
            ElementKind::Resource => {
                let value = self.wrapped_resource(start, empty)?;
                builder.complex(key, rule.repeats, value)
            }
        };
        added.map_err(|message| self.structure(message))?;
        self.leave();
        Ok(())
    }

    fn complex(
        &mut self,
        start: &BytesStart,
        empty: bool,
        context: ContextId,
    ) -> Result<Value, XmlError> {
        let lookup = self.lookup;
        let mut map = Map::new();
        let [id, url] = if context == lookup.extension {
            self.fhir_attributes(start, ["id", "url"])?
        } else {
            let [id] = self.fhir_attributes(start, ["id"])?;
            [id, None]
        };
        if let Some(id) = id {
            map.insert("id".to_string(), Value::String(id));
        }
        if let Some(url) = url {
            map.insert("url".to_string(), Value::String(url));
        }
        let mut builder = Builder::default();
        if !empty {
            self.content(context, false, &mut builder)?;
        }
        builder.finish_into(&mut map);
        Ok(Value::Object(map))
    }

    /// A primitive element: its typed value and its `_` object (id and extensions).
    fn primitive(
        &mut self,
        start: &BytesStart,
        empty: bool,
        type_name: &str,
    ) -> Result<(Option<Value>, Option<Value>), XmlError> {
        let [value, id] = self.fhir_attributes(start, ["value", "id"])?;
        let mut extensions = Vec::new();
        if !empty {
            let extension = self.lookup.extension;
            loop {
                let (child, child_empty) = match self.next()? {
                    Event::Start(e) => (e, false),
                    Event::Empty(e) => (e, true),
                    Event::End(_) => break,
                    Event::Comment(_) | Event::PI(_) => continue,
                    event => {
                        self.not_content(&event)?;
                        continue;
                    }
                };
                if self.namespace(&child)? != Ns::Fhir || child.local_name().as_ref() != "extension"
                {
                    return Err(self.structure(format!(
                        "<{}> is not allowed in a primitive element: only <extension>",
                        child.name().as_ref()
                    )));
                }
                self.enter("extension")?;
                extensions.push(self.complex(&child, child_empty, extension)?);
                self.leave();
            }
        }
        let value = match value {
            None => None,
            Some(text) => {
                Some(typed_value(type_name, text).map_err(|message| self.structure(message))?)
            }
        };
        let ext = if id.is_some() || !extensions.is_empty() {
            let mut map = Map::new();
            if let Some(id) = id {
                map.insert("id".to_string(), Value::String(id));
            }
            if !extensions.is_empty() {
                map.insert("extension".to_string(), Value::Array(extensions));
            }
            Some(Value::Object(map))
        } else {
            None
        };
        if value.is_none() && ext.is_none() {
            return Err(self
                .structure("a primitive element needs a 'value' attribute, an id or extensions"));
        }
        Ok((value, ext))
    }

    /// The one resource inside `<contained>`, `<resource>`, `<outcome>`…
    fn wrapped_resource(&mut self, start: &BytesStart, empty: bool) -> Result<Value, XmlError> {
        self.fhir_attributes(start, [])?;
        let mut found = None;
        if !empty {
            loop {
                let (child, child_empty) = match self.next()? {
                    Event::Start(e) => (e, false),
                    Event::Empty(e) => (e, true),
                    Event::End(_) => break,
                    Event::Comment(_) | Event::PI(_) => continue,
                    event => {
                        self.not_content(&event)?;
                        continue;
                    }
                };
                if found.is_some() {
                    return Err(self.structure("holds more than one resource"));
                }
                found = Some(self.resource(&child, child_empty)?);
            }
        }
        found.ok_or_else(|| self.structure("must hold a resource"))
    }

    /// The narrative `div`: its source text, verbatim but for line ends.
    fn div(&mut self, start: &BytesStart, empty: bool) -> Result<String, XmlError> {
        let after_start = usize::try_from(self.reader.buffer_position()).unwrap_or(usize::MAX);
        let begin = self
            .xml
            .get(..after_start)
            .and_then(|s| s.rfind('<'))
            .ok_or_else(|| self.malformed("the <div> start tag cannot be found"))?;
        self.check_attributes(start)?;
        let declares = limited(start).flatten().any(|a| {
            a.key.as_ref() == "xmlns"
                && decode_attribute(&a.value).is_ok_and(|v| v == XHTML_NAMESPACE)
        });
        if !declares && start.name().as_ref() != "div" {
            return Err(self.structure(format!(
                "the narrative <div> must be unprefixed and declare xmlns=\"{XHTML_NAMESPACE}\""
            )));
        }
        if !empty {
            self.skip_xhtml()?;
        }
        let end = usize::try_from(self.reader.buffer_position()).unwrap_or(usize::MAX);
        let raw = self
            .xml
            .get(begin..end)
            .ok_or_else(|| self.malformed("the <div> cannot be delimited"))?;
        let mut text = normalize_line_ends(raw).into_owned();
        if !declares {
            // Inherited from an ancestor: the JSON form declares it on the div itself.
            text.insert_str(4, &format!(" xmlns=\"{XHTML_NAMESPACE}\""));
        }
        Ok(text)
    }

    /// Reads up to the end tag of the XHTML element just started, checking what FHIR XML
    /// checks everywhere (no DOCTYPE, only predefined entities, well-formed attributes).
    fn skip_xhtml(&mut self) -> Result<(), XmlError> {
        let mut depth = 1usize;
        loop {
            match self.next()? {
                Event::Start(e) => {
                    self.check_attributes(&e)?;
                    depth += 1;
                    if self.path.len() + depth > MAX_DEPTH {
                        return Err(XmlError::TooDeep {
                            path: format!("{}.div", join(&self.path)),
                        });
                    }
                }
                Event::Empty(e) => self.check_attributes(&e)?,
                Event::End(_) => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                Event::GeneralRef(reference) => {
                    check_reference(&reference).map_err(|e| self.malformed(e))?
                }
                Event::Text(_) | Event::CData(_) | Event::Comment(_) | Event::PI(_) => {}
                Event::Decl(_) => return Err(self.malformed("an XML declaration inside <div>")),
                Event::DocType(_) => return Err(XmlError::Doctype),
                Event::Eof => return Err(self.malformed("the document ends inside <div>")),
            }
        }
    }
}

fn is_blank(text: &str) -> bool {
    text.bytes()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

/// `\r\n` and a lone `\r` become `\n`, as an XML reader must read them.
fn normalize_line_ends(text: &str) -> Cow<'_, str> {
    if !text.contains('\r') {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.replace("\r\n", "\n").replace('\r', "\n"))
}

/// A JSON value of the primitive type `type_name` from its XML text.
fn typed_value(type_name: &str, text: String) -> Result<Value, String> {
    if type_name == "boolean" {
        return match text.as_str() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("'{text}' is not a boolean (true or false)")),
        };
    }
    if is_number_type(type_name) {
        if !is_json_number(&text) {
            return Err(format!("'{text}' is not a valid {type_name}"));
        }
        return text
            .parse::<Number>()
            .map(Value::Number)
            .map_err(|e| format!("'{text}' is not a valid {type_name}: {e}"));
    }
    Ok(Value::String(text))
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`: FHIR's decimal and integer forms, which
/// are JSON's number grammar.
fn is_json_number(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// An attribute value as XML reads it: references resolved (the five predefined entities
/// and character references only) and literal tabs and line ends turned into spaces.
fn decode_attribute(raw: &str) -> Result<Cow<'_, str>, String> {
    const SPECIAL: [char; 5] = ['&', '<', '\t', '\n', '\r'];
    if !raw.contains(SPECIAL) {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find(SPECIAL) {
        out.push_str(&rest[..i]);
        let special = rest.as_bytes()[i];
        rest = &rest[i + 1..];
        match special {
            b'&' => {
                let Some(end) = rest.find(';') else {
                    return Err("an '&' that starts no reference".to_string());
                };
                out.push(resolve_reference(&rest[..end])?);
                rest = &rest[end + 1..];
            }
            b'<' => return Err("'<' must be written as &lt; in an attribute value".to_string()),
            b'\r' => {
                out.push(' ');
                rest = rest.strip_prefix('\n').unwrap_or(rest);
            }
            _ => out.push(' '),
        }
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

/// The character of `&name;`: a predefined entity or a character reference.
fn resolve_reference(name: &str) -> Result<char, String> {
    let code = if let Some(hex) = name.strip_prefix("#x") {
        u32::from_str_radix(hex, 16).ok()
    } else if let Some(decimal) = name.strip_prefix('#') {
        decimal.parse::<u32>().ok()
    } else {
        return match name {
            "lt" => Ok('<'),
            "gt" => Ok('>'),
            "amp" => Ok('&'),
            "quot" => Ok('"'),
            "apos" => Ok('\''),
            _ => Err(format!(
                "the entity '&{name};' is not defined (FHIR XML has no DTD to define it)"
            )),
        };
    };
    code.and_then(char::from_u32)
        .filter(|c| is_xml_char(*c))
        .ok_or_else(|| format!("'&{name};' is not a character XML allows"))
}

fn check_reference(reference: &BytesRef) -> Result<(), String> {
    resolve_reference(reference).map(|_| ())
}

/// The characters XML 1.0 allows.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(resource: Value) -> String {
        let xml = json_to_xml(&resource).unwrap();
        let back = xml_to_json(&xml).unwrap();
        assert_eq!(back, resource, "{xml}");
        xml
    }

    #[test]
    fn a_patient_is_written_in_definition_order_with_value_attributes() {
        let patient = json!({
            "birthDate": "1970-01-01",
            "resourceType": "Patient",
            "name": [{"given": ["Jan", "Piet"], "family": "Jansen"}],
            "id": "p1",
            "active": true,
            "multipleBirthInteger": 2
        });
        let xml = round_trip(patient);
        assert_eq!(
            xml,
            "<Patient xmlns=\"http://hl7.org/fhir\"><id value=\"p1\"/><active value=\"true\"/>\
             <name><family value=\"Jansen\"/><given value=\"Jan\"/><given value=\"Piet\"/></name>\
             <birthDate value=\"1970-01-01\"/><multipleBirthInteger value=\"2\"/></Patient>"
        );
    }

    #[test]
    fn primitive_extensions_and_ids_align_with_nulls() {
        let patient = json!({
            "resourceType": "Patient",
            "birthDate": "1970",
            "_birthDate": {"id": "b", "extension": [
                {"url": "http://example.org/time", "valueTime": "10:00:00"}]},
            "name": [{
                "id": "n1",
                "given": ["Jan", null],
                "_given": [null, {"extension": [
                    {"url": "http://example.org/x", "valueString": "only an extension"}]}],
                "_family": {"extension": [{"url": "http://example.org/y", "valueBoolean": false}]}
            }]
        });
        let xml = round_trip(patient);
        assert!(xml.contains(
            "<birthDate id=\"b\" value=\"1970\"><extension url=\"http://example.org/time\">\
             <valueTime value=\"10:00:00\"/></extension></birthDate>"
        ));
        assert!(xml.contains("<name id=\"n1\"><family><extension"));
    }

    #[test]
    fn decimals_keep_their_text() {
        for value in [
            "1.0",
            "1.00",
            "0.000001",
            "-2.50",
            "1E+3",
            "12345678901234567890.123",
        ] {
            let observation: Value = serde_json::from_str(&format!(
                r#"{{"resourceType": "Observation", "status": "final", "code": {{"text": "x"}},
                    "valueQuantity": {{"value": {value}, "unit": "mg"}}}}"#
            ))
            .unwrap();
            let text = observation["valueQuantity"]["value"].to_string();
            let xml = round_trip(observation);
            assert!(xml.contains(&format!("<value value=\"{text}\"/>")), "{xml}");
        }
        let bad = "<Observation xmlns=\"http://hl7.org/fhir\"><valueQuantity>\
                   <value value=\"1.\"/></valueQuantity></Observation>";
        assert!(matches!(xml_to_json(bad), Err(XmlError::Structure { .. })));
    }

    #[test]
    fn contained_resources_entries_and_narrative() {
        let bundle = json!({
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{
                "fullUrl": "urn:uuid:1",
                "resource": {
                    "resourceType": "Patient",
                    "text": {"status": "generated",
                             "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>A &amp; B &lt; <b>C</b></p>\n</div>"},
                    "contained": [{"resourceType": "Organization", "id": "o", "name": "Zorg & Co"}],
                    "managingOrganization": {"reference": "#o"}
                }
            }]
        });
        let xml = round_trip(bundle);
        assert!(xml.contains(
            "<entry><fullUrl value=\"urn:uuid:1\"/><resource><Patient><text><status value=\"generated\"/>\
             <div xmlns=\"http://www.w3.org/1999/xhtml\"><p>A &amp; B &lt; <b>C</b></p>\n</div></text>\
             <contained><Organization><id value=\"o\"/><name value=\"Zorg &amp; Co\"/></Organization></contained>"
        ), "{xml}");
    }

    #[test]
    fn extension_url_and_element_id_are_attributes() {
        let patient = json!({
            "resourceType": "Patient",
            "extension": [{"url": "http://e/1", "id": "e1", "extension": [
                {"url": "http://e/2", "valueCodeableConcept": {"coding": [{"system": "s", "code": "c"}]}}
            ]}]
        });
        let xml = round_trip(patient);
        assert!(
            xml.contains("<extension url=\"http://e/1\" id=\"e1\"><extension url=\"http://e/2\">"),
            "{xml}"
        );
    }

    #[test]
    fn whitespace_and_markup_in_values_survive() {
        let patient = json!({
            "resourceType": "Patient",
            "name": [{"text": "  line 1\n\tline 2\r\n \"quoted\" <tag> & 'apos'  "}]
        });
        let xml = round_trip(patient);
        assert!(xml.contains("&#10;&#9;line 2&#13;&#10;"), "{xml}");
        // Literal line ends and tabs in attributes are spaces to any XML reader.
        let read = xml_to_json(
            "<Patient xmlns=\"http://hl7.org/fhir\"><name><text value=\"a\r\nb\tc&#10;d\"/></name></Patient>",
        )
        .unwrap();
        assert_eq!(read["name"][0]["text"], "a b c\nd");
    }

    #[test]
    fn prefixed_namespaces_comments_and_declarations_are_read() {
        let xml = "\u{feff}<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- a comment -->\
                   <f:Patient xmlns:f=\"http://hl7.org/fhir\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
                   xsi:schemaLocation=\"http://hl7.org/fhir ../patient.xsd\">\n  <f:id value=\"x\"/><!-- c -->\n\
                   <f:text><f:status value=\"generated\"/><div xmlns=\"http://www.w3.org/1999/xhtml\">hi</div></f:text>\
                   </f:Patient>\n";
        let json = xml_to_json(xml).unwrap();
        assert_eq!(
            json,
            json!({"resourceType": "Patient", "id": "x", "text": {"status": "generated",
                   "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">hi</div>"}})
        );
    }

    #[test]
    fn doctype_and_undefined_entities_are_refused() {
        let xxe = "<?xml version=\"1.0\"?><!DOCTYPE Patient [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>\
                   <Patient xmlns=\"http://hl7.org/fhir\"><id value=\"&x;\"/></Patient>";
        assert!(matches!(xml_to_json(xxe), Err(XmlError::Doctype)));
        let entity = "<Patient xmlns=\"http://hl7.org/fhir\"><id value=\"&x;\"/></Patient>";
        assert!(xml_to_json(entity).is_err());
        let in_div = "<Patient xmlns=\"http://hl7.org/fhir\"><text><status value=\"generated\"/>\
                      <div xmlns=\"http://www.w3.org/1999/xhtml\">&nbsp;</div></text></Patient>";
        assert!(xml_to_json(in_div).is_err());
    }

    #[test]
    fn not_fhir_xml_is_refused_with_a_path() {
        for (xml, expected) in [
            ("<Patient/>", "FHIR namespace"),
            (
                "<Nothing xmlns=\"http://hl7.org/fhir\"/>",
                "not a FHIR resource type",
            ),
            (
                "<Patient xmlns=\"http://hl7.org/fhir\"><foo value=\"x\"/></Patient>",
                "unknown element 'foo'",
            ),
            (
                "<Patient xmlns=\"http://hl7.org/fhir\"><active value=\"yes\"/></Patient>",
                "Patient.active",
            ),
            (
                "<Patient xmlns=\"http://hl7.org/fhir\"><active>true</active></Patient>",
                "text is not allowed",
            ),
            (
                "<Patient xmlns=\"http://hl7.org/fhir\"><name><id value=\"x\"/></name></Patient>",
                "attribute here",
            ),
            (
                "<Patient xmlns=\"http://hl7.org/fhir\"><active value=\"true\"/><active value=\"true\"/></Patient>",
                "more than once",
            ),
            (
                "<Patient xmlns=\"http://hl7.org/fhir\"><id value=\"x\"/>",
                "ends inside",
            ),
            (
                "<Patient xmlns=\"http://hl7.org/fhir\"><id value=\"x\"></Patient>",
                "malformed",
            ),
            ("", "no root element"),
            (
                "<Patient xmlns=\"http://hl7.org/fhir\" id=\"x\"/>",
                "unexpected attribute",
            ),
        ] {
            let error = xml_to_json(xml).unwrap_err().to_string();
            assert!(error.contains(expected), "{xml}: {error}");
        }
    }

    #[test]
    fn json_without_an_xml_form_is_refused() {
        for (json, expected) in [
            (
                json!({"resourceType": "Nothing"}),
                "not a FHIR resource type",
            ),
            (
                json!({"resourceType": "Patient", "foo": 1}),
                "unknown element 'foo'",
            ),
            (
                json!({"resourceType": "Patient", "name": {"family": "x"}}),
                "array",
            ),
            (
                json!({"resourceType": "Patient", "active": [true]}),
                "does not repeat",
            ),
            (
                json!({"resourceType": "Patient", "name": [{"text": "\u{1}"}]}),
                "U+0001",
            ),
            (
                json!({"resourceType": "Patient", "text": {"status": "generated", "div": "<div>x</div>"}}),
                "xmlns",
            ),
            (
                json!({"resourceType": "Patient", "text": {"status": "generated",
                       "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div></text><evil/>"}}),
                "narrative",
            ),
            (
                json!({"resourceType": "Patient", "name": [{"given": ["a"], "_given": [null, null]}]}),
                "align",
            ),
        ] {
            let error = json_to_xml(&json).unwrap_err().to_string();
            assert!(error.contains(expected), "{json}: {error}");
        }
    }

    #[test]
    fn depth_and_size_are_limited() {
        let mut deep = String::from("<Questionnaire xmlns=\"http://hl7.org/fhir\">");
        for _ in 0..200 {
            deep.push_str("<item>");
        }
        assert!(matches!(xml_to_json(&deep), Err(XmlError::TooDeep { .. })));
        let many: String = (0..100_000).map(|i| format!(" x:a{i}=\"\"")).collect();
        let crowded = format!("<Patient xmlns=\"http://hl7.org/fhir\" xmlns:x=\"urn:x\"{many}/>");
        let started = std::time::Instant::now();
        let error = xml_to_json(&crowded).unwrap_err().to_string();
        assert!(error.contains("attributes on one element"), "{error}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let huge = " ".repeat(MAX_XML_BYTES + 1);
        assert!(matches!(xml_to_json(&huge), Err(XmlError::TooLarge { .. })));
    }

    #[test]
    fn pretty_output_reads_the_same() {
        let patient = json!({"resourceType": "Patient", "id": "p",
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>x</p></div>"},
            "name": [{"family": "F", "given": ["G"]}]});
        let pretty = json_to_xml_pretty(&patient).unwrap();
        assert!(
            pretty.contains("\n  <name>\n    <family value=\"F\"/>"),
            "{pretty}"
        );
        assert_eq!(xml_to_json(&pretty).unwrap(), patient);
    }

    #[test]
    fn numbers_and_references_are_checked() {
        for good in ["0", "-1", "1.5", "1e5", "1.5E-3", "-0.0"] {
            assert!(is_json_number(good), "{good}");
        }
        for bad in [
            "", "-", "01", "1.", ".5", "+1", "1e", " 1", "1 ", "0x1", "NaN",
        ] {
            assert!(!is_json_number(bad), "{bad}");
        }
        assert_eq!(resolve_reference("#x41"), Ok('A'));
        assert_eq!(resolve_reference("#65"), Ok('A'));
        assert!(resolve_reference("#0").is_err());
        assert!(resolve_reference("nbsp").is_err());
    }
}

#[cfg(test)]
mod never_panics {
    use super::*;
    use proptest::prelude::*;

    /// A valid document to mutate: every kind of element the reader handles.
    const SEED: &str = "<?xml version=\"1.0\"?><Bundle xmlns=\"http://hl7.org/fhir\"><type value=\"collection\"/>\
        <entry><resource><Patient><id value=\"p\"/><text><status value=\"generated\"/>\
        <div xmlns=\"http://www.w3.org/1999/xhtml\"><p>a &amp; b</p></div></text>\
        <contained><Organization><id value=\"o\"/></Organization></contained>\
        <extension url=\"http://e\"><valueDecimal value=\"1.50\"/></extension>\
        <name id=\"n\"><given value=\"A\"/><given><extension url=\"http://x\"><valueBoolean value=\"true\"/></extension></given></name>\
        <birthDate value=\"1970\"/></Patient></resource></entry></Bundle>";

    /// Pieces of XML and FHIR syntax, for documents that get further than random text.
    const TOKENS: [&str; 24] = [
        "<",
        ">",
        "/>",
        "</",
        "=\"",
        "\"",
        "&",
        ";",
        "&#0;",
        "&#x41;",
        "&amp;",
        "<!DOCTYPE x>",
        "<![CDATA[",
        "]]>",
        "<!--",
        "-->",
        "<?pi?>",
        "Patient",
        "xmlns=\"http://hl7.org/fhir\"",
        "value",
        "div",
        "extension",
        " ",
        "name",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,300}") {
            let _ = xml_to_json(&text);
        }

        #[test]
        fn token_soup_never_panics(tokens in proptest::collection::vec(0..TOKENS.len(), 0..60)) {
            let text: String = tokens.iter().map(|i| TOKENS[*i]).collect();
            let _ = xml_to_json(&text);
        }

        #[test]
        fn mutated_documents_never_panic(
            edits in proptest::collection::vec((0..SEED.len(), 0..8usize, 0..TOKENS.len()), 1..6)
        ) {
            let mut text = SEED.to_string();
            for (at, cut, token) in edits {
                let mut at = at.min(text.len());
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                let mut end = (at + cut).min(text.len());
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.replace_range(at..end, TOKENS[token]);
            }
            if let Ok(json) = xml_to_json(&text) {
                // What reads also writes, and reads back the same.
                let xml = json_to_xml(&json);
                prop_assert!(xml.is_ok(), "{text} read but cannot be written: {xml:?}");
                let again = xml_to_json(&xml.unwrap_or_default());
                prop_assert_eq!(again.ok(), Some(json));
            }
        }

        #[test]
        fn arbitrary_json_never_panics(json in arbitrary_json()) {
            if let Ok(xml) = json_to_xml(&json) {
                let back = xml_to_json(&xml);
                prop_assert!(back.is_ok(), "{xml} was written but cannot be read: {back:?}");
            }
        }
    }

    /// JSON whose keys are mostly FHIR element names, so that some of it is a resource.
    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("resourceType".to_string()),
            Just("id".to_string()),
            Just("name".to_string()),
            Just("given".to_string()),
            Just("_given".to_string()),
            Just("family".to_string()),
            Just("extension".to_string()),
            Just("url".to_string()),
            Just("valueString".to_string()),
            Just("text".to_string()),
            Just("div".to_string()),
            Just("contained".to_string()),
            "[a-z_]{1,6}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::from),
            Just(Value::String("Patient".to_string())),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 64, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec((key.clone(), inner), 0..6)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
        .prop_map(|mut value| {
            if let Value::Object(map) = &mut value {
                map.insert(
                    "resourceType".to_string(),
                    Value::String("Patient".to_string()),
                );
            }
            value
        })
    }
}
