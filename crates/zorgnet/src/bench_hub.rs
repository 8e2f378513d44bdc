//! `zorgnet bench-hub`: the hub's benchmark for the referral index (NVI) and the pseudonym
//! service (PRS). Opens a hub on loopback, registers organisations, bulk-loads registrations
//! straight into its database (plus a sample of real people whose exchange tokens the
//! benchmark can make), then measures over HTTP: registration batches with real tokens,
//! lookups with `wrk` over many distinct tokens, PRS evaluations, the hub's share of a
//! conversion (PRS evaluate → referral index open, inputs blinded by the holder before) and
//! the full conversion (holder blind → PRS evaluate → referral index open). Prints a
//! Markdown table for `docs/benchmarks.md`.

use crate::bench::{WrkResult, memory_kib, run_wrk};
use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Args;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use zorgnet_fhir::categories::DataCategory;
use zorgnet_hub::{Hub, HubConfig, HubState};
use zorgnet_node::hub_client::{BlindedBatch, HubClient, blind_all, token_value};
use zorgnet_pseudonym::{Bsn, ExchangeToken, PersonalId, RecipientId};

/// Registrations per person in the bulk load (SYSTEM.md: about ten).
const REGISTRATIONS_PER_PERSON: usize = 10;
/// Characters of a pseudonym as the referral index stores it (32 bytes, unpadded base64url).
const PSEUDONYM_CHARS: usize = 43;
/// People per bulk-load transaction (times [`REGISTRATIONS_PER_PERSON`] rows).
const LOAD_PEOPLE_PER_TRANSACTION: usize = 20_000;
/// Bulk-load chunks generated ahead of the writer.
const LOAD_CHUNKS_AHEAD: usize = 2;
/// Exchange tokens (and blinded inputs) per HTTP batch.
const HTTP_BATCH_ITEMS: usize = 1_000;
/// Concurrent clients in the batch measurements (registration, PRS).
const BATCH_CLIENTS: usize = 2;
/// Categories one organisation registers per token over HTTP.
const REGISTRATION_CATEGORIES: [DataCategory; 4] = [
    DataCategory::PatientSummary,
    DataCategory::Medication,
    DataCategory::Allergies,
    DataCategory::GpSummary,
];
/// Categories a lookup asks for.
const LOOKUP_CATEGORIES: [&str; 3] = ["patient-summary", "medication", "lab-results"];
/// The bulk load's three holders per person and the categories each holds (4 + 4 + 2 = 10):
/// a GP, a hospital and a pharmacy or nursing organisation.
const PERSON_LAYOUT: [&[DataCategory]; 3] = [
    &[
        DataCategory::PatientSummary,
        DataCategory::Medication,
        DataCategory::Allergies,
        DataCategory::GpSummary,
    ],
    &[
        DataCategory::PatientSummary,
        DataCategory::LabResults,
        DataCategory::Imaging,
        DataCategory::DischargeReport,
    ],
    &[DataCategory::Medication, DataCategory::NursingTransfer],
];
/// First BSN candidate of the people whose tokens the benchmark makes.
const FIRST_BSN_CANDIDATE: u32 = 100_000_000;
/// First URA number of the benchmark's organisations.
const FIRST_URA: u32 = 10_000_000;
/// FNV-1a (64-bit) parameters: the cheap hash that spreads a person's holders.
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// Microseconds in a second.
const MICROS_PER_S: f64 = 1_000_000.0;

/// Arguments of `zorgnet bench-hub`.
#[derive(Args)]
pub struct BenchHubArgs {
    /// Registrations bulk-loaded into the referral index before measuring.
    #[arg(long, default_value_t = 10_000_000)]
    registrations: usize,
    /// Organisations the registrations are spread over.
    #[arg(long, default_value_t = 2_000)]
    organisations: usize,
    /// Real people (valid BSNs) among the loaded ones: the lookups' targets.
    #[arg(long, default_value_t = 2_000)]
    sample_people: usize,
    /// Distinct exchange tokens the lookup run cycles through.
    #[arg(long, default_value_t = 20_000)]
    lookup_tokens: usize,
    /// Exchange tokens registered over HTTP (each with 4 categories).
    #[arg(long, default_value_t = 20_000)]
    http_registrations: usize,
    /// Blinded inputs evaluated over HTTP, and conversions timed.
    #[arg(long, default_value_t = 20_000)]
    evaluations: usize,
    /// Seconds of the wrk lookup run (tokens expire after 300 s: keep it well under).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// wrk connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Directory for keys and the SQLite database (default: a fresh temporary directory).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Benchmark PostgreSQL at this URL instead (a fresh schema is created in it).
    #[arg(long)]
    postgres: Option<String>,
}

