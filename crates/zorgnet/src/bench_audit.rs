//! `zorgnet bench-audit`: the access log's benchmark. Appends synthetic records of the shape
//! and size a node writes (about 340 bytes of JSON each, with values spread as real ones are,
//! so that they compress as a node's do, and with their search index rows) to a fresh log in
//! batches, then measures its size on disk, inclusion proofs against the full tree, and
//! `verify` of the whole log.
//! Prints a Markdown table for `docs/benchmarks.md`.

use anyhow::{Context, Result};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::time::Instant;
use zorgnet_audit::{
    Agent, AgentKind, AuditLog, AuditRecord, ChainKey, SigningKey, check_inclusion, verify,
};
use zorgnet_db::Database;

/// Inclusion proofs asked in the measurement.
const PROOFS: u64 = 10_000;
/// Organisations whose professionals read at the node, each over its own certificate.
const ORGANISATIONS: u64 = 1_000;
/// Professionals who read at the node (an organisation's are every [`ORGANISATIONS`]th).
const PROFESSIONALS: u64 = 50_000;
/// The UZI role codes of the professionals, in turn.
const ROLES: [&str; 5] = ["01.015", "01.016", "01.018", "17.000", "30.000"];
/// Patients the node holds.
const PATIENTS: u64 = 1_000_000;
/// When the first Patient may have been created (2022-12-02), epoch milliseconds: a
/// Patient's id is a UUID v7 the node made when it was created.
const PATIENTS_CREATED_FROM_MS: u64 = 1_670_000_000_000;
/// Over how long the Patients were created (three years), milliseconds.
const PATIENTS_CREATED_OVER_MS: u64 = 3 * 365 * 86_400_000;
/// When the first record is, epoch milliseconds (2025-12-07).
const FIRST_RECORD_MS: i64 = 1_765_100_000_000;
/// Records per millisecond.
const RECORDS_PER_MS: u64 = 10;

/// Arguments of `zorgnet bench-audit`.
#[derive(Args, Debug)]
pub struct BenchAuditArgs {
    /// Records to append.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Records per append (one transaction).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Measure on PostgreSQL (a fresh schema at this URL) instead of a temporary SQLite file.
    #[arg(long)]
    postgres: Option<String>,
}

/// A well-mixed 64-bit value of `x` (SplitMix64's finaliser), so that neighbouring records
/// name unrelated professionals, Patients and numbers.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Patient `patient`'s id: a UUID v7 made when it was created, some time in
/// [`PATIENTS_CREATED_OVER_MS`] from [`PATIENTS_CREATED_FROM_MS`].
fn patient_id(patient: u64) -> String {
    let created_ms = PATIENTS_CREATED_FROM_MS + mix(patient ^ 0x5a) % PATIENTS_CREATED_OVER_MS;
    let mut random = [0; 10];
    random[..8].copy_from_slice(&mix(patient ^ 0x7b).to_le_bytes());
    random[8..].copy_from_slice(&mix(patient ^ 0x9c).to_le_bytes()[..2]);
    uuid::Builder::from_unix_timestamp_millis(created_ms, &random)
        .into_uuid()
        .to_string()
}

/// Record `n`, of a node's shape and size (about 340 bytes of JSON): a professional (UZI
/// number, role, organisation's URA, the organisation's certificate thumbprint) reads a
/// Patient for treatment. The professional and the Patient are drawn at random, UZI numbers
/// and URAs are random digits (as the registers' are, to the eye), the thumbprint is one
/// certificate's per organisation (base64url of a SHA-256), the Patient's id a UUID v7. A
/// real [`AuditRecord`], so the append writes its search index rows too.
fn record(n: u64) -> String {
    let professional = mix(n) % PROFESSIONALS;
    let organisation = format!(
        "{:08}",
        mix((professional % ORGANISATIONS) ^ 0x22) % 100_000_000
    );
    let patient = patient_id(mix(n ^ 0x33) % PATIENTS);
    AuditRecord {
        at_ms: FIRST_RECORD_MS + i64::try_from(n / RECORDS_PER_MS).unwrap_or(i64::MAX),
        agent: Agent {
            kind: AgentKind::Professional,
            id: Some(format!("{:09}", mix(professional ^ 0x11) % 1_000_000_000)),
            role: Some(ROLES[(professional % ROLES.len() as u64) as usize].into()),
            certificate: Some(URL_SAFE_NO_PAD.encode(Sha256::digest(organisation.as_bytes()))),
            organisation: Some(organisation),
        },
        request: format!("GET /fhir/Patient/{patient}"),
        patients: vec![patient],
        action: "read".into(),
        purpose: Some("treatment".into()),
        reason: None,
        bases: Vec::new(),
        status: 200,
    }
    .to_json()
}

