//! The function library: FHIRPath N1 and the FHIR R4 additions.

use std::cmp::Ordering;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::Value;

use crate::decimal::Decimal;
use crate::error::EvalError;
use crate::eval::{
    Collection, Evaluator, Scope, as_decimal, compare_items, is_type, singleton, to_boolean,
    type_of, union,
};
use crate::item::{Item, Node, NodeKind, Prim, Quantity};
use crate::parser::{Expr, Func};
use crate::set::Seen;
use crate::temporal::{DateTime, Precision, Time};
use crate::types;
use crate::{MAX_COLLECTION_ITEMS, MAX_REGEX_BYTES, MAX_STRING_BYTES};

/// Default digits of `lowBoundary()`/`highBoundary()` on decimals.
const DEFAULT_DECIMAL_BOUNDARY_DIGITS: u32 = 8;

/// The most digits a decimal boundary may ask for.
const MAX_BOUNDARY_DIGITS: u32 = 28;

pub(crate) fn call<'a>(
    ev: &mut Evaluator<'a, '_>,
    target: Option<&Expr>,
    func: Func,
    args: &[Expr],
    scope: &Scope<'_, 'a>,
) -> Result<Collection<'a>, EvalError> {
    let input: Collection<'a> = match target {
        Some(target) => ev.eval(target, scope)?,
        None => scope.this.to_vec(),
    };
    let boolean = |b: bool| Ok(vec![Item::Boolean(b)]);
    match func {
        // Existence
        Func::Empty => boolean(input.is_empty()),
        Func::Exists => match args.first() {
            None => boolean(!input.is_empty()),
            Some(criteria) => {
                for (i, item) in input.iter().enumerate() {
                    if to_boolean(&ev.eval_on_item(criteria, item, i, None)?)? == Some(true) {
                        return boolean(true);
                    }
                }
                boolean(false)
            }
        },
        Func::All => {
            for (i, item) in input.iter().enumerate() {
                if to_boolean(&ev.eval_on_item(&args[0], item, i, None)?)? != Some(true) {
                    return boolean(false);
                }
            }
            boolean(true)
        }
        Func::AllTrue | Func::AnyTrue | Func::AllFalse | Func::AnyFalse => {
            let mut values = Vec::with_capacity(input.len());
            for item in &input {
                match item.prim() {
                    Some(Prim::Boolean(b)) => values.push(b),
                    _ => {
                        return Err(EvalError::Type(format!("{}() needs booleans", func.name())));
                    }
                }
            }
            boolean(match func {
                Func::AllTrue => values.iter().all(|b| *b),
                Func::AnyTrue => values.iter().any(|b| *b),
                Func::AllFalse => values.iter().all(|b| !*b),
                _ => values.iter().any(|b| !*b),
            })
        }
        Func::SubsetOf | Func::SupersetOf => {
            let other = ev.eval(&args[0], scope)?;
            let (small, large) = if func == Func::SubsetOf {
                (&input, &other)
            } else {
                (&other, &input)
            };
            let seen = Seen::of(large);
            boolean(small.iter().all(|a| seen.contains(large, a)))
        }
        Func::Count => Ok(vec![Item::Integer(
            i64::try_from(input.len()).unwrap_or(i64::MAX),
        )]),
        Func::Distinct => Ok(union(input, Vec::new())),
        Func::IsDistinct => {
            let count = input.len();
            boolean(union(input, Vec::new()).len() == count)
        }

        // Filtering and projection
        Func::Where => {
            let mut out = Vec::new();
            for (i, item) in input.iter().enumerate() {
                if to_boolean(&ev.eval_on_item(&args[0], item, i, None)?)? == Some(true) {
                    out.push(item.clone());
                }
            }
            Ok(out)
        }
        Func::Select => {
            let mut out = Vec::new();
            for (i, item) in input.iter().enumerate() {
                out.extend(ev.eval_on_item(&args[0], item, i, None)?);
                if out.len() > MAX_COLLECTION_ITEMS {
                    return Err(EvalError::TooLarge);
                }
            }
            Ok(out)
        }
        Func::Repeat => {
            let mut out: Collection<'a> = Vec::new();
            let mut seen = Seen::by_identity();
            let mut queue = input;
            while !queue.is_empty() {
                let mut next = Vec::new();
                for (i, item) in queue.iter().enumerate() {
                    for found in ev.eval_on_item(&args[0], item, i, None)? {
                        if !seen.contains(&out, &found) {
                            seen.insert(out.len(), &found);
                            out.push(found.clone());
                            next.push(found);
                        }
                    }
                    if out.len() > MAX_COLLECTION_ITEMS {
                        return Err(EvalError::TooLarge);
                    }
                }
                queue = next;
            }
            Ok(out)
        }
        Func::OfType => {
            let type_ref = type_arg(&args[0])?;
            Ok(input
                .into_iter()
                .filter(|item| is_type(item, &type_ref, true))
                .collect())
        }

        // Subsetting
        Func::Single => match input.len() {
            0 | 1 => Ok(input),
            n => Err(EvalError::NotSingleton("single()", n)),
        },
        Func::First => Ok(input.into_iter().take(1).collect()),
        Func::Last => Ok(input.into_iter().last().into_iter().collect()),
        Func::Tail => Ok(input.into_iter().skip(1).collect()),
        Func::Skip | Func::Take => {
            let Some(n) = integer_arg(ev, &args[0], scope)? else {
                return Ok(Vec::new());
            };
            let n = usize::try_from(n.max(0)).unwrap_or(usize::MAX);
            Ok(if func == Func::Skip {
                input.into_iter().skip(n).collect()
            } else {
                input.into_iter().take(n).collect()
            })
        }
        Func::Intersect => {
            let other = ev.eval(&args[0], scope)?;
            let in_other = Seen::of(&other);
            let mut out: Collection<'a> = Vec::new();
            let mut seen = Seen::by_value();
            for item in input {
                if in_other.contains(&other, &item) && !seen.contains(&out, &item) {
                    seen.insert(out.len(), &item);
                    out.push(item);
                }
            }
            Ok(out)
        }
        Func::Exclude => {
            let other = ev.eval(&args[0], scope)?;
            let in_other = Seen::of(&other);
            Ok(input
                .into_iter()
                .filter(|item| !in_other.contains(&other, item))
                .collect())
        }
        Func::Union => {
            let other = ev.eval(&args[0], scope)?;
            Ok(union(input, other))
        }
        Func::Combine => {
            let mut out = input;
            out.extend(ev.eval(&args[0], scope)?);
            Ok(out)
        }

        // Conversion
        Func::Iif => {
            let focus: Collection<'a>;
            let inner;
            let scope = match target {
                Some(_) => {
                    if input.len() > 1 {
                        return Err(EvalError::NotSingleton("iif()", input.len()));
                    }
                    focus = input;
                    inner = Scope {
                        this: &focus,
                        index: scope.index,
                        total: scope.total,
                    };
                    &inner
                }
                None => scope,
            };
            let criterion = ev.eval(&args[0], scope)?;
            let decided = match singleton(&criterion, "iif() criterion")? {
                None => false,
                Some(item) => match item.prim() {
                    Some(Prim::Boolean(b)) => b,
                    _ => {
                        return Err(EvalError::Type(
                            "the criterion of iif() must be a boolean".into(),
                        ));
                    }
                },
            };
            if decided {
                ev.eval(&args[1], scope)
            } else {
                match args.get(2) {
                    Some(otherwise) => ev.eval(otherwise, scope),
                    None => Ok(Vec::new()),
                }
            }
        }
        Func::ToBoolean
        | Func::ToInteger
        | Func::ToDecimal
        | Func::ToStringFn
        | Func::ToDate
        | Func::ToDateTime
        | Func::ToTime => {
            let Some(item) = singleton(&input, func.name())? else {
                return Ok(Vec::new());
            };
            Ok(convert(item, func).into_iter().collect())
        }
        Func::ConvertsToBoolean
        | Func::ConvertsToInteger
        | Func::ConvertsToDecimal
        | Func::ConvertsToString
        | Func::ConvertsToDate
        | Func::ConvertsToDateTime
        | Func::ConvertsToTime => {
            let Some(item) = singleton(&input, func.name())? else {
                return Ok(Vec::new());
            };
            let target = match func {
                Func::ConvertsToBoolean => Func::ToBoolean,
                Func::ConvertsToInteger => Func::ToInteger,
                Func::ConvertsToDecimal => Func::ToDecimal,
                Func::ConvertsToString => Func::ToStringFn,
                Func::ConvertsToDate => Func::ToDate,
                Func::ConvertsToDateTime => Func::ToDateTime,
                _ => Func::ToTime,
            };
            boolean(convert(item, target).is_some())
        }
        Func::ToQuantity | Func::ConvertsToQuantity => {
            let Some(item) = singleton(&input, func.name())? else {
                return Ok(Vec::new());
            };
            let unit = match args.first() {
                Some(arg) => string_arg(ev, arg, scope)?,
                None => None,
            };
            let mut quantity = to_quantity(item);
            if let (Some(q), Some(unit)) = (&quantity, &unit) {
                quantity = crate::ucum::convert(q.value(), q.unit(), unit)
                    .map(|v| Quantity::new(v, Arc::from(unit.as_str())));
            }
            if func == Func::ToQuantity {
                Ok(quantity.map(Item::Quantity).into_iter().collect())
            } else {
                boolean(quantity.is_some())
            }
        }

        // Strings
        Func::IndexOf | Func::LastIndexOf => {
            let (Some(text), Some(needle)) = (
                input_string(&input, func)?,
                string_arg(ev, &args[0], scope)?,
            ) else {
                return Ok(Vec::new());
            };
            let found = if func == Func::IndexOf {
                text.find(needle.as_str())
            } else {
                text.rfind(needle.as_str())
            };
            let index = found.map_or(-1, |at| {
                i64::try_from(text[..at].chars().count()).unwrap_or(-1)
            });
            Ok(vec![Item::Integer(index)])
        }
        Func::Substring => {
            let Some(text) = input_string(&input, func)? else {
                return Ok(Vec::new());
            };
            let Some(start) = integer_arg(ev, &args[0], scope)? else {
                return Ok(Vec::new());
            };
            let length = match args.get(1) {
                Some(arg) => integer_arg(ev, arg, scope)?,
                None => None,
            };
            let count = text.chars().count();
            let Ok(start) = usize::try_from(start) else {
                return Ok(Vec::new());
            };
            if start >= count {
                return Ok(Vec::new());
            }
            let take = match length {
                Some(l) => usize::try_from(l.max(0)).unwrap_or(0),
                None => count,
            };
            let result: String = text.chars().skip(start).take(take).collect();
            Ok(vec![Item::String(Arc::from(result))])
        }
        Func::StartsWith | Func::EndsWith | Func::ContainsFn => {
            let (Some(text), Some(part)) = (
                input_string(&input, func)?,
                string_arg(ev, &args[0], scope)?,
            ) else {
                return Ok(Vec::new());
            };
            boolean(match func {
                Func::StartsWith => text.starts_with(part.as_str()),
                Func::EndsWith => text.ends_with(part.as_str()),
                _ => text.contains(part.as_str()),
            })
        }
        Func::Upper | Func::Lower | Func::Trim => {
            let Some(text) = input_string(&input, func)? else {
                return Ok(Vec::new());
            };
            let result = match func {
                Func::Upper => text.to_uppercase(),
                Func::Lower => text.to_lowercase(),
                _ => text.trim().to_string(),
            };
            Ok(vec![Item::String(Arc::from(result))])
        }
        Func::Replace => {
            let text = input_string(&input, func)?;
            let pattern = string_arg(ev, &args[0], scope)?;
            let substitution = string_arg(ev, &args[1], scope)?;
            let (Some(text), Some(pattern), Some(substitution)) = (text, pattern, substitution)
            else {
                return Ok(Vec::new());
            };
            let occurrences = if pattern.is_empty() {
                text.chars().count() + 1
            } else {
                text.matches(pattern.as_str()).count()
            };
            if text.len() + occurrences.saturating_mul(substitution.len()) > MAX_STRING_BYTES {
                return Err(EvalError::TooLarge);
            }
            Ok(vec![Item::String(Arc::from(
                text.replace(pattern.as_str(), &substitution),
            ))])
        }
        Func::Matches | Func::MatchesFull => {
            let text = input_string(&input, func)?;
            let pattern = string_arg(ev, &args[0], scope)?;
            let (Some(text), Some(pattern)) = (text, pattern) else {
                return Ok(Vec::new());
            };
            let pattern = if func == Func::MatchesFull {
                format!("^(?:{pattern})$")
            } else {
                pattern
            };
            boolean(regex(&pattern)?.is_match(text))
        }
        Func::ReplaceMatches => {
            let text = input_string(&input, func)?;
            let pattern = string_arg(ev, &args[0], scope)?;
            let substitution = string_arg(ev, &args[1], scope)?;
            let (Some(text), Some(pattern), Some(substitution)) = (text, pattern, substitution)
            else {
                return Ok(Vec::new());
            };
            if pattern.is_empty() {
                return Ok(vec![Item::String(Arc::from(text))]);
            }
            let result = regex(&pattern)?
                .replace_all(text, substitution.as_str())
                .into_owned();
            if result.len() > MAX_STRING_BYTES {
                return Err(EvalError::TooLarge);
            }
            Ok(vec![Item::String(Arc::from(result))])
        }
        Func::Length => {
            let Some(text) = input_string(&input, func)? else {
                return Ok(Vec::new());
            };
            Ok(vec![Item::Integer(
                i64::try_from(text.chars().count()).unwrap_or(i64::MAX),
            )])
        }
        Func::ToChars => {
            let Some(text) = input_string(&input, func)? else {
                return Ok(Vec::new());
            };
            Ok(text
                .chars()
                .map(|c| Item::String(Arc::from(c.to_string())))
                .collect())
        }
        Func::Split => {
            let (Some(text), Some(separator)) = (
                input_string(&input, func)?,
                string_arg(ev, &args[0], scope)?,
            ) else {
                return Ok(Vec::new());
            };
            if separator.is_empty() {
                return Ok(text
                    .chars()
                    .map(|c| Item::String(Arc::from(c.to_string())))
                    .collect());
            }
            Ok(text
                .split(separator.as_str())
                .map(|part| Item::String(Arc::from(part)))
                .collect())
        }
        Func::Join => {
            let separator = match args.first() {
                Some(arg) => string_arg(ev, arg, scope)?.unwrap_or_default(),
                None => String::new(),
            };
            let mut parts = Vec::with_capacity(input.len());
            for item in &input {
                match item.prim() {
                    Some(Prim::String(s)) => parts.push(s.to_string()),
                    _ => return Err(EvalError::Type("join() needs strings".into())),
                }
            }
            let joined = parts.join(&separator);
            if joined.len() > MAX_STRING_BYTES {
                return Err(EvalError::TooLarge);
            }
            Ok(vec![Item::String(Arc::from(joined))])
        }
        Func::Encode | Func::Decode | Func::Escape | Func::Unescape => {
            let (Some(text), Some(format)) = (
                input_string(&input, func)?,
                string_arg(ev, &args[0], scope)?,
            ) else {
                return Ok(Vec::new());
            };
            Ok(transcode(text, &format, func)?
                .map(|s| Item::String(Arc::from(s)))
                .into_iter()
                .collect())
        }

        // Math
        Func::Abs
        | Func::Ceiling
        | Func::Floor
        | Func::Truncate
        | Func::Exp
        | Func::Ln
        | Func::Sqrt
        | Func::Round
        | Func::Log
        | Func::Power => {
            let Some(item) = singleton(&input, func.name())? else {
                return Ok(Vec::new());
            };
            let argument = match args.first() {
                Some(arg) => {
                    let values = ev.eval(arg, scope)?;
                    match singleton(&values, func.name())? {
                        None => return Ok(Vec::new()),
                        Some(value) => {
                            Some(value.prim().and_then(|p| as_decimal(&p)).ok_or_else(|| {
                                EvalError::Type(format!("{}() needs a number", func.name()))
                            })?)
                        }
                    }
                }
                None => None,
            };
            math(item, func, argument)
        }

        // Tree navigation
        Func::Children => {
            let mut out = Vec::new();
            for item in &input {
                if let Item::Node(node) = item {
                    types::all_children(node, &mut out);
                }
            }
            Ok(out)
        }
        Func::Descendants => {
            let mut out = Vec::new();
            let mut queue = input;
            while !queue.is_empty() {
                let mut next = Vec::new();
                for item in &queue {
                    if let Item::Node(node) = item {
                        types::all_children(node, &mut next);
                    }
                }
                out.extend(next.iter().cloned());
                if out.len() > MAX_COLLECTION_ITEMS {
                    return Err(EvalError::TooLarge);
                }
                queue = next;
            }
            Ok(out)
        }

        // Utility
        Func::Trace => {
            // Evaluate the arguments for their errors; this library does no logging.
            let _name = string_arg(ev, &args[0], scope)?;
            if let Some(projection) = args.get(1) {
                for (i, item) in input.iter().enumerate() {
                    ev.eval_on_item(projection, item, i, None)?;
                }
            }
            Ok(input)
        }
        Func::Now => Ok(vec![Item::DateTime(ev.now())]),
        Func::Today => Ok(vec![Item::Date(ev.now().date_part())]),
        Func::TimeOfDay => Ok(vec![Item::Time(
            ev.now().time_part().unwrap_or_else(Time::now),
        )]),
        Func::Sort => sort(ev, input, args),
        Func::Aggregate => {
            let mut total = match args.get(1) {
                Some(init) => ev.eval(init, scope)?,
                None => Vec::new(),
            };
            for (i, item) in input.iter().enumerate() {
                total = ev.eval_on_item(&args[0], item, i, Some(&total))?;
            }
            Ok(total)
        }
        Func::Type => Ok(input
            .iter()
            .filter_map(type_of)
            .map(Item::TypeInfo)
            .collect()),
        Func::Is | Func::As => {
            let type_ref = type_arg(&args[0])?;
            let Some(item) = singleton(&input, func.name())? else {
                return Ok(Vec::new());
            };
            if func == Func::Is {
                boolean(is_type(item, &type_ref, false))
            } else {
                Ok(is_type(item, &type_ref, true)
                    .then(|| item.clone())
                    .into_iter()
                    .collect())
            }
        }
        Func::Not => Ok(to_boolean(&input)?
            .map(|b| Item::Boolean(!b))
            .into_iter()
            .collect()),
        Func::LowBoundary | Func::HighBoundary => {
            let Some(item) = singleton(&input, func.name())? else {
                return Ok(Vec::new());
            };
            let digits = match args.first() {
                Some(arg) => match integer_arg(ev, arg, scope)? {
                    Some(d) => Some(d),
                    None => return Ok(Vec::new()),
                },
                None => None,
            };
            Ok(boundary(item, digits, func == Func::HighBoundary)
                .into_iter()
                .collect())
        }
        Func::Precision => {
            let Some(item) = singleton(&input, func.name())? else {
                return Ok(Vec::new());
            };
            let digits: Option<u32> = match item.prim() {
                Some(Prim::Decimal(d)) => Some(d.scale()),
                Some(Prim::Integer(_)) => Some(0),
                Some(Prim::Date(d) | Prim::DateTime(d)) => Some(date_digits(d.precision())),
                Some(Prim::Time(t)) => Some(time_digits(t.precision())),
                _ => None,
            };
            Ok(digits
                .map(|d| Item::Integer(i64::from(d)))
                .into_iter()
                .collect())
        }
        Func::Comparable => {
            let Some(item) = singleton(&input, func.name())? else {
                return Ok(Vec::new());
            };
            let other = ev.eval(&args[0], scope)?;
            let Some(other) = singleton(&other, func.name())? else {
                return Ok(Vec::new());
            };
            match (item.prim(), other.prim()) {
                (Some(Prim::Quantity(a)), Some(Prim::Quantity(b))) => {
                    let dims = |q: &Quantity| crate::ucum::canonical(q.unit()).map(|c| c.dims);
                    boolean(matches!((dims(&a), dims(&b)), (Some(x), Some(y)) if x == y))
                }
                _ => Err(EvalError::Type("comparable() needs quantities".into())),
            }
        }

        // FHIR additions
        Func::Extension => {
            let Some(url) = string_arg(ev, &args[0], scope)? else {
                return Ok(Vec::new());
            };
            let mut extensions = Vec::new();
            for item in &input {
                if let Item::Node(node) = item {
                    types::children_named(node, "extension", false, &mut extensions)?;
                }
            }
            Ok(extensions
                .into_iter()
                .filter(|e| {
                    e.as_node()
                        .and_then(Node::json)
                        .and_then(|v| v.get("url"))
                        .and_then(Value::as_str)
                        == Some(url.as_str())
                })
                .collect())
        }
        Func::HasValue => boolean(match input.as_slice() {
            [Item::Node(node)] => node.kind == NodeKind::Primitive && node.value.is_some(),
            [Item::TypeInfo(_)] => false,
            [_] => true,
            _ => false,
        }),
        Func::GetValue => Ok(match input.as_slice() {
            [Item::Node(node)] if node.kind == NodeKind::Primitive && node.value.is_some() => input,
            _ => Vec::new(),
        }),
        Func::Resolve => Ok(input.iter().filter_map(|item| resolve(ev, item)).collect()),
        Func::ConformsTo => {
            let Some(url) = string_arg(ev, &args[0], scope)? else {
                return Ok(Vec::new());
            };
            let Some(type_name) = url.strip_prefix("http://hl7.org/fhir/StructureDefinition/")
            else {
                return Err(EvalError::Unsupported(format!("conformsTo('{url}')")));
            };
            if !types::model().types.contains_key(type_name) {
                return Err(EvalError::Unsupported(format!("conformsTo('{url}')")));
            }
            let Some(item) = singleton(&input, func.name())? else {
                return Ok(Vec::new());
            };
            boolean(
                matches!(item, Item::Node(node) if types::derives_from(node.type_name, type_name, false)),
            )
        }
        Func::MemberOf => {
            let Some(url) = string_arg(ev, &args[0], scope)? else {
                return Ok(Vec::new());
            };
            let Some(item) = singleton(&input, func.name())? else {
                return Ok(Vec::new());
            };
            member_of(item, &url).map(|b| vec![Item::Boolean(b)])
        }
        Func::HtmlChecks => boolean(true),
        Func::Subsumes
        | Func::SubsumedBy
        | Func::ElementDefinition
        | Func::Slice
        | Func::CheckModifiers => Err(EvalError::Unsupported(format!("{}()", func.name()))),
    }
}

