//! `zorgnet import`: NDJSON and Bundle files, plain or gzip-compressed, into a node, in
//! batches, with progress and a per-resource failure report; it exits non-zero when any
//! resource failed. Resources are written as updates with their own ids, so a second run of
//! the same import changes nothing (unchanged resources get no new version).
//! Bundles whose entries use `urn:uuid:` fullUrls (Synthea, transaction Bundles) get those
//! UUIDs as ids, and references to them are rewritten, so they too import idempotently.
//! Straight into a node's database (`--data`, `--postgres`), the import writes through the
//! node's outbox hook like the node does: each batch queues the referral-index registrations
//! of its patients in its own transaction, and the node delivers them once it runs with
//! `--hub`. Over HTTP (`--to`) it sends batch Bundles of updates, several at a time, which the
//! node writes on the same bulk path.
//! Resources of a type a node's store never holds (`zorgnet_node::EXTERNAL_TYPES`: AuditEvent,
//! whose only source is the node's access log) are refused, by the importer straight into a
//! database and by the node over HTTP, each counted as a failure.
//! Progress counts input confirmed written (a committed transaction, a node's answer), never
//! input merely read, and is drawn only on a terminal.

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use zorgnet_store::{ImportOutcome, Store};

/// Resources per database transaction when importing straight into a store. Each commit
/// writes every page it touched to the WAL, and the index tables' lookup B-trees are touched
/// all over: fewer, larger transactions write the same hot pages fewer times (1,000,000
/// resources: 4,000 per transaction 15,689/s, 16,000 per transaction 21,555/s, peak RSS 175
/// → 261 MiB; docs/benchmarks.md).
pub const STORE_BATCH_RESOURCES: usize = 16_000;
/// Resources per batch Bundle when importing into a node over HTTP: the node's
/// `MAX_BUNDLE_ENTRIES`. The node writes a batch's updates in one transaction, and, as with
/// `STORE_BATCH_RESOURCES`, fewer and larger transactions are faster: 4,000 per Bundle ran
/// at about half the rate of `--data` (docs/benchmarks.md, "Import over HTTP").
pub const HTTP_BATCH_RESOURCES: usize = 10_000;
/// Batch Bundles sent before the first is answered: the node validates and indexes one
/// while it writes another, and the importer reads the next meanwhile.
pub const HTTP_BATCHES_IN_FLIGHT: usize = 2;
/// How long one batch Bundle may take at the node.
const HTTP_BATCH_TIMEOUT: Duration = Duration::from_secs(600);
/// Failures shown individually at the end (all are counted).
const MAX_FAILURES_SHOWN: usize = 50;
/// How often the progress bar redraws between steps, so the elapsed time and ETA move.
const PROGRESS_TICK: Duration = Duration::from_millis(250);
/// Read buffer per file.
const READ_BUFFER_BYTES: usize = 256 * 1024;
/// The first bytes of a gzip stream (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Arguments of `zorgnet import`.
#[derive(Args)]
pub struct ImportArgs {
    /// NDJSON files (one resource or Bundle per line) or JSON files holding one Bundle;
    /// gzip-compressed ones (`.ndjson.gz`, `.json.gz`) too.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Base URL of a running node (`https://127.0.0.1:8080/fhir`).
    #[arg(long, conflicts_with_all = ["data", "postgres"])]
    to: Option<String>,
    /// With --to: the node's key (its data directory's `node-admin.key`); a node started
    /// with --insecure-dev needs none.
    #[arg(
        long,
        env = "ZORGNET_NODE_KEY",
        hide_env_values = true,
        requires = "to"
    )]
    node_key: Option<String>,
    /// SQLite directory of a node that is not running.
    #[arg(long, conflicts_with = "postgres")]
    data: Option<PathBuf>,
    /// PostgreSQL URL of a node's database.
    #[arg(long)]
    postgres: Option<String>,
}

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// New resources or new versions (over HTTP: new resources).
    pub stored: u64,
    /// Resources identical to what was stored already (over HTTP: updated or unchanged, which
    /// a node's answer does not tell apart).
    pub unchanged: u64,
    /// Where and why a resource was refused.
    pub failures: Vec<(String, String)>,
}

