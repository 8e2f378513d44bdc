//! Value sets the set knows: loaded ValueSets (their `expansion`, or their `compose` over
//! loaded CodeSystems and listed concepts), and the base R4 value sets of required bindings
//! that `zorgnet_fhir`'s model carries.
//!
//! Membership is three-valued: a code is in, out, or cannot be decided (a filter, a code
//! system included whole that the set does not hold): undecided codes pass.

use crate::MAX_VALUE_SET_NESTING;
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// The codes of a value set, as far as they can be known.
#[derive(Debug, Default, Clone)]
pub(crate) struct Expansion {
    /// System → codes listed.
    pub codes: HashMap<String, HashSet<String>>,
    /// Systems whose every code is in, without the set knowing which codes exist.
    pub whole_systems: HashSet<String>,
    /// Systems whose membership cannot be decided (filters, unknown nested value sets).
    pub undecided_systems: HashSet<String>,
    /// True when some part could not be read at all (an unknown nested value set): then a
    /// code of a system not mentioned is undecided too.
    pub incomplete: bool,
}

impl Expansion {
    /// Whether `code` of `system` is in: `None` when undecided.
    pub fn contains(&self, system: Option<&str>, code: &str) -> Option<bool> {
        match system {
            Some(system) => {
                if self.codes.get(system).is_some_and(|c| c.contains(code)) {
                    return Some(true);
                }
                if self.whole_systems.contains(system) || self.undecided_systems.contains(system) {
                    return None;
                }
                if self.incomplete {
                    return None;
                }
                Some(false)
            }
            None => {
                if self.codes.values().any(|c| c.contains(code)) {
                    return Some(true);
                }
                if !self.whole_systems.is_empty()
                    || !self.undecided_systems.is_empty()
                    || self.incomplete
                {
                    return None;
                }
                Some(false)
            }
        }
    }
}

/// The codes of a CodeSystem resource: all its concepts, nested ones included; `None` when
/// its content is not complete.
pub(crate) fn code_system_codes(code_system: &Value) -> Option<HashSet<String>> {
    let content = code_system.get("content").and_then(Value::as_str);
    if !matches!(content, Some("complete") | None) {
        return None;
    }
    let mut codes = HashSet::new();
    fn walk(concepts: Option<&Value>, codes: &mut HashSet<String>, depth: usize) {
        if depth > MAX_VALUE_SET_NESTING {
            return;
        }
        for concept in concepts.and_then(Value::as_array).into_iter().flatten() {
            if let Some(code) = concept.get("code").and_then(Value::as_str) {
                codes.insert(code.to_string());
            }
            walk(concept.get("concept"), codes, depth + 1);
        }
    }
    walk(code_system.get("concept"), &mut codes, 0);
    Some(codes)
}

/// Expands a ValueSet resource. `value_set` and `code_system` look up other loaded ones by
/// canonical URL.
pub(crate) fn expand(
    value_set: &Value,
    lookup_value_set: &dyn Fn(&str) -> Option<Value>,
    lookup_code_system: &dyn Fn(&str) -> Option<HashSet<String>>,
    depth: usize,
) -> Expansion {
    let mut expansion = Expansion::default();
    if depth > MAX_VALUE_SET_NESTING {
        expansion.incomplete = true;
        return expansion;
    }
    if let Some(contains) = value_set.pointer("/expansion/contains") {
        fn walk(contains: &Value, expansion: &mut Expansion, depth: usize) {
            if depth > MAX_VALUE_SET_NESTING {
                return;
            }
            for item in contains.as_array().into_iter().flatten() {
                if let (Some(system), Some(code)) = (
                    item.get("system").and_then(Value::as_str),
                    item.get("code").and_then(Value::as_str),
                ) {
                    expansion
                        .codes
                        .entry(system.to_string())
                        .or_default()
                        .insert(code.to_string());
                }
                if let Some(nested) = item.get("contains") {
                    walk(nested, expansion, depth + 1);
                }
            }
        }
        walk(contains, &mut expansion, 0);
        // An expansion may be paged (`total` larger than what is listed): then undecided.
        let listed: usize = expansion.codes.values().map(HashSet::len).sum();
        if value_set
            .pointer("/expansion/total")
            .and_then(Value::as_u64)
            .is_some_and(|t| t as usize > listed)
        {
            expansion.incomplete = true;
        }
        return expansion;
    }
    let Some(compose) = value_set.get("compose") else {
        expansion.incomplete = true;
        return expansion;
    };
    for include in compose
        .get("include")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let part = include_part(include, lookup_value_set, lookup_code_system, depth);
        merge(&mut expansion, part);
    }
    for exclude in compose
        .get("exclude")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        // Only listed concepts are taken out; anything cleverer makes the system undecided.
        let system = exclude.get("system").and_then(Value::as_str);
        match (system, exclude.get("concept").and_then(Value::as_array)) {
            (Some(system), Some(concepts)) if exclude.get("filter").is_none() => {
                if let Some(codes) = expansion.codes.get_mut(system) {
                    for concept in concepts {
                        if let Some(code) = concept.get("code").and_then(Value::as_str) {
                            codes.remove(code);
                        }
                    }
                }
                if expansion.whole_systems.remove(system) {
                    expansion.undecided_systems.insert(system.to_string());
                }
            }
            (Some(system), _) => {
                expansion.codes.remove(system);
                expansion.whole_systems.remove(system);
                expansion.undecided_systems.insert(system.to_string());
            }
            (None, _) => expansion.incomplete = true,
        }
    }
    expansion
}

