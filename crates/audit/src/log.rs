//! The log's tables, appends, tree heads and proofs.

use crate::chain::{ChainKey, GENESIS};
use crate::checkpoint::Checkpoint;
use crate::packed::{Damage, RECORD_COLUMNS, json_of, pack};
use ed25519_dalek::SigningKey;
use std::cell::RefCell;
use std::sync::Mutex;
use tlog_tiles::{
    EMPTY_HASH, Hash, HashReader, check_record, check_tree, prove_record, prove_tree, record_hash,
    stored_hash_index, stored_hashes_for_record_hash, tree_hash,
};
use zorgnet_db::sql::{Conn, Dialect, SqlValue};
use zorgnet_db::{Database, DbError, Migration};

/// The log's migrations.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        component: "audit",
        version: 1,
        // `audit_hashes` holds the Merkle tree: the hash of every complete subtree, at the
        // index Go's `sumdb/tlog` gives it (`stored_hash_index(level, n)`).
        sql: "
CREATE TABLE audit_records (seq {int} PRIMARY KEY, record {text} NOT NULL, chain {blob} NOT NULL);
CREATE TABLE audit_hashes (idx {int} PRIMARY KEY, hash {blob} NOT NULL);
CREATE TABLE audit_checkpoints (size {int} PRIMARY KEY, origin {text} NOT NULL,
    root {blob} NOT NULL, chain {blob} NOT NULL, signed_ms {int} NOT NULL, signature {blob} NOT NULL);
",
    },
    Migration {
        component: "audit",
        version: 2,
        // The search index (`search.rs`), written in the transaction of the append that
        // completes a block of records and no part of the chain: per block, a filter of the
        // Patients and one of the agents its records name, and their times.
        sql: "
CREATE TABLE audit_blocks (block {int} PRIMARY KEY, from_ms {int} NOT NULL, to_ms {int} NOT NULL,
    patients {blob} NOT NULL, agents {blob} NOT NULL);
",
    },
    Migration {
        component: "audit",
        version: 3,
        // Records packed against a fixed dictionary (`packed.rs`): a row appended since
        // holds an empty `record` and its packed bytes; the rows before keep their text.
        sql: "ALTER TABLE audit_records ADD COLUMN packed {blob};",
    },
];

/// Levels of the tree a log can reach (sizes up to 2⁶⁴).
const LEVELS: usize = 64;

/// What went wrong with the log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The stored tree cannot answer (a hash is missing or the sizes do not fit).
    #[error("the audit log's tree: {0}")]
    Tree(String),
    /// A stored value is not what the log writes.
    #[error("the audit log holds {0}")]
    Corrupt(String),
    /// The chain key cannot be read or made.
    #[error("the access log's chain key: {0}")]
    Key(String),
    /// A record could not be made durable.
    #[error("the access log could not record: {0}")]
    Unavailable(String),
    /// A stored record cannot be read back (its row was edited or damaged).
    #[error("the access log's record {seq} is damaged: {damage}")]
    Damaged {
        /// The record's sequence number.
        seq: u64,
        /// What is wrong with its row.
        #[source]
        damage: Damage,
    },
}

/// The head of the log as the appender keeps it: its size, the chain's last value and the
/// latest stored hash at each level of the tree (all that an append reads).
#[derive(Clone)]
struct Head {
    size: u64,
    chain: Hash,
    frontier: Vec<Option<(u64, Hash)>>,
}

/// An access log in a database.
pub struct AuditLog {
    pub(crate) db: Database,
    key: ChainKey,
    head: Mutex<Head>,
}

impl AuditLog {
    /// Opens (creating or migrating) the log in `db`, chained with `key`. Blocking.
    pub fn open(db: Database, key: ChainKey) -> Result<AuditLog, AuditError> {
        db.migrate(MIGRATIONS)?;
        let last = db.with_reader(|conn| {
            conn.query(
                "SELECT seq, chain FROM audit_records ORDER BY seq DESC LIMIT 1",
                &[],
            )
        })?;
        let head = match last.into_iter().next() {
            None => Head {
                size: 0,
                chain: GENESIS,
                frontier: vec![None; LEVELS],
            },
            Some(mut row) => Head {
                size: seq_of(&row[0])? + 1,
                chain: hash_of(row[1].take_blob())?,
                frontier: vec![None; LEVELS],
            },
        };
        Ok(AuditLog {
            db,
            key,
            head: Mutex::new(head),
        })
    }

