//! Writes: create, update, delete, each as a new version plus its search-index rows, all
//! operations of one call in one database transaction.

use crate::search::{self, current_row};
use crate::{
    Change, CurrentContent, Inner, PersonIdentity, StoreError, StoredResource, now_ms, stamp,
};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use zorgnet_db::sql::{Conn, Dialect, SqlBuilder, SqlValue};
use zorgnet_fhir::categories::{
    CategorySet, DataCategory, RULES_VERSION, access_categories_of, categories_of,
};
use zorgnet_fhir::search::{Criterion, IndexValue, SearchParam, SearchQuery};

/// One write.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Create with a new id (`id` given: used as is, e.g. pre-assigned in a transaction).
    Create {
        /// The resource.
        resource: Value,
        /// Id to use; a fresh UUID when `None`.
        id: Option<String>,
        /// `If-None-Exist`: when this matches exactly one resource, nothing is created.
        if_none_exist: Option<Box<SearchQuery>>,
    },
    /// Update (or create with the given id).
    Update {
        /// The resource, whose `id` must equal `id`.
        resource: Value,
        /// Logical id.
        id: String,
        /// `If-Match` version.
        if_match: Option<i64>,
    },
    /// Delete.
    Delete {
        /// Resource type.
        resource_type: String,
        /// Logical id.
        id: String,
    },
    /// Conditional update (FHIR `PUT Type?condition`): no match creates the resource (with
    /// its own `id` when it carries one, else with `id`, else a fresh UUID); one match is
    /// updated (a resource `id` must then equal the match's); more matches fail with
    /// [`StoreError::PreconditionFailed`].
    UpdateWhere {
        /// The resource, with or without an `id`.
        resource: Value,
        /// The condition on the resource's type; never empty (callers refuse that).
        condition: Box<SearchQuery>,
        /// Id for a resource created without an `id` of its own (pre-assigned in a
        /// transaction); a fresh UUID when `None`.
        id: Option<String>,
        /// `If-Match` version, checked against the match.
        if_match: Option<i64>,
    },
    /// Conditional delete (FHIR `DELETE Type?condition`, single mode): no match deletes
    /// nothing, one match is deleted, more fail with [`StoreError::PreconditionFailed`].
    DeleteWhere {
        /// Resource type.
        resource_type: String,
        /// The condition; never empty (callers refuse that).
        condition: Box<SearchQuery>,
    },
}

impl WriteOp {
    /// Whether the operation may change a stored SearchParameter.
    pub(crate) fn touches_search_parameters(&self) -> bool {
        let is_search_parameter =
            |resource: &Value| resource["resourceType"] == crate::custom_params::SEARCH_PARAMETER;
        match self {
            WriteOp::Create { resource, .. }
            | WriteOp::Update { resource, .. }
            | WriteOp::UpdateWhere { resource, .. } => is_search_parameter(resource),
            WriteOp::Delete { resource_type, .. } | WriteOp::DeleteWhere { resource_type, .. } => {
                resource_type == crate::custom_params::SEARCH_PARAMETER
            }
        }
    }
}

/// Advisory-lock namespace of conditional writes on PostgreSQL (see [`lock_conditions`]);
/// distinct from the migrations' lock.
const CONDITIONAL_WRITE_LOCK_NAMESPACE: i32 = 727_275;

/// Matches read per condition: two tell "one" from "more than one".
const CONDITION_MATCH_LIMIT: usize = 2;

/// What a write did.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// A new resource.
    Created(StoredResource),
    /// A new version of an existing resource.
    Updated(StoredResource),
    /// Nothing changed: content identical to the current version, or `If-None-Exist` matched.
    Unchanged(StoredResource),
    /// Deleted (version of the delete), or `None` when there was nothing to delete.
    Deleted(Option<i64>),
}

/// An operation after its condition was resolved: a plain write, or an outcome known
/// without writing (a conditional create that found its resource, a conditional delete that
/// found nothing).
enum Resolved {
    Write(WriteOp),
    Done(WriteOutcome),
    /// A conditional create with the same condition as the earlier operation at this
    /// position, which creates the resource: this one gets that resource, not a second one.
    SameAs(usize),
}

/// A conditional create of the transaction that matched nothing, so it creates.
struct PlannedCreate {
    resource_type: String,
    criteria: Vec<Criterion>,
    id: String,
    position: usize,
}

impl PlannedCreate {
    /// Whether a condition on `resource_type` asks the same (criteria in any order).
    fn same_condition(&self, resource_type: &str, criteria: &[Criterion]) -> bool {
        self.resource_type == resource_type
            && self.criteria.len() == criteria.len()
            && criteria.iter().all(|c| self.criteria.contains(c))
    }
}

/// Applies `ops` in one transaction. Every condition is resolved first, inside the
/// transaction and against the state at its start, so no other write can come between a
/// condition's match and the write it decides; then the writes run in order. A conditional
/// create or update whose pre-assigned id gave way to a matched resource has references to
/// `Type/pre-assigned` in the other operations' resources rewritten to the match.
pub(crate) fn apply(
    inner: &Inner,
    conn: &mut dyn Conn,
    ops: Vec<WriteOp>,
) -> Result<Vec<WriteOutcome>, StoreError> {
    let now = now_ms();
    zorgnet_db::in_transaction(conn, |conn| {
        lock_conditions(conn, &ops)?;
        let mut renamed = HashMap::new();
        let mut planned = Vec::new();
        let resolved = ops
            .into_iter()
            .enumerate()
            .map(|(position, op)| resolve(inner, conn, op, position, &mut renamed, &mut planned))
            .collect::<Result<Vec<_>, _>>()?;
        let mut changes = Vec::new();
        let mut outcomes: Vec<WriteOutcome> = Vec::with_capacity(resolved.len());
        for resolved in resolved {
            let outcome = match resolved {
                Resolved::Done(outcome) => outcome,
                Resolved::SameAs(first) => match outcomes.get(first) {
                    Some(
                        WriteOutcome::Created(stored)
                        | WriteOutcome::Updated(stored)
                        | WriteOutcome::Unchanged(stored),
                    ) => WriteOutcome::Unchanged(stored.clone()),
                    _ => {
                        return Err(StoreError::Backend(format!(
                            "operation {first} of the transaction stored nothing"
                        )));
                    }
                },
                Resolved::Write(mut op) => {
                    if !renamed.is_empty() {
                        rename_references(&mut op, &renamed);
                    }
                    apply_one(inner, conn, op, now, &mut changes)?
                }
            };
            outcomes.push(outcome);
        }
        if let Some(hook) = inner.hook.get()
            && !changes.is_empty()
        {
            hook.after_write(conn, &changes)?;
        }
        Ok(outcomes)
    })
}

