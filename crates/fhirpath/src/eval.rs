//! Evaluation of expression trees: navigation, variables and the operators. The function
//! library is in `functions`.

use std::cmp::Ordering;
use std::sync::Arc;

use crate::decimal::Decimal;
use crate::error::EvalError;
use crate::item::{Item, Node, Prim, Quantity, TypeInfo};
use crate::parser::{BinaryOp, Expr, Literal};
use crate::temporal::{CalendarUnit, DateTime};
use crate::types::{self, Lookup, TypeRef};
use crate::{
    Environment, MAX_COLLECTION_ITEMS, MAX_EVALUATION_ITEMS, MAX_NESTING_DEPTH, MAX_STRING_BYTES,
    functions,
};

/// How deep evaluation may recurse: the parser bounds the tree, this bounds the walk.
const MAX_EVAL_DEPTH: usize = MAX_NESTING_DEPTH * 8;

/// The most item pairs `~` on two collections compares.
const MAX_PAIRWISE_COMPARISONS: usize = 10_000_000;

pub(crate) struct Evaluator<'a, 'e> {
    pub(crate) context: Item<'a>,
    pub(crate) env: &'e Environment<'a>,
    pub(crate) now: Option<DateTime>,
    depth: usize,
    /// Items produced so far, against [`MAX_EVALUATION_ITEMS`].
    produced: usize,
}

/// What `$this`, `$index` and `$total` stand for where an expression is evaluated.
pub(crate) struct Scope<'s, 'a> {
    pub(crate) this: &'s [Item<'a>],
    pub(crate) index: Option<usize>,
    pub(crate) total: Option<&'s [Item<'a>]>,
}

pub(crate) type Collection<'a> = Vec<Item<'a>>;

impl<'a, 'e> Evaluator<'a, 'e> {
    pub(crate) fn new(context: Item<'a>, env: &'e Environment<'a>) -> Self {
        Evaluator {
            context,
            env,
            now: env.now,
            depth: 0,
            produced: 0,
        }
    }

    pub(crate) fn strict(&self) -> bool {
        self.env.strict
    }

    pub(crate) fn now(&mut self) -> DateTime {
        *self.now.get_or_insert_with(DateTime::now)
    }

