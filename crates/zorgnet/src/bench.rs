//! `zorgnet bench`: the node's benchmark. Loads synthetic patients in two stages (a tenth,
//! then the rest), and after each stage serves the data on loopback and measures with `wrk`
//! (a separate process, sharing the cores): read by id, search by BSN,
//! `Observation?patient=X&code=Y`, plus `$everything` latency and resident memory.
//! Prints a Markdown table for `docs/benchmarks.md`.

use crate::import::load_into_store;
use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use zorgnet_node::NodeIdentity;

/// Distinct request paths each wrk scenario rotates through.
const SAMPLE_PATHS: usize = 2_000;
/// `$everything` calls timed per stage.
const EVERYTHING_CALLS: usize = 50;

/// Arguments of `zorgnet bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Synthetic patients in total (about 200 resources each).
    #[arg(long, default_value_t = 5_000)]
    patients: usize,
    /// Seed of the synthetic data.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Seconds per wrk scenario.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// wrk connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Directory for the SQLite database (default: a fresh temporary directory).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Benchmark PostgreSQL at this URL instead (a fresh schema is created in it).
    #[arg(long)]
    postgres: Option<String>,
}

struct Samples {
    reads: Vec<String>,
    bsn_searches: Vec<String>,
    observation_searches: Vec<String>,
    everything: Vec<String>,
}

fn samples(generator: &zorgnet_synth::Generator, patients: usize) -> Samples {
    let mut s = Samples {
        reads: Vec::new(),
        bsn_searches: Vec::new(),
        observation_searches: Vec::new(),
        everything: Vec::new(),
    };
    let step = (patients / SAMPLE_PATHS).max(1);
    let mut best_everything: Vec<(usize, String)> = Vec::new();
    for index in (0..patients).step_by(step) {
        let resources = generator.patient_resources(index);
        let Some(patient) = resources.iter().find(|r| r["resourceType"] == "Patient") else {
            continue;
        };
        let id = patient["id"].as_str().unwrap_or_default().to_string();
        s.reads.push(format!("/fhir/Patient/{id}"));
        if let Some(other) = resources.get(resources.len() / 2) {
            s.reads.push(format!(
                "/fhir/{}/{}",
                other["resourceType"].as_str().unwrap_or(""),
                other["id"].as_str().unwrap_or("")
            ));
        }
        let bsn = patient["identifier"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["system"] == zorgnet_fhir::identifiers::BSN_SYSTEM);
        if let Some(bsn) = bsn.and_then(|i| i["value"].as_str()) {
            s.bsn_searches.push(format!(
                "/fhir/Patient?identifier={}%7C{bsn}",
                zorgnet_fhir::identifiers::BSN_SYSTEM
            ));
        }
        let observation = resources
            .iter()
            .find(|r| r["resourceType"] == "Observation");
        if let Some(code) = observation
            .and_then(|o| o.pointer("/code/coding/0/code"))
            .and_then(Value::as_str)
        {
            s.observation_searches.push(format!(
                "/fhir/Observation?patient={id}&code=http://loinc.org%7C{code}"
            ));
        }
        best_everything.push((
            resources.len().abs_diff(200),
            format!("/fhir/Patient/{id}/$everything"),
        ));
    }
    best_everything.sort();
    s.everything = best_everything
        .into_iter()
        .take(10)
        .map(|(_, p)| p)
        .collect();
    s
}

/// What one wrk run measured.
pub(crate) struct WrkResult {
    pub(crate) requests_per_second: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) errors: String,
}

