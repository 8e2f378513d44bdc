//! Topic-based Subscriptions in the style of the HL7 "Subscriptions R5 Backport" IG for R4,
//! over the `rest-hook` channel: how a record system learns of new data without polling.
//!
//! # What a Subscription looks like (R4, backport conventions)
//!
//! * Topics: one per resource type, canonical `http://zorgnet.nl/fhir/SubscriptionTopic/{Type}`
//!   ([`TOPIC_PREFIX`]): any create, update or delete of a resource of that type. There are no
//!   SubscriptionTopic resources; the canonical is the topic. `Subscription.criteria` names it.
//! * Filters: the `_criteria` extensions [`FILTER_CRITERIA_EXTENSION`] (`valueString`
//!   `Observation?patient=Patient/123&code=http://loinc.org|718-7`), each a search on the
//!   topic's type; several are ANDed. A change matches when the search
//!   `Type?<filter>&_id=<id>` finds the version it made; a delete when it finds the version
//!   before it. Each version is matched exactly as stored: the dispatcher writes it to a
//!   scratch SQLite store of its own (in a temporary directory, renewed every
//!   [`SCRATCH_RENEW_AFTER`] versions) and runs the filter there, with the same search code
//!   and parameters as the node. Filters on chains (`patient.name=`) or `_has` therefore never
//!   match (the scratch store holds only the one resource).
//! * Channel: `type` = `rest-hook`; `endpoint` an `http` or `https` URL; `header` strings
//!   `Name: value`, sent with every notification; `payload` the MIME type of the body
//!   (`application/fhir+json`, the default, or `application/json`); the payload's
//!   [`PAYLOAD_CONTENT_EXTENSION`] `empty`, `id-only` (the default) or `full-resource`; and
//!   optionally [`HEARTBEAT_PERIOD_EXTENSION`] (`valueUnsignedInt`, seconds).
//!
//! A Subscription that breaks these rules (a channel other than `rest-hook`, an endpoint that
//! is not http(s), a topic that does not exist, a filter that does not parse or is on another
//! type, an unsupported payload) is accepted by the write path like any resource; the
//! dispatcher then sets it to `error` with the reason in `Subscription.error`.
//!
//! # Notifications
//!
//! A Bundle of `type` `history` whose first entry is a `Parameters` resource (the R4
//! backport's SubscriptionStatus): `subscription`, `topic`, `status`, `type`
//! (`handshake`, `heartbeat` or `event-notification`), `events-since-subscription-start`
//! (a `valueString`, as the backport does for R4's missing integer64) and, for an event,
//! one `notification-event` with `event-number`, `timestamp` and `focus`. Then, per event,
//! an entry for the focus: with the resource for `full-resource` (never for a delete),
//! `fullUrl` and `request`/`response` only for `id-only`, and nothing for `empty` (whose
//! `notification-event` carries no `focus` either). One event per notification.
//!
//! A Subscription with status `requested` gets a `handshake` first; a 2xx answer sets it to
//! `active`, anything else (after the retries) to `error`. A Subscription stored as
//! `active` (a node restart) gets no handshake.
//!
//! # Delivery
//!
//! [`spawn_dispatcher`] follows the store's global change sequence by polling
//! ([`DispatcherConfig::poll_interval`]), starting at the end of the sequence when it starts:
//! the position is kept in memory only, so **changes made while the node was down are never
//! notified**. Each Subscription with status `requested` or `active` has its own delivery
//! task and bounded queue ([`MAX_QUEUED_NOTIFICATIONS`]): notifications of one subscription
//! go out in change order, and a slow or failing endpoint never holds up another. Delivery is
//! at least once while the node runs: each notification is tried up to
//! [`MAX_DELIVERY_ATTEMPTS`] times with exponential backoff ([`FIRST_RETRY_DELAY`] doubling up
//! to [`MAX_RETRY_DELAY`]), each attempt limited to [`REQUEST_TIMEOUT`]; redirects are not
//! followed. When the attempts are used up, or the queue is full, the Subscription is set to
//! `error` (its event count is kept) and its later events are dropped until a client sets
//! it back to `requested`. Event counts (`events-since-subscription-start`) are kept in
//! memory per dispatcher.
//!
//! Limits: on PostgreSQL, a transaction that commits after a later-numbered one may be
//! missed (the dispatcher reads the sequence in order and never goes back). Nothing in the
//! log names a resource's content; ids of Subscriptions only.
//!
//! `GET /fhir/Subscription/{id}/$status` ([`routes`]) answers a `searchset` Bundle with the
//! Subscription's status Parameters (`type` `query-status`).

