//! Verification of a whole log: the chain record by record, the stored Merkle tree, and
//! every checkpoint, kept or published.

use crate::chain::{ChainKey, GENESIS};
use crate::checkpoint::Checkpoint;
use crate::log::{AuditError, MIGRATIONS, checkpoints, hash_of, seq_of, seq_value};
use crate::packed::{Damage, RECORD_COLUMNS, json_of};
use ed25519_dalek::VerifyingKey;
use std::collections::HashMap;
use tlog_tiles::{Hash, record_hash, stored_hash_index, stored_hashes_for_record_hash, tree_hash};
use zorgnet_db::Database;

/// Records read per query.
const RECORDS_PER_BATCH: u64 = 10_000;

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Records read.
    pub records: u64,
    /// Checkpoints checked.
    pub checkpoints: usize,
    /// The first thing that does not hold, if any.
    pub problem: Option<Problem>,
}

/// The first record (or checkpoint) that does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The sequence number of the first record concerned.
    pub seq: u64,
    /// What is wrong, in words.
    pub what: String,
}

/// Checks the log in `db`: that its records are numbered from 0 without a gap and each
/// fits the chain keyed with `key`; that the stored Merkle tree is the tree of those
/// records; and that every checkpoint kept in the log and every one in `published` (another
/// party's copies, such as the hub's) names a prefix of them — signed by `owner`, when
/// given. Stops at the first problem. Brings the log's schema up to this build's first
/// ([`verify_reporting`]). Blocking.
pub fn verify(
    db: &Database,
    key: &ChainKey,
    owner: Option<&VerifyingKey>,
    published: &[Checkpoint],
) -> Result<Report, AuditError> {
    verify_reporting(db, key, owner, published, |_| {})
}

/// [`verify`], telling `progress` how many records it has checked after each batch.
///
/// Like [`crate::AuditLog::open`], it first brings the log's schema up to this build's (a
/// log of an earlier build gains the column of packed records, its text rows untouched),
/// and refuses a log of a newer build, whose records it might not read.
pub fn verify_reporting(
    db: &Database,
    key: &ChainKey,
    owner: Option<&VerifyingKey>,
    published: &[Checkpoint],
    mut progress: impl FnMut(u64),
) -> Result<Report, AuditError> {
    db.migrate(MIGRATIONS)?;
    let mut pinned: Vec<Checkpoint> = checkpoints(db)?;
    pinned.extend(published.iter().cloned());
    pinned.sort_by_key(|c| c.size);
    for checkpoint in &pinned {
        if let Some(owner) = owner
            && checkpoint.verify(owner).is_err()
        {
            return Ok(Report {
                records: 0,
                checkpoints: 0,
                problem: Some(Problem {
                    seq: checkpoint.size,
                    what: format!(
                        "the checkpoint of size {} is not signed by the log's key",
                        checkpoint.size
                    ),
                }),
            });
        }
    }
    let mut walk = Walk {
        key,
        size: 0,
        chain: GENESIS,
        frontier: vec![None; 64],
        pinned: &pinned,
        next_pin: 0,
    };
    let problem = walk.run(db, &mut progress)?;
    let checked = walk.next_pin;
    let problem = problem.or_else(|| {
        pinned.get(walk.next_pin).map(|c| Problem {
            seq: walk.size,
            what: format!(
                "the log ends after {} records, but a checkpoint covers {}: records from {} on were removed",
                walk.size, c.size, walk.size
            ),
        })
    });
    Ok(Report {
        records: walk.size,
        checkpoints: checked,
        problem,
    })
}

struct Walk<'a> {
    key: &'a ChainKey,
    size: u64,
    chain: Hash,
    frontier: Vec<Option<(u64, Hash)>>,
    pinned: &'a [Checkpoint],
    next_pin: usize,
}

