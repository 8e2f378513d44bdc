//! A TestScript runner for a node: operations run over HTTP, asserts evaluated with the
//! FHIRPath engine, every assert classified as passed, failed, warned (a failing
//! `warningOnly` one) or not evaluable with the reason.
//!
//! Supported: `variable` (`defaultValue`, `expression` and `headerField` on a `sourceId`,
//! evaluated when used; `${name}` substituted in params, urls, headers, expressions and values,
//! and defined as `%name` in FHIRPath), operations of the restful-interaction types search,
//! read, vread, create, update and delete (`resource`, `params`, `url`, `targetId`,
//! `sourceId`, `accept`, `contentType`, `requestHeader`, `encodeRequestUrl`, `responseId`),
//! and asserts with `response`, `responseCode`, `resource`, `contentType`, `headerField`,
//! `expression` (with `value`, `compareToSourceId`/`compareToSourceExpression`), `operator`,
//! `sourceId`, `warningOnly` and `validateProfileId` (through `POST [base]/{Type}/$validate`
//! when the node has it). Not supported (so "not evaluable"): XPath/JSONPath (`path`,
//! `compareToSourcePath`), `minimumId`, `navigationLinks`, `requestURL`, `requestMethod`, and
//! asserts on the request direction.

use crate::mp9::dates;
use crate::support::Node;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::rc::Rc;
use time::Date;
use zorgnet_fhirpath::{Environment, Expression, Item};

/// Why an assert could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum NotEvaluable {
    /// `validateProfileId`, and the node has no `$validate`.
    ProfileValidation,
    /// An assert about the result set of a search whose special parameter (the node stores
    /// but does not evaluate it) the node ignored with a warning: the parameter, and what the
    /// assert gives on the unfiltered result all the same (for information).
    SpecialParameter {
        parameter: String,
        unfiltered: String,
    },
    /// A TestScript feature this runner does not implement.
    Unsupported(String),
}

/// What became of one assert.
#[derive(Debug, Clone)]
pub enum Outcome {
    Passed,
    Failed(String),
    /// A failing `warningOnly` assert: reported, not failed.
    Warned(String),
    NotEvaluable(NotEvaluable),
}

/// One assert's report.
#[derive(Debug, Clone)]
pub struct AssertReport {
    /// 1-based, in the script's order (setup, tests, teardown).
    pub number: usize,
    /// The assert's `label`, `id` or `description`.
    pub label: String,
    pub expression: Option<String>,
    /// The request whose response the assert judged.
    pub request: Option<String>,
    pub outcome: Outcome,
}

/// One script's report.
#[derive(Debug, Clone)]
pub struct ScriptReport {
    pub id: String,
    pub asserts: Vec<AssertReport>,
    /// Things worth saying that are not asserts (parameters the node ignored, ...).
    pub notes: Vec<String>,
}

/// A response kept by the runner.
struct Response {
    request: String,
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
    /// What came back, in a few words (status, total, entries by search mode, paging).
    summary: String,
    /// Special parameters (stored, not evaluated) the node said it ignored.
    ignored_special: Vec<String>,
}

impl Response {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    }
}

/// What an assert or a variable is evaluated on.
enum Source<'s> {
    Response(&'s Response),
    Fixture(&'s Value),
}

impl Source<'_> {
    fn body(&self) -> &Value {
        match self {
            Source::Response(response) => &response.body,
            Source::Fixture(fixture) => fixture,
        }
    }
}

/// Runs TestScripts against one node.
pub struct Runner<'a> {
    pub node: &'a Node,
    /// The test date T (`${CURRENTDATE}`).
    pub today: Date,
    /// Where fixture references (`…/fixtures/name.xml`) are found as `name.json`, dates
    /// substituted as on load.
    pub fixtures: &'a HashMap<String, Value>,
    /// Codes of the search parameters the node stores but does not evaluate.
    pub special: &'a BTreeSet<String>,
    /// Whether `POST [base]/{Type}/$validate` exists.
    pub validate: bool,
}

/// The state of one script's run.
struct ScriptState {
    variables: Vec<Value>,
    fixtures: HashMap<String, Value>,
    responses: HashMap<String, Rc<Response>>,
    last: Option<Rc<Response>>,
    /// Why the last operation could not run, when it could not.
    last_unsupported: Option<String>,
}