use crate::AppState;
use crate::error::{FHIR_JSON, FhirError};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use reqwest::header::{HeaderMap, HeaderName};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use zorgnet_fhir::search::{SearchQuery, parse_search_query};
use zorgnet_store::{HistoryEntry, HistoryScope, ReadOutcome, StoreError, WriteOp};

/// The start of every topic canonical; the resource type follows.
pub const TOPIC_PREFIX: &str = "http://zorgnet.nl/fhir/SubscriptionTopic/";
/// The backport's filter extension on `Subscription.criteria` (`_criteria`).
pub const FILTER_CRITERIA_EXTENSION: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria";
/// The backport's payload content extension on `Subscription.channel.payload`.
pub const PAYLOAD_CONTENT_EXTENSION: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content";
/// The backport's heartbeat period extension on `Subscription.channel` (seconds).
pub const HEARTBEAT_PERIOD_EXTENSION: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period";

/// Attempts at delivering one notification before the Subscription is set to `error`.
pub const MAX_DELIVERY_ATTEMPTS: u32 = 6;
/// Wait before the second attempt; it doubles for each later one.
pub const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Longest wait between two attempts.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);
/// Time limit of one delivery request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the dispatcher looks for new changes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Notifications waiting per Subscription; a full queue sets the Subscription to `error`.
pub const MAX_QUEUED_NOTIFICATIONS: usize = 1_000;
/// Subscriptions served at once; more are set to `error`.
pub const MAX_SUBSCRIPTIONS: usize = 1_000;
/// Changes read from the store in one page.
pub const HISTORY_PAGE_SIZE: usize = 200;
/// Versions matched in one scratch store before it is replaced by an empty one.
pub const SCRATCH_RENEW_AFTER: usize = 10_000;
/// Shortest heartbeat period honoured, in seconds.
pub const MIN_HEARTBEAT_SECONDS: u64 = 1;
/// Attempts at a status change of a Subscription that a concurrent write gets in the way of.
const STATUS_UPDATE_ATTEMPTS: u32 = 3;
/// Search parameters a filter may not use: they shape results, not select them.
const RESULT_PARAMETERS: [&str; 9] = [
    "_count",
    "_sort",
    "_include",
    "_revinclude",
    "_summary",
    "_elements",
    "_total",
    "_contained",
    "_format",
];

/// The dispatcher's timing and limits; [`Default`] gives the production constants.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// See [`MAX_DELIVERY_ATTEMPTS`].
    pub max_attempts: u32,
    /// See [`FIRST_RETRY_DELAY`].
    pub first_retry_delay: Duration,
    /// See [`MAX_RETRY_DELAY`].
    pub max_retry_delay: Duration,
    /// See [`REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
    /// See [`POLL_INTERVAL`].
    pub poll_interval: Duration,
    /// See [`MAX_QUEUED_NOTIFICATIONS`].
    pub queue_limit: usize,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            max_attempts: MAX_DELIVERY_ATTEMPTS,
            first_retry_delay: FIRST_RETRY_DELAY,
            max_retry_delay: MAX_RETRY_DELAY,
            request_timeout: REQUEST_TIMEOUT,
            poll_interval: POLL_INTERVAL,
            queue_limit: MAX_QUEUED_NOTIFICATIONS,
        }
    }
}

impl DispatcherConfig {
    /// The wait before attempt `attempt` (2, 3, …).
    fn retry_delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(2).min(30);
        self.first_retry_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_retry_delay)
    }
}

/// What the dispatchers of this process know that `$status` reports: event counts per
/// Subscription id, per server state.
#[derive(Default)]
struct Counts {
    events: Mutex<HashMap<String, u64>>,
}

impl Counts {
    fn get(&self, id: &str) -> u64 {
        self.events
            .lock()
            .map(|m| m.get(id).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Counts one more event and returns its number.
    fn next(&self, id: &str) -> u64 {
        match self.events.lock() {
            Ok(mut m) => {
                let count = m.entry(id.to_string()).or_insert(0);
                *count += 1;
                *count
            }
            Err(_) => 0,
        }
    }

    fn forget(&self, id: &str) {
        if let Ok(mut m) = self.events.lock() {
            m.remove(id);
        }
    }
}

type Registry = Mutex<Vec<(Weak<AppState>, Arc<Counts>)>>;

fn registry() -> &'static Registry {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(Vec::new()))
}

/// The counts of the dispatcher of `state`, made on first use.
fn counts_of(state: &Arc<AppState>) -> Arc<Counts> {
    let Ok(mut registry) = registry().lock() else {
        return Arc::new(Counts::default());
    };
    registry.retain(|(weak, _)| weak.strong_count() > 0);
    let weak = Arc::downgrade(state);
    if let Some((_, counts)) = registry.iter().find(|(w, _)| w.ptr_eq(&weak)) {
        return counts.clone();
    }
    let counts = Arc::new(Counts::default());
    registry.push((weak, counts.clone()));
    counts
}

/// What a Subscription's payload carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Empty,
    IdOnly,
    FullResource,
}

