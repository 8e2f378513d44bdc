//! Versioned FHIR resource storage with search indexes, for the zorgnet node.
//!
//! What it is: one [`Store`] with two backends — SQLite (embedded, the default) and
//! PostgreSQL — that behave the same, because every piece of storage logic is written once
//! against the small [`zorgnet_db::sql::Conn`] trait. Every write runs in one database transaction:
//! the new version, the current-version pointer and all search-index rows commit together or
//! not at all. Resources are stored as JSON text with `id` and `meta` filled in, so a read
//! returns the stored bytes without re-serialising.
//! What it is not: a validator (callers validate first), an HTTP layer, or an authorisation
//! layer.
#![deny(missing_docs)]

mod custom_params;
mod schema;
mod search;
mod shared;
mod write;

pub use custom_params::{REINDEX_BATCH_RESOURCES, ReindexStatus, UnusedParam};
pub use search::{HistoryEntry, HistoryPage, HistoryScope, SearchResult};
pub use write::{ImportBatch, ImportFailure, ImportOutcome, WriteOp, WriteOutcome};

use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use zorgnet_db::sql::Conn;
pub use zorgnet_db::{BackendKind, now_ms};
use zorgnet_db::{Database, DbError};
use zorgnet_fhir::categories::{CategorySet, DataCategory};
use zorgnet_fhir::identifiers::{BSN_SYSTEM, SEDULA_SYSTEM, bsn_is_valid};
use zorgnet_fhir::search::{SearchQuery, SearchRegistry};

/// Storage errors, one variant per decision a caller makes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The resource does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The resource was deleted.
    #[error("{0} was deleted")]
    Gone(String),
    /// `If-Match` named another version.
    #[error("version conflict on {resource}: expected version {expected}, current is {current}")]
    VersionConflict {
        /// Type/id.
        resource: String,
        /// Version the client expected.
        expected: i64,
        /// Current version (0 when absent).
        current: i64,
    },
    /// A conditional operation matched more than one resource.
    #[error("{0}")]
    PreconditionFailed(String),
    /// The request cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
    /// A concurrent change got in the way; retrying may succeed.
    #[error("{0}")]
    Conflict(String),
    /// The database failed.
    #[error("storage backend: {0}")]
    Backend(String),
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Conflict(message) => StoreError::Conflict(message),
            other => StoreError::Backend(other.to_string()),
        }
    }
}

/// A resource version as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResource {
    /// Resource type.
    pub resource_type: String,
    /// Logical id.
    pub id: String,
    /// Version number (1, 2, …).
    pub version: i64,
    /// Last updated, epoch milliseconds.
    pub last_updated_ms: i64,
    /// The resource as JSON text, `id` and `meta.versionId`/`meta.lastUpdated` included.
    pub json: String,
    /// What the access policy needs of it, for a current version read by id; `None` for
    /// anything else.
    pub policy: Option<PolicyFacts>,
}

/// What the access policy needs of a stored resource, kept beside it at write time so that
/// a layer in front of the store need not parse the resource: the Patients whose compartment
/// holds it and the data categories the policy reads it as
/// ([`zorgnet_fhir::categories::access_categories_of`]). The same facts narrow searches
/// ([`zorgnet_fhir::search::SearchQuery::within_compartments`] and `within_categories`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFacts {
    /// The Patients whose compartment holds the resource (a Patient's own included), sorted.
    pub patients: Vec<String>,
    /// Its categories.
    pub categories: CategorySet,
}

/// The answer to a read.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadOutcome {
    /// Found.
    Found(StoredResource),
    /// Deleted; carries the version of the deletion.
    Deleted {
        /// Version number of the delete.
        version: i64,
        /// When it was deleted.
        last_updated_ms: i64,
    },
    /// Never existed.
    NotFound,
}

