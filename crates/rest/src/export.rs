//! FHIR Bulk Data export (`$export`, HL7 Bulk Data Access IG v2), asynchronous, as NDJSON.
//!
//! What it is: the kick-off at the three levels (`GET /fhir/$export`, every resource;
//! `GET /fhir/Patient/$export`, every Patient's compartment; `GET /fhir/Group/{id}/$export`,
//! the compartments of the Group's member Patients), with `Prefer: respond-async` required
//! and `_outputFormat`, `_type`, `_since` and `_typeFilter` understood; a background task per
//! job that reads
//! the store page by page (searches with keyset cursors per type, or `$everything` pages per
//! Patient) and writes the current, not deleted version of each resource as one line of an
//! NDJSON file per type in the job's own directory; the status endpoint
//! (`GET /fhir/$export-status/{id}`: 202 with `X-Progress` while running, 200 with the
//! manifest when done), its `DELETE` (cancels the job and removes its files), and the files
//! (`GET /fhir/$export-file/{id}/{name}`, streamed).
//!
//! What it is not: access control (the embedder's layer decides who may export; the node
//! allows only the organisation's own systems), `_elements`, `patient`,
//! `includeAssociatedData` or a `POST` kick-off (all 400 or 405), nor durable: jobs live in
//! the process's memory, so a restart forgets them (and [`Exports::new`] removes the files
//! they left). A server whose [`crate::AppState`] has no export directory
//! ([`crate::AppState::with_export_dir`]) answers 501 to every `$export` request.
//!
//! A resource in the compartments of several exported Patients is written once: the job keeps
//! the type and id of every resource it wrote at the Patient and Group levels (not the
//! resources themselves). `_since` keeps the resources last updated after that instant.
//!
//! `_typeFilter` (repeated, or several in one value separated by commas that stand before a
//! resource type and `?`) holds searches such as `Observation?code=http://loinc.org|718-7`:
//! a resource of a type with filters is exported when it matches at least one of them, a
//! type without filters is exported whole. A filter is checked at the kick-off like a search
//! under strict handling (an unknown parameter, or one that shapes results rather than
//! selecting them, such as `_include` or `_count`, is a 400), and its type must be one the
//! export includes. At the Patient and Group levels the ids matching a type's filters are
//! gathered first (ids only), and a compartment's resources of that type are kept when listed.

use crate::AppState;
use crate::error::FhirError;
use crate::interactions::{check_id, check_type, parse_instant_param, prefer_values, query_pairs};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use zorgnet_fhir::IssueCode;
use zorgnet_fhir::search::parse_search_query;
use zorgnet_store::{ReadOutcome, StoredResource};

type AppResult = Result<Response, FhirError>;

/// Most export jobs running at once per node; a kick-off beyond it is answered 429.
pub const MAX_CONCURRENT_EXPORTS: usize = 4;
/// How long a finished (or failed) job's manifest and files are kept, from its end.
pub const EXPORT_RETENTION: Duration = Duration::from_secs(60 * 60);
/// Resources read from the store per page (one search or `$everything` page).
pub const EXPORT_PAGE_RESOURCES: usize = zorgnet_fhir::search::MAX_PAGE_SIZE;
/// The `Retry-After` of a status answer while the job runs, in seconds.
pub const STATUS_RETRY_AFTER_SECONDS: u64 = 2;
/// The media type of the files.
pub const NDJSON: &str = "application/fhir+ndjson";
/// The `_outputFormat` values accepted (all meaning [`NDJSON`]).
const OUTPUT_FORMATS: [&str; 3] = ["application/fhir+ndjson", "application/ndjson", "ndjson"];

/// The export jobs of one server and the directory their files live in.
pub struct Exports {
    dir: PathBuf,
    jobs: Mutex<HashMap<String, Arc<Job>>>,
}