/// A Subscription as the dispatcher serves it.
#[derive(Debug, Clone)]
struct Plan {
    id: String,
    topic: String,
    resource_type: String,
    /// The filters' pairs together (ANDed); empty: everything of the type.
    filter: Vec<(String, String)>,
    endpoint: reqwest::Url,
    headers: HeaderMap,
    mime: String,
    content: Content,
    heartbeat: Option<Duration>,
    /// Everything the plan was made from, to tell a changed Subscription.
    fingerprint: String,
}

/// Reads a Subscription into a plan, or says why it cannot be served.
fn plan(state: &AppState, id: &str, subscription: &Value) -> Result<Plan, String> {
    let topic = subscription
        .get("criteria")
        .and_then(Value::as_str)
        .ok_or("Subscription.criteria must name a topic")?;
    let resource_type = topic
        .strip_prefix(TOPIC_PREFIX)
        .filter(|t| zorgnet_fhir::model::r4().is_resource_type(t) && state.external(t).is_none())
        .ok_or_else(|| format!("unknown topic '{topic}'; topics are {TOPIC_PREFIX}{{Type}}"))?;
    let mut filter = Vec::new();
    let extensions = subscription
        .pointer("/_criteria/extension")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| e.get("url").and_then(Value::as_str) == Some(FILTER_CRITERIA_EXTENSION));
    for extension in extensions {
        let text = extension
            .get("valueString")
            .and_then(Value::as_str)
            .ok_or("a filter criteria extension needs a valueString")?;
        let (filter_type, query) = text.split_once('?').unwrap_or((text, ""));
        if filter_type != resource_type {
            return Err(format!(
                "filter '{text}' is not on the topic's type {resource_type}"
            ));
        }
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let base = name.split(':').next().unwrap_or_default();
            if RESULT_PARAMETERS.contains(&base) || base == "_id" {
                return Err(format!("filter '{text}' may not use '{name}'"));
            }
            filter.push((name.into_owned(), value.into_owned()));
        }
    }
    let parsed = parse_search_query(&state.store.registry(), Some(resource_type), &filter)
        .map_err(|issue| format!("filter does not parse: {}", issue.diagnostics))?;
    if !parsed.unknown.is_empty() {
        return Err(format!(
            "filter uses unknown search parameters: {}",
            parsed.unknown.join(", ")
        ));
    }
    let channel = subscription
        .get("channel")
        .ok_or("Subscription.channel is missing")?;
    match channel.get("type").and_then(Value::as_str) {
        Some("rest-hook") => {}
        other => {
            return Err(format!(
                "channel type '{}' is not supported; only rest-hook",
                other.unwrap_or("")
            ));
        }
    }
    let endpoint_text = channel
        .get("endpoint")
        .and_then(Value::as_str)
        .ok_or("a rest-hook channel needs an endpoint")?;
    let endpoint = reqwest::Url::parse(endpoint_text)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| format!("endpoint '{endpoint_text}' is not an http(s) URL"))?;
    let mut headers = HeaderMap::new();
    for line in channel
        .get("header")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let parsed = line.as_str().and_then(|line| {
            let (name, value) = line.split_once(':')?;
            Some((
                HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
                reqwest::header::HeaderValue::from_str(value.trim()).ok()?,
            ))
        });
        let (name, value) =
            parsed.ok_or("a channel header must be 'Name: value' with a valid name and value")?;
        headers.append(name, value);
    }
    let mime = channel
        .get("payload")
        .and_then(Value::as_str)
        .unwrap_or("application/fhir+json");
    let essence = mime.split(';').next().unwrap_or_default().trim();
    if !matches!(essence, "application/fhir+json" | "application/json") {
        return Err(format!(
            "payload '{mime}' is not supported; only application/fhir+json"
        ));
    }
    let content = match channel
        .pointer("/_payload/extension")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(PAYLOAD_CONTENT_EXTENSION))
        .map(|e| e.get("valueCode").and_then(Value::as_str))
    {
        None => Content::IdOnly,
        Some(Some("empty")) => Content::Empty,
        Some(Some("id-only")) => Content::IdOnly,
        Some(Some("full-resource")) => Content::FullResource,
        Some(other) => {
            return Err(format!(
                "payload content '{}' is not one of empty, id-only, full-resource",
                other.unwrap_or("")
            ));
        }
    };
    let heartbeat = channel
        .get("extension")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(HEARTBEAT_PERIOD_EXTENSION))
        .and_then(|e| e.get("valueUnsignedInt").and_then(Value::as_u64))
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s.max(MIN_HEARTBEAT_SECONDS)));
    let fingerprint = json!([topic, subscription.get("_criteria"), channel]).to_string();
    Ok(Plan {
        id: id.to_string(),
        topic: topic.to_string(),
        resource_type: resource_type.to_string(),
        filter,
        endpoint,
        headers,
        mime: mime.to_string(),
        content,
        heartbeat,
        fingerprint,
    })
}