pub(crate) struct Inner {
    db: Database,
    /// The parameters the store was opened with (the built-ins).
    pub(crate) base: SearchRegistry,
    /// The parameters indexed and searched now: the built-ins and the stored SearchParameters
    /// (see [`custom_params`]), with their param_ids and rows.
    pub(crate) indexing: arc_swap::ArcSwap<custom_params::Indexing>,
    /// The background reindex of new stored SearchParameters.
    pub(crate) reindexer: custom_params::Reindexer,
    /// Runs inside every write transaction, after its operations.
    pub(crate) hook: OnceLock<Arc<dyn WriteHook>>,
    /// The writer's multi-row statements for this database's dialect.
    pub(crate) bulk_sql: write::BulkSql,
    /// Admits reads to the blocking pool; see [`READS_IN_FLIGHT_PER_CORE`].
    read_slots: tokio::sync::Semaphore,
}

/// Reads (searches, history, `$everything`) running at once, per CPU core. More than the cores
/// can serve only share them out in time slices, which spreads latency (a p99 six times the
/// median with 16 clients on 2 cores) without adding throughput; beyond this, reads wait in
/// a fair queue.
pub const READS_IN_FLIGHT_PER_CORE: usize = 2;

/// One resource a transaction changed, as a [`WriteHook`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Resource type.
    pub resource_type: String,
    /// Logical id.
    pub id: String,
    /// The version the write made (for a delete, the version that records the deletion).
    pub version: i64,
    /// Patients whose compartment held the resource before or holds it after the write.
    pub patients: Vec<String>,
    /// The resource after the write; `None` when the write deleted it.
    pub current: Option<CurrentContent>,
}

/// What a [`WriteHook`] learns of a resource's content after a write. Worked out from the
/// resource before it reaches the writer (on the import task, for an import), so that the
/// writer neither reads the resource back nor parses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentContent {
    /// Patients whose compartment holds it.
    pub patients: Vec<String>,
    /// Its data categories ([`zorgnet_fhir::categories::categories_of`]).
    pub categories: Vec<DataCategory>,
    /// For a Patient, the person it names ([`PersonIdentity::of_patient`]); `None` for every
    /// other resource and for a Patient without a usable identifier.
    pub identity: Option<PersonIdentity>,
}

/// The person a Patient resource names, by the identifiers the referral index can key a
/// person by: the BSN, or for a patient without one (Caribbean Netherlands) the sédula number
/// and birth date the pseudonym service derives a zorgverificatienummer from. Two Patient
/// versions name the same person when their identities are equal.
///
/// It identifies a person, so `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub enum PersonIdentity {
    /// A BSN that passes the 11-check.
    Bsn(String),
    /// A sédula number with the birth date, as written in the Patient.
    Sedula {
        /// The sédula number.
        number: String,
        /// `Patient.birthDate`.
        birth_date: String,
    },
}

impl std::fmt::Debug for PersonIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PersonIdentity::Bsn(_) => f.write_str("Bsn(..)"),
            PersonIdentity::Sedula { .. } => f.write_str("Sedula(..)"),
        }
    }
}

impl PersonIdentity {
    /// The identity a Patient resource names: its first valid BSN; without one, its sédula
    /// number when it has a birth date; otherwise (or for any other resource) `None`.
    pub fn of_patient(resource: &Value) -> Option<PersonIdentity> {
        if resource.get("resourceType").and_then(Value::as_str) != Some("Patient") {
            return None;
        }
        let identifiers = || {
            resource
                .get("identifier")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        };
        let value_in = |system: &'static str| {
            identifiers()
                .filter(move |i| i.get("system").and_then(Value::as_str) == Some(system))
                .filter_map(|i| i.get("value").and_then(Value::as_str))
        };
        if let Some(bsn) = value_in(BSN_SYSTEM).find(|b| bsn_is_valid(b)) {
            return Some(PersonIdentity::Bsn(bsn.to_string()));
        }
        let sedula = value_in(SEDULA_SYSTEM).next()?;
        let birth_date = resource.get("birthDate").and_then(Value::as_str)?;
        Some(PersonIdentity::Sedula {
            number: sedula.to_string(),
            birth_date: birth_date.to_string(),
        })
    }
}

/// Work that must commit or roll back together with resource writes: the node's outbox of
/// referral-index registrations is one. Called once per transaction that changed anything,
/// on the writer connection, inside the transaction; an error rolls the whole write back.
pub trait WriteHook: Send + Sync {
    /// Records the consequences of `changes`.
    fn after_write(&self, conn: &mut dyn Conn, changes: &[Change]) -> Result<(), StoreError>;
}

