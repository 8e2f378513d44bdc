//! Parses FHIR search query parameters into a typed [`SearchQuery`].
//!
//! Handles prefixes (`ge2020`), modifiers (`:exact`, `:contains`, `:missing`, `:not`, `:Type`),
//! OR lists (`a,b`, with `\,` escapes), repeated parameters (AND), one level of chaining
//! (`patient.identifier=…`), `_include`/`_revinclude` (with `:iterate`), `_sort`, `_count`,
//! `_summary`, `_elements`. Unknown parameters are collected, so the caller decides between
//! lenient and strict handling.

use super::extract::normalize_string;
use super::{ParamType, SearchParam, SearchRegistry};
use crate::categories::CategorySet;
use crate::datetime::{DateRange, parse_date_range};
use crate::outcome::{Issue, IssueCode};
use std::sync::Arc;

/// Upper bound for `_count`.
pub const MAX_PAGE_SIZE: usize = 1_000;
/// Page size when `_count` is absent: large enough that a patient's medication of one kind
/// (Nictiz' MP9 qualification expects 26 dispenses on one page) comes whole.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Most OR values one parameter may carry.
pub const MAX_OR_VALUES: usize = 100;
/// Most criteria one query may carry.
pub const MAX_CRITERIA: usize = 40;
/// Most bytes of decoded search text (every name and value together). A hundred OR-ed BSN
/// identifiers with their system take 5 KiB; the URL itself is capped near 64 KiB by the
/// HTTP layer, but a `_search` body or an `If-None-Exist` header is not.
pub const MAX_QUERY_BYTES: usize = 32 * 1024;
/// Most keys in `_sort`. Paging a sorted search compares the cursor's row on every prefix of
/// the keys, so that condition grows with the square of their number (eight keys: 45 bound
/// values); no real ordering needs more.
pub const MAX_SORT_KEYS: usize = 8;
/// Most `_include` and `_revinclude` items together: each runs a statement per source type
/// in each `:iterate` round.
pub const MAX_INCLUDES: usize = 10;
/// Most (target type, value) pairs one chained parameter expands to: a chain through a
/// reference that may point at any resource type (`Observation?focus.identifier=…`) repeats
/// its inner criterion for every one of the ~150 types. 1,000 admits a chain over all types
/// with six values, or over one type with the full [`MAX_OR_VALUES`].
pub const MAX_CHAIN_EXPANSION: usize = 1_000;
/// Most values one search statement may bind, by the estimate of
/// [`SearchQuery::bound_parameters`]. Well below SQLite's limit (32,766) and PostgreSQL's
/// (65,535), and low enough that planning a statement (PostgreSQL plans every execution with
/// its values) stays cheap; a search of 40 criteria of 50 values each still fits.
pub const MAX_BOUND_PARAMETERS: usize = 8_192;
/// Most bytes of a `_cursor`: eight sort values and a row id, base64-encoded JSON. Only a
/// sort value of kilobytes (a long indexed string) comes near it.
pub const MAX_CURSOR_BYTES: usize = 8 * 1024;
/// Most characters of a number or quantity value: an `f64` keeps 17 significant digits, so
/// more digits only cost parsing.
pub const MAX_NUMBER_CHARS: usize = 64;
/// Largest decimal exponent of a search number, in magnitude: an `f64` spans about
/// 1e-324 to 1e308, so larger exponents only ever mean zero or infinity.
const MAX_DECIMAL_EXPONENT: i32 = 400;
/// Values the store binds for the index rows a criterion or sort key reads (the parameter
/// ids, a few for a parameter that reads others' rows, and a target type), an upper bound
/// that the store checks against its parameters.
pub const PARAMETERS_PER_INDEX_ROWS: usize = 4;

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
    /// `_has:Type:ref:param=…` (reverse chaining): a resource that a resource of `Type`
    /// matching the inner criterion refers to through `ref`.
    Has(Has),
}

