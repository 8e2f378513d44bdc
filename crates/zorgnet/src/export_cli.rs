//! `zorgnet export`: a node's data out as NDJSON files through FHIR Bulk Data `$export`, the
//! organisation's exit in a standard form.
//!
//! It kicks off the export at the node (`$export`, `Patient/$export` or `Group/{id}/$export`
//! with `Prefer: respond-async`), polls the status URL as the server's `Retry-After` asks,
//! showing the resources written so far, downloads every file of the manifest into the
//! output directory with a bar over the manifest's resource counts, checks each file's line
//! count against the manifest, writes the manifest beside them (`manifest.json`), and then
//! deletes the job at the node. Ctrl-C while the node exports cancels the job there.
//! What it is not: an import (see `zorgnet import`, which reads these files back), or a client
//! of other servers' authorisation (it sends the node key, as `zorgnet import --to` does).

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt as _;

/// The poll interval when the status answer gives no usable `Retry-After`.
const DEFAULT_POLL: Duration = Duration::from_secs(1);
/// The longest wait between two polls, whatever `Retry-After` says.
const MAX_POLL: Duration = Duration::from_secs(30);
/// How long one request to the node (a poll, or one file's download) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3_600);
/// How often the progress display redraws between answers.
const PROGRESS_TICK: Duration = Duration::from_millis(250);
/// The name of the manifest written beside the files.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Arguments of `zorgnet export`.
#[derive(Args)]
pub struct ExportArgs {
    /// Base URL of a running node (`https://127.0.0.1:8080/fhir`).
    #[arg(long)]
    from: String,
    /// The node's key (its data directory's `node-admin.key`); a node started with
    /// --insecure-dev needs none.
    #[arg(long, env = "ZORGNET_NODE_KEY", hide_env_values = true)]
    node_key: Option<String>,
    /// The directory to write the files into (created; files of the same name are replaced).
    #[arg(long)]
    out: PathBuf,
    /// Only these resource types (comma-separated): `_type`.
    #[arg(long = "type", value_delimiter = ',')]
    types: Vec<String>,
    /// Only resources changed after this instant (`2026-01-01T00:00:00Z`): `_since`.
    #[arg(long)]
    since: Option<String>,
    /// A search a resource of its type must match (`Observation?code=http://loinc.org|718-7`),
    /// repeatable: `_typeFilter`.
    #[arg(long = "type-filter")]
    type_filters: Vec<String>,
    /// Export the compartments of every Patient (`Patient/$export`) instead of everything.
    #[arg(long, conflicts_with = "group")]
    patients: bool,
    /// Export the compartments of this Group's members (`Group/{id}/$export`).
    #[arg(long)]
    group: Option<String>,
}

/// What an export wrote.
#[derive(Debug)]
pub struct ExportReport {
    /// Per file: the resource type, its path, and its resources.
    pub files: Vec<(String, PathBuf, u64)>,
}

pub async fn run(args: ExportArgs) -> Result<()> {
    let started = Instant::now();
    let report = export(&args).await?;
    let resources: u64 = report.files.iter().map(|(_, _, n)| n).sum();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "exported {resources} resources in {} files to {} in {seconds:.1} s ({:.0} resources/s)",
        report.files.len(),
        args.out.display(),
        resources as f64 / seconds.max(0.001)
    );
    for (resource_type, path, count) in &report.files {
        println!("  {resource_type}: {count} in {}", path.display());
    }
    Ok(())
}