impl Exports {
    /// Jobs writing into `dir` (created when the first job starts). The directory is the
    /// export's own: job directories an earlier process left in it (named by UUID) are
    /// removed, since no job of this process refers to them.
    pub fn new(dir: PathBuf) -> Exports {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let stale = entry
                    .file_name()
                    .to_str()
                    .is_some_and(|name| uuid::Uuid::parse_str(name).is_ok());
                if stale {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        Exports {
            dir,
            jobs: Mutex::new(HashMap::new()),
        }
    }

    fn job(&self, id: &str) -> Option<Arc<Job>> {
        self.jobs.lock().ok()?.get(id).cloned()
    }

    fn job_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Forgets the job `id` if it is still `job`, and removes its files.
    async fn remove(&self, id: &str, job: &Arc<Job>) {
        if let Ok(mut jobs) = self.jobs.lock()
            && jobs.get(id).is_some_and(|j| Arc::ptr_eq(j, job))
        {
            jobs.remove(id);
        }
        let _ = tokio::fs::remove_dir_all(self.job_dir(id)).await;
    }
}

/// One export job.
struct Job {
    /// The kick-off's URL, for the manifest.
    request: String,
    /// When the kick-off was accepted (a FHIR instant).
    transaction_time: String,
    /// Resources written so far.
    written: AtomicU64,
    /// Set by `DELETE`; the task stops at its next page.
    cancelled: AtomicBool,
    state: Mutex<JobState>,
}

enum JobState {
    Running,
    Done(Vec<OutputFile>),
    Failed,
}

/// One NDJSON file of a finished job.
struct OutputFile {
    resource_type: String,
    name: String,
    count: u64,
}

/// Which resources a job exports.
enum Level {
    /// Every resource of the types.
    System,
    /// The compartments of every Patient.
    AllPatients,
    /// The compartments of these Patients (a Group's members).
    Patients(Vec<String>),
}

/// What a kick-off asked for.
struct Plan {
    level: Level,
    /// `_type`; empty: every type.
    types: Vec<String>,
    /// `_since`, epoch milliseconds.
    since_ms: Option<i64>,
    /// `_typeFilter`: per type, the searches (parameter pairs) of which a resource must match
    /// one. A type not here is exported whole.
    filters: BTreeMap<String, Vec<Vec<(String, String)>>>,
}

/// Most `_typeFilter` searches in one kick-off.
pub const MAX_TYPE_FILTERS: usize = 32;
/// Search parameters that shape a result rather than select resources: refused in a
/// `_typeFilter`.
const FILTER_SHAPING_PARAMETERS: [&str; 11] = [
    "_count",
    "_sort",
    "_include",
    "_revinclude",
    "_summary",
    "_elements",
    "_total",
    "_contained",
    "_containedType",
    "_format",
    "_pretty",
];

/// Splits a `_typeFilter` value into its searches: at each comma that stands before a
/// resource type name and `?` (a comma inside a search, an OR of values, stays).
fn split_type_filters(value: &str) -> Vec<&str> {
    let mut filters = Vec::new();
    let mut start = 0;
    for (at, _) in value.match_indices(',') {
        let rest = &value[at + 1..];
        let starts_search = rest.split_once('?').is_some_and(|(name, _)| {
            name.starts_with(|c: char| c.is_ascii_uppercase())
                && name.chars().all(|c| c.is_ascii_alphanumeric())
        });
        if starts_search {
            filters.push(&value[start..at]);
            start = at + 1;
        }
    }
    filters.push(&value[start..]);
    filters
}

/// Checks one `_typeFilter` search (`Type?query`) as a search of its type would be checked
/// under strict handling, and answers its type and parameter pairs.
fn parse_type_filter(
    state: &AppState,
    filter: &str,
) -> Result<(String, Vec<(String, String)>), FhirError> {
    let bad = |why: &str| FhirError::bad_request(format!("_typeFilter '{filter}': {why}"));
    let (resource_type, query) = filter
        .split_once('?')
        .ok_or_else(|| bad("a filter is a search: Type?parameters"))?;
    check_type(resource_type).map_err(|_| bad("unknown resource type"))?;
    state.refuse_external(resource_type)?;
    let pairs = query_pairs(Some(query));
    if pairs.is_empty() {
        return Err(bad("the search has no parameters"));
    }
    if let Some((name, _)) = pairs.iter().find(|(name, _)| {
        let base = name.split(':').next().unwrap_or_default();
        FILTER_SHAPING_PARAMETERS.contains(&base)
    }) {
        return Err(bad(&format!(
            "'{name}' shapes a result and does not select resources"
        )));
    }
    let parsed = parse_search_query(&state.store.registry(), Some(resource_type), &pairs)
        .map_err(|issue| bad(&issue.diagnostics))?;
    if !parsed.unknown.is_empty() {
        return Err(bad(&format!(
            "unknown search parameter(s): {}",
            parsed.unknown.join(", ")
        )));
    }
    Ok((resource_type.to_string(), pairs))
}

/// The routes of the status and file endpoints and of the system-level kick-off; the
/// Patient- and Group-level kick-offs are dispatched from `interactions` (their paths match
/// the routes of reads and instance operations).
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/fhir/$export", get(kick_off_system))
        .route("/fhir/$export-status/{id}", get(status).delete(cancel))
        .route("/fhir/$export-file/{id}/{name}", get(file))
}

