//! `zorgnet audit`: a node's or the hub's access log where it lies (its own SQLite file in the data
//! directory, or its PostgreSQL database), with the keys from the data directory.
//! - `verify` checks every record in order against the keyed chain, the stored Merkle tree,
//!   and the checkpoints the log keeps, each signed by the node's checkpoint key; it names the
//!   first record that does not hold and exits 1.
//! - `search` prints the records of a patient, an agent, a period or an entity, newest first,
//!   one line each.
//! - `export` writes a period's records as NDJSON of FHIR `AuditEvent`s (IHE BALP), oldest
//!   first, for the privacy officer.
//!
//! None of them writes to the log, or creates a database where there is none.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write as _;
use std::path::PathBuf;
use zorgnet_audit::{
    AgentFilter, AuditLog, AuditRecord, ChainKey, EntityFilter, LogQuery, MAX_RECORDS_PER_PAGE,
    Order, checkpoint_key, verify_reporting,
};
use zorgnet_db::Database;

/// Records `audit search` prints when `--limit` is not given.
const DEFAULT_SEARCH_LIMIT: usize = 100;

/// Arguments of `zorgnet audit`.
#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    action: AuditAction,
}

#[derive(Subcommand, Debug)]
enum AuditAction {
    /// Check the whole access log and name the first record that was changed, removed,
    /// inserted or moved.
    Verify {
        /// The node's data directory (its SQLite file and the chain key).
        #[arg(long)]
        data: PathBuf,
        /// The node's PostgreSQL database, when it keeps its data there.
        #[arg(long)]
        postgres: Option<String>,
    },
    /// Print the records of a patient, an agent, a period or an entity, newest first.
    Search {
        /// The node's data directory (its SQLite file and the chain key).
        #[arg(long)]
        data: PathBuf,
        /// The node's PostgreSQL database, when it keeps its data there.
        #[arg(long)]
        postgres: Option<String>,
        /// Records naming this Patient (its id at the node).
        #[arg(long)]
        patient: Option<String>,
        /// Records of this agent: a UZI number, an organisation's URA, a citizen's
        /// `issuer subject`, or a system client's id.
        #[arg(long)]
        agent: Option<String>,
        /// Records at or after this time: an RFC 3339 instant or a date (its first moment).
        #[arg(long)]
        since: Option<String>,
        /// Records at or before this time: an RFC 3339 instant or a date (its last moment).
        #[arg(long)]
        until: Option<String>,
        /// Records whose request is about this resource type or resource (`Type/id`).
        #[arg(long)]
        entity: Option<String>,
        /// Most records printed.
        #[arg(long, default_value_t = DEFAULT_SEARCH_LIMIT)]
        limit: usize,
    },
    /// Write a period's records as NDJSON of FHIR AuditEvents (IHE BALP), oldest first.
    Export {
        /// The node's data directory (its SQLite file and the chain key).
        #[arg(long)]
        data: PathBuf,
        /// The node's PostgreSQL database, when it keeps its data there.
        #[arg(long)]
        postgres: Option<String>,
        /// The period's start: an RFC 3339 instant or a date (its first moment).
        #[arg(long)]
        since: String,
        /// The period's end: an RFC 3339 instant or a date (its last moment).
        #[arg(long)]
        until: String,
        /// The file to write (standard output when not given).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The node's public FHIR base URL, for the AuditEvents' source.
        #[arg(long)]
        base_url: Option<String>,
    },
}