/// One row of the results table.
struct Figure {
    what: &'static str,
    value: String,
    target: &'static str,
}

pub async fn run(args: BenchHubArgs) -> Result<()> {
    if args.organisations < PERSON_LAYOUT.len() + BATCH_CLIENTS + 1 {
        bail!(
            "--organisations must be at least {}",
            PERSON_LAYOUT.len() + BATCH_CLIENTS + 1
        );
    }
    let temp = tempfile::tempdir()?;
    let data = args
        .data
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let postgres = match &args.postgres {
        Some(url) => {
            let schema = format!("zorgnet_bench_hub_{}", zorgnet_db::now_ms());
            let url = url.clone();
            Some(
                tokio::task::spawn_blocking(move || {
                    zorgnet_db::postgres_fresh_schema(&url, &schema)
                })
                .await??,
            )
        }
        None => None,
    };
    let backend = if postgres.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let config = HubConfig {
        data_dir: data.clone(),
        postgres,
        allow_insecure_endpoints: false,
        client_tls: None,
    };
    let hub = tokio::task::spawn_blocking(move || Hub::open(&config))
        .await?
        .context("open the hub")?;
    let state = hub.state();
    let admin_key = std::fs::read_to_string(hub.admin_key_path())?
        .trim()
        .to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let base = format!("http://{address}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(zorgnet_node::serve(listener, hub.router(&base), async {
        let _ = stopped.await;
    }));

    let keys = register_organisations(&base, &admin_key, args.organisations).await?;
    let client = |i: usize| HubClient::new(&base, &keys[i]);
    let nvi = RecipientId::referral_index();

    // Real people: their referral-index pseudonyms come from opening real tokens.
    let (people, next) = valid_bsns(FIRST_BSN_CANDIDATE, args.sample_people);
    let sample_tokens = tokens_for(&client(0)?, &people, &nvi).await?;
    let sample_pseudonyms = open_all(&state, sample_tokens).await?;

    let people_total = (args.registrations / REGISTRATIONS_PER_PERSON).max(sample_pseudonyms.len());
    eprintln!(
        "{backend}: loading {} registrations ({people_total} people, {} organisations)",
        people_total * REGISTRATIONS_PER_PERSON,
        args.organisations
    );
    let started = Instant::now();
    let loaded = bulk_load(&state, &sample_pseudonyms, people_total, args.organisations).await?;
    let load_seconds = started.elapsed().as_secs_f64();
    let load_rate = loaded as f64 / load_seconds;
    eprintln!("loaded {loaded} rows in {load_seconds:.0} s ({load_rate:.0}/s)");
    let plan = analyse_and_explain(&state, &sample_pseudonyms[0]).await?;
    eprintln!("lookup plan:\n{plan}");

    let mut figures = vec![Figure {
        what: "bulk load (rows/s, straight into the database)",
        value: format!("{load_rate:.0} ({loaded} rows in {load_seconds:.0} s)"),
        target: "—",
    }];

    // (a) Registration over HTTP: fresh people, real tokens, 4 categories each.
    let (fresh, next) = valid_bsns(next, args.http_registrations);
    let tokens = measure_registrations(&base, &keys, &fresh, &nvi).await?;
    figures.push(Figure {
        what: "registration over HTTP (pairs/s; tokens/s; hub CPU µs/token)",
        value: format!(
            "{:.0}; {:.0}; {:.0}",
            tokens.per_s * REGISTRATION_CATEGORIES.len() as f64,
            tokens.per_s,
            tokens.cpu_us
        ),
        target: "≥ 20,000 pairs/s",
    });

    // (b) Lookups with wrk over distinct fresh tokens.
    let lookup_key = &keys[BATCH_CLIENTS + 1];
    let lookup = measure_lookups(&base, lookup_key, &people, &args, temp.path()).await?;
    figures.push(Figure {
        what: "lookup over HTTP (req/s; p50 / p99 ms; hub CPU µs/lookup)",
        value: format!(
            "{:.0}; {:.2} / {:.2}; {:.0}{}",
            lookup.wrk.requests_per_second,
            lookup.wrk.p50_ms,
            lookup.wrk.p99_ms,
            lookup.cpu_us,
            if lookup.wrk.errors.is_empty() {
                String::new()
            } else {
                format!(" ({})", lookup.wrk.errors)
            }
        ),
        target: "≥ 10,000 req/s, p99 ≤ 5 ms",
    });

    // (c) PRS: evaluations alone, then the full conversion.
    let (evaluation_people, _) = valid_bsns(next, args.evaluations);
    let evaluations = measure_evaluations(&base, &keys, &evaluation_people).await?;
    figures.push(Figure {
        what: "PRS evaluate over HTTP (evaluations/s; CPU µs/evaluation)",
        value: format!("{:.0}; {:.0}", evaluations.per_s, evaluations.cpu_us),
        target: "≥ 10,000/s",
    });
    for (blinding, what, target) in [
        (
            Blinding::Ahead,
            "PRS token + conversion: evaluate over HTTP + open, inputs blinded before (per s; CPU µs/conversion)",
            "≥ 10,000/s",
        ),
        (
            Blinding::Timed,
            "full conversion: blind + evaluate over HTTP + open (per s; CPU µs/conversion)",
            "(the holder's blinding runs on the nodes)",
        ),
    ] {
        let conversions =
            measure_conversions(&base, &keys, &state, &evaluation_people, blinding).await?;
        figures.push(Figure {
            what,
            value: format!("{:.0}; {:.0}", conversions.per_s, conversions.cpu_us),
            target,
        });
    }

    let size = database_size(&state, &data).await?;
    figures.push(Figure {
        what: "database size (MiB)",
        value: format!("{}", size / (1024 * 1024)),
        target: "—",
    });
    figures.push(Figure {
        what: "RSS MiB (peak)",
        value: format!(
            "{} ({})",
            memory_kib("VmRSS:") / 1024,
            memory_kib("VmHWM:") / 1024
        ),
        target: "—",
    });

    let mut report = String::new();
    let _ = writeln!(
        report,
        "| {backend}, {loaded} registrations | measured | target |"
    );
    let _ = writeln!(report, "|---|---|---|");
    for f in &figures {
        let _ = writeln!(report, "| {} | {} | {} |", f.what, f.value, f.target);
    }
    println!("{report}");
    // The database's clients block when dropped: stop serving, then drop the hub off the
    // async workers.
    let _ = stop.send(());
    server.await??;
    tokio::task::spawn_blocking(move || drop((hub, state))).await?;
    Ok(())
}