pub async fn run(args: ImportArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let total_bytes: u64 = args
        .files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let progress = Progress::new(total_bytes)?;
    let mut report = ImportReport::default();
    let target = match (&args.to, &args.postgres, &args.data) {
        (Some(url), _, _) => Target::Http(
            crate::node_client(
                crate::client_builder().timeout(HTTP_BATCH_TIMEOUT),
                args.node_key.as_deref(),
            )?,
            url.trim_end_matches('/').to_string(),
        ),
        (None, Some(url), _) => Target::Store(
            crate::open_node_store(std::path::Path::new("."), Some(url))
                .await?
                .0,
        ),
        (None, None, Some(dir)) => Target::Store(crate::open_node_store(dir, None).await?.0),
        (None, None, None) => {
            bail!("say where to import to: --to URL, --data DIR or --postgres URL")
        }
    };
    for file in &args.files {
        let mut resources = ResourceReader::open(file, matches!(target, Target::Http(..)))?;
        let part = match &target {
            Target::Store(store) => {
                let mut parsed = resources
                    .by_ref()
                    .map(|(resource, bytes)| (resource.into_value(), bytes));
                load_weighted(store, &mut parsed, Some(&progress)).await?
            }
            Target::Http(client, url) => {
                load_over_http(client, url, &mut resources, &progress).await?
            }
        };
        report.failures.append(&mut resources.failures);
        report.stored += part.stored;
        report.unchanged += part.unchanged;
        report.failures.extend(part.failures);
    }
    let mut outbox = None;
    if let Target::Store(store) = &target {
        progress.bar.set_message("refreshing planner statistics");
        store
            .analyze()
            .await
            .context("refresh planner statistics after the import")?;
        let db = store.database().clone();
        outbox = Some(
            tokio::task::spawn_blocking(move || zorgnet_node::outbox::status(&db))
                .await?
                .context("read the outbox")?,
        );
    }
    if let Target::Store(store) = target {
        // A PostgreSQL client must not be dropped on an async worker thread.
        tokio::task::spawn_blocking(move || drop(store)).await?;
        progress.bar.finish_and_clear();
        print_summary(&report, started, "stored", "unchanged");
    } else {
        progress.bar.finish_and_clear();
        print_summary(&report, started, "created", "updated or unchanged");
    }
    if let Some(outbox) = outbox {
        println!(
            "outbox: {} registrations waiting for the hub (delivered once the node runs with --hub)",
            outbox.pending
        );
    }
    for (location, reason) in report.failures.iter().take(MAX_FAILURES_SHOWN) {
        println!("  failed {location}: {reason}");
    }
    if report.failures.len() > MAX_FAILURES_SHOWN {
        println!(
            "  … and {} more failures",
            report.failures.len() - MAX_FAILURES_SHOWN
        );
    }
    if !report.failures.is_empty() {
        bail!(
            "{} of {} resources failed (listed above)",
            report.failures.len(),
            report.failures.len() as u64 + report.stored + report.unchanged
        );
    }
    Ok(())
}

fn print_summary(
    report: &ImportReport,
    started: std::time::Instant,
    stored: &str,
    unchanged: &str,
) {
    let seconds = started.elapsed().as_secs_f64();
    let handled = report.stored + report.unchanged;
    println!(
        "imported {handled} resources in {seconds:.1} s ({:.0}/s): {} {stored}, {} {unchanged}, {} failed",
        handled as f64 / seconds.max(1e-9),
        report.stored,
        report.unchanged,
        report.failures.len()
    );
}

/// A bar over the input's bytes that moves as batches are confirmed; hidden unless stderr is
/// a terminal (a log or a pipe gets the summary only).
pub struct Progress {
    bar: indicatif::ProgressBar,
    /// The style with an ETA, shown from the first confirmed batch on: before it there is no
    /// rate to estimate from, and indicatif would say "0s left".
    with_eta: indicatif::ProgressStyle,
}

