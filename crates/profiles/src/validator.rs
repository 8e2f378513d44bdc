//! The walk: a resource against compiled definitions, and the base invariants.

use crate::definition::{Definition, Element, ElementIndex};
use crate::invariants;
use crate::{MAX_DEPTH, MAX_INVARIANT_EVALUATIONS, MAX_ISSUES, ProfileSet, ValidationOptions};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use zorgnet_fhir::model::{ElementKind, r4};
use zorgnet_fhir::{Issue, IssueCode, Severity};
use zorgnet_fhirpath::{Environment, Expression, Item, to_boolean};

/// One value found for an element: its JSON (absent for a primitive that has only
/// extensions), the `_name` companion, the JSON key it stood under, and where it is.
#[derive(Clone)]
struct Found<'a> {
    value: Option<&'a Value>,
    key: String,
    location: String,
}

pub(crate) fn validate(
    set: &ProfileSet,
    resource: &Value,
    profiles: &[&str],
    options: &ValidationOptions,
) -> Vec<Issue> {
    let Some(resource_type) = resource.get("resourceType").and_then(Value::as_str) else {
        return vec![Issue::error(
            IssueCode::Structure,
            "resourceType is missing",
        )];
    };
    let mut run = Run {
        set,
        root: resource,
        issues: Vec::new(),
        nodes: OnceLock::new(),
        evaluations: 0,
        unknown_value_sets: HashSet::new(),
        conformance_depth: 0,
    };
    for url in profiles {
        run.profile(url, resource, resource_type, true);
    }
    if options.declared_profiles {
        for url in declared_profiles(resource) {
            if !profiles.contains(&url) {
                run.profile(url, resource, resource_type, false);
            }
        }
    }
    if options.extensions || options.declared_profiles {
        run.walk_nested(resource, resource_type, 0, options);
    }
    if options.base_invariants {
        run.base_invariants();
    }
    dedupe(run.issues)
}

fn declared_profiles(resource: &Value) -> Vec<&str> {
    resource
        .pointer("/meta/profile")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn dedupe(issues: Vec<Issue>) -> Vec<Issue> {
    let mut seen = HashSet::new();
    issues
        .into_iter()
        .filter(|i| seen.insert((i.diagnostics.clone(), i.expression.clone())))
        .collect()
}

struct Run<'a> {
    set: &'a ProfileSet,
    root: &'a Value,
    issues: Vec<Issue>,
    /// Typed FHIRPath nodes of the document by the address of their JSON.
    nodes: OnceLock<HashMap<usize, Item<'a>>>,
    evaluations: usize,
    unknown_value_sets: HashSet<String>,
    conformance_depth: usize,
}

fn address(value: &Value) -> usize {
    std::ptr::from_ref(value) as usize
}

impl<'a> Run<'a> {
    fn push(&mut self, issue: Issue) {
        if self.issues.len() < MAX_ISSUES {
            self.issues.push(issue);
        }
    }

    /// Checks `resource` (the root or one inside it) against the profile `url`.
    fn profile(&mut self, url: &str, resource: &'a Value, location: &str, named: bool) {
        match self.set.definition(url) {
            Some(Ok(definition)) => {
                let resource_type = resource
                    .get("resourceType")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if definition.type_name != resource_type {
                    self.push(
                        Issue::error(
                            IssueCode::Invalid,
                            format!(
                                "profile {} is a profile on {}, not on {resource_type}",
                                definition.label(),
                                definition.type_name
                            ),
                        )
                        .at(location),
                    );
                    return;
                }
                let found = Found {
                    value: Some(resource),
                    key: String::new(),
                    location: location.to_string(),
                };
                self.value(&definition, 0, &found, 0);
            }
            Some(Err(why)) => self.push(
                Issue::error(
                    IssueCode::NotSupported,
                    format!("profile {url} cannot be used: {why}"),
                )
                .at(location),
            ),
            None if is_core_type_url(url) => {}
            None if named => self.push(
                Issue::error(
                    IssueCode::NotSupported,
                    format!(
                        "profile {url} is not known to this server: load its StructureDefinition"
                    ),
                )
                .at(location),
            ),
            None => self.push(
                Issue::warning(
                    IssueCode::NotSupported,
                    format!(
                        "declared profile {url} is not known to this server and was not checked"
                    ),
                )
                .at(location),
            ),
        }
    }

