//! `zorgnet audit verify`: checks a node's access log where it lies (its SQLite file in the
//! data directory, or its PostgreSQL database), with the keys from the data directory:
//! every record in order against the keyed chain, the stored Merkle tree, and the
//! checkpoints the log keeps, each signed by the node's checkpoint key. Names the first
//! record that does not hold and exits 1.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use zorgnet_audit::{ChainKey, checkpoint_key, verify_reporting};
use zorgnet_db::Database;

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
}

/// Runs `zorgnet audit`.
pub async fn run(args: AuditArgs) -> Result<()> {
    match args.action {
        AuditAction::Verify { data, postgres } => {
            tokio::task::spawn_blocking(move || verify_log(&data, postgres.as_deref())).await?
        }
    }
}

fn verify_log(data: &std::path::Path, postgres: Option<&str>) -> Result<()> {
    let key_file = data.join(zorgnet_node::audit::CHAIN_KEY_FILE);
    if !key_file.is_file() {
        bail!(
            "no access log's chain key at {}: is {} a node's data directory?",
            key_file.display(),
            data.display()
        );
    }
    let key = ChainKey::load_or_create(&key_file)
        .with_context(|| format!("read the chain key at {}", key_file.display()))?;
    let signer_file = data.join(zorgnet_node::audit::CHECKPOINT_KEY_FILE);
    let owner = match signer_file.is_file() {
        true => Some(
            checkpoint_key(&signer_file)
                .with_context(|| format!("read the checkpoint key at {}", signer_file.display()))?
                .verifying_key(),
        ),
        false => None,
    };
    let db = match postgres {
        Some(url) => Database::open_existing_postgres(url, zorgnet_audit::MIGRATIONS)
            .context("open the node's PostgreSQL database")?,
        None => {
            let path = data.join(crate::NODE_DATABASE_FILE);
            Database::open_existing_sqlite(&path, zorgnet_audit::MIGRATIONS)
                .with_context(|| format!("open the node's database at {}", path.display()))?
        }
    };
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