/// One event waiting for delivery.
struct Event {
    number: u64,
    resource_type: String,
    id: String,
    method: String,
    /// The version's content (kept for `full-resource` only).
    json: Option<String>,
}

/// A Subscription the dispatcher serves.
struct Served {
    plan: Plan,
    queue: mpsc::Sender<Event>,
    task: JoinHandle<()>,
    /// The queue overflowed: the Subscription is being set to `error`.
    failed: bool,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the dispatcher of `state` with the production timing ([`DispatcherConfig::default`]).
pub fn spawn_dispatcher(state: Arc<AppState>) -> JoinHandle<()> {
    spawn_dispatcher_with(state, DispatcherConfig::default())
}

/// Starts the dispatcher of `state`: it follows the store's changes from now on and delivers
/// notifications until the task is aborted or the runtime stops.
pub fn spawn_dispatcher_with(state: Arc<AppState>, config: DispatcherConfig) -> JoinHandle<()> {
    tokio::spawn(async move {
        let client = match reqwest::Client::builder()
            .timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "subscriptions: no HTTP client; no notifications are sent");
                return;
            }
        };
        let mut dispatcher = Dispatcher {
            counts: counts_of(&state),
            state,
            config: Arc::new(config),
            client,
            served: HashMap::new(),
            position: 0,
            scratch: None,
        };
        dispatcher.run().await;
    })
}

struct Dispatcher {
    state: Arc<AppState>,
    config: Arc<DispatcherConfig>,
    client: reqwest::Client,
    counts: Arc<Counts>,
    served: HashMap<String, Served>,
    /// The last change handled.
    position: i64,
    /// Where versions are matched against filters; opened on first use.
    scratch: Option<Scratch>,
}

/// A private store holding the versions being matched.
struct Scratch {
    _dir: tempfile::TempDir,
    store: zorgnet_store::Store,
    writes: usize,
}