impl Progress {
    fn new(total_bytes: u64) -> Result<Progress> {
        use std::io::IsTerminal as _;
        let bar = if std::io::stderr().is_terminal() {
            indicatif::ProgressBar::new(total_bytes)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} written, {msg} ({elapsed})",
        )?);
        bar.set_message("waiting for the first batch");
        bar.enable_steady_tick(PROGRESS_TICK);
        Ok(Progress {
            bar,
            with_eta: indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} written, {msg} ({elapsed}, {eta} left)",
            )?,
        })
    }

    /// A batch was confirmed written: its input bytes count, and `resources` are done so far.
    fn confirmed(&self, bytes: u64, resources: u64) {
        if self.bar.position() == 0 && bytes > 0 {
            self.bar.set_style(self.with_eta.clone());
        }
        self.bar.inc(bytes);
        self.bar.set_message(format!("{resources} resources"));
    }
}

enum Target {
    Store(Store),
    Http(reqwest::Client, String),
}

/// A resource as the reader hands it on.
enum Resource {
    /// Parsed: what the store path validates and writes, and what a Bundle's entries become.
    Parsed(Value),
    /// A line holding one resource, as read: over HTTP the node parses it, so the importer
    /// only checks that it is JSON and takes its type and id.
    Text {
        text: String,
        resource_type: String,
        id: Option<Value>,
    },
}