const OPERATION_TYPES: [&str; 6] = ["search", "read", "vread", "create", "update", "delete"];

impl Runner<'_> {
    /// Runs `script`; never panics on the script's content.
    pub async fn run(&self, script: &Value) -> ScriptReport {
        let mut report = ScriptReport {
            id: script["id"].as_str().unwrap_or("?").to_string(),
            asserts: Vec::new(),
            notes: Vec::new(),
        };
        let mut state = ScriptState {
            variables: script["variable"].as_array().cloned().unwrap_or_default(),
            fixtures: HashMap::new(),
            responses: HashMap::new(),
            last: None,
            last_unsupported: None,
        };
        for fixture in script["fixture"].as_array().into_iter().flatten() {
            let id = fixture["id"].as_str().unwrap_or_default();
            let reference = fixture["resource"]["reference"]
                .as_str()
                .unwrap_or_default();
            let stem = Path::new(reference)
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            match self.fixtures.get(stem) {
                Some(resource) => {
                    state.fixtures.insert(id.to_string(), resource.clone());
                }
                None => report
                    .notes
                    .push(format!("fixture {id}: '{reference}' not found")),
            }
            if fixture["autocreate"] == true || fixture["autodelete"] == true {
                report.notes.push(format!(
                    "fixture {id}: autocreate/autodelete not supported (ignored)"
                ));
            }
        }
        let actions = script["setup"]["action"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(
                script["test"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|t| t["action"].as_array().into_iter().flatten()),
            )
            .chain(
                script["teardown"]["action"]
                    .as_array()
                    .into_iter()
                    .flatten(),
            );
        for action in actions {
            if let Some(operation) = action.get("operation") {
                match self.operation(&state, operation).await {
                    Ok(response) => {
                        if !response.ignored_special.is_empty() {
                            report.notes.push(format!(
                                "the node ignored special parameter(s) {} (lenient warning)",
                                response.ignored_special.join(", ")
                            ));
                        }
                        let response = Rc::new(response);
                        if let Some(id) = operation["responseId"].as_str() {
                            state.responses.insert(id.to_string(), response.clone());
                        }
                        state.last = Some(response);
                        state.last_unsupported = None;
                    }
                    Err(why) => {
                        report.notes.push(format!("operation not run: {why}"));
                        state.last = None;
                        state.last_unsupported = Some(why);
                    }
                }
            }
            if let Some(assert) = action.get("assert") {
                let number = report.asserts.len() + 1;
                let label = ["label", "id", "description"]
                    .iter()
                    .find_map(|k| assert[*k].as_str())
                    .unwrap_or("")
                    .to_string();
                let (request, outcome) = self.assert(&state, assert).await;
                let outcome = match outcome {
                    Outcome::Failed(why) if assert["warningOnly"] == true => Outcome::Warned(why),
                    other => other,
                };
                report.asserts.push(AssertReport {
                    number,
                    label,
                    expression: assert["expression"].as_str().map(String::from),
                    request,
                    outcome,
                });
            }
        }
        report
    }

    /// `${…}` substituted from the script's variables.
    fn substitute(&self, state: &ScriptState, text: &str) -> Result<String, String> {
        dates::substitute(text, self.today, &mut |name| self.variable(state, name))
    }

    /// The value of variable `name`: from its `expression` or `headerField` when they give
    /// one, else its `defaultValue`.
    fn variable(&self, state: &ScriptState, name: &str) -> Result<String, String> {
        let definition = state
            .variables
            .iter()
            .find(|v| v["name"] == name)
            .ok_or_else(|| format!("unknown variable '{name}'"))?;
        let source = || -> Result<Source<'_>, String> {
            match definition["sourceId"].as_str() {
                Some(id) => self.source(state, id),
                None => state
                    .last
                    .as_deref()
                    .map(Source::Response)
                    .ok_or_else(|| format!("variable {name}: no response yet")),
            }
        };
        let derived = if let Some(expression) = definition["expression"].as_str() {
            let source = source()?;
            let parsed = Expression::parse(expression)
                .map_err(|e| format!("variable {name}: FHIRPath parse error: {e}"))?;
            let items = parsed
                .evaluate_with(
                    source.body(),
                    &Environment::new().with_resource(source.body()),
                )
                .map_err(|e| format!("variable {name}: FHIRPath error: {e}"))?;
            items.first().map(item_text)
        } else if let Some(field) = definition["headerField"].as_str() {
            match source()? {
                Source::Response(response) => response.header(field),
                Source::Fixture(_) => {
                    return Err(format!("variable {name}: headerField of a fixture"));
                }
            }
        } else if definition.get("path").is_some() {
            return Err(format!(
                "variable {name}: path (XPath/JSONPath) is not supported"
            ));
        } else {
            None
        };
        derived
            .or_else(|| definition["defaultValue"].as_str().map(String::from))
            .ok_or_else(|| format!("variable {name} has no value"))
    }

    fn source<'s>(&self, state: &'s ScriptState, id: &str) -> Result<Source<'s>, String> {
        if let Some(response) = state.responses.get(id) {
            Ok(Source::Response(response))
        } else if let Some(fixture) = state.fixtures.get(id) {
            Ok(Source::Fixture(fixture))
        } else {
            Err(format!("unknown sourceId '{id}'"))
        }
    }

    async fn operation(&self, state: &ScriptState, operation: &Value) -> Result<Response, String> {
        let code = operation["type"]["code"].as_str().unwrap_or("");
        if !OPERATION_TYPES.contains(&code) {
            return Err(format!("operation type '{code}' is not supported"));
        }
        let resource = operation["resource"].as_str().unwrap_or("");
        let params = operation["params"]
            .as_str()
            .map(|p| self.substitute(state, p))
            .transpose()?;
        let body = match operation["sourceId"].as_str() {
            Some(id) if matches!(code, "create" | "update") => {
                Some(self.source(state, id)?.body().clone())
            }
            _ => None,
        };
        let path = if let Some(url) = operation["url"].as_str() {
            self.substitute(state, url)?
        } else {
            let target_id = match operation["targetId"].as_str() {
                Some(target) => Some(
                    self.source(state, target)?.body()["id"]
                        .as_str()
                        .ok_or_else(|| format!("targetId {target} has no id"))?
                        .to_string(),
                ),
                None => None,
            };
            let suffix = match (code, &params, &target_id, &body) {
                (_, Some(p), _, _) if p.starts_with('?') => p.clone(),
                (_, Some(p), _, _) => format!("/{}", p.trim_start_matches('/')),
                (_, None, Some(id), _) => format!("/{id}"),
                ("update", None, None, Some(b)) => {
                    format!("/{}", b["id"].as_str().unwrap_or_default())
                }
                _ => String::new(),
            };
            format!("{resource}{suffix}")
        };
        let sent = if operation["encodeRequestUrl"] != false {
            encode_query(&path)
        } else {
            path.clone()
        };
        let url = if sent.starts_with("http://") || sent.starts_with("https://") {
            sent
        } else {
            self.node.url(&sent)
        };
        let method = match operation["method"].as_str().unwrap_or(match code {
            "create" => "post",
            "update" => "put",
            "delete" => "delete",
            _ => "get",
        }) {
            "post" => reqwest::Method::POST,
            "put" => reqwest::Method::PUT,
            "delete" => reqwest::Method::DELETE,
            "patch" => reqwest::Method::PATCH,
            "head" => reqwest::Method::HEAD,
            _ => reqwest::Method::GET,
        };
        let mut request = self.node.client.request(method.clone(), &url);
        if let Some(accept) = operation["accept"].as_str() {
            request = request.header("accept", media_type(accept));
        }
        if let Some(b) = body {
            let content = operation["contentType"].as_str().unwrap_or("json");
            if media_type(content) != "application/fhir+json" {
                return Err(format!("contentType '{content}' is not supported"));
            }
            request = request
                .header("content-type", "application/fhir+json")
                .body(b.to_string());
        }
        for header in operation["requestHeader"].as_array().into_iter().flatten() {
            let field = header["field"].as_str().unwrap_or_default();
            let value = self.substitute(state, header["value"].as_str().unwrap_or_default())?;
            request = request.header(field, value);
        }
        let reply = self.node.send(request).await;
        let ignored = ignored_parameters(&reply.body);
        Ok(Response {
            request: format!("{method} {path}"),
            summary: describe(reply.status, &reply.body),
            status: reply.status,
            headers: reply.headers,
            body: reply.body,
            ignored_special: ignored
                .into_iter()
                .filter(|p| self.special.contains(p))
                .collect(),
        })
    }

    /// Evaluates one assert: the request it judged and its outcome (before `warningOnly`).
    async fn assert(&self, state: &ScriptState, assert: &Value) -> (Option<String>, Outcome) {
        for key in [
            "path",
            "compareToSourcePath",
            "minimumId",
            "navigationLinks",
            "requestURL",
            "requestMethod",
        ] {
            if assert.get(key).is_some() {
                return (None, unsupported(format!("assert.{key}")));
            }
        }
        if assert["direction"] == "request" {
            return (None, unsupported("assert on the request".into()));
        }
        let target = match assert["sourceId"].as_str() {
            Some(id) => match self.source(state, id) {
                Ok(source) => source,
                Err(why) => return (None, Outcome::Failed(why)),
            },
            None => match state.last.as_deref() {
                Some(response) => Source::Response(response),
                None => {
                    let outcome = match &state.last_unsupported {
                        Some(why) => unsupported(format!("its operation was not run: {why}")),
                        None => Outcome::Failed("no response to assert on".into()),
                    };
                    return (None, outcome);
                }
            },
        };
        let request = match &target {
            Source::Response(response) => Some(response.request.clone()),
            Source::Fixture(_) => None,
        };
        if let Source::Response(response) = &target
            && !response.ignored_special.is_empty()
            && about_result_set(assert)
        {
            let unfiltered = match self.checks(state, &target, assert).await {
                Ok(()) => "passes".to_string(),
                Err(Check::Failed(why)) => format!("fails: {why}"),
                Err(Check::NotEvaluable(why)) => format!("not evaluable: {why:?}"),
            };
            return (
                request,
                Outcome::NotEvaluable(NotEvaluable::SpecialParameter {
                    parameter: response.ignored_special.join(", "),
                    unfiltered,
                }),
            );
        }
        let outcome = match self.checks(state, &target, assert).await {
            Ok(()) => Outcome::Passed,
            Err(Check::Failed(why)) => match &target {
                Source::Response(response) => {
                    Outcome::Failed(format!("{why}; the node answered {}", response.summary))
                }
                Source::Fixture(_) => Outcome::Failed(why),
            },
            Err(Check::NotEvaluable(why)) => Outcome::NotEvaluable(why),
        };
        (request, outcome)
    }

    /// All the checks an assert carries; the first that fails decides.
    async fn checks(
        &self,
        state: &ScriptState,
        target: &Source<'_>,
        assert: &Value,
    ) -> Result<(), Check> {
        let operator = assert["operator"].as_str();
        let value = assert["value"]
            .as_str()
            .map(|v| self.substitute(state, v))
            .transpose()
            .map_err(|why| Check::NotEvaluable(NotEvaluable::Unsupported(why)))?;
        let mut checked = false;
        let response = match target {
            Source::Response(response) => Some(*response),
            Source::Fixture(_) => None,
        };
        let need_response = |what: &str| {
            response.ok_or_else(|| {
                Check::NotEvaluable(NotEvaluable::Unsupported(format!("{what} on a fixture")))
            })
        };
        if let Some(name) = assert["response"].as_str() {
            checked = true;
            let status = need_response("response")?.status;
            let expected = response_code(name).ok_or_else(|| {
                Check::NotEvaluable(NotEvaluable::Unsupported(format!("response '{name}'")))
            })?;
            compare(
                operator,
                &[status.to_string()],
                &expected.to_string(),
                "response",
            )?;
        }
        if let Some(code) = assert["responseCode"].as_str() {
            checked = true;
            let status = need_response("responseCode")?.status;
            compare(operator, &[status.to_string()], code, "responseCode")?;
        }
        if let Some(resource) = assert["resource"].as_str() {
            checked = true;
            let actual = target.body()["resourceType"].as_str().unwrap_or("(none)");
            if actual != resource {
                return Err(Check::Failed(format!(
                    "resource type {actual}, expected {resource}"
                )));
            }
        }
        if let Some(content_type) = assert["contentType"].as_str() {
            checked = true;
            let actual = need_response("contentType")?
                .header("content-type")
                .unwrap_or_default();
            let expected = media_type(content_type);
            if !actual.starts_with(expected) {
                return Err(Check::Failed(format!(
                    "content type '{actual}', expected {expected}"
                )));
            }
        }
        if let Some(field) = assert["headerField"].as_str() {
            checked = true;
            let actual: Vec<String> = need_response("headerField")?
                .header(field)
                .into_iter()
                .collect();
            match &value {
                Some(v) => compare(operator, &actual, v, &format!("header {field}"))?,
                None => compare_presence(operator, &actual, &format!("header {field}"))?,
            }
        }
        if let Some(expression) = assert["expression"].as_str() {
            checked = true;
            self.expression(
                state,
                target,
                assert,
                expression,
                operator,
                value.as_deref(),
            )?;
        }
        if let Some(profile) = assert["validateProfileId"].as_str() {
            checked = true;
            if !self.validate {
                return Err(Check::NotEvaluable(NotEvaluable::ProfileValidation));
            }
            self.validate_profile(target, profile).await?;
        }
        if !checked {
            return Err(Check::NotEvaluable(NotEvaluable::Unsupported(
                "an assert without a check this runner knows".into(),
            )));
        }
        Ok(())
    }

    fn expression(
        &self,
        state: &ScriptState,
        target: &Source<'_>,
        assert: &Value,
        expression: &str,
        operator: Option<&str>,
        value: Option<&str>,
    ) -> Result<(), Check> {
        let unsupported = |why: String| Check::NotEvaluable(NotEvaluable::Unsupported(why));
        let text = self.substitute(state, expression).map_err(unsupported)?;
        let parsed = Expression::parse(&text)
            .map_err(|e| Check::Failed(format!("FHIRPath parse error: {e}")))?;
        let body = target.body();
        let variables: Vec<(String, String)> = state
            .variables
            .iter()
            .filter_map(|v| {
                let name = v["name"].as_str()?;
                let value = self.variable(state, name).ok()?;
                let value = self.substitute(state, &value).unwrap_or(value);
                Some((name.to_string(), value))
            })
            .collect();
        let mut environment = Environment::new()
            .with_resource(body)
            .with_root_resource(body);
        for (name, value) in &variables {
            environment = environment.with_string_variable(name, value);
        }
        let items = parsed
            .evaluate_with(body, &environment)
            .map_err(|e| Check::Failed(format!("FHIRPath evaluation error: {e}")))?;
        let actual: Vec<String> = items.iter().map(item_text).collect();
        if let Some(source_id) = assert["compareToSourceId"].as_str() {
            let source_expression = assert["compareToSourceExpression"]
                .as_str()
                .ok_or_else(|| unsupported("compareToSourceId without an expression".into()))?;
            let source = self.source(state, source_id).map_err(Check::Failed)?;
            let source_text = self
                .substitute(state, source_expression)
                .map_err(unsupported)?;
            let parsed = Expression::parse(&source_text)
                .map_err(|e| Check::Failed(format!("FHIRPath parse error: {e}")))?;
            let expected: Vec<String> = parsed
                .evaluate_with(
                    source.body(),
                    &Environment::new().with_resource(source.body()),
                )
                .map_err(|e| Check::Failed(format!("FHIRPath evaluation error: {e}")))?
                .iter()
                .map(item_text)
                .collect();
            return match operator.unwrap_or("equals") {
                "equals" if actual == expected => Ok(()),
                "notEquals" if actual != expected => Ok(()),
                "equals" | "notEquals" => Err(Check::Failed(format!(
                    "{actual:?} against source {expected:?}"
                ))),
                other => compare(Some(other), &actual, &expected.join(","), "expression"),
            };
        }
        match (operator, value) {
            (_, Some(value)) => compare(operator, &actual, value, "expression"),
            (Some("empty" | "notEmpty"), None) => compare_presence(operator, &actual, "result"),
            (None | Some("eval"), None) => match zorgnet_fhirpath::to_boolean(&items) {
                Ok(Some(true)) => Ok(()),
                Ok(other) => Err(Check::Failed(format!(
                    "evaluated to {}{}",
                    other.map_or("empty".to_string(), |b| b.to_string()),
                    left_side(&text, body, &environment)
                ))),
                Err(e) => Err(Check::Failed(format!("not a Boolean: {e}"))),
            },
            (Some(other), None) => Err(unsupported(format!("operator {other} without a value"))),
        }
    }

    async fn validate_profile(&self, target: &Source<'_>, profile: &str) -> Result<(), Check> {
        let body = target.body();
        let resource_type = body["resourceType"].as_str().unwrap_or("Bundle");
        let reply = self
            .node
            .post(&format!("{resource_type}/$validate"), body)
            .await;
        let errors: Vec<String> = reply.body["issue"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["severity"] == "error" || i["severity"] == "fatal")
            .map(|i| {
                i["diagnostics"]
                    .as_str()
                    .unwrap_or_else(|| i["code"].as_str().unwrap_or("?"))
                    .to_string()
            })
            .collect();
        if reply.status == 200 && errors.is_empty() {
            Ok(())
        } else {
            Err(Check::Failed(format!(
                "$validate ({profile}): {} {}",
                reply.status,
                shorten(&errors.join("; "))
            )))
        }
    }
}