/// The patients whose compartment holds a resource now.
pub(crate) fn compartment_patients(
    conn: &mut dyn Conn,
    rid: i64,
) -> Result<Vec<String>, StoreError> {
    let sql = format!(
        "SELECT patient_id FROM compartment WHERE rid = {}",
        conn.dialect().placeholder(1)
    );
    Ok(conn
        .query(&sql, &[rid.into()])?
        .into_iter()
        .map(|mut row| row[0].take_text())
        .collect())
}

/// Records a change for the write hook, when one is installed: the patients before the
/// write (read before the indexes are cleared) and after it.
fn record_change(
    changes: &mut Vec<Change>,
    resource_type: &str,
    id: &str,
    version: i64,
    before: Vec<String>,
    current: Option<CurrentContent>,
) {
    let mut patients = before;
    for patient in current.iter().flat_map(|c| &c.patients) {
        if !patients.contains(patient) {
            patients.push(patient.clone());
        }
    }
    changes.push(Change {
        resource_type: resource_type.to_string(),
        id: id.to_string(),
        version,
        patients,
        current,
    });
}

fn resource_type_of(resource: &Value) -> Result<String, StoreError> {
    resource
        .get("resourceType")
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| StoreError::Invalid("resourceType is missing".into()))
}

/// On PostgreSQL, serialises conditional writes across processes: the transaction takes an
/// advisory lock per resource type it writes conditionally (in sorted order, so two
/// transactions cannot deadlock on them), held until commit. At READ COMMITTED each statement
/// sees what committed before it started, so a transaction that waited for the lock sees the
/// resource its predecessor created. Within one process writers are serialised already;
/// SQLite's write transaction holds the database lock.
fn lock_conditions(conn: &mut dyn Conn, ops: &[WriteOp]) -> Result<(), StoreError> {
    let Some(sql) = conn
        .dialect()
        .transaction_lock_sql(CONDITIONAL_WRITE_LOCK_NAMESPACE)
    else {
        return Ok(());
    };
    let mut types: Vec<&str> = ops
        .iter()
        .filter_map(|op| match op {
            WriteOp::Create {
                if_none_exist: Some(query),
                ..
            } => query.resource_type.as_deref(),
            WriteOp::UpdateWhere { condition, .. } | WriteOp::DeleteWhere { condition, .. } => {
                condition.resource_type.as_deref()
            }
            _ => None,
        })
        .collect();
    types.sort_unstable();
    types.dedup();
    for resource_type in types {
        conn.execute(&sql, &[resource_type.into()])?;
    }
    Ok(())
}

/// The ids matching a condition, refusing more than one.
fn single_match(
    inner: &Inner,
    conn: &mut dyn Conn,
    condition: &SearchQuery,
    what: &str,
) -> Result<Option<String>, StoreError> {
    if condition.criteria.is_empty() {
        return Err(StoreError::Invalid(format!(
            "the condition of a {what} is empty and would match everything"
        )));
    }
    let mut matches = search::matching_ids(inner, conn, condition, CONDITION_MATCH_LIMIT)?;
    if matches.len() > 1 {
        return Err(StoreError::PreconditionFailed(format!(
            "the condition of a {what} matches more than one resource"
        )));
    }
    Ok(matches.pop())
}

/// Resolves an operation's condition, recording in `renamed` a pre-assigned reference that
/// now means a matched resource. A conditional create that matches nothing creates, unless
/// an earlier one of the same transaction (in `planned`) asked the same: then both mean the
/// one resource, as if the transaction's creates had been made one after the other.
fn resolve(
    inner: &Inner,
    conn: &mut dyn Conn,
    op: WriteOp,
    position: usize,
    renamed: &mut HashMap<String, String>,
    planned: &mut Vec<PlannedCreate>,
) -> Result<Resolved, StoreError> {
    match op {
        WriteOp::Create {
            resource,
            id,
            if_none_exist: Some(condition),
        } => {
            let resource_type = resource_type_of(&resource)?;
            let Some(existing) = single_match(inner, conn, &condition, "conditional create")?
            else {
                if let Some(first) = planned
                    .iter()
                    .find(|p| p.same_condition(&resource_type, &condition.criteria))
                {
                    if let Some(assigned) = id {
                        renamed.insert(
                            format!("{resource_type}/{assigned}"),
                            format!("{resource_type}/{}", first.id),
                        );
                    }
                    return Ok(Resolved::SameAs(first.position));
                }
                let id = id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
                planned.push(PlannedCreate {
                    resource_type,
                    criteria: condition.criteria,
                    id: id.clone(),
                    position,
                });
                return Ok(Resolved::Write(WriteOp::Create {
                    resource,
                    id: Some(id),
                    if_none_exist: None,
                }));
            };
            if let Some(assigned) = id {
                renamed.insert(
                    format!("{resource_type}/{assigned}"),
                    format!("{resource_type}/{existing}"),
                );
            }
            match search::read(conn, &resource_type, &existing, None)? {
                crate::ReadOutcome::Found(stored) => {
                    Ok(Resolved::Done(WriteOutcome::Unchanged(stored)))
                }
                _ => Err(StoreError::Backend(format!(
                    "{resource_type}/{existing} matched but cannot be read"
                ))),
            }
        }
        WriteOp::UpdateWhere {
            mut resource,
            condition,
            id,
            if_match,
        } => {
            let resource_type = resource_type_of(&resource)?;
            let own_id = resource.get("id").and_then(Value::as_str).map(String::from);
            let target = match single_match(inner, conn, &condition, "conditional update")? {
                Some(existing) => {
                    if own_id.as_ref().is_some_and(|own| *own != existing) {
                        return Err(StoreError::Invalid(format!(
                            "the resource's id does not match {resource_type}/{existing}, which the condition found"
                        )));
                    }
                    if let Some(assigned) = id {
                        renamed.insert(
                            format!("{resource_type}/{assigned}"),
                            format!("{resource_type}/{existing}"),
                        );
                    }
                    existing
                }
                None => own_id
                    .or(id)
                    .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            };
            if let Some(object) = resource.as_object_mut() {
                object.insert("id".into(), Value::String(target.clone()));
            }
            Ok(Resolved::Write(WriteOp::Update {
                resource,
                id: target,
                if_match,
            }))
        }
        WriteOp::DeleteWhere {
            resource_type,
            condition,
        } => Ok(
            match single_match(inner, conn, &condition, "conditional delete")? {
                Some(id) => Resolved::Write(WriteOp::Delete { resource_type, id }),
                None => Resolved::Done(WriteOutcome::Deleted(None)),
            },
        ),
        other => Ok(Resolved::Write(other)),
    }
}