impl Resource {
    fn into_value(self) -> Value {
        match self {
            Resource::Parsed(value) => value,
            // Read as JSON already; were it not to parse now, `null` is refused on its own as
            // a resource without a known type.
            Resource::Text { text, .. } => serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    /// `Type/id`, for messages and update URLs.
    fn name(&self) -> String {
        match self {
            Resource::Parsed(value) => describe(value),
            Resource::Text {
                resource_type, id, ..
            } => format!(
                "{resource_type}/{}",
                id.as_ref().and_then(Value::as_str).unwrap_or("(no id)")
            ),
        }
    }
}

/// What the importer reads of a line when it passes the line on as text: parsing it into
/// this checks that the whole line is JSON but allocates only these two members.
#[derive(serde::Deserialize)]
struct Head {
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
    id: Option<Value>,
}

/// Counts the bytes read from a file, before any decompression.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The resources of one file (NDJSON of resources or Bundles, or one JSON document; plain or
/// gzip-compressed), read one line at a time as the import asks for them: a file of a million
/// resources never sits in memory whole (parsed, that would be several GiB). Lines that are
/// not JSON, and a read error (which ends the file), are kept in `failures`. Each resource
/// comes with its share of the file's bytes, for progress.
struct ResourceReader {
    reader: Box<dyn BufRead + Send>,
    name: String,
    line: String,
    number: usize,
    /// Bytes of the file read so far (compressed bytes for a gzip file).
    read: Arc<AtomicU64>,
    /// Of those, the bytes already handed out with resources.
    handed_out: u64,
    /// Resources of the last line read (a Bundle's entries) not yet handed out, with their
    /// shares of the file's bytes.
    pending: VecDeque<(Resource, u64)>,
    /// Whether lines holding one resource are handed on as text (over HTTP).
    keep_text: bool,
    done: bool,
    failures: Vec<(String, String)>,
}

impl ResourceReader {
    /// Opens `path`, decompressing when it starts like gzip. A file whose first line is not a
    /// JSON value is one JSON document (a Bundle written over several lines): that one is read
    /// whole.
    fn open(path: &std::path::Path, keep_text: bool) -> Result<ResourceReader> {
        let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
        let read = Arc::new(AtomicU64::new(0));
        let mut raw = BufReader::with_capacity(
            READ_BUFFER_BYTES,
            Counting {
                inner: file,
                read: read.clone(),
            },
        );
        let compressed = raw
            .fill_buf()
            .with_context(|| format!("read {}", path.display()))?
            .starts_with(&GZIP_MAGIC);
        let reader: Box<dyn BufRead + Send> = if compressed {
            Box::new(BufReader::with_capacity(
                READ_BUFFER_BYTES,
                flate2::bufread::MultiGzDecoder::new(raw),
            ))
        } else {
            Box::new(raw)
        };
        let mut reader = ResourceReader {
            reader,
            name: path.display().to_string(),
            line: String::new(),
            number: 0,
            read,
            handed_out: 0,
            pending: VecDeque::new(),
            keep_text,
            done: false,
            failures: Vec::new(),
        };
        reader
            .read_line()
            .with_context(|| format!("read {}", reader.name))?;
        let first = reader.line.trim();
        if !first.is_empty() && serde_json::from_str::<serde::de::IgnoredAny>(first).is_err() {
            let mut rest = String::new();
            reader
                .reader
                .read_to_string(&mut rest)
                .with_context(|| format!("read {}", reader.name))?;
            let text = std::mem::take(&mut reader.line) + &rest;
            let document: Value = serde_json::from_str(&text).with_context(|| {
                format!("{} is neither NDJSON nor one JSON document", reader.name)
            })?;
            let mut resources = Vec::new();
            expand(document, &reader.name, &mut resources);
            reader.queue(resources.into_iter().map(Resource::Parsed).collect());
            reader.done = true;
        }
        Ok(reader)
    }

    fn read_line(&mut self) -> std::io::Result<usize> {
        self.line.clear();
        let read = self.reader.read_line(&mut self.line)?;
        self.number += 1;
        Ok(read)
    }

    /// Queues the resources of one line or document, sharing out the bytes read since the
    /// last resources were queued.
    fn queue(&mut self, resources: Vec<Resource>) {
        if resources.is_empty() {
            return;
        }
        let read = self.read.load(Ordering::Relaxed);
        let bytes = read.saturating_sub(self.handed_out);
        self.handed_out = read;
        let count = resources.len() as u64;
        let share = bytes / count;
        for (i, resource) in resources.into_iter().enumerate() {
            let extra = if i == 0 { bytes % count } else { 0 };
            self.pending.push_back((resource, share + extra));
        }
    }

    /// The resources of the line just read: the line itself when it holds one resource and
    /// text is kept, else what parsing and expanding it gives.
    fn take_line(&mut self, location: &str) -> Result<Vec<Resource>, String> {
        let line = self.line.trim_end();
        if self.keep_text {
            let head: Head =
                serde_json::from_str(line).map_err(|e| format!("malformed JSON: {e}"))?;
            if let Some(resource_type) = head.resource_type.filter(|t| t != "Bundle") {
                return Ok(vec![Resource::Text {
                    text: line.to_string(),
                    resource_type,
                    id: head.id,
                }]);
            }
        }
        let value: Value =
            serde_json::from_str(line).map_err(|e| format!("malformed JSON: {e}"))?;
        let mut resources = Vec::new();
        expand(value, location, &mut resources);
        Ok(resources.into_iter().map(Resource::Parsed).collect())
    }
}

impl Iterator for ResourceReader {
    type Item = (Resource, u64);

    fn next(&mut self) -> Option<(Resource, u64)> {
        loop {
            if let Some(resource) = self.pending.pop_front() {
                return Some(resource);
            }
            if self.done {
                return None;
            }
            let location = format!("{}:{}", self.name, self.number);
            if !self.line.trim().is_empty() {
                match self.take_line(&location) {
                    Ok(resources) => self.queue(resources),
                    Err(reason) => self.failures.push((location.clone(), reason)),
                }
            }
            match self.read_line() {
                Ok(0) => self.done = true,
                Ok(_) => {}
                Err(e) => {
                    self.failures
                        .push((location, format!("reading stopped here: {e}")));
                    self.line.clear();
                    self.done = true;
                }
            }
        }
    }
}

/// A resource, or the resources inside a Bundle with `urn:uuid:` references made local.
fn expand(value: Value, location: &str, out: &mut Vec<Value>) {
    if value.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        out.push(value);
        return;
    }
    let Some(entries) = value.get("entry").and_then(Value::as_array) else {
        return;
    };
    let mut references = HashMap::new();
    let mut resources = Vec::with_capacity(entries.len());
    for entry in entries {
        let Some(mut resource) = entry.get("resource").cloned() else {
            continue;
        };
        let resource_type = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let full_url = entry.get("fullUrl").and_then(Value::as_str).unwrap_or("");
        if resource.get("id").is_none()
            && let Some(uuid) = full_url.strip_prefix("urn:uuid:")
        {
            resource["id"] = Value::String(uuid.to_string());
        }
        if let (Some(id), false) = (
            resource.get("id").and_then(Value::as_str),
            full_url.is_empty(),
        ) {
            references.insert(full_url.to_string(), format!("{resource_type}/{id}"));
        }
        resources.push(resource);
    }
    for mut resource in resources {
        rewrite(&mut resource, &references);
        if resource.get("id").is_none() {
            tracing::debug!(location, "resource without id in bundle gets a new id");
        }
        out.push(resource);
    }
}

fn rewrite(value: &mut Value, map: &HashMap<String, String>) {
    match value {
        Value::String(s) => {
            if let Some(r) = map.get(s.as_str()) {
                *s = r.clone();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite(v, map)),
        Value::Object(o) => o.values_mut().for_each(|v| rewrite(v, map)),
        _ => {}
    }
}

fn describe(resource: &Value) -> String {
    format!(
        "{}/{}",
        resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("?"),
        resource
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("(no id)")
    )
}

/// Validates and writes resources straight into a store, batch by batch, one transaction per
/// batch (no progress).
pub async fn load_into_store(
    store: &Store,
    resources: impl Iterator<Item = Value>,
    progress: Option<&Progress>,
) -> Result<ImportReport> {
    load_weighted(store, &mut resources.map(|r| (r, 0)), progress).await
}

/// Validates and writes resources, each with its share of the input's bytes, straight into a
/// store, batch by batch, one transaction per batch. Validating, stamping, serialising and
/// indexing a batch (on this task) overlaps the database transaction of the previous one (on
/// the blocking pool), so the two use two cores; a batch counts as stored, and its bytes as
/// progress, only once its transaction has committed.
async fn load_weighted(
    store: &Store,
    resources: &mut impl Iterator<Item = (Value, u64)>,
    progress: Option<&Progress>,
) -> Result<ImportReport> {
    let mut report = ImportReport::default();
    let mut in_flight: Option<tokio::task::JoinHandle<BatchResult>> = None;
    let mut resources = resources.peekable();
    while resources.peek().is_some() {
        let mut batch = store.import_batch();
        let mut names: Vec<String> = Vec::with_capacity(STORE_BATCH_RESOURCES);
        let mut bytes = 0;
        for (mut resource, weight) in resources.by_ref() {
            bytes += weight;
            let name = describe(&resource);
            let resource_type = resource
                .get("resourceType")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if !zorgnet_fhir::model::r4().is_resource_type(&resource_type) {
                report
                    .failures
                    .push((name, format!("unknown resource type '{resource_type}'")));
                continue;
            }
            if let Some(external) = zorgnet_node::EXTERNAL_TYPES
                .iter()
                .find(|e| e.resource_type == resource_type)
            {
                report.failures.push((name, external.refusal()));
                continue;
            }
            if resource.get("id").and_then(Value::as_str).is_none() {
                resource["id"] = json!(uuid::Uuid::now_v7().to_string());
            }
            let issues = zorgnet_fhir::validate_resource(&resource);
            if !issues.is_empty() {
                let reasons: Vec<String> = issues
                    .iter()
                    .take(3)
                    .map(|i| {
                        format!(
                            "{} {}",
                            i.expression.clone().unwrap_or_default(),
                            i.diagnostics
                        )
                    })
                    .collect();
                report.failures.push((name, reasons.join("; ")));
                continue;
            }
            if let Err(e) = batch.push(resource) {
                report.failures.push((name, e.to_string()));
                continue;
            }
            names.push(name);
            if batch.len() >= STORE_BATCH_RESOURCES {
                break;
            }
        }
        if let Some(handle) = in_flight.take() {
            collect(store, handle.await?, &mut report, progress).await;
        }
        let store = store.clone();
        in_flight = Some(tokio::spawn(async move {
            let result = if batch.is_empty() {
                Ok(Vec::new())
            } else {
                store.import(batch).await
            };
            (names, bytes, result)
        }));
    }
    if let Some(handle) = in_flight.take() {
        collect(store, handle.await?, &mut report, progress).await;
    }
    Ok(report)
}

/// One written batch: resource names, the input bytes they came from, and the transaction's
/// outcomes or, when it failed, the batch's resources as operations for a retry one by one.
type BatchResult = (
    Vec<String>,
    u64,
    Result<Vec<ImportOutcome>, zorgnet_store::ImportFailure>,
);

async fn collect(
    store: &Store,
    (names, bytes, result): BatchResult,
    report: &mut ImportReport,
    progress: Option<&Progress>,
) {
    let outcomes = match result {
        Ok(outcomes) => outcomes.into_iter().map(Ok).collect::<Vec<_>>(),
        // One bad resource must not sink its batch: retry one by one to find it.
        Err(failure) => {
            tracing::debug!(error = %failure.error, "batch failed; writing its resources one by one");
            let ops = failure.ops;
            let mut single = Vec::with_capacity(ops.len());
            for op in ops {
                single.push(store.write(op).await.map(|o| ImportOutcome::from(&o)));
            }
            single
        }
    };
    for (name, outcome) in names.into_iter().zip(outcomes) {
        match outcome {
            Ok(ImportOutcome::Unchanged { .. }) => report.unchanged += 1,
            Ok(_) => report.stored += 1,
            Err(e) => report.failures.push((name, e.to_string())),
        }
    }
    if let Some(progress) = progress {
        progress.confirmed(bytes, report.stored + report.unchanged);
    }
}

/// One batch Bundle on its way: its resources' names, the input bytes they came from, and
/// the task that sends it and reads the node's answer.
struct HttpBatch {
    names: Vec<String>,
    bytes: u64,
    answer: tokio::task::JoinHandle<Result<BatchAnswer>>,
}

/// What a node answered to a batch Bundle.
enum BatchAnswer {
    /// The batch-response's entries, one per request entry.
    Entries(Vec<Value>),
    /// Why the node refused the Bundle as a whole.
    Refused(String),
}

/// Sends resources to a running node as batch Bundles of updates, [`HTTP_BATCHES_IN_FLIGHT`]
/// at a time, and reads the node's answers in the order sent. A batch the node refuses as a
/// whole counts each of its resources as failed and the import goes on; a node that cannot
/// be reached ends it.
async fn load_over_http(
    client: &reqwest::Client,
    base: &str,
    resources: &mut impl Iterator<Item = (Resource, u64)>,
    progress: &Progress,
) -> Result<ImportReport> {
    let mut report = ImportReport::default();
    let mut in_flight: VecDeque<HttpBatch> = VecDeque::new();
    let mut exhausted = false;
    loop {
        while !exhausted && in_flight.len() < HTTP_BATCHES_IN_FLIGHT {
            let chunk: Vec<(Resource, u64)> =
                resources.by_ref().take(HTTP_BATCH_RESOURCES).collect();
            if chunk.is_empty() {
                exhausted = true;
                break;
            }
            in_flight.push_back(send_batch(client, base, chunk)?);
        }
        let Some(batch) = in_flight.pop_front() else {
            break;
        };
        match batch.answer.await?? {
            BatchAnswer::Entries(answers) => {
                for (index, name) in batch.names.into_iter().enumerate() {
                    let answer = answers.get(index).unwrap_or(&Value::Null);
                    let status = answer
                        .pointer("/response/status")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    if status.starts_with("201") {
                        report.stored += 1;
                    } else if status.starts_with("200") {
                        report.unchanged += 1;
                    } else {
                        let reason = answer
                            .pointer("/response/outcome/issue/0/diagnostics")
                            .and_then(Value::as_str)
                            .unwrap_or(if status.is_empty() {
                                "the node's answer has no entry for it"
                            } else {
                                status
                            })
                            .to_string();
                        report.failures.push((name, reason));
                    }
                }
            }
            BatchAnswer::Refused(reason) => report
                .failures
                .extend(batch.names.into_iter().map(|name| (name, reason.clone()))),
        }
        progress.confirmed(batch.bytes, report.stored + report.unchanged);
    }
    Ok(report)
}

/// Starts sending one batch Bundle. Resources with an id are updates (idempotent), others
/// creates. The Bundle is written as text around each resource's text: a line read as text
/// goes out as read. The node is asked for `return=minimal`: the importer needs each entry's
/// status, not the resources back.
fn send_batch(
    client: &reqwest::Client,
    base: &str,
    chunk: Vec<(Resource, u64)>,
) -> Result<HttpBatch> {
    let mut names = Vec::with_capacity(chunk.len());
    let mut bytes = 0;
    let mut body = String::from(r#"{"resourceType":"Bundle","type":"batch","entry":["#);
    for (i, (resource, weight)) in chunk.into_iter().enumerate() {
        bytes += weight;
        let name = resource.name();
        let request = match &resource {
            Resource::Parsed(value) if value.get("id").is_none() => {
                json!({"method": "POST", "url": value["resourceType"]})
            }
            Resource::Text {
                resource_type,
                id: None,
                ..
            } => json!({"method": "POST", "url": resource_type}),
            _ => json!({"method": "PUT", "url": name}),
        };
        if i > 0 {
            body.push(',');
        }
        body.push_str(r#"{"resource":"#);
        match resource {
            Resource::Parsed(value) => body.push_str(&value.to_string()),
            Resource::Text { text, .. } => body.push_str(&text),
        }
        body.push_str(r#","request":"#);
        body.push_str(&request.to_string());
        body.push('}');
        names.push(name);
    }
    body.push_str("]}");
    let request = client
        .post(base)
        .header("content-type", "application/fhir+json")
        .header("prefer", "return=minimal")
        .body(body);
    let base = base.to_string();
    let answer = tokio::spawn(async move {
        let response = request
            .send()
            .await
            .with_context(|| format!("POST batch to {base}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("read {base}'s answer"))?;
        let mut body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let reason = body
                .pointer("/issue/0/diagnostics")
                .and_then(Value::as_str)
                .map_or_else(|| text.chars().take(200).collect(), String::from);
            return Ok(BatchAnswer::Refused(format!(
                "the node refused the whole batch ({status}): {reason}"
            )));
        }
        match body.get_mut("entry").map(Value::take) {
            Some(Value::Array(entries)) => Ok(BatchAnswer::Entries(entries)),
            _ => bail!("{base} answered a batch without a batch-response"),
        }
    });
    Ok(HttpBatch {
        names,
        bytes,
        answer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_audit_event_is_refused_and_the_rest_imported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(
            &dir.path().join("node.sqlite"),
            zorgnet_fhir::search::SearchRegistry::r4(),
        )
        .unwrap();
        let resources = vec![
            json!({"resourceType": "Patient", "id": "p1"}),
            json!({"resourceType": "AuditEvent", "id": "a1",
                "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
                "recorded": "2026-01-01T00:00:00Z",
                "agent": [{"requestor": true, "who": {"display": "someone"}}],
                "source": {"observer": {"display": "elsewhere"}}}),
        ];
        let report = load_into_store(&store, resources.into_iter(), None)
            .await
            .unwrap();
        assert_eq!(report.stored, 1);
        assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
        let (name, reason) = &report.failures[0];
        assert_eq!(name, "AuditEvent/a1");
        assert!(reason.contains("access log"), "{reason}");
        assert!(matches!(
            store.read("AuditEvent", "a1").await.unwrap(),
            zorgnet_store::ReadOutcome::NotFound
        ));
    }
}