enum Check {
    Failed(String),
    NotEvaluable(NotEvaluable),
}

fn unsupported(why: String) -> Outcome {
    Outcome::NotEvaluable(NotEvaluable::Unsupported(why))
}

/// For `left <op> number` (`Bundle.entry.where(…).count() >= 2`): what `left` gave, as a
/// hint in a failure's text; empty otherwise.
fn left_side<'a>(expression: &str, body: &'a Value, environment: &Environment<'a>) -> String {
    for operator in [" >= ", " <= ", " != ", " = ", " > ", " < "] {
        let Some((left, right)) = expression.rsplit_once(operator) else {
            continue;
        };
        if right.trim().parse::<i64>().is_err() {
            continue;
        }
        let Ok(parsed) = Expression::parse(left) else {
            return String::new();
        };
        return match parsed.evaluate_with(body, environment) {
            Ok(items) => {
                let values: Vec<String> = items.iter().map(item_text).collect();
                format!(" ({} gave {})", left.trim(), shorten(&values.join(", ")))
            }
            Err(_) => String::new(),
        };
    }
    String::new()
}

/// Whether an assert judges which resources a search found (how many of a type): the asserts
/// a search that ignored one of its parameters cannot be judged on. The others (Bundle type,
/// ids, fullUrls, codings, references, identifiers, `Bundle.total` against the entries) hold
/// for any result set.
fn about_result_set(assert: &Value) -> bool {
    assert["expression"]
        .as_str()
        .is_some_and(|e| e.contains("count()") && !e.trim_start().starts_with("Bundle.total"))
}