/// The kick-off URL of `args`.
fn kick_off_url(args: &ExportArgs) -> Result<reqwest::Url> {
    let base = args.from.trim_end_matches('/');
    let path = match (&args.group, args.patients) {
        (Some(group), _) => format!("{base}/Group/{group}/$export"),
        (None, true) => format!("{base}/Patient/$export"),
        (None, false) => format!("{base}/$export"),
    };
    let mut url = reqwest::Url::parse(&path).with_context(|| format!("--from {base}"))?;
    {
        let mut query = url.query_pairs_mut();
        if !args.types.is_empty() {
            query.append_pair("_type", &args.types.join(","));
        }
        if let Some(since) = &args.since {
            query.append_pair("_since", since);
        }
        for filter in &args.type_filters {
            query.append_pair("_typeFilter", filter);
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    Ok(url)
}

/// Runs the export of `args` (see the module documentation).
pub async fn export(args: &ExportArgs) -> Result<ExportReport> {
    let client = crate::node_client(
        crate::client_builder().timeout(REQUEST_TIMEOUT),
        args.node_key.as_deref(),
    )?;
    let url = kick_off_url(args)?;
    let answer = client
        .get(url.clone())
        .header("prefer", "respond-async")
        .header("accept", "application/fhir+json")
        .send()
        .await
        .with_context(|| format!("kick off {url}"))?;
    if answer.status() != reqwest::StatusCode::ACCEPTED {
        bail!(
            "the node refused the export ({}): {}",
            answer.status(),
            diagnostics(&answer.text().await.unwrap_or_default())
        );
    }
    let status_url = answer
        .headers()
        .get("content-location")
        .and_then(|v| v.to_str().ok())
        .context("the node's answer to the kick-off has no Content-Location")?
        .to_string();
    let waiting = spinner()?;
    let manifest = tokio::select! {
        manifest = wait_for_manifest(&client, &status_url, &waiting) => manifest,
        _ = tokio::signal::ctrl_c() => {
            waiting.finish_and_clear();
            let _ = client.delete(&status_url).send().await;
            bail!("interrupted: the export was cancelled at the node");
        }
    };
    waiting.finish_and_clear();
    let manifest = manifest?;
    let report = download(&client, &manifest, &args.out).await?;
    let written = serde_json::to_vec_pretty(&manifest)?;
    std::fs::write(args.out.join(MANIFEST_FILE), written)
        .with_context(|| format!("write {}", args.out.join(MANIFEST_FILE).display()))?;
    // The files are here: the node may forget the job.
    let _ = client.delete(&status_url).send().await;
    Ok(report)
}

/// A spinner with the node's progress; hidden unless stderr is a terminal.
fn spinner() -> Result<indicatif::ProgressBar> {
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(indicatif::ProgressStyle::with_template(
        "{spinner} the node is exporting: {msg} ({elapsed})",
    )?);
    bar.set_message("starting");
    bar.enable_steady_tick(PROGRESS_TICK);
    Ok(bar)
}

/// Polls `status_url` until the manifest comes.
async fn wait_for_manifest(
    client: &reqwest::Client,
    status_url: &str,
    progress: &indicatif::ProgressBar,
) -> Result<Value> {
    loop {
        let answer = client
            .get(status_url)
            .send()
            .await
            .with_context(|| format!("poll {status_url}"))?;
        match answer.status() {
            reqwest::StatusCode::OK => {
                return answer
                    .json()
                    .await
                    .context("the export's manifest is not JSON");
            }
            reqwest::StatusCode::ACCEPTED => {
                if let Some(done) = answer
                    .headers()
                    .get("x-progress")
                    .and_then(|v| v.to_str().ok())
                {
                    progress.set_message(done.to_string());
                }
                let wait = answer
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map_or(DEFAULT_POLL, Duration::from_secs)
                    .min(MAX_POLL);
                tokio::time::sleep(wait).await;
            }
            status => bail!(
                "the export failed at the node ({status}): {}",
                diagnostics(&answer.text().await.unwrap_or_default())
            ),
        }
    }
}

/// Downloads every output file of `manifest` into `out`, with a bar over the resources.
async fn download(client: &reqwest::Client, manifest: &Value, out: &Path) -> Result<ExportReport> {
    let outputs = manifest["output"]
        .as_array()
        .context("the manifest has no output list")?;
    let total: u64 = outputs.iter().filter_map(|o| o["count"].as_u64()).sum();
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(total)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} resources downloaded ({elapsed}, {eta} left)",
    )?);
    let mut files = Vec::new();
    for output in outputs {
        let (Some(resource_type), Some(url)) = (output["type"].as_str(), output["url"].as_str())
        else {
            bail!("a manifest output without type or url: {output}");
        };
        let name = url
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty() && !n.starts_with('.') && !n.contains('\\'))
            .with_context(|| format!("no usable file name in {url}"))?;
        let path = out.join(name);
        let lines = fetch_file(client, url, &path, &bar).await?;
        if let Some(expected) = output["count"].as_u64()
            && expected != lines
        {
            bail!("{url}: {lines} resources where the manifest says {expected}");
        }
        files.push((resource_type.to_string(), path, lines));
    }
    bar.finish_and_clear();
    Ok(ExportReport { files })
}

/// Streams one file to `path`; answers its lines.
async fn fetch_file(
    client: &reqwest::Client,
    url: &str,
    path: &Path,
    bar: &indicatif::ProgressBar,
) -> Result<u64> {
    let mut answer = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("download {url}"))?;
    if !answer.status().is_success() {
        bail!("download {url}: {}", answer.status());
    }
    let mut file = tokio::io::BufWriter::new(
        tokio::fs::File::create(path)
            .await
            .with_context(|| format!("create {}", path.display()))?,
    );
    let mut lines = 0;
    while let Some(chunk) = answer
        .chunk()
        .await
        .with_context(|| format!("download {url}"))?
    {
        let newlines = chunk.iter().filter(|b| **b == b'\n').count() as u64;
        lines += newlines;
        bar.inc(newlines);
        file.write_all(&chunk)
            .await
            .with_context(|| format!("write {}", path.display()))?;
    }
    file.flush().await?;
    file.get_mut().sync_all().await?;
    Ok(lines)
}

/// The diagnostics of an OperationOutcome answer, or the answer itself.
fn diagnostics(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|outcome| {
            outcome["issue"].as_array().map(|issues| {
                issues
                    .iter()
                    .filter_map(|i| i["diagnostics"].as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        })
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| text.chars().take(500).collect())
}