impl Walk<'_> {
    fn run(
        &mut self,
        db: &Database,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Option<Problem>, AuditError> {
        let d = db.dialect();
        let records = format!(
            "SELECT seq, chain, {RECORD_COLUMNS} FROM audit_records WHERE seq >= {} ORDER BY seq LIMIT {RECORDS_PER_BATCH}",
            d.placeholder(1)
        );
        let hashes = format!(
            "SELECT idx, hash FROM audit_hashes WHERE idx >= {} AND idx < {}",
            d.placeholder(1),
            d.placeholder(2)
        );
        loop {
            let from = self.size;
            let rows = db.with_reader(|conn| {
                conn.query(&records, &[seq_value(from)?])
                    .map_err(AuditError::from)
            })?;
            let Some(last) = rows.last() else {
                return Ok(None);
            };
            let last = seq_of(&last[0])?;
            let (low, high) = (stored_hash_index(0, from), stored_hash_index(0, last + 1));
            let stored: HashMap<u64, Hash> = db
                .with_reader(|conn| {
                    conn.query(&hashes, &[seq_value(low)?, seq_value(high)?])
                        .map_err(AuditError::from)
                })?
                .into_iter()
                .map(|mut row| Ok((seq_of(&row[0])?, hash_of(row[1].take_blob())?)))
                .collect::<Result<_, AuditError>>()?;
            for mut row in rows {
                let [seq, chain, record, packed] = row.as_mut_slice() else {
                    return Err(AuditError::Corrupt(
                        "a record's row of the wrong width".into(),
                    ));
                };
                let seq = seq_of(seq)?;
                let record = json_of(record, packed);
                if let Some(problem) = self.record(seq, record, &chain.take_blob(), &stored)? {
                    return Ok(Some(problem));
                }
            }
            progress(self.size);
        }
    }

    /// Checks one record, the tree hashes its append stored, and the checkpoints that end
    /// with it.
    fn record(
        &mut self,
        seq: u64,
        record: Result<String, Damage>,
        chain: &[u8],
        stored: &HashMap<u64, Hash>,
    ) -> Result<Option<Problem>, AuditError> {
        let n = self.size;
        if seq != n {
            return Ok(Some(Problem {
                seq: n,
                what: format!(
                    "record {n} is missing: it was removed, or the records after it renumbered"
                ),
            }));
        }
        let record = match record {
            Ok(record) => record,
            Err(damage) => {
                return Ok(Some(Problem {
                    seq: n,
                    what: format!("record {n} cannot be read back, so it was changed: {damage}"),
                }));
            }
        };
        let leaf = record_hash(record.as_bytes());
        let expected = self.key.link(&self.chain, &leaf);
        if chain != expected.0 {
            return Ok(Some(Problem {
                seq: n,
                what: format!(
                    "record {n} does not fit the chain: it was changed, inserted or moved"
                ),
            }));
        }
        let hashes = {
            let frontier = &self.frontier;
            stored_hashes_for_record_hash(n, leaf, &Memory(frontier))
                .map_err(|e| AuditError::Tree(e.to_string()))?
        };
        let first = stored_hash_index(0, n);
        for (level, hash) in hashes.iter().enumerate() {
            let index = first + level as u64;
            if stored.get(&index) != Some(hash) {
                return Ok(Some(Problem {
                    seq: n,
                    what: format!(
                        "the Merkle tree's hash {index}, stored with record {n}, is missing or altered"
                    ),
                }));
            }
            self.frontier[level] = Some((index, *hash));
        }
        self.chain = expected;
        self.size += 1;
        while let Some(checkpoint) = self
            .pinned
            .get(self.next_pin)
            .filter(|c| c.size <= self.size)
        {
            if checkpoint.size == self.size {
                let root = tree_hash(self.size, &Memory(&self.frontier))
                    .map_err(|e| AuditError::Tree(e.to_string()))?;
                if root != checkpoint.root || self.chain != checkpoint.chain {
                    return Ok(Some(Problem {
                        seq: n,
                        what: format!(
                            "the checkpoint of size {} does not match records 0 to {n}: they were rewritten since it was signed",
                            checkpoint.size
                        ),
                    }));
                }
            }
            self.next_pin += 1;
        }
        Ok(None)
    }
}

/// A reader of the walk's own frontier only.
struct Memory<'a>(&'a [Option<(u64, Hash)>]);

impl tlog_tiles::HashReader for Memory<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|index| {
                self.0
                    .iter()
                    .flatten()
                    .find(|(i, _)| i == index)
                    .map(|(_, h)| *h)
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}