/// One level of reverse chaining.
#[derive(Debug, Clone, PartialEq)]
pub struct Has {
    /// The type of the referring resources.
    pub source_type: String,
    /// The reference parameter on that type.
    pub reference: Arc<SearchParam>,
    /// The criterion on the referring resources.
    pub criterion: Box<Criterion>,
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
    /// Matches only from the compartments of these Patients: each belongs to the compartment
    /// of at least one of them and of no other Patient. Never set from a request's
    /// parameters: an access layer in front of the search sets it. `None`: no such limit.
    pub within_compartments: Option<Vec<String>>,
    /// Matches only resources that belong to at least one data category, and to none outside
    /// this set ([`crate::categories::access_categories_of`]). Set by an access layer, like
    /// `within_compartments`. `None`: no such limit.
    pub within_categories: Option<CategorySet>,
    /// `_total=none`: the first page is not counted.
    pub without_total: bool,
}

/// Result-control and format parameters that are accepted and need no parsing here.
const PASSTHROUGH_PARAMS: [&str; 3] = ["_format", "_pretty", "_contained"];

fn bad(message: impl Into<String>) -> Issue {
    Issue::error(IssueCode::Invalid, message)
}

fn too_costly(message: impl Into<String>) -> Issue {
    Issue::error(IssueCode::TooCostly, message)
}

/// Whether `c` may appear in search text: what a FHIR string may hold, anything from U+0020
/// on plus tab, CR and LF. PostgreSQL refuses NUL in text outright, and no stored value holds
/// the others (the validator refuses them).
pub fn is_search_text_char(c: char) -> bool {
    c >= ' ' || matches!(c, '\t' | '\r' | '\n')
}

/// Refuses text holding a character [`is_search_text_char`] rejects, naming `what` it is.
pub fn check_search_text(what: &str, text: &str) -> Result<(), Issue> {
    match text.chars().find(|c| !is_search_text_char(*c)) {
        None => Ok(()),
        Some(c) => Err(bad(format!(
            "{what} holds control character U+{:04X}, which search values may not contain",
            u32::from(c)
        ))),
    }
}

/// The limits every search is held to before any of it is parsed further: its size and the
/// characters it is written in.
fn check_text(pairs: &[(String, String)]) -> Result<(), Issue> {
    let bytes: usize = pairs.iter().map(|(n, v)| n.len() + v.len()).sum();
    if bytes > MAX_QUERY_BYTES {
        return Err(too_costly(format!(
            "search text of {bytes} bytes is longer than MAX_QUERY_BYTES ({MAX_QUERY_BYTES})"
        )));
    }
    for (name, value) in pairs {
        let shown: String = name.chars().filter(|c| is_search_text_char(*c)).collect();
        check_search_text(&format!("search parameter '{shown}'"), name)?;
        check_search_text(&format!("the value of search parameter '{shown}'"), value)?;
    }
    Ok(())
}

/// Parses decoded `(name, value)` pairs for a search on `resource_type` (or on all types).
pub fn parse_search_query(
    registry: &SearchRegistry,
    resource_type: Option<&str>,
    pairs: &[(String, String)],
) -> Result<SearchQuery, Issue> {
    check_text(pairs)?;
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
                    if query.sort.len() >= MAX_SORT_KEYS {
                        return Err(too_costly(format!(
                            "_sort has more than MAX_SORT_KEYS ({MAX_SORT_KEYS}) keys"
                        )));
                    }
                    query.sort.push(parse_sort(registry, resource_type, item)?);
                }
            }
            "_include"
            | "_include:iterate"
            | "_include:recurse"
            | "_revinclude"
            | "_revinclude:iterate"
            | "_revinclude:recurse" => {
                if query.include.len() + query.revinclude.len() >= MAX_INCLUDES {
                    return Err(too_costly(format!(
                        "more than MAX_INCLUDES ({MAX_INCLUDES}) _include and _revinclude items"
                    )));
                }
                let (reverse, modifier) = match name.split_once(':') {
                    Some((base, modifier)) => (base == "_revinclude", Some(modifier)),
                    None => (name == "_revinclude", None),
                };
                let include = parse_include(value, modifier.is_some())?;
                if !includes_by_reference(registry, &include) {
                    // Reported like an unknown parameter: a warning, or a 400 under strict
                    // handling; a search never silently includes nothing.
                    query.unknown.push(format!("{name}={value}"));
                    continue;
                }
                if reverse {
                    query.revinclude.push(include);
                } else {
                    query.include.push(include);
                }
            }
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
            // `estimate` and `accurate` both get the exact count.
            "_total" => query.without_total = value == "none",
            "_cursor" => {
                if value.len() > MAX_CURSOR_BYTES {
                    return Err(too_costly(format!(
                        "_cursor is longer than MAX_CURSOR_BYTES ({MAX_CURSOR_BYTES})"
                    )));
                }
                query.cursor = Some(value.clone())
            }
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
                        return Err(too_costly(format!(
                            "more than MAX_CRITERIA ({MAX_CRITERIA}) search criteria"
                        )));
                    }
                    query.criteria.push(criterion);
                }
                None => query.unknown.push(name.clone()),
            },
        }
    }
    let parameters = query.bound_parameters();
    if parameters > MAX_BOUND_PARAMETERS {
        return Err(too_costly(format!(
            "this search needs {parameters} bound values, more than MAX_BOUND_PARAMETERS \
             ({MAX_BOUND_PARAMETERS}); use fewer values or criteria"
        )));
    }
    Ok(query)
}