/// Where a search parameter's values are in its index table: the rows of these param_ids
/// and, when set, of them only the references to `target_type` (see [`shared`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParamRows {
    pub ids: Vec<i64>,
    pub target_type: Option<String>,
}

impl Inner {
    /// The param_id of the index rows `code` writes; `None` for a parameter that writes none
    /// (unknown, or sharing another's rows).
    pub(crate) fn param_id(&self, resource_type: &str, code: &str) -> Option<i64> {
        self.indexing.load().param_id(resource_type, code)
    }

    /// The rows a search on `code` reads; none at all for an unknown parameter.
    pub(crate) fn param_rows(&self, resource_type: &str, code: &str) -> ParamRows {
        self.indexing
            .load()
            .param_rows
            .get(resource_type)
            .and_then(|m| m.get(code))
            .cloned()
            .unwrap_or(ParamRows {
                ids: Vec::new(),
                target_type: None,
            })
    }

    pub(crate) fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.db.with_writer(f)
    }

    fn with_reader<T>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.db.with_reader(f)
    }
}

/// A node's resource store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Opens (and creates or migrates) a SQLite database file.
    pub fn open_sqlite(path: &Path, registry: SearchRegistry) -> Result<Store, StoreError> {
        Store::open(Database::open_sqlite(path, schema::MIGRATIONS)?, registry)
    }

    /// Connects to (and migrates) a PostgreSQL database.
    pub fn open_postgres(url: &str, registry: SearchRegistry) -> Result<Store, StoreError> {
        Store::open(Database::open_postgres(url, schema::MIGRATIONS)?, registry)
    }

    /// Opens a store inside an already open database, beside other components' tables (the
    /// hub's address book lives next to its registers). Blocking.
    pub fn open_in(db: Database, registry: SearchRegistry) -> Result<Store, StoreError> {
        db.migrate(schema::MIGRATIONS)?;
        Store::open(db, registry)
    }

    fn open(db: Database, registry: SearchRegistry) -> Result<Store, StoreError> {
        let bulk_sql = write::BulkSql::new(db.dialect());
        let indexing = db.with_writer(|conn| custom_params::build(conn, &registry))?;
        let pending = indexing.custom.values().any(|p| !p.ready);
        let inner = Arc::new(Inner {
            db,
            base: registry,
            indexing: arc_swap::ArcSwap::from_pointee(indexing),
            reindexer: custom_params::Reindexer::default(),
            hook: OnceLock::new(),
            bulk_sql,
            read_slots: tokio::sync::Semaphore::new(
                READS_IN_FLIGHT_PER_CORE
                    * std::thread::available_parallelism().map_or(1, |n| n.get()),
            ),
        });
        inner.with_writer(|conn| write::fill_policy_facts(&inner, conn))?;
        if pending {
            custom_params::start_reindex(&inner);
        }
        Ok(Store { inner })
    }

    /// Installs the hook every later write transaction runs; a store has at most one.
    pub fn install_write_hook(&self, hook: Arc<dyn WriteHook>) -> Result<(), StoreError> {
        self.inner
            .hook
            .set(hook)
            .map_err(|_| StoreError::Invalid("a write hook is already installed".into()))
    }

    /// The database underneath, for components that keep their own tables beside the
    /// resources (and write them in the same transactions through a [`WriteHook`]).
    pub fn database(&self) -> &Database {
        &self.inner.db
    }

    /// The backend in use.
    pub fn backend_kind(&self) -> BackendKind {
        self.inner.db.kind()
    }

    /// The search parameters searches may use now: the built-ins and the stored
    /// SearchParameters whose reindex is done. A snapshot: a parameter added later is not in it.
    pub fn registry(&self) -> Arc<SearchRegistry> {
        self.inner.indexing.load().registry.clone()
    }

    /// Where each stored SearchParameter stands: whether searches use it, and how far its
    /// reindex is.
    pub fn reindex_status(&self) -> Vec<ReindexStatus> {
        custom_params::status(&self.inner)
    }

    /// The stored SearchParameters the store does not use, and why (a `special` type, an
    /// expression it cannot evaluate, a code a built-in takes, retired).
    pub fn unused_search_parameters(&self) -> Vec<UnusedParam> {
        custom_params::unused(&self.inner)
    }

    /// Reads the stored SearchParameters again and reindexes new or changed ones in the
    /// background (a write of a SearchParameter does this by itself). Blocking.
    pub fn refresh_search_parameters(&self) -> Result<(), StoreError> {
        custom_params::refresh(&self.inner)
    }

    /// After a write that touched a SearchParameter: the indexing follows what is stored.
    async fn follow_search_parameters(&self, touched: bool) -> Result<(), StoreError> {
        if touched {
            let store = self.clone();
            tokio::task::spawn_blocking(move || store.refresh_search_parameters())
                .await
                .map_err(|e| StoreError::Backend(format!("storage task failed: {e}")))??;
        }
        Ok(())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Backend(format!("storage task failed: {e}")))?
    }

    /// Runs a read on the blocking pool once one of the store's read slots is free.
    async fn reading<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let _slot = self
            .inner
            .read_slots
            .acquire()
            .await
            .map_err(|e| StoreError::Backend(format!("read slots closed: {e}")))?;
        self.blocking(f).await
    }

    /// Applies all operations in one transaction: all succeed or nothing is stored.
    pub async fn transaction(&self, ops: Vec<WriteOp>) -> Result<Vec<WriteOutcome>, StoreError> {
        let touched = ops.iter().any(WriteOp::touches_search_parameters);
        let outcomes = self
            .blocking(move |inner| inner.with_writer(|conn| write::apply(inner, conn, ops)))
            .await?;
        self.follow_search_parameters(touched).await?;
        Ok(outcomes)
    }

    /// Applies one operation.
    pub async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        let mut outcomes = self.transaction(vec![op]).await?;
        outcomes
            .pop()
            .ok_or_else(|| StoreError::Backend("transaction returned no outcome".into()))
    }

    /// An empty batch for [`Store::import`]; resources added to it are stamped with the time
    /// of this call.
    pub fn import_batch(&self) -> ImportBatch {
        ImportBatch::new(self.clone())
    }

    /// Writes a batch in one transaction, each resource as an update with its own id (like
    /// [`WriteOp::Update`] without `If-Match`): all are stored or none. Resources new to the
    /// store take a bulk path; a resource whose content is unchanged keeps its version.
    /// Outcomes are in batch order.
    pub async fn import(&self, batch: ImportBatch) -> Result<Vec<ImportOutcome>, ImportFailure> {
        let inner = self.inner.clone();
        let touched = batch.touches_search_parameters();
        let outcomes = tokio::task::spawn_blocking(move || batch.write(&inner))
            .await
            .map_err(|e| ImportFailure {
                error: StoreError::Backend(format!("storage task failed: {e}")),
                ops: Vec::new(),
            })??;
        self.follow_search_parameters(touched)
            .await
            .map_err(|error| ImportFailure {
                error,
                ops: Vec::new(),
            })?;
        Ok(outcomes)
    }

    /// Refreshes the planner statistics of the store's tables after a bulk import: PostgreSQL
    /// plans from them, and autovacuum catches up only later. Nothing to do on SQLite.
    pub async fn analyze(&self) -> Result<(), StoreError> {
        self.blocking(|inner| inner.with_writer(write::analyze))
            .await
    }

    /// Runs a primary-key lookup. On SQLite it runs right here on the async worker: it is a
    /// few B-tree probes in pages that are almost always cached, cheaper than the two thread
    /// wake-ups of a hand-off to the blocking pool (a fifth of the CPU time of a read under
    /// load). PostgreSQL waits on the network, so it goes to the blocking pool.
    async fn point_lookup<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        match self.inner.db.kind() {
            BackendKind::Sqlite => f(&self.inner),
            BackendKind::Postgres => self.reading(f).await,
        }
    }

    /// Reads the current version.
    pub async fn read(&self, resource_type: &str, id: &str) -> Result<ReadOutcome, StoreError> {
        let (resource_type, id) = (resource_type.to_string(), id.to_string());
        self.point_lookup(move |inner| {
            inner.with_reader(|conn| search::read(conn, &resource_type, &id, None))
        })
        .await
    }

    /// Reads one version.
    pub async fn vread(
        &self,
        resource_type: &str,
        id: &str,
        version: i64,
    ) -> Result<ReadOutcome, StoreError> {
        let (resource_type, id) = (resource_type.to_string(), id.to_string());
        self.point_lookup(move |inner| {
            inner.with_reader(|conn| search::read(conn, &resource_type, &id, Some(version)))
        })
        .await
    }

    /// History, newest first, one page: the first, or the one a cursor from an earlier
    /// page's links points at.
    pub async fn history(
        &self,
        scope: HistoryScope,
        since_ms: Option<i64>,
        count: usize,
        cursor: Option<String>,
    ) -> Result<HistoryPage, StoreError> {
        self.reading(move |inner| {
            inner.with_reader(|conn| {
                search::history(conn, &scope, since_ms, count, cursor.as_deref())
            })
        })
        .await
    }

    /// Runs a search (with includes) and returns one page.
    pub async fn search(&self, query: SearchQuery) -> Result<SearchResult, StoreError> {
        self.reading(move |inner| inner.with_reader(|conn| search::search(inner, conn, &query)))
            .await
    }

    /// Resources of one Patient's compartment (the Patient included), one page: the first,
    /// or the one a cursor from an earlier page's links points at.
    pub async fn everything(
        &self,
        patient_id: &str,
        since_ms: Option<i64>,
        types: Vec<String>,
        count: usize,
        cursor: Option<String>,
    ) -> Result<SearchResult, StoreError> {
        let patient_id = patient_id.to_string();
        self.reading(move |inner| {
            inner.with_reader(|conn| {
                search::everything(
                    conn,
                    &patient_id,
                    since_ms,
                    &types,
                    count,
                    cursor.as_deref(),
                )
            })
        })
        .await
    }

    /// Number of current (not deleted) resources per type.
    pub async fn counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.reading(|inner| inner.with_reader(search::counts))
            .await
    }
}

