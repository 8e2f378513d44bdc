//! Parses FHIR search query parameters into a typed [`SearchQuery`].
//!
//! Handles prefixes (`ge2020`), modifiers (`:exact`, `:contains`, `:missing`, `:not`, `:Type`),
//! OR lists (`a,b`, with `\,` escapes), repeated parameters (AND), one level of chaining
//! (`patient.identifier=…`), `_include`/`_revinclude` (with `:iterate`), `_sort`, `_count`,
//! `_summary`, `_elements`. Unknown parameters are collected, so the caller decides between
//! lenient and strict handling.

use super::extract::normalize_string;
use super::{ParamType, SearchParam, SearchRegistry};
use crate::datetime::{DateRange, parse_date_range};
use crate::outcome::{Issue, IssueCode};
use std::sync::Arc;

/// Upper bound for `_count`.
pub const MAX_PAGE_SIZE: usize = 1_000;
/// Page size when `_count` is absent.
pub const DEFAULT_PAGE_SIZE: usize = 20;
/// Most OR values one parameter may carry.
pub const MAX_OR_VALUES: usize = 100;
/// Most criteria one query may carry.
pub const MAX_CRITERIA: usize = 40;

/// Comparison prefix for ordered values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    /// Equal (the value's range contains the target's).
    Eq,
    /// Not equal.
    Ne,
    /// Greater than.
    Gt,
    /// Less than.
    Lt,
    /// Greater or equal.
    Ge,
    /// Less or equal.
    Le,
    /// Starts after.
    Sa,
    /// Ends before.
    Eb,
    /// Approximately (treated as overlap).
    Ap,
}

/// The system part of a token search value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSystem {
    /// `code`: any system.
    Any,
    /// `|code`: no system.
    None,
    /// `system|code` or `system|`.
    Is(String),
}

/// One value of a criterion (several are OR-ed).
#[derive(Debug, Clone, PartialEq)]
pub enum CriterionValue {
    /// Token.
    Token {
        /// System constraint.
        system: TokenSystem,
        /// Code, or `None` for `system|`.
        code: Option<String>,
    },
    /// String, already normalised unless the modifier is `:exact`.
    String(String),
    /// Date with prefix.
    Date(Prefix, DateRange),
    /// Number with prefix; `low`/`high` bound the implied precision for `eq`.
    Number {
        /// Prefix.
        prefix: Prefix,
        /// Value.
        value: f64,
        /// Lower bound implied by precision.
        low: f64,
        /// Upper bound implied by precision.
        high: f64,
    },
    /// Quantity: number plus optional unit system and code.
    Quantity {
        /// Prefix.
        prefix: Prefix,
        /// Value.
        value: f64,
        /// Lower bound implied by precision.
        low: f64,
        /// Upper bound implied by precision.
        high: f64,
        /// Unit system, when given.
        system: Option<String>,
        /// Unit code, when given.
        code: Option<String>,
    },
    /// Reference: target type (`None`: any) and id or URL.
    Reference {
        /// Target type, when known.
        target_type: Option<String>,
        /// Id or absolute URL.
        target_id: String,
    },
    /// URI (exact).
    Uri(String),
}

/// String matching mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringMatch {
    /// Starts with, ignoring case and accents.
    StartsWith,
    /// Exactly equal.
    Exact,
    /// Contains, ignoring case and accents.
    Contains,
}

/// One criterion; all criteria of a query must hold (AND).
#[derive(Debug, Clone, PartialEq)]
pub enum Criterion {
    /// `_id`.
    Id(Vec<String>),
    /// `_lastUpdated`.
    LastUpdated(Vec<(Prefix, DateRange)>),
    /// An indexed parameter with OR-ed values.
    Param {
        /// The parameter.
        param: Arc<SearchParam>,
        /// String matching mode (string parameters only).
        string_match: StringMatch,
        /// `:not` on tokens.
        negate: bool,
        /// OR-ed values.
        values: Vec<CriterionValue>,
    },
    /// `:missing=true|false`.
    Missing {
        /// The parameter.
        param: Arc<SearchParam>,
        /// True: the resource has no value for it.
        missing: bool,
    },
    /// `ref.param=…`: a reference whose target matches the inner criterion.
    Chain(Chain),
}