fn exports(state: &AppState) -> Result<&Arc<Exports>, FhirError> {
    state.exports.as_ref().ok_or_else(|| {
        FhirError::new(
            StatusCode::NOT_IMPLEMENTED,
            IssueCode::NotSupported,
            "this server has no export directory configured; $export is not available",
        )
    })
}

async fn kick_off_system(
    State(state): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> AppResult {
    kick_off(&state, "$export", raw.as_deref(), &headers, Level::System)
}

/// `GET /fhir/Patient/$export`.
pub(crate) fn kick_off_patients(
    state: &Arc<AppState>,
    raw: Option<&str>,
    headers: &HeaderMap,
) -> AppResult {
    kick_off(state, "Patient/$export", raw, headers, Level::AllPatients)
}

/// `GET /fhir/Group/{id}/$export`: the Group must exist; its members that are Patients
/// (`Patient/{id}` references, active or without `inactive`) are exported.
pub(crate) async fn kick_off_group(
    state: &Arc<AppState>,
    id: &str,
    raw: Option<&str>,
    headers: &HeaderMap,
) -> AppResult {
    exports(state)?;
    let group = match state.store.read("Group", id).await? {
        ReadOutcome::Found(stored) => stored,
        ReadOutcome::Deleted { .. } => {
            return Err(FhirError::new(
                StatusCode::GONE,
                IssueCode::Deleted,
                format!("Group/{id} was deleted"),
            ));
        }
        ReadOutcome::NotFound => {
            return Err(FhirError::not_found(format!("Group/{id} is not known")));
        }
    };
    let group: Value = serde_json::from_str(&group.json)
        .map_err(|_| FhirError::bad_request(format!("Group/{id} could not be read")))?;
    let patients = members(&group, &state.base_url);
    kick_off(
        state,
        &format!("Group/{id}/$export"),
        raw,
        headers,
        Level::Patients(patients),
    )
}

/// The ids of a Group's active members that are Patients, each once.
fn members(group: &Value, base: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for member in group["member"].as_array().into_iter().flatten() {
        if member["inactive"] == Value::Bool(true) {
            continue;
        }
        let Some(reference) = member["entity"]["reference"].as_str() else {
            continue;
        };
        let local = reference
            .strip_prefix(base)
            .map_or(reference, |r| r.trim_start_matches('/'));
        if let Some(id) = local.strip_prefix("Patient/")
            && check_id(id).is_ok()
            && !ids.iter().any(|known| known == id)
        {
            ids.push(id.to_string());
        }
    }
    ids
}

/// Checks the request, registers the job and starts its task: 202 with the status URL.
fn kick_off(
    state: &Arc<AppState>,
    path: &str,
    raw: Option<&str>,
    headers: &HeaderMap,
    level: Level,
) -> AppResult {
    let exports = exports(state)?.clone();
    if !prefer_values(headers).iter().any(|p| p == "respond-async") {
        return Err(FhirError::bad_request(
            "$export is asynchronous: send the header 'Prefer: respond-async'",
        ));
    }
    let mut plan = Plan {
        level,
        types: Vec::new(),
        since_ms: None,
        filters: BTreeMap::new(),
    };
    let mut filter_count = 0;
    for (name, value) in query_pairs(raw) {
        match name.as_str() {
            "_outputFormat" => {
                if !OUTPUT_FORMATS.contains(&value.as_str()) {
                    return Err(FhirError::bad_request(format!(
                        "_outputFormat '{value}' is not supported; use application/fhir+ndjson"
                    )));
                }
            }
            "_type" => {
                for t in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    check_type(t).map_err(|_| {
                        FhirError::bad_request(format!("unknown resource type '{t}' in _type"))
                    })?;
                    state.refuse_external(t)?;
                    if !plan.types.iter().any(|known| known == t) {
                        plan.types.push(t.to_string());
                    }
                }
            }
            "_since" => plan.since_ms = Some(parse_instant_param("_since", &value)?),
            "_typeFilter" => {
                for filter in split_type_filters(&value) {
                    filter_count += 1;
                    if filter_count > MAX_TYPE_FILTERS {
                        return Err(FhirError::bad_request(format!(
                            "at most {MAX_TYPE_FILTERS} _typeFilter searches"
                        )));
                    }
                    let (resource_type, pairs) = parse_type_filter(state, filter)?;
                    plan.filters.entry(resource_type).or_default().push(pairs);
                }
            }
            "_format" | "_pretty" => {}
            other => {
                return Err(FhirError::new(
                    StatusCode::BAD_REQUEST,
                    IssueCode::NotSupported,
                    format!("the $export parameter '{other}' is not supported"),
                ));
            }
        }
    }
    if let Some(outside) = plan
        .filters
        .keys()
        .find(|t| !plan.types.is_empty() && !plan.types.contains(t))
    {
        return Err(FhirError::bad_request(format!(
            "_typeFilter names {outside}, which _type leaves out of the export"
        )));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let job = Arc::new(Job {
        request: match raw.filter(|q| !q.is_empty()) {
            Some(query) => format!("{}/{path}?{query}", state.base_url),
            None => format!("{}/{path}", state.base_url),
        },
        transaction_time: zorgnet_fhir::datetime::format_instant(zorgnet_store::now_ms()),
        written: AtomicU64::new(0),
        cancelled: AtomicBool::new(false),
        state: Mutex::new(JobState::Running),
    });
    {
        let mut jobs = exports.jobs.lock().map_err(|_| unavailable())?;
        let running = jobs
            .values()
            .filter(|j| matches!(j.state.lock().as_deref(), Ok(JobState::Running)))
            .count();
        if running >= MAX_CONCURRENT_EXPORTS {
            return Err(FhirError::new(
                StatusCode::TOO_MANY_REQUESTS,
                IssueCode::TooCostly,
                format!("{MAX_CONCURRENT_EXPORTS} exports are running already; try again later"),
            ));
        }
        jobs.insert(id.clone(), job.clone());
    }
    tokio::spawn(run_job(state.clone(), exports, id.clone(), job, plan));
    let mut response = StatusCode::ACCEPTED.into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("{}/$export-status/{id}", state.base_url))
    {
        response
            .headers_mut()
            .insert(header::CONTENT_LOCATION, location);
    }
    Ok(response)
}