/// Rewrites `reference` elements of an operation's resource through `renamed`.
fn rename_references(op: &mut WriteOp, renamed: &HashMap<String, String>) {
    fn walk(value: &mut Value, renamed: &HashMap<String, String>) {
        match value {
            Value::Object(object) => {
                for (key, child) in object.iter_mut() {
                    match child {
                        Value::String(reference) if key == "reference" => {
                            if let Some(target) = renamed.get(reference.as_str()) {
                                *reference = target.clone();
                            }
                        }
                        _ => walk(child, renamed),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| walk(item, renamed)),
            _ => {}
        }
    }
    match op {
        WriteOp::Create { resource, .. }
        | WriteOp::Update { resource, .. }
        | WriteOp::UpdateWhere { resource, .. } => walk(resource, renamed),
        WriteOp::Delete { .. } | WriteOp::DeleteWhere { .. } => {}
    }
}

/// Runs an operation whose condition [`resolve`] has taken care of.
fn apply_one(
    inner: &Inner,
    conn: &mut dyn Conn,
    op: WriteOp,
    now: i64,
    changes: &mut Vec<Change>,
) -> Result<WriteOutcome, StoreError> {
    match op {
        WriteOp::Create { resource, id, .. } => {
            let id = id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
            let resource_type = resource_type_of(&resource)?;
            if current_row(conn, &resource_type, &id)?.is_some() {
                return Err(StoreError::Conflict(format!(
                    "{resource_type}/{id} already exists"
                )));
            }
            put(inner, conn, resource, &id, None, now, "POST", changes)
        }
        WriteOp::Update {
            resource,
            id,
            if_match,
        } => put(inner, conn, resource, &id, if_match, now, "PUT", changes),
        WriteOp::Delete { resource_type, id } => {
            delete(inner, conn, &resource_type, &id, now, changes)
        }
        WriteOp::UpdateWhere { .. } | WriteOp::DeleteWhere { .. } => Err(StoreError::Backend(
            "a conditional write reached the writer unresolved".into(),
        )),
    }
}

#[allow(clippy::too_many_arguments)]
fn put(
    inner: &Inner,
    conn: &mut dyn Conn,
    mut resource: Value,
    id: &str,
    if_match: Option<i64>,
    now: i64,
    method: &str,
    changes: &mut Vec<Change>,
) -> Result<WriteOutcome, StoreError> {
    let resource_type = resource_type_of(&resource)?;
    let existing = current_row(conn, &resource_type, id)?;
    if let Some(expected) = if_match {
        let current = existing.as_ref().map_or(0, |row| row.version);
        if current != expected || existing.as_ref().is_some_and(|row| row.deleted) {
            return Err(StoreError::VersionConflict {
                resource: format!("{resource_type}/{id}"),
                expected,
                current,
            });
        }
    }
    if let Some(row) = existing.as_ref().filter(|row| !row.deleted)
        && let Some(old_json) = &row.json
    {
        let same = stamp(&mut resource, id, row.version, row.last_updated_ms);
        if &same == old_json {
            return Ok(WriteOutcome::Unchanged(StoredResource {
                resource_type,
                id: id.to_string(),
                version: row.version,
                last_updated_ms: row.last_updated_ms,
                json: same,
                policy: None,
            }));
        }
    }
    let version = existing.as_ref().map_or(1, |row| row.version + 1);
    let json = stamp(&mut resource, id, version, now);
    let hooked = inner.hook.get().is_some();
    let mut before = Vec::new();
    let rid = match &existing {
        Some(row) => {
            if hooked {
                before = compartment_patients(conn, row.rid)?;
            }
            clear_indexes(conn, row.rid)?;
            row.rid
        }
        None => {
            let mut insert = SqlBuilder::new(conn.dialect());
            insert
                .push("INSERT INTO resources (res_type, id, version, last_updated, deleted, current_seq) VALUES (")
                .bind(resource_type.as_str())
                .push(", ")
                .bind(id)
                .push(", ")
                .bind(version)
                .push(", ")
                .bind(now)
                .push(", 0, 0) RETURNING rid");
            let rows = conn.query(&insert.sql, &insert.params)?;
            rows.first()
                .and_then(|r| r.first())
                .map(SqlValue::int)
                .ok_or_else(|| StoreError::Backend("insert returned no rid".into()))?
        }
    };
    let seq = insert_version(
        conn,
        rid,
        &resource_type,
        id,
        version,
        now,
        method,
        Some(&json),
    )?;
    let indexes = indexes(inner, &resource_type, &resource);
    let current = Current {
        version,
        now,
        deleted: false,
        seq,
        policy: indexes.policy_columns(),
    };
    set_current(conn, rid, current)?;
    if hooked {
        let current = CurrentContent {
            patients: indexes.patients.clone(),
            categories: categories_of(&resource),
            identity: PersonIdentity::of_patient(&resource),
        };
        record_change(changes, &resource_type, id, version, before, Some(current));
    }
    write_indexes(inner, conn, rid, indexes)?;
    let stored = StoredResource {
        resource_type,
        id: id.to_string(),
        version,
        last_updated_ms: now,
        json,
        policy: None,
    };
    Ok(if existing.is_some_and(|row| !row.deleted) {
        WriteOutcome::Updated(stored)
    } else {
        WriteOutcome::Created(stored)
    })
}

fn delete(
    inner: &Inner,
    conn: &mut dyn Conn,
    resource_type: &str,
    id: &str,
    now: i64,
    changes: &mut Vec<Change>,
) -> Result<WriteOutcome, StoreError> {
    let Some(row) = current_row(conn, resource_type, id)? else {
        return Ok(WriteOutcome::Deleted(None));
    };
    if row.deleted {
        return Ok(WriteOutcome::Deleted(None));
    }
    let version = row.version + 1;
    let seq = insert_version(
        conn,
        row.rid,
        resource_type,
        id,
        version,
        now,
        "DELETE",
        None,
    )?;
    let current = Current {
        version,
        now,
        deleted: true,
        seq,
        policy: policy_columns(&[], CategorySet::EMPTY),
    };
    set_current(conn, row.rid, current)?;
    if inner.hook.get().is_some() {
        let before = compartment_patients(conn, row.rid)?;
        record_change(changes, resource_type, id, version, before, None);
    }
    clear_indexes(conn, row.rid)?;
    Ok(WriteOutcome::Deleted(Some(version)))
}

/// What a resource's row says of its newest version.
struct Current {
    version: i64,
    now: i64,
    deleted: bool,
    seq: i64,
    /// See [`policy_columns`].
    policy: [SqlValue; 3],
}

/// Points a resource's row at its newest version.
fn set_current(conn: &mut dyn Conn, rid: i64, current: Current) -> Result<(), StoreError> {
    let [size, sole, categories] = current.policy;
    let mut update = SqlBuilder::new(conn.dialect());
    update
        .push("UPDATE resources SET version = ")
        .bind(current.version)
        .push(", last_updated = ")
        .bind(current.now)
        .push(", deleted = ")
        .bind(i64::from(current.deleted))
        .push(", current_seq = ")
        .bind(current.seq)
        .push(", compartment_size = ")
        .bind(size)
        .push(", sole_patient = ")
        .bind(sole)
        .push(", categories = ")
        .bind(categories)
        .push(" WHERE rid = ")
        .bind(rid);
    conn.execute(&update.sql, &update.params)?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn insert_version(
    conn: &mut dyn Conn,
    rid: i64,
    resource_type: &str,
    id: &str,
    version: i64,
    now: i64,
    method: &str,
    json: Option<&str>,
) -> Result<i64, StoreError> {
    let mut insert = SqlBuilder::new(conn.dialect());
    insert
        .push("INSERT INTO versions (rid, res_type, id, version, last_updated, method, content) VALUES (")
        .bind(rid)
        .push(", ")
        .bind(resource_type)
        .push(", ")
        .bind(id)
        .push(", ")
        .bind(version)
        .push(", ")
        .bind(now)
        .push(", ")
        .bind(method)
        .push(", ")
        .bind(json.map_or(SqlValue::Null, SqlValue::from))
        .push(") RETURNING seq");
    let rows = conn.query(&insert.sql, &insert.params)?;
    rows.first()
        .and_then(|r| r.first())
        .map(SqlValue::int)
        .ok_or_else(|| StoreError::Backend("insert returned no seq".into()))
}

/// Rows per multi-row `INSERT` (a power of two). What is left of a batch goes in
/// power-of-two pieces, so each table has a handful of distinct statements, all prepared once
/// per connection; the same holds for the ids per existence check of an import.
const CHUNK_ROWS: usize = 128;

/// Splits `rows` into statement sizes: full chunks of [`CHUNK_ROWS`], then powers of two.
fn chunk_sizes(mut rows: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if rows == 0 {
            return None;
        }
        let size = if rows >= CHUNK_ROWS {
            CHUNK_ROWS
        } else {
            1 << rows.ilog2()
        };
        rows -= size;
        Some(size)
    })
}

/// A table the writer fills with multi-row `INSERT`s.
pub(crate) struct Table {
    name: &'static str,
    columns: &'static [&'static str],
}