fn type_arg(arg: &Expr) -> Result<types::TypeRef, EvalError> {
    match arg {
        Expr::TypeName(spec) => types::resolve_type(spec),
        _ => Err(EvalError::Type("a type name was expected".into())),
    }
}

fn string_arg<'a>(
    ev: &mut Evaluator<'a, '_>,
    arg: &Expr,
    scope: &Scope<'_, 'a>,
) -> Result<Option<String>, EvalError> {
    let values = ev.eval(arg, scope)?;
    match singleton(&values, "string argument")? {
        None => Ok(None),
        Some(item) => match item.prim() {
            Some(Prim::String(s)) => Ok(Some(s.to_string())),
            _ => Err(EvalError::Type("a string argument was expected".into())),
        },
    }
}

fn integer_arg<'a>(
    ev: &mut Evaluator<'a, '_>,
    arg: &Expr,
    scope: &Scope<'_, 'a>,
) -> Result<Option<i64>, EvalError> {
    let values = ev.eval(arg, scope)?;
    match singleton(&values, "integer argument")? {
        None => Ok(None),
        Some(item) => match item.prim() {
            Some(Prim::Integer(i)) => Ok(Some(i)),
            _ => Err(EvalError::Type("an integer argument was expected".into())),
        },
    }
}

fn input_string<'x>(input: &'x [Item<'_>], func: Func) -> Result<Option<&'x str>, EvalError> {
    match singleton(input, func.name())? {
        None => Ok(None),
        Some(item) => match item.prim() {
            Some(Prim::String(_)) => match item {
                Item::String(s) => Ok(Some(s)),
                Item::Node(node) => Ok(node.value.and_then(Value::as_str)),
                _ => Ok(None),
            },
            _ => Err(EvalError::Type(format!(
                "{}() needs a string, not {}",
                func.name(),
                item.type_name()
            ))),
        },
    }
}

fn regex(pattern: &str) -> Result<regex::Regex, EvalError> {
    regex::RegexBuilder::new(pattern)
        .dot_matches_new_line(true)
        .size_limit(MAX_REGEX_BYTES)
        .dfa_size_limit(MAX_REGEX_BYTES)
        .build()
        .map_err(|e| EvalError::Regex(e.to_string()))
}

fn parse_boolean_text(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" | "1.0" => Some(true),
        "false" | "f" | "no" | "n" | "0" | "0.0" => Some(false),
        _ => None,
    }
}

