//! Writes: create, update, delete, each as a new version plus its search-index rows, all
//! operations of one call in one database transaction.

use crate::search::{self, current_row};
use crate::{Change, Inner, StoreError, StoredResource, now_ms, stamp};
use serde_json::Value;
use std::collections::HashMap;
use zorgnet_db::sql::{Conn, SqlBuilder, SqlValue};
use zorgnet_fhir::search::{IndexValue, SearchQuery};

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
}

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

pub(crate) fn apply(
    inner: &Inner,
    conn: &mut dyn Conn,
    ops: Vec<WriteOp>,
) -> Result<Vec<WriteOutcome>, StoreError> {
    let now = now_ms();
    zorgnet_db::in_transaction(conn, |conn| {
        let mut changes = Vec::new();
        let outcomes = ops
            .into_iter()
            .map(|op| apply_one(inner, conn, op, now, &mut changes))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(hook) = inner.hook.get()
            && !changes.is_empty()
        {
            hook.after_write(conn, &changes)?;
        }
        Ok(outcomes)
    })
}

/// The patients whose compartment holds a resource now.
fn compartment_patients(conn: &mut dyn Conn, rid: i64) -> Result<Vec<String>, StoreError> {
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
    inner: &Inner,
    changes: &mut Vec<Change>,
    resource_type: &str,
    id: &str,
    before: Vec<String>,
    after: Option<&Value>,
) {
    let mut patients = before;
    if let Some(resource) = after {
        for patient in inner.registry.patient_compartments(resource) {
            if !patients.contains(&patient) {
                patients.push(patient);
            }
        }
    }
    changes.push(Change {
        resource_type: resource_type.to_string(),
        id: id.to_string(),
        patients,
    });
}

fn resource_type_of(resource: &Value) -> Result<String, StoreError> {
    resource
        .get("resourceType")
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| StoreError::Invalid("resourceType is missing".into()))
}