const RESOURCES: Table = Table {
    name: "resources",
    columns: &[
        "rid",
        "res_type",
        "id",
        "version",
        "last_updated",
        "deleted",
        "current_seq",
        "compartment_size",
        "sole_patient",
        "categories",
    ],
};
const VERSIONS: Table = Table {
    name: "versions",
    columns: &[
        "seq",
        "rid",
        "res_type",
        "id",
        "version",
        "last_updated",
        "method",
        "content",
    ],
};
const IDX_TOKEN: Table = Table {
    name: "idx_token",
    columns: &["rid", "param_id", "system", "code"],
};
const IDX_STRING: Table = Table {
    name: "idx_string",
    columns: &["rid", "param_id", "normalized", "exact"],
};
const IDX_DATE: Table = Table {
    name: "idx_date",
    columns: &["rid", "param_id", "low_ms", "high_ms"],
};
const IDX_REFERENCE: Table = Table {
    name: "idx_reference",
    columns: &["rid", "param_id", "target_type", "target_id"],
};
const IDX_NUMBER: Table = Table {
    name: "idx_number",
    columns: &["rid", "param_id", "value"],
};
const IDX_QUANTITY: Table = Table {
    name: "idx_quantity",
    columns: &["rid", "param_id", "value", "system", "code"],
};
const IDX_URI: Table = Table {
    name: "idx_uri",
    columns: &["rid", "param_id", "value"],
};
const COMPARTMENT: Table = Table {
    name: "compartment",
    columns: &["patient_id", "rid"],
};

/// Every table written with multi-row `INSERT`s.
const BULK_TABLES: [&Table; 10] = [
    &RESOURCES,
    &VERSIONS,
    &IDX_TOKEN,
    &IDX_STRING,
    &IDX_DATE,
    &IDX_REFERENCE,
    &IDX_NUMBER,
    &IDX_QUANTITY,
    &IDX_URI,
    &COMPARTMENT,
];

/// The tables holding search parameters' rows, keyed by `rid` and `param_id`.
pub(crate) const PARAM_TABLES: [&str; 7] = [
    "idx_token",
    "idx_string",
    "idx_date",
    "idx_reference",
    "idx_number",
    "idx_quantity",
    "idx_uri",
];

/// The tables holding a resource's search-index rows, all keyed by `rid`.
const INDEX_TABLES: [&Table; 8] = [
    &IDX_TOKEN,
    &IDX_STRING,
    &IDX_DATE,
    &IDX_REFERENCE,
    &IDX_NUMBER,
    &IDX_QUANTITY,
    &IDX_URI,
    &COMPARTMENT,
];

/// The writer's SQL text, built once per store for its dialect: a multi-row `INSERT` per table
/// and statement size, and the existence check of an import per number of ids.
pub(crate) struct BulkSql {
    inserts: HashMap<(&'static str, usize), String>,
    existing: HashMap<usize, String>,
}

impl BulkSql {
    pub(crate) fn new(dialect: Dialect) -> BulkSql {
        let sizes: Vec<usize> = (0..=CHUNK_ROWS.ilog2()).map(|k| 1 << k).collect();
        let mut inserts = HashMap::new();
        for table in BULK_TABLES {
            for &rows in &sizes {
                let mut sql = format!(
                    "{} {} ({}) VALUES ",
                    dialect.bulk_insert_verb(),
                    table.name,
                    table.columns.join(", ")
                );
                let width = table.columns.len();
                for row in 0..rows {
                    sql.push_str(if row == 0 { "(" } else { ", (" });
                    for column in 0..width {
                        if column > 0 {
                            sql.push_str(", ");
                        }
                        sql.push_str(&dialect.placeholder(row * width + column + 1));
                    }
                    sql.push(')');
                }
                inserts.insert((table.name, rows), sql);
            }
        }
        let existing = sizes
            .iter()
            .map(|&ids| {
                let list: Vec<String> = (2..ids + 2).map(|n| dialect.placeholder(n)).collect();
                (
                    ids,
                    format!(
                        "SELECT id FROM resources WHERE res_type = {} AND id IN ({})",
                        dialect.placeholder(1),
                        list.join(", ")
                    ),
                )
            })
            .collect();
        BulkSql { inserts, existing }
    }