    /// One value against one element definition: fixed, pattern, binding, invariants, the
    /// profiles of its type, then its children.
    fn value(
        &mut self,
        def: &Arc<Definition>,
        index: ElementIndex,
        found: &Found<'a>,
        depth: usize,
    ) {
        if depth > MAX_DEPTH || self.issues.len() >= MAX_ISSUES {
            return;
        }
        let element = &def.elements[index];
        if let Some(fixed) = &element.fixed {
            let matches = found.value.is_some_and(|v| fixed_equals(fixed, v));
            if !matches {
                self.push(
                    Issue::error(
                        IssueCode::Value,
                        format!(
                            "{} does not have the fixed value {} of element {} in profile {}",
                            shown(found.value),
                            short(fixed),
                            element.id,
                            def.label()
                        ),
                    )
                    .at(&found.location),
                );
            }
        }
        if let Some(pattern) = &element.pattern {
            let matches = found.value.is_some_and(|v| pattern_matches(pattern, v));
            if !matches {
                self.push(
                    Issue::error(
                        IssueCode::Value,
                        format!(
                            "{} does not match the pattern {} of element {} in profile {}",
                            shown(found.value),
                            short(pattern),
                            element.id,
                            def.label()
                        ),
                    )
                    .at(&found.location),
                );
            }
        }
        if element.binding.is_some() {
            self.binding(def, element, found);
        }
        if !element.constraints.is_empty() {
            self.constraints(def, element, found);
        }
        if let Some(Value::Object(object)) = found.value {
            for &child in &element.children {
                let items = gather(object, &def.elements[child], &found.location);
                self.element(def, child, items, &found.location, depth + 1);
            }
        }
        self.type_profiles(def, element, found, depth);
    }

    /// The profiles an element's type names (`HumanName` profiled as nl-core-HumanName,
    /// a contained resource's profile). Extensions are checked where they stand, by URL.
    fn type_profiles(
        &mut self,
        def: &Arc<Definition>,
        element: &Element,
        found: &Found<'a>,
        depth: usize,
    ) {
        let Some(value) = found.value else {
            return;
        };
        let suffix = element
            .choice_stem()
            .and_then(|stem| found.key.strip_prefix(stem));
        for type_ref in &element.types {
            if type_ref.code == "Extension" || type_ref.profiles.is_empty() {
                continue;
            }
            if let Some(suffix) = suffix
                && !suffix.eq_ignore_ascii_case(&type_ref.code)
            {
                continue;
            }
            for url in &type_ref.profiles {
                if is_core_type_url(url) {
                    continue;
                }
                let Some(Ok(profile)) = self.set.definition(url) else {
                    continue;
                };
                if Arc::ptr_eq(&profile, def) && depth > 0 {
                    continue;
                }
                if profile.kind == "resource" {
                    if value.get("resourceType").and_then(Value::as_str)
                        == Some(profile.type_name.as_str())
                    {
                        self.value(&profile, 0, found, depth + 1);
                    }
                } else {
                    self.value(&profile, 0, found, depth + 1);
                }
            }
        }
    }

    /// The values of one element (`items`, all the JSON holds for it) against its
    /// definition: cardinality, types, each value, slices.
    fn element(
        &mut self,
        def: &Arc<Definition>,
        index: ElementIndex,
        items: Vec<Found<'a>>,
        parent: &str,
        depth: usize,
    ) {
        let element = &def.elements[index];
        let count = u32::try_from(items.len()).unwrap_or(u32::MAX);
        let where_ = items
            .first()
            .map_or_else(|| parent.to_string(), |f| f.location.clone());
        let (base_min, base_max) = base_cardinality(&element.path).unwrap_or((0, None));
        if let Some(min) = element.min
            && count < min
            && count >= base_min
        {
            let location = parent.to_string();
            self.push(
                Issue::error(
                    IssueCode::Required,
                    format!(
                        "element {} has {count} value(s); profile {} requires at least {min}",
                        element.id,
                        def.label()
                    ),
                )
                .at(&location),
            );
        }
        if let Some(Some(max)) = element.max
            && count > max
            && base_max.is_none_or(|b| count <= b)
        {
            self.push(
                Issue::error(
                    IssueCode::Structure,
                    if max == 0 {
                        format!(
                            "element {} is not allowed by profile {}",
                            element.id,
                            def.label()
                        )
                    } else {
                        format!(
                            "element {} has {count} values; profile {} allows at most {max}",
                            element.id,
                            def.label()
                        )
                    },
                )
                .at(&where_),
            );
        }
        if let Some(stem) = element.choice_stem()
            && !element.types.is_empty()
        {
            for found in &items {
                let suffix = found.key.strip_prefix(stem).unwrap_or_default();
                if !element
                    .types
                    .iter()
                    .any(|t| t.code.eq_ignore_ascii_case(suffix))
                {
                    let allowed: Vec<&str> =
                        element.types.iter().map(|t| t.code.as_str()).collect();
                    self.push(
                        Issue::error(
                            IssueCode::Structure,
                            format!(
                                "type {suffix} is not allowed for element {} by profile {} \
                                 (allowed: {})",
                                element.id,
                                def.label(),
                                allowed.join(", ")
                            ),
                        )
                        .at(&found.location),
                    );
                }
            }
        }
        for found in &items {
            self.value(def, index, found, depth);
        }
        if !element.slices.is_empty() {
            self.slices(def, index, &items, parent, depth);
        }
    }