fn parse_latency_ms(text: &str) -> Option<f64> {
    let text = text.trim();
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

fn wrk(
    address: &str,
    paths: &[String],
    seconds: u64,
    connections: usize,
    dir: &std::path::Path,
) -> Result<WrkResult> {
    let mut script = String::from("local paths = {\n");
    for p in paths {
        let _ = writeln!(script, "  {:?},", p);
    }
    script.push_str(
        "}\nrequest = function()\n  return wrk.format(\"GET\", paths[math.random(#paths)])\nend\n",
    );
    let script_path = dir.join("paths.lua");
    std::fs::write(&script_path, script)?;
    run_wrk(address, &script_path, seconds, connections)
}

/// Runs `wrk -t2` with a Lua `script` against `address` and reads its summary.
pub(crate) fn run_wrk(
    address: &str,
    script_path: &std::path::Path,
    seconds: u64,
    connections: usize,
) -> Result<WrkResult> {
    let output = std::process::Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(script_path)
        .arg(format!("http://{address}"))
        .output()
        .context("run wrk (install it with `apt-get install wrk`)")?;
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let mut result = WrkResult {
        requests_per_second: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        errors: String::new(),
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", rate] => result.requests_per_second = rate.parse().unwrap_or(0.0),
            ["50%", latency] => result.p50_ms = parse_latency_ms(latency).unwrap_or(0.0),
            ["99%", latency] => result.p99_ms = parse_latency_ms(latency).unwrap_or(0.0),
            ["Non-2xx", "or", "3xx", "responses:", n] => result.errors = format!("{n} non-2xx"),
            _ => {}
        }
        if line.contains("Socket errors") {
            result.errors = line.trim().to_string();
        }
    }
    if result.requests_per_second == 0.0 {
        bail!(
            "wrk produced no result: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(result)
}

/// Linux's unit of process CPU time in `/proc/…/stat` (USER_HZ).
const CLOCK_TICKS_PER_S: f64 = 100.0;
/// This process's CPU times, all threads.
pub(crate) const PROCESS_STAT: &str = "/proc/self/stat";

/// User plus system CPU time in seconds from a `/proc/…/stat` file (`/proc/self/stat`: the
/// process; `/proc/thread-self/stat`: the calling thread).
pub(crate) fn cpu_s(stat_file: &str) -> f64 {
    std::fs::read_to_string(stat_file)
        .ok()
        .and_then(|stat| {
            let fields: Vec<u64> = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|f| f.parse().ok())
                .collect();
            Some(fields.iter().sum::<u64>() as f64 / CLOCK_TICKS_PER_S)
        })
        .unwrap_or(0.0)
}

/// A `/proc/self/status` field in KiB (`VmRSS:`, `VmHWM:`).
pub(crate) fn memory_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn everything_latency(
    client: &reqwest::Client,
    address: &str,
    paths: &[String],
) -> Result<(f64, f64, usize)> {
    let mut timings = Vec::with_capacity(EVERYTHING_CALLS);
    let mut entries = 0;
    for i in 0..EVERYTHING_CALLS {
        let path = &paths[i % paths.len().max(1)];
        let started = Instant::now();
        let response = client.get(format!("http://{address}{path}")).send().await?;
        let body: Value = response.json().await?;
        timings.push(started.elapsed().as_secs_f64() * 1000.0);
        entries = body["entry"].as_array().map_or(0, Vec::len);
    }
    timings.sort_by(f64::total_cmp);
    let median = timings[timings.len() / 2];
    let p99 = timings[(timings.len() * 99 / 100).min(timings.len() - 1)];
    Ok((median, p99, entries))
}

pub async fn run(args: BenchArgs) -> Result<()> {
    let temp = tempfile::tempdir()?;
    let store = match &args.postgres {
        Some(url) => {
            let schema = format!("zorgnet_bench_{}", zorgnet_store::now_ms());
            let url = url.clone();
            let schema_url = tokio::task::spawn_blocking(move || {
                zorgnet_db::postgres_fresh_schema(&url, &schema)
            })
            .await??;
            crate::open_store(std::path::Path::new("."), Some(&schema_url)).await?
        }
        None => crate::open_store(args.data.as_deref().unwrap_or(temp.path()), None).await?,
    };
    let backend = if args.postgres.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let generator = zorgnet_synth::Generator::new(zorgnet_synth::SynthConfig {
        patients: args.patients,
        seed: args.seed,
    });
    let first_stage = (args.patients / 10).max(1);
    let mut report = String::new();
    let _ = writeln!(
        report,
        "| backend | resources | import /s | read req/s | read p50/p99 ms | BSN search req/s | BSN p50/p99 ms | Obs?patient&code req/s | Obs p50/p99 ms | $everything median/p99 ms (entries) | RSS MiB (peak) |"
    );
    let _ = writeln!(report, "|---|---|---|---|---|---|---|---|---|---|---|");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let router = zorgnet_rest::router(
        store.clone(),
        NodeIdentity {
            ura: "00000002".into(),
            name: "bench".into(),
        },
        format!("http://{address}/fhir"),
    );
    tokio::spawn(zorgnet_node::serve(
        listener,
        router,
        std::future::pending(),
    ));
    let client = reqwest::Client::new();
    let mut loaded = 0u64;
    for (stage, patients) in [(0, 0..first_stage), (1, first_stage..args.patients)] {
        let directory = if stage == 0 {
            generator.directory_resources()
        } else {
            Vec::new()
        };
        let resources = directory.into_iter().chain(
            patients
                .clone()
                .flat_map(|i| generator.patient_resources(i)),
        );
        let started = Instant::now();
        let part = load_into_store(&store, resources, None).await?;
        store.analyze().await?;
        let elapsed = started.elapsed().as_secs_f64();
        loaded += part.stored + part.unchanged;
        if !part.failures.is_empty() {
            bail!(
                "{} resources failed to import, first: {:?}",
                part.failures.len(),
                part.failures[0]
            );
        }
        let import_rate = (part.stored + part.unchanged) as f64 / elapsed;
        eprintln!(
            "stage {stage}: {loaded} resources loaded ({import_rate:.0}/s); measuring for {} s per scenario",
            args.seconds
        );
        let s = samples(&generator, patients.end);
        let read = wrk(
            &address,
            &s.reads,
            args.seconds,
            args.connections,
            temp.path(),
        )?;
        let bsn = wrk(
            &address,
            &s.bsn_searches,
            args.seconds,
            args.connections,
            temp.path(),
        )?;
        let obs = wrk(
            &address,
            &s.observation_searches,
            args.seconds,
            args.connections,
            temp.path(),
        )?;
        let (everything_median, everything_p99, entries) =
            everything_latency(&client, &address, &s.everything).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let errors: Vec<&str> = [&read.errors, &bsn.errors, &obs.errors]
            .into_iter()
            .filter(|e| !e.is_empty())
            .map(String::as_str)
            .collect();
        if !errors.is_empty() {
            eprintln!("wrk reported errors: {errors:?}");
        }
        let _ = writeln!(
            report,
            "| {backend} | {loaded} | {import_rate:.0} | {:.0} | {:.2} / {:.2} | {:.0} | {:.2} / {:.2} | {:.0} | {:.2} / {:.2} | {everything_median:.1} / {everything_p99:.1} ({entries}) | {} ({}) |",
            read.requests_per_second,
            read.p50_ms,
            read.p99_ms,
            bsn.requests_per_second,
            bsn.p50_ms,
            bsn.p99_ms,
            obs.requests_per_second,
            obs.p50_ms,
            obs.p99_ms,
            memory_kib("VmRSS:") / 1024,
            memory_kib("VmHWM:") / 1024,
        );
    }
    println!("{report}");
    Ok(())
}