    fn insert(&self, table: &Table, rows: usize) -> Result<&str, StoreError> {
        self.inserts
            .get(&(table.name, rows))
            .map(String::as_str)
            .ok_or_else(|| {
                StoreError::Backend(format!(
                    "no INSERT prepared for {rows} rows of {}",
                    table.name
                ))
            })
    }

    fn existing(&self, ids: usize) -> Result<&str, StoreError> {
        self.existing
            .get(&ids)
            .map(String::as_str)
            .ok_or_else(|| StoreError::Backend(format!("no lookup prepared for {ids} ids")))
    }
}

/// Rows gathered for one table, written by [`Rows::flush`] with multi-row `INSERT`s.
struct Rows {
    table: &'static Table,
    values: Vec<SqlValue>,
}

impl Rows {
    fn new(table: &'static Table) -> Rows {
        Rows {
            table,
            values: Vec::new(),
        }
    }

    fn push<const N: usize>(&mut self, row: [SqlValue; N]) {
        self.values.extend(row);
    }

    fn flush(&mut self, inner: &Inner, conn: &mut dyn Conn) -> Result<(), StoreError> {
        let width = self.table.columns.len();
        let mut start = 0;
        for rows in chunk_sizes(self.values.len() / width) {
            let end = start + rows * width;
            conn.execute(
                inner.bulk_sql.insert(self.table, rows)?,
                &self.values[start..end],
            )?;
            start = end;
        }
        self.values.clear();
        Ok(())
    }
}

/// One search-index row of a resource, its parameter resolved to its id.
#[derive(Debug, PartialEq)]
pub(crate) enum IndexRow {
    Token {
        param_id: i64,
        system: String,
        code: String,
    },
    String {
        param_id: i64,
        normalized: String,
        exact: String,
    },
    Date {
        param_id: i64,
        low_ms: i64,
        high_ms: i64,
    },
    Reference {
        param_id: i64,
        target_type: String,
        target_id: String,
    },
    Number {
        param_id: i64,
        value: f64,
    },
    Quantity {
        param_id: i64,
        value: f64,
        system: String,
        code: String,
    },
    Uri {
        param_id: i64,
        value: String,
    },
}

impl IndexRow {
    /// Whether two rows would have the same primary key in their table.
    fn same_key(&self, other: &IndexRow) -> bool {
        match (self, other) {
            (
                IndexRow::String {
                    param_id: a,
                    exact: x,
                    ..
                },
                IndexRow::String {
                    param_id: b,
                    exact: y,
                    ..
                },
            ) => a == b && x == y,
            _ => self == other,
        }
    }
}

/// What a resource version puts in the search indexes: its index rows (each primary key
/// once), the Patients whose compartment holds it, and its categories for the access policy.
#[derive(Debug, Default)]
pub(crate) struct Indexes {
    rows: Vec<IndexRow>,
    patients: Vec<String>,
    categories: CategorySet,
}

impl Indexes {
    /// The values of a resource's row's policy columns (`compartment_size`, `sole_patient`,
    /// `categories`).
    fn policy_columns(&self) -> [SqlValue; 3] {
        policy_columns(&self.patients, self.categories)
    }
}

/// The values of the policy columns of a row whose resource is in the compartments of
/// `patients` and of `categories`: a deleted resource's are `([], EMPTY)`.
fn policy_columns(patients: &[String], categories: CategorySet) -> [SqlValue; 3] {
    let size = i64::try_from(patients.len()).unwrap_or(i64::MAX);
    let sole = match patients {
        [one] => SqlValue::Text(one.clone()),
        _ => SqlValue::Null,
    };
    [size.into(), sole, categories.bits().into()]
}

/// Extracts the index rows and compartments of a resource. Needs no database.
fn indexes(inner: &Inner, resource_type: &str, resource: &Value) -> Indexes {
    indexes_with(inner, &inner.indexing.load(), resource_type, resource)
}

/// [`indexes`] with the parameters of `indexing`.
fn indexes_with(
    inner: &Inner,
    indexing: &crate::custom_params::Indexing,
    resource_type: &str,
    resource: &Value,
) -> Indexes {
    let mut out = Indexes {
        rows: index_rows(indexing, resource_type, resource, |_| true),
        ..Indexes::default()
    };
    for patient in inner.base.patient_compartments(resource) {
        if !out.patients.contains(&patient) {
            out.patients.push(patient);
        }
    }
    out.categories = access_categories_of(resource);
    out
}

/// The index rows of a resource for the parameters with rows of their own whose code `keep`
/// accepts.
pub(crate) fn index_rows(
    indexing: &crate::custom_params::Indexing,
    resource_type: &str,
    resource: &Value,
    keep: impl Fn(&str) -> bool,
) -> Vec<IndexRow> {
    let mut out = Indexes::default();
    let owns_rows =
        |p: &SearchParam| keep(&p.code) && indexing.param_id(resource_type, &p.code).is_some();
    for entry in indexing.writing.extract_where(resource, owns_rows) {
        let Some(param_id) = indexing.param_id(resource_type, &entry.code) else {
            continue;
        };
        let row = match entry.value {
            IndexValue::Token { system, code } => IndexRow::Token {
                param_id,
                system,
                code,
            },
            IndexValue::String { normalized, exact } => IndexRow::String {
                param_id,
                normalized,
                exact,
            },
            IndexValue::Date(range) => IndexRow::Date {
                param_id,
                low_ms: range.low_ms,
                high_ms: range.high_ms,
            },
            IndexValue::Reference {
                target_type,
                target_id,
            } => IndexRow::Reference {
                param_id,
                target_type,
                target_id,
            },
            IndexValue::Number(value) => IndexRow::Number { param_id, value },
            IndexValue::Quantity {
                value,
                system,
                code,
            } => IndexRow::Quantity {
                param_id,
                value,
                system,
                code,
            },
            IndexValue::Uri(value) => IndexRow::Uri { param_id, value },
        };
        if !out.rows.iter().any(|seen| seen.same_key(&row)) {
            out.rows.push(row);
        }
    }
    out.rows
}

/// Writes index rows of the resource `rid` (none of them may exist yet).
pub(crate) fn write_index_rows(
    inner: &Inner,
    conn: &mut dyn Conn,
    rid: i64,
    rows: Vec<IndexRow>,
) -> Result<(), StoreError> {
    let mut sink = Sink::new();
    sink.add_indexes(rid, rows);
    sink.flush(inner, conn)
}

/// Rows for every table a write fills, flushed together.
struct Sink {
    resources: Rows,
    versions: Rows,
    token: Rows,
    string: Rows,
    date: Rows,
    reference: Rows,
    number: Rows,
    quantity: Rows,
    uri: Rows,
    compartment: Rows,
}

impl Sink {
    fn new() -> Sink {
        Sink {
            resources: Rows::new(&RESOURCES),
            versions: Rows::new(&VERSIONS),
            token: Rows::new(&IDX_TOKEN),
            string: Rows::new(&IDX_STRING),
            date: Rows::new(&IDX_DATE),
            reference: Rows::new(&IDX_REFERENCE),
            number: Rows::new(&IDX_NUMBER),
            quantity: Rows::new(&IDX_QUANTITY),
            uri: Rows::new(&IDX_URI),
            compartment: Rows::new(&COMPARTMENT),
        }
    }