    fn slices(
        &mut self,
        def: &Arc<Definition>,
        index: ElementIndex,
        items: &[Found<'a>],
        parent: &str,
        depth: usize,
    ) {
        let element = &def.elements[index];
        let slices = element.slices.clone();
        let mut assigned: Vec<Vec<&Found<'a>>> = vec![Vec::new(); slices.len()];
        let mut unassigned = Vec::new();
        for found in items {
            let slot = slices
                .iter()
                .position(|&slice| self.in_slice(def, index, slice, found, depth));
            match slot {
                Some(slot) => assigned[slot].push(found),
                None => unassigned.push(found),
            }
        }
        for (slot, &slice) in slices.iter().enumerate() {
            let s = &def.elements[slice];
            let count = u32::try_from(assigned[slot].len()).unwrap_or(u32::MAX);
            let name = s.slice_name.clone().unwrap_or_else(|| s.id.clone());
            if let Some(min) = s.min
                && count < min
            {
                self.push(
                    Issue::error(
                        IssueCode::Required,
                        format!(
                            "slice '{name}' of {} has {count} value(s); profile {} requires at \
                             least {min}",
                            element.id,
                            def.label()
                        ),
                    )
                    .at(parent),
                );
            }
            if let Some(Some(max)) = s.max
                && count > max
            {
                self.push(
                    Issue::error(
                        IssueCode::Structure,
                        format!(
                            "slice '{name}' of {} has {count} value(s); profile {} allows at \
                             most {max}",
                            element.id,
                            def.label()
                        ),
                    )
                    .at(&assigned[slot][0].location),
                );
            }
            for found in assigned[slot].clone() {
                self.value(def, slice, found, depth);
            }
        }
        let closed = element
            .slicing
            .as_ref()
            .is_some_and(|s| s.rules == "closed");
        if closed {
            for found in unassigned {
                self.push(
                    Issue::error(
                        IssueCode::Structure,
                        format!(
                            "this value of {} matches none of its slices, and profile {} closes \
                             the slicing",
                            element.id,
                            def.label()
                        ),
                    )
                    .at(&found.location),
                );
            }
        }
    }

    /// Whether `found` belongs to slice `slice` of element `index`.
    fn in_slice(
        &mut self,
        def: &Arc<Definition>,
        index: ElementIndex,
        slice: ElementIndex,
        found: &Found<'a>,
        depth: usize,
    ) -> bool {
        let element = &def.elements[index];
        let s = &def.elements[slice];
        // A type slice of a choice element: `value[x]:valueQuantity`.
        if let Some(stem) = element.choice_stem()
            && let Some(name) = &s.slice_name
            && name.starts_with(stem)
            && name.len() > stem.len()
        {
            return found.key == *name;
        }
        let discriminators: Vec<(String, String)> = match &element.slicing {
            Some(slicing) if !slicing.discriminators.is_empty() => slicing.discriminators.clone(),
            _ if matches!(element.name.as_str(), "extension" | "modifierExtension") => {
                vec![("value".into(), "url".into())]
            }
            _ => Vec::new(),
        };
        if discriminators.is_empty() {
            return self.conforms(def, slice, found, depth);
        }
        for (kind, path) in &discriminators {
            match self.discriminate(def, slice, kind, path, found) {
                Some(true) => {}
                Some(false) => return false,
                None => return self.conforms(def, slice, found, depth),
            }
        }
        true
    }

    /// Whether `found` conforms to slice `slice` (no errors): how a discriminator this
    /// validator cannot read is decided.
    fn conforms(
        &mut self,
        def: &Arc<Definition>,
        slice: ElementIndex,
        found: &Found<'a>,
        depth: usize,
    ) -> bool {
        if self.conformance_depth > 4 {
            return false;
        }
        self.conformance_depth += 1;
        let saved = std::mem::take(&mut self.issues);
        self.value(def, slice, found, depth + 1);
        let errors = self.issues.iter().any(|i| i.severity == Severity::Error);
        self.issues = saved;
        self.conformance_depth -= 1;
        !errors
    }

    /// One discriminator: `Some(matches)`, or `None` when it cannot be read here.
    fn discriminate(
        &mut self,
        def: &Arc<Definition>,
        slice: ElementIndex,
        kind: &str,
        path: &str,
        found: &Found<'a>,
    ) -> Option<bool> {
        let value = found.value?;
        let values = navigate(value, path)?;
        let s = &def.elements[slice];
        let target = find_in_slice(def, slice, path);
        match kind {
            "value" | "pattern" => {
                let (expected, exact) = match target.map(|t| &def.elements[t]) {
                    Some(t) if t.fixed.is_some() => (t.fixed.clone(), true),
                    Some(t) if t.pattern.is_some() => (t.pattern.clone(), false),
                    _ => (None, false),
                };
                let expected = match expected {
                    Some(e) => Some((e, exact)),
                    // An extension slice names its URL through its type's profile.
                    None if path == "url" => s
                        .types
                        .iter()
                        .find(|t| t.code == "Extension")
                        .and_then(|t| t.profiles.first())
                        .map(|p| (Value::String(p.clone()), true)),
                    None => None,
                };
                if let Some((expected, exact)) = expected {
                    return Some(values.iter().any(|v| {
                        if exact {
                            fixed_equals(&expected, v)
                        } else {
                            pattern_matches(&expected, v)
                        }
                    }));
                }
                // A required binding can discriminate too.
                let binding = target
                    .map(|t| &def.elements[t])
                    .and_then(|t| t.binding.as_ref())
                    .filter(|b| b.strength == "required")?;
                let expansion = self.set.expansion(&binding.value_set)?;
                let mut any_in = false;
                for v in &values {
                    for (system, code) in codes_of(v) {
                        match expansion.contains(system, code) {
                            Some(true) => any_in = true,
                            None => return None,
                            Some(false) => {}
                        }
                    }
                }
                Some(any_in)
            }
            "exists" => {
                let t = &def.elements[target?];
                let expected = if t.min.is_some_and(|m| m >= 1) {
                    true
                } else if t.max == Some(Some(0)) {
                    false
                } else {
                    return None;
                };
                Some(values.is_empty() != expected)
            }
            "type" => {
                let t = &def.elements[target?];
                if t.types.is_empty() {
                    return None;
                }
                if path == "$this" {
                    if let Some(resource_type) = value.get("resourceType").and_then(Value::as_str) {
                        return Some(t.types.iter().any(|ty| ty.code == resource_type));
                    }
                    // A slice has its sliced element's path, so its stem too.
                    let stem = def.elements[slice].choice_stem();
                    let suffix = stem.and_then(|s| found.key.strip_prefix(s))?;
                    return Some(
                        t.types
                            .iter()
                            .any(|ty| ty.code.eq_ignore_ascii_case(suffix)),
                    );
                }
                let types: Vec<&str> = values
                    .iter()
                    .filter_map(|v| v.get("resourceType").and_then(Value::as_str))
                    .collect();
                if types.len() != values.len() || types.is_empty() {
                    return None;
                }
                Some(types.iter().any(|ty| t.types.iter().any(|x| x.code == *ty)))
            }
            _ => None,
        }
    }

    fn binding(&mut self, def: &Arc<Definition>, element: &Element, found: &Found<'a>) {
        let Some(binding) = &element.binding else {
            return;
        };
        let required = match binding.strength.as_str() {
            "required" => true,
            "extensible" => false,
            _ => return,
        };
        let Some(value) = found.value else {
            return;
        };
        let Some(expansion) = self.set.expansion(&binding.value_set) else {
            if self.unknown_value_sets.insert(binding.value_set.clone()) {
                self.push(
                    Issue::information(format!(
                        "value set {} (bound to {} in profile {}) is not known to this server; \
                         codes bound to it were not checked",
                        binding.value_set,
                        element.id,
                        def.label()
                    ))
                    .at(&found.location),
                );
            }
            return;
        };
        let codes = codes_of(value);
        let is_concept = value.get("coding").is_some() || value.get("text").is_some();
        if codes.is_empty() {
            if required && is_concept && value.get("coding").is_none() {
                self.push(
                    Issue::error(
                        IssueCode::CodeInvalid,
                        format!(
                            "no code given for element {}, which profile {} binds (required) to \
                             {}",
                            element.id,
                            def.label(),
                            binding.value_set
                        ),
                    )
                    .at(&found.location),
                );
            }
            return;
        }
        let mut decided_out = 0;
        for (system, code) in &codes {
            match expansion.contains(*system, code) {
                Some(true) | None => return,
                Some(false) => decided_out += 1,
            }
        }
        if decided_out == 0 {
            return;
        }
        let shown_codes: Vec<String> = codes
            .iter()
            .map(|(s, c)| match s {
                Some(s) => format!("{s}|{c}"),
                None => (*c).to_string(),
            })
            .collect();
        let message = format!(
            "{} is not in the value set {} that profile {} binds element {} to ({})",
            shown_codes.join(", "),
            binding.value_set,
            def.label(),
            element.id,
            binding.strength
        );
        let issue = if required {
            Issue::error(IssueCode::CodeInvalid, message)
        } else {
            Issue::warning(IssueCode::CodeInvalid, message)
        };
        self.push(issue.at(&found.location));
    }

    fn constraints(&mut self, def: &Arc<Definition>, element: &Element, found: &Found<'a>) {
        let Some(value) = found.value else {
            return;
        };
        let base = invariants::base();
        for constraint in &element.constraints {
            if constraint.key == "ele-1"
                || base.expressions.get(&constraint.key) == Some(&constraint.source_text)
            {
                continue;
            }
            let expression = match &constraint.expression {
                Ok(e) => e,
                Err(why) => {
                    self.push(
                        Issue::warning(
                            IssueCode::NotSupported,
                            format!(
                                "invariant {} of element {} in profile {} could not be read: {why}",
                                constraint.key,
                                element.id,
                                def.label()
                            ),
                        )
                        .at(&found.location),
                    );
                    continue;
                }
            };
            let item = self.node(value);
            let outcome = self.evaluate(expression, item, self.root);
            let label = format!(
                "invariant {} of element {} in profile {}",
                constraint.key,
                element.id,
                def.label()
            );
            self.report_invariant(
                outcome,
                &label,
                &constraint.human,
                constraint.error,
                &found.location,
            );
        }
    }

    fn report_invariant(
        &mut self,
        outcome: Option<Result<Option<bool>, String>>,
        label: &str,
        human: &str,
        error: bool,
        location: &str,
    ) {
        match outcome {
            None => {}
            Some(Ok(Some(false))) => {
                let message = format!("{label} failed: {human}");
                let issue = if error {
                    Issue::error(IssueCode::Invariant, message)
                } else {
                    Issue::warning(IssueCode::Invariant, message)
                };
                self.push(issue.at(location));
            }
            Some(Ok(_)) => {}
            Some(Err(why)) => self.push(
                Issue::warning(
                    IssueCode::Processing,
                    format!("{label} could not be evaluated: {why}"),
                )
                .at(location),
            ),
        }
    }

    /// Evaluates an invariant on an item; `None` when the evaluation budget is spent.
    fn evaluate(
        &mut self,
        expression: &Expression,
        item: Item<'a>,
        resource: &'a Value,
    ) -> Option<Result<Option<bool>, String>> {
        if self.evaluations >= MAX_INVARIANT_EVALUATIONS {
            if self.evaluations == MAX_INVARIANT_EVALUATIONS {
                self.evaluations += 1;
                self.push(Issue::warning(
                    IssueCode::TooCostly,
                    format!(
                        "invariants not all evaluated: more than MAX_INVARIANT_EVALUATIONS \
                         ({MAX_INVARIANT_EVALUATIONS}) in one resource"
                    ),
                ));
            }
            return None;
        }
        self.evaluations += 1;
        let env = Environment::new()
            .with_resource(resource)
            .with_root_resource(self.root);
        Some(
            expression
                .evaluate_item(item, &env)
                .map_err(|e| e.to_string())
                .and_then(|items| to_boolean(&items).map_err(|e| e.to_string())),
        )
    }

    /// The typed node of a value in the document.
    fn node(&self, value: &'a Value) -> Item<'a> {
        self.nodes()
            .get(&address(value))
            .cloned()
            .unwrap_or_else(|| Item::from_json(value))
    }

    fn nodes(&self) -> &HashMap<usize, Item<'a>> {
        let root = self.root;
        self.nodes.get_or_init(|| {
            let mut map = HashMap::new();
            map.insert(address(root), Item::from_json(root));
            static DESCENDANTS: OnceLock<Option<Expression>> = OnceLock::new();
            let descendants = DESCENDANTS.get_or_init(|| Expression::parse("descendants()").ok());
            if let Some(Ok(items)) = descendants.as_ref().map(|d| d.evaluate(root)) {
                for item in items {
                    if let Some(json) = item.as_node().and_then(|n| n.json()) {
                        map.entry(address(json)).or_insert(item);
                    }
                }
            }
            map
        })
    }

    /// The base R4 invariants, on every resource and datatype in the document.
    fn base_invariants(&mut self) {
        let table = invariants::base();
        let root = self.root;
        let mut targets: Vec<(Item<'a>, &'a Value)> = Vec::new();
        let nodes: Vec<Item<'a>> = self.nodes().values().cloned().collect();
        for item in nodes {
            let Some(node) = item.as_node() else {
                continue;
            };
            if !table.by_type.contains_key(node.type_name()) {
                continue;
            }
            let Some(json) = node.json() else {
                continue;
            };
            let resource = if node.is_resource() { json } else { root };
            targets.push((item, resource));
        }
        // A stable order: by location.
        let mut located: Vec<(String, Item<'a>, &'a Value)> = targets
            .into_iter()
            .map(|(item, resource)| {
                let location = item
                    .as_node()
                    .and_then(|n| n.json())
                    .and_then(|j| locate(root, j))
                    .unwrap_or_default();
                (location, item, resource)
            })
            .collect();
        located.sort_by(|a, b| a.0.cmp(&b.0));
        for (location, item, resource) in located {
            let type_name = item.type_name().to_string();
            let Some(constraints) = table.by_type.get(&type_name) else {
                continue;
            };
            for constraint in constraints {
                let Ok(expression) = &constraint.expression else {
                    continue;
                };
                let env = Environment::new()
                    .with_resource(resource)
                    .with_root_resource(root);
                let on: Vec<Item<'a>> = match &constraint.relative_path {
                    None => vec![item.clone()],
                    Some(path) => match path.evaluate_item(item.clone(), &env) {
                        Ok(found) => found,
                        Err(_) => continue,
                    },
                };
                for target in on {
                    let place = target
                        .as_node()
                        .and_then(|n| n.json())
                        .and_then(|j| locate(root, j))
                        .unwrap_or_else(|| location.clone());
                    let outcome = self.evaluate(expression, target, resource);
                    let label = format!("invariant {} ({})", constraint.key, constraint.path);
                    self.report_invariant(
                        outcome,
                        &label,
                        &constraint.human,
                        constraint.error,
                        &place,
                    );
                }
            }
        }
    }

