//! Bundles: rendering searchset and history Bundles around stored JSON, and processing
//! `transaction` (all-or-nothing) and `batch` Bundles.
//!
//! A batch's plain updates (`PUT Type/id` without `ifMatch`: what `zorgnet import` sends, and
//! independent of each other as every batch entry must be) are written together, in one
//! store call on the store's bulk path ([`zorgnet_store::Store::import`]); each still gets its
//! own outcome, and when that one transaction fails they are written one by one, so one bad
//! entry never sinks the others. `Prefer: return=minimal` leaves the resources out of the
//! response's write entries. An entry of an [`crate::ExternalType`], write or read, fails a
//! transaction whole (405, naming the entry) and is a 405 entry of a batch.

use crate::AppState;
use crate::error::{FHIR_JSON, FhirError};
use crate::interactions::{self, ReturnPreference};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use zorgnet_fhir::datetime::format_instant;
use zorgnet_fhir::search::{SearchQuery, Summary};
use zorgnet_fhir::{IssueCode, operation_outcome};
use zorgnet_store::{
    HistoryEntry, ImportBatch, ImportOutcome, ReadOutcome, StoreError, StoredResource, WriteOp,
    WriteOutcome, now_ms,
};

/// Most entries one transaction or batch Bundle may carry.
pub const MAX_BUNDLE_ENTRIES: usize = 10_000;

/// How an entry got into a searchset.
#[derive(Clone, Copy)]
pub(crate) enum EntryMode {
    Match,
    Include,
}

pub(crate) struct BundleEntry<'a> {
    pub resource: &'a StoredResource,
    pub mode: EntryMode,
}

/// `_summary` and `_elements` applied to each resource.
#[derive(Clone, Copy)]
pub(crate) struct Shaping<'a> {
    pub summary: Option<Summary>,
    pub elements: Option<&'a [String]>,
}

pub(crate) fn bundle_response(body: String) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    response
}

fn self_link(base: &str, path: &str, raw: Option<&str>) -> String {
    match raw {
        Some(q) if !q.is_empty() => format!("{base}/{path}?{q}"),
        _ => format!("{base}/{path}"),
    }
}

/// The link for another page: the same query with that page's cursor.
fn link_with_cursor(base: &str, path: &str, pairs: &[(String, String)], cursor: &str) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs.iter().filter(|(n, _)| n != "_cursor") {
        serializer.append_pair(name, value);
    }
    serializer.append_pair("_cursor", cursor);
    format!("{base}/{path}?{}", serializer.finish())
}

fn json_string(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// A page's own link (the base, the path and the query it was asked with, raw and as
/// pairs) and, when there are such pages, the cursors of the next and the previous page.
pub(crate) struct PageLinks<'a> {
    pub base: &'a str,
    pub path: &'a str,
    pub raw: Option<&'a str>,
    pub pairs: &'a [(String, String)],
    pub next: Option<&'a str>,
    pub previous: Option<&'a str>,
}

fn bundle_head(out: &mut String, bundle_type: &str, total: Option<i64>, page: PageLinks) {
    let mut links = vec![("self", self_link(page.base, page.path, page.raw))];
    for (relation, cursor) in [("next", page.next), ("previous", page.previous)] {
        if let Some(cursor) = cursor {
            links.push((
                relation,
                link_with_cursor(page.base, page.path, page.pairs, cursor),
            ));
        }
    }
    let _ = write!(
        out,
        "{{\"resourceType\":\"Bundle\",\"id\":\"{}\",\"meta\":{{\"lastUpdated\":\"{}\"}},\"type\":\"{bundle_type}\"",
        uuid::Uuid::new_v4(),
        format_instant(now_ms())
    );
    if let Some(total) = total {
        let _ = write!(out, ",\"total\":{total}");
    }
    out.push_str(",\"link\":[");
    for (i, (relation, url)) in links.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"relation\":\"{relation}\",\"url\":{}}}",
            json_string(url)
        );
    }
    out.push(']');
    out.push_str(ENTRY_OPEN);
}

/// What [`bundle_head`] ends with: the entries follow.
const ENTRY_OPEN: &str = ",\"entry\":[";

/// Ends a Bundle begun by [`bundle_head`]: a Bundle without entries has no `entry` (FHIR
/// JSON has no empty arrays).
fn bundle_close(out: &mut String) {
    if out.ends_with(ENTRY_OPEN) {
        out.truncate(out.len() - ENTRY_OPEN.len());
        out.push('}');
    } else {
        out.push_str("]}");
    }
}