    /// How many records the log holds.
    pub fn size(&self) -> u64 {
        self.lock().size
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Head> {
        self.head.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `records` in one transaction and returns the sequence number of the first.
    /// Nothing is appended when it fails. Blocking.
    pub fn append(&self, records: &[String]) -> Result<u64, AuditError> {
        // Packed before the log is locked: only the writing waits for the one before.
        let columns: Vec<[SqlValue; 2]> = records
            .iter()
            .map(|record| match pack(record) {
                Some(packed) => [SqlValue::Text(String::new()), SqlValue::Blob(packed)],
                None => [record.as_str().into(), SqlValue::Null],
            })
            .collect();
        let mut head = self.lock();
        let mut next = head.clone();
        let dialect = self.db.dialect();
        self.db.with_writer(|conn| {
            zorgnet_db::in_transaction(conn, |conn| {
                let mut record_rows = Vec::with_capacity(4 * records.len());
                let mut hash_rows = Vec::with_capacity(6 * records.len());
                for (record, [text, packed]) in records.iter().zip(columns) {
                    let n = next.size;
                    let leaf = record_hash(record.as_bytes());
                    let hashes = {
                        let reader = Reader::new(conn, &next.frontier);
                        stored_hashes_for_record_hash(n, leaf, &reader)
                            .map_err(|e| reader.failure(e))?
                    };
                    next.chain = self.key.link(&next.chain, &leaf);
                    record_rows.extend([
                        seq_value(n)?,
                        text,
                        packed,
                        next.chain.0.as_slice().into(),
                    ]);
                    let first = stored_hash_index(0, n);
                    for (level, hash) in hashes.iter().enumerate() {
                        let index = first + level as u64;
                        hash_rows.extend([seq_value(index)?, hash.0.as_slice().into()]);
                        next.frontier[level] = Some((index, *hash));
                    }
                    next.size += 1;
                }
                insert_rows(
                    conn,
                    dialect,
                    "audit_records (seq, record, packed, chain)",
                    4,
                    record_rows,
                )?;
                insert_rows(conn, dialect, "audit_hashes (idx, hash)", 2, hash_rows)?;
                crate::search::write_index(conn, dialect, head.size, records)?;
                Ok::<_, AuditError>(())
            })
        })?;
        let first = head.size;
        *head = next;
        Ok(first)
    }

    /// The log's size and Merkle root now. Blocking.
    pub fn tree_head(&self) -> Result<(u64, Hash), AuditError> {
        let head = self.lock().clone();
        let root = self.root(&head)?;
        Ok((head.size, root))
    }

    fn root(&self, head: &Head) -> Result<Hash, AuditError> {
        if head.size == 0 {
            return Ok(EMPTY_HASH);
        }
        self.db.with_reader(|conn| {
            let reader = Reader::new(conn, &head.frontier);
            tree_hash(head.size, &reader).map_err(|e| reader.failure(e))
        })
    }

    /// The record with sequence number `seq`, as appended; [`AuditError::Damaged`] when its
    /// row cannot be read back.
    pub fn record(&self, seq: u64) -> Result<Option<String>, AuditError> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM audit_records WHERE seq = {}",
            self.db.dialect().placeholder(1)
        );
        // A number beyond what the log can hold names no record.
        let Ok(value) = seq_value(seq) else {
            return Ok(None);
        };
        let rows = self.db.with_reader(|conn| {
            conn.query(&sql, std::slice::from_ref(&value))
                .map_err(AuditError::from)
        })?;
        rows.into_iter()
            .next()
            .map(|mut row| record_of(seq, &mut row))
            .transpose()
    }

    /// The proof that record `seq` is in the tree of the first `size` records (RFC 6962's
    /// audit path). Blocking.
    pub fn inclusion_proof(&self, seq: u64, size: u64) -> Result<Vec<Hash>, AuditError> {
        self.check_size(size)?;
        self.db.with_reader(|conn| {
            let reader = Reader::new(conn, &[]);
            prove_record(size, seq, &reader).map_err(|e| reader.failure(e))
        })
    }