    /// Extensions whose definitions are loaded, and the declared profiles of resources
    /// inside the document (contained, Bundle entries, Parameters).
    fn walk_nested(
        &mut self,
        value: &'a Value,
        location: &str,
        depth: usize,
        options: &ValidationOptions,
    ) {
        if depth > MAX_DEPTH || self.issues.len() >= MAX_ISSUES {
            return;
        }
        match value {
            Value::Object(object) => {
                if depth > 0 && options.declared_profiles && object.contains_key("resourceType") {
                    for url in declared_profiles(value) {
                        self.profile(url, value, location, false);
                    }
                }
                for (key, child) in object {
                    let here = format!("{location}.{key}");
                    let bare = key.strip_prefix('_').unwrap_or(key);
                    if options.extensions
                        && matches!(bare, "extension" | "modifierExtension")
                        && let Value::Array(extensions) = child
                    {
                        for (i, extension) in extensions.iter().enumerate() {
                            self.extension(extension, &format!("{here}[{i}]"), depth);
                        }
                    }
                    self.walk_nested(child, &here, depth + 1, options);
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.walk_nested(item, &format!("{location}[{i}]"), depth + 1, options);
                }
            }
            _ => {}
        }
    }

    fn extension(&mut self, extension: &'a Value, location: &str, depth: usize) {
        let Some(url) = extension.get("url").and_then(Value::as_str) else {
            return;
        };
        let Some(Ok(definition)) = self.set.definition(url) else {
            return;
        };
        if definition.type_name != "Extension" {
            return;
        }
        let found = Found {
            value: Some(extension),
            key: "extension".into(),
            location: location.to_string(),
        };
        self.value(&definition, 0, &found, depth);
    }
}