impl Dispatcher {
    async fn run(&mut self) {
        // Start at the current end of the change sequence.
        loop {
            match self
                .state
                .store
                .history(HistoryScope::System, None, 1, None)
                .await
            {
                Ok(page) => {
                    self.position = page.entries.first().map_or(0, |e| e.seq);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %crate::error::loggable(&e.to_string()), "subscriptions: cannot read the change sequence; retrying");
                    tokio::time::sleep(self.config.poll_interval).await;
                }
            }
        }
        self.load_all().await;
        tracing::info!(
            subscriptions = self.served.len(),
            "subscriptions: dispatcher started"
        );
        loop {
            match self.poll().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %crate::error::loggable(&e.to_string()), "subscriptions: reading changes failed");
                }
            }
            tokio::time::sleep(self.config.poll_interval).await;
        }
    }

    /// Reads every Subscription and serves the active ones.
    async fn load_all(&mut self) {
        let pairs = vec![("_count".to_string(), HISTORY_PAGE_SIZE.to_string())];
        let mut query: SearchQuery =
            match parse_search_query(&self.state.store.registry(), Some("Subscription"), &pairs) {
                Ok(q) => q,
                Err(_) => return,
            };
        query.without_total = true;
        let mut pages = 0;
        loop {
            let result = match self.state.store.search(query.clone()).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %crate::error::loggable(&e.to_string()), "subscriptions: cannot read the Subscriptions");
                    return;
                }
            };
            for stored in result.matches {
                if let Ok(resource) = serde_json::from_str::<Value>(&stored.json) {
                    self.consider(&stored.id, Some(resource)).await;
                }
            }
            pages += 1;
            match result.next_cursor {
                Some(cursor) if pages * HISTORY_PAGE_SIZE < 2 * MAX_SUBSCRIPTIONS => {
                    query.cursor = Some(cursor)
                }
                _ => return,
            }
        }
    }

    /// Handles the changes after the position; `true` when there may be more right away.
    async fn poll(&mut self) -> Result<bool, StoreError> {
        if self.served.is_empty() {
            return self.poll_idle().await;
        }
        let page = self
            .state
            .store
            .history(
                HistoryScope::System,
                None,
                HISTORY_PAGE_SIZE,
                Some(format!("p{}", self.position)),
            )
            .await?;
        let full = page.entries.len() >= HISTORY_PAGE_SIZE;
        let mut entries = page.entries;
        entries.sort_by_key(|e| e.seq);
        for entry in entries {
            if entry.seq <= self.position {
                continue;
            }
            self.handle(&entry).await;
            self.position = entry.seq;
        }
        Ok(full)
    }

    /// With no Subscription served, only changes of Subscriptions matter: the others are
    /// passed over without reading them (a bulk load does not make the dispatcher read every
    /// version). When a Subscription comes to be served, the position stays at its change, so
    /// the next poll reads what followed it.
    async fn poll_idle(&mut self) -> Result<bool, StoreError> {
        let newest = self
            .state
            .store
            .history(HistoryScope::System, None, 1, None)
            .await?
            .entries
            .first()
            .map_or(self.position, |e| e.seq);
        let page = self
            .state
            .store
            .history(
                HistoryScope::Type("Subscription".into()),
                None,
                HISTORY_PAGE_SIZE,
                Some(format!("p{}", self.position)),
            )
            .await?;
        let full = page.entries.len() >= HISTORY_PAGE_SIZE;
        let mut entries: Vec<HistoryEntry> = page
            .entries
            .into_iter()
            .filter(|e| e.seq > self.position && e.seq <= newest)
            .collect();
        entries.sort_by_key(|e| e.seq);
        for entry in entries {
            self.handle(&entry).await;
            self.position = entry.seq;
            if !self.served.is_empty() {
                return Ok(true);
            }
        }
        if !full {
            self.position = self.position.max(newest);
        }
        Ok(full)
    }

    async fn handle(&mut self, entry: &HistoryEntry) {
        if entry.resource_type == "Subscription" {
            let current = match self.state.store.read("Subscription", &entry.id).await {
                Ok(ReadOutcome::Found(stored)) => serde_json::from_str(&stored.json).ok(),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(error = %crate::error::loggable(&e.to_string()), "subscriptions: cannot read a Subscription");
                    None
                }
            };
            if current.is_none() {
                self.counts.forget(&entry.id);
            }
            self.consider(&entry.id, current).await;
        }
        let deleted = entry.method == "DELETE" || entry.json.is_none();
        let candidates: Vec<String> = self
            .served
            .iter()
            .filter(|(_, s)| s.plan.resource_type == entry.resource_type && !s.failed)
            .map(|(id, _)| id.clone())
            .collect();
        if candidates.is_empty() {
            return;
        }
        // The version to match filters against: the new one, or for a delete the one before.
        let filtered = candidates.iter().any(|id| {
            self.served
                .get(id)
                .is_some_and(|s| !s.plan.filter.is_empty())
        });
        let in_scratch = filtered && self.stage_in_scratch(entry, deleted).await;
        for subscription_id in candidates {
            let matches = {
                let Some(served) = self.served.get(&subscription_id) else {
                    continue;
                };
                served.plan.filter.is_empty()
                    || (in_scratch && self.matches(&served.plan, &entry.id).await)
            };
            if !matches {
                continue;
            }
            let Some(served) = self.served.get_mut(&subscription_id) else {
                continue;
            };
            let event = Event {
                number: 0,
                resource_type: entry.resource_type.clone(),
                id: entry.id.clone(),
                method: entry.method.clone(),
                json: match served.plan.content {
                    Content::FullResource => entry.json.clone(),
                    _ => None,
                },
            };
            let permit = match served.queue.try_reserve() {
                Ok(permit) => permit,
                Err(mpsc::error::TrySendError::Full(())) => {
                    served.failed = true;
                    tracing::warn!(
                        subscription = %subscription_id,
                        "subscriptions: notification queue full; setting the Subscription to error"
                    );
                    let store = self.state.clone();
                    let id = subscription_id.clone();
                    tokio::spawn(async move {
                        set_status(&store, &id, "error", Some("notification queue full")).await;
                    });
                    continue;
                }
                // The delivery task has ended (it set the Subscription to error).
                Err(mpsc::error::TrySendError::Closed(())) => continue,
            };
            permit.send(Event {
                number: self.counts.next(&subscription_id),
                ..event
            });
        }
    }

    /// Writes the version `entry` made (for a delete: the version before) to the scratch
    /// store; `false` when there is none to match (then only unfiltered subscriptions match).
    async fn stage_in_scratch(&mut self, entry: &HistoryEntry, deleted: bool) -> bool {
        let content = if deleted {
            match self
                .state
                .store
                .vread(&entry.resource_type, &entry.id, entry.version - 1)
                .await
            {
                Ok(ReadOutcome::Found(stored)) => Some(stored.json),
                _ => None,
            }
        } else {
            entry.json.clone()
        };
        let Some(resource) = content.and_then(|j| serde_json::from_str::<Value>(&j).ok()) else {
            return false;
        };
        let renew = self
            .scratch
            .as_ref()
            .is_none_or(|s| s.writes >= SCRATCH_RENEW_AFTER);
        if renew {
            self.scratch = None;
            let registry = (*self.state.store.registry()).clone();
            let opened = tokio::task::spawn_blocking(move || {
                let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                let store =
                    zorgnet_store::Store::open_sqlite(&dir.path().join("scratch.sqlite"), registry)
                        .map_err(|e| e.to_string())?;
                Ok::<_, String>(Scratch {
                    _dir: dir,
                    store,
                    writes: 0,
                })
            })
            .await;
            match opened {
                Ok(Ok(scratch)) => self.scratch = Some(scratch),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "subscriptions: cannot open the scratch store; filtered subscriptions get no events");
                    return false;
                }
                Err(e) => {
                    tracing::error!(error = %e, "subscriptions: cannot open the scratch store");
                    return false;
                }
            }
        }
        let Some(scratch) = self.scratch.as_mut() else {
            return false;
        };
        scratch.writes += 1;
        let op = WriteOp::Update {
            resource,
            id: entry.id.clone(),
            if_match: None,
        };
        match scratch.store.write(op).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %crate::error::loggable(&e.to_string()), "subscriptions: cannot match a version against filters");
                false
            }
        }
    }

    /// Whether the version in the scratch store matches the plan's filter.
    async fn matches(&self, plan: &Plan, id: &str) -> bool {
        let Some(scratch) = self.scratch.as_ref() else {
            return false;
        };
        let mut pairs = plan.filter.clone();
        pairs.push(("_id".into(), id.to_string()));
        pairs.push(("_count".into(), "1".into()));
        let query = match parse_search_query(
            &scratch.store.registry(),
            Some(&plan.resource_type),
            &pairs,
        ) {
            Ok(mut q) => {
                q.without_total = true;
                q
            }
            Err(_) => return false,
        };
        match scratch.store.search(query).await {
            Ok(result) => result.matches.iter().any(|m| m.id == id),
            Err(e) => {
                tracing::warn!(subscription = %plan.id, error = %crate::error::loggable(&e.to_string()), "subscriptions: filter search failed");
                false
            }
        }
    }

    /// Serves, keeps, replaces or drops the Subscription `id` as its current content says.
    async fn consider(&mut self, id: &str, current: Option<Value>) {
        let Some(subscription) = current else {
            self.served.remove(id);
            return;
        };
        let status = subscription
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !matches!(status, "requested" | "active") {
            self.served.remove(id);
            return;
        }
        let plan = match plan(&self.state, id, &subscription) {
            Ok(plan) => plan,
            Err(reason) => {
                self.served.remove(id);
                tracing::info!(subscription = %id, "subscriptions: Subscription refused; setting it to error");
                set_status(&self.state, id, "error", Some(&reason)).await;
                return;
            }
        };
        if let Some(served) = self.served.get(id)
            && served.plan.fingerprint == plan.fingerprint
        {
            return;
        }
        if !self.served.contains_key(id) && self.served.len() >= MAX_SUBSCRIPTIONS {
            set_status(
                &self.state,
                id,
                "error",
                Some("too many subscriptions on this server"),
            )
            .await;
            return;
        }
        let (sender, receiver) = mpsc::channel(self.config.queue_limit.max(1));
        let worker = Worker {
            state: self.state.clone(),
            config: self.config.clone(),
            client: self.client.clone(),
            counts: self.counts.clone(),
            plan: plan.clone(),
            status: status.to_string(),
        };
        let task = tokio::spawn(worker.run(receiver));
        tracing::info!(subscription = %id, "subscriptions: serving Subscription");
        self.served.insert(
            id.to_string(),
            Served {
                plan,
                queue: sender,
                task,
                failed: false,
            },
        );
    }
}