/// Registers `n` organisations through the registry API; returns their keys in URA order.
async fn register_organisations(base: &str, admin_key: &str, n: usize) -> Result<Vec<String>> {
    let http = reqwest::Client::new();
    let progress = progress_bar(n as u64, "organisations")?;
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let response = http
            .post(format!("{base}/registry/organisations"))
            .bearer_auth(admin_key)
            .json(&json!({"ura": ura(i), "name": format!("Benchmarkorganisatie {i}")}))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("registering an organisation: {}", response.text().await?);
        }
        let body: Value = response.json().await?;
        keys.push(
            body["api_key"]
                .as_str()
                .context("no api_key in the registry's answer")?
                .to_string(),
        );
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(keys)
}

fn ura(i: usize) -> String {
    format!("{}", FIRST_URA as usize + i)
}

fn progress_bar(len: u64, unit: &str) -> Result<indicatif::ProgressBar> {
    let progress = indicatif::ProgressBar::new(len);
    progress.set_style(indicatif::ProgressStyle::with_template(&format!(
        "{{bar:40}} {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, eta {{eta}})"
    ))?);
    Ok(progress)
}

/// `n` valid BSNs (11-check), the first at or after `from`, and the candidate after the last.
fn valid_bsns(from: u32, n: usize) -> (Vec<Bsn>, u32) {
    let mut found = Vec::with_capacity(n);
    let mut candidate = from;
    while found.len() < n {
        if let Ok(bsn) = Bsn::parse(&format!("{candidate:09}")) {
            found.push(bsn);
        }
        candidate += 1;
    }
    (found, candidate)
}

