//! Errors of parsing and evaluating.

use thiserror::Error;

/// Why FHIRPath text is not a valid expression.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// The text does not follow the grammar.
    #[error("syntax error at byte {offset}: {message}")]
    Syntax {
        /// Byte offset in the text.
        offset: usize,
        /// What was wrong.
        message: String,
    },
    /// The text is longer than [`crate::MAX_EXPRESSION_BYTES`].
    #[error("expression of {0} bytes is longer than the limit")]
    TooLong(usize),
    /// Brackets, parentheses or invocations nest deeper than [`crate::MAX_NESTING_DEPTH`].
    #[error("expression nests deeper than the limit")]
    TooDeep,
    /// A function name that FHIRPath does not define (a semantic error).
    #[error("unknown function {0}()")]
    UnknownFunction(String),
    /// A function called with a number of arguments it does not take.
    #[error("{name}() takes {expected} arguments, not {given}")]
    WrongArity {
        /// The function.
        name: String,
        /// What it takes (`0..1` …).
        expected: String,
        /// What was given.
        given: usize,
    },
    /// A literal that cannot stand for a value (`@2015-13`, an integer too large).
    #[error("invalid literal {0}")]
    InvalidLiteral(String),
}

/// Why an expression could not be evaluated on a given input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EvalError {
    /// An operand or input held more than one item where one was required.
    #[error("{0}: expected at most one item, got {1}")]
    NotSingleton(&'static str, usize),
    /// Operand types that the operator or function does not accept.
    #[error("{0}")]
    Type(String),
    /// A type name that neither FHIR R4 nor the System namespace defines.
    #[error("unknown type {0}")]
    UnknownType(String),
    /// An element name not defined on the type (strict mode only).
    #[error("{name} is not an element of {type_name}")]
    UnknownElement {
        /// The element asked for.
        name: String,
        /// The type of the node it was asked on.
        type_name: String,
    },
    /// A `%variable` that is not defined.
    #[error("undefined variable %{0}")]
    UndefinedVariable(String),
    /// A function this evaluator does not implement (terminology, profiles).
    #[error("{0} is not supported")]
    Unsupported(String),
    /// An invalid regular expression given to `matches`/`replaceMatches`.
    #[error("invalid regular expression: {0}")]
    Regex(String),
    /// A result or an intermediate collection beyond [`crate::MAX_COLLECTION_ITEMS`] items or
    /// a string beyond [`crate::MAX_STRING_BYTES`].
    #[error("result larger than the limit")]
    TooLarge,
    /// Other invalid input for a function (e.g. a negative `skip` count is fine, a
    /// non-integer is not).
    #[error("{0}")]
    Invalid(String),
}