/// Delivers one Subscription's notifications in order.
struct Worker {
    state: Arc<AppState>,
    config: Arc<DispatcherConfig>,
    client: reqwest::Client,
    counts: Arc<Counts>,
    plan: Plan,
    status: String,
}

impl Worker {
    async fn run(mut self, mut queue: mpsc::Receiver<Event>) {
        if self.status == "requested" {
            let handshake = self.bundle("handshake", None);
            match self.deliver(&handshake).await {
                Ok(()) => {
                    self.status = "active".into();
                    set_status(&self.state, &self.plan.id, "active", None).await;
                }
                Err(reason) => {
                    self.fail(&format!("handshake failed: {reason}")).await;
                    return;
                }
            }
        }
        loop {
            let next = match self.plan.heartbeat {
                Some(period) => match tokio::time::timeout(period, queue.recv()).await {
                    Ok(next) => next,
                    Err(_) => {
                        let heartbeat = self.bundle("heartbeat", None);
                        if let Err(reason) = self.deliver(&heartbeat).await {
                            self.fail(&format!("heartbeat failed: {reason}")).await;
                            return;
                        }
                        continue;
                    }
                },
                None => queue.recv().await,
            };
            let Some(event) = next else { return };
            let notification = self.bundle("event-notification", Some(&event));
            if let Err(reason) = self.deliver(&notification).await {
                self.fail(&format!(
                    "delivery of event {} failed: {reason}",
                    event.number
                ))
                .await;
                return;
            }
        }
    }