fn is_core_type_url(url: &str) -> bool {
    url.strip_prefix("http://hl7.org/fhir/StructureDefinition/")
        .is_some_and(|t| r4().types.contains_key(t))
}

/// The values in `object` for element `element`: the JSON keys it may stand under (a choice
/// element's typed keys), arrays flattened, primitives with only `_name` extensions counted.
fn gather<'a>(object: &'a Map<String, Value>, element: &Element, location: &str) -> Vec<Found<'a>> {
    let keys: Vec<&String> = match element.choice_stem() {
        Some(stem) => object
            .keys()
            .filter(|k| {
                let k = k.strip_prefix('_').unwrap_or(k);
                k.strip_prefix(stem).is_some_and(is_type_suffix)
            })
            .collect(),
        None => object
            .keys()
            .filter(|k| k.strip_prefix('_').unwrap_or(k) == element.name)
            .collect(),
    };
    let mut bare: Vec<&str> = keys
        .iter()
        .map(|k| k.strip_prefix('_').unwrap_or(k))
        .collect();
    bare.sort_unstable();
    bare.dedup();
    let mut found = Vec::new();
    for key in bare {
        let value = object.get(key);
        let extension = object.get(&format!("_{key}"));
        let here = format!("{location}.{key}");
        match (value, extension) {
            (Some(Value::Array(items)), _) => {
                for (i, item) in items.iter().enumerate() {
                    found.push(Found {
                        value: (!item.is_null()).then_some(item),
                        key: key.to_string(),
                        location: format!("{here}[{i}]"),
                    });
                }
            }
            (Some(value), _) => found.push(Found {
                value: Some(value),
                key: key.to_string(),
                location: here,
            }),
            (None, Some(Value::Array(items))) => {
                for i in 0..items.len() {
                    found.push(Found {
                        value: None,
                        key: key.to_string(),
                        location: format!("{here}[{i}]"),
                    });
                }
            }
            (None, Some(_)) => found.push(Found {
                value: None,
                key: key.to_string(),
                location: here,
            }),
            (None, None) => {}
        }
    }
    found
}