    pub(crate) fn eval(
        &mut self,
        expr: &Expr,
        scope: &Scope<'_, 'a>,
    ) -> Result<Collection<'a>, EvalError> {
        self.depth += 1;
        if self.depth > MAX_EVAL_DEPTH {
            self.depth -= 1;
            return Err(EvalError::Invalid("expression nests too deeply".into()));
        }
        let result = self.eval_inner(expr, scope);
        self.depth -= 1;
        let result = result?;
        self.produced = self.produced.saturating_add(result.len());
        if result.len() > MAX_COLLECTION_ITEMS || self.produced > MAX_EVALUATION_ITEMS {
            return Err(EvalError::TooLarge);
        }
        Ok(result)
    }

    /// Evaluates `expr` with `$this` bound to one item.
    pub(crate) fn eval_on_item(
        &mut self,
        expr: &Expr,
        item: &Item<'a>,
        index: usize,
        total: Option<&[Item<'a>]>,
    ) -> Result<Collection<'a>, EvalError> {
        let scope = Scope {
            this: std::slice::from_ref(item),
            index: Some(index),
            total,
        };
        self.eval(expr, &scope)
    }

    fn eval_inner(
        &mut self,
        expr: &Expr,
        scope: &Scope<'_, 'a>,
    ) -> Result<Collection<'a>, EvalError> {
        match expr {
            Expr::Empty => Ok(Vec::new()),
            Expr::Literal(literal) => Ok(vec![literal_item(literal)]),
            Expr::This => Ok(scope.this.to_vec()),
            Expr::Index => Ok(scope
                .index
                .map(|i| Item::Integer(i64::try_from(i).unwrap_or(i64::MAX)))
                .into_iter()
                .collect()),
            Expr::Total => Ok(scope.total.map(<[Item<'a>]>::to_vec).unwrap_or_default()),
            Expr::Variable(name) => self.variable(name),
            Expr::Member { target, name } => {
                let owned;
                let input: &[Item<'a>] = match target {
                    Some(target) => {
                        owned = self.eval(target, scope)?;
                        &owned
                    }
                    None => scope.this,
                };
                let mut out = Vec::new();
                let (mut known, mut unknown) = (false, false);
                for item in input {
                    match self.member(item, name, &mut out)? {
                        Lookup::Unknown => unknown = true,
                        Lookup::Known | Lookup::Untyped => known = true,
                    }
                }
                if self.strict() && unknown && !known {
                    return Err(EvalError::UnknownElement {
                        name: name.clone(),
                        type_name: input.first().map_or("", Item::type_name).to_string(),
                    });
                }
                Ok(out)
            }
            Expr::Call { target, func, args } => {
                functions::call(self, target.as_deref(), *func, args, scope)
            }
            Expr::Indexer { target, index } => {
                let input = self.eval(target, scope)?;
                let index = self.eval(index, scope)?;
                let Some(index) = singleton(&index, "indexer")? else {
                    return Ok(Vec::new());
                };
                let Some(Prim::Integer(i)) = index.prim() else {
                    return Err(EvalError::Type("an index must be an integer".into()));
                };
                Ok(usize::try_from(i)
                    .ok()
                    .and_then(|i| input.into_iter().nth(i))
                    .into_iter()
                    .collect())
            }
            Expr::Negate(operand) => {
                let input = self.eval(operand, scope)?;
                let Some(item) = singleton(&input, "unary -")? else {
                    return Ok(Vec::new());
                };
                Ok(match item.prim() {
                    Some(Prim::Integer(i)) => i.checked_neg().map(Item::Integer),
                    Some(Prim::Decimal(d)) => Some(Item::Decimal(-d)),
                    Some(Prim::Quantity(q)) => Some(Item::Quantity(q.with_value(-q.value()))),
                    _ => return Err(EvalError::Type("unary - needs a number".into())),
                }
                .into_iter()
                .collect())
            }
            Expr::Binary { op, left, right } => self.binary(*op, left, right, scope),
            Expr::TypeOp { is, operand, spec } => {
                let input = self.eval(operand, scope)?;
                let type_ref = types::resolve_type(spec)?;
                if *is {
                    let Some(item) = singleton(&input, "is")? else {
                        return Ok(Vec::new());
                    };
                    Ok(vec![Item::Boolean(types::item_is(item, &type_ref, false))])
                } else {
                    // The `as` operator filters (R4 search parameters apply it to
                    // collections: `Observation.component.value as Quantity`).
                    Ok(input
                        .into_iter()
                        .filter(|item| types::item_is(item, &type_ref, true))
                        .collect())
                }
            }
            Expr::TypeName(spec) => Err(EvalError::Type(format!(
                "type name {} used as a value",
                spec.name
            ))),
        }
    }

    fn variable(&self, name: &str) -> Result<Collection<'a>, EvalError> {
        if let Some(items) = self.env.variables.get(name) {
            return Ok(items.clone());
        }
        let text = match name {
            "context" => return Ok(vec![self.context.clone()]),
            "resource" => {
                return Ok(vec![
                    self.env
                        .resource
                        .map_or_else(|| self.context.clone(), Item::from_json),
                ]);
            }
            "rootResource" => {
                return Ok(vec![
                    self.env
                        .root_resource
                        .or(self.env.resource)
                        .map_or_else(|| self.context.clone(), Item::from_json),
                ]);
            }
            "ucum" => types::UCUM_URL.to_string(),
            "sct" => "http://snomed.info/sct".to_string(),
            "loinc" => "http://loinc.org".to_string(),
            _ => {
                if let Some(rest) = name.strip_prefix("vs-") {
                    format!("http://hl7.org/fhir/ValueSet/{rest}")
                } else if let Some(rest) = name.strip_prefix("ext-") {
                    format!("http://hl7.org/fhir/StructureDefinition/{rest}")
                } else {
                    return Err(EvalError::UndefinedVariable(name.to_string()));
                }
            }
        };
        Ok(vec![Item::String(Arc::from(text))])
    }

    fn member(
        &self,
        item: &Item<'a>,
        name: &str,
        out: &mut Collection<'a>,
    ) -> Result<Lookup, EvalError> {
        match item {
            Item::Node(node) => {
                if name.starts_with(|c: char| c.is_ascii_uppercase()) {
                    // A type name: `Patient.name` on a Patient.
                    if types::derives_from(node.type_name, name, false) {
                        out.push(item.clone());
                        return Ok(Lookup::Known);
                    }
                    return Ok(if node.is_resource() {
                        Lookup::Unknown
                    } else {
                        Lookup::Untyped
                    });
                }
                types::children_named(node, name, self.strict(), out)
            }
            Item::TypeInfo(info) => {
                match name {
                    "namespace" => out.push(Item::String(Arc::from(info.namespace))),
                    "name" => out.push(Item::String(info.name.clone())),
                    _ => {}
                }
                Ok(Lookup::Untyped)
            }
            _ => Ok(Lookup::Untyped),
        }
    }

    fn binary(
        &mut self,
        op: BinaryOp,
        left: &Expr,
        right: &Expr,
        scope: &Scope<'_, 'a>,
    ) -> Result<Collection<'a>, EvalError> {
        match op {
            BinaryOp::And | BinaryOp::Or | BinaryOp::Implies => {
                let l = to_boolean(&self.eval(left, scope)?)?;
                // Short-circuit where the left side decides.
                match (op, l) {
                    (BinaryOp::And, Some(false)) => return Ok(vec![Item::Boolean(false)]),
                    (BinaryOp::Or, Some(true)) => return Ok(vec![Item::Boolean(true)]),
                    (BinaryOp::Implies, Some(false)) => return Ok(vec![Item::Boolean(true)]),
                    _ => {}
                }
                let r = to_boolean(&self.eval(right, scope)?)?;
                let result = match op {
                    BinaryOp::And => match (l, r) {
                        (_, Some(false)) => Some(false),
                        (Some(true), Some(true)) => Some(true),
                        _ => None,
                    },
                    BinaryOp::Or => match (l, r) {
                        (_, Some(true)) => Some(true),
                        (Some(false), Some(false)) => Some(false),
                        _ => None,
                    },
                    _ => match (l, r) {
                        (_, Some(true)) => Some(true),
                        (Some(true), Some(false)) => Some(false),
                        _ => None,
                    },
                };
                Ok(result.map(Item::Boolean).into_iter().collect())
            }
            BinaryOp::Xor => {
                let l = to_boolean(&self.eval(left, scope)?)?;
                let r = to_boolean(&self.eval(right, scope)?)?;
                Ok(match (l, r) {
                    (Some(a), Some(b)) => vec![Item::Boolean(a != b)],
                    _ => Vec::new(),
                })
            }
            _ => {
                let l = self.eval(left, scope)?;
                let r = self.eval(right, scope)?;
                binary_values(op, l, r)
            }
        }
    }
}