fn is_integer_text(text: &str) -> bool {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn is_decimal_text(text: &str) -> bool {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

/// `toX()` conversions; `None` when the item does not convert.
fn convert<'a>(item: &Item<'a>, func: Func) -> Option<Item<'a>> {
    let prim = item.prim()?;
    match func {
        Func::ToBoolean => Some(Item::Boolean(match prim {
            Prim::Boolean(b) => b,
            Prim::Integer(1) => true,
            Prim::Integer(0) => false,
            Prim::Decimal(d) if d.value_eq(&Decimal::from_i64(1)) => true,
            Prim::Decimal(d) if d.is_zero() => false,
            Prim::String(s) => parse_boolean_text(s)?,
            _ => return None,
        })),
        Func::ToInteger => Some(Item::Integer(match prim {
            Prim::Integer(i) => i,
            Prim::Boolean(b) => i64::from(b),
            Prim::String(s) if is_integer_text(s) => s.parse().ok()?,
            _ => return None,
        })),
        Func::ToDecimal => Some(Item::Decimal(match prim {
            Prim::Integer(i) => Decimal::from_i64(i),
            Prim::Decimal(d) => d,
            Prim::Boolean(b) => Decimal::from_i64(i64::from(b)),
            Prim::String(s) if is_decimal_text(s) => Decimal::parse(s)?,
            _ => return None,
        })),
        Func::ToStringFn => item
            .to_fhirpath_string()
            .map(|s| Item::String(Arc::from(s))),
        Func::ToDate => Some(Item::Date(match prim {
            Prim::Date(d) => d,
            Prim::DateTime(d) => d.date_part(),
            Prim::String(s) => DateTime::parse_date(s)
                .or_else(|| DateTime::parse_datetime(s).map(|d| d.date_part()))?,
            _ => return None,
        })),
        Func::ToDateTime => Some(Item::DateTime(match prim {
            Prim::Date(d) | Prim::DateTime(d) => d,
            Prim::String(s) => DateTime::parse_datetime(s)?,
            _ => return None,
        })),
        Func::ToTime => Some(Item::Time(match prim {
            Prim::Time(t) => t,
            Prim::String(s) => Time::parse(s)?,
            _ => return None,
        })),
        _ => None,
    }
}