    /// Adds a resource's index rows; `patients` is left to the caller.
    fn add_indexes(&mut self, rid: i64, rows: Vec<IndexRow>) {
        for row in rows {
            match row {
                IndexRow::Token {
                    param_id,
                    system,
                    code,
                } => self
                    .token
                    .push([rid.into(), param_id.into(), system.into(), code.into()]),
                IndexRow::String {
                    param_id,
                    normalized,
                    exact,
                } => {
                    self.string
                        .push([rid.into(), param_id.into(), normalized.into(), exact.into()])
                }
                IndexRow::Date {
                    param_id,
                    low_ms,
                    high_ms,
                } => self
                    .date
                    .push([rid.into(), param_id.into(), low_ms.into(), high_ms.into()]),
                IndexRow::Reference {
                    param_id,
                    target_type,
                    target_id,
                } => self.reference.push([
                    rid.into(),
                    param_id.into(),
                    target_type.into(),
                    target_id.into(),
                ]),
                IndexRow::Number { param_id, value } => {
                    self.number
                        .push([rid.into(), param_id.into(), value.into()])
                }
                IndexRow::Quantity {
                    param_id,
                    value,
                    system,
                    code,
                } => self.quantity.push([
                    rid.into(),
                    param_id.into(),
                    value.into(),
                    system.into(),
                    code.into(),
                ]),
                IndexRow::Uri { param_id, value } => {
                    self.uri.push([rid.into(), param_id.into(), value.into()])
                }
            }
        }
    }

    fn add_compartments(&mut self, rid: i64, patients: &[String]) {
        for patient in patients {
            self.compartment
                .push([SqlValue::Text(patient.clone()), rid.into()]);
        }
    }

    fn flush(&mut self, inner: &Inner, conn: &mut dyn Conn) -> Result<(), StoreError> {
        for rows in [
            &mut self.resources,
            &mut self.versions,
            &mut self.token,
            &mut self.string,
            &mut self.date,
            &mut self.reference,
            &mut self.number,
            &mut self.quantity,
            &mut self.uri,
            &mut self.compartment,
        ] {
            rows.flush(inner, conn)?;
        }
        Ok(())
    }
}

fn clear_indexes(conn: &mut dyn Conn, rid: i64) -> Result<(), StoreError> {
    let placeholder = conn.dialect().placeholder(1);
    for table in INDEX_TABLES {
        conn.execute(
            &format!("DELETE FROM {} WHERE rid = {placeholder}", table.name),
            &[rid.into()],
        )?;
    }
    Ok(())
}

fn write_indexes(
    inner: &Inner,
    conn: &mut dyn Conn,
    rid: i64,
    indexes: Indexes,
) -> Result<(), StoreError> {
    let mut sink = Sink::new();
    sink.add_indexes(rid, indexes.rows);
    sink.add_compartments(rid, &indexes.patients);
    sink.flush(inner, conn)
}

/// Resources made ready for [`crate::Store::import`]: stamped as first versions, serialised
/// and indexed — all the work that needs no database, so it can run beside the writer.
pub struct ImportBatch {
    store: crate::Store,
    now: i64,
    items: Vec<ImportItem>,
    /// The indexing the items' rows were extracted with; if the store's has changed by the
    /// time the batch is written, they are extracted again on the writer.
    indexing: Arc<crate::custom_params::Indexing>,
}

/// A resource of an import batch. Only its JSON is kept, not the parsed resource: a parsed
/// resource is a tree of small allocations, cheapest to free right after serialising, while
/// still in cache. The JSON is shared with the `INSERT` that stores it, and parsed again only
/// for the rare resource that takes the path of an ordinary update or a retry.
struct ImportItem {
    resource_type: String,
    id: String,
    json: Arc<str>,
    indexes: Indexes,
    categories: Vec<DataCategory>,
    identity: Option<PersonIdentity>,
}

/// What an import did with one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportOutcome {
    /// Stored as a new resource (version 1).
    Created,
    /// Stored as a new version of an existing resource.
    Updated {
        /// The new version.
        version: i64,
    },
    /// Content identical to the current version, which was kept.
    Unchanged {
        /// The current version.
        version: i64,
    },
}

impl From<&WriteOutcome> for ImportOutcome {
    fn from(outcome: &WriteOutcome) -> ImportOutcome {
        match outcome {
            WriteOutcome::Updated(r) => ImportOutcome::Updated { version: r.version },
            WriteOutcome::Unchanged(r) => ImportOutcome::Unchanged { version: r.version },
            WriteOutcome::Created(_) | WriteOutcome::Deleted(_) => ImportOutcome::Created,
        }
    }
}

/// A batch that was not written: why, and its resources as updates, to retry one by one.
#[derive(Debug)]
pub struct ImportFailure {
    /// Why the batch's transaction failed.
    pub error: StoreError,
    /// The batch's resources as updates, in batch order.
    pub ops: Vec<WriteOp>,
}

impl ImportBatch {
    pub(crate) fn new(store: crate::Store) -> ImportBatch {
        let indexing = store.inner.indexing.load_full();
        ImportBatch {
            store,
            now: now_ms(),
            items: Vec::new(),
            indexing,
        }
    }