/// A searchset Bundle. Resources are embedded as stored, unless shaping asks for less.
pub(crate) fn searchset(
    page: PageLinks,
    total: Option<i64>,
    entries: &[BundleEntry],
    outcome: Option<&Value>,
    shaping: Option<Shaping>,
) -> String {
    let mut out = String::with_capacity(
        256 + entries
            .iter()
            .map(|e| e.resource.json.len() + 128)
            .sum::<usize>(),
    );
    let base = page.base;
    bundle_head(&mut out, "searchset", total, page);
    let mut first = true;
    for entry in entries {
        if !first {
            out.push(',');
        }
        first = false;
        let resource = entry.resource;
        let shaped =
            shaping.and_then(|s| shape(&resource.json, s, matches!(entry.mode, EntryMode::Match)));
        let mode = match entry.mode {
            EntryMode::Match => "match",
            EntryMode::Include => "include",
        };
        let _ = write!(
            out,
            "{{\"fullUrl\":{},\"resource\":{},\"search\":{{\"mode\":\"{mode}\"}}}}",
            json_string(&format!(
                "{base}/{}/{}",
                resource.resource_type, resource.id
            )),
            shaped.as_deref().unwrap_or(&resource.json)
        );
    }
    if let Some(outcome) = outcome {
        if !first {
            out.push(',');
        }
        // Bundle rules (bdl-7 and the entries' fullUrl rules) want every entry to name its
        // resource: the outcome is made here, so it gets an id of its own and a urn:uuid,
        // derived from its content (UUID v5): the same question gets the same answer.
        let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, outcome.to_string().as_bytes());
        let mut outcome = outcome.clone();
        if let Some(object) = outcome.as_object_mut() {
            object.insert("id".into(), Value::String(id.to_string()));
        }
        let _ = write!(
            out,
            "{{\"fullUrl\":\"urn:uuid:{id}\",\"resource\":{outcome},\"search\":{{\"mode\":\"outcome\"}}}}"
        );
    }
    bundle_close(&mut out);
    out
}

/// Applies `_summary` / `_elements`; `None` when the resource is returned whole.
fn shape(json: &str, shaping: Shaping, is_match: bool) -> Option<String> {
    let (summary, elements) = what_applies(shaping.summary, shaping.elements, is_match);
    if summary.is_none() && elements.is_none() {
        return None;
    }
    let mut value: Value = serde_json::from_str(json).ok()?;
    subset(&mut value, shaping.summary, shaping.elements, is_match).then(|| value.to_string())
}

/// The `_summary` and `_elements` that change a resource of a searchset: a `_summary` of
/// `true`, `data` or `text`, and `_elements` for a match only.
fn what_applies(
    summary: Option<Summary>,
    elements: Option<&[String]>,
    is_match: bool,
) -> (Option<Summary>, Option<&[String]>) {
    (
        summary.filter(|s| matches!(s, Summary::True | Summary::Data | Summary::Text)),
        elements.filter(|_| is_match),
    )
}

/// Applies `_summary` (`true`, `data`, `text`) and, for a match only, `_elements` to one
/// resource of a searchset, marking it `SUBSETTED`. False, and the resource untouched, when
/// nothing applies (or the resource is not one of a known type).
pub fn subset(
    value: &mut Value,
    summary: Option<Summary>,
    elements: Option<&[String]>,
    is_match: bool,
) -> bool {
    let (summary, elements) = what_applies(summary, elements, is_match);
    if summary.is_none() && elements.is_none() {
        return false;
    }
    let Some(object) = value.as_object_mut() else {
        return false;
    };
    let Some(resource_type) = object.get("resourceType").and_then(Value::as_str) else {
        return false;
    };
    let resource_type = resource_type.to_string();
    let keep_always = ["resourceType", "id", "meta"];
    match summary {
        Some(Summary::Data) => {
            object.remove("text");
        }
        Some(Summary::Text) => {
            object.retain(|k, _| keep_always.contains(&k.as_str()) || k == "text");
        }
        Some(Summary::True) => {
            let Some(context) = zorgnet_fhir::model::r4().type_context(&resource_type) else {
                return false;
            };
            object.retain(|k, _| {
                let key = k.trim_start_matches('_');
                keep_always.contains(&key) || context.keys.get(key).is_some_and(|rule| rule.summary)
            });
        }
        _ => {}
    }
    if let Some(elements) = elements {
        object.retain(|k, _| {
            let key = k.trim_start_matches('_');
            keep_always.contains(&key)
                || elements.iter().any(|e| {
                    e == key
                        || key
                            .strip_prefix(e.as_str())
                            .is_some_and(|rest| rest.starts_with(char::is_uppercase))
                })
        });
    }
    let meta = object
        .entry("meta")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(meta) = meta.as_object_mut() {
        let tag = json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"});
        match meta.get_mut("tag").and_then(Value::as_array_mut) {
            Some(tags) => tags.push(tag),
            None => {
                meta.insert("tag".into(), json!([tag]));
            }
        }
    }
    true
}