pub(crate) fn literal_item<'a>(literal: &Literal) -> Item<'a> {
    match literal {
        Literal::Boolean(b) => Item::Boolean(*b),
        Literal::String(s) => Item::String(s.clone()),
        Literal::Integer(i) => Item::Integer(*i),
        Literal::Decimal(d) => Item::Decimal(*d),
        Literal::Date(d) => Item::Date(*d),
        Literal::DateTime(d) => Item::DateTime(*d),
        Literal::Time(t) => Item::Time(*t),
        Literal::Quantity(q) => Item::Quantity(q.clone()),
    }
}

/// The item of a collection of at most one; an error for more.
pub(crate) fn singleton<'x, 'a>(
    items: &'x [Item<'a>],
    what: &'static str,
) -> Result<Option<&'x Item<'a>>, EvalError> {
    match items {
        [] => Ok(None),
        [item] => Ok(Some(item)),
        _ => Err(EvalError::NotSingleton(what, items.len())),
    }
}

/// A collection as a Boolean under FHIRPath's singleton evaluation: empty is unknown
/// (`None`), one Boolean is itself, one item of another type is `true`, and more than one
/// item is an error.
pub fn to_boolean(items: &[Item<'_>]) -> Result<Option<bool>, EvalError> {
    match singleton(items, "boolean context")? {
        None => Ok(None),
        Some(item) => match item.prim() {
            Some(Prim::Boolean(b)) => Ok(Some(b)),
            _ => Ok(Some(true)),
        },
    }
}

fn binary_values<'a>(
    op: BinaryOp,
    left: Collection<'a>,
    right: Collection<'a>,
) -> Result<Collection<'a>, EvalError> {
    let boolean =
        |value: Option<bool>| -> Collection<'a> { value.map(Item::Boolean).into_iter().collect() };
    match op {
        BinaryOp::Union => Ok(union(left, right)),
        BinaryOp::Equal | BinaryOp::NotEqual => {
            if left.is_empty() || right.is_empty() {
                return Ok(Vec::new());
            }
            let equal = collections_equal(&left, &right);
            Ok(boolean(if op == BinaryOp::Equal {
                equal
            } else {
                equal.map(|e| !e)
            }))
        }
        BinaryOp::Equivalent | BinaryOp::NotEquivalent => {
            let equivalent = collections_equivalent(&left, &right)?;
            Ok(boolean(Some(if op == BinaryOp::Equivalent {
                equivalent
            } else {
                !equivalent
            })))
        }
        BinaryOp::Less | BinaryOp::Greater | BinaryOp::LessOrEqual | BinaryOp::GreaterOrEqual => {
            let (Some(a), Some(b)) = (
                singleton(&left, "comparison")?,
                singleton(&right, "comparison")?,
            ) else {
                return Ok(Vec::new());
            };
            let ordering = compare_items(a, b)?;
            Ok(boolean(ordering.map(|o| match op {
                BinaryOp::Less => o == Ordering::Less,
                BinaryOp::Greater => o == Ordering::Greater,
                BinaryOp::LessOrEqual => o != Ordering::Greater,
                _ => o != Ordering::Less,
            })))
        }
        BinaryOp::In | BinaryOp::Contains => {
            let (needle, haystack) = if op == BinaryOp::In {
                (left, right)
            } else {
                (right, left)
            };
            let Some(needle) = singleton(&needle, "membership")? else {
                return Ok(Vec::new());
            };
            Ok(vec![Item::Boolean(
                haystack
                    .iter()
                    .any(|item| items_equal(needle, item) == Some(true)),
            )])
        }
        BinaryOp::Concatenate => {
            let a = singleton(&left, "&")?;
            let b = singleton(&right, "&")?;
            let text = |item: Option<&Item<'_>>| -> Result<String, EvalError> {
                match item {
                    None => Ok(String::new()),
                    Some(item) => match item.prim() {
                        Some(Prim::String(s)) => Ok(s.to_string()),
                        _ => item
                            .to_fhirpath_string()
                            .ok_or_else(|| EvalError::Type("& needs strings".into())),
                    },
                }
            };
            let joined = text(a)? + &text(b)?;
            if joined.len() > MAX_STRING_BYTES {
                return Err(EvalError::TooLarge);
            }
            Ok(vec![Item::String(Arc::from(joined))])
        }
        _ => {
            let (Some(a), Some(b)) = (
                singleton(&left, "arithmetic")?,
                singleton(&right, "arithmetic")?,
            ) else {
                return Ok(Vec::new());
            };
            Ok(arithmetic(op, a, b)?.into_iter().collect())
        }
    }
}