impl SearchQuery {
    /// An upper bound on the values the store binds to one statement of this search: the
    /// type, every criterion's values and index rows, the sort keys' index rows and the
    /// keyset condition of a page after a cursor (one comparison per prefix of the keys).
    pub fn bound_parameters(&self) -> usize {
        let types = self.types.len().max(1);
        let criteria: usize = self.criteria.iter().map(Criterion::bound_parameters).sum();
        let keys = self.sort.len();
        let sort = keys * PARAMETERS_PER_INDEX_ROWS + keys * (keys + 1) / 2 + 1;
        // The named Patients are bound twice: for resources of one compartment and of several.
        let compartments = self.within_compartments.as_ref().map_or(0, |p| 2 * p.len());
        let categories = usize::from(self.within_categories.is_some());
        types + criteria + sort + compartments + categories
    }
}

impl Criterion {
    /// An upper bound on the values the store binds for this criterion.
    pub fn bound_parameters(&self) -> usize {
        match self {
            Criterion::Id(ids) => ids.len(),
            Criterion::LastUpdated(ranges) => 2 * ranges.len(),
            Criterion::Missing { .. } => PARAMETERS_PER_INDEX_ROWS,
            Criterion::Param { values, .. } => {
                PARAMETERS_PER_INDEX_ROWS
                    + values
                        .iter()
                        .map(CriterionValue::bound_parameters)
                        .sum::<usize>()
            }
            Criterion::Chain(chain) => {
                PARAMETERS_PER_INDEX_ROWS
                    + chain
                        .targets
                        .iter()
                        .map(|(_, inner)| 1 + inner.bound_parameters())
                        .sum::<usize>()
            }
            Criterion::Has(has) => PARAMETERS_PER_INDEX_ROWS + 2 + has.criterion.bound_parameters(),
        }
    }
}