/// A history Bundle.
pub(crate) fn history_bundle(page: PageLinks, entries: &[HistoryEntry]) -> String {
    let mut out = String::with_capacity(
        256 + entries
            .iter()
            .map(|e| e.json.as_ref().map_or(0, String::len) + 256)
            .sum::<usize>(),
    );
    let base = page.base;
    bundle_head(&mut out, "history", None, page);
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let full_url = format!("{base}/{}/{}", entry.resource_type, entry.id);
        let _ = write!(out, "{{\"fullUrl\":{}", json_string(&full_url));
        if let Some(json) = &entry.json {
            let _ = write!(out, ",\"resource\":{json}");
        }
        let (url, status) = match entry.method.as_str() {
            "POST" => (entry.resource_type.clone(), "201 Created"),
            "DELETE" => (
                format!("{}/{}", entry.resource_type, entry.id),
                "204 No Content",
            ),
            _ => (
                format!("{}/{}", entry.resource_type, entry.id),
                if entry.version == 1 {
                    "201 Created"
                } else {
                    "200 OK"
                },
            ),
        };
        let _ = write!(
            out,
            ",\"request\":{{\"method\":\"{}\",\"url\":{}}},\"response\":{{\"status\":\"{status}\",\"etag\":\"W/\\\"{}\\\"\",\"lastModified\":\"{}\"}}}}",
            entry.method,
            json_string(&url),
            entry.version,
            format_instant(entry.last_updated_ms)
        );
    }
    bundle_close(&mut out);
    out
}

/// One parsed entry of a transaction or batch.
struct Planned {
    index: usize,
    method: String,
    url: String,
    full_url: Option<String>,
    resource: Option<Value>,
    if_none_exist: Option<String>,
    if_match: Option<String>,
}

impl Planned {
    /// The `id` the entry's resource carries.
    fn resource_id(&self) -> Option<String> {
        self.resource
            .as_ref()?
            .get("id")?
            .as_str()
            .map(String::from)
    }
}

fn entry_error(index: usize, error: FhirError) -> FhirError {
    let issues = error
        .issues
        .into_iter()
        .map(|mut issue| {
            issue.diagnostics = format!("Bundle.entry[{index}]: {}", issue.diagnostics);
            issue
        })
        .collect();
    FhirError {
        status: error.status,
        issues,
    }
}

fn plan(mut bundle: Value) -> Result<(String, Vec<Planned>), FhirError> {
    let bundle_type = bundle
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle")
        || !matches!(bundle_type.as_str(), "transaction" | "batch")
    {
        return Err(FhirError::bad_request(
            "POST to the base takes a Bundle of type transaction or batch",
        ));
    }
    let entries = match bundle.get_mut("entry").map(Value::take) {
        None => Vec::new(),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(FhirError::bad_request("Bundle.entry must be an array")),
    };
    if entries.len() > MAX_BUNDLE_ENTRIES {
        return Err(FhirError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            IssueCode::TooCostly,
            format!(
                "a Bundle may carry at most {MAX_BUNDLE_ENTRIES} entries, this one has {}",
                entries.len()
            ),
        ));
    }
    let mut planned = Vec::with_capacity(entries.len());
    for (index, mut entry) in entries.into_iter().enumerate() {
        let resource = entry.get_mut("resource").map(Value::take);
        let request = entry.get("request").ok_or_else(|| {
            entry_error(index, FhirError::bad_request("entry.request is missing"))
        })?;
        let text = |key: &str| request.get(key).and_then(Value::as_str).map(String::from);
        let method = text("method").ok_or_else(|| {
            entry_error(
                index,
                FhirError::bad_request("entry.request.method is missing"),
            )
        })?;
        let url = text("url").ok_or_else(|| {
            entry_error(
                index,
                FhirError::bad_request("entry.request.url is missing"),
            )
        })?;
        if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
            return Err(entry_error(
                index,
                FhirError::bad_request(format!("method {method} is not supported in bundles")),
            ));
        }
        planned.push(Planned {
            index,
            method,
            url: url.trim_start_matches('/').to_string(),
            full_url: entry
                .get("fullUrl")
                .and_then(Value::as_str)
                .map(String::from),
            resource,
            if_none_exist: text("ifNoneExist"),
            if_match: text("ifMatch"),
        });
    }
    Ok((bundle_type, planned))
}