/// `|` and `union()`: both collections with duplicates removed.
pub(crate) fn union<'a>(left: Collection<'a>, right: Collection<'a>) -> Collection<'a> {
    let mut out: Collection<'a> = Vec::with_capacity(left.len() + right.len());
    let mut seen = crate::set::Seen::by_value();
    for item in left.into_iter().chain(right) {
        if !seen.contains(&out, &item) {
            seen.insert(out.len(), &item);
            out.push(item);
        }
    }
    out
}

fn collections_equal(left: &[Item<'_>], right: &[Item<'_>]) -> Option<bool> {
    if left.len() != right.len() {
        return Some(false);
    }
    let mut unknown = false;
    for (a, b) in left.iter().zip(right) {
        match items_equal(a, b) {
            Some(false) => return Some(false),
            None => unknown = true,
            Some(true) => {}
        }
    }
    if unknown { None } else { Some(true) }
}

fn collections_equivalent(left: &[Item<'_>], right: &[Item<'_>]) -> Result<bool, EvalError> {
    if left.len() != right.len() {
        return Ok(false);
    }
    // Equivalence pairs items in any order, by comparing every pair.
    if left.len().saturating_mul(right.len()) > MAX_PAIRWISE_COMPARISONS {
        return Err(EvalError::TooLarge);
    }
    let mut used = vec![false; right.len()];
    'next: for a in left {
        for (i, b) in right.iter().enumerate() {
            if !used[i] && items_equivalent(a, b) {
                used[i] = true;
                continue 'next;
            }
        }
        return Ok(false);
    }
    Ok(true)
}

