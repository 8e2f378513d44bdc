//! The FHIRPath invariants of the base R4 resources and datatypes, embedded from
//! `data/r4-constraints.json` (extracted from the R4 StructureDefinitions by
//! `tools/extract_base_constraints.py`; `ele-1` is left out, as the base validator refuses
//! empty elements itself).

use serde_json::Value;
use std::collections::HashMap;
use std::sync::OnceLock;
use zorgnet_fhirpath::Expression;

const BASE_CONSTRAINTS_JSON: &str = include_str!("../data/r4-constraints.json");

/// One base invariant.
#[derive(Debug)]
pub(crate) struct BaseConstraint {
    /// The path below the type it is declared on (`""` for the type itself, `contact` for
    /// `Patient.contact`), as FHIRPath.
    pub relative_path: Option<Expression>,
    /// The element path as the definitions write it (`Patient.contact`).
    pub path: String,
    pub key: String,
    pub error: bool,
    pub human: String,
    pub expression: Result<Expression, String>,
}

/// The base invariants by type.
#[derive(Debug, Default)]
pub(crate) struct BaseConstraints {
    pub by_type: HashMap<String, Vec<BaseConstraint>>,
    /// Key → expression text, to recognise a base invariant a profile's snapshot repeats.
    pub expressions: HashMap<String, String>,
}

/// The process-wide table, parsed on first use.
pub(crate) fn base() -> &'static BaseConstraints {
    static TABLE: OnceLock<BaseConstraints> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = BaseConstraints::default();
        let Ok(Value::Object(types)) = serde_json::from_str::<Value>(BASE_CONSTRAINTS_JSON) else {
            return table;
        };
        for (type_name, rows) in types {
            let mut list = Vec::new();
            for row in rows.as_array().into_iter().flatten() {
                let Some(
                    [
                        Value::String(path),
                        Value::String(key),
                        Value::String(severity),
                        Value::String(human),
                        Value::String(expression),
                    ],
                ) = row.as_array().map(Vec::as_slice)
                else {
                    continue;
                };
                let relative = path
                    .strip_prefix(&type_name)
                    .and_then(|rest| rest.strip_prefix('.'))
                    .map(|rest| rest.replace("[x]", ""));
                let relative_path = match relative {
                    Some(rest) => match Expression::parse(&rest) {
                        Ok(e) => Some(e),
                        Err(_) => continue,
                    },
                    None if path == &type_name => None,
                    None => continue,
                };
                table.expressions.insert(key.clone(), expression.clone());
                list.push(BaseConstraint {
                    relative_path,
                    path: path.clone(),
                    key: key.clone(),
                    error: severity != "warning",
                    human: human.clone(),
                    expression: Expression::parse(expression).map_err(|e| e.to_string()),
                });
            }
            table.by_type.insert(type_name, list);
        }
        table
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_table_loads_and_parses() {
        let table = base();
        assert!(table.by_type.contains_key("Patient"));
        assert!(table.by_type["Patient"].iter().any(|c| c.key == "pat-1"));
        let total: usize = table.by_type.values().map(Vec::len).sum();
        let failed: Vec<String> = table
            .by_type
            .values()
            .flatten()
            .filter_map(|c| {
                c.expression
                    .as_ref()
                    .err()
                    .map(|e| format!("{}: {e}", c.key))
            })
            .collect();
        assert!(total > 900, "{total}");
        assert!(failed.len() * 50 < total, "{failed:?}");
    }
}