/// Exchange tokens for `recipient`, one per person, made over HTTP in batches.
async fn tokens_for(
    client: &HubClient,
    people: &[Bsn],
    recipient: &RecipientId,
) -> Result<Vec<ExchangeToken>> {
    let mut tokens = Vec::with_capacity(people.len());
    for chunk in people.chunks(HTTP_BATCH_ITEMS) {
        let ids: Vec<PersonalId> = chunk.iter().cloned().map(PersonalId::from).collect();
        tokens.extend(client.exchange_tokens(&ids, recipient).await?);
    }
    Ok(tokens)
}

/// Opens tokens for the referral index in-process, as the hub opens a registration batch:
/// one batch, one scalar inversion for all of it.
async fn open_all(state: &Arc<HubState>, tokens: Vec<ExchangeToken>) -> Result<Vec<String>> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        state
            .prs
            .open_referral_index_tokens(&tokens)
            .into_iter()
            .map(|opened| {
                opened
                    .map(|p| p.to_string())
                    .map_err(|e| anyhow::anyhow!("open a token: {}", e.detail))
            })
            .collect()
    })
    .await?
}

/// A synthetic person's pseudonym: realistic in form (43 characters of base64url of 32
/// bytes) and deterministic in the counter.
fn synthetic_pseudonym(person: usize) -> [u8; PSEUDONYM_CHARS] {
    let digest = Sha256::new()
        .chain_update(b"zorgnet-bench-person\0")
        .chain_update((person as u64).to_le_bytes())
        .finalize();
    let mut out = [0u8; PSEUDONYM_CHARS];
    let written = URL_SAFE_NO_PAD
        .encode_slice(digest, &mut out)
        .unwrap_or_default();
    debug_assert_eq!(written, PSEUDONYM_CHARS);
    out
}

/// The organisations (indexes) holding a person's data, one per [`PERSON_LAYOUT`] entry,
/// distinct, derived from the pseudonym.
fn holders_of(pseudonym: &[u8; PSEUDONYM_CHARS], organisations: usize) -> [usize; 3] {
    let mut h = FNV_OFFSET_BASIS;
    for b in pseudonym {
        h = (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME);
    }
    let first = (h % organisations as u64) as usize;
    let second = (first + 1 + ((h >> 20) % (organisations as u64 - 1)) as usize) % organisations;
    let mut third = ((h >> 40) % organisations as u64) as usize;
    while third == first || third == second {
        third = (third + 1) % organisations;
    }
    [first, second, third]
}

/// Loads `people` persons (the sample first, synthetic ones after) with their
/// registrations, in pseudonym order (so the primary key grows at its end), in large
/// transactions; a second thread prepares the next chunk while the writer commits.
async fn bulk_load(
    state: &Arc<HubState>,
    sample: &[String],
    people: usize,
    organisations: usize,
) -> Result<usize> {
    let mut pseudonyms: Vec<[u8; PSEUDONYM_CHARS]> = Vec::with_capacity(people);
    for text in sample {
        let bytes: [u8; PSEUDONYM_CHARS] = text
            .as_bytes()
            .try_into()
            .context("a pseudonym is not 43 characters")?;
        pseudonyms.push(bytes);
    }
    pseudonyms.extend((sample.len()..people).map(synthetic_pseudonym));
    pseudonyms.sort_unstable();
    pseudonyms.dedup();
    let total = pseudonyms.len() * REGISTRATIONS_PER_PERSON;
    let db = state.db.clone();
    tokio::task::spawn_blocking(move || -> Result<usize> {
        let progress = progress_bar(total as u64, "registrations")?;
        let (sender, receiver) = std::sync::mpsc::sync_channel(LOAD_CHUNKS_AHEAD);
        let producer = std::thread::spawn(move || {
            for chunk in pseudonyms.chunks(LOAD_PEOPLE_PER_TRANSACTION) {
                let mut by_organisation: HashMap<usize, Vec<(String, DataCategory)>> =
                    HashMap::new();
                for pseudonym in chunk {
                    let text = String::from_utf8_lossy(pseudonym).into_owned();
                    for (holder, categories) in holders_of(pseudonym, organisations)
                        .into_iter()
                        .zip(PERSON_LAYOUT)
                    {
                        by_organisation
                            .entry(holder)
                            .or_default()
                            .extend(categories.iter().map(|c| (text.clone(), *c)));
                    }
                }
                let mut batches: Vec<_> = by_organisation.into_iter().collect();
                batches.sort_unstable_by_key(|(holder, _)| *holder);
                if sender.send(batches).is_err() {
                    return;
                }
            }
        });
        let now = zorgnet_db::now_ms();
        let mut stored = 0;
        for batches in receiver {
            let rows: usize = batches.iter().map(|(_, pairs)| pairs.len()).sum();
            stored += db.write_transaction(|conn| -> Result<usize, zorgnet_db::DbError> {
                let mut changed = 0;
                for (holder, pairs) in &batches {
                    changed +=
                        zorgnet_hub::nvi::insert_registrations(conn, &ura(*holder), pairs, now)?;
                }
                Ok(changed)
            })?;
            progress.inc(rows as u64);
        }
        producer
            .join()
            .map_err(|_| anyhow::anyhow!("the load generator panicked"))?;
        progress.finish_and_clear();
        Ok(stored)
    })
    .await?
}

