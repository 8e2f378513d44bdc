//! The FHIRPath grammar: tokens to an expression tree, with function names and arities
//! checked once here rather than at every evaluation.

use std::sync::Arc;

use crate::decimal::Decimal;
use crate::error::ParseError;
use crate::item::Quantity;
use crate::lexer::{Token, TokenKind, tokenize};
use crate::temporal::{DateTime, Time};
use crate::{MAX_EXPRESSION_BYTES, MAX_NESTING_DEPTH};

/// A parsed expression node.
#[derive(Debug, Clone)]
pub(crate) enum Expr {
    /// `{}`
    Empty,
    Literal(Literal),
    /// `$this`
    This,
    /// `$index`
    Index,
    /// `$total`
    Total,
    /// `%name`
    Variable(String),
    /// `target.name` or a bare `name` (on the focus).
    Member {
        target: Option<Box<Expr>>,
        name: String,
    },
    /// `target.f(args)` or a bare `f(args)` (on the focus).
    Call {
        target: Option<Box<Expr>>,
        func: Func,
        args: Vec<Expr>,
    },
    /// `target[index]`
    Indexer {
        target: Box<Expr>,
        index: Box<Expr>,
    },
    /// `-operand` (`+operand` is dropped at parse time).
    Negate(Box<Expr>),
    Binary {
        op: BinaryOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    /// `operand is T` / `operand as T`.
    TypeOp {
        is: bool,
        operand: Box<Expr>,
        spec: TypeSpec,
    },
    /// A type name as the argument of `is()`, `as()`, `ofType()`.
    TypeName(TypeSpec),
}

#[derive(Debug, Clone)]
pub(crate) enum Literal {
    Boolean(bool),
    String(Arc<str>),
    Integer(i64),
    Decimal(Decimal),
    Date(DateTime),
    DateTime(DateTime),
    Time(Time),
    Quantity(Quantity),
}

/// A type name, optionally qualified (`FHIR.Patient`, `System.String`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TypeSpec {
    pub namespace: Option<String>,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinaryOp {
    Multiply,
    Divide,
    Div,
    Mod,
    Add,
    Subtract,
    Concatenate,
    Union,
    Less,
    Greater,
    LessOrEqual,
    GreaterOrEqual,
    Equal,
    NotEqual,
    Equivalent,
    NotEquivalent,
    In,
    Contains,
    And,
    Or,
    Xor,
    Implies,
}

macro_rules! functions {
    ($($variant:ident = $name:literal ($min:literal, $max:literal)),* $(,)?) => {
        /// The functions of FHIRPath N1 and the FHIR R4 additions.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Func { $($variant),* }

        fn lookup_function(name: &str) -> Option<(Func, usize, usize)> {
            match name {
                $($name => Some((Func::$variant, $min, $max)),)*
                _ => None,
            }
        }

        impl Func {
            pub(crate) fn name(self) -> &'static str {
                match self { $(Func::$variant => $name),* }
            }
        }
    };
}