/// Why a job stopped before its end.
enum Stop {
    /// `DELETE` on its status URL.
    Cancelled,
    /// The store or the file system failed (the text goes to the log, not to the client).
    Failed(String),
}

impl From<zorgnet_store::StoreError> for Stop {
    fn from(e: zorgnet_store::StoreError) -> Stop {
        Stop::Failed(e.to_string())
    }
}

impl From<std::io::Error> for Stop {
    fn from(e: std::io::Error) -> Stop {
        Stop::Failed(format!("writing an export file: {e}"))
    }
}

/// The task of one job: writes its files, records the outcome, and removes everything
/// [`EXPORT_RETENTION`] after the end (at once when cancelled).
async fn run_job(
    state: Arc<AppState>,
    exports: Arc<Exports>,
    id: String,
    job: Arc<Job>,
    plan: Plan,
) {
    let mut outputs = Outputs {
        dir: exports.job_dir(&id),
        files: BTreeMap::new(),
        job: job.clone(),
    };
    let result = match tokio::fs::create_dir_all(&outputs.dir).await {
        Ok(()) => write_all(&state, &plan, &mut outputs).await,
        Err(e) => Err(Stop::from(e)),
    };
    let result = match result {
        Ok(()) => outputs.finish().await,
        Err(stop) => Err(stop),
    };
    // The task outlives the answer by [`EXPORT_RETENTION`]; it need not keep the store open.
    drop(state);
    let outcome = match result {
        Ok(files) => JobState::Done(files),
        Err(Stop::Cancelled) => {
            exports.remove(&id, &job).await;
            return;
        }
        Err(Stop::Failed(message)) => {
            tracing::error!(error = %crate::error::loggable(&message), "export failed");
            let _ = tokio::fs::remove_dir_all(exports.job_dir(&id)).await;
            JobState::Failed
        }
    };
    if let Ok(mut state) = job.state.lock() {
        *state = outcome;
    }
    if job.cancelled.load(Ordering::SeqCst) {
        exports.remove(&id, &job).await;
        return;
    }
    tokio::time::sleep(EXPORT_RETENTION).await;
    exports.remove(&id, &job).await;
}