/// On PostgreSQL, refreshes the planner's statistics after the load (its autovacuum would do
/// so later); returns the lookup query's plan. SQLite is left unanalysed, as the hub leaves
/// it: with statistics (this SQLite has STAT4) every execution of the lookup, which binds a
/// new pseudonym, would be parsed and planned again, a cost a running hub never pays.
async fn analyse_and_explain(state: &Arc<HubState>, pseudonym: &str) -> Result<String> {
    let db = state.db.clone();
    let pseudonym = pseudonym.to_string();
    tokio::task::spawn_blocking(move || -> Result<String> {
        let postgres = matches!(db.kind(), zorgnet_db::BackendKind::Postgres);
        if postgres {
            db.with_writer(|conn| conn.execute("ANALYZE", &[]).map(|_| ()))?;
        }
        db.with_reader(|conn| -> Result<String> {
            let d = conn.dialect();
            let prefix = if postgres { "EXPLAIN" } else { "EXPLAIN QUERY PLAN" };
            let sql = format!(
                "{prefix} SELECT ura, category FROM nvi_registrations WHERE pseudonym = {} AND category IN ({}, {}, {}) ",
                d.placeholder(1),
                d.placeholder(2),
                d.placeholder(3),
                d.placeholder(4)
            );
            let mut params = vec![pseudonym.as_str().into()];
            params.extend(LOOKUP_CATEGORIES.iter().map(|c| (*c).into()));
            let rows = conn.query(&sql, &params)?;
            Ok(rows
                .into_iter()
                .filter_map(|mut row| row.pop().map(|mut v| v.take_text()))
                .collect::<Vec<_>>()
                .join("\n"))
        })
    })
    .await?
}

/// Registers fresh people over HTTP from [`BATCH_CLIENTS`] organisations at once; returns
/// (tokens/s, pairs/s). The tokens are made before the clock starts.
async fn measure_registrations(
    base: &str,
    keys: &[String],
    people: &[Bsn],
    nvi: &RecipientId,
) -> Result<Rate> {
    let maker = HubClient::new(base, &keys[0])?;
    let tokens = tokens_for(&maker, people, nvi).await?;
    let categories: Vec<String> = REGISTRATION_CATEGORIES
        .iter()
        .map(|c| c.code().to_string())
        .collect();
    let mut shares: Vec<Vec<(ExchangeToken, Vec<String>)>> = vec![Vec::new(); BATCH_CLIENTS];
    for (i, token) in tokens.into_iter().enumerate() {
        shares[i % BATCH_CLIENTS].push((token, categories.clone()));
    }
    let clock = Clock::start();
    let mut tasks = Vec::new();
    for (n, share) in shares.into_iter().enumerate() {
        let client = HubClient::new(base, &keys[1 + n])?;
        tasks.push(tokio::spawn(async move {
            let mut pairs = 0;
            for batch in share.chunks(HTTP_BATCH_ITEMS) {
                pairs += client.update_registrations(batch, true).await?.changed;
            }
            Ok::<usize, zorgnet_node::hub_client::HubClientError>(pairs)
        }));
    }
    let mut pairs = 0;
    for task in tasks {
        pairs += task.await??;
    }
    let rate = clock.rate(people.len());
    if pairs != people.len() * REGISTRATION_CATEGORIES.len() {
        bail!(
            "registered {pairs} new pairs, expected {}",
            people.len() * REGISTRATION_CATEGORIES.len()
        );
    }
    Ok(rate)
}

