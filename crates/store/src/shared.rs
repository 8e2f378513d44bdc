//! Which search parameters share index rows with others.
//!
//! Many R4 parameters index values that another parameter of the same resource type already
//! indexes: `Observation.patient` is `Observation.subject` narrowed to Patients
//! (`where(resolve() is Patient)`), `Encounter.practitioner` is `Encounter.participant`
//! narrowed to Practitioners, `Observation.combo-code` is `code` and `component-code`
//! together. Such a parameter gets no index rows of its own: a search on it reads the rows
//! of the parameters it is made of, narrowed to its target type where its expression narrows.
//! This is decided from the compiled expressions alone, so it holds for custom parameters
//! too, and it needs no change to stored data: rows an older version wrote for a sharing
//! parameter are simply no longer read.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use zorgnet_fhir::search::{CompiledPath, ParamType, SearchParam, SearchRegistry};

/// The rows a sharing parameter reads: those of the parameters `codes` (which have rows of
/// their own), and of them only references to `target_type` when that is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sharing {
    pub codes: Vec<String>,
    pub target_type: Option<String>,
}

/// Every parameter of `registry` that shares rows, by resource type and code.
pub(crate) fn sharing(registry: &SearchRegistry) -> HashMap<String, HashMap<String, Sharing>> {
    let mut by_type: HashMap<&str, Vec<&Arc<SearchParam>>> = HashMap::new();
    for param in registry.all_params() {
        by_type
            .entry(param.resource_type.as_str())
            .or_default()
            .push(param);
    }
    by_type
        .into_iter()
        .map(|(resource_type, params)| (resource_type.to_string(), sharing_of_type(params)))
        .filter(|(_, shared)| !shared.is_empty())
        .collect()
}

/// The single type every path narrows references to, when every path narrows to one.
fn narrowed_to(param: &SearchParam) -> Option<&str> {
    let first = param.paths.first()?.reference_type.as_deref()?;
    param
        .paths
        .iter()
        .all(|p| p.reference_type.as_deref() == Some(first))
        .then_some(first)
}

fn plain(param: &SearchParam) -> bool {
    param.paths.iter().all(|p| p.reference_type.is_none())
}

/// Whether a reference parameter with `targets` indexes references to `target_type`.
fn admits(targets: &[String], target_type: &str) -> bool {
    targets.is_empty() || targets.iter().any(|t| t == target_type || t == "Resource")
}

fn path_set(param: &SearchParam) -> BTreeSet<&CompiledPath> {
    param.paths.iter().collect()
}

fn sharing_of_type(mut params: Vec<&Arc<SearchParam>>) -> HashMap<String, Sharing> {
    let mut shared: HashMap<String, Sharing> = HashMap::new();
    // Plain parameters that are unions of others: a parameter may only lean on those seen
    // before it, with fewer paths (or as many, and a smaller code), that keep their own rows.
    params.sort_by(|a, b| (a.paths.len(), &a.code).cmp(&(b.paths.len(), &b.code)));
    let mut owners: Vec<&Arc<SearchParam>> = Vec::new();
    for param in params.iter().filter(|p| plain(p)) {
        let wanted = path_set(param);
        let mut covered = BTreeSet::new();
        let mut codes = Vec::new();
        let mut candidates: Vec<&&Arc<SearchParam>> = owners
            .iter()
            .filter(|o| {
                o.param_type == param.param_type
                    && (o.param_type != ParamType::Reference || o.targets == param.targets)
                    && path_set(o).is_subset(&wanted)
            })
            .collect();
        candidates.sort_by(|a, b| (b.paths.len(), &a.code).cmp(&(a.paths.len(), &b.code)));
        for candidate in candidates {
            let paths = path_set(candidate);
            if !paths.is_subset(&covered) {
                covered.extend(paths);
                codes.push(candidate.code.clone());
            }
        }
        if !codes.is_empty() && covered == wanted {
            shared.insert(
                param.code.clone(),
                Sharing {
                    codes,
                    target_type: None,
                },
            );
        } else {
            owners.push(param);
        }
    }
    // Reference parameters narrowed to one type: the plain parameter with the same paths,
    // filtered on that type.
    for param in &params {
        let Some(target_type) = narrowed_to(param) else {
            continue;
        };
        if !admits(&param.targets, target_type) {
            continue;
        }
        let unnarrowed: Vec<CompiledPath> = param
            .paths
            .iter()
            .map(|p| CompiledPath {
                reference_type: None,
                ..p.clone()
            })
            .collect();
        let wanted: BTreeSet<&CompiledPath> = unnarrowed.iter().collect();
        let base = params.iter().find(|q| {
            q.param_type == ParamType::Reference
                && plain(q)
                && admits(&q.targets, target_type)
                && path_set(q) == wanted
        });
        if let Some(base) = base {
            let codes = match shared.get(&base.code) {
                Some(base_sharing) => base_sharing.codes.clone(),
                None => vec![base.code.clone()],
            };
            shared.insert(
                param.code.clone(),
                Sharing {
                    codes,
                    target_type: Some(target_type.to_string()),
                },
            );
        }
    }
    shared
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sharing_of(resource_type: &str, code: &str) -> Option<Sharing> {
        sharing(&SearchRegistry::r4())
            .get(resource_type)
            .and_then(|m| m.get(code))
            .cloned()
    }

    #[test]
    fn r4_parameters_that_repeat_others_share_their_rows() {
        let narrowed = |codes: &[&str], target: &str| {
            Some(Sharing {
                codes: codes.iter().map(|c| c.to_string()).collect(),
                target_type: Some(target.to_string()),
            })
        };
        assert_eq!(
            sharing_of("Observation", "patient"),
            narrowed(&["subject"], "Patient")
        );
        assert_eq!(
            sharing_of("Encounter", "practitioner"),
            narrowed(&["participant"], "Practitioner")
        );
        assert_eq!(
            sharing_of("Observation", "combo-code"),
            Some(Sharing {
                codes: vec!["code".into(), "component-code".into()],
                target_type: None
            })
        );
        // Parameters with their own values keep their rows.
        for (resource_type, code) in [
            ("Observation", "subject"),
            ("Observation", "code"),
            ("Patient", "identifier"),
            ("Patient", "name"),
            ("Patient", "family"),
        ] {
            assert_eq!(
                sharing_of(resource_type, code),
                None,
                "{resource_type}.{code}"
            );
        }
    }

    #[test]
    fn every_parameter_shares_only_with_parameters_that_keep_their_rows() {
        let registry = SearchRegistry::r4();
        let all = sharing(&registry);
        let mut count = 0;
        for (resource_type, shared) in &all {
            for (code, sharing) in shared {
                count += 1;
                let param = registry.get(resource_type, code).unwrap();
                for owner in &sharing.codes {
                    assert!(
                        !shared.contains_key(owner),
                        "{resource_type}.{code} → {owner}"
                    );
                    let owner = registry.get(resource_type, owner).unwrap();
                    assert_eq!(owner.param_type, param.param_type);
                }
            }
        }
        // Counted on the R4 definitions: 61, most of them `patient` narrowing `subject`.
        assert!(count >= 50, "only {count} sharing parameters");
    }
}