functions! {
    Empty = "empty"(0, 0),
    Exists = "exists"(0, 1),
    All = "all"(1, 1),
    AllTrue = "allTrue"(0, 0),
    AnyTrue = "anyTrue"(0, 0),
    AllFalse = "allFalse"(0, 0),
    AnyFalse = "anyFalse"(0, 0),
    SubsetOf = "subsetOf"(1, 1),
    SupersetOf = "supersetOf"(1, 1),
    Count = "count"(0, 0),
    Distinct = "distinct"(0, 0),
    IsDistinct = "isDistinct"(0, 0),
    Where = "where"(1, 1),
    Select = "select"(1, 1),
    Repeat = "repeat"(1, 1),
    OfType = "ofType"(1, 1),
    Single = "single"(0, 0),
    First = "first"(0, 0),
    Last = "last"(0, 0),
    Tail = "tail"(0, 0),
    Skip = "skip"(1, 1),
    Take = "take"(1, 1),
    Intersect = "intersect"(1, 1),
    Exclude = "exclude"(1, 1),
    Union = "union"(1, 1),
    Combine = "combine"(1, 1),
    Iif = "iif"(2, 3),
    ToBoolean = "toBoolean"(0, 0),
    ConvertsToBoolean = "convertsToBoolean"(0, 0),
    ToInteger = "toInteger"(0, 0),
    ConvertsToInteger = "convertsToInteger"(0, 0),
    ToDecimal = "toDecimal"(0, 0),
    ConvertsToDecimal = "convertsToDecimal"(0, 0),
    ToStringFn = "toString"(0, 0),
    ConvertsToString = "convertsToString"(0, 0),
    ToDate = "toDate"(0, 0),
    ConvertsToDate = "convertsToDate"(0, 0),
    ToDateTime = "toDateTime"(0, 0),
    ConvertsToDateTime = "convertsToDateTime"(0, 0),
    ToTime = "toTime"(0, 0),
    ConvertsToTime = "convertsToTime"(0, 0),
    ToQuantity = "toQuantity"(0, 1),
    ConvertsToQuantity = "convertsToQuantity"(0, 1),
    IndexOf = "indexOf"(1, 1),
    LastIndexOf = "lastIndexOf"(1, 1),
    Substring = "substring"(1, 2),
    StartsWith = "startsWith"(1, 1),
    EndsWith = "endsWith"(1, 1),
    ContainsFn = "contains"(1, 1),
    Upper = "upper"(0, 0),
    Lower = "lower"(0, 0),
    Replace = "replace"(2, 2),
    Matches = "matches"(1, 1),
    MatchesFull = "matchesFull"(1, 1),
    ReplaceMatches = "replaceMatches"(2, 2),
    Length = "length"(0, 0),
    ToChars = "toChars"(0, 0),
    Trim = "trim"(0, 0),
    Split = "split"(1, 1),
    Join = "join"(0, 1),
    Encode = "encode"(1, 1),
    Decode = "decode"(1, 1),
    Escape = "escape"(1, 1),
    Unescape = "unescape"(1, 1),
    Abs = "abs"(0, 0),
    Ceiling = "ceiling"(0, 0),
    Exp = "exp"(0, 0),
    Floor = "floor"(0, 0),
    Ln = "ln"(0, 0),
    Log = "log"(1, 1),
    Power = "power"(1, 1),
    Round = "round"(0, 1),
    Sqrt = "sqrt"(0, 0),
    Truncate = "truncate"(0, 0),
    Children = "children"(0, 0),
    Descendants = "descendants"(0, 0),
    Trace = "trace"(1, 2),
    Now = "now"(0, 0),
    TimeOfDay = "timeOfDay"(0, 0),
    Today = "today"(0, 0),
    Sort = "sort"(0, 16),
    Aggregate = "aggregate"(1, 2),
    Type = "type"(0, 0),
    Is = "is"(1, 1),
    As = "as"(1, 1),
    Not = "not"(0, 0),
    LowBoundary = "lowBoundary"(0, 1),
    HighBoundary = "highBoundary"(0, 1),
    Precision = "precision"(0, 0),
    Comparable = "comparable"(1, 1),
    Extension = "extension"(1, 1),
    HasValue = "hasValue"(0, 0),
    GetValue = "getValue"(0, 0),
    Resolve = "resolve"(0, 0),
    ConformsTo = "conformsTo"(1, 1),
    MemberOf = "memberOf"(1, 1),
    Subsumes = "subsumes"(1, 1),
    SubsumedBy = "subsumedBy"(1, 1),
    HtmlChecks = "htmlChecks"(0, 0),
    ElementDefinition = "elementDefinition"(0, 0),
    Slice = "slice"(2, 2),
    CheckModifiers = "checkModifiers"(1, 1),
}

impl Func {
    /// Functions whose arguments are type names, not expressions.
    fn takes_type(self) -> bool {
        matches!(self, Func::Is | Func::As | Func::OfType)
    }
}

const CALENDAR_KEYWORDS: &[&str] = &[
    "year",
    "years",
    "month",
    "months",
    "week",
    "weeks",
    "day",
    "days",
    "hour",
    "hours",
    "minute",
    "minutes",
    "second",
    "seconds",
    "millisecond",
    "milliseconds",
];