    /// Adds a resource, which must carry `resourceType` and `id`; it is written as an
    /// update with that id. Callers validate first.
    pub fn push(&mut self, mut resource: Value) -> Result<(), StoreError> {
        let resource_type = resource_type_of(&resource)?;
        let id = resource
            .get("id")
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| StoreError::Invalid(format!("{resource_type} without an id")))?;
        let json = Arc::from(stamp(&mut resource, &id, 1, self.now));
        let indexes = indexes_with(&self.store.inner, &self.indexing, &resource_type, &resource);
        let categories = categories_of(&resource);
        let identity = PersonIdentity::of_patient(&resource);
        self.items.push(ImportItem {
            resource_type,
            id,
            json,
            indexes,
            categories,
            identity,
        });
        Ok(())
    }

    /// Resources in the batch.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Writes the batch on the writer connection in one transaction; when that fails, the
    /// batch's resources come back as updates, to retry one by one.
    pub(crate) fn write(self, inner: &Inner) -> Result<Vec<ImportOutcome>, ImportFailure> {
        let ImportBatch {
            now,
            mut items,
            indexing,
            ..
        } = self;
        let retry: Vec<(String, Arc<str>)> = items
            .iter()
            .map(|item| (item.id.clone(), item.json.clone()))
            .collect();
        inner
            .with_writer(|conn| {
                if !Arc::ptr_eq(&indexing, &inner.indexing.load_full()) {
                    for item in &mut items {
                        let resource: Value = serde_json::from_str(&item.json).map_err(|e| {
                            StoreError::Backend(format!("a batch's resource is not JSON: {e}"))
                        })?;
                        item.indexes = indexes(inner, &item.resource_type, &resource);
                    }
                }
                import(inner, conn, now, items)
            })
            .map_err(|error| ImportFailure::new(error, retry))
    }

    /// Whether the batch holds a SearchParameter.
    pub(crate) fn touches_search_parameters(&self) -> bool {
        self.items
            .iter()
            .any(|item| item.resource_type == crate::custom_params::SEARCH_PARAMETER)
    }
}

impl ImportFailure {
    pub(crate) fn new(error: StoreError, resources: Vec<(String, Arc<str>)>) -> ImportFailure {
        ImportFailure {
            error,
            ops: resources
                .into_iter()
                .map(|(id, json)| WriteOp::Update {
                    id,
                    // Serialised by this process, so it parses; were it not to, the write of
                    // `null` fails on its own and keeps the batch's order.
                    resource: serde_json::from_str(&json).unwrap_or(Value::Null),
                    if_match: None,
                })
                .collect(),
        }
    }
}

/// The `(type, id)`s of a batch that exist already (deleted ones included).
fn existing_keys(
    inner: &Inner,
    conn: &mut dyn Conn,
    items: &[ImportItem],
) -> Result<HashSet<(String, String)>, StoreError> {
    let mut by_type: HashMap<&str, Vec<&str>> = HashMap::new();
    for item in items {
        by_type
            .entry(item.resource_type.as_str())
            .or_default()
            .push(item.id.as_str());
    }
    let mut existing = HashSet::new();
    for (resource_type, ids) in by_type {
        let mut start = 0;
        for size in chunk_sizes(ids.len()) {
            let mut params: Vec<SqlValue> = Vec::with_capacity(size + 1);
            params.push(resource_type.into());
            params.extend(
                ids[start..start + size]
                    .iter()
                    .map(|&id| SqlValue::from(id)),
            );
            start += size;
            for mut row in conn.query(inner.bulk_sql.existing(size)?, &params)? {
                existing.insert((resource_type.to_string(), row[0].take_text()));
            }
        }
    }
    Ok(existing)
}

/// Fresh values for an auto-numbered key, one per row about to be inserted.
fn fresh_keys(
    conn: &mut dyn Conn,
    table: &str,
    column: &str,
    count: usize,
) -> Result<Vec<i64>, StoreError> {
    let sql = conn.dialect().fresh_keys_sql(table, column);
    let count_value = i64::try_from(count)
        .map_err(|_| StoreError::Invalid(format!("{count} rows do not fit one import")))?;
    let mut keys: Vec<i64> = conn
        .query(&sql, &[count_value.into()])?
        .iter()
        .map(|row| row[0].int())
        .collect();
    keys.sort_unstable();
    if keys.len() != count {
        return Err(StoreError::Backend(format!(
            "asked for {count} keys of {table}.{column}, got {}",
            keys.len()
        )));
    }
    Ok(keys)
}

/// Writes a prepared batch in one transaction. Resources new to the store (the common case of
/// a first import) go in with multi-row `INSERT`s and keys drawn up front; resources that exist
/// already, or come a second time in the batch, take the path of an ordinary update (so
/// unchanged content keeps its version). Outcomes are in batch order.
fn import(
    inner: &Inner,
    conn: &mut dyn Conn,
    now: i64,
    items: Vec<ImportItem>,
) -> Result<Vec<ImportOutcome>, StoreError> {
    zorgnet_db::in_transaction(conn, |conn| {
        let existing = existing_keys(inner, conn, &items)?;
        let mut seen: HashSet<(&str, &str)> = HashSet::with_capacity(items.len());
        let fresh: Vec<bool> = items
            .iter()
            .map(|item| {
                let key = (item.resource_type.as_str(), item.id.as_str());
                (existing.is_empty() || !existing.contains(&(key.0.to_string(), key.1.to_string())))
                    && seen.insert(key)
            })
            .collect();
        let fresh_count = fresh.iter().filter(|&&f| f).count();
        let hooked = inner.hook.get().is_some();
        let mut changes = Vec::new();
        let mut outcomes: Vec<Option<ImportOutcome>> = Vec::with_capacity(items.len());
        let mut later = Vec::new();
        let (rids, seqs) = if fresh_count > 0 {
            (
                fresh_keys(conn, "resources", "rid", fresh_count)?,
                fresh_keys(conn, "versions", "seq", fresh_count)?,
            )
        } else {
            (Vec::new(), Vec::new())
        };
        let mut keys = rids.into_iter().zip(seqs);
        let mut sink = Sink::new();
        for (position, (item, is_fresh)) in items.into_iter().zip(fresh).enumerate() {
            if !is_fresh {
                outcomes.push(None);
                later.push((position, item));
                continue;
            }
            let (rid, seq) = keys
                .next()
                .ok_or_else(|| StoreError::Backend("import ran out of keys".into()))?;
            let ImportItem {
                resource_type,
                id,
                json,
                indexes,
                categories,
                identity,
            } = item;
            let [size, sole, policy_categories] = indexes.policy_columns();
            sink.resources.push([
                rid.into(),
                resource_type.as_str().into(),
                id.as_str().into(),
                1.into(),
                now.into(),
                0.into(),
                seq.into(),
                size,
                sole,
                policy_categories,
            ]);
            sink.versions.push([
                seq.into(),
                rid.into(),
                resource_type.as_str().into(),
                id.as_str().into(),
                1.into(),
                now.into(),
                "PUT".into(),
                SqlValue::Shared(json),
            ]);
            sink.add_indexes(rid, indexes.rows);
            sink.add_compartments(rid, &indexes.patients);
            if hooked {
                let current = CurrentContent {
                    patients: indexes.patients,
                    categories,
                    identity,
                };
                record_change(
                    &mut changes,
                    &resource_type,
                    &id,
                    1,
                    Vec::new(),
                    Some(current),
                );
            }
            outcomes.push(Some(ImportOutcome::Created));
        }
        sink.flush(inner, conn)?;
        for (position, item) in later {
            let resource = serde_json::from_str(&item.json).map_err(|e| {
                StoreError::Backend(format!(
                    "import of {}/{} lost its JSON: {e}",
                    item.resource_type, item.id
                ))
            })?;
            let outcome = put(
                inner,
                conn,
                resource,
                &item.id,
                None,
                now,
                "PUT",
                &mut changes,
            )?;
            outcomes[position] = Some(ImportOutcome::from(&outcome));
        }
        if let Some(hook) = inner.hook.get()
            && !changes.is_empty()
        {
            hook.after_write(conn, &changes)?;
        }
        outcomes
            .into_iter()
            .map(|o| o.ok_or_else(|| StoreError::Backend("import lost an outcome".into())))
            .collect()
    })
}