/// One level of chaining.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    /// The reference parameter on the searched type.
    pub reference: Arc<SearchParam>,
    /// Per candidate target type, the criterion on that type.
    pub targets: Vec<(String, Box<Criterion>)>,
}

/// `_include` / `_revinclude` item.
#[derive(Debug, Clone, PartialEq)]
pub struct Include {
    /// Source resource type (`*` for all).
    pub source_type: String,
    /// Reference parameter code (`*` for all).
    pub param: String,
    /// Only targets of this type.
    pub target_type: Option<String>,
    /// `:iterate` (or the older `:recurse`).
    pub iterate: bool,
}

/// What to sort on.
#[derive(Debug, Clone)]
pub enum SortKey {
    /// `_id`.
    Id {
        /// Descending.
        descending: bool,
    },
    /// `_lastUpdated`.
    LastUpdated {
        /// Descending.
        descending: bool,
    },
    /// An indexed parameter.
    Param {
        /// The parameter.
        param: Arc<SearchParam>,
        /// Descending.
        descending: bool,
    },
}

/// `_summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    /// Only the total.
    Count,
    /// Only summary elements.
    True,
    /// Everything but the narrative.
    Data,
    /// Only narrative and mandatory elements.
    Text,
    /// Everything (the default).
    False,
}

/// A parsed search.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    /// Type searched; `None` for a search across all types.
    pub resource_type: Option<String>,
    /// For searches across types: `_type`.
    pub types: Vec<String>,
    /// AND-ed criteria.
    pub criteria: Vec<Criterion>,
    /// Page size.
    pub count: usize,
    /// Sort keys, most significant first.
    pub sort: Vec<SortKey>,
    /// `_include`.
    pub include: Vec<Include>,
    /// `_revinclude`.
    pub revinclude: Vec<Include>,
    /// `_summary`.
    pub summary: Option<Summary>,
    /// `_elements`.
    pub elements: Option<Vec<String>>,
    /// Opaque paging cursor from a `next` link.
    pub cursor: Option<String>,
    /// Parameters that were not understood (reported or rejected by the caller).
    pub unknown: Vec<String>,
}

/// Result-control and format parameters that are accepted and need no parsing here.
const PASSTHROUGH_PARAMS: [&str; 4] = ["_format", "_pretty", "_total", "_contained"];

fn bad(message: impl Into<String>) -> Issue {
    Issue::error(IssueCode::Invalid, message)
}

/// Parses decoded `(name, value)` pairs for a search on `resource_type` (or on all types).
pub fn parse_search_query(
    registry: &SearchRegistry,
    resource_type: Option<&str>,
    pairs: &[(String, String)],
) -> Result<SearchQuery, Issue> {
    let mut query = SearchQuery {
        resource_type: resource_type.map(String::from),
        count: DEFAULT_PAGE_SIZE,
        ..SearchQuery::default()
    };
    for (name, value) in pairs {
        match name.as_str() {
            "_count" => {
                let count: usize = value.parse().map_err(|_| {
                    bad(format!(
                        "_count must be a non-negative integer, not '{value}'"
                    ))
                })?;
                query.count = count.min(MAX_PAGE_SIZE);
            }
            "_sort" => {
                for item in value.split(',').filter(|s| !s.is_empty()) {
                    query.sort.push(parse_sort(registry, resource_type, item)?);
                }
            }
            "_include" | "_include:iterate" | "_include:recurse" => query
                .include
                .push(parse_include(value, name != "_include")?),
            "_revinclude" | "_revinclude:iterate" | "_revinclude:recurse" => query
                .revinclude
                .push(parse_include(value, name != "_revinclude")?),
            "_summary" => {
                query.summary = Some(match value.as_str() {
                    "count" => Summary::Count,
                    "true" => Summary::True,
                    "data" => Summary::Data,
                    "text" => Summary::Text,
                    "false" => Summary::False,
                    other => return Err(bad(format!("unknown _summary value '{other}'"))),
                })
            }
            "_elements" => {
                query.elements = Some(
                    value
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect(),
                )
            }
            "_cursor" => query.cursor = Some(value.clone()),
            "_type" if resource_type.is_none() => query.types.extend(
                value
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty()),
            ),
            n if PASSTHROUGH_PARAMS.contains(&n) => {}
            _ => match parse_criterion(registry, resource_type, name, value)? {
                Some(criterion) => {
                    if query.criteria.len() >= MAX_CRITERIA {
                        return Err(Issue::error(
                            IssueCode::TooCostly,
                            format!("at most {MAX_CRITERIA} search criteria"),
                        ));
                    }
                    query.criteria.push(criterion);
                }
                None => query.unknown.push(name.clone()),
            },
        }
    }
    Ok(query)
}