/// `POST /fhir` with a transaction or batch Bundle.
pub(crate) async fn transaction_or_batch(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, FhirError> {
    let bundle = interactions::read_json_body(body).await?;
    let (bundle_type, planned) = plan(bundle)?;
    let base = state.base_url.clone();
    let reads: Vec<bool> = planned.iter().map(|p| p.method == "GET").collect();
    let mut body = if bundle_type == "transaction" {
        transaction(&state, &base, planned).await?
    } else {
        batch(
            &state,
            &base,
            planned,
            interactions::return_preference(&headers),
        )
        .await
    };
    if interactions::return_preference(&headers) == ReturnPreference::Minimal {
        leave_out_written_resources(&mut body, &reads);
    }
    Ok(bundle_response(body.to_string()))
}

/// `Prefer: return=minimal`: the entries of writes keep their `response` but not the resource
/// (reads keep theirs: the resource is what was asked).
fn leave_out_written_resources(response: &mut Value, reads: &[bool]) {
    let Some(entries) = response.get_mut("entry").and_then(Value::as_array_mut) else {
        return;
    };
    for (entry, _) in entries
        .iter_mut()
        .zip(reads)
        .filter(|(_, is_read)| !**is_read)
    {
        if let Some(entry) = entry.as_object_mut() {
            entry.remove("resource");
        }
    }
}

fn split_url(url: &str) -> (&str, Option<&str>, Option<&str>) {
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    };
    let mut parts = path.splitn(2, '/');
    (parts.next().unwrap_or(""), parts.next(), query)
}

fn parse_version(text: &str) -> Result<i64, FhirError> {
    text.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map_err(|_| {
            FhirError::bad_request(format!("ifMatch must look like W/\"3\", not '{text}'"))
        })
}

/// Replaces every string equal to a key of `map` (fullUrls → `Type/id`).
fn rewrite_references(value: &mut Value, map: &HashMap<String, String>) {
    match value {
        Value::String(s) => {
            if let Some(replacement) = map.get(s.as_str()) {
                *s = replacement.clone();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_references(v, map)),
        Value::Object(object) => object.values_mut().for_each(|v| rewrite_references(v, map)),
        _ => {}
    }
}

/// Collects conditional references (`Patient?identifier=…`) found in `reference` elements.
fn conditional_references(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            for (key, v) in object {
                match (key.as_str(), v) {
                    ("reference", Value::String(s))
                        if s.split_once('?')
                            .is_some_and(|(t, _)| !t.contains('/') && !t.contains(':')) =>
                    {
                        out.push(s.clone())
                    }
                    _ => conditional_references(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| conditional_references(v, out)),
        _ => {}
    }
}

/// The id of the one `resource_type` that `condition` finds; `None` when none does, and a
/// 412 when several do.
pub(crate) async fn resolve_condition(
    state: &AppState,
    resource_type: &str,
    condition: &str,
) -> Result<Option<String>, FhirError> {
    let query: SearchQuery = interactions::conditional_query(state, resource_type, condition)?;
    let result = state
        .store
        .search(SearchQuery { count: 2, ..query })
        .await?;
    match result.matches.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.id.clone())),
        _ => Err(FhirError::new(
            StatusCode::PRECONDITION_FAILED,
            IssueCode::Duplicate,
            format!("condition '{resource_type}?{condition}' matches more than one resource"),
        )),
    }
}

/// The condition in an entry's url (`Type?condition`), when the url has a query.
fn url_condition(
    state: &AppState,
    resource_type: &str,
    query: Option<&str>,
) -> Result<Option<Box<SearchQuery>>, FhirError> {
    query
        .map(|condition| {
            interactions::conditional_query(state, resource_type, condition).map(Box::new)
        })
        .transpose()
}