    async fn fail(&self, reason: &str) {
        tracing::warn!(subscription = %self.plan.id, reason, "subscriptions: setting the Subscription to error");
        set_status(&self.state, &self.plan.id, "error", Some(reason)).await;
    }

    /// Posts `body` with retries; the last failure's reason when every attempt failed.
    async fn deliver(&self, body: &Value) -> Result<(), String> {
        let body = body.to_string();
        let mut reason = String::from("no attempt made");
        for attempt in 1..=self.config.max_attempts.max(1) {
            if attempt > 1 {
                tokio::time::sleep(self.config.retry_delay(attempt)).await;
            }
            let mut headers = self.plan.headers.clone();
            match reqwest::header::HeaderValue::from_str(&self.plan.mime) {
                Ok(value) => {
                    headers.insert(reqwest::header::CONTENT_TYPE, value);
                }
                Err(_) => return Err("invalid payload MIME type".into()),
            }
            let result = self
                .client
                .post(self.plan.endpoint.clone())
                .headers(headers)
                .body(body.clone())
                .send()
                .await;
            match result {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => reason = format!("endpoint answered {}", response.status()),
                Err(e) if e.is_timeout() => reason = "request timed out".into(),
                Err(e) if e.is_connect() => reason = "cannot connect to the endpoint".into(),
                Err(_) => reason = "request failed".into(),
            }
            tracing::debug!(subscription = %self.plan.id, attempt, reason, "subscriptions: delivery attempt failed");
        }
        Err(format!(
            "{reason} (after {} attempts)",
            self.config.max_attempts.max(1)
        ))
    }

    /// A notification Bundle.
    fn bundle(&self, kind: &str, event: Option<&Event>) -> Value {
        let base = self.state.base_url.trim_end_matches('/');
        let now = zorgnet_fhir::datetime::format_instant(zorgnet_store::now_ms());
        let since = match event {
            Some(event) => event.number,
            None => self.counts.get(&self.plan.id),
        };
        let mut parameters = status_parameters(
            base,
            &self.plan.id,
            &self.plan.topic,
            &self.status,
            kind,
            since,
            None,
        );
        let mut entries = Vec::new();
        if let Some(event) = event {
            let focus_url = format!("{base}/{}/{}", event.resource_type, event.id);
            let mut parts = vec![
                json!({"name": "event-number", "valueString": event.number.to_string()}),
                json!({"name": "timestamp", "valueInstant": now}),
            ];
            if self.plan.content != Content::Empty {
                parts.push(json!({"name": "focus", "valueReference": {"reference": focus_url}}));
                let deleted = event.method == "DELETE";
                let (status, method) = match event.method.as_str() {
                    "POST" => ("201", "POST"),
                    "DELETE" => ("204", "DELETE"),
                    _ => ("200", "PUT"),
                };
                let mut entry = json!({
                    "fullUrl": focus_url,
                    "request": {
                        "method": method,
                        "url": if method == "POST" { event.resource_type.clone() } else { format!("{}/{}", event.resource_type, event.id) },
                    },
                    "response": {"status": status},
                });
                if self.plan.content == Content::FullResource
                    && !deleted
                    && let Some(resource) = event
                        .json
                        .as_deref()
                        .and_then(|j| serde_json::from_str::<Value>(j).ok())
                {
                    entry["resource"] = resource;
                }
                entries.push(entry);
            }
            if let Some(list) = parameters["parameter"].as_array_mut() {
                list.push(json!({"name": "notification-event", "part": parts}));
            }
        }
        let mut all = vec![json!({
            "fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
            "resource": parameters,
            "request": {"method": "GET", "url": format!("{base}/Subscription/{}/$status", self.plan.id)},
            "response": {"status": "200"},
        })];
        all.extend(entries);
        json!({
            "resourceType": "Bundle",
            "id": uuid::Uuid::new_v4().to_string(),
            "type": "history",
            "timestamp": now,
            "entry": all,
        })
    }
}