fn parse_sort(
    registry: &SearchRegistry,
    resource_type: Option<&str>,
    item: &str,
) -> Result<SortKey, Issue> {
    let (descending, code) = match item.strip_prefix('-') {
        Some(code) => (true, code),
        None => (false, item),
    };
    match code {
        "_id" => return Ok(SortKey::Id { descending }),
        "_lastUpdated" => return Ok(SortKey::LastUpdated { descending }),
        _ => {}
    }
    let param = resource_type
        .and_then(|t| registry.get(t, code))
        .ok_or_else(|| bad(format!("cannot sort on unknown parameter '{code}'")))?;
    if param.param_type == ParamType::Reference || param.param_type == ParamType::Uri {
        return Err(bad(format!(
            "cannot sort on {} parameter '{code}'",
            param.param_type.as_str()
        )));
    }
    Ok(SortKey::Param {
        param: param.clone(),
        descending,
    })
}

fn parse_include(value: &str, iterate: bool) -> Result<Include, Issue> {
    if value == "*" {
        return Ok(Include {
            source_type: "*".into(),
            param: "*".into(),
            target_type: None,
            iterate,
        });
    }
    let mut parts = value.split(':');
    let source_type = parts.next().filter(|s| !s.is_empty());
    let param = parts.next().filter(|s| !s.is_empty());
    let target_type = parts.next().map(String::from);
    match (source_type, param, parts.next()) {
        (Some(source_type), Some(param), None) => Ok(Include {
            source_type: source_type.to_string(),
            param: param.to_string(),
            target_type,
            iterate,
        }),
        _ => Err(bad(format!(
            "_include/_revinclude must look like Type:param[:Target], not '{value}'"
        ))),
    }
}

fn parse_criterion(
    registry: &SearchRegistry,
    resource_type: Option<&str>,
    name: &str,
    value: &str,
) -> Result<Option<Criterion>, Issue> {
    if let Some((head, inner_name)) = name.split_once('.') {
        return parse_chain(registry, resource_type, head, inner_name, value);
    }
    let (code, modifier) = match name.split_once(':') {
        Some((c, m)) => (c, Some(m)),
        None => (name, None),
    };
    let values = split_or(value);
    if values.len() > MAX_OR_VALUES {
        return Err(Issue::error(
            IssueCode::TooCostly,
            format!("at most {MAX_OR_VALUES} values per parameter"),
        ));
    }
    match code {
        "_id" => {
            if modifier.is_some() {
                return Err(bad("_id takes no modifier"));
            }
            return Ok(Some(Criterion::Id(values)));
        }
        "_lastUpdated" => {
            let mut parsed = Vec::new();
            for v in &values {
                let (prefix, rest) = split_prefix(v);
                let range = parse_date_range(rest)
                    .ok_or_else(|| bad(format!("'{v}' is not a valid date for _lastUpdated")))?;
                parsed.push((prefix, range));
            }
            return Ok(Some(Criterion::LastUpdated(parsed)));
        }
        _ => {}
    }
    let Some(resource_type) = resource_type else {
        return Ok(None);
    };
    let Some(param) = registry.get(resource_type, code) else {
        return Ok(None);
    };
    if modifier == Some("missing") {
        let missing = match value.as_str_ref() {
            "true" => true,
            "false" => false,
            other => return Err(bad(format!(":missing takes true or false, not '{other}'"))),
        };
        return Ok(Some(Criterion::Missing {
            param: param.clone(),
            missing,
        }));
    }
    let mut string_match = StringMatch::StartsWith;
    let mut negate = false;
    let mut reference_type = None;
    match (param.param_type, modifier) {
        (_, None) => {}
        (ParamType::String, Some("exact")) => string_match = StringMatch::Exact,
        (ParamType::String, Some("contains")) => string_match = StringMatch::Contains,
        (ParamType::Token, Some("not")) => negate = true,
        (ParamType::Reference, Some(t)) if t.starts_with(|c: char| c.is_ascii_uppercase()) => {
            reference_type = Some(t.to_string())
        }
        (_, Some(m)) => {
            return Err(Issue::error(
                IssueCode::NotSupported,
                format!(
                    "modifier ':{m}' is not supported on {} parameter '{code}'",
                    param.param_type.as_str()
                ),
            ));
        }
    }
    let mut parsed = Vec::with_capacity(values.len());
    for v in &values {
        parsed.push(parse_value(
            param,
            v,
            string_match,
            reference_type.as_deref(),
        )?);
    }
    Ok(Some(Criterion::Param {
        param: param.clone(),
        string_match,
        negate,
        values: parsed,
    }))
}