/// Runs `zorgnet audit`.
pub async fn run(args: AuditArgs) -> Result<()> {
    match args.action {
        AuditAction::Verify { data, postgres } => {
            tokio::task::spawn_blocking(move || verify_log(&data, postgres.as_deref())).await?
        }
        AuditAction::Search {
            data,
            postgres,
            patient,
            agent,
            since,
            until,
            entity,
            limit,
        } => {
            let query = LogQuery {
                patients: patient.into_iter().collect(),
                agent: agent.map(AgentFilter::Any),
                since_ms: since
                    .as_deref()
                    .map(|t| instant(t, Bound::First))
                    .transpose()?,
                until_ms: until
                    .as_deref()
                    .map(|t| instant(t, Bound::Last))
                    .transpose()?,
                entity: entity
                    .map(|e| {
                        EntityFilter::parse(&e)
                            .with_context(|| format!("--entity {e}: not Type or Type/id"))
                    })
                    .transpose()?,
                order: Order::Descending,
                ..LogQuery::default()
            };
            tokio::task::spawn_blocking(move || {
                search_log(&data, postgres.as_deref(), query, limit)
            })
            .await?
        }
        AuditAction::Export {
            data,
            postgres,
            since,
            until,
            out,
            base_url,
        } => {
            let query = LogQuery {
                since_ms: Some(instant(&since, Bound::First)?),
                until_ms: Some(instant(&until, Bound::Last)?),
                order: Order::Ascending,
                ..LogQuery::default()
            };
            tokio::task::spawn_blocking(move || {
                export_log(
                    &data,
                    postgres.as_deref(),
                    query,
                    out.as_deref(),
                    base_url.as_deref().unwrap_or(""),
                )
            })
            .await?
        }
    }
}

/// Which end of a date's span a time option means.
#[derive(Clone, Copy)]
enum Bound {
    First,
    Last,
}

/// Epoch milliseconds of an RFC 3339 instant, or of a date's (or a partial time's) first or
/// last moment.
fn instant(text: &str, bound: Bound) -> Result<i64> {
    let range = zorgnet_fhir::datetime::parse_date_range(text.trim()).with_context(|| {
        format!(
            "{text:?} is neither an RFC 3339 time (2026-12-07T10:00:00Z) nor a date (2026-12-07)"
        )
    })?;
    Ok(match bound {
        Bound::First => range.low_ms,
        Bound::Last => range.high_ms,
    })
}

/// The database holding the access log of the node or hub whose data is in `data` (its own
/// SQLite file there, or the service's PostgreSQL database at `postgres`), refused when it
/// is not there.
fn log_database(data: &std::path::Path, postgres: Option<&str>) -> Result<Database> {
    match postgres {
        Some(url) => Database::open_existing_postgres(url, zorgnet_audit::MIGRATIONS)
            .context("open the PostgreSQL database"),
        None => {
            let path = data.join(zorgnet_audit::AUDIT_DATABASE_FILE);
            Database::open_existing_sqlite(&path, zorgnet_audit::MIGRATIONS)
                .with_context(|| format!("open the access log at {}", path.display()))
        }
    }
}

/// The node's access log, to read.
fn open_log(data: &std::path::Path, postgres: Option<&str>) -> Result<AuditLog> {
    let key_file = data.join(zorgnet_audit::CHAIN_KEY_FILE);
    if !key_file.is_file() {
        bail!(
            "no access log's chain key at {}: is {} a node's data directory?",
            key_file.display(),
            data.display()
        );
    }
    let key = ChainKey::load_or_create(&key_file)
        .with_context(|| format!("read the chain key at {}", key_file.display()))?;
    let db = log_database(data, postgres)?;
    AuditLog::open(db, key).context("open the access log")
}