/// The operation for a DELETE entry: `Type/id`, or `Type?condition` (single mode).
fn delete_op(state: &AppState, p: &Planned) -> Result<WriteOp, FhirError> {
    let (resource_type, id, query) = split_url(&p.url);
    match (id, url_condition(state, resource_type, query)?) {
        (Some(id), None) => {
            interactions::check_id(id)?;
            Ok(WriteOp::Delete {
                resource_type: resource_type.to_string(),
                id: id.to_string(),
            })
        }
        (None, Some(condition)) => Ok(WriteOp::DeleteWhere {
            resource_type: resource_type.to_string(),
            condition,
        }),
        _ => Err(FhirError::bad_request(
            "DELETE needs Type/id or Type?condition",
        )),
    }
}

/// The operation for a PUT entry: an update of `Type/id`, or a conditional update of
/// `Type?condition` whose resource, when it carries no id, gets `assigned` if nothing matches.
fn put_op(
    state: &AppState,
    p: &Planned,
    resource: Value,
    assigned: Option<String>,
) -> Result<WriteOp, FhirError> {
    let (resource_type, id, query) = split_url(&p.url);
    let if_match = p.if_match.as_deref().map(parse_version).transpose()?;
    match (id, url_condition(state, resource_type, query)?) {
        (Some(id), None) => {
            if resource.get("id").and_then(Value::as_str) != Some(id) {
                return Err(FhirError::bad_request(
                    "resource id does not match the request url",
                ));
            }
            interactions::validate_for(&resource, resource_type)?;
            Ok(WriteOp::Update {
                resource,
                id: id.to_string(),
                if_match,
            })
        }
        (None, Some(condition)) => {
            if resource.get("id").is_some_and(|own| {
                !own.as_str()
                    .is_some_and(zorgnet_fhir::validate::is_valid_id)
            }) {
                return Err(FhirError::bad_request("resource id is not a valid FHIR id"));
            }
            interactions::validate_for(&resource, resource_type)?;
            Ok(WriteOp::UpdateWhere {
                resource,
                condition,
                id: assigned,
                if_match,
            })
        }
        _ => Err(FhirError::bad_request(
            "PUT needs Type/id or Type?condition",
        )),
    }
}