/// The backport's SubscriptionStatus as a `Parameters` resource.
fn status_parameters(
    base: &str,
    id: &str,
    topic: &str,
    status: &str,
    kind: &str,
    events_since_start: u64,
    error: Option<&str>,
) -> Value {
    let mut parameter = vec![
        json!({"name": "subscription", "valueReference": {"reference": format!("{base}/Subscription/{id}")}}),
        json!({"name": "topic", "valueCanonical": topic}),
        json!({"name": "status", "valueCode": status}),
        json!({"name": "type", "valueCode": kind}),
        json!({"name": "events-since-subscription-start", "valueString": events_since_start.to_string()}),
    ];
    if let Some(error) = error {
        parameter.push(json!({"name": "error", "valueCodeableConcept": {"text": error}}));
    }
    json!({
        "resourceType": "Parameters",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": {"profile": ["http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4"]},
        "parameter": parameter,
    })
}

/// Sets the stored Subscription's status (and `error` text, or removes it), unless it is
/// gone or already in that state; retried on concurrent writes. Failures are logged.
async fn set_status(state: &AppState, id: &str, status: &str, error: Option<&str>) {
    for _ in 0..STATUS_UPDATE_ATTEMPTS {
        let stored = match state.store.read("Subscription", id).await {
            Ok(ReadOutcome::Found(stored)) => stored,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(subscription = %id, error = %crate::error::loggable(&e.to_string()), "subscriptions: cannot read the Subscription");
                return;
            }
        };
        let Ok(mut resource) = serde_json::from_str::<Value>(&stored.json) else {
            return;
        };
        let current = resource.get("status").and_then(Value::as_str);
        if current == Some(status) && resource.get("error").and_then(Value::as_str) == error {
            return;
        }
        // Never bring back a Subscription a client switched off in the meantime.
        if current == Some("off") {
            return;
        }
        if let Some(object) = resource.as_object_mut() {
            object.insert("status".into(), Value::String(status.into()));
            match error {
                Some(text) => {
                    object.insert("error".into(), Value::String(text.into()));
                }
                None => {
                    object.remove("error");
                }
            }
        }
        let op = WriteOp::Update {
            resource,
            id: id.to_string(),
            if_match: Some(stored.version),
        };
        match state.store.write(op).await {
            Ok(_) => return,
            Err(StoreError::VersionConflict { .. } | StoreError::Conflict(_)) => continue,
            Err(e) => {
                tracing::warn!(subscription = %id, error = %crate::error::loggable(&e.to_string()), "subscriptions: cannot update the Subscription");
                return;
            }
        }
    }
    tracing::warn!(subscription = %id, "subscriptions: Subscription kept changing; status not updated");
}

/// The `$status` operation: merge into the server's router
/// (`.merge(subscriptions::routes())`).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/fhir/{resource_type}/{id}/$status", get(status))
}

async fn status(
    State(state): State<Arc<AppState>>,
    Path((resource_type, id)): Path<(String, String)>,
) -> Result<Response, FhirError> {
    if resource_type != "Subscription" {
        return Err(FhirError::not_found(format!(
            "$status is an operation on Subscription, not on {resource_type}"
        )));
    }
    crate::interactions::check_id(&id)?;
    let stored = match state.store.read("Subscription", &id).await? {
        ReadOutcome::Found(stored) => stored,
        ReadOutcome::Deleted { .. } => {
            return Err(FhirError::new(
                StatusCode::GONE,
                zorgnet_fhir::IssueCode::Deleted,
                format!("Subscription/{id} was deleted"),
            ));
        }
        ReadOutcome::NotFound => {
            return Err(FhirError::not_found(format!("Subscription/{id} not found")));
        }
    };
    let resource: Value = serde_json::from_str(&stored.json).unwrap_or(Value::Null);
    let base = state.base_url.trim_end_matches('/');
    let text = |name: &str| resource.get(name).and_then(Value::as_str).unwrap_or("");
    let error = resource.get("error").and_then(Value::as_str);
    let parameters = status_parameters(
        base,
        &id,
        text("criteria"),
        text("status"),
        "query-status",
        counts_of(&state).get(&id),
        error,
    );
    let bundle = json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "type": "searchset",
        "total": 1,
        "link": [{"relation": "self", "url": format!("{base}/Subscription/{id}/$status")}],
        "entry": [{
            "fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
            "resource": parameters,
            "search": {"mode": "match"},
        }],
    });
    let mut response = (StatusCode::OK, bundle.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_up_to_the_maximum() {
        let config = DispatcherConfig::default();
        assert_eq!(config.retry_delay(2), FIRST_RETRY_DELAY);
        assert_eq!(config.retry_delay(3), FIRST_RETRY_DELAY * 2);
        assert_eq!(config.retry_delay(4), FIRST_RETRY_DELAY * 4);
        assert_eq!(config.retry_delay(40), MAX_RETRY_DELAY);
    }
}