fn include_part(
    include: &Value,
    lookup_value_set: &dyn Fn(&str) -> Option<Value>,
    lookup_code_system: &dyn Fn(&str) -> Option<HashSet<String>>,
    depth: usize,
) -> Expansion {
    let mut part = Expansion::default();
    let system = include.get("system").and_then(Value::as_str);
    if let Some(system) = system {
        let concepts = include.get("concept").and_then(Value::as_array);
        let has_filter = include
            .get("filter")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_filter {
            part.undecided_systems.insert(system.to_string());
        } else if let Some(concepts) = concepts {
            let codes = part.codes.entry(system.to_string()).or_default();
            for concept in concepts {
                if let Some(code) = concept.get("code").and_then(Value::as_str) {
                    codes.insert(code.to_string());
                }
            }
        } else {
            match lookup_code_system(system) {
                Some(codes) => {
                    part.codes.insert(system.to_string(), codes);
                }
                None => {
                    part.whole_systems.insert(system.to_string());
                }
            }
        }
    }
    // `valueSet` entries are intersected with the system part (or with each other).
    for url in include
        .get("valueSet")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let nested = match lookup_value_set(url) {
            Some(vs) => expand(&vs, lookup_value_set, lookup_code_system, depth + 1),
            None => Expansion {
                incomplete: true,
                ..Expansion::default()
            },
        };
        if system.is_none() && part.codes.is_empty() && part.whole_systems.is_empty() {
            merge(&mut part, nested);
        } else {
            // An intersection: keep what the system part lists, as undecided when the nested
            // set cannot tell.
            if nested.incomplete {
                part.incomplete = true;
            }
            for (sys, codes) in &mut part.codes {
                if nested.whole_systems.contains(sys) || nested.undecided_systems.contains(sys) {
                    continue;
                }
                let other = nested.codes.get(sys);
                codes.retain(|c| other.is_some_and(|o| o.contains(c)));
            }
        }
    }
    part
}

fn merge(into: &mut Expansion, part: Expansion) {
    for (system, codes) in part.codes {
        into.codes.entry(system).or_default().extend(codes);
    }
    into.whole_systems.extend(part.whole_systems);
    into.undecided_systems.extend(part.undecided_systems);
    into.incomplete |= part.incomplete;
}

/// A base R4 value set from the model, as an expansion.
pub(crate) fn from_model(value_set: &zorgnet_fhir::model::ValueSet) -> Expansion {
    Expansion {
        codes: value_set.codes.clone(),
        ..Expansion::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compose_with_concepts_filters_and_exclusions() {
        let vs = json!({"resourceType": "ValueSet", "compose": {
            "include": [
                {"system": "http://a", "concept": [{"code": "1"}, {"code": "2"}]},
                {"system": "http://b", "filter": [{"property": "x", "op": "=", "value": "y"}]},
                {"system": "http://c"}
            ],
            "exclude": [{"system": "http://a", "concept": [{"code": "2"}]}]
        }});
        let cs = |url: &str| {
            (url == "http://c").then(|| ["z".to_string()].into_iter().collect::<HashSet<_>>())
        };
        let e = expand(&vs, &|_| None, &cs, 0);
        assert_eq!(e.contains(Some("http://a"), "1"), Some(true));
        assert_eq!(e.contains(Some("http://a"), "2"), Some(false));
        assert_eq!(e.contains(Some("http://b"), "q"), None);
        assert_eq!(e.contains(Some("http://c"), "z"), Some(true));
        assert_eq!(e.contains(Some("http://c"), "y"), Some(false));
        assert_eq!(e.contains(Some("http://d"), "1"), Some(false));
        assert_eq!(e.contains(None, "1"), Some(true));
        assert_eq!(e.contains(None, "q"), None);
    }
}