/// A wrk run of lookups and the CPU time of this process (the hub; wrk is another) per
/// request.
struct LookupResult {
    wrk: WrkResult,
    cpu_us: f64,
}

/// Operations per second and CPU time of this process per operation: the second stays
/// meaningful when other work shares the cores (2 cores give 2,000,000 CPU µs a second).
struct Rate {
    per_s: f64,
    cpu_us: f64,
}

/// Wall-clock and process CPU time since a start.
struct Clock {
    wall: Instant,
    cpu_s: f64,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            wall: Instant::now(),
            cpu_s: crate::bench::cpu_s(crate::bench::PROCESS_STAT),
        }
    }

    fn rate(&self, operations: usize) -> Rate {
        let operations = operations.max(1) as f64;
        Rate {
            per_s: operations / self.wall.elapsed().as_secs_f64(),
            cpu_us: (crate::bench::cpu_s(crate::bench::PROCESS_STAT) - self.cpu_s) * MICROS_PER_S
                / operations,
        }
    }
}

/// Lookups by `wrk` over `--lookup-tokens` distinct tokens for the sample people, made just
/// before the run so that none expires during it.
async fn measure_lookups(
    base: &str,
    key: &str,
    people: &[Bsn],
    args: &BenchHubArgs,
    dir: &Path,
) -> Result<LookupResult> {
    let client = HubClient::new(base, key)?;
    let targets: Vec<Bsn> = people
        .iter()
        .cycle()
        .take(args.lookup_tokens)
        .cloned()
        .collect();
    let tokens = tokens_for(&client, &targets, &RecipientId::referral_index()).await?;
    let bodies: Vec<String> = tokens
        .iter()
        .map(|t| json!({"token": token_value(t), "categories": LOOKUP_CATEGORIES}).to_string())
        .collect();
    let probe: Value = client
        .post("/nvi/lookup", &serde_json::from_str(&bodies[0])?)
        .await?;
    let holders = probe["organisations"].as_array().map_or(0, Vec::len);
    if holders == 0 {
        bail!("a lookup of a loaded person found nobody: {probe}");
    }
    eprintln!(
        "lookup: {} tokens ready ({holders} holders per person); wrk for {} s",
        bodies.len(),
        args.seconds
    );
    let mut script = String::from("local bodies = {\n");
    for body in &bodies {
        let _ = writeln!(script, "  [[{body}]],");
    }
    let _ = write!(
        script,
        "}}\nlocal headers = {{[\"Content-Type\"] = \"application/json\", [\"Authorization\"] = \"Bearer {key}\"}}\n\
         request = function()\n  return wrk.format(\"POST\", \"/nvi/lookup\", headers, bodies[math.random(#bodies)])\nend\n"
    );
    let script_path = dir.join("lookup.lua");
    std::fs::write(&script_path, script)?;
    let address = base.trim_start_matches("http://").to_string();
    let (seconds, connections) = (args.seconds, args.connections);
    let cpu_before = crate::bench::cpu_s(crate::bench::PROCESS_STAT);
    let wrk =
        tokio::task::spawn_blocking(move || run_wrk(&address, &script_path, seconds, connections))
            .await??;
    let requests = wrk.requests_per_second * seconds as f64;
    let cpu_us = (crate::bench::cpu_s(crate::bench::PROCESS_STAT) - cpu_before) * MICROS_PER_S
        / requests.max(1.0);
    Ok(LookupResult { wrk, cpu_us })
}

async fn measure_evaluations(base: &str, keys: &[String], people: &[Bsn]) -> Result<Rate> {
    let people: Vec<PersonalId> = people.iter().cloned().map(PersonalId::from).collect();
    let blinded = tokio::task::spawn_blocking(move || -> Result<Vec<String>> {
        people
            .iter()
            .map(|p| Ok(zorgnet_pseudonym::blind(p)?.1.to_base64()))
            .collect()
    })
    .await??;
    let total = blinded.len();
    let mut shares: Vec<Vec<String>> = vec![Vec::new(); BATCH_CLIENTS];
    for (i, b) in blinded.into_iter().enumerate() {
        shares[i % BATCH_CLIENTS].push(b);
    }
    let clock = Clock::start();
    let mut tasks = Vec::new();
    for (n, share) in shares.into_iter().enumerate() {
        let client = HubClient::new(base, &keys[1 + n])?;
        tasks.push(tokio::spawn(async move {
            let mut evaluated = 0;
            for batch in share.chunks(HTTP_BATCH_ITEMS) {
                let answer = client
                    .post(
                        "/prs/evaluate",
                        &json!({"recipient": "nvi", "blinded": batch}),
                    )
                    .await?;
                evaluated += answer["evaluations"].as_array().map_or(0, Vec::len);
            }
            Ok::<usize, zorgnet_node::hub_client::HubClientError>(evaluated)
        }));
    }
    let mut evaluated = 0;
    for task in tasks {
        evaluated += task.await??;
    }
    let rate = clock.rate(total);
    if evaluated != total {
        bail!("{evaluated} evaluations for {total} inputs");
    }
    Ok(rate)
}