fn node_json_equal(a: &Node<'_>, b: &Node<'_>) -> bool {
    a.value == b.value && a.extension == b.extension
}

/// FHIRPath `=` on two items: `None` when unknown (dates of different precision,
/// incomparable quantities).
pub(crate) fn items_equal(a: &Item<'_>, b: &Item<'_>) -> Option<bool> {
    match (a.prim(), b.prim()) {
        (Some(x), Some(y)) => prims_equal(&x, &y),
        (None, None) => Some(match (a, b) {
            (Item::Node(x), Item::Node(y)) => node_json_equal(x, y),
            (Item::TypeInfo(x), Item::TypeInfo(y)) => x == y,
            _ => false,
        }),
        _ => Some(false),
    }
}

fn prims_equal(a: &Prim<'_>, b: &Prim<'_>) -> Option<bool> {
    Some(match (a, b) {
        (Prim::Boolean(x), Prim::Boolean(y)) => x == y,
        (Prim::Integer(x), Prim::Integer(y)) => x == y,
        (Prim::Integer(_) | Prim::Decimal(_), Prim::Integer(_) | Prim::Decimal(_)) => {
            as_decimal(a)?.value_eq(&as_decimal(b)?)
        }
        (Prim::String(x), Prim::String(y)) => x == y,
        (Prim::Date(x) | Prim::DateTime(x), Prim::Date(y) | Prim::DateTime(y)) => {
            return x.compare(y).map(|o| o == Ordering::Equal);
        }
        (Prim::Time(x), Prim::Time(y)) => return x.compare(y).map(|o| o == Ordering::Equal),
        (Prim::Quantity(x), Prim::Quantity(y)) => {
            return compare_quantities(x, y).map(|o| o == Ordering::Equal);
        }
        _ => false,
    })
}