/// The search parameters a node said it ignored: `unknown search parameter(s) ignored: a, b`
/// in the diagnostics of the searchset's outcome entry. Modifiers are dropped.
fn ignored_parameters(bundle: &Value) -> Vec<String> {
    let mut found = Vec::new();
    for entry in bundle["entry"].as_array().into_iter().flatten() {
        if entry["search"]["mode"] != "outcome" {
            continue;
        }
        for issue in entry["resource"]["issue"].as_array().into_iter().flatten() {
            let diagnostics = issue["diagnostics"].as_str().unwrap_or_default();
            if let Some((_, list)) = diagnostics.split_once("ignored:") {
                for name in list.split(',') {
                    let name = name.trim();
                    let name = name.split(':').next().unwrap_or(name);
                    if !name.is_empty() && !found.iter().any(|f| f == name) {
                        found.push(name.to_string());
                    }
                }
            }
        }
    }
    found
}

/// A response in a few words: `200 Bundle searchset, total 25, 20 match + 14 include
/// entries, next link`.
fn describe(status: u16, body: &Value) -> String {
    let resource_type = body["resourceType"].as_str().unwrap_or("no resource");
    let mut text = format!("{status} {resource_type}");
    if resource_type == "Bundle" {
        let mut modes: Vec<(String, usize)> = Vec::new();
        for entry in body["entry"].as_array().into_iter().flatten() {
            let mode = entry["search"]["mode"]
                .as_str()
                .unwrap_or("no-mode")
                .to_string();
            match modes.iter_mut().find(|(m, _)| *m == mode) {
                Some((_, count)) => *count += 1,
                None => modes.push((mode, 1)),
            }
        }
        let entries: Vec<String> = modes.iter().map(|(m, c)| format!("{c} {m}")).collect();
        text.push_str(&format!(
            " {}, total {}, entries: {}",
            body["type"].as_str().unwrap_or("?"),
            body["total"],
            if entries.is_empty() {
                "none".to_string()
            } else {
                entries.join(" + ")
            }
        ));
        if body["link"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|l| l["relation"] == "next")
        {
            text.push_str(", with a next link");
        }
    } else if resource_type == "OperationOutcome" {
        text.push_str(&format!(": {}", shorten(&body["issue"].to_string())));
    }
    text
}