async fn transaction(
    state: &AppState,
    base: &str,
    planned: Vec<Planned>,
) -> Result<Value, FhirError> {
    // 1. Give every create, and every conditional update whose resource has no id, an id for
    //    references to point at. Their conditions are resolved by the store inside the
    //    transaction; when one finds an existing resource, the store redirects those references.
    let mut references: HashMap<String, String> = HashMap::new();
    let mut assigned: HashMap<usize, String> = HashMap::new();
    for p in planned
        .iter()
        .filter(|p| matches!(p.method.as_str(), "POST" | "PUT"))
    {
        if let Some(resource) = &p.resource {
            crate::validate_op::enforce_declared_profiles(state, resource)
                .await
                .map_err(|e| entry_error(p.index, e))?;
        }
        let (resource_type, id, query) = split_url(&p.url);
        interactions::check_stored(state, resource_type).map_err(|e| entry_error(p.index, e))?;
        let target = match (p.method.as_str(), id, query) {
            ("POST", _, _) => {
                let fresh = uuid::Uuid::now_v7().to_string();
                assigned.insert(p.index, fresh.clone());
                fresh
            }
            (_, Some(id), None) => id.to_string(),
            (_, None, Some(_)) => match p.resource_id() {
                Some(own) => own,
                None => {
                    let fresh = uuid::Uuid::now_v7().to_string();
                    assigned.insert(p.index, fresh.clone());
                    fresh
                }
            },
            _ => continue,
        };
        if let Some(full_url) = &p.full_url {
            references.insert(full_url.clone(), format!("{resource_type}/{target}"));
        }
    }
    // 2. Resolve conditional references.
    let mut conditionals = Vec::new();
    for p in &planned {
        if let Some(resource) = &p.resource {
            conditional_references(resource, &mut conditionals);
        }
    }
    for reference in conditionals {
        if references.contains_key(&reference) {
            continue;
        }
        let (resource_type, condition) = reference.split_once('?').unwrap_or((&reference, ""));
        interactions::check_stored(state, resource_type)?;
        match resolve_condition(state, resource_type, condition).await? {
            Some(id) => {
                references.insert(reference.clone(), format!("{resource_type}/{id}"));
            }
            None => {
                return Err(FhirError::new(
                    StatusCode::PRECONDITION_FAILED,
                    IssueCode::NotFound,
                    format!("conditional reference '{reference}' matches no resource"),
                ));
            }
        }
    }
    // 3. Build the operations in FHIR's processing order: DELETE, POST, PUT; GETs run after.
    let mut order: Vec<&Planned> = planned.iter().collect();
    order.sort_by_key(|p| match p.method.as_str() {
        "DELETE" => 0,
        "POST" => 1,
        "PUT" | "PATCH" => 2,
        _ => 3,
    });
    // A PATCH is applied to the version current before the transaction, and stored as an
    // update of exactly that version: a write in between fails the transaction (412).
    let mut patches: HashMap<usize, WriteOp> = HashMap::new();
    for p in order.iter().filter(|p| p.method == "PATCH") {
        let if_match = p
            .if_match
            .as_deref()
            .map(parse_version)
            .transpose()
            .map_err(|e| entry_error(p.index, e))?;
        let update =
            crate::patch::bundle_entry_update(state, &p.url, p.resource.as_ref(), if_match)
                .await
                .map_err(|e| entry_error(p.index, e))?;
        patches.insert(p.index, update);
    }
    let mut ops = Vec::new();
    let mut op_entries = Vec::new();
    // A transaction succeeds or fails as a whole: a read it cannot make fails it before
    // anything is written.
    for p in order.iter().filter(|p| p.method == "GET") {
        read_target(state, &p.url).map_err(|e| entry_error(p.index, e))?;
    }
    for p in order.iter().filter(|p| p.method != "GET") {
        let (resource_type, _, _) = split_url(&p.url);
        interactions::check_stored(state, resource_type).map_err(|e| entry_error(p.index, e))?;
        let op = match p.method.as_str() {
            "DELETE" => delete_op(state, p),
            "PATCH" => patches.remove(&p.index).ok_or_else(|| {
                FhirError::from(StoreError::Backend("a PATCH entry was not prepared".into()))
            }),
            method => {
                let mut resource = p.resource.clone().ok_or_else(|| {
                    entry_error(p.index, FhirError::bad_request("entry.resource is missing"))
                })?;
                rewrite_references(&mut resource, &references);
                if method == "POST" {
                    create_op(state, p, resource, assigned.get(&p.index).cloned())
                } else {
                    put_op(state, p, resource, assigned.get(&p.index).cloned())
                }
            }
        }
        .map_err(|e| entry_error(p.index, e))?;
        op_entries.push((p.index, ops.len()));
        ops.push(op);
    }
    let outcomes = state.store.transaction(ops).await?;
    // 4. Responses in the order of the request.
    let mut responses: Vec<Value> = vec![Value::Null; planned.len()];
    for (index, op_index) in op_entries {
        responses[index] = outcome_entry(base, &outcomes[op_index]);
    }
    for p in planned.iter().filter(|p| p.method == "GET") {
        responses[p.index] = read_entry(state, base, &p.url).await;
    }
    Ok(
        json!({"resourceType": "Bundle", "id": uuid::Uuid::new_v4().to_string(), "type": "transaction-response", "entry": responses}),
    )
}

/// The operation for a POST entry: a create (with `id`, when pre-assigned in a transaction),
/// conditional on `ifNoneExist` when the entry has one.
fn create_op(
    state: &AppState,
    p: &Planned,
    mut resource: Value,
    id: Option<String>,
) -> Result<WriteOp, FhirError> {
    let (resource_type, _, _) = split_url(&p.url);
    if let Some(object) = resource.as_object_mut() {
        object.remove("id");
    }
    interactions::validate_for(&resource, resource_type)?;
    let if_none_exist = p
        .if_none_exist
        .as_deref()
        .map(|c| interactions::conditional_query(state, resource_type, c).map(Box::new))
        .transpose()?;
    Ok(WriteOp::Create {
        resource,
        id,
        if_none_exist,
    })
}

fn stored_entry(base: &str, stored: &StoredResource, status: &str) -> Value {
    json!({
        "fullUrl": format!("{base}/{}/{}", stored.resource_type, stored.id),
        "resource": serde_json::from_str::<Value>(&stored.json).unwrap_or(Value::Null),
        "response": {
            "status": status,
            "location": format!("{}/{}/_history/{}", stored.resource_type, stored.id, stored.version),
            "etag": format!("W/\"{}\"", stored.version),
            "lastModified": format_instant(stored.last_updated_ms),
        }
    })
}

