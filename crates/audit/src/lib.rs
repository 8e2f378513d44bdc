//! The access log (NEN 7513, *logging van toegang tot patiëntgegevens*): every access to
//! health data, recorded at the source in an append-only log that nobody can rewrite
//! unnoticed, not even with the database file in hand.
//!
//! What it is: the log's storage and its proofs, over a [`zorgnet_db::Database`] (SQLite or
//! PostgreSQL, beside the store's tables).
//! - **Append-only and chained** ([`AuditLog::append`]): record `n` carries
//!   `chain(n) = HMAC-SHA256(key, chain(n-1) ‖ leaf(n))`, keyed with the log's own secret
//!   ([`ChainKey`], kept outside the database), so a record changed, removed, inserted or
//!   moved in the database breaks the chain at exactly that record.
//! - **A Merkle tree** (RFC 6962 leaf and node hashes): the hashes of every complete subtree
//!   are stored as the records are appended (Go's `sumdb/tlog` layout, through the
//!   `tlog_tiles` crate), so a tree head, an inclusion proof ([`AuditLog::inclusion_proof`])
//!   and a consistency proof ([`AuditLog::consistency_proof`]) read a logarithmic number of
//!   stored hashes.
//! - **Signed checkpoints** ([`AuditLog::checkpoint`]): the tree size, its root and the chain
//!   head signed with Ed25519; published elsewhere (the hub keeps every node's), they pin
//!   the history, so a log rewritten together with its key is still caught by a consistency
//!   proof against an earlier checkpoint.
//! - **Verification** ([`verify`]): the whole chain, the stored tree hashes and every
//!   checkpoint, naming the first record that does not hold.
//! - **Group commit** ([`AuditSink`]): records of concurrent requests share a transaction,
//!   and each request learns that its record is durable before it answers.
//! - **The record** ([`AuditRecord`]): who, whose, what, when, why, from where, outcome;
//!   stored compressed against a fixed dictionary (the chain, the tree and the proofs stay
//!   over its JSON as appended), and read back by one function that reports a damaged row
//!   ([`Damage`]) instead of panicking.
//! - **Search** ([`AuditLog::search`]): by patient, agent, time and entity, through an index
//!   written with each append; and each record as a FHIR `AuditEvent` following IHE BALP
//!   ([`balp`]).
//! - **Monitoring** ([`Monitor`]): configurable rules over the records raise [`Alert`]s,
//!   which become records of the log themselves, as does a citizen's report of an access
//!   as suspicious ([`CitizenReport`]).
//!
//! What it is not: the layer that decides what to record (the node's and the hub's), the
//! record's content (the caller's bytes), or an HTTP API.
#![deny(missing_docs)]

pub mod balp;
mod chain;
mod checkpoint;
mod log;
mod monitor;
mod packed;
mod place;
mod record;
mod report;
mod search;
mod sink;
mod verify;

pub use chain::{ChainKey, checkpoint_key};
pub use checkpoint::{Checkpoint, CheckpointError, CheckpointJson};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use log::{AuditError, AuditLog, MIGRATIONS, check_consistency, check_inclusion};
pub use monitor::{
    ALERT_ACTION_PREFIX, ALERT_PATIENTS_MAX, Alert, DEFAULT_EMERGENCY_BURST_MAX,
    DEFAULT_EMERGENCY_BURST_WINDOW_S, DEFAULT_OUTSIDE_TREATMENT_RELATION_MAX,
    DEFAULT_OUTSIDE_TREATMENT_RELATION_WINDOW_S, DEFAULT_UNRELATED_PATIENTS_MAX,
    DEFAULT_UNRELATED_PATIENTS_WINDOW_S, ENTRIES_TRACKED_MAX, ID_BYTES_MAX, LIMIT_MAX, Monitor,
    MonitorRules, PATIENTS_PER_ENTRY_MAX, Rule, RulesError, WINDOW_S_MAX, WINDOWS_TRACKED_MAX,
};
pub use packed::{Damage, MAX_PACKED_RECORD_BYTES};
pub use place::{
    AUDIT_DATABASE_FILE, CHAIN_KEY_FILE, CHECKPOINT_INTERVAL, CHECKPOINT_KEY_FILE, database_beside,
    open_beside, sign_checkpoint, start,
};
pub use record::{Agent, AgentKind, AuditRecord};
pub use report::{CITIZEN_REPORT_RULE, CitizenReport, REPORT_REASON_CHARS_MAX};
pub use search::{
    AgentFilter, EntityFilter, Found, LogPage, LogQuery, MAX_RECORDS_EXAMINED_PER_PAGE,
    MAX_RECORDS_PER_PAGE, Order,
};
pub use sink::{AuditSink, MAX_RECORDS_PER_COMMIT, QUEUED_RECORDS};
pub use tlog_tiles::Hash;
pub use verify::{Problem, Report, verify, verify_reporting};