/// The open files of a running job, one per type, with their line counts.
struct Outputs {
    dir: PathBuf,
    files: BTreeMap<String, (tokio::io::BufWriter<tokio::fs::File>, u64)>,
    job: Arc<Job>,
}

impl Outputs {
    /// Appends one resource as one line of its type's file.
    async fn write(&mut self, resource: &StoredResource) -> Result<(), Stop> {
        if !self.files.contains_key(&resource.resource_type) {
            let file =
                tokio::fs::File::create(self.dir.join(file_name(&resource.resource_type))).await?;
            self.files.insert(
                resource.resource_type.clone(),
                (tokio::io::BufWriter::new(file), 0),
            );
        }
        let Some((writer, count)) = self.files.get_mut(&resource.resource_type) else {
            return Err(Stop::Failed("an export file was not opened".into()));
        };
        // Stored JSON is compact; re-serialised only if it ever holds a line break.
        if resource.json.contains('\n') {
            let value: Value = serde_json::from_str(&resource.json)
                .map_err(|e| Stop::Failed(format!("a stored resource is not JSON: {e}")))?;
            writer.write_all(value.to_string().as_bytes()).await?;
        } else {
            writer.write_all(resource.json.as_bytes()).await?;
        }
        writer.write_all(b"\n").await?;
        *count += 1;
        self.job.written.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Stops here when the job was cancelled.
    fn check_cancelled(&self) -> Result<(), Stop> {
        if self.job.cancelled.load(Ordering::SeqCst) {
            Err(Stop::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Flushes and closes every file: the manifest's outputs.
    async fn finish(self) -> Result<Vec<OutputFile>, Stop> {
        let mut outputs = Vec::new();
        for (resource_type, (mut writer, count)) in self.files {
            writer.flush().await?;
            writer.get_mut().sync_all().await?;
            outputs.push(OutputFile {
                name: file_name(&resource_type),
                resource_type,
                count,
            });
        }
        Ok(outputs)
    }
}

/// The name of a type's file in a job's directory.
fn file_name(resource_type: &str) -> String {
    format!("{resource_type}-1.ndjson")
}

/// Reads what the plan asks for, page by page, into the files.
async fn write_all(state: &AppState, plan: &Plan, outputs: &mut Outputs) -> Result<(), Stop> {
    match &plan.level {
        Level::System => {
            let types = if plan.types.is_empty() {
                let mut held: Vec<String> = state
                    .store
                    .counts()
                    .await?
                    .into_iter()
                    .filter(|(t, count)| *count > 0 && state.external(t).is_none())
                    .map(|(t, _)| t)
                    .collect();
                held.sort();
                held
            } else {
                plan.types.clone()
            };
            for resource_type in &types {
                match plan.filters.get(resource_type) {
                    None => {
                        write_search(state, resource_type, &[], plan.since_ms, None, outputs)
                            .await?;
                    }
                    Some(filters) => {
                        // A resource matching several filters is written once.
                        let mut seen = HashSet::new();
                        let dedupe = filters.len() > 1;
                        for filter in filters {
                            write_search(
                                state,
                                resource_type,
                                filter,
                                plan.since_ms,
                                dedupe.then_some(&mut seen),
                                outputs,
                            )
                            .await?;
                        }
                    }
                }
            }
        }
        Level::AllPatients => {
            let allowed = filtered_ids(state, plan, outputs).await?;
            let mut seen = HashSet::new();
            let mut cursor = None;
            loop {
                outputs.check_cancelled()?;
                let page = type_page(state, "Patient", &[], None, cursor).await?;
                for patient in &page.matches {
                    compartment(state, plan, &allowed, &patient.id, &mut seen, outputs).await?;
                }
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        Level::Patients(ids) => {
            let allowed = filtered_ids(state, plan, outputs).await?;
            let mut seen = HashSet::new();
            for id in ids {
                compartment(state, plan, &allowed, id, &mut seen, outputs).await?;
            }
        }
    }
    Ok(())
}

/// Writes every current resource of `resource_type` matching `filter` (no filter: all),
/// page by page; with `written`, only those not written before (and notes them).
async fn write_search(
    state: &AppState,
    resource_type: &str,
    filter: &[(String, String)],
    since_ms: Option<i64>,
    mut written: Option<&mut HashSet<String>>,
    outputs: &mut Outputs,
) -> Result<(), Stop> {
    let mut cursor = None;
    loop {
        outputs.check_cancelled()?;
        let page = type_page(state, resource_type, filter, since_ms, cursor).await?;
        for resource in &page.matches {
            let first = written
                .as_deref_mut()
                .is_none_or(|seen| seen.insert(resource.id.clone()));
            if first {
                outputs.write(resource).await?;
            }
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(()),
        }
    }
}

/// Per type with `_typeFilter` searches, the ids of the resources matching at least one.
async fn filtered_ids(
    state: &AppState,
    plan: &Plan,
    outputs: &Outputs,
) -> Result<HashMap<String, HashSet<String>>, Stop> {
    let mut allowed: HashMap<String, HashSet<String>> = HashMap::new();
    for (resource_type, filters) in &plan.filters {
        let ids = allowed.entry(resource_type.clone()).or_default();
        for filter in filters {
            let mut cursor = None;
            loop {
                outputs.check_cancelled()?;
                let page = type_page(state, resource_type, filter, None, cursor).await?;
                ids.extend(page.matches.into_iter().map(|r| r.id));
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
    }
    Ok(allowed)
}

/// One page of the current resources of a type matching `filter` (no filter: all), in the
/// store's order, last updated after `since_ms` when given.
async fn type_page(
    state: &AppState,
    resource_type: &str,
    filter: &[(String, String)],
    since_ms: Option<i64>,
    cursor: Option<String>,
) -> Result<zorgnet_store::SearchResult, Stop> {
    let mut pairs = vec![
        ("_count".to_string(), EXPORT_PAGE_RESOURCES.to_string()),
        ("_total".to_string(), "none".to_string()),
    ];
    pairs.extend_from_slice(filter);
    if let Some(since) = since_ms {
        pairs.push((
            "_lastUpdated".to_string(),
            format!("ge{}", zorgnet_fhir::datetime::format_instant(since + 1)),
        ));
    }
    let mut query = parse_search_query(&state.store.registry(), Some(resource_type), &pairs)
        .map_err(|issue| Stop::Failed(format!("the export's search: {}", issue.diagnostics)))?;
    query.cursor = cursor;
    Ok(state.store.search(query).await?)
}

/// Writes one Patient's compartment (the types of the plan, or all), skipping what an earlier
/// Patient's compartment already wrote. A Patient unknown or deleted has none.
async fn compartment(
    state: &AppState,
    plan: &Plan,
    allowed: &HashMap<String, HashSet<String>>,
    patient: &str,
    seen: &mut HashSet<(String, String)>,
    outputs: &mut Outputs,
) -> Result<(), Stop> {
    let mut cursor = None;
    loop {
        outputs.check_cancelled()?;
        let page = state
            .store
            .everything(
                patient,
                plan.since_ms.map(|since| since + 1),
                plan.types.clone(),
                EXPORT_PAGE_RESOURCES,
                cursor,
            )
            .await?;
        for resource in &page.matches {
            let kept = allowed
                .get(&resource.resource_type)
                .is_none_or(|ids| ids.contains(&resource.id));
            if kept && seen.insert((resource.resource_type.clone(), resource.id.clone())) {
                outputs.write(resource).await?;
            }
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(()),
        }
    }
}

/// A lock poisoned by a panic elsewhere: the server's failure, not the client's.
fn unavailable() -> FhirError {
    FhirError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        IssueCode::Exception,
        "the export registry is unavailable",
    )
}

fn unknown_job(id: &str) -> FhirError {
    FhirError::not_found(format!("no export job '{id}'"))
}

/// `GET /fhir/$export-status/{id}`.
async fn status(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> AppResult {
    let exports = exports(&state)?;
    let job = exports.job(&id).ok_or_else(|| unknown_job(&id))?;
    let guard = job.state.lock().map_err(|_| unavailable())?;
    match &*guard {
        JobState::Running => {
            let mut response = StatusCode::ACCEPTED.into_response();
            let progress = format!("{} resources", job.written.load(Ordering::Relaxed));
            if let Ok(v) = HeaderValue::from_str(&progress) {
                response.headers_mut().insert("x-progress", v);
            }
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(STATUS_RETRY_AFTER_SECONDS),
            );
            Ok(response)
        }
        JobState::Failed => Err(FhirError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            IssueCode::Exception,
            "the export failed; see the server log",
        )),
        JobState::Done(files) => {
            let output: Vec<Value> = files
                .iter()
                .map(|f| {
                    json!({
                        "type": f.resource_type,
                        "url": format!("{}/$export-file/{id}/{}", state.base_url, f.name),
                        "count": f.count,
                    })
                })
                .collect();
            let manifest = json!({
                "transactionTime": job.transaction_time,
                "request": job.request,
                "requiresAccessToken": true,
                "output": output,
                "error": [],
            });
            let mut response = (StatusCode::OK, manifest.to_string()).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(response)
        }
    }
}

/// `DELETE /fhir/$export-status/{id}`: cancels a running job, removes a job's files; 202.
async fn cancel(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> AppResult {
    let exports = exports(&state)?;
    let job = exports.job(&id).ok_or_else(|| unknown_job(&id))?;
    job.cancelled.store(true, Ordering::SeqCst);
    exports.remove(&id, &job).await;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `GET /fhir/$export-file/{id}/{name}`: only a name the finished job listed is served.
async fn file(
    State(state): State<Arc<AppState>>,
    Path((id, name)): Path<(String, String)>,
) -> AppResult {
    let exports = exports(&state)?;
    let job = exports.job(&id).ok_or_else(|| unknown_job(&id))?;
    let listed = matches!(
        job.state.lock().as_deref(),
        Ok(JobState::Done(files)) if files.iter().any(|f| f.name == name)
    );
    if !listed {
        return Err(FhirError::not_found(format!(
            "export job '{id}' has no file '{name}'"
        )));
    }
    let file = tokio::fs::File::open(exports.job_dir(&id).join(&name))
        .await
        .map_err(|_| FhirError::not_found(format!("export file '{name}' is gone")))?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_filters_split_only_before_a_search() {
        assert_eq!(
            split_type_filters(
                "Observation?code=a,b&status=final,Condition?clinical-status=active"
            ),
            vec![
                "Observation?code=a,b&status=final",
                "Condition?clinical-status=active"
            ]
        );
        assert_eq!(
            split_type_filters("MedicationRequest?status=active"),
            vec!["MedicationRequest?status=active"]
        );
        assert_eq!(
            split_type_filters("Observation?value-string=x,Y?z"),
            vec!["Observation?value-string=x", "Y?z"]
        );
        assert_eq!(
            split_type_filters("Observation?code=x,lower?y"),
            vec!["Observation?code=x,lower?y"]
        );
    }

    #[test]
    fn members_are_the_active_patients_each_once() {
        let group = json!({
            "resourceType": "Group",
            "member": [
                {"entity": {"reference": "Patient/a"}},
                {"entity": {"reference": "Patient/a"}},
                {"entity": {"reference": "http://x/fhir/Patient/b"}},
                {"entity": {"reference": "Patient/c"}, "inactive": true},
                {"entity": {"reference": "Practitioner/d"}},
                {"entity": {"reference": "Patient/../e"}},
            ]
        });
        assert_eq!(members(&group, "http://x/fhir"), vec!["a", "b"]);
    }
}