/// Whether `rest` (after a choice element's stem) names a FHIR type: `Quantity`, `String`.
fn is_type_suffix(rest: &str) -> bool {
    if !rest.starts_with(|c: char| c.is_ascii_uppercase()) {
        return false;
    }
    let types = &r4().types;
    if types.contains_key(rest) {
        return true;
    }
    let mut lower = rest.to_string();
    if let Some(first) = lower.get_mut(0..1) {
        first.make_ascii_lowercase();
    }
    types.contains_key(&lower)
}

/// The base cardinality of an element path (`Observation.component.code`) from the R4 model:
/// `(min, max)`, max `None` for `*`. `None` when the model does not know the path.
pub(crate) fn base_cardinality(path: &str) -> Option<(u32, Option<u32>)> {
    let model = r4();
    let mut segments = path.split('.');
    let root = segments.next()?;
    let context = model.types.get(root)?.context?;
    let rest: Vec<&str> = segments.collect();
    if rest.is_empty() {
        return Some((1, Some(1)));
    }
    fn walk(context: usize, rest: &[&str]) -> Option<(u32, Option<u32>)> {
        let model = r4();
        let (first, tail) = rest.split_first()?;
        let rules = model
            .contexts
            .get(context)?
            .keys
            .iter()
            .filter(|(key, rule)| rule.name == *first || key.as_str() == *first);
        for (_, rule) in rules {
            if tail.is_empty() {
                return Some((rule.min, if rule.repeats { None } else { Some(1) }));
            }
            if let ElementKind::Complex(next) = rule.kind
                && let Some(found) = walk(next, tail)
            {
                return Some(found);
            }
        }
        None
    }
    walk(context, &rest)
}