/// The query part of `path` percent-encoded (Touchstone's `encodeRequestUrl`).
fn encode_query(path: &str) -> String {
    let Some((head, query)) = path.split_once('?') else {
        return path.to_string();
    };
    let encoded: Vec<String> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name: String = form_urlencoded::byte_serialize(name.as_bytes()).collect();
            let value: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
            format!("{name}={value}")
        })
        .collect();
    format!("{head}?{}", encoded.join("&"))
}

fn media_type(short: &str) -> &str {
    match short {
        "json" => "application/fhir+json",
        "xml" => "application/fhir+xml",
        "ttl" => "text/turtle",
        "none" => "*/*",
        other => other,
    }
}

/// The status of a TestScript `response` code.
fn response_code(name: &str) -> Option<u16> {
    Some(match name {
        "okay" => 200,
        "created" => 201,
        "noContent" => 204,
        "notModified" => 304,
        "bad" => 400,
        "forbidden" => 403,
        "notFound" => 404,
        "methodNotAllowed" => 405,
        "conflict" => 409,
        "gone" => 410,
        "preconditionFailed" => 412,
        "unprocessable" => 422,
        _ => return None,
    })
}

/// An item as text: primitives as FHIRPath's `toString()`, complex nodes as JSON.
fn item_text(item: &Item<'_>) -> String {
    item.to_fhirpath_string()
        .unwrap_or_else(|| item.to_json().to_string())
}