/// Keywords that cannot name an element (`as`, `contains`, `in` and `is` can: the grammar
/// lets them be identifiers, as in `ValueSet.expansion.contains`).
const KEYWORDS: &[&str] = &["and", "or", "xor", "implies", "div", "mod"];

/// Parses FHIRPath text.
pub(crate) fn parse(text: &str) -> Result<Expr, ParseError> {
    if text.len() > MAX_EXPRESSION_BYTES {
        return Err(ParseError::TooLong(text.len()));
    }
    let tokens = tokenize(text)?;
    let mut parser = Parser {
        tokens,
        at: 0,
        depth: 0,
    };
    let expr = parser.expression()?;
    match &parser.peek().kind {
        TokenKind::End => Ok(expr),
        _ => Err(parser.error("unexpected token after the expression")),
    }
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        // The token list always ends with `End`, and `at` never passes it.
        &self.tokens[self.at.min(self.tokens.len() - 1)]
    }

    fn peek_at(&self, ahead: usize) -> &TokenKind {
        &self.tokens[(self.at + ahead).min(self.tokens.len() - 1)].kind
    }

    fn advance(&mut self) -> Token {
        let token = self.peek().clone();
        if self.at < self.tokens.len() - 1 {
            self.at += 1;
        }
        token
    }

    fn error(&self, message: &str) -> ParseError {
        ParseError::Syntax {
            offset: self.peek().offset,
            message: message.to_string(),
        }
    }

    fn is_symbol(&self, symbol: &str) -> bool {
        matches!(&self.peek().kind, TokenKind::Symbol(s) if *s == symbol)
    }

    fn is_keyword(&self, keyword: &str) -> bool {
        matches!(&self.peek().kind, TokenKind::Identifier(s) if s == keyword)
    }

    fn expect_symbol(&mut self, symbol: &str) -> Result<(), ParseError> {
        if self.is_symbol(symbol) {
            self.advance();
            Ok(())
        } else {
            Err(self.error(&format!("expected {symbol}")))
        }
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_NESTING_DEPTH {
            Err(ParseError::TooDeep)
        } else {
            Ok(())
        }
    }

    fn expression(&mut self) -> Result<Expr, ParseError> {
        self.enter()?;
        let result = self.implies();
        self.depth -= 1;
        result
    }

    fn binary_level(
        &mut self,
        next: fn(&mut Self) -> Result<Expr, ParseError>,
        operators: &[(&str, BinaryOp, bool)],
    ) -> Result<Expr, ParseError> {
        let mut left = next(self)?;
        let mut chain = 0usize;
        'outer: loop {
            for (text, op, keyword) in operators {
                let matched = if *keyword {
                    self.is_keyword(text)
                } else {
                    self.is_symbol(text)
                };
                if matched {
                    self.advance();
                    chain += 1;
                    if chain > MAX_NESTING_DEPTH {
                        return Err(ParseError::TooDeep);
                    }
                    let right = next(self)?;
                    left = Expr::Binary {
                        op: *op,
                        left: Box::new(left),
                        right: Box::new(right),
                    };
                    continue 'outer;
                }
            }
            return Ok(left);
        }
    }

    fn implies(&mut self) -> Result<Expr, ParseError> {
        self.binary_level(Self::or_xor, &[("implies", BinaryOp::Implies, true)])
    }

    fn or_xor(&mut self) -> Result<Expr, ParseError> {
        self.binary_level(
            Self::and,
            &[("or", BinaryOp::Or, true), ("xor", BinaryOp::Xor, true)],
        )
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        self.binary_level(Self::membership, &[("and", BinaryOp::And, true)])
    }

    fn membership(&mut self) -> Result<Expr, ParseError> {
        self.binary_level(
            Self::equality,
            &[
                ("in", BinaryOp::In, true),
                ("contains", BinaryOp::Contains, true),
            ],
        )
    }

    fn equality(&mut self) -> Result<Expr, ParseError> {
        self.binary_level(
            Self::inequality,
            &[
                ("=", BinaryOp::Equal, false),
                ("~", BinaryOp::Equivalent, false),
                ("!=", BinaryOp::NotEqual, false),
                ("!~", BinaryOp::NotEquivalent, false),
            ],
        )
    }

    fn inequality(&mut self) -> Result<Expr, ParseError> {
        self.binary_level(
            Self::union,
            &[
                ("<=", BinaryOp::LessOrEqual, false),
                (">=", BinaryOp::GreaterOrEqual, false),
                ("<", BinaryOp::Less, false),
                (">", BinaryOp::Greater, false),
            ],
        )
    }

    fn union(&mut self) -> Result<Expr, ParseError> {
        self.binary_level(Self::type_expression, &[("|", BinaryOp::Union, false)])
    }

    fn type_expression(&mut self) -> Result<Expr, ParseError> {
        let mut operand = self.additive()?;
        let mut chain = 0usize;
        loop {
            let is = if self.is_keyword("is") {
                true
            } else if self.is_keyword("as") {
                false
            } else {
                return Ok(operand);
            };
            self.advance();
            chain += 1;
            if chain > MAX_NESTING_DEPTH {
                return Err(ParseError::TooDeep);
            }
            let spec = self.type_specifier()?;
            operand = Expr::TypeOp {
                is,
                operand: Box::new(operand),
                spec,
            };
        }
    }

    fn type_specifier(&mut self) -> Result<TypeSpec, ParseError> {
        let first = self.identifier()?;
        if (first == "FHIR" || first == "System")
            && self.is_symbol(".")
            && matches!(
                self.peek_at(1),
                TokenKind::Identifier(_) | TokenKind::Delimited(_)
            )
        {
            self.advance();
            let name = self.identifier()?;
            return Ok(TypeSpec {
                namespace: Some(first),
                name,
            });
        }
        Ok(TypeSpec {
            namespace: None,
            name: first,
        })
    }

    fn identifier(&mut self) -> Result<String, ParseError> {
        match self.peek().kind.clone() {
            TokenKind::Identifier(name) | TokenKind::Delimited(name) => {
                self.advance();
                Ok(name)
            }
            _ => Err(self.error("expected an identifier")),
        }
    }

    fn additive(&mut self) -> Result<Expr, ParseError> {
        self.binary_level(
            Self::multiplicative,
            &[
                ("+", BinaryOp::Add, false),
                ("-", BinaryOp::Subtract, false),
                ("&", BinaryOp::Concatenate, false),
            ],
        )
    }

    fn multiplicative(&mut self) -> Result<Expr, ParseError> {
        self.binary_level(
            Self::unary,
            &[
                ("*", BinaryOp::Multiply, false),
                ("/", BinaryOp::Divide, false),
                ("div", BinaryOp::Div, true),
                ("mod", BinaryOp::Mod, true),
            ],
        )
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.is_symbol("-") || self.is_symbol("+") {
            let negate = self.is_symbol("-");
            self.advance();
            self.enter()?;
            let operand = self.unary();
            self.depth -= 1;
            let operand = operand?;
            return Ok(if negate {
                Expr::Negate(Box::new(operand))
            } else {
                operand
            });
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Expr, ParseError> {
        let mut expr = self.term()?;
        let mut chain = 0usize;
        loop {
            if self.is_symbol(".") {
                self.advance();
                expr = self.invocation(Some(expr))?;
            } else if self.is_symbol("[") {
                self.advance();
                let index = self.expression()?;
                self.expect_symbol("]")?;
                expr = Expr::Indexer {
                    target: Box::new(expr),
                    index: Box::new(index),
                };
            } else {
                return Ok(expr);
            }
            // Each link nests the tree one level deeper, and evaluation recurses on it.
            chain += 1;
            if chain > MAX_NESTING_DEPTH {
                return Err(ParseError::TooDeep);
            }
        }
    }

    fn invocation(&mut self, target: Option<Expr>) -> Result<Expr, ParseError> {
        let name = self.identifier()?;
        let target = target.map(Box::new);
        if !self.is_symbol("(") {
            return Ok(Expr::Member { target, name });
        }
        self.advance();
        let Some((func, min, max)) = lookup_function(&name) else {
            return Err(ParseError::UnknownFunction(name));
        };
        let mut args = Vec::new();
        if !self.is_symbol(")") {
            loop {
                let arg = self.expression()?;
                args.push(if func.takes_type() {
                    Expr::TypeName(
                        to_type_spec(arg)
                            .ok_or_else(|| self.error(&format!("{name}() takes a type name")))?,
                    )
                } else {
                    arg
                });
                if self.is_symbol(",") {
                    self.advance();
                } else {
                    break;
                }
            }
        }
        self.expect_symbol(")")?;
        if args.len() < min || args.len() > max {
            return Err(ParseError::WrongArity {
                name,
                expected: if min == max {
                    min.to_string()
                } else {
                    format!("{min}..{max}")
                },
                given: args.len(),
            });
        }
        Ok(Expr::Call { target, func, args })
    }

    fn term(&mut self) -> Result<Expr, ParseError> {
        let token = self.peek().clone();
        match token.kind {
            TokenKind::Symbol("(") => {
                self.advance();
                let inner = self.expression()?;
                self.expect_symbol(")")?;
                Ok(inner)
            }
            TokenKind::Symbol("{") => {
                self.advance();
                self.expect_symbol("}")?;
                Ok(Expr::Empty)
            }
            TokenKind::String(text) => {
                self.advance();
                Ok(Expr::Literal(Literal::String(Arc::from(text))))
            }
            TokenKind::Number(text) => {
                self.advance();
                let number = if text.contains('.') {
                    NumberLiteral::Decimal(
                        Decimal::parse(&text)
                            .ok_or_else(|| ParseError::InvalidLiteral(text.clone()))?,
                    )
                } else {
                    match text.parse::<i64>() {
                        Ok(value) => NumberLiteral::Integer(value),
                        Err(_) => NumberLiteral::Decimal(
                            Decimal::parse(&text)
                                .ok_or_else(|| ParseError::InvalidLiteral(text.clone()))?,
                        ),
                    }
                };
                let unit = match &self.peek().kind {
                    TokenKind::String(unit) => Some(unit.clone()),
                    TokenKind::Identifier(word) if CALENDAR_KEYWORDS.contains(&word.as_str()) => {
                        Some(word.clone())
                    }
                    _ => None,
                };
                if let Some(unit) = unit {
                    self.advance();
                    let value = match number {
                        NumberLiteral::Integer(i) => Decimal::from_i64(i),
                        NumberLiteral::Decimal(d) => d,
                    };
                    return Ok(Expr::Literal(Literal::Quantity(Quantity::new(
                        value,
                        Arc::from(unit),
                    ))));
                }
                Ok(Expr::Literal(match number {
                    NumberLiteral::Integer(i) => Literal::Integer(i),
                    NumberLiteral::Decimal(d) => Literal::Decimal(d),
                }))
            }
            TokenKind::DateTime(text) => {
                self.advance();
                let literal = if text.contains('T') {
                    DateTime::parse_datetime(&text).map(Literal::DateTime)
                } else {
                    DateTime::parse_date(&text).map(Literal::Date)
                };
                literal
                    .map(Expr::Literal)
                    .ok_or(ParseError::InvalidLiteral(format!("@{text}")))
            }
            TokenKind::Time(text) => {
                self.advance();
                Time::parse(&text)
                    .map(|t| Expr::Literal(Literal::Time(t)))
                    .ok_or(ParseError::InvalidLiteral(format!("@T{text}")))
            }
            TokenKind::Special(name) => {
                self.advance();
                match name.as_str() {
                    "this" => Ok(Expr::This),
                    "index" => Ok(Expr::Index),
                    "total" => Ok(Expr::Total),
                    _ => Err(ParseError::Syntax {
                        offset: token.offset,
                        message: format!("unknown ${name}"),
                    }),
                }
            }
            TokenKind::Variable(name) => {
                self.advance();
                Ok(Expr::Variable(name))
            }
            TokenKind::Identifier(name) => {
                if !matches!(self.peek_at(1), TokenKind::Symbol("(")) {
                    if name == "true" || name == "false" {
                        self.advance();
                        return Ok(Expr::Literal(Literal::Boolean(name == "true")));
                    }
                    if KEYWORDS.contains(&name.as_str()) {
                        return Err(self.error(&format!("unexpected keyword {name}")));
                    }
                }
                self.invocation(None)
            }
            TokenKind::Delimited(_) => self.invocation(None),
            TokenKind::End => Err(self.error("unexpected end of expression")),
            TokenKind::Symbol(symbol) => Err(self.error(&format!("unexpected {symbol}"))),
        }
    }
}

enum NumberLiteral {
    Integer(i64),
    Decimal(Decimal),
}

fn to_type_spec(expr: Expr) -> Option<TypeSpec> {
    match expr {
        Expr::Member { target: None, name } => Some(TypeSpec {
            namespace: None,
            name,
        }),
        Expr::Member {
            target: Some(target),
            name,
        } => match *target {
            Expr::Member {
                target: None,
                name: namespace,
            } => Some(TypeSpec {
                namespace: Some(namespace),
                name,
            }),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Expr {
        parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn precedence() {
        let Expr::Binary {
            op: BinaryOp::Equal,
            left,
            ..
        } = ok("1 + 2 * 3 = 7")
        else {
            panic!("= at the top")
        };
        assert!(matches!(
            *left,
            Expr::Binary {
                op: BinaryOp::Add,
                ..
            }
        ));
        // Unary minus applies to the whole invocation chain.
        assert!(matches!(ok("-1.convertsToInteger()"), Expr::Negate(_)));
        // `is` binds tighter than `|` and comparisons.
        let Expr::Binary {
            op: BinaryOp::Greater,
            right,
            ..
        } = ok("1 > 2 is Boolean")
        else {
            panic!("> at the top")
        };
        assert!(matches!(*right, Expr::TypeOp { is: true, .. }));
    }

    #[test]
    fn literals() {
        assert!(matches!(ok("4 days"), Expr::Literal(Literal::Quantity(_))));
        assert!(matches!(
            ok("10.1 'mg'"),
            Expr::Literal(Literal::Quantity(_))
        ));
        assert!(matches!(ok("@2015"), Expr::Literal(Literal::Date(_))));
        assert!(matches!(ok("@2015T"), Expr::Literal(Literal::DateTime(_))));
        assert!(matches!(ok("@T14:34"), Expr::Literal(Literal::Time(_))));
        assert!(matches!(ok("{}"), Expr::Empty));
        assert!(parse("@2015-13-01").is_err());
        assert!(parse("99999999999999999999999999999999999999999").is_err());
    }

    #[test]
    fn functions_are_checked() {
        assert!(matches!(
            parse("name.frobnicate()"),
            Err(ParseError::UnknownFunction(_))
        ));
        assert!(matches!(
            parse("name.first(1)"),
            Err(ParseError::WrongArity { .. })
        ));
        let Expr::Call { args, .. } = ok("value.ofType(FHIR.Quantity)") else {
            panic!("a call")
        };
        assert!(
            matches!(&args[0], Expr::TypeName(spec) if spec.namespace.as_deref() == Some("FHIR"))
        );
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "2 + 2 /",
            "name.",
            "(1",
            "1 +",
            "and",
            "a[1",
            "$foo",
            "@T14:34:28Z",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nesting_is_limited() {
        let deep = "(".repeat(10_000) + "1" + &")".repeat(10_000);
        assert!(parse(&deep).is_err());
        let long_chain = "a".to_string() + &".b".repeat(2000);
        assert!(parse(&long_chain).is_err());
        let negations = "-".repeat(5000) + "1";
        assert!(parse(&negations).is_err());
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }

        #[test]
        fn parse_never_panics_on_fhirpath_like_text(
            text in "[a-zA-Z0-9_.()\\[\\]{}'`@$%:+*/&|=~!<>, -]{0,120}"
        ) {
            let _ = parse(&text);
        }
    }
}