/// Where the holder's blinding happens in a conversion measurement.
#[derive(Clone, Copy, PartialEq)]
enum Blinding {
    /// On the clock, in the pipelines: the whole conversion as one machine would do it.
    Timed,
    /// Before the clock, as the nodes do it on their own machines: the hub's share only
    /// (the PRS's token and the referral index's conversion).
    Ahead,
}

/// Conversions on the clock, from [`BATCH_CLIENTS`] pipelines: the holder's blinding (timed
/// or done ahead, see [`Blinding`]), `POST /prs/evaluate`, and the referral index (in-process)
/// opening the batch's tokens into its pseudonyms. Returns conversions/s.
async fn measure_conversions(
    base: &str,
    keys: &[String],
    state: &Arc<HubState>,
    people: &[Bsn],
    blinding: Blinding,
) -> Result<Rate> {
    let mut shares: Vec<Vec<PersonalId>> = vec![Vec::new(); BATCH_CLIENTS];
    for (i, bsn) in people.iter().enumerate() {
        shares[i % BATCH_CLIENTS].push(PersonalId::from(bsn.clone()));
    }
    let blinded_ahead: Vec<Vec<BlindedBatch>> = if blinding == Blinding::Ahead {
        let shares = shares.clone();
        tokio::task::spawn_blocking(move || {
            shares
                .iter()
                .map(|share| share.chunks(HTTP_BATCH_ITEMS).map(blind_all).collect())
                .collect::<Result<_, _>>()
        })
        .await??
    } else {
        Vec::new()
    };
    let mut blinded_ahead = blinded_ahead.into_iter();
    let clock = Clock::start();
    let mut tasks = Vec::new();
    for (n, share) in shares.into_iter().enumerate() {
        let client = HubClient::new(base, &keys[1 + n])?;
        let state = state.clone();
        let mut ahead = blinded_ahead.next().unwrap_or_default().into_iter();
        let nvi = RecipientId::referral_index();
        tasks.push(tokio::spawn(async move {
            let mut converted = 0;
            for batch in share.chunks(HTTP_BATCH_ITEMS) {
                let tokens = match ahead.next() {
                    Some(blinded) => client.evaluate_blinded(blinded, &nvi).await?,
                    None => client.exchange_tokens(batch, &nvi).await?,
                };
                converted += open_all(&state, tokens).await?.len();
            }
            Ok::<usize, anyhow::Error>(converted)
        }));
    }
    let mut converted = 0;
    for task in tasks {
        converted += task.await??;
    }
    if converted != people.len() {
        bail!("{converted} conversions for {} people", people.len());
    }
    Ok(clock.rate(converted))
}

/// Bytes the hub's tables take: the SQLite files, or PostgreSQL's relations with indexes.
async fn database_size(state: &Arc<HubState>, data: &Path) -> Result<u64> {
    let db = state.db.clone();
    if matches!(db.kind(), zorgnet_db::BackendKind::Postgres) {
        let size = tokio::task::spawn_blocking(move || {
            db.with_reader(|conn| {
                conn.query(
                    "SELECT pg_total_relation_size('nvi_registrations')::bigint",
                    &[],
                )
            })
        })
        .await??;
        return Ok(size
            .first()
            .and_then(|row| row.first())
            .map_or(0, |v| u64::try_from(v.int()).unwrap_or(0)));
    }
    Ok(["hub.sqlite", "hub.sqlite-wal"]
        .iter()
        .filter_map(|name| std::fs::metadata(data.join(name)).ok())
        .map(|m| m.len())
        .sum())
}