trait AsStrRef {
    fn as_str_ref(&self) -> &str;
}
impl AsStrRef for str {
    fn as_str_ref(&self) -> &str {
        self
    }
}

fn parse_chain(
    registry: &SearchRegistry,
    resource_type: Option<&str>,
    head: &str,
    inner_name: &str,
    value: &str,
) -> Result<Option<Criterion>, Issue> {
    let Some(resource_type) = resource_type else {
        return Ok(None);
    };
    let (code, explicit_type) = match head.split_once(':') {
        Some((c, t)) => (c, Some(t)),
        None => (head, None),
    };
    let Some(reference) = registry.get(resource_type, code) else {
        return Ok(None);
    };
    if reference.param_type != ParamType::Reference {
        return Err(bad(format!(
            "'{code}' is not a reference parameter, so it cannot be chained"
        )));
    }
    if inner_name.contains('.') {
        return Err(Issue::error(
            IssueCode::NotSupported,
            "chaining is supported one level deep",
        ));
    }
    let candidates: Vec<String> = match explicit_type {
        Some(t) => vec![t.to_string()],
        None => reference.effective_targets(),
    };
    let mut targets = Vec::new();
    for target in candidates {
        if let Some(inner) = parse_criterion(registry, Some(&target), inner_name, value)? {
            targets.push((target, Box::new(inner)));
        }
    }
    if targets.is_empty() {
        return Err(bad(format!(
            "chained parameter '{head}.{inner_name}' matches no target type"
        )));
    }
    Ok(Some(Criterion::Chain(Chain {
        reference: reference.clone(),
        targets,
    })))
}

