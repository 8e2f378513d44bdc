//! `zorgnet import`: NDJSON and Bundle files into a node, in batches, with progress and a
//! per-resource failure report. Resources are written as updates with their own ids, so a
//! second run of the same import changes nothing (unchanged resources get no new version).
//! Bundles whose entries use `urn:uuid:` fullUrls (Synthea, transaction Bundles) get those
//! UUIDs as ids, and references to them are rewritten, so they too import idempotently.
//! Straight into a node's database (`--data`, `--postgres`), the import writes through the
//! node's outbox hook like the node does: each batch queues the referral-index registrations
//! of its patients in its own transaction, and the node delivers them once it runs with
//! `--hub`.

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use zorgnet_store::{ImportOutcome, Store};

/// Resources per database transaction when importing straight into a store. Each commit
/// writes every page it touched to the WAL, and the index tables' lookup B-trees are touched
/// all over: fewer, larger transactions write the same hot pages fewer times (1,000,000
/// resources: 4,000 per transaction 15,689/s, 16,000 per transaction 21,555/s, peak RSS 175
/// → 261 MiB; docs/benchmarks.md).
pub const STORE_BATCH_RESOURCES: usize = 16_000;
/// Resources per batch Bundle when importing into a node over HTTP (below the node's
/// `MAX_BUNDLE_ENTRIES`).
pub const HTTP_BATCH_RESOURCES: usize = 4_000;
/// Failures shown individually at the end (all are counted).
const MAX_FAILURES_SHOWN: usize = 50;