fn outcome_entry(base: &str, outcome: &WriteOutcome) -> Value {
    match outcome {
        WriteOutcome::Created(stored) => stored_entry(base, stored, "201 Created"),
        WriteOutcome::Updated(stored) | WriteOutcome::Unchanged(stored) => {
            stored_entry(base, stored, "200 OK")
        }
        WriteOutcome::Deleted(_) => json!({"response": {"status": "204 No Content"}}),
    }
}

fn error_entry(error: FhirError) -> Value {
    json!({"response": {
        "status": format!("{} {}", error.status.as_u16(), error.status.canonical_reason().unwrap_or("")),
        "outcome": operation_outcome(&error.issues),
    }})
}

/// The `Type/id` a GET entry reads: a type the store holds and a valid id, nothing else. (An
/// external type is not read in a Bundle: its source is the embedder's, behind the
/// embedder's own routes and their access rules, which a Bundle's entries do not pass.)
fn read_target<'a>(state: &AppState, url: &'a str) -> Result<(&'a str, &'a str), FhirError> {
    let (resource_type, id, _) = split_url(url);
    let Some(id) = id.filter(|id| !id.contains('/')) else {
        return Err(FhirError::bad_request(
            "GET in a bundle supports Type/id reads only",
        ));
    };
    interactions::check_stored(state, resource_type)?;
    interactions::check_id(id)?;
    Ok((resource_type, id))
}

async fn read_entry(state: &AppState, base: &str, url: &str) -> Value {
    let (resource_type, id) = match read_target(state, url) {
        Ok(target) => target,
        Err(e) => return error_entry(e),
    };
    match state.store.read(resource_type, id).await {
        Ok(ReadOutcome::Found(stored)) => stored_entry(base, &stored, "200 OK"),
        Ok(ReadOutcome::Deleted { .. }) => error_entry(FhirError::new(
            StatusCode::GONE,
            IssueCode::Deleted,
            format!("{url} was deleted"),
        )),
        Ok(ReadOutcome::NotFound) => {
            error_entry(FhirError::not_found(format!("{url} is not known")))
        }
        Err(e) => error_entry(FhirError::from(e)),
    }
}

async fn batch(
    state: &Arc<AppState>,
    base: &str,
    planned: Vec<Planned>,
    preference: ReturnPreference,
) -> Value {
    let mut responses = vec![Value::Null; planned.len()];
    // Enforced profiles are checked entry by entry (they may read the store), so every
    // entry then takes the ordinary path.
    let bulk = |p: &Planned| is_plain_update(p) && !state.validation.enforcing();
    let (updates, others): (Vec<Planned>, Vec<Planned>) = planned.into_iter().partition(bulk);
    if !updates.is_empty() {
        for (index, response) in write_updates(state, base, updates, preference).await {
            responses[index] = response;
        }
    }
    for p in &others {
        responses[p.index] = match batch_entry(state, base, p).await {
            Ok(v) => v,
            Err(e) => error_entry(e),
        };
    }
    json!({"resourceType": "Bundle", "id": uuid::Uuid::new_v4().to_string(), "type": "batch-response", "entry": responses})
}

/// A `PUT Type/id` entry without `ifMatch`: an update that depends on nothing but its own
/// resource, so it can be written together with others of its kind.
fn is_plain_update(p: &Planned) -> bool {
    p.method == "PUT" && p.if_match.is_none() && matches!(split_url(&p.url), (_, Some(_), None))
}

/// Updates made ready for one store call, and the entries refused on the way.
struct PreparedUpdates {
    batch: ImportBatch,
    /// (entry index, resource type, id) of each resource in `batch`, in order.
    written: Vec<(usize, String, String)>,
    refused: Vec<(usize, Value)>,
}

/// Validates plain updates and adds them to an import batch: CPU work (validating, stamping,
/// indexing), run on the blocking pool so a batch of thousands does not hold up an async
/// worker.
fn prepare_updates(state: &AppState, updates: Vec<Planned>) -> PreparedUpdates {
    let mut prepared = PreparedUpdates {
        batch: state.store.import_batch(),
        written: Vec::with_capacity(updates.len()),
        refused: Vec::new(),
    };
    for mut p in updates {
        let (resource_type, id, _) = split_url(&p.url);
        let (resource_type, id) = (resource_type.to_string(), id.unwrap_or("").to_string());
        let op = interactions::check_stored(state, &resource_type).and_then(|()| {
            let resource = p
                .resource
                .take()
                .ok_or_else(|| FhirError::bad_request("entry.resource is missing"))?;
            put_op(state, &p, resource, None)
        });
        let pushed = match op {
            Ok(WriteOp::Update { resource, .. }) => {
                prepared.batch.push(resource).map_err(FhirError::from)
            }
            Ok(_) => Err(FhirError::bad_request("PUT needs Type/id")),
            Err(e) => Err(e),
        };
        match pushed {
            Ok(()) => prepared.written.push((p.index, resource_type, id)),
            Err(e) => prepared.refused.push((p.index, error_entry(e))),
        }
    }
    prepared
}