fn parse_value(
    param: &SearchParam,
    value: &str,
    string_match: StringMatch,
    reference_type: Option<&str>,
) -> Result<CriterionValue, Issue> {
    let code = &param.code;
    if value.is_empty() {
        return Err(bad(format!("empty value for parameter '{code}'")));
    }
    Ok(match param.param_type {
        ParamType::Token => {
            let parts = split_unescaped(value, '|');
            match parts.as_slice() {
                [code] => CriterionValue::Token {
                    system: TokenSystem::Any,
                    code: Some(unescape(code)),
                },
                [system, code] => {
                    let code = (!code.is_empty()).then(|| unescape(code));
                    if system.is_empty() && code.is_none() {
                        return Err(bad(format!(
                            "'{value}' is not a valid token for '{code_name}'",
                            code_name = param.code
                        )));
                    }
                    let system = match unescape(system) {
                        s if s.is_empty() => TokenSystem::None,
                        // Codes of a `code` element are indexed without their implicit
                        // system (`Patient.gender`): `system|code` with it is `|code`.
                        s if param.implicit_system() == Some(s.as_str()) => TokenSystem::None,
                        s => TokenSystem::Is(s),
                    };
                    CriterionValue::Token { system, code }
                }
                _ => return Err(bad(format!("'{value}' is not a valid token for '{code}'"))),
            }
        }
        ParamType::String => {
            let text = unescape(value);
            CriterionValue::String(if string_match == StringMatch::Exact {
                text
            } else {
                normalize_string(&text)
            })
        }
        ParamType::Date => {
            let (prefix, rest) = split_prefix(value);
            let range = parse_date_range(rest)
                .ok_or_else(|| bad(format!("'{value}' is not a valid date for '{code}'")))?;
            CriterionValue::Date(prefix, range)
        }
        ParamType::Number => {
            let (prefix, rest) = split_prefix(value);
            let (value, low, high) = parse_number(rest)
                .ok_or_else(|| bad(format!("'{value}' is not a valid number for '{code}'")))?;
            CriterionValue::Number {
                prefix,
                value,
                low,
                high,
            }
        }
        ParamType::Quantity => {
            let parts = split_unescaped(value, '|');
            let (prefix, number) = split_prefix(parts[0]);
            let (number, low, high) = parse_number(number)
                .ok_or_else(|| bad(format!("'{value}' is not a valid quantity for '{code}'")))?;
            let (system, unit) = match parts.as_slice() {
                [_] => (None, None),
                [_, system, unit] => (
                    (!system.is_empty()).then(|| unescape(system)),
                    (!unit.is_empty()).then(|| unescape(unit)),
                ),
                _ => {
                    return Err(bad(format!(
                        "'{value}' is not a valid quantity for '{code}'"
                    )));
                }
            };
            CriterionValue::Quantity {
                prefix,
                value: number,
                low,
                high,
                system,
                code: unit,
            }
        }
        ParamType::Reference => parse_reference_value(param, value, reference_type)?,
        ParamType::Uri => CriterionValue::Uri(unescape(value)),
    })
}

fn parse_reference_value(
    param: &SearchParam,
    value: &str,
    reference_type: Option<&str>,
) -> Result<CriterionValue, Issue> {
    let value = unescape(value);
    if value.contains("://") || value.starts_with("urn:") {
        return Ok(CriterionValue::Reference {
            target_type: None,
            target_id: value,
        });
    }
    let (target_type, target_id) = match value.split_once('/') {
        Some((t, id)) => {
            let id = id.split("/_history/").next().unwrap_or(id);
            (Some(t.to_string()), id.to_string())
        }
        None => {
            let targets = param.effective_targets();
            let implied = reference_type
                .map(String::from)
                .or_else(|| (targets.len() == 1).then(|| targets[0].clone()));
            (implied, value.clone())
        }
    };
    if target_id.is_empty() || target_id.contains('/') || !crate::validate::is_valid_id(&target_id)
    {
        return Err(bad(format!(
            "'{value}' is not a valid reference for '{}'",
            param.code
        )));
    }
    if let (Some(t), Some(r)) = (&target_type, reference_type)
        && t != r
    {
        return Err(bad(format!(
            "reference '{value}' does not match modifier ':{r}'"
        )));
    }
    Ok(CriterionValue::Reference {
        target_type,
        target_id,
    })
}

/// Splits `ge2020` into (Ge, "2020"); no prefix means Eq.
fn split_prefix(value: &str) -> (Prefix, &str) {
    let prefixes = [
        ("eq", Prefix::Eq),
        ("ne", Prefix::Ne),
        ("gt", Prefix::Gt),
        ("lt", Prefix::Lt),
        ("ge", Prefix::Ge),
        ("le", Prefix::Le),
        ("sa", Prefix::Sa),
        ("eb", Prefix::Eb),
        ("ap", Prefix::Ap),
    ];
    for (text, prefix) in prefixes {
        if let Some(rest) = value.strip_prefix(text)
            && rest.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.')
        {
            return (prefix, rest);
        }
    }
    (Prefix::Eq, value)
}

/// A decimal with the range its precision implies: `100` → [99.5, 100.5).
fn parse_number(text: &str) -> Option<(f64, f64, f64)> {
    let bytes = text.as_bytes();
    let body = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, exponent) = match body.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (body, 0),
    };
    let valid = !mantissa.is_empty()
        && mantissa.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && mantissa.bytes().filter(|b| *b == b'.').count() <= 1
        && mantissa.bytes().any(|b| b.is_ascii_digit())
        && !bytes.is_empty();
    if !valid {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    if !value.is_finite() {
        return None;
    }
    let decimals = mantissa.split_once('.').map_or(0, |(_, f)| f.len() as i32) - exponent;
    let half_step = 0.5 * 10f64.powi(-decimals);
    Some((value, value - half_step, value + half_step))
}