fn to_quantity(item: &Item<'_>) -> Option<Quantity> {
    match item.prim()? {
        Prim::Quantity(q) => Some(q.into_owned()),
        Prim::Integer(i) => Some(Quantity::new(Decimal::from_i64(i), Arc::from("1"))),
        Prim::Decimal(d) => Some(Quantity::new(d, Arc::from("1"))),
        Prim::Boolean(b) => Some(Quantity::new(
            Decimal::parse(if b { "1.0" } else { "0.0" })?,
            Arc::from("1"),
        )),
        Prim::String(s) => parse_quantity_text(s),
        _ => None,
    }
}

/// `4.5 'mg'`, `1 day`, `1.0`.
fn parse_quantity_text(text: &str) -> Option<Quantity> {
    let text = text.trim();
    let (number, rest) = match text.find(' ') {
        Some(at) => (&text[..at], text[at..].trim()),
        None => (text, ""),
    };
    if !is_decimal_text(number) {
        return None;
    }
    let value = Decimal::parse(number)?;
    let unit = if rest.is_empty() {
        "1".to_string()
    } else if let Some(quoted) = rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        quoted.to_string()
    } else if crate::ucum::calendar_to_ucum(rest).is_some() {
        rest.to_string()
    } else {
        return None;
    };
    Some(Quantity::new(value, Arc::from(unit)))
}

