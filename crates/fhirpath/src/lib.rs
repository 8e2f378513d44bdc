//! FHIRPath for zorgnet: parse an expression once, evaluate it on many FHIR R4 resources.
//!
//! What it is: an evaluator of FHIRPath (the normative N1 release, plus the functions FHIR R4
//! adds: `extension()`, `hasValue()`, `resolve()`, `ofType()`, `conformsTo()` on base
//! types, `memberOf()` on the value sets of required bindings, `htmlChecks()`) over
//! resources held as [`serde_json::Value`], as stored. Types come from the R4 model of
//! `zorgnet-fhir`: `Observation.value` finds `valueQuantity` and knows it is a `Quantity`,
//! `Patient.birthDate` is a `date`, and primitive extensions (`_birthDate`) are reachable as
//! `Patient.birthDate.extension`. Decimals are exact (the JSON keeps the digits as written),
//! dates and times keep their precision, quantities compare across the common UCUM units.
//! Results borrow from the evaluated resource ([`Item`]) and turn back into JSON
//! ([`Item::to_json`]) for search-parameter extraction.
//!
//! What it is not: a terminology server (`subsumes()`, `memberOf()` on other value sets are
//! errors), a profile validator (`conformsTo()` knows only the base types), or a static type
//! checker: an expression is typed against the data it meets, so some errors FHIRPath calls
//! semantic surface only in strict mode ([`Environment::strict`]) or not at all. It does no
//! IO, never panics on input, and bounds work by the limits below.
//!
//! ```
//! use zorgnet_fhirpath::{Environment, Expression};
//!
//! let observation: serde_json::Value = serde_json::from_str(
//!     r#"{"resourceType": "Observation", "status": "final",
//!         "subject": {"reference": "Patient/p1"},
//!         "valueQuantity": {"value": 72.50, "code": "kg", "system": "http://unitsofmeasure.org"}}"#,
//! )
//! .unwrap();
//! let value = Expression::parse("(Observation.value as Quantity)").unwrap();
//! let found = value.evaluate(&observation).unwrap();
//! assert_eq!(found[0].type_name(), "Quantity");
//! assert_eq!(found[0].to_json()["value"].to_string(), "72.50");
//!
//! let heavy = Expression::parse("Observation.value > 70 'kg'").unwrap();
//! assert_eq!(heavy.evaluate_to_boolean(&observation, &Environment::new()), Ok(Some(true)));
//! ```
#![deny(missing_docs)]

mod decimal;
mod error;
mod eval;
mod functions;
mod item;
mod lexer;
mod parser;
mod set;
mod temporal;
mod types;
mod ucum;

use std::collections::HashMap;

use serde_json::Value;

pub use decimal::{DIVISION_SCALE, Decimal, MAX_DECIMAL_SCALE};
pub use error::{EvalError, ParseError};
pub use eval::to_boolean;
pub use item::{Item, Node, Quantity, TypeInfo};
pub use temporal::{DateTime, Precision, Time};

/// The longest expression text accepted, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 16 * 1024;

/// How deep parentheses, operator chains and invocation chains may nest, in levels.
pub const MAX_NESTING_DEPTH: usize = 128;

/// The most items any collection (intermediate or result) may hold.
pub const MAX_COLLECTION_ITEMS: usize = 100_000;

/// The most items all steps of one evaluation may produce together (bounds the work of
/// `aggregate()`, `repeat()` and nested `select()` on large input).
pub const MAX_EVALUATION_ITEMS: usize = 10_000_000;

/// The longest string an expression may build, in bytes.
pub const MAX_STRING_BYTES: usize = 4 * 1024 * 1024;

/// The most memory one compiled regular expression (`matches`, `replaceMatches`) may take,
/// in bytes.
pub const MAX_REGEX_BYTES: usize = 1024 * 1024;

/// A parsed FHIRPath expression, ready to evaluate any number of times.
#[derive(Debug, Clone)]
pub struct Expression {
    source: String,
    tree: parser::Expr,
}

/// What an evaluation may refer to besides its input: `%resource` and `%rootResource` (when
/// the input is an element inside a resource), variables the caller defines, a fixed clock,
/// and strictness.
#[derive(Debug, Clone, Default)]
pub struct Environment<'a> {
    resource: Option<&'a Value>,
    root_resource: Option<&'a Value>,
    variables: HashMap<String, Vec<Item<'a>>>,
    now: Option<DateTime>,
    strict: bool,
}