fn apply_one(
    inner: &Inner,
    conn: &mut dyn Conn,
    op: WriteOp,
    now: i64,
    changes: &mut Vec<Change>,
) -> Result<WriteOutcome, StoreError> {
    match op {
        WriteOp::Create {
            resource,
            id,
            if_none_exist,
        } => {
            if let Some(query) = if_none_exist {
                let matches = search::matching_ids(inner, conn, &query, 2)?;
                match matches.as_slice() {
                    [] => {}
                    [existing] => {
                        let resource_type = resource_type_of(&resource)?;
                        if let crate::ReadOutcome::Found(stored) =
                            search::read(conn, &resource_type, existing, None)?
                        {
                            return Ok(WriteOutcome::Unchanged(stored));
                        }
                    }
                    _ => {
                        return Err(StoreError::PreconditionFailed(
                            "If-None-Exist matched more than one resource".into(),
                        ));
                    }
                }
            }
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
    set_current(conn, rid, version, now, false, seq)?;
    write_indexes(inner, conn, rid, &resource_type, &resource)?;
    if hooked {
        record_change(inner, changes, &resource_type, id, before, Some(&resource));
    }
    let stored = StoredResource {
        resource_type,
        id: id.to_string(),
        version,
        last_updated_ms: now,
        json,
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
    set_current(conn, row.rid, version, now, true, seq)?;
    if inner.hook.get().is_some() {
        let before = compartment_patients(conn, row.rid)?;
        record_change(inner, changes, resource_type, id, before, None);
    }
    clear_indexes(conn, row.rid)?;
    Ok(WriteOutcome::Deleted(Some(version)))
}

/// Points a resource's row at its newest version.
fn set_current(
    conn: &mut dyn Conn,
    rid: i64,
    version: i64,
    now: i64,
    deleted: bool,
    seq: i64,
) -> Result<(), StoreError> {
    let mut update = SqlBuilder::new(conn.dialect());
    update
        .push("UPDATE resources SET version = ")
        .bind(version)
        .push(", last_updated = ")
        .bind(now)
        .push(", deleted = ")
        .bind(i64::from(deleted))
        .push(", current_seq = ")
        .bind(seq)
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

const INDEX_TABLES: [&str; 7] = [
    "idx_token",
    "idx_string",
    "idx_date",
    "idx_reference",
    "idx_number",
    "idx_quantity",
    "idx_uri",
];

fn clear_indexes(conn: &mut dyn Conn, rid: i64) -> Result<(), StoreError> {
    let placeholder = conn.dialect().placeholder(1);
    for table in INDEX_TABLES.iter().chain(["compartment"].iter()) {
        conn.execute(
            &format!("DELETE FROM {table} WHERE rid = {placeholder}"),
            &[rid.into()],
        )?;
    }
    Ok(())
}

fn write_indexes(
    inner: &Inner,
    conn: &mut dyn Conn,
    rid: i64,
    resource_type: &str,
    resource: &Value,
) -> Result<(), StoreError> {
    let d = conn.dialect();
    let p = |n| d.placeholder(n);
    let conflict = "ON CONFLICT DO NOTHING";
    for entry in inner.registry.extract(resource) {
        let Some(param_id) = inner.param_id(resource_type, &entry.code) else {
            continue;
        };
        let (sql, params): (String, Vec<SqlValue>) = match entry.value {
            IndexValue::Token { system, code } => (
                format!(
                    "INSERT INTO idx_token (rid, param_id, system, code) VALUES ({}, {}, {}, {}) {conflict}",
                    p(1),
                    p(2),
                    p(3),
                    p(4)
                ),
                vec![rid.into(), param_id.into(), system.into(), code.into()],
            ),
            IndexValue::String { normalized, exact } => (
                format!(
                    "INSERT INTO idx_string (rid, param_id, normalized, exact) VALUES ({}, {}, {}, {}) {conflict}",
                    p(1),
                    p(2),
                    p(3),
                    p(4)
                ),
                vec![rid.into(), param_id.into(), normalized.into(), exact.into()],
            ),
            IndexValue::Date(range) => (
                format!(
                    "INSERT INTO idx_date (rid, param_id, low_ms, high_ms) VALUES ({}, {}, {}, {}) {conflict}",
                    p(1),
                    p(2),
                    p(3),
                    p(4)
                ),
                vec![
                    rid.into(),
                    param_id.into(),
                    range.low_ms.into(),
                    range.high_ms.into(),
                ],
            ),
            IndexValue::Reference {
                target_type,
                target_id,
            } => (
                format!(
                    "INSERT INTO idx_reference (rid, param_id, target_type, target_id) VALUES ({}, {}, {}, {}) {conflict}",
                    p(1),
                    p(2),
                    p(3),
                    p(4)
                ),
                vec![
                    rid.into(),
                    param_id.into(),
                    target_type.into(),
                    target_id.into(),
                ],
            ),
            IndexValue::Number(value) => (
                format!(
                    "INSERT INTO idx_number (rid, param_id, value) VALUES ({}, {}, {}) {conflict}",
                    p(1),
                    p(2),
                    p(3)
                ),
                vec![rid.into(), param_id.into(), value.into()],
            ),
            IndexValue::Quantity {
                value,
                system,
                code,
            } => (
                format!(
                    "INSERT INTO idx_quantity (rid, param_id, value, system, code) VALUES ({}, {}, {}, {}, {}) {conflict}",
                    p(1),
                    p(2),
                    p(3),
                    p(4),
                    p(5)
                ),
                vec![
                    rid.into(),
                    param_id.into(),
                    value.into(),
                    system.into(),
                    code.into(),
                ],
            ),
            IndexValue::Uri(value) => (
                format!(
                    "INSERT INTO idx_uri (rid, param_id, value) VALUES ({}, {}, {}) {conflict}",
                    p(1),
                    p(2),
                    p(3)
                ),
                vec![rid.into(), param_id.into(), value.into()],
            ),
        };
        conn.execute(&sql, &params)?;
    }
    for patient_id in inner.registry.patient_compartments(resource) {
        conn.execute(
            &format!(
                "INSERT INTO compartment (patient_id, rid) VALUES ({}, {}) {conflict}",
                p(1),
                p(2)
            ),
            &[patient_id.into(), rid.into()],
        )?;
    }
    Ok(())
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