fn normalize_whitespace(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// FHIRPath `~` on two items.
pub(crate) fn items_equivalent(a: &Item<'_>, b: &Item<'_>) -> bool {
    match (a.prim(), b.prim()) {
        (Some(x), Some(y)) => match (&x, &y) {
            (Prim::String(s), Prim::String(t)) => {
                normalize_whitespace(s) == normalize_whitespace(t)
            }
            (Prim::Integer(_) | Prim::Decimal(_), Prim::Integer(_) | Prim::Decimal(_)) => {
                match (as_decimal(&x), as_decimal(&y)) {
                    (Some(d), Some(e)) => d.equivalent(&e),
                    _ => false,
                }
            }
            (Prim::Date(d) | Prim::DateTime(d), Prim::Date(e) | Prim::DateTime(e)) => {
                d.equivalent(e)
            }
            (Prim::Time(s), Prim::Time(t)) => s.equivalent(t),
            (Prim::Quantity(q), Prim::Quantity(r)) => quantities_equivalent(q, r),
            _ => prims_equal(&x, &y) == Some(true),
        },
        (None, None) => items_equal(a, b) == Some(true),
        _ => false,
    }
}

pub(crate) fn as_decimal(prim: &Prim<'_>) -> Option<Decimal> {
    match prim {
        Prim::Integer(i) => Some(Decimal::from_i64(*i)),
        Prim::Decimal(d) => Some(*d),
        _ => None,
    }
}

fn canonical_calendar(unit: &str) -> &str {
    match unit {
        "years" => "year",
        "months" => "month",
        "weeks" => "week",
        "days" => "day",
        "hours" => "hour",
        "minutes" => "minute",
        "seconds" => "second",
        "milliseconds" => "millisecond",
        other => other,
    }
}

/// Both quantities in one unit: `(a, b)` values, when they are comparable.
fn common_values(a: &Quantity, b: &Quantity) -> Option<(Decimal, Decimal)> {
    let (ua, ub) = (canonical_calendar(a.unit()), canonical_calendar(b.unit()));
    if ua == ub {
        return Some((a.value(), b.value()));
    }
    let calendar_years = |u: &str| matches!(u, "year" | "month");
    if calendar_years(ua) || calendar_years(ub) {
        // Calendar years and months are not the UCUM `a` and `mo` (which are averages).
        if calendar_years(ua) && calendar_years(ub) {
            let twelve = Decimal::from_i64(12);
            return if ua == "year" {
                Some((a.value().checked_mul(twelve)?, b.value()))
            } else {
                Some((a.value(), b.value().checked_mul(twelve)?))
            };
        }
        return None;
    }
    let (va, da) = crate::ucum::to_base(a.value(), ua)?;
    let (vb, db) = crate::ucum::to_base(b.value(), ub)?;
    (da == db).then_some((va, vb))
}

pub(crate) fn compare_quantities(a: &Quantity, b: &Quantity) -> Option<Ordering> {
    let (x, y) = common_values(a, b)?;
    Some(x.compare(&y))
}

fn quantities_equivalent(a: &Quantity, b: &Quantity) -> bool {
    common_values(a, b).is_some_and(|(x, y)| x.equivalent(&y))
}

/// Ordering of two items for `<` and friends: `None` when unknown, an error for types
/// that cannot be compared.
pub(crate) fn compare_items(a: &Item<'_>, b: &Item<'_>) -> Result<Option<Ordering>, EvalError> {
    let (Some(x), Some(y)) = (a.prim(), b.prim()) else {
        return Err(EvalError::Type(format!(
            "cannot compare {} with {}",
            a.type_name(),
            b.type_name()
        )));
    };
    Ok(match (&x, &y) {
        (Prim::Integer(i), Prim::Integer(j)) => Some(i.cmp(j)),
        (Prim::Integer(_) | Prim::Decimal(_), Prim::Integer(_) | Prim::Decimal(_)) => {
            match (as_decimal(&x), as_decimal(&y)) {
                (Some(d), Some(e)) => Some(d.compare(&e)),
                _ => None,
            }
        }
        (Prim::String(s), Prim::String(t)) => Some(s.cmp(t)),
        (Prim::Date(d) | Prim::DateTime(d), Prim::Date(e) | Prim::DateTime(e)) => d.compare(e),
        (Prim::Time(s), Prim::Time(t)) => s.compare(t),
        (Prim::Quantity(q), Prim::Quantity(r)) => compare_quantities(q, r),
        _ => {
            return Err(EvalError::Type(format!(
                "cannot compare {} with {}",
                x.system_name(),
                y.system_name()
            )));
        }
    })
}

fn compose_unit(a: &str, b: &str, divide: bool) -> String {
    let wrap = |u: &str| {
        if u.contains(['.', '/']) {
            format!("({u})")
        } else {
            u.to_string()
        }
    };
    let a = crate::ucum::calendar_to_ucum(a).unwrap_or(a);
    let b = crate::ucum::calendar_to_ucum(b).unwrap_or(b);
    match (a, b, divide) {
        ("1", b, false) => b.to_string(),
        (a, "1", _) => a.to_string(),
        (a, b, false) => format!("{a}.{}", wrap(b)),
        ("1", b, true) => format!("/{}", wrap(b)),
        (a, b, true) if a == b => "1".to_string(),
        (a, b, true) => format!("{a}/{}", wrap(b)),
    }
}

fn date_add<'a>(
    value: &DateTime,
    is_date: bool,
    quantity: &Quantity,
    negate: bool,
) -> Result<Option<Item<'a>>, EvalError> {
    let Some(unit) = CalendarUnit::from_unit(quantity.unit()) else {
        return Err(EvalError::Type(format!(
            "cannot add '{}' to a date (use a calendar duration)",
            quantity.unit()
        )));
    };
    let Some(mut amount) = quantity.value().truncate(0).to_i64() else {
        return Ok(None);
    };
    if negate {
        amount = -amount;
    }
    Ok(value.add(amount, unit).map(|d| {
        if is_date {
            Item::Date(d)
        } else {
            Item::DateTime(d)
        }
    }))
}