impl<'a> Environment<'a> {
    /// An environment with no variables: `%resource` is the input.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `%resource` (the resource that holds the input, for invariants on elements) —
    /// also where `resolve()` looks for contained resources.
    pub fn with_resource(mut self, resource: &'a Value) -> Self {
        self.resource = Some(resource);
        self
    }

    /// Sets `%rootResource` (the containing resource of a contained one, or a Bundle), where
    /// `resolve()` also looks.
    pub fn with_root_resource(mut self, root: &'a Value) -> Self {
        self.root_resource = Some(root);
        self
    }

    /// Defines `%name` as a collection. It takes precedence over the built-in `%ucum`,
    /// `%sct`, `%loinc`, `%vs-…` and `%ext-…`.
    pub fn with_variable(mut self, name: &str, items: Vec<Item<'a>>) -> Self {
        self.variables.insert(name.to_string(), items);
        self
    }

    /// Defines `%name` as a JSON value (a resource when it has `resourceType`).
    pub fn with_json_variable(self, name: &str, value: &'a Value) -> Self {
        self.with_variable(name, vec![Item::from_json(value)])
    }

    /// Defines `%name` as a string.
    pub fn with_string_variable(self, name: &str, value: &str) -> Self {
        self.with_variable(name, vec![Item::string(value)])
    }

    /// Fixes what `now()`, `today()` and `timeOfDay()` return (tests, reproducible runs).
    pub fn with_now(mut self, now: DateTime) -> Self {
        self.now = Some(now);
        self
    }

    /// Strict mode: an element name that the input's type does not define is an error
    /// (instead of an empty result), and so is a choice element named with its type
    /// (`Observation.valueQuantity` rather than `Observation.value`), and a resource type
    /// name that is not the input's (`Encounter.name` on a Patient). Off by default, as
    /// search parameters such as `Patient.name | Practitioner.name` rely on the lenient
    /// reading.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }
}

impl Expression {
    /// Parses FHIRPath text. Unknown functions and wrong argument counts are reported here.
    pub fn parse(text: &str) -> Result<Expression, ParseError> {
        Ok(Expression {
            source: text.to_string(),
            tree: parser::parse(text)?,
        })
    }

    /// The text the expression was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates on a resource (or any JSON value: a resource when it has `resourceType`).
    pub fn evaluate<'a>(&self, resource: &'a Value) -> Result<Vec<Item<'a>>, EvalError> {
        self.evaluate_with(resource, &Environment::new())
    }

    /// Evaluates on `context` with an environment.
    pub fn evaluate_with<'a>(
        &self,
        context: &'a Value,
        env: &Environment<'a>,
    ) -> Result<Vec<Item<'a>>, EvalError> {
        self.evaluate_item(Item::from_json(context), env)
    }

    /// Evaluates on an item: a node found by an earlier evaluation, or a computed value.
    pub fn evaluate_item<'a>(
        &self,
        context: Item<'a>,
        env: &Environment<'a>,
    ) -> Result<Vec<Item<'a>>, EvalError> {
        let this = [context.clone()];
        let mut evaluator = eval::Evaluator::new(context, env);
        let scope = eval::Scope {
            this: &this,
            index: None,
            total: None,
        };
        evaluator.eval(&self.tree, &scope)
    }

    /// Evaluates and reads the result as a Boolean under FHIRPath's singleton rules
    /// ([`to_boolean`]): `None` for an empty result, an error for more than one item.
    /// Invariants and TestScript asserts pass when this is `Some(true)`.
    pub fn evaluate_to_boolean<'a>(
        &self,
        resource: &'a Value,
        env: &Environment<'a>,
    ) -> Result<Option<bool>, EvalError> {
        to_boolean(&self.evaluate_with(resource, env)?)
    }
}

/// Evaluates `expression` on `resource` once (parses every call: prefer
/// [`Expression::parse`] for repeated use).
pub fn evaluate<'a>(expression: &str, resource: &'a Value) -> Result<Vec<Item<'a>>, Error> {
    Ok(Expression::parse(expression)?.evaluate(resource)?)
}

/// Either error, for [`evaluate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The text is not a valid expression.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The expression failed on the input.
    #[error(transparent)]
    Eval(#[from] EvalError),
}