/// Makes sure every (type, code) has a stable param_id; returns the full map.
pub(crate) fn ensure_param_ids(
    conn: &mut dyn Conn,
    wanted: &[(String, String)],
) -> Result<HashMap<(String, String), i64>, StoreError> {
    let load = |conn: &mut dyn Conn| -> Result<HashMap<(String, String), i64>, StoreError> {
        let rows = conn.query("SELECT param_id, res_type, code FROM search_params", &[])?;
        Ok(rows
            .into_iter()
            .map(|mut r| {
                let id = r[0].int();
                let code = r[2].take_text();
                ((r[1].take_text(), code), id)
            })
            .collect())
    };
    let existing = load(conn)?;
    let missing: Vec<&(String, String)> = wanted
        .iter()
        .filter(|k| !existing.contains_key(*k))
        .collect();
    if missing.is_empty() {
        return Ok(existing);
    }
    let d = conn.dialect();
    let sql = format!(
        "INSERT INTO search_params (res_type, code) VALUES ({}, {}) ON CONFLICT DO NOTHING",
        d.placeholder(1),
        d.placeholder(2)
    );
    zorgnet_db::in_transaction(conn, |conn| -> Result<(), StoreError> {
        for (resource_type, code) in missing {
            conn.execute(&sql, &[resource_type.as_str().into(), code.as_str().into()])?;
        }
        Ok(())
    })?;
    load(conn)
}

/// `ANALYZE`s the store's tables on PostgreSQL, whose planner goes by those statistics. SQLite
/// is left without them: its searches fix their join order (see `search.rs`), and an
/// `ANALYZE` there reads every index in full.
pub(crate) fn analyze(conn: &mut dyn Conn) -> Result<(), StoreError> {
    if conn.dialect() == Dialect::Postgres {
        for table in BULK_TABLES {
            conn.execute(&format!("ANALYZE {}", table.name), &[])?;
        }
    }
    Ok(())
}

/// Rows whose policy facts are filled in per transaction when a store opens.
const POLICY_FACTS_ROWS_PER_BATCH: usize = 2_000;

/// Fills in every row's policy columns (see [`crate::PolicyFacts`]) when they were computed
/// with other category rules than this build's, or never (a store written before they
/// existed), and records the rules. Runs when the store opens, before it serves.
pub(crate) fn fill_policy_facts(inner: &Inner, conn: &mut dyn Conn) -> Result<(), StoreError> {
    let recorded = conn.query("SELECT rules_version FROM policy_facts", &[])?;
    if recorded.first().map(|row| row[0].int()) == Some(RULES_VERSION) {
        return Ok(());
    }
    let dialect = conn.dialect();
    let select = format!(
        "SELECT r.rid, v.content FROM resources r \
         JOIN versions v ON v.seq = r.current_seq WHERE r.rid > {} ORDER BY r.rid LIMIT {}",
        dialect.placeholder(1),
        dialect.placeholder(2)
    );
    let update = format!(
        "UPDATE resources SET compartment_size = {}, sole_patient = {}, categories = {} \
         WHERE rid = {}",
        dialect.placeholder(1),
        dialect.placeholder(2),
        dialect.placeholder(3),
        dialect.placeholder(4)
    );
    let batch = i64::try_from(POLICY_FACTS_ROWS_PER_BATCH).unwrap_or(i64::MAX);
    let (mut after, mut filled) = (i64::MIN, 0_usize);
    loop {
        let rows = zorgnet_db::in_transaction(conn, |conn| {
            let rows = conn.query(&select, &[after.into(), batch.into()])?;
            for row in &rows {
                let columns = match &row[1] {
                    SqlValue::Text(json) => {
                        let resource: Value = serde_json::from_str(json).map_err(|e| {
                            StoreError::Backend(format!(
                                "the stored resource with rid {} does not parse: {e}",
                                row[0].int()
                            ))
                        })?;
                        let patients = inner.base.patient_compartments(&resource);
                        policy_columns(&patients, access_categories_of(&resource))
                    }
                    _ => policy_columns(&[], CategorySet::EMPTY),
                };
                let [size, sole, categories] = columns;
                conn.execute(&update, &[size, sole, categories, row[0].clone()])?;
            }
            Ok::<_, StoreError>(rows)
        })?;
        filled += rows.len();
        match rows.last() {
            Some(last) if rows.len() == POLICY_FACTS_ROWS_PER_BATCH => after = last[0].int(),
            _ => break,
        }
        tracing::info!(
            rows = filled,
            "filling in the policy facts of stored resources"
        );
    }
    zorgnet_db::in_transaction(conn, |conn| {
        conn.execute("DELETE FROM policy_facts", &[])?;
        conn.execute(
            &format!(
                "INSERT INTO policy_facts (rules_version) VALUES ({})",
                dialect.placeholder(1)
            ),
            &[RULES_VERSION.into()],
        )?;
        Ok::<_, StoreError>(())
    })?;
    if filled > 0 {
        tracing::info!(
            rows = filled,
            "filled in the policy facts of stored resources"
        );
    }
    Ok(())
}