fn arithmetic<'a>(op: BinaryOp, a: &Item<'a>, b: &Item<'a>) -> Result<Option<Item<'a>>, EvalError> {
    let (Some(x), Some(y)) = (a.prim(), b.prim()) else {
        return Err(EvalError::Type("arithmetic needs primitive values".into()));
    };
    let type_error = || {
        EvalError::Type(format!(
            "cannot apply {op:?} to {} and {}",
            x.system_name(),
            y.system_name()
        ))
    };
    Ok(match (op, &x, &y) {
        (BinaryOp::Add, Prim::String(s), Prim::String(t)) => {
            if s.len() + t.len() > MAX_STRING_BYTES {
                return Err(EvalError::TooLarge);
            }
            Some(Item::String(Arc::from(format!("{s}{t}"))))
        }
        (BinaryOp::Add | BinaryOp::Subtract, Prim::Date(d), Prim::Quantity(q)) => {
            date_add(d, true, q, op == BinaryOp::Subtract)?
        }
        (BinaryOp::Add | BinaryOp::Subtract, Prim::DateTime(d), Prim::Quantity(q)) => {
            date_add(d, false, q, op == BinaryOp::Subtract)?
        }
        (BinaryOp::Add | BinaryOp::Subtract, Prim::Time(t), Prim::Quantity(q)) => {
            let unit = CalendarUnit::from_unit(q.unit()).ok_or_else(type_error)?;
            let Some(mut amount) = q.value().truncate(0).to_i64() else {
                return Ok(None);
            };
            if op == BinaryOp::Subtract {
                amount = -amount;
            }
            t.add(amount, unit).map(Item::Time)
        }
        (_, Prim::Integer(i), Prim::Integer(j)) => match op {
            BinaryOp::Add => i.checked_add(*j).map(Item::Integer),
            BinaryOp::Subtract => i.checked_sub(*j).map(Item::Integer),
            BinaryOp::Multiply => i.checked_mul(*j).map(Item::Integer),
            BinaryOp::Divide => Decimal::from_i64(*i)
                .checked_div(Decimal::from_i64(*j))
                .map(Item::Decimal),
            BinaryOp::Div => (*j != 0)
                .then(|| i.checked_div(*j))
                .flatten()
                .map(Item::Integer),
            BinaryOp::Mod => (*j != 0)
                .then(|| i.checked_rem(*j))
                .flatten()
                .map(Item::Integer),
            _ => return Err(type_error()),
        },
        (_, Prim::Integer(_) | Prim::Decimal(_), Prim::Integer(_) | Prim::Decimal(_)) => {
            let (Some(d), Some(e)) = (as_decimal(&x), as_decimal(&y)) else {
                return Ok(None);
            };
            match op {
                BinaryOp::Add => d.checked_add(e).map(Item::Decimal),
                BinaryOp::Subtract => d.checked_sub(e).map(Item::Decimal),
                BinaryOp::Multiply => d.checked_mul(e).map(Item::Decimal),
                BinaryOp::Divide => d.checked_div(e).map(Item::Decimal),
                BinaryOp::Div => d
                    .checked_div_trunc(e)
                    .and_then(|q| q.to_i64())
                    .map(Item::Integer),
                BinaryOp::Mod => d.checked_rem(e).map(Item::Decimal),
                _ => return Err(type_error()),
            }
        }
        (BinaryOp::Add | BinaryOp::Subtract, Prim::Quantity(q), Prim::Quantity(r)) => {
            let converted = if canonical_calendar(q.unit()) == canonical_calendar(r.unit()) {
                Some(r.value())
            } else {
                crate::ucum::convert(r.value(), r.unit(), q.unit())
            };
            let Some(other) = converted else {
                return Ok(None);
            };
            let value = if op == BinaryOp::Add {
                q.value().checked_add(other)
            } else {
                q.value().checked_sub(other)
            };
            value.map(|v| Item::Quantity(q.with_value(v)))
        }
        (BinaryOp::Multiply | BinaryOp::Divide, Prim::Quantity(q), Prim::Quantity(r)) => {
            let divide = op == BinaryOp::Divide;
            let value = if divide {
                q.value().checked_div(r.value())
            } else {
                q.value().checked_mul(r.value())
            };
            value.map(|v| {
                Item::Quantity(Quantity::new(
                    v,
                    Arc::from(compose_unit(q.unit(), r.unit(), divide)),
                ))
            })
        }
        (
            BinaryOp::Multiply | BinaryOp::Divide,
            Prim::Quantity(q),
            Prim::Integer(_) | Prim::Decimal(_),
        ) => {
            let Some(factor) = as_decimal(&y) else {
                return Ok(None);
            };
            let value = if op == BinaryOp::Divide {
                q.value().checked_div(factor)
            } else {
                q.value().checked_mul(factor)
            };
            value.map(|v| Item::Quantity(q.with_value(v)))
        }
        (BinaryOp::Multiply, Prim::Integer(_) | Prim::Decimal(_), Prim::Quantity(q)) => {
            let Some(factor) = as_decimal(&x) else {
                return Ok(None);
            };
            q.value()
                .checked_mul(factor)
                .map(|v| Item::Quantity(q.with_value(v)))
        }
        _ => return Err(type_error()),
    })
}

/// `type()` of one item.
pub(crate) fn type_of(item: &Item<'_>) -> Option<TypeInfo> {
    Some(match item {
        Item::Node(node) => TypeInfo {
            namespace: "FHIR",
            name: Arc::from(node.type_name),
        },
        Item::TypeInfo(_) => return None,
        other => TypeInfo {
            namespace: "System",
            name: Arc::from(other.prim()?.system_name()),
        },
    })
}

/// Whether `item` is of `type_ref` (helper for the function forms).
pub(crate) fn is_type(item: &Item<'_>, type_ref: &TypeRef, exact: bool) -> bool {
    types::item_is(item, type_ref, exact)
}