fn transcode(text: &str, format: &str, func: Func) -> Result<Option<String>, EvalError> {
    let standard = base64::engine::general_purpose::STANDARD;
    let url_safe = base64::engine::general_purpose::URL_SAFE;
    Ok(match (func, format) {
        (Func::Encode, "base64") => Some(standard.encode(text)),
        (Func::Encode, "urlbase64") => Some(url_safe.encode(text)),
        (Func::Encode, "hex") => Some(text.bytes().map(|b| format!("{b:02x}")).collect()),
        (Func::Decode, "base64") => standard
            .decode(text)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        (Func::Decode, "urlbase64") => url_safe
            .decode(text)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        (Func::Decode, "hex") => {
            if !text.len().is_multiple_of(2) {
                None
            } else {
                (0..text.len())
                    .step_by(2)
                    .map(|i| {
                        text.get(i..i + 2)
                            .and_then(|h| u8::from_str_radix(h, 16).ok())
                    })
                    .collect::<Option<Vec<u8>>>()
                    .and_then(|b| String::from_utf8(b).ok())
            }
        }
        (Func::Escape, "html") => Some(
            text.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
                .replace('\'', "&#39;"),
        ),
        (Func::Unescape, "html") => Some(
            text.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        ),
        (Func::Escape, "json") => {
            let quoted =
                serde_json::to_string(text).map_err(|e| EvalError::Invalid(e.to_string()))?;
            Some(quoted[1..quoted.len() - 1].to_string())
        }
        (Func::Unescape, "json") => Some(unescape_json(text)),
        _ => {
            return Err(EvalError::Invalid(format!(
                "{}() does not know the format '{format}'",
                func.name()
            )));
        }
    })
}