/// Arguments of `zorgnet import`.
#[derive(Args)]
pub struct ImportArgs {
    /// NDJSON files (one resource or Bundle per line) or JSON files holding one Bundle.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Base URL of a running node (`http://127.0.0.1:8080/fhir`).
    #[arg(long, conflicts_with_all = ["data", "postgres"])]
    to: Option<String>,
    /// SQLite directory of a node that is not running.
    #[arg(long)]
    data: Option<PathBuf>,
    /// PostgreSQL URL of a node's database.
    #[arg(long)]
    postgres: Option<String>,
}

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// New resources or new versions.
    pub stored: u64,
    /// Resources identical to what was stored already.
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
    let progress = indicatif::ProgressBar::new(total_bytes);
    progress.set_style(indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {msg} ({eta} left)",
    )?);
    let mut report = ImportReport::default();
    let target = match (&args.to, &args.postgres, &args.data) {
        (Some(url), _, _) => Target::Http(
            reqwest::Client::new(),
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
        let mut resources = ResourceReader::open(file, &progress)?;
        let part = match &target {
            Target::Store(store) => load_into_store(store, &mut resources, Some(&progress)).await?,
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
    if let Target::Store(store) = target {
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
        // A PostgreSQL client must not be dropped on an async worker thread.
        tokio::task::spawn_blocking(move || drop(store)).await?;
    }
    progress.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let handled = report.stored + report.unchanged;
    println!(
        "imported {handled} resources in {seconds:.1} s ({:.0}/s): {} stored, {} unchanged, {} failed",
        handled as f64 / seconds.max(1e-9),
        report.stored,
        report.unchanged,
        report.failures.len()
    );
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
    Ok(())
}

enum Target {
    Store(Store),
    Http(reqwest::Client, String),
}

/// The resources of one file (NDJSON of resources or Bundles, or one JSON document), read
/// one line at a time as the import asks for them: a file of a million resources never sits
/// in memory whole (parsed, that would be several GiB). Lines that are not JSON, and a read
/// error (which ends the file), are kept in `failures`.
struct ResourceReader {
    reader: BufReader<std::fs::File>,
    name: String,
    line: String,
    number: usize,
    /// Resources of the last line read (a Bundle's entries) not yet handed out.
    pending: std::collections::VecDeque<Value>,
    done: bool,
    progress: indicatif::ProgressBar,
    failures: Vec<(String, String)>,
}

impl ResourceReader {
    /// Opens `path`. A file whose first line is not a JSON value is one JSON document
    /// (a Bundle written over several lines): that one is read whole.
    fn open(path: &std::path::Path, progress: &indicatif::ProgressBar) -> Result<ResourceReader> {
        let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
        let mut reader = ResourceReader {
            reader: BufReader::new(file),
            name: path.display().to_string(),
            line: String::new(),
            number: 0,
            pending: std::collections::VecDeque::new(),
            done: false,
            progress: progress.clone(),
            failures: Vec::new(),
        };
        reader.read_line()?;
        let first = reader.line.trim();
        if !first.is_empty() && serde_json::from_str::<serde::de::IgnoredAny>(first).is_err() {
            let mut rest = String::new();
            reader.reader.read_to_string(&mut rest)?;
            reader.progress.inc(rest.len() as u64);
            let text = std::mem::take(&mut reader.line) + &rest;
            let document: Value = serde_json::from_str(&text).with_context(|| {
                format!("{} is neither NDJSON nor one JSON document", reader.name)
            })?;
            let mut resources = Vec::new();
            expand(document, &reader.name, &mut resources);
            reader.pending.extend(resources);
            reader.done = true;
        }
        Ok(reader)
    }

    fn read_line(&mut self) -> std::io::Result<usize> {
        self.line.clear();
        let read = self.reader.read_line(&mut self.line)?;
        self.number += 1;
        self.progress.inc(read as u64);
        Ok(read)
    }
}

impl Iterator for ResourceReader {
    type Item = Value;

    fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(resource) = self.pending.pop_front() {
                return Some(resource);
            }
            if self.done {
                return None;
            }
            let location = format!("{}:{}", self.name, self.number);
            if !self.line.trim().is_empty() {
                match serde_json::from_str::<Value>(&self.line) {
                    Ok(value) => {
                        let mut resources = Vec::new();
                        expand(value, &location, &mut resources);
                        self.pending.extend(resources);
                    }
                    Err(e) => self
                        .failures
                        .push((location.clone(), format!("malformed JSON: {e}"))),
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
/// batch. Validating, stamping, serialising and indexing a batch (on this task) overlaps the
/// database transaction of the previous one (on the blocking pool), so the two use two cores;
/// a batch counts as stored only once its transaction has committed.
pub async fn load_into_store(
    store: &Store,
    resources: impl Iterator<Item = Value>,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<ImportReport> {
    let mut report = ImportReport::default();
    let mut in_flight: Option<tokio::task::JoinHandle<BatchResult>> = None;
    let mut resources = resources.peekable();
    while resources.peek().is_some() {
        let mut batch = store.import_batch();
        let mut names: Vec<String> = Vec::with_capacity(STORE_BATCH_RESOURCES);
        for mut resource in resources.by_ref() {
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
        if !batch.is_empty() {
            let store = store.clone();
            in_flight = Some(tokio::spawn(async move {
                let result = store.import(batch).await;
                (names, result)
            }));
        }
    }
    if let Some(handle) = in_flight.take() {
        collect(store, handle.await?, &mut report, progress).await;
    }
    Ok(report)
}

/// One written batch: resource names, and the transaction's outcomes or, when it failed, the
/// batch's resources as operations for a retry one by one.
type BatchResult = (
    Vec<String>,
    Result<Vec<ImportOutcome>, zorgnet_store::ImportFailure>,
);

async fn collect(
    store: &Store,
    (names, result): BatchResult,
    report: &mut ImportReport,
    progress: Option<&indicatif::ProgressBar>,
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
        progress.set_message(format!("{} resources", report.stored + report.unchanged));
    }
}

async fn load_over_http(
    client: &reqwest::Client,
    base: &str,
    resources: &mut impl Iterator<Item = Value>,
    progress: &indicatif::ProgressBar,
) -> Result<ImportReport> {
    let mut report = ImportReport::default();
    loop {
        let chunk: Vec<Value> = resources.by_ref().take(HTTP_BATCH_RESOURCES).collect();
        if chunk.is_empty() {
            break;
        }
        let entries: Vec<Value> = chunk
            .iter()
            .map(|r| {
                let name = describe(r);
                match r.get("id") {
                    Some(_) => json!({"resource": r, "request": {"method": "PUT", "url": name}}),
                    None => json!({"resource": r, "request": {"method": "POST", "url": r["resourceType"]}}),
                }
            })
            .collect();
        let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": entries});
        let response = client
            .post(base)
            .header("content-type", "application/fhir+json")
            .body(bundle.to_string())
            .send()
            .await
            .with_context(|| format!("POST batch to {base}"))?;
        let status = response.status();
        let body: Value = response.json().await.context("read batch response")?;
        if !status.is_success() {
            bail!("{base} refused the batch with {status}: {body}");
        }
        let answers = body
            .get("entry")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (resource, answer) in chunk.iter().zip(answers) {
            let status = answer
                .pointer("/response/status")
                .and_then(Value::as_str)
                .unwrap_or("");
            if status.starts_with("201") || status.starts_with("200") {
                report.stored += 1;
            } else {
                let reason = answer
                    .pointer("/response/outcome/issue/0/diagnostics")
                    .and_then(Value::as_str)
                    .unwrap_or(status)
                    .to_string();
                report.failures.push((describe(resource), reason));
            }
        }
        progress.set_message(format!("{} resources", report.stored));
    }
    Ok(report)
}