/// Prepares a resource for storage: sets `id`, `meta.versionId` and `meta.lastUpdated`,
/// keeping the rest of `meta`. Returns the JSON text.
pub fn stamp(resource: &mut Value, id: &str, version: i64, last_updated_ms: i64) -> String {
    if let Some(object) = resource.as_object_mut() {
        object.insert("id".into(), Value::String(id.to_string()));
        let meta = object
            .entry("meta")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if !meta.is_object() {
            *meta = Value::Object(serde_json::Map::new());
        }
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("versionId".into(), Value::String(version.to_string()));
            meta.insert(
                "lastUpdated".into(),
                Value::String(zorgnet_fhir::datetime::format_instant(last_updated_ms)),
            );
        }
    }
    resource.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patient(identifiers: Value, birth_date: Option<&str>) -> Value {
        let mut patient = json!({"resourceType": "Patient", "identifier": identifiers});
        if let Some(date) = birth_date {
            patient["birthDate"] = json!(date);
        }
        patient
    }

    #[test]
    fn a_patient_is_named_by_its_first_valid_bsn_else_its_sedula_number_and_birth_date() {
        let bsn = |value: &str| json!({"system": BSN_SYSTEM, "value": value});
        let sedula = json!({"system": SEDULA_SYSTEM, "value": "196104120123"});
        assert_eq!(
            PersonIdentity::of_patient(&patient(json!([bsn("123456789"), bsn("123456782")]), None)),
            Some(PersonIdentity::Bsn("123456782".into()))
        );
        assert_eq!(
            PersonIdentity::of_patient(&patient(
                json!([bsn("123456789"), sedula]),
                Some("1961-04-12")
            )),
            Some(PersonIdentity::Sedula {
                number: "196104120123".into(),
                birth_date: "1961-04-12".into()
            })
        );
        assert_eq!(
            PersonIdentity::of_patient(&patient(json!([sedula]), None)),
            None
        );
        assert_eq!(PersonIdentity::of_patient(&patient(json!([]), None)), None);
        let mut practitioner = patient(json!([bsn("123456782")]), None);
        practitioner["resourceType"] = json!("Practitioner");
        assert_eq!(PersonIdentity::of_patient(&practitioner), None);
    }

    #[test]
    fn debug_does_not_show_who_it_is() {
        let shown = format!("{:?}", PersonIdentity::Bsn("123456782".into()));
        assert!(!shown.contains("123456782"), "{shown}");
    }
}