/// Resolves JSON string escapes (`\"`, `\\`, `\n`, `\u0041`…); other text stays as it is.
fn unescape_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('/') => out.push('/'),
            Some('b') => out.push('\u{0008}'),
            Some('f') => out.push('\u{000C}'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(decoded) => out.push(decoded),
                    None => {
                        out.push_str("\\u");
                        out.push_str(&hex);
                    }
                }
            }
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn math<'a>(
    item: &Item<'a>,
    func: Func,
    argument: Option<Decimal>,
) -> Result<Collection<'a>, EvalError> {
    let prim = item.prim();
    if let (Func::Abs, Some(Prim::Quantity(q))) = (func, &prim) {
        return Ok(vec![Item::Quantity(q.with_value(q.value().abs()))]);
    }
    let number = prim
        .as_ref()
        .and_then(as_decimal)
        .ok_or_else(|| EvalError::Type(format!("{}() needs a number", func.name())))?;
    let is_integer = matches!(prim, Some(Prim::Integer(_)));
    let integer = |d: Decimal| d.to_i64().map(Item::Integer);
    let from_f64 = |f: f64| Decimal::from_f64(f).map(Item::Decimal);
    let result = match func {
        Func::Abs => {
            if is_integer {
                integer(number.abs())
            } else {
                Some(Item::Decimal(number.abs()))
            }
        }
        Func::Ceiling => integer(number.ceiling(0)),
        Func::Floor => integer(number.floor(0)),
        Func::Truncate => integer(number.truncate(0)),
        Func::Round => {
            let digits = match argument {
                Some(d) => match d.to_i64().and_then(|d| u32::try_from(d).ok()) {
                    Some(d) if d <= crate::decimal::MAX_DECIMAL_SCALE => d,
                    _ => return Err(EvalError::Invalid("invalid precision for round()".into())),
                },
                None => 0,
            };
            Some(Item::Decimal(number.round(digits)))
        }
        Func::Exp => from_f64(number.to_f64().exp()),
        Func::Ln => from_f64(number.to_f64().ln()),
        Func::Sqrt => from_f64(number.to_f64().sqrt()),
        Func::Log => {
            let Some(base) = argument else {
                return Ok(Vec::new());
            };
            from_f64(number.to_f64().ln() / base.to_f64().ln())
        }
        Func::Power => {
            let Some(exponent) = argument else {
                return Ok(Vec::new());
            };
            match (is_integer, exponent.to_i64()) {
                (true, Some(e)) if (0..=u32::MAX as i64).contains(&e) => number
                    .to_i64()
                    .and_then(|n| n.checked_pow(u32::try_from(e).unwrap_or(u32::MAX)))
                    .map(Item::Integer),
                _ => from_f64(number.to_f64().powf(exponent.to_f64())),
            }
        }
        _ => None,
    };
    Ok(result.into_iter().collect())
}

