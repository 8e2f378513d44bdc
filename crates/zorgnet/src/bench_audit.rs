//! `zorgnet bench-audit`: the access log's benchmark. Appends synthetic records of the size
//! a node writes (about 330 bytes of JSON each, with their search index rows) to a fresh log
//! in batches, then measures its size on disk, inclusion proofs against the full tree, and
//! `verify` of the whole log.
//! Prints a Markdown table for `docs/benchmarks.md`.

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::time::Instant;
use zorgnet_audit::{
    Agent, AgentKind, AuditLog, AuditRecord, ChainKey, SigningKey, check_inclusion, verify,
};
use zorgnet_db::Database;

/// Inclusion proofs asked in the measurement.
const PROOFS: u64 = 10_000;

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

/// A record of a node's shape and size (about 330 bytes of JSON): who with UZI number, role,
/// organisation and certificate thumbprint; whose; what; when; why; outcome. A real
/// [`AuditRecord`], so the append writes its search index rows too.
fn record(n: u64) -> String {
    let patient = format!("{:016x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    AuditRecord {
        at_ms: 1_765_100_000_000 + i64::try_from(n).unwrap_or(i64::MAX) / 10,
        agent: Agent {
            kind: AgentKind::Professional,
            id: Some(format!("9{:08}", n % 100_000_000)),
            role: Some("01.015".into()),
            organisation: Some(format!("000{:05}", n % 1_000)),
            certificate: Some(format!("x5t:{n:043}")),
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
    let (mut n, mut record_bytes) = (0, 0_u64);
    while n < args.records {
        let count = (args.batch as u64).min(args.records - n);
        let batch: Vec<String> = (n..n + count).map(record).collect();
        record_bytes += batch.iter().map(|r| r.len() as u64).sum::<u64>();
        log.append(&batch)?;
        n += count;
        bar.inc(count);
    }
    bar.finish_and_clear();
    let append_s = started.elapsed().as_secs_f64();
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

    println!(
        "\n{backend}, {size} records in appends of {}\n\n| measure | figure | target |\n|---|---|---|",
        args.batch
    );
    println!(
        "| append | {:.0} records/s | ≥ 100,000 |",
        size as f64 / append_s
    );
    println!(
        "| on disk | {:.2} GB, {:.0} bytes/record, of which the record's JSON {:.0} | 10,000,000 ≤ 3 GB |",
        on_disk as f64 / 1e9,
        on_disk as f64 / size as f64,
        record_bytes as f64 / size as f64
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