/// The element of slice `slice` at a discriminator path (`code.coding.system`, `$this`,
/// `url`), following child elements.
fn find_in_slice(def: &Definition, slice: ElementIndex, path: &str) -> Option<ElementIndex> {
    if path == "$this" {
        return Some(slice);
    }
    let mut current = slice;
    for segment in split_path(path) {
        if segment == "$this" {
            continue;
        }
        if let Some(url) = extension_argument(&segment) {
            // `extension('url')`: the slice of `extension` naming that URL.
            let extension = *def.elements[current]
                .children
                .iter()
                .find(|&&c| def.elements[c].name == "extension")?;
            current = *def.elements[extension].slices.iter().find(|&&s| {
                let s = &def.elements[s];
                s.types.iter().any(|t| t.profiles.iter().any(|p| p == &url))
                    || s.children.iter().any(|&c| {
                        def.elements[c].name == "url"
                            && def.elements[c].fixed.as_ref().and_then(Value::as_str)
                                == Some(url.as_str())
                    })
            })?;
            continue;
        }
        if segment.contains('(') {
            return None;
        }
        let name = segment.trim_end_matches("[x]");
        current = *def.elements[current].children.iter().find(|&&c| {
            let child = &def.elements[c];
            child.name == segment || child.choice_stem() == Some(name)
        })?;
    }
    Some(current)
}

/// Splits a discriminator path on dots outside parentheses and quotes.
fn split_path(path: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for c in path.chars() {
        match (c, quote) {
            ('\'' | '"', None) => quote = Some(c),
            (q, Some(open)) if q == open => quote = None,
            ('(', None) => depth += 1,
            (')', None) => depth = depth.saturating_sub(1),
            ('.', None) if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts
}

/// `extension('http://x')` → `http://x`.
fn extension_argument(segment: &str) -> Option<String> {
    let inner = segment
        .strip_prefix("extension(")?
        .strip_suffix(')')?
        .trim();
    let unquoted = inner
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))?;
    Some(unquoted.to_string())
}

/// The values at a discriminator path below `value`; `None` for paths this validator does
/// not follow (`resolve()`, `ofType()`).
fn navigate<'a>(value: &'a Value, path: &str) -> Option<Vec<&'a Value>> {
    let mut current = vec![value];
    for segment in split_path(path) {
        if segment == "$this" {
            continue;
        }
        let mut next = Vec::new();
        if let Some(url) = extension_argument(&segment) {
            for v in &current {
                for extension in v
                    .get("extension")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if extension.get("url").and_then(Value::as_str) == Some(url.as_str()) {
                        next.push(extension);
                    }
                }
            }
            current = next;
            continue;
        }
        if segment.contains('(') || segment.is_empty() {
            return None;
        }
        let name = segment.trim_end_matches("[x]");
        for v in &current {
            let Some(object) = v.as_object() else {
                continue;
            };
            let direct = object.get(name);
            let values: Vec<&Value> = match direct {
                Some(found) => vec![found],
                None => object
                    .iter()
                    .filter(|(k, _)| k.strip_prefix(name).is_some_and(is_type_suffix))
                    .map(|(_, v)| v)
                    .collect(),
            };
            for found in values {
                match found {
                    Value::Array(items) => next.extend(items.iter().filter(|i| !i.is_null())),
                    other => next.push(other),
                }
            }
        }
        current = next;
    }
    Some(current)
}