fn date_digits(precision: Precision) -> u32 {
    match precision {
        Precision::Year => 4,
        Precision::Month => 6,
        Precision::Day => 8,
        Precision::Hour => 10,
        Precision::Minute => 12,
        Precision::Second => 14,
        Precision::Millisecond => 17,
    }
}

fn time_digits(precision: Precision) -> u32 {
    match precision {
        Precision::Hour => 2,
        Precision::Minute => 4,
        Precision::Second => 6,
        _ => 9,
    }
}

fn decimal_boundary(value: Decimal, digits: Option<i64>, high: bool) -> Option<Decimal> {
    let digits = match digits {
        None => DEFAULT_DECIMAL_BOUNDARY_DIGITS,
        Some(d) => u32::try_from(d)
            .ok()
            .filter(|d| *d <= MAX_BOUNDARY_DIGITS)?,
    };
    // Half a unit of the last given digit either side.
    let half = Decimal::new(5, value.scale() + 1)?;
    let bound = if high {
        value.checked_add(half)?
    } else {
        value.checked_sub(half)?
    };
    // A value smaller than the asked precision has zero for either boundary.
    if let Some(unit) = Decimal::new(1, digits)
        && value.abs().compare(&unit) == Ordering::Less
        && digits < value.scale()
    {
        return Some(Decimal::ZERO.round(digits));
    }
    Some(if high {
        bound.ceiling(digits)
    } else {
        bound.floor(digits)
    })
}

fn boundary<'a>(item: &Item<'a>, digits: Option<i64>, high: bool) -> Option<Item<'a>> {
    let to_u32 = |d: i64| u32::try_from(d).ok();
    match item.prim()? {
        Prim::Decimal(d) => decimal_boundary(d, digits, high).map(Item::Decimal),
        Prim::Integer(i) => decimal_boundary(Decimal::from_i64(i), digits, high).map(Item::Decimal),
        Prim::Quantity(q) => {
            decimal_boundary(q.value(), digits, high).map(|v| Item::Quantity(q.with_value(v)))
        }
        Prim::Date(d) => d
            .boundary(digits.map_or(Some(8), to_u32)?, high, true)
            .map(Item::Date),
        Prim::DateTime(d) => {
            let digits = digits.map_or(Some(17), to_u32)?;
            let value = d.boundary(digits, high, false)?;
            Some(if digits <= 8 {
                Item::Date(value)
            } else {
                Item::DateTime(value)
            })
        }
        Prim::Time(t) => t
            .boundary(digits.map_or(Some(9), to_u32)?, high)
            .map(Item::Time),
        _ => None,
    }
}