    /// The proof that the tree of the first `old` records is a prefix of that of the first
    /// `new` (RFC 6962's consistency proof). Blocking.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, AuditError> {
        self.check_size(new)?;
        self.db.with_reader(|conn| {
            let reader = Reader::new(conn, &[]);
            prove_tree(new, old, &reader).map_err(|e| reader.failure(e))
        })
    }

    fn check_size(&self, size: u64) -> Result<(), AuditError> {
        let now = self.size();
        if size > now {
            return Err(AuditError::Tree(format!(
                "a tree of {size} records, but the log holds {now}"
            )));
        }
        Ok(())
    }

    /// Signs and keeps a checkpoint of the log as it is now (the one already kept, when no
    /// record was appended since). Blocking.
    pub fn checkpoint(
        &self,
        signer: &SigningKey,
        origin: &str,
        now_ms: i64,
    ) -> Result<Checkpoint, AuditError> {
        let head = self.lock();
        if let Some(last) = self.latest_checkpoint()?
            && last.size == head.size
        {
            return Ok(last);
        }
        let root = self.root(&head)?;
        let checkpoint = Checkpoint::sign(signer, origin, head.size, root, head.chain, now_ms);
        let d = self.db.dialect();
        let sql = format!(
            "INSERT INTO audit_checkpoints (size, origin, root, chain, signed_ms, signature) \
             VALUES ({}, {}, {}, {}, {}, {})",
            d.placeholder(1),
            d.placeholder(2),
            d.placeholder(3),
            d.placeholder(4),
            d.placeholder(5),
            d.placeholder(6)
        );
        self.db.with_writer(|conn| {
            conn.execute(
                &sql,
                &[
                    seq_value(checkpoint.size)?,
                    checkpoint.origin.as_str().into(),
                    checkpoint.root.0.as_slice().into(),
                    checkpoint.chain.0.as_slice().into(),
                    checkpoint.signed_ms.into(),
                    checkpoint.signature.as_slice().into(),
                ],
            )
            .map_err(AuditError::from)
        })?;
        Ok(checkpoint)
    }

    /// Every checkpoint kept, smallest first. Blocking.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>, AuditError> {
        checkpoints(&self.db)
    }
}

/// The checkpoints kept in `db`, smallest first.
pub(crate) fn checkpoints(db: &Database) -> Result<Vec<Checkpoint>, AuditError> {
    let rows = db.with_reader(|conn| {
        conn.query(
            "SELECT size, origin, root, chain, signed_ms, signature FROM audit_checkpoints \
             ORDER BY size",
            &[],
        )
    })?;
    rows.into_iter().map(checkpoint_of_row).collect()
}

/// A checkpoint from a row of `size, origin, root, chain, signed_ms, signature`.
pub(crate) fn checkpoint_of_row(mut row: Vec<SqlValue>) -> Result<Checkpoint, AuditError> {
    Ok(Checkpoint {
        size: seq_of(&row[0])?,
        origin: row[1].take_text(),
        root: hash_of(row[2].take_blob())?,
        chain: hash_of(row[3].take_blob())?,
        signed_ms: row[4].int(),
        signature: row[5].take_blob().try_into().map_err(|_| {
            AuditError::Corrupt("a checkpoint signature of the wrong length".into())
        })?,
    })
}

/// Whether `proof` shows that `record` is record `seq` of the tree of `size` records whose
/// root is `root`.
pub fn check_inclusion(proof: &[Hash], size: u64, root: Hash, seq: u64, record: &[u8]) -> bool {
    check_record(&proof.to_vec(), size, root, seq, record_hash(record)).is_ok()
}

/// Whether `proof` shows that the tree of `old_size` records with root `old_root` is a
/// prefix of the tree of `new_size` records with root `new_root`.
pub fn check_consistency(
    proof: &[Hash],
    new_size: u64,
    new_root: Hash,
    old_size: u64,
    old_root: Hash,
) -> bool {
    check_tree(&proof.to_vec(), new_size, new_root, old_size, old_root).is_ok()
}

/// Rows per multi-row `INSERT` of an append.
const ROWS_PER_INSERT: usize = 64;

/// Inserts `values`, `width` per row, into `table` (with its column list), in statements of
/// at most [`ROWS_PER_INSERT`] rows.
pub(crate) fn insert_rows(
    conn: &mut dyn Conn,
    dialect: Dialect,
    table: &str,
    width: usize,
    values: Vec<SqlValue>,
) -> Result<(), AuditError> {
    for chunk in values.chunks(width * ROWS_PER_INSERT) {
        let rows: Vec<String> = (0..chunk.len() / width)
            .map(|row| {
                let cells: Vec<String> = (1..=width)
                    .map(|column| dialect.placeholder(row * width + column))
                    .collect();
                format!("({})", cells.join(", "))
            })
            .collect();
        let sql = format!("INSERT INTO {table} VALUES {}", rows.join(", "));
        conn.execute(&sql, chunk)?;
    }
    Ok(())
}