/// The `(system, code)` pairs a value carries: a `code` string, a Coding or Quantity, or the
/// codings of a CodeableConcept.
fn codes_of(value: &Value) -> Vec<(Option<&str>, &str)> {
    match value {
        Value::String(code) => vec![(None, code.as_str())],
        Value::Object(object) => {
            if let Some(codings) = object.get("coding").and_then(Value::as_array) {
                codings
                    .iter()
                    .filter_map(|c| {
                        let code = c.get("code")?.as_str()?;
                        Some((c.get("system").and_then(Value::as_str), code))
                    })
                    .collect()
            } else if let Some(code) = object.get("code").and_then(Value::as_str) {
                vec![(object.get("system").and_then(Value::as_str), code)]
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    }
}

/// Exact equality of JSON (numbers compared by value, `1.0` = `1.00`).
pub(crate) fn fixed_equals(fixed: &Value, value: &Value) -> bool {
    match (fixed, value) {
        (Value::Number(a), Value::Number(b)) => numbers_equal(a, b),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| fixed_equals(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| fixed_equals(v, w)))
        }
        (a, b) => a == b,
    }
}

/// Partial match: every property of the pattern is in the value with a matching value; every
/// item of a pattern array matches some item of the value's array.
pub(crate) fn pattern_matches(pattern: &Value, value: &Value) -> bool {
    match (pattern, value) {
        (Value::Number(a), Value::Number(b)) => numbers_equal(a, b),
        (Value::Object(p), Value::Object(v)) => p
            .iter()
            .all(|(k, pv)| v.get(k).is_some_and(|vv| pattern_matches(pv, vv))),
        (Value::Array(p), Value::Array(v)) => p
            .iter()
            .all(|pi| v.iter().any(|vi| pattern_matches(pi, vi))),
        (Value::Array(p), single) => p.iter().all(|pi| pattern_matches(pi, single)),
        (a, b) => a == b,
    }
}

fn numbers_equal(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    normalise_number(&a.to_string()) == normalise_number(&b.to_string())
}

fn normalise_number(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    if lower.contains('e') {
        return lower
            .parse::<f64>()
            .map_or(lower.clone(), |f| f.to_string());
    }
    match lower.split_once('.') {
        Some((int, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                int.to_string()
            } else {
                format!("{int}.{frac}")
            }
        }
        None => lower,
    }
}

fn short(value: &Value) -> String {
    const MAX_SHOWN_CHARS: usize = 80;
    let text = value.to_string();
    if text.chars().count() > MAX_SHOWN_CHARS {
        let cut: String = text.chars().take(MAX_SHOWN_CHARS).collect();
        format!("{cut}…")
    } else {
        text
    }
}

fn shown(value: Option<&Value>) -> String {
    match value {
        Some(v) => format!("the value {}", short(v)),
        None => "a value with only extensions".into(),
    }
}

/// Where in the document a value is (`Patient.contact[0].name`), found by its address.
fn locate(root: &Value, target: &Value) -> Option<String> {
    let name = root
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut path = name.to_string();
    fn walk(value: &Value, target: usize, path: &mut String, depth: usize) -> bool {
        if address(value) == target {
            return true;
        }
        if depth > MAX_DEPTH {
            return false;
        }
        match value {
            Value::Object(object) => {
                for (key, child) in object {
                    let mark = path.len();
                    path.push('.');
                    path.push_str(key);
                    if walk(child, target, path, depth + 1) {
                        return true;
                    }
                    path.truncate(mark);
                }
                false
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    let mark = path.len();
                    path.push_str(&format!("[{i}]"));
                    if walk(child, target, path, depth + 1) {
                        return true;
                    }
                    path.truncate(mark);
                }
                false
            }
            _ => false,
        }
    }
    walk(root, address(target), &mut path, 0).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patterns_match_partially_and_fixed_exactly() {
        let pattern = json!({"coding": [{"system": "http://loinc.org", "code": "8480-6"}]});
        let value = json!({"coding": [{"system": "x", "code": "y"}, {"system": "http://loinc.org", "code": "8480-6", "display": "S"}], "text": "t"});
        assert!(pattern_matches(&pattern, &value));
        assert!(!fixed_equals(&pattern, &value));
        assert!(fixed_equals(&json!(1.0), &json!(1.00)));
        assert!(!pattern_matches(&json!({"a": 1}), &json!({"b": 1})));
    }

    #[test]
    fn navigation_follows_choices_and_extensions() {
        let value =
            json!({"valueQuantity": {"value": 1}, "extension": [{"url": "u", "valueString": "x"}]});
        assert_eq!(navigate(&value, "value.value").unwrap(), vec![&json!(1)]);
        assert_eq!(
            navigate(&value, "extension('u').value").unwrap(),
            vec![&json!("x")]
        );
        assert!(navigate(&value, "resolve()").is_none());
    }

    #[test]
    fn base_cardinality_from_the_model() {
        assert_eq!(base_cardinality("Observation.status"), Some((1, Some(1))));
        assert_eq!(
            base_cardinality("Observation.component.code"),
            Some((1, Some(1)))
        );
        assert_eq!(base_cardinality("Observation.code.coding"), Some((0, None)));
        assert_eq!(base_cardinality("Observation.value[x]"), Some((0, Some(1))));
        assert_eq!(base_cardinality("Extension.url"), Some((1, Some(1))));
    }
}