/// Writes a batch's plain updates in one store call and answers each entry on its own.
async fn write_updates(
    state: &Arc<AppState>,
    base: &str,
    updates: Vec<Planned>,
    preference: ReturnPreference,
) -> Vec<(usize, Value)> {
    let indexes: Vec<usize> = updates.iter().map(|p| p.index).collect();
    let prepared = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || prepare_updates(&state, updates)).await
    };
    let Ok(PreparedUpdates {
        batch,
        written,
        mut refused,
    }) = prepared
    else {
        let failed = || FhirError::from(StoreError::Backend("preparing the batch failed".into()));
        return indexes
            .into_iter()
            .map(|index| (index, error_entry(failed())))
            .collect();
    };
    let mut responses = std::mem::take(&mut refused);
    if batch.is_empty() {
        return responses;
    }
    match state.store.import(batch).await {
        Ok(outcomes) => {
            for ((index, resource_type, id), outcome) in written.into_iter().zip(outcomes) {
                let entry = imported_entry(state, base, &resource_type, &id, outcome, preference);
                responses.push((index, entry.await));
            }
        }
        Err(failure) if failure.ops.len() == written.len() => {
            tracing::debug!(error = %failure.error, "batch updates failed together; writing them one by one");
            for ((index, _, _), op) in written.into_iter().zip(failure.ops) {
                let entry = match state.store.write(op).await {
                    Ok(outcome) => outcome_entry(base, &outcome),
                    Err(e) => error_entry(FhirError::from(e)),
                };
                responses.push((index, entry));
            }
        }
        Err(failure) => {
            let reason = failure.error.to_string();
            responses.extend(written.into_iter().map(|(index, _, _)| {
                let failed = FhirError::from(StoreError::Backend(reason.clone()));
                (index, error_entry(failed))
            }));
        }
    }
    responses
}

/// The response entry of an update written on the bulk path. Without `return=minimal` the
/// resource is read back as stored (a write that came in since shows as its newer version).
async fn imported_entry(
    state: &AppState,
    base: &str,
    resource_type: &str,
    id: &str,
    outcome: ImportOutcome,
    preference: ReturnPreference,
) -> Value {
    let (status, version) = match outcome {
        ImportOutcome::Created => ("201 Created", 1),
        ImportOutcome::Updated { version } | ImportOutcome::Unchanged { version } => {
            ("200 OK", version)
        }
    };
    if preference != ReturnPreference::Minimal
        && let Ok(ReadOutcome::Found(stored)) = state.store.read(resource_type, id).await
    {
        return stored_entry(base, &stored, status);
    }
    json!({
        "fullUrl": format!("{base}/{resource_type}/{id}"),
        "response": {
            "status": status,
            "location": format!("{resource_type}/{id}/_history/{version}"),
            "etag": format!("W/\"{version}\""),
        }
    })
}

async fn batch_entry(state: &AppState, base: &str, p: &Planned) -> Result<Value, FhirError> {
    let (resource_type, _, _) = split_url(&p.url);
    if p.method == "GET" {
        return Ok(read_entry(state, base, &p.url).await);
    }
    interactions::check_stored(state, resource_type)?;
    let op = match p.method.as_str() {
        "DELETE" => delete_op(state, p)?,
        "PATCH" => {
            let if_match = p.if_match.as_deref().map(parse_version).transpose()?;
            crate::patch::bundle_entry_update(state, &p.url, p.resource.as_ref(), if_match).await?
        }
        method => {
            let resource = p
                .resource
                .clone()
                .ok_or_else(|| FhirError::bad_request("entry.resource is missing"))?;
            crate::validate_op::enforce_declared_profiles(state, &resource).await?;
            if method == "POST" {
                create_op(state, p, resource, None)?
            } else {
                put_op(state, p, resource, None)?
            }
        }
    };
    let outcome = state
        .store
        .write(op)
        .await
        .map_err(|e: StoreError| FhirError::from(e))?;
    Ok(outcome_entry(base, &outcome))
}