/// The record of row `seq` from its [`RECORD_COLUMNS`], the first two of `columns`.
pub(crate) fn record_of(seq: u64, columns: &mut [SqlValue]) -> Result<String, AuditError> {
    match columns {
        [record, packed, ..] => {
            json_of(record, packed).map_err(|damage| AuditError::Damaged { seq, damage })
        }
        _ => Err(AuditError::Corrupt(format!(
            "a row of record {seq} without its record's columns"
        ))),
    }
}

pub(crate) fn seq_value(n: u64) -> Result<SqlValue, AuditError> {
    i64::try_from(n)
        .map(SqlValue::Int)
        .map_err(|_| AuditError::Tree(format!("{n} is beyond the log's reach")))
}

pub(crate) fn seq_of(value: &SqlValue) -> Result<u64, AuditError> {
    match value {
        SqlValue::Int(n) => u64::try_from(*n)
            .map_err(|_| AuditError::Corrupt(format!("a negative sequence number {n}"))),
        other => Err(AuditError::Corrupt(format!("a sequence number {other:?}"))),
    }
}

pub(crate) fn hash_of(bytes: Vec<u8>) -> Result<Hash, AuditError> {
    let len = bytes.len();
    bytes
        .try_into()
        .map(Hash)
        .map_err(|_| AuditError::Corrupt(format!("a hash of {len} bytes")))
}

/// Reads stored hashes for the tree functions: the appender's frontier first, then the
/// database, keeping the database's error for the caller.
pub(crate) struct Reader<'a> {
    conn: RefCell<&'a mut dyn Conn>,
    frontier: &'a [Option<(u64, Hash)>],
    error: RefCell<Option<AuditError>>,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(conn: &'a mut dyn Conn, frontier: &'a [Option<(u64, Hash)>]) -> Reader<'a> {
        Reader {
            conn: RefCell::new(conn),
            frontier,
            error: RefCell::new(None),
        }
    }

    /// The error to report for a failed tree function: the database's, when it failed.
    pub(crate) fn failure(&self, e: tlog_tiles::Error) -> AuditError {
        self.error
            .borrow_mut()
            .take()
            .unwrap_or_else(|| AuditError::Tree(e.to_string()))
    }

    fn read_stored(&self, indexes: &[u64]) -> Result<Vec<(u64, Hash)>, AuditError> {
        let mut conn = self.conn.borrow_mut();
        let dialect: Dialect = conn.dialect();
        let placeholders: Vec<String> = (1..=indexes.len())
            .map(|i| dialect.placeholder(i))
            .collect();
        let sql = format!(
            "SELECT idx, hash FROM audit_hashes WHERE idx IN ({})",
            placeholders.join(", ")
        );
        let params = indexes
            .iter()
            .map(|&i| seq_value(i))
            .collect::<Result<Vec<_>, _>>()?;
        conn.query(&sql, &params)?
            .into_iter()
            .map(|mut row| Ok((seq_of(&row[0])?, hash_of(row[1].take_blob())?)))
            .collect()
    }
}

impl HashReader for Reader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        let known = |index: u64| {
            self.frontier
                .iter()
                .flatten()
                .find(|(i, _)| *i == index)
                .map(|(_, h)| *h)
        };
        let mut hashes: Vec<Option<Hash>> = indexes.iter().map(|&i| known(i)).collect();
        let missing: Vec<u64> = indexes
            .iter()
            .zip(&hashes)
            .filter(|(_, h)| h.is_none())
            .map(|(i, _)| *i)
            .collect();
        if !missing.is_empty() {
            let found = self.read_stored(&missing).map_err(|e| {
                *self.error.borrow_mut() = Some(e);
                tlog_tiles::Error::IndexesNotInTree
            })?;
            for (slot, index) in hashes.iter_mut().zip(indexes) {
                if slot.is_none() {
                    *slot = found.iter().find(|(i, _)| i == index).map(|(_, h)| *h);
                }
            }
        }
        hashes
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or(tlog_tiles::Error::IndexesNotInTree)
    }
}