fn sort<'a>(
    ev: &mut Evaluator<'a, '_>,
    input: Collection<'a>,
    args: &[Expr],
) -> Result<Collection<'a>, EvalError> {
    // Each item with its keys; a key written `-expr` sorts descending.
    let mut keyed: Vec<(Vec<Option<Item<'a>>>, Item<'a>)> = Vec::with_capacity(input.len());
    for (i, item) in input.iter().enumerate() {
        let mut keys = Vec::with_capacity(args.len().max(1));
        if args.is_empty() {
            keys.push(Some(item.clone()));
        }
        for arg in args {
            let expr = match arg {
                Expr::Negate(inner) => inner.as_ref(),
                other => other,
            };
            let values = ev.eval_on_item(expr, item, i, None)?;
            keys.push(singleton(&values, "sort key")?.cloned());
        }
        keyed.push((keys, item.clone()));
    }
    let descending: Vec<bool> = if args.is_empty() {
        vec![false]
    } else {
        args.iter().map(|a| matches!(a, Expr::Negate(_))).collect()
    };
    let mut failure = None;
    keyed.sort_by(|(a, _), (b, _)| {
        for (k, (x, y)) in a.iter().zip(b).enumerate() {
            let ordering = match (x, y) {
                // An empty key sorts after every value (so first when descending).
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(x), Some(y)) => match compare_items(x, y) {
                    Ok(o) => o.unwrap_or(Ordering::Equal),
                    Err(e) => {
                        failure.get_or_insert(e);
                        Ordering::Equal
                    }
                },
            };
            let ordering = if descending.get(k).copied().unwrap_or(false) {
                ordering.reverse()
            } else {
                ordering
            };
            if ordering != Ordering::Equal {
                return ordering;
            }
        }
        Ordering::Equal
    });
    if let Some(error) = failure {
        return Err(error);
    }
    Ok(keyed.into_iter().map(|(_, item)| item).collect())
}

/// `resolve()`: a contained resource (`#id`), a Bundle entry (by `fullUrl` or type and id),
/// or else a node that knows only the target's type and id.
fn resolve<'a>(ev: &Evaluator<'a, '_>, item: &Item<'a>) -> Option<Item<'a>> {
    let reference_value: &'a Value = match item {
        Item::Node(node) => match node.value? {
            Value::Object(object) => object.get("reference")?,
            value @ Value::String(_) => value,
            _ => return None,
        },
        _ => return None,
    };
    let reference = reference_value.as_str()?;
    let roots: Vec<&'a Value> = [
        ev.env.resource,
        ev.env.root_resource,
        ev.context.as_node().and_then(Node::json),
    ]
    .into_iter()
    .flatten()
    .collect();
    if let Some(id) = reference.strip_prefix('#') {
        for root in &roots {
            if let Some(found) = root
                .get("contained")
                .and_then(Value::as_array)
                .and_then(|c| {
                    c.iter()
                        .find(|r| r.get("id").and_then(Value::as_str) == Some(id))
                })
            {
                return types::resource_node(found).map(Item::Node);
            }
        }
        return None;
    }
    let parts = types::reference_parts(reference);
    for root in &roots {
        if root.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
            continue;
        }
        let Some(entries) = root.get("entry").and_then(Value::as_array) else {
            continue;
        };
        for entry in entries {
            let Some(resource) = entry.get("resource") else {
                continue;
            };
            let full_url = entry.get("fullUrl").and_then(Value::as_str);
            let by_url = full_url == Some(reference);
            let by_id = parts.is_some_and(|(t, id)| {
                resource.get("resourceType").and_then(Value::as_str) == Some(t)
                    && resource.get("id").and_then(Value::as_str) == Some(id)
                    && (full_url.is_none_or(|u| u.ends_with(reference))
                        || !reference.contains("://"))
            });
            if by_url || by_id {
                return types::resource_node(resource).map(Item::Node);
            }
        }
    }
    types::reference_target(reference_value).map(Item::Node)
}

/// `memberOf()` against the required-binding value sets the R4 model carries.
fn member_of(item: &Item<'_>, url: &str) -> Result<bool, EvalError> {
    let model = types::model();
    let url = url.split('|').next().unwrap_or(url);
    let Some(value_set) = model.value_sets.iter().find(|v| v.url == url) else {
        return Err(EvalError::Unsupported(format!("memberOf('{url}')")));
    };
    let coding_in = |coding: &Value| -> bool {
        let code = coding.get("code").and_then(Value::as_str);
        let system = coding.get("system").and_then(Value::as_str);
        match (system, code) {
            (Some(system), Some(code)) => value_set.contains_in(system, code) == Some(true),
            (None, Some(code)) => value_set.contains(code),
            _ => false,
        }
    };
    Ok(match item {
        Item::String(code) => value_set.contains(code),
        Item::Node(node) => match (node.kind, node.value) {
            (NodeKind::Primitive, Some(Value::String(code))) => value_set.contains(code),
            (NodeKind::Complex, Some(value)) if node.type_name == "Coding" => coding_in(value),
            (NodeKind::Complex, Some(value)) if node.type_name == "CodeableConcept" => value
                .get("coding")
                .and_then(Value::as_array)
                .is_some_and(|codings| codings.iter().any(coding_in)),
            _ => false,
        },
        _ => false,
    })
}