/// Calls `each` with the records that answer `query`, page by page, until there are no more
/// or `limit` were given.
fn each_record(
    log: &AuditLog,
    mut query: LogQuery,
    limit: usize,
    mut each: impl FnMut(u64, &AuditRecord) -> Result<()>,
) -> Result<usize> {
    let mut given = 0;
    while given < limit {
        query.limit = (limit - given).min(MAX_RECORDS_PER_PAGE);
        let page = log.search(&query).context("search the access log")?;
        for found in &page.found {
            each(found.seq, &found.record)?;
        }
        given += page.found.len();
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    Ok(given)
}

fn search_log(
    data: &std::path::Path,
    postgres: Option<&str>,
    query: LogQuery,
    limit: usize,
) -> Result<()> {
    let log = open_log(data, postgres)?;
    let mut stdout = std::io::stdout().lock();
    let printed = each_record(&log, query, limit, |seq, record| {
        writeln!(stdout, "{}", line(seq, record)).context("write to standard output")
    })?;
    if printed == 0 {
        eprintln!("no records match");
    }
    Ok(())
}

/// One record in one line: number, time, outcome, who, what, whose, request, why.
fn line(seq: u64, record: &AuditRecord) -> String {
    let agent = &record.agent;
    let kind = serde_json::to_value(agent.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let mut who = kind;
    if let Some(id) = &agent.id {
        who.push_str(&format!(" {id}"));
    }
    if let Some(role) = &agent.role {
        who.push_str(&format!(" ({role})"));
    }
    if let Some(organisation) = &agent.organisation {
        who.push_str(&format!(" of {organisation}"));
    }
    let whose = if record.patients.is_empty() {
        "-".to_string()
    } else {
        record
            .patients
            .iter()
            .map(|p| format!("Patient/{p}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut line = format!(
        "{seq}  {}  {}  {who}  {}  {whose}  {}",
        zorgnet_audit::balp::instant(record.at_ms),
        record.status,
        record.action,
        record.request
    );
    if let Some(purpose) = &record.purpose {
        line.push_str(&format!("  purpose={purpose}"));
    }
    if let Some(reason) = &record.reason {
        line.push_str(&format!("  reason={reason:?}"));
    }
    if !record.bases.is_empty() {
        line.push_str(&format!("  basis={}", record.bases.join(",")));
    }
    line
}

fn export_log(
    data: &std::path::Path,
    postgres: Option<&str>,
    query: LogQuery,
    out: Option<&std::path::Path>,
    base_url: &str,
) -> Result<()> {
    let log = open_log(data, postgres)?;
    // The log's origin (the node's URA) is in its checkpoints; a log without one names none.
    let ura = log
        .latest_checkpoint()
        .context("read the access log's checkpoints")?
        .map(|c| c.origin)
        .unwrap_or_default();
    let name = format!("zorgnet node {ura}");
    let source = zorgnet_audit::balp::LogSource {
        ura: &ura,
        name: &name,
        base_url,
    };
    let mut writer: Box<dyn std::io::Write> = match out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let written = each_record(&log, query, usize::MAX, |seq, record| {
        let event = zorgnet_audit::balp::audit_event(seq, record, &source);
        writeln!(writer, "{event}").context("write the export")
    })?;
    writer.flush().context("write the export")?;
    eprintln!("exported {written} AuditEvents");
    Ok(())
}

fn verify_log(data: &std::path::Path, postgres: Option<&str>) -> Result<()> {
    let key_file = data.join(zorgnet_audit::CHAIN_KEY_FILE);
    if !key_file.is_file() {
        bail!(
            "no access log's chain key at {}: is {} a node's data directory?",
            key_file.display(),
            data.display()
        );
    }
    let key = ChainKey::load_or_create(&key_file)
        .with_context(|| format!("read the chain key at {}", key_file.display()))?;
    let signer_file = data.join(zorgnet_audit::CHECKPOINT_KEY_FILE);
    let owner = match signer_file.is_file() {
        true => Some(
            checkpoint_key(&signer_file)
                .with_context(|| format!("read the checkpoint key at {}", signer_file.display()))?
                .verifying_key(),
        ),
        false => None,
    };
    let db = log_database(data, postgres)?;
    let bar = ProgressBar::new_spinner().with_style(ProgressStyle::with_template(
        "verifying the access log: {pos} records, {per_sec}",
    )?);
    let report = verify_reporting(&db, &key, owner.as_ref(), &[], |records| {
        bar.set_position(records)
    })?;
    bar.finish_and_clear();
    match report.problem {
        None => {
            println!(
                "the access log holds: {} records in order, and {} checkpoints match them",
                report.records, report.checkpoints
            );
            Ok(())
        }
        Some(problem) => bail!(
            "the access log does not hold at record {}: {}",
            problem.seq,
            problem.what
        ),
    }
}