fn shorten(text: &str) -> String {
    const LIMIT: usize = 300;
    if text.len() <= LIMIT {
        return text.to_string();
    }
    let mut end = LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// `empty`/`notEmpty` on a result.
fn compare_presence(operator: Option<&str>, actual: &[String], what: &str) -> Result<(), Check> {
    let ok = match operator {
        Some("empty") => actual.is_empty(),
        Some("notEmpty") | None => !actual.is_empty(),
        Some(other) => {
            return Err(Check::NotEvaluable(NotEvaluable::Unsupported(format!(
                "operator {other} without a value"
            ))));
        }
    };
    if ok {
        Ok(())
    } else {
        Err(Check::Failed(format!(
            "{what} {}: {}",
            operator.unwrap_or("notEmpty"),
            shorten(&format!("{actual:?}"))
        )))
    }
}

/// TestScript's operators on the text of a result and the expected value.
fn compare(
    operator: Option<&str>,
    actual: &[String],
    expected: &str,
    what: &str,
) -> Result<(), Check> {
    let single = (actual.len() == 1).then(|| actual[0].as_str());
    let list = || expected.split(',').map(str::trim);
    let number = |s: &str| s.trim().parse::<f64>().ok();
    let order = |a: &str| match (number(a), number(expected)) {
        (Some(x), Some(y)) => x.partial_cmp(&y),
        _ => Some(a.cmp(expected)),
    };
    let ok = match operator.unwrap_or("equals") {
        "equals" | "eval" => single == Some(expected),
        "notEquals" => single != Some(expected),
        "in" => single.is_some_and(|a| list().any(|e| e == a)),
        "notIn" => single.is_none_or(|a| list().all(|e| e != a)),
        "greaterThan" => single.and_then(order) == Some(std::cmp::Ordering::Greater),
        "lessThan" => single.and_then(order) == Some(std::cmp::Ordering::Less),
        "empty" => actual.is_empty(),
        "notEmpty" => !actual.is_empty(),
        "contains" => actual.iter().any(|a| a.contains(expected)),
        "notContains" => actual.iter().all(|a| !a.contains(expected)),
        other => {
            return Err(Check::NotEvaluable(NotEvaluable::Unsupported(format!(
                "operator {other}"
            ))));
        }
    };
    if ok {
        Ok(())
    } else {
        Err(Check::Failed(format!(
            "{what} {} {expected:?}: got {}",
            operator.unwrap_or("equals"),
            shorten(&format!("{actual:?}"))
        )))
    }
}