/// Splits an OR list on unescaped commas.
fn split_or(value: &str) -> Vec<String> {
    split_unescaped(value, ',')
        .into_iter()
        .map(String::from)
        .collect()
}

fn split_unescaped(value: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
        } else if c == separator {
            parts.push(&value[start..i]);
            start = i + 1;
        }
    }
    parts.push(&value[start..]);
    parts
}

fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(resource_type: &str, query: &[(&str, &str)]) -> Result<SearchQuery, Issue> {
        let pairs: Vec<(String, String)> = query
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        static REGISTRY: std::sync::OnceLock<SearchRegistry> = std::sync::OnceLock::new();
        parse_search_query(
            REGISTRY.get_or_init(SearchRegistry::r4),
            Some(resource_type),
            &pairs,
        )
    }

    /// `Patient.gender` and `Observation.status` are `code`s bound to one code system each:
    /// that system is implied, other systems are not, and a coded concept keeps its system.
    #[test]
    fn codes_have_their_bound_system() {
        let first_value = |resource_type: &str, name: &str, value: &str| {
            let q = parse(resource_type, &[(name, value)]).unwrap();
            let Criterion::Param { values, .. } = &q.criteria[0] else {
                panic!()
            };
            values[0].clone()
        };
        for (resource_type, name, value, code) in [
            (
                "Patient",
                "gender",
                "http://hl7.org/fhir/administrative-gender|male",
                Some("male"),
            ),
            (
                "Patient",
                "gender",
                "http://hl7.org/fhir/administrative-gender|",
                None,
            ),
            (
                "Observation",
                "status",
                "http://hl7.org/fhir/observation-status|final",
                Some("final"),
            ),
        ] {
            assert_eq!(
                first_value(resource_type, name, value),
                CriterionValue::Token {
                    system: TokenSystem::None,
                    code: code.map(String::from)
                },
                "{resource_type}?{name}={value}"
            );
        }
        assert_eq!(
            first_value("Patient", "gender", "http://example.org/gender|male"),
            CriterionValue::Token {
                system: TokenSystem::Is("http://example.org/gender".into()),
                code: Some("male".into())
            }
        );
        assert_eq!(
            first_value("Observation", "code", "http://loinc.org|2339-0"),
            CriterionValue::Token {
                system: TokenSystem::Is("http://loinc.org".into()),
                code: Some("2339-0".into())
            }
        );
    }

    #[test]
    fn tokens_with_and_without_system() {
        let q = parse(
            "Patient",
            &[(
                "identifier",
                "http://fhir.nl/fhir/NamingSystem/bsn|123456782,|x,abc,sys|",
            )],
        )
        .unwrap();
        let Criterion::Param { values, .. } = &q.criteria[0] else {
            panic!()
        };
        assert_eq!(
            values[0],
            CriterionValue::Token {
                system: TokenSystem::Is("http://fhir.nl/fhir/NamingSystem/bsn".into()),
                code: Some("123456782".into())
            }
        );
        assert_eq!(
            values[1],
            CriterionValue::Token {
                system: TokenSystem::None,
                code: Some("x".into())
            }
        );
        assert_eq!(
            values[2],
            CriterionValue::Token {
                system: TokenSystem::Any,
                code: Some("abc".into())
            }
        );
        assert_eq!(
            values[3],
            CriterionValue::Token {
                system: TokenSystem::Is("sys".into()),
                code: None
            }
        );
    }

    #[test]
    fn dates_prefixes_and_partials() {
        let q = parse(
            "Patient",
            &[("birthdate", "ge1980-05"), ("birthdate", "lt1990")],
        )
        .unwrap();
        assert_eq!(q.criteria.len(), 2);
        let Criterion::Param { values, .. } = &q.criteria[0] else {
            panic!()
        };
        assert!(matches!(values[0], CriterionValue::Date(Prefix::Ge, _)));
        assert!(parse("Patient", &[("birthdate", "ge19800")]).is_err());
    }

    #[test]
    fn strings_modifiers_and_escapes() {
        let q = parse(
            "Patient",
            &[("family:exact", "Berg\\,van den"), ("name", "JÓH")],
        )
        .unwrap();
        let Criterion::Param {
            values,
            string_match,
            ..
        } = &q.criteria[0]
        else {
            panic!()
        };
        assert_eq!(*string_match, StringMatch::Exact);
        assert_eq!(values[0], CriterionValue::String("Berg,van den".into()));
        let Criterion::Param { values, .. } = &q.criteria[1] else {
            panic!()
        };
        assert_eq!(values[0], CriterionValue::String("joh".into()));
        assert!(parse("Patient", &[("family:below", "x")]).is_err());
    }

    #[test]
    fn references_and_chains() {
        let q = parse(
            "Observation",
            &[
                ("patient", "123"),
                ("subject", "Patient/9"),
                ("patient.identifier", "sys|1"),
            ],
        )
        .unwrap();
        let Criterion::Param { values, .. } = &q.criteria[0] else {
            panic!()
        };
        assert_eq!(
            values[0],
            CriterionValue::Reference {
                target_type: Some("Patient".into()),
                target_id: "123".into()
            }
        );
        let Criterion::Param { values, .. } = &q.criteria[1] else {
            panic!()
        };
        assert_eq!(
            values[0],
            CriterionValue::Reference {
                target_type: Some("Patient".into()),
                target_id: "9".into()
            }
        );
        let Criterion::Chain(chain) = &q.criteria[2] else {
            panic!()
        };
        assert_eq!(chain.reference.code, "patient");
        assert_eq!(chain.targets.len(), 1);
        assert!(parse("Observation", &[("patient.organization.name", "x")]).is_err());
    }

    #[test]
    fn unknown_parameters_are_collected() {
        let q = parse(
            "Patient",
            &[("foo", "bar"), ("_count", "5"), ("_format", "json")],
        )
        .unwrap();
        assert_eq!(q.unknown, ["foo"]);
        assert_eq!(q.count, 5);
    }

    #[test]
    fn numbers_carry_precision() {
        assert_eq!(parse_number("100"), Some((100.0, 99.5, 100.5)));
        assert_eq!(parse_number("1.5"), Some((1.5, 1.45, 1.55)));
        assert_eq!(parse_number("abc"), None);
        assert_eq!(parse_number("1.2.3"), None);
    }

    #[test]
    fn includes_and_sort() {
        let q = parse(
            "MedicationRequest",
            &[
                ("_include", "MedicationRequest:patient"),
                (
                    "_include:iterate",
                    "Patient:general-practitioner:Organization",
                ),
                ("_sort", "-date,_id"),
            ],
        )
        .unwrap();
        assert_eq!(q.include.len(), 2);
        assert!(q.include[1].iterate);
        assert_eq!(q.include[1].target_type.as_deref(), Some("Organization"));
        assert_eq!(q.sort.len(), 2);
        assert!(parse("Patient", &[("_include", "garbage")]).is_err());
    }

    proptest! {
        #[test]
        fn parsing_never_panics(name in "[a-z_:.\\-]{1,20}", value in "\\PC{0,30}") {
            let _ = parse("Observation", &[(name.as_str(), value.as_str())]);
        }

        #[test]
        fn token_round_trips(system in "[a-z:/.]{1,20}", code in "[A-Za-z0-9]{1,10}") {
            let q = parse("Patient", &[("identifier", &format!("{system}|{code}"))]).unwrap();
            let Criterion::Param { values, .. } = &q.criteria[0] else { panic!() };
            prop_assert_eq!(&values[0], &CriterionValue::Token { system: TokenSystem::Is(system.clone()), code: Some(code.clone()) });
        }

        #[test]
        fn or_lists_split_on_unescaped_commas(parts in proptest::collection::vec("[a-z]{1,5}", 1..6)) {
            let q = parse("Patient", &[("family", &parts.join(","))]).unwrap();
            let Criterion::Param { values, .. } = &q.criteria[0] else { panic!() };
            prop_assert_eq!(values.len(), parts.len());
        }
    }
}