impl CriterionValue {
    /// The most values the store binds to compare with this one.
    pub fn bound_parameters(&self) -> usize {
        match self {
            CriterionValue::Uri(_) => 1,
            CriterionValue::Quantity { .. } => 4,
            _ => 2,
        }
    }
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

/// Whether an `_include`/`_revinclude` item names a reference parameter of its source type
/// that the registry knows (or `*` for either).
fn includes_by_reference(registry: &SearchRegistry, include: &Include) -> bool {
    include.source_type == "*"
        || include.param == "*"
        || registry
            .get(&include.source_type, &include.param)
            .is_some_and(|param| param.param_type == ParamType::Reference)
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
    let known = |t: &str| t == "*" || crate::model::r4().is_resource_type(t);
    if let Some(t) = [source_type, target_type.as_deref()]
        .into_iter()
        .flatten()
        .find(|t| !known(t))
    {
        return Err(bad(format!(
            "_include/_revinclude names '{t}', which is not a resource type"
        )));
    }
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
    if let Some(rest) = name.strip_prefix("_has:") {
        return parse_has(registry, resource_type, rest, value).map(Some);
    }
    if let Some((head, inner_name)) = name.split_once('.') {
        return parse_chain(registry, resource_type, head, inner_name, value);
    }
    let (code, modifier) = match name.split_once(':') {
        Some((c, m)) => (c, Some(m)),
        None => (name, None),
    };
    let values = split_or(value);
    if values.len() > MAX_OR_VALUES {
        return Err(too_costly(format!(
            "'{name}' has more than MAX_OR_VALUES ({MAX_OR_VALUES}) values"
        )));
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

/// `_has:Type:ref:param` (`rest` is what follows `_has:`): resources of `resource_type`
/// that a `Type` matching `param=value` refers to through its reference parameter `ref`.
/// One level: `param` may be chained (`patient.identifier`) but not another `_has`.
fn parse_has(
    registry: &SearchRegistry,
    resource_type: Option<&str>,
    rest: &str,
    value: &str,
) -> Result<Criterion, Issue> {
    let Some(resource_type) = resource_type else {
        return Err(bad("_has needs a resource type to search"));
    };
    let mut parts = rest.splitn(3, ':');
    let (Some(source_type), Some(code), Some(inner_name)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(format!(
            "_has must look like _has:Type:reference:parameter, not '_has:{rest}'"
        )));
    };
    if inner_name.starts_with("_has:") {
        return Err(Issue::error(
            IssueCode::NotSupported,
            "_has is supported one level deep",
        ));
    }
    if !crate::model::r4().is_resource_type(source_type) {
        return Err(bad(format!(
            "_has names '{source_type}', which is not a resource type"
        )));
    }
    let reference = registry
        .get(source_type, code)
        .filter(|param| param.param_type == ParamType::Reference)
        .ok_or_else(|| {
            bad(format!(
                "_has: '{code}' is not a reference parameter of {source_type}"
            ))
        })?;
    if !reference
        .effective_targets()
        .iter()
        .any(|target| target == resource_type)
    {
        return Err(bad(format!(
            "_has: {source_type}.{code} never refers to a {resource_type}"
        )));
    }
    let criterion =
        parse_criterion(registry, Some(source_type), inner_name, value)?.ok_or_else(|| {
            bad(format!(
                "_has: '{inner_name}' is not a search parameter of {source_type}"
            ))
        })?;
    Ok(Criterion::Has(Has {
        source_type: source_type.to_string(),
        reference: reference.clone(),
        criterion: Box::new(criterion),
    }))
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
    // Counted before the inner criterion is parsed once per target type.
    let expansion = candidates.len() * split_unescaped(value, ',').len();
    if expansion > MAX_CHAIN_EXPANSION {
        return Err(too_costly(format!(
            "chained parameter '{head}.{inner_name}' expands to {} target types × {} values, \
             more than MAX_CHAIN_EXPANSION ({MAX_CHAIN_EXPANSION}); name the target type \
             ('{code}:Patient.{inner_name}') or use fewer values",
            candidates.len(),
            split_unescaped(value, ',').len()
        )));
    }
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

/// A decimal with the range its precision implies: `100` → [99.5, 100.5). `None` for
/// anything that is not a decimal (`NaN`, `inf`, `0x10`), longer than [`MAX_NUMBER_CHARS`],
/// with an exponent beyond [`MAX_DECIMAL_EXPONENT`] or a value beyond `f64`. A precision
/// finer than an `f64` holds at that magnitude is widened to the neighbouring `f64`s, so the
/// range never collapses to nothing.
fn parse_number(text: &str) -> Option<(f64, f64, f64)> {
    if text.len() > MAX_NUMBER_CHARS {
        return None;
    }
    let body = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, exponent) = match body.split_once(['e', 'E']) {
        Some((m, e)) => {
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (m, e.parse::<i32>().ok()?)
        }
        None => (body, 0),
    };
    let valid = mantissa.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && mantissa.bytes().filter(|b| *b == b'.').count() <= 1
        && mantissa.bytes().any(|b| b.is_ascii_digit())
        && (-MAX_DECIMAL_EXPONENT..=MAX_DECIMAL_EXPONENT).contains(&exponent);
    if !valid {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    if !value.is_finite() {
        return None;
    }
    // Both terms are bounded (by the text's length and the exponent's limit): no overflow.
    let fraction_digits = mantissa.split_once('.').map_or(0, |(_, f)| f.len() as i32);
    let half_step = 0.5 * 10f64.powi(exponent - fraction_digits);
    let low = (value - half_step).min(value.next_down());
    let high = (value + half_step).max(value.next_up()).min(f64::MAX);
    Some((value, low.max(f64::MIN), high))
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
    fn includes_of_unknown_or_non_reference_parameters_are_unknown() {
        let q = parse(
            "MedicationRequest",
            &[
                ("_include", "MedicationRequest:no-such-param"),
                ("_revinclude", "Observation:code"),
                ("_include", "MedicationRequest:patient"),
                ("_include:iterate", "*"),
            ],
        )
        .unwrap();
        assert_eq!(
            q.unknown,
            [
                "_include=MedicationRequest:no-such-param",
                "_revinclude=Observation:code"
            ]
        );
        assert_eq!(q.include.len(), 2);
        assert!(q.revinclude.is_empty());
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

    fn refused(resource_type: &str, query: &[(&str, &str)]) -> Issue {
        match parse(resource_type, query) {
            Ok(q) => panic!("{query:?} parsed: {q:?}"),
            Err(issue) => issue,
        }
    }

    fn or_values(n: usize) -> String {
        (0..n)
            .map(|i| format!("v{i}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    #[test]
    fn control_characters_are_refused_except_tab_cr_lf() {
        for c in ['\u{0}', '\u{1}', '\u{1b}', '\u{1f}'] {
            let text = format!("a{c}b");
            for query in [
                [("name", text.as_str())],
                [(text.as_str(), "x")],
                [("_id", text.as_str())],
                [("_cursor", text.as_str())],
                [("_include", text.as_str())],
                [("_sort", text.as_str())],
                [("identifier", text.as_str())],
            ] {
                let issue = refused("Patient", &query);
                assert_eq!(issue.code, IssueCode::Invalid, "{query:?}");
                assert!(
                    issue
                        .diagnostics
                        .contains(&format!("U+{:04X}", u32::from(c))),
                    "{}",
                    issue.diagnostics
                );
                assert!(
                    !issue.diagnostics.contains(c),
                    "the message does not repeat the character"
                );
            }
        }
        // Tab, CR and LF, and DEL and the C1 controls, may be in a FHIR string.
        for c in ['\t', '\r', '\n', '\u{7f}', '\u{85}', '\u{9f}'] {
            assert!(parse("Patient", &[("name", &format!("a{c}b"))]).is_ok());
        }
    }

    #[test]
    fn every_limit_is_named_when_exceeded() {
        let long = "a".repeat(MAX_QUERY_BYTES);
        let nine_keys = ["_id"; MAX_SORT_KEYS + 1].join(",");
        let eight_keys = ["_id"; MAX_SORT_KEYS].join(",");
        let cursor = "n".repeat(MAX_CURSOR_BYTES + 1);
        let many = or_values(MAX_OR_VALUES);
        let too_many = or_values(MAX_OR_VALUES + 1);
        let includes = vec![("_include", "Patient:organization"); MAX_INCLUDES + 1];
        let criteria = vec![("gender", "female"); MAX_CRITERIA + 1];
        let subject_chains = vec![("subject.identifier", many.as_str()); 10];
        for (resource_type, query, limit) in [
            ("Patient", vec![("name", long.as_str())], "MAX_QUERY_BYTES"),
            (
                "Patient",
                vec![("_sort", nine_keys.as_str())],
                "MAX_SORT_KEYS",
            ),
            (
                "Patient",
                vec![("_cursor", cursor.as_str())],
                "MAX_CURSOR_BYTES",
            ),
            (
                "Patient",
                vec![("name", too_many.as_str())],
                "MAX_OR_VALUES",
            ),
            ("Patient", includes, "MAX_INCLUDES"),
            ("Patient", criteria, "MAX_CRITERIA"),
            (
                "Observation",
                vec![("focus.identifier", many.as_str())],
                "MAX_CHAIN_EXPANSION",
            ),
            ("Observation", subject_chains, "MAX_BOUND_PARAMETERS"),
        ] {
            let issue = refused(resource_type, &query);
            assert_eq!(issue.code, IssueCode::TooCostly, "{limit}");
            assert!(issue.diagnostics.contains(limit), "{}", issue.diagnostics);
        }
        // At the limits themselves, searches parse.
        let at_limits = parse(
            "Observation",
            &[
                ("_sort", eight_keys.as_str()),
                ("code", many.as_str()),
                ("focus:Patient.identifier", many.as_str()),
                ("focus.identifier", &or_values(MAX_CHAIN_EXPANSION / 200)),
            ],
        )
        .unwrap();
        assert!(at_limits.bound_parameters() <= MAX_BOUND_PARAMETERS);
    }

    #[test]
    fn includes_name_resource_types() {
        assert!(
            parse(
                "Patient",
                &[("_include", "Patient:organization:Organization")]
            )
            .is_ok()
        );
        assert!(parse("Patient", &[("_revinclude", "*:*")]).is_ok());
        for bad in [
            "Nonsense:subject",
            "Patient:organization:nonsense",
            "patient:x",
        ] {
            let issue = refused("Patient", &[("_include", bad)]);
            assert_eq!(issue.code, IssueCode::Invalid, "{bad}");
        }
    }

    #[test]
    fn numbers_at_the_edges_of_f64_are_bounded_or_refused() {
        for bad in [
            "0.0e-2147483647",
            "1e-2147483648",
            "1e2147483647",
            "1e999999999",
            "1e401",
            "1e309",
            "-1e309",
            "NaN",
            "inf",
            "-infinity",
            "1e",
            "1e+",
            "e5",
            "1e+-5",
            "0x10",
            "",
            "-",
            ".",
            &format!("1.{}", "3".repeat(400)),
            &"9".repeat(400),
        ] {
            assert_eq!(parse_number(bad), None, "{bad}");
        }
        // One significant digit: the precision is in the hundreds.
        assert_eq!(parse_number("1e2"), Some((100.0, 50.0, 150.0)));
        assert_eq!(parse_number("1.00E+2"), Some((100.0, 99.5, 100.5)));
        let (value, low, high) = parse_number("2.5e-1").unwrap();
        assert_eq!(value, 0.25);
        assert!((low - 0.245).abs() < 1e-12 && (high - 0.255).abs() < 1e-12);
        // Finer than an f64: widened to the neighbours instead of collapsing.
        let (value, low, high) = parse_number("0.1234567890123456789").unwrap();
        assert!(low < value && value < high);
        let (value, low, high) = parse_number("1.7976931348623157e308").unwrap();
        assert_eq!((value, high), (f64::MAX, f64::MAX));
        assert!(low < value);
        let (value, low, high) = parse_number("4.9e-324").unwrap();
        assert!(low <= value && value < high && low.is_finite());
    }

    proptest! {
        /// Whatever the text, a number is finite with a range around it, or refused.
        #[test]
        fn numbers_are_finite_ranges(text in "-?[0-9.]{0,30}([eE][+-]?[0-9]{1,12})?") {
            if let Some((value, low, high)) = parse_number(&text) {
                prop_assert!(value.is_finite() && low.is_finite() && high.is_finite());
                prop_assert!(low <= value && value <= high && low < high, "{text}: {low} {value} {high}");
            }
        }

        /// Anything that parses holds every limit.
        #[test]
        fn parsed_searches_hold_the_limits(
            pairs in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "focus.identifier", "subject.identifier", "code", "_sort", "_include",
                        "_revinclude:iterate", "value-quantity", "date", "_id", "_cursor",
                        "subject:Patient.name", "_lastUpdated", "patient",
                    ]),
                    "[a-z0-9,|.\\-]{0,40}",
                ),
                0..60,
            )
        ) {
            let pairs: Vec<(&str, &str)> =
                pairs.iter().map(|(n, v)| (*n, v.as_str())).collect();
            if let Ok(q) = parse("Observation", &pairs) {
                prop_assert!(q.bound_parameters() <= MAX_BOUND_PARAMETERS);
                prop_assert!(q.sort.len() <= MAX_SORT_KEYS);
                prop_assert!(q.criteria.len() <= MAX_CRITERIA);
                prop_assert!(q.include.len() + q.revinclude.len() <= MAX_INCLUDES);
            }
        }

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