/// Runs the benchmark.
pub async fn run(args: BenchAuditArgs) -> Result<()> {
    tokio::task::spawn_blocking(move || measure(&args)).await?
}

fn measure(args: &BenchAuditArgs) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, backend) = match &args.postgres {
        Some(url) => {
            let schema = format!("zorgnet_bench_audit_{}", std::process::id());
            let url = zorgnet_db::postgres_fresh_schema(url, &schema)?;
            (Database::open_postgres(&url, &[])?, "PostgreSQL")
        }
        None => (
            Database::open_sqlite(&dir.path().join("audit.sqlite"), &[])?,
            "SQLite",
        ),
    };
    let key = ChainKey::generate();
    let log = AuditLog::open(db.clone(), key.clone())?;
    let bar = ProgressBar::new(args.records).with_style(ProgressStyle::with_template(
        "appending {bar:40} {pos}/{len} records, {per_sec}, {eta} left",
    )?);
    let started = Instant::now();
    let (mut n, mut record_bytes, mut append_s) = (0, 0_u64, 0.0);
    while n < args.records {
        let count = (args.batch as u64).min(args.records - n);
        let batch: Vec<String> = (n..n + count).map(record).collect();
        record_bytes += batch.iter().map(|r| r.len() as u64).sum::<u64>();
        let appending = Instant::now();
        log.append(&batch)?;
        append_s += appending.elapsed().as_secs_f64();
        n += count;
        bar.inc(count);
    }
    bar.finish_and_clear();
    let generated_and_appended_s = started.elapsed().as_secs_f64();
    let (size, root) = log.tree_head()?;
    let signer = SigningKey::from_bytes(&[7; 32]);
    log.checkpoint(&signer, "bench", zorgnet_db::now_ms())?;

    let on_disk = match &args.postgres {
        None => {
            db.with_writer(|conn| conn.execute("PRAGMA wal_checkpoint(TRUNCATE)", &[]))?;
            std::fs::read_dir(dir.path())?
                .flatten()
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum::<u64>()
        }
        Some(_) => {
            let rows = db.with_reader(|conn| {
                conn.query(
                    "SELECT (pg_total_relation_size('audit_records') + pg_total_relation_size('audit_hashes') \
                     + pg_total_relation_size('audit_blocks'))::bigint",
                    &[],
                )
            })?;
            u64::try_from(rows[0][0].int()).unwrap_or(0)
        }
    };

    let mut latencies = Vec::with_capacity(PROOFS as usize);
    for i in 0..PROOFS {
        let seq = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) % size;
        let asked = Instant::now();
        let proof = log.inclusion_proof(seq, size)?;
        latencies.push(asked.elapsed().as_secs_f64() * 1e6);
        let record = log.record(seq)?.context("a proven record is missing")?;
        anyhow::ensure!(
            check_inclusion(&proof, size, root, seq, record.as_bytes()),
            "the proof of record {seq} does not verify"
        );
    }
    latencies.sort_by(f64::total_cmp);
    let mean_us = latencies.iter().sum::<f64>() / latencies.len() as f64;
    let p99_us = latencies[latencies.len() * 99 / 100];

    let started = Instant::now();
    let report = verify(&db, &key, Some(&signer.verifying_key()), &[])?;
    let verify_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        report.problem.is_none(),
        "verify found {:?}",
        report.problem
    );
    // After the timings, so that its scan of the records warms no cache for them.
    let rows = db.with_reader(|conn| {
        conn.query(
            "SELECT COALESCE(SUM(LENGTH(packed)), 0) FROM audit_records",
            &[],
        )
    })?;
    let packed_bytes = rows[0][0].int();

    println!(
        "\n{backend}, {size} records in appends of {}\n\n| measure | figure | target |\n|---|---|---|",
        args.batch
    );
    println!(
        "| append (time in `AuditLog::append`) | {:.0} records/s ({:.0} with making the records) | ≥ 100,000 |",
        size as f64 / append_s,
        size as f64 / generated_and_appended_s
    );
    println!(
        "| on disk | {:.2} GB, {:.0} bytes/record, of which the record's JSON {:.0}, packed {:.0} | 10,000,000 ≤ 3 GB |",
        on_disk as f64 / 1e9,
        on_disk as f64 / size as f64,
        record_bytes as f64 / size as f64,
        packed_bytes as f64 / size as f64
    );
    println!(
        "| inclusion proof against the full tree | mean {mean_us:.0} µs, p99 {p99_us:.0} µs | ≤ 1 ms |"
    );
    println!(
        "| `verify` of the whole log | {verify_s:.1} s ({:.0} records/s) | 10,000,000 ≤ 20 s |",
        size as f64 / verify_s
    );
    Ok(())
}
