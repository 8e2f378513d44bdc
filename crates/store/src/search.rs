//! Reads: read, vread, history, search (criteria → SQL, sorting, paging, includes),
//! `$everything`, counts.
//!
//! Paging is keyset paging, with or without `_sort`: a `next` page continues after the last
//! row it saw (by its sort values, then row id), a `previous` page before the first, so
//! writes between pages neither repeat nor skip results.

use crate::{Inner, ParamRows, PolicyFacts, ReadOutcome, StoreError, StoredResource};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::collections::HashSet;
use zorgnet_db::sql::{Conn, Dialect, Row, SqlBuilder, SqlValue};
use zorgnet_fhir::categories::CategorySet;
use zorgnet_fhir::search::{
    Chain, Criterion, CriterionValue, Has, Include, MAX_BOUND_PARAMETERS, MAX_CURSOR_BYTES,
    ParamType, Prefix, SearchParam, SearchQuery, SortKey, Summary, TokenSystem,
    is_search_text_char,
};

/// Most resources `_include`/`_revinclude` add to one page.
pub const MAX_INCLUDED_RESOURCES: usize = 1_000;
/// Rounds of `:iterate`.
pub const MAX_INCLUDE_ITERATIONS: usize = 3;

/// The current row of a resource.
pub(crate) struct CurrentRow {
    pub rid: i64,
    pub version: i64,
    pub last_updated_ms: i64,
    pub deleted: bool,
    pub json: Option<String>,
}

pub(crate) fn current_row(
    conn: &mut dyn Conn,
    resource_type: &str,
    id: &str,
) -> Result<Option<CurrentRow>, StoreError> {
    let mut b = SqlBuilder::new(conn.dialect());
    b.push("SELECT r.rid, r.version, r.last_updated, r.deleted, v.content FROM resources r JOIN versions v ON v.seq = r.current_seq WHERE r.res_type = ")
        .bind(resource_type)
        .push(" AND r.id = ")
        .bind(id);
    let mut rows = conn.query(&b.sql, &b.params)?;
    Ok(rows.pop().map(|mut r| CurrentRow {
        rid: r[0].int(),
        version: r[1].int(),
        last_updated_ms: r[2].int(),
        deleted: r[3].int() != 0,
        json: match r[4] {
            SqlValue::Null => None,
            _ => Some(r[4].take_text()),
        },
    }))
}

pub(crate) fn read(
    conn: &mut dyn Conn,
    resource_type: &str,
    id: &str,
    version: Option<i64>,
) -> Result<ReadOutcome, StoreError> {
    let mut b = SqlBuilder::new(conn.dialect());
    match version {
        None => b.push("SELECT v.version, v.last_updated, v.method, v.content, r.rid, r.compartment_size, r.sole_patient, r.categories FROM resources r JOIN versions v ON v.seq = r.current_seq WHERE r.res_type = "),
        Some(_) => b.push("SELECT v.version, v.last_updated, v.method, v.content FROM resources r JOIN versions v ON v.rid = r.rid WHERE r.res_type = "),
    };
    b.bind(resource_type).push(" AND r.id = ").bind(id);
    if let Some(version) = version {
        b.push(" AND v.version = ").bind(version);
    }
    let version_asked = version;
    let mut rows = conn.query(&b.sql, &b.params)?;
    let Some(mut row) = rows.pop() else {
        return Ok(ReadOutcome::NotFound);
    };
    let (version, last_updated_ms) = (row[0].int(), row[1].int());
    if row[2] == SqlValue::Text("DELETE".into()) {
        return Ok(ReadOutcome::Deleted {
            version,
            last_updated_ms,
        });
    }
    let policy = match version_asked {
        None => Some(policy_facts(conn, &mut row)?),
        Some(_) => None,
    };
    Ok(ReadOutcome::Found(StoredResource {
        resource_type: resource_type.to_string(),
        id: id.to_string(),
        version,
        last_updated_ms,
        json: row[3].take_text(),
        policy,
    }))
}

/// The policy facts of a current version's row (`rid`, `compartment_size`, `sole_patient`,
/// `categories` from its fifth column on), reading the compartments only for a resource in
/// several.
fn policy_facts(conn: &mut dyn Conn, row: &mut [SqlValue]) -> Result<PolicyFacts, StoreError> {
    let categories = CategorySet::from_bits(row[7].int());
    let patients = match row[5].int() {
        0 => Vec::new(),
        1 => vec![row[6].take_text()],
        _ => {
            let mut patients: Vec<String> = crate::write::compartment_patients(conn, row[4].int())?;
            patients.sort();
            patients
        }
    };
    Ok(PolicyFacts {
        patients,
        categories,
    })
}

/// Which history.
#[derive(Debug, Clone)]
pub enum HistoryScope {
    /// All types.
    System,
    /// One type.
    Type(String),
    /// One resource.
    Instance(String, String),
}

/// One history entry.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    /// Position in the global change sequence.
    pub seq: i64,
    /// Resource type.
    pub resource_type: String,
    /// Logical id.
    pub id: String,
    /// Version.
    pub version: i64,
    /// When.
    pub last_updated_ms: i64,
    /// POST, PUT or DELETE.
    pub method: String,
    /// The content, absent for deletes.
    pub json: Option<String>,
}

/// A page of history.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// Entries, newest first.
    pub entries: Vec<HistoryEntry>,
    /// Cursor for the next (older) page.
    pub next_cursor: Option<String>,
    /// Cursor for the previous (newer) page (pages reached through a cursor).
    pub previous_cursor: Option<String>,
}

pub(crate) fn history(
    conn: &mut dyn Conn,
    scope: &HistoryScope,
    since_ms: Option<i64>,
    count: usize,
    cursor: Option<&str>,
) -> Result<HistoryPage, StoreError> {
    let cursor = cursor.map(KeyCursor::parse).transpose()?;
    let direction = cursor.map_or(Direction::After, |c| c.direction);
    let mut b = SqlBuilder::new(conn.dialect());
    b.push("SELECT seq, res_type, id, version, last_updated, method, content FROM versions WHERE 1 = 1");
    match scope {
        HistoryScope::System => {}
        HistoryScope::Type(t) => {
            b.push(" AND res_type = ").bind(t.as_str());
        }
        HistoryScope::Instance(t, id) => {
            b.push(" AND rid = (SELECT rid FROM resources WHERE res_type = ")
                .bind(t.as_str())
                .push(" AND id = ")
                .bind(id.as_str())
                .push(")");
        }
    }
    if let Some(since) = since_ms {
        b.push(" AND last_updated >= ").bind(since);
    }
    // Newest first: onwards (`next`) is older, back (`previous`) is newer.
    key_page_sql(&mut b, "seq", true, cursor, count);
    let rows = conn.query(&b.sql, &b.params)?;
    let mut entries: Vec<HistoryEntry> = rows
        .into_iter()
        .map(|mut r| HistoryEntry {
            seq: r[0].int(),
            resource_type: r[1].take_text(),
            id: r[2].take_text(),
            version: r[3].int(),
            last_updated_ms: r[4].int(),
            method: r[5].take_text(),
            json: match r[6] {
                SqlValue::Null => None,
                _ => Some(r[6].take_text()),
            },
        })
        .collect();
    let (next, previous) = cut_page(&mut entries, count, direction, cursor.is_some());
    let cursor_at = |direction, entry: Option<&HistoryEntry>| {
        entry.map(|e| KeyCursor::encode(direction, e.seq))
    };
    Ok(HistoryPage {
        next_cursor: next
            .then(|| cursor_at(Direction::After, entries.last()))
            .flatten(),
        previous_cursor: previous
            .then(|| cursor_at(Direction::Before, entries.first()))
            .flatten(),
        entries,
    })
}

/// One page of search results.
#[derive(Debug, Clone, Default)]
pub struct SearchResult {
    /// Matches, in order.
    pub matches: Vec<StoredResource>,
    /// Resources added by `_include`/`_revinclude`.
    pub included: Vec<StoredResource>,
    /// Total number of matches, when computed (first page, `_summary=count`).
    pub total: Option<i64>,
    /// Cursor for the next page.
    pub next_cursor: Option<String>,
    /// Cursor for the previous page (pages reached through a cursor).
    pub previous_cursor: Option<String>,
}

const SELECT_COLUMNS: &str = "SELECT r.rid, r.res_type, r.id, r.version, r.last_updated, v.content";
/// Columns of [`SELECT_COLUMNS`].
const SELECT_COLUMN_COUNT: usize = 6;
const SELECT_RESOURCE: &str = "SELECT r.rid, r.res_type, r.id, r.version, r.last_updated, v.content FROM resources r JOIN versions v ON v.seq = r.current_seq";

fn to_stored(mut row: Row) -> (i64, StoredResource) {
    (
        row[0].int(),
        StoredResource {
            resource_type: row[1].take_text(),
            id: row[2].take_text(),
            version: row[3].int(),
            last_updated_ms: row[4].int(),
            json: row[5].take_text(),
            policy: None,
        },
    )
}

/// Which way a page runs from its cursor's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// The rows after the cursor's row (a `next` link).
    After,
    /// The rows before the cursor's row (a `previous` link).
    Before,
}

impl Direction {
    fn prefix(self) -> char {
        match self {
            Direction::After => 'n',
            Direction::Before => 'p',
        }
    }

    fn from_prefix(prefix: &str) -> Option<Direction> {
        match prefix {
            "n" => Some(Direction::After),
            "p" => Some(Direction::Before),
            _ => None,
        }
    }
}

/// Cuts a page from `rows`, read in `direction` from the cursor (if any) with one row more
/// than `count`, and puts it in page order. Returns which links the page gets:
/// `(next, previous)`. A page read forwards has a `next` when a row beyond it was read and a
/// `previous` when it was reached through a cursor; a page read backwards always has a
/// `next` (the page it came from) and a `previous` when a row before it was read.
fn cut_page<T>(
    rows: &mut Vec<T>,
    count: usize,
    direction: Direction,
    from_cursor: bool,
) -> (bool, bool) {
    let more = rows.len() > count;
    rows.truncate(count);
    match direction {
        Direction::After => (more, from_cursor),
        Direction::Before => {
            rows.reverse();
            (true, more)
        }
    }
}

/// Ends a statement whose pages run along the integer `column` (`descending`: from high to
/// low): the keyset condition when paging from `cursor`, the order to read in, and a limit
/// of one row more than `count` (see [`cut_page`]).
fn key_page_sql(
    b: &mut SqlBuilder,
    column: &str,
    descending: bool,
    cursor: Option<KeyCursor>,
    count: usize,
) {
    let backwards = cursor.is_some_and(|c| c.direction == Direction::Before);
    if let Some(cursor) = cursor {
        let beyond = if descending != backwards { "<" } else { ">" };
        b.push(&format!(" AND {column} {beyond} ")).bind(cursor.key);
    }
    let order = if descending != backwards {
        "DESC"
    } else {
        "ASC"
    };
    b.push(&format!(" ORDER BY {column} {order} LIMIT "))
        .count(count as u64 + 1);
}

/// A cursor for pages in the order of one integer key: the change sequence for history
/// (newest first), the row id for `$everything`. Written as `n` (after) or `p` (before)
/// followed by the key of the row just outside the page.
#[derive(Debug, Clone, Copy, PartialEq)]
struct KeyCursor {
    direction: Direction,
    key: i64,
}

impl KeyCursor {
    fn encode(direction: Direction, key: i64) -> String {
        format!("{}{key}", direction.prefix())
    }

    fn parse(text: &str) -> Result<KeyCursor, StoreError> {
        text.split_at_checked(1)
            .and_then(|(prefix, key)| {
                Some(KeyCursor {
                    direction: Direction::from_prefix(prefix)?,
                    key: key.parse().ok()?,
                })
            })
            .ok_or_else(|| StoreError::Invalid(format!("invalid paging cursor '{text}'")))
    }
}

/// Where a page starts: the row just outside it, by its sort values and row id. Keyset
/// paging: a page continues from a row, not from a position, so writes between pages
/// neither repeat nor skip results.
///
/// Written as `n` (after) or `p` (before) followed by the unpadded base64url of a JSON
/// array of the row's sort values and, last, its row id.
#[derive(Debug, Clone, PartialEq)]
struct Cursor {
    direction: Direction,
    sort_values: Vec<SqlValue>,
    rid: i64,
}

impl Cursor {
    fn encode(direction: Direction, sort_values: &[SqlValue], rid: i64) -> String {
        let mut key: Vec<serde_json::Value> = sort_values.iter().map(value_to_json).collect();
        key.push(rid.into());
        format!(
            "{}{}",
            direction.prefix(),
            URL_SAFE_NO_PAD.encode(serde_json::Value::Array(key).to_string())
        )
    }

    /// Reads a cursor made by [`Cursor::encode`] for a search sorted by `sort`: one value per
    /// key, of the kind the key's column holds (or NULL for a parameter a resource lacks),
    /// then the row id. Anything else is refused, so no statement ever compares a column
    /// with a value of another type.
    fn parse(text: &str, sort: &[SortKey]) -> Result<Cursor, StoreError> {
        if text.len() > MAX_CURSOR_BYTES {
            return Err(StoreError::Invalid(format!(
                "paging cursor longer than MAX_CURSOR_BYTES ({MAX_CURSOR_BYTES})"
            )));
        }
        let invalid = || StoreError::Invalid(format!("invalid paging cursor '{text}'"));
        let (prefix, key) = text.split_at_checked(1).ok_or_else(invalid)?;
        let direction = Direction::from_prefix(prefix).ok_or_else(invalid)?;
        let key = URL_SAFE_NO_PAD.decode(key).map_err(|_| invalid())?;
        let serde_json::Value::Array(mut key) =
            serde_json::from_slice(&key).map_err(|_| invalid())?
        else {
            return Err(invalid());
        };
        let misfit =
            || StoreError::Invalid("paging cursor does not fit this search's _sort".into());
        if key.len() != sort.len() + 1 {
            return Err(misfit());
        }
        let rid = key.pop().and_then(|v| v.as_i64()).ok_or_else(invalid)?;
        let sort_values = key
            .into_iter()
            .zip(sort)
            .map(|(value, key)| sort_value(value, key))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(misfit)?;
        Ok(Cursor {
            direction,
            sort_values,
            rid,
        })
    }
}

fn value_to_json(value: &SqlValue) -> serde_json::Value {
    match value {
        SqlValue::Null => serde_json::Value::Null,
        SqlValue::Int(i) => (*i).into(),
        SqlValue::Real(r) => (*r).into(),
        SqlValue::Text(t) => t.as_str().into(),
        SqlValue::Shared(t) => (**t).into(),
        // No sort key is a blob.
        SqlValue::Blob(_) => serde_json::Value::Null,
    }
}

/// What a sort key's column holds.
#[derive(Clone, Copy)]
enum SortColumn {
    Text,
    Integer,
    Real,
}

/// The column of a parameter's index table ([`table_of`]) that it sorts by, and what the
/// column holds. Dates sort by the start of their range going up, by its end going down.
fn sort_column(param_type: ParamType, descending: bool) -> (&'static str, SortColumn) {
    match param_type {
        ParamType::String => ("normalized", SortColumn::Text),
        ParamType::Date if descending => ("high_ms", SortColumn::Integer),
        ParamType::Date => ("low_ms", SortColumn::Integer),
        ParamType::Token => ("code", SortColumn::Text),
        ParamType::Number | ParamType::Quantity => ("value", SortColumn::Real),
        ParamType::Reference => ("target_id", SortColumn::Text),
        ParamType::Uri => ("value", SortColumn::Text),
    }
}

/// A cursor's value for `key`, when it is of the key column's kind.
fn sort_value(value: serde_json::Value, key: &SortKey) -> Option<SqlValue> {
    // A resource may lack a parameter, never an id or a last-updated time.
    let (column, nullable) = match key {
        SortKey::Id { .. } => (SortColumn::Text, false),
        SortKey::LastUpdated { .. } => (SortColumn::Integer, false),
        SortKey::Param { param, descending } => {
            (sort_column(param.param_type, *descending).1, true)
        }
    };
    match (value, column) {
        (serde_json::Value::Null, _) if nullable => Some(SqlValue::Null),
        // Control characters are refused in search text, so none reaches SQL this way
        // either (PostgreSQL refuses NUL in text as a failure of the statement).
        (serde_json::Value::String(t), SortColumn::Text) => t
            .chars()
            .all(is_search_text_char)
            .then_some(SqlValue::Text(t)),
        (serde_json::Value::Number(n), SortColumn::Integer) => n.as_i64().map(SqlValue::Int),
        (serde_json::Value::Number(n), SortColumn::Real) => n.as_f64().map(SqlValue::Real),
        _ => None,
    }
}

/// Refuses a statement binding more than [`MAX_BOUND_PARAMETERS`] values. The parser
/// refuses such searches from an estimate before any SQL is built; this holds the estimate
/// to what the statements really bind, so a search never meets the database's own limit
/// (SQLite 32,766, PostgreSQL 65,535) as a storage failure.
fn check_bound_parameters(b: &SqlBuilder) -> Result<(), StoreError> {
    if b.params.len() > MAX_BOUND_PARAMETERS {
        return Err(StoreError::Invalid(format!(
            "this search needs {} bound values, more than MAX_BOUND_PARAMETERS \
             ({MAX_BOUND_PARAMETERS}); use fewer values or criteria",
            b.params.len()
        )));
    }
    Ok(())
}

/// Appends `FROM … WHERE …` for a search. The driving criterion (see [`driving_criterion`])
/// becomes the outer loop: `(SELECT DISTINCT rid …) d CROSS JOIN resources r`. SQLite keeps
/// the written join order for CROSS JOIN, so it never scans every resource of a type in row
/// order hoping to meet the few matches; PostgreSQL plans the same SQL freely.
fn from_where(inner: &Inner, b: &mut SqlBuilder, query: &SearchQuery, with_content: bool) {
    let resource_type = query.resource_type.as_deref().unwrap_or("");
    let driver = driving_criterion(&query.criteria);
    b.push(" FROM ");
    match driver.map(|i| &query.criteria[i]) {
        Some(Criterion::Param {
            param,
            string_match,
            values,
            ..
        }) => {
            param_rids_sql(inner, b, resource_type, param, *string_match, values);
            b.push(" d CROSS JOIN resources r");
        }
        Some(Criterion::Chain(chain)) => {
            b.push("(");
            chain_rids_sql(inner, b, resource_type, chain);
            b.push(") d CROSS JOIN resources r");
        }
        Some(Criterion::Has(has)) => {
            b.push("(");
            has_rids_sql(inner, b, resource_type, has);
            b.push(") d CROSS JOIN resources r");
        }
        _ => {
            b.push("resources r");
        }
    }
    if with_content {
        b.push(" JOIN versions v ON v.seq = r.current_seq");
    }
    b.push(" WHERE r.deleted = 0");
    if driver.is_some() {
        b.push(" AND r.rid = d.rid");
    }
    if let Some(t) = &query.resource_type {
        b.push(" AND r.res_type = ").bind(t.as_str());
    } else if !query.types.is_empty() {
        b.push(" AND r.res_type IN (");
        for (i, t) in query.types.iter().enumerate() {
            if i > 0 {
                b.push(", ");
            }
            b.bind(t.as_str());
        }
        b.push(")");
    }
    for (i, criterion) in query.criteria.iter().enumerate() {
        if Some(i) != driver {
            b.push(" AND ");
            criterion_sql(inner, b, resource_type, criterion, "r");
        }
    }
    match query.within_compartments.as_deref() {
        None => {}
        Some([]) => {
            b.push(" AND 1 = 0");
        }
        Some(patients) => {
            // The row's policy columns decide for a resource of one compartment; only one of
            // several compartments reads the compartment table.
            let named = || patients.iter().map(|p| SqlValue::Text(p.clone()));
            b.push(" AND ((r.compartment_size = 1 AND r.sole_patient IN ");
            bind_list(b, named());
            b.push(
                ") OR (r.compartment_size > 1 AND NOT EXISTS \
                 (SELECT 1 FROM compartment c WHERE c.rid = r.rid AND c.patient_id NOT IN ",
            );
            bind_list(b, named());
            b.push(")))");
        }
    }
    if let Some(permitted) = query.within_categories {
        b.push(" AND r.categories <> 0 AND (r.categories & ")
            .bind(permitted.complement().bits())
            .push(") = 0");
    }
}

fn values_sql(
    b: &mut SqlBuilder,
    values: &[CriterionValue],
    string_match: zorgnet_fhir::search::StringMatch,
) {
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            b.push(" OR ");
        }
        b.push("(");
        value_sql(b, value, string_match);
        b.push(")");
    }
}

/// The criterion whose matching rows drive the query (the outer loop); the others
/// are checked per candidate row with `EXISTS` probes on the index's primary key, so a
/// common code (`code=glucose`) is never materialised in full. A reference to one resource
/// is the most selective in practice, then tokens, then anything else positive.
fn driving_criterion(criteria: &[Criterion]) -> Option<usize> {
    let rank = |c: &Criterion| match c {
        Criterion::Param {
            param,
            negate: false,
            ..
        } if param.param_type == ParamType::Reference => Some(0),
        Criterion::Chain(_) | Criterion::Has(_) => Some(1),
        Criterion::Param {
            param,
            negate: false,
            ..
        } if param.param_type == ParamType::Token => Some(2),
        Criterion::Param { negate: false, .. } => Some(3),
        _ => None,
    };
    criteria
        .iter()
        .enumerate()
        .filter_map(|(i, c)| rank(c).map(|r| (r, i)))
        .min()
        .map(|(_, i)| i)
}

pub(crate) fn search(
    inner: &Inner,
    conn: &mut dyn Conn,
    query: &SearchQuery,
) -> Result<SearchResult, StoreError> {
    let cursor = query
        .cursor
        .as_deref()
        .map(|c| Cursor::parse(c, &query.sort))
        .transpose()?;
    let mut result = SearchResult::default();
    let count_rows = |conn: &mut dyn Conn| -> Result<Option<i64>, StoreError> {
        let mut b = SqlBuilder::new(conn.dialect());
        b.push("SELECT COUNT(*)");
        from_where(inner, &mut b, query, false);
        check_bound_parameters(&b)?;
        let rows = conn.query(&b.sql, &b.params)?;
        Ok(rows.first().and_then(|r| r.first()).map(SqlValue::int))
    };
    if query.summary == Some(Summary::Count) || query.count == 0 {
        result.total = count_rows(conn)?;
        return Ok(result);
    }
    let direction = cursor.as_ref().map_or(Direction::After, |c| c.direction);
    let b = page_sql(inner, conn, query, cursor.as_ref());
    check_bound_parameters(&b)?;
    let mut rows: Vec<(Vec<SqlValue>, i64, StoredResource)> = conn
        .query(&b.sql, &b.params)?
        .into_iter()
        .map(|mut row| {
            let sort_values = row.split_off(SELECT_COLUMN_COUNT);
            let (rid, resource) = to_stored(row);
            (sort_values, rid, resource)
        })
        .collect();
    let (next, previous) = cut_page(&mut rows, query.count, direction, cursor.is_some());
    let cursor_at = |direction, row: Option<&(Vec<SqlValue>, i64, StoredResource)>| {
        row.map(|(values, rid, _)| Cursor::encode(direction, values, *rid))
    };
    if next {
        result.next_cursor = cursor_at(Direction::After, rows.last());
    }
    if previous {
        result.previous_cursor = cursor_at(Direction::Before, rows.first());
    }
    if cursor.is_none() && !query.without_total {
        // A first page that is not full holds every match: no separate count needed.
        result.total = match result.next_cursor {
            None => Some(rows.len() as i64),
            Some(_) => count_rows(conn)?,
        };
    }
    let matches: Vec<(i64, StoredResource)> = rows
        .into_iter()
        .map(|(_, rid, resource)| (rid, resource))
        .collect();
    result.included = includes(inner, conn, query, &matches)?;
    result.matches = matches.into_iter().map(|(_, r)| r).collect();
    Ok(result)
}

/// The statement reading one page (and one row more): the rows after (or before) the
/// cursor in the search's order, each with its sort values after [`SELECT_COLUMNS`].
///
/// Unsorted, the order is the row id's. Sorted, the matches and their sort values are
/// computed once, in a materialised `q`, and the page is cut from `q` with the keyset
/// condition of [`keyset_sql`]; only the page's rows are joined to their content.
fn page_sql(
    inner: &Inner,
    conn: &mut dyn Conn,
    query: &SearchQuery,
    cursor: Option<&Cursor>,
) -> SqlBuilder {
    let direction = cursor.map_or(Direction::After, |c| c.direction);
    let mut b = SqlBuilder::new(conn.dialect());
    if query.sort.is_empty() {
        b.push(SELECT_COLUMNS);
        from_where(inner, &mut b, query, true);
        if let Some(cursor) = cursor {
            b.push(" AND ");
            keyset_sql(&mut b, &[], cursor, "r.rid");
        }
        b.push(match direction {
            Direction::After => " ORDER BY r.rid",
            Direction::Before => " ORDER BY r.rid DESC",
        });
    } else {
        b.push("WITH q AS MATERIALIZED (SELECT r.rid AS rid");
        let mut descending = Vec::with_capacity(query.sort.len());
        for (i, key) in query.sort.iter().enumerate() {
            b.push(", ");
            descending.push(sort_expression(inner, &mut b, key));
            b.push(&format!(" AS s{i}"));
        }
        from_where(inner, &mut b, query, false);
        b.push(") ");
        b.push(SELECT_COLUMNS);
        for i in 0..query.sort.len() {
            b.push(&format!(", q.s{i}"));
        }
        b.push(
            " FROM q JOIN resources r ON r.rid = q.rid JOIN versions v ON v.seq = r.current_seq",
        );
        if let Some(cursor) = cursor {
            b.push(" WHERE ");
            keyset_sql(&mut b, &descending, cursor, "q.rid");
        }
        b.push(" ORDER BY ");
        for (i, descending) in descending.iter().enumerate() {
            // Backwards, every key runs the other way, and NULLs (last going forward) first.
            let order = match (direction, descending) {
                (Direction::After, false) => "ASC NULLS LAST",
                (Direction::After, true) => "DESC NULLS LAST",
                (Direction::Before, false) => "DESC NULLS FIRST",
                (Direction::Before, true) => "ASC NULLS FIRST",
            };
            b.push(&format!("q.s{i} {order}, "));
        }
        b.push(match direction {
            Direction::After => "q.rid",
            Direction::Before => "q.rid DESC",
        });
    }
    b.push(" LIMIT ").count(query.count as u64 + 1);
    b
}

/// The rows beyond `cursor` in its direction, in the order of sort columns `q.s0`, `q.s1`, …
/// (`descending[i]` for each; NULLs last) and then `rid_column`: lexicographically, a row is
/// beyond when it equals the cursor on the first `i` keys and is beyond it on key `i`, for
/// some `i`, or equals it on every key and is beyond it by row id.
fn keyset_sql(b: &mut SqlBuilder, descending: &[bool], cursor: &Cursor, rid_column: &str) {
    let forward = cursor.direction == Direction::After;
    b.push("(");
    for i in 0..=descending.len() {
        if i > 0 {
            b.push(" OR ");
        }
        b.push("(");
        for (j, value) in cursor.sort_values[..i].iter().enumerate() {
            match value {
                SqlValue::Null => b.push(&format!("q.s{j} IS NULL AND ")),
                value => b
                    .push(&format!("q.s{j} = "))
                    .bind(value.clone())
                    .push(" AND "),
            };
        }
        if i == descending.len() {
            b.push(&format!(
                "{rid_column} {} ",
                if forward { ">" } else { "<" }
            ))
            .bind(cursor.rid);
        } else {
            let column = format!("q.s{i}");
            let greater = forward != descending[i];
            match (&cursor.sort_values[i], forward) {
                // Nothing comes after a NULL (NULLs sort last) …
                (SqlValue::Null, true) => b.push("1 = 0"),
                // … and every value comes before one.
                (SqlValue::Null, false) => b.push(&format!("{column} IS NOT NULL")),
                (value, true) => b
                    .push(&format!("({column} {} ", if greater { ">" } else { "<" }))
                    .bind(value.clone())
                    .push(&format!(" OR {column} IS NULL)")),
                (value, false) => b
                    .push(&format!("{column} {} ", if greater { ">" } else { "<" }))
                    .bind(value.clone()),
            };
        }
        b.push(")");
    }
    b.push(")");
}

/// Ids of resources matching `query` (for conditional operations), at most `limit`.
pub(crate) fn matching_ids(
    inner: &Inner,
    conn: &mut dyn Conn,
    query: &SearchQuery,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let mut b = SqlBuilder::new(conn.dialect());
    b.push("SELECT r.id");
    from_where(inner, &mut b, query, false);
    b.push(" ORDER BY r.rid LIMIT ").count(limit as u64);
    check_bound_parameters(&b)?;
    Ok(conn
        .query(&b.sql, &b.params)?
        .into_iter()
        .map(|mut r| r[0].take_text())
        .collect())
}

/// Pushes the value `key` sorts by (of the resource `r`); returns whether it sorts descending.
fn sort_expression(inner: &Inner, b: &mut SqlBuilder, key: &SortKey) -> bool {
    match key {
        SortKey::Id { descending } => {
            b.push("r.id");
            *descending
        }
        SortKey::LastUpdated { descending } => {
            b.push("r.last_updated");
            *descending
        }
        SortKey::Param { param, descending } => {
            let table = table_of(param.param_type);
            let (column, _) = sort_column(param.param_type, *descending);
            let aggregate = if *descending { "MAX" } else { "MIN" };
            b.push(&format!(
                "(SELECT {aggregate}(s.{column}) FROM {table} s WHERE s.rid = r.rid AND "
            ));
            rows_sql(
                b,
                &inner.param_rows(&param.resource_type, &param.code),
                "s.",
            );
            b.push(")");
            *descending
        }
    }
}

fn table_of(param_type: ParamType) -> &'static str {
    match param_type {
        ParamType::Token => "idx_token",
        ParamType::String => "idx_string",
        ParamType::Date => "idx_date",
        ParamType::Reference => "idx_reference",
        ParamType::Number => "idx_number",
        ParamType::Quantity => "idx_quantity",
        ParamType::Uri => "idx_uri",
    }
}

fn criterion_sql(
    inner: &Inner,
    b: &mut SqlBuilder,
    resource_type: &str,
    criterion: &Criterion,
    alias: &str,
) {
    match criterion {
        Criterion::Id(ids) => {
            b.push(&format!("{alias}.id IN ("));
            for (i, id) in ids.iter().enumerate() {
                if i > 0 {
                    b.push(", ");
                }
                b.bind(id.as_str());
            }
            b.push(")");
        }
        Criterion::LastUpdated(values) => {
            b.push("(");
            for (i, (prefix, range)) in values.iter().enumerate() {
                if i > 0 {
                    b.push(" OR ");
                }
                let column = format!("{alias}.last_updated");
                date_condition(b, &column, &column, *prefix, range.low_ms, range.high_ms);
            }
            b.push(")");
        }
        Criterion::Missing { param, missing } => {
            let table = table_of(param.param_type);
            b.push(if *missing { "NOT EXISTS" } else { "EXISTS" });
            b.push(&format!(
                " (SELECT 1 FROM {table} m WHERE m.rid = {alias}.rid AND "
            ));
            rows_sql(b, &inner.param_rows(resource_type, &param.code), "m.");
            b.push(")");
        }
        Criterion::Param {
            param,
            string_match,
            negate,
            values,
        } => {
            let table = table_of(param.param_type);
            b.push(&format!(
                "{}EXISTS (SELECT 1 FROM {table} x WHERE x.rid = {alias}.rid AND ",
                if *negate { "NOT " } else { "" }
            ));
            rows_sql(b, &inner.param_rows(resource_type, &param.code), "x.");
            open_probe_values(b);
            values_sql(b, values, *string_match);
            b.push("))");
        }
        Criterion::Chain(chain) => {
            b.push(&format!("{alias}.rid IN ("));
            chain_rids_sql(inner, b, resource_type, chain);
            b.push(")");
        }
        Criterion::Has(has) => {
            b.push(&format!("{alias}.rid IN ("));
            has_rids_sql(inner, b, resource_type, has);
            b.push(")");
        }
    }
}

/// Pushes a query of the rids (column `rid`) of the resources of `resource_type` that a
/// resource of `has.source_type` matching `has.criterion` refers to through
/// `has.reference`: from the referring resources (driven by the criterion's index table
/// when it has one, `hs`) along their references to the targets.
fn has_rids_sql(inner: &Inner, b: &mut SqlBuilder, resource_type: &str, has: &Has) {
    b.push("SELECT DISTINCT tr.rid FROM ");
    let driven = match has.criterion.as_ref() {
        Criterion::Param {
            param,
            string_match,
            negate: false,
            values,
        } => {
            param_rids_sql(inner, b, &has.source_type, param, *string_match, values);
            b.push(" hs CROSS JOIN resources s");
            true
        }
        _ => {
            b.push("resources s");
            false
        }
    };
    b.push(" CROSS JOIN idx_reference ref CROSS JOIN resources tr WHERE ");
    if driven {
        b.push("s.rid = hs.rid AND ");
    }
    b.push("s.deleted = 0 AND s.res_type = ")
        .bind(has.source_type.as_str())
        .push(" AND ref.rid = s.rid AND ");
    rows_sql(
        b,
        &inner.param_rows(&has.source_type, &has.reference.code),
        "ref.",
    );
    b.push(" AND ref.target_type = ")
        .bind(resource_type)
        .push(" AND tr.res_type = ref.target_type AND tr.id = ref.target_id AND tr.deleted = 0");
    if !driven {
        b.push(" AND ");
        criterion_sql(inner, b, &has.source_type, &has.criterion, "s");
    }
}

/// Pushes `(SELECT DISTINCT rid FROM <index table> WHERE …)`: the resources of
/// `resource_type` with a value of `param` among `values`, found through the index table's
/// lookup index, for a join to start from.
fn param_rids_sql(
    inner: &Inner,
    b: &mut SqlBuilder,
    resource_type: &str,
    param: &SearchParam,
    string_match: zorgnet_fhir::search::StringMatch,
    values: &[CriterionValue],
) {
    let table = table_of(param.param_type);
    b.push(&format!("(SELECT DISTINCT rid FROM {table} WHERE "));
    rows_sql(b, &inner.param_rows(resource_type, &param.code), "");
    b.push(" AND (");
    values_sql(b, values, string_match);
    b.push("))");
}

/// Pushes a query of the rids (column `rid`) of the resources of `resource_type` whose
/// `chain.reference` points at a target `chain.targets` picks. It walks from the targets to
/// the references to them: the chained criterion usually picks few targets (a Patient by
/// identifier), while the references of the parameter are every resource of the type. A
/// target criterion on an index table drives from that table's index (`tt`); `CROSS JOIN`
/// keeps SQLite to the written order, where it would otherwise scan every resource of the
/// target type (PostgreSQL's planner treats it as a plain join).
fn chain_rids_sql(inner: &Inner, b: &mut SqlBuilder, resource_type: &str, chain: &Chain) {
    for (i, (target_type, target_criterion)) in chain.targets.iter().enumerate() {
        if i > 0 {
            b.push(" UNION ");
        }
        b.push("SELECT DISTINCT ref.rid FROM ");
        let driven = match target_criterion.as_ref() {
            Criterion::Param {
                param,
                string_match,
                negate: false,
                values,
            } => {
                param_rids_sql(inner, b, target_type, param, *string_match, values);
                b.push(" tt CROSS JOIN resources t");
                true
            }
            _ => {
                b.push("resources t");
                false
            }
        };
        b.push(" CROSS JOIN idx_reference ref WHERE ");
        if driven {
            b.push("t.rid = tt.rid AND ");
        }
        b.push("ref.target_type = t.res_type AND ref.target_id = t.id AND ");
        rows_sql(
            b,
            &inner.param_rows(resource_type, &chain.reference.code),
            "ref.",
        );
        b.push(" AND t.deleted = 0 AND t.res_type = ")
            .bind(target_type.as_str());
        if !driven {
            b.push(" AND ");
            criterion_sql(inner, b, target_type, target_criterion, "t");
        }
    }
}

fn value_sql(
    b: &mut SqlBuilder,
    value: &CriterionValue,
    string_match: zorgnet_fhir::search::StringMatch,
) {
    use zorgnet_fhir::search::StringMatch as M;
    match value {
        CriterionValue::Token { system, code } => {
            let mut first = true;
            if let Some(code) = code {
                b.push("code = ").bind(code.as_str());
                first = false;
            }
            match system {
                TokenSystem::Any => {}
                TokenSystem::None => {
                    b.push(if first { "" } else { " AND " }).push("system = ''");
                }
                TokenSystem::Is(s) => {
                    b.push(if first { "" } else { " AND " })
                        .push("system = ")
                        .bind(s.as_str());
                }
            }
        }
        CriterionValue::String(text) => match string_match {
            M::Exact => {
                b.push("exact = ").bind(text.as_str());
            }
            M::StartsWith => {
                b.push("normalized >= ")
                    .bind(text.as_str())
                    .push(" AND normalized < ")
                    .bind(format!("{text}\u{10FFFF}"));
            }
            M::Contains => {
                let escaped = text
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_");
                b.push("normalized LIKE ")
                    .bind(format!("%{escaped}%"))
                    .push(" ESCAPE '\\'");
            }
        },
        CriterionValue::Date(prefix, range) => {
            date_condition(b, "low_ms", "high_ms", *prefix, range.low_ms, range.high_ms)
        }
        CriterionValue::Number {
            prefix,
            value,
            low,
            high,
        } => number_condition(b, "value", *prefix, *value, *low, *high),
        CriterionValue::Quantity {
            prefix,
            value,
            low,
            high,
            system,
            code,
        } => {
            number_condition(b, "value", *prefix, *value, *low, *high);
            if let Some(system) = system {
                b.push(" AND system = ").bind(system.as_str());
            }
            if let Some(code) = code {
                b.push(" AND code = ").bind(code.as_str());
            }
        }
        CriterionValue::Reference {
            target_type,
            target_id,
        } => {
            b.push("target_id = ").bind(target_id.as_str());
            if let Some(t) = target_type {
                b.push(" AND target_type = ").bind(t.as_str());
            }
        }
        CriterionValue::Uri(uri) => {
            b.push("value = ").bind(uri.as_str());
        }
    }
}

/// A stored range [low, high] against a search range [p_low, p_high], per FHIR's prefix rules.
fn date_condition(
    b: &mut SqlBuilder,
    low: &str,
    high: &str,
    prefix: Prefix,
    p_low: i64,
    p_high: i64,
) {
    match prefix {
        Prefix::Eq => b
            .push(&format!("{low} >= "))
            .bind(p_low)
            .push(&format!(" AND {high} <= "))
            .bind(p_high),
        Prefix::Ne => b
            .push(&format!("NOT ({low} >= "))
            .bind(p_low)
            .push(&format!(" AND {high} <= "))
            .bind(p_high)
            .push(")"),
        Prefix::Gt => b.push(&format!("{high} > ")).bind(p_high),
        Prefix::Lt => b.push(&format!("{low} < ")).bind(p_low),
        Prefix::Ge => b.push(&format!("{high} >= ")).bind(p_low),
        Prefix::Le => b.push(&format!("{low} <= ")).bind(p_high),
        Prefix::Sa => b.push(&format!("{low} > ")).bind(p_high),
        Prefix::Eb => b.push(&format!("{high} < ")).bind(p_low),
        Prefix::Ap => b
            .push(&format!("{low} <= "))
            .bind(p_high)
            .push(&format!(" AND {high} >= "))
            .bind(p_low),
    };
}

fn number_condition(
    b: &mut SqlBuilder,
    column: &str,
    prefix: Prefix,
    value: f64,
    low: f64,
    high: f64,
) {
    match prefix {
        Prefix::Eq => b
            .push(&format!("{column} >= "))
            .bind(low)
            .push(&format!(" AND {column} < "))
            .bind(high),
        Prefix::Ne => b
            .push(&format!("NOT ({column} >= "))
            .bind(low)
            .push(&format!(" AND {column} < "))
            .bind(high)
            .push(")"),
        Prefix::Gt | Prefix::Sa => b.push(&format!("{column} > ")).bind(value),
        Prefix::Lt | Prefix::Eb => b.push(&format!("{column} < ")).bind(value),
        Prefix::Ge => b.push(&format!("{column} >= ")).bind(value),
        Prefix::Le => b.push(&format!("{column} <= ")).bind(value),
        Prefix::Ap => {
            let margin = (value * 0.1).abs();
            b.push(&format!("{column} >= "))
                .bind(value - margin)
                .push(&format!(" AND {column} <= "))
                .bind(value + margin)
        }
    };
}

/// Opens the value conditions of an `EXISTS` probe on an index table, whose rows the probe
/// finds along the primary key (`rid`, `param_id`, …). SQLite's planner, without statistics,
/// may rather read a lookup index (`param_id`, value…) for an OR-list of values, and then
/// every row of those values for each candidate; a unary `+` before the conditions keeps
/// them out of its index choice. PostgreSQL plans with statistics and has no unary `+` on a
/// boolean.
fn open_probe_values(b: &mut SqlBuilder) {
    b.push(match b.dialect {
        Dialect::Sqlite => " AND +(",
        Dialect::Postgres => " AND (",
    });
}

/// Pushes the condition that picks `rows` out of their index table, whose columns are
/// written with `prefix` (`x.`, or nothing).
fn rows_sql(b: &mut SqlBuilder, rows: &ParamRows, prefix: &str) {
    match rows.ids.as_slice() {
        [] => {
            b.push(&format!("{prefix}param_id = -1"));
        }
        [id] => {
            b.push(&format!("{prefix}param_id = ")).bind(*id);
        }
        ids => {
            b.push(&format!("{prefix}param_id IN "));
            bind_list(b, ids.iter().map(|id| SqlValue::Int(*id)));
        }
    }
    if let Some(target_type) = &rows.target_type {
        b.push(&format!(" AND {prefix}target_type = "))
            .bind(target_type.as_str());
    }
}

/// The reference rows an `_include`/`_revinclude` of `code` follows: one parameter's, or for
/// `*` every reference parameter's (the rows a sharing parameter reads are among those).
fn include_rows(inner: &Inner, source_type: &str, code: &str) -> ParamRows {
    if code != "*" {
        return inner.param_rows(source_type, code);
    }
    let indexing = inner.indexing.load();
    let mut ids: Vec<i64> = indexing
        .registry
        .params(source_type)
        .filter(|p| p.param_type == ParamType::Reference)
        .filter_map(|p| inner.param_id(source_type, &p.code))
        .collect();
    ids.sort_unstable();
    ParamRows {
        ids,
        target_type: None,
    }
}

fn bind_list(b: &mut SqlBuilder, values: impl IntoIterator<Item = SqlValue>) {
    b.push("(");
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            b.push(", ");
        }
        b.bind(v);
    }
    b.push(")");
}

fn includes(
    inner: &Inner,
    conn: &mut dyn Conn,
    query: &SearchQuery,
    matches: &[(i64, StoredResource)],
) -> Result<Vec<StoredResource>, StoreError> {
    if (query.include.is_empty() && query.revinclude.is_empty()) || matches.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen: HashSet<i64> = matches.iter().map(|(rid, _)| *rid).collect();
    let mut included: Vec<(i64, StoredResource)> = Vec::new();
    let mut frontier: Vec<(i64, String, String)> = matches
        .iter()
        .map(|(rid, r)| (*rid, r.resource_type.clone(), r.id.clone()))
        .collect();
    for round in 0..MAX_INCLUDE_ITERATIONS {
        let forward = query.include.iter().map(|i| (false, i));
        let reverse = query.revinclude.iter().map(|i| (true, i));
        let mut next_frontier = Vec::new();
        for (reverse, include) in forward
            .chain(reverse)
            .filter(|(_, i)| round == 0 || i.iterate)
        {
            // Once the page has all it may include, no more statements run.
            if included.len() >= MAX_INCLUDED_RESOURCES {
                break;
            }
            let found = if reverse {
                reverse_include(inner, conn, include, &frontier)?
            } else {
                forward_include(inner, conn, include, &frontier)?
            };
            for (rid, resource) in found {
                if included.len() >= MAX_INCLUDED_RESOURCES {
                    break;
                }
                if seen.insert(rid) {
                    next_frontier.push((rid, resource.resource_type.clone(), resource.id.clone()));
                    included.push((rid, resource));
                }
            }
        }
        frontier = next_frontier;
        if frontier.is_empty() {
            break;
        }
    }
    Ok(included.into_iter().map(|(_, r)| r).collect())
}

fn forward_include(
    inner: &Inner,
    conn: &mut dyn Conn,
    include: &Include,
    sources: &[(i64, String, String)],
) -> Result<Vec<(i64, StoredResource)>, StoreError> {
    let mut out = Vec::new();
    let mut types: Vec<&str> = sources.iter().map(|(_, t, _)| t.as_str()).collect();
    types.sort_unstable();
    types.dedup();
    for source_type in types {
        if include.source_type != "*" && include.source_type != source_type {
            continue;
        }
        let param_rows = include_rows(inner, source_type, &include.param);
        if param_rows.ids.is_empty() {
            continue;
        }
        let rids = sources
            .iter()
            .filter(|(_, t, _)| t == source_type)
            .map(|(rid, _, _)| SqlValue::Int(*rid));
        let mut b = SqlBuilder::new(conn.dialect());
        b.push("SELECT DISTINCT r.rid, r.res_type, r.id, r.version, r.last_updated, v.content FROM idx_reference ref JOIN resources r ON r.res_type = ref.target_type AND r.id = ref.target_id JOIN versions v ON v.seq = r.current_seq WHERE r.deleted = 0 AND ref.rid IN ");
        bind_list(&mut b, rids);
        b.push(" AND ");
        rows_sql(&mut b, &param_rows, "ref.");
        if let Some(target) = &include.target_type {
            b.push(" AND r.res_type = ").bind(target.as_str());
        }
        // No statement reads more than a page may include, however many rows refer.
        b.push(" ORDER BY r.rid LIMIT ")
            .count(MAX_INCLUDED_RESOURCES as u64);
        out.extend(conn.query(&b.sql, &b.params)?.into_iter().map(to_stored));
    }
    Ok(out)
}

fn reverse_include(
    inner: &Inner,
    conn: &mut dyn Conn,
    include: &Include,
    targets: &[(i64, String, String)],
) -> Result<Vec<(i64, StoredResource)>, StoreError> {
    if include.source_type == "*" {
        return Ok(Vec::new());
    }
    let param_rows = include_rows(inner, &include.source_type, &include.param);
    if param_rows.ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut types: Vec<&str> = targets.iter().map(|(_, t, _)| t.as_str()).collect();
    types.sort_unstable();
    types.dedup();
    for target_type in types {
        if include
            .target_type
            .as_deref()
            .is_some_and(|t| t != target_type)
        {
            continue;
        }
        let ids = targets
            .iter()
            .filter(|(_, t, _)| t == target_type)
            .map(|(_, _, id)| SqlValue::Text(id.clone()));
        let mut b = SqlBuilder::new(conn.dialect());
        b.push("SELECT DISTINCT r.rid, r.res_type, r.id, r.version, r.last_updated, v.content FROM idx_reference ref JOIN resources r ON r.rid = ref.rid JOIN versions v ON v.seq = r.current_seq WHERE r.deleted = 0 AND r.res_type = ")
            .bind(include.source_type.as_str())
            .push(" AND ");
        rows_sql(&mut b, &param_rows, "ref.");
        b.push(" AND ref.target_type = ")
            .bind(target_type)
            .push(" AND ref.target_id IN ");
        bind_list(&mut b, ids);
        b.push(" ORDER BY r.rid LIMIT ")
            .count(MAX_INCLUDED_RESOURCES as u64);
        out.extend(conn.query(&b.sql, &b.params)?.into_iter().map(to_stored));
    }
    Ok(out)
}

pub(crate) fn everything(
    conn: &mut dyn Conn,
    patient_id: &str,
    since_ms: Option<i64>,
    types: &[String],
    count: usize,
    cursor: Option<&str>,
) -> Result<SearchResult, StoreError> {
    let cursor = cursor.map(KeyCursor::parse).transpose()?;
    let direction = cursor.map_or(Direction::After, |c| c.direction);
    let mut b = SqlBuilder::new(conn.dialect());
    b.push(SELECT_RESOURCE)
        .push(" JOIN compartment c ON c.rid = r.rid WHERE c.patient_id = ")
        .bind(patient_id)
        .push(" AND r.deleted = 0");
    if let Some(since) = since_ms {
        b.push(" AND r.last_updated >= ").bind(since);
    }
    if !types.is_empty() {
        b.push(" AND r.res_type IN ");
        bind_list(&mut b, types.iter().map(|t| SqlValue::Text(t.clone())));
    }
    key_page_sql(&mut b, "r.rid", false, cursor, count);
    let rows = conn.query(&b.sql, &b.params)?;
    let mut matches: Vec<(i64, StoredResource)> = rows.into_iter().map(to_stored).collect();
    let (next, previous) = cut_page(&mut matches, count, direction, cursor.is_some());
    let cursor_at = |direction, row: Option<&(i64, StoredResource)>| {
        row.map(|(rid, _)| KeyCursor::encode(direction, *rid))
    };
    let mut result = SearchResult::default();
    if next {
        result.next_cursor = cursor_at(Direction::After, matches.last());
    }
    if previous {
        result.previous_cursor = cursor_at(Direction::Before, matches.first());
    }
    result.included = referenced_outside(conn, patient_id, since_ms, types, &matches)?;
    result.matches = matches.into_iter().map(|(_, r)| r).collect();
    Ok(result)
}

/// The resources an `$everything` page's resources refer to that are not in the patient's
/// compartment themselves (the GP, the organisations, the medications, the locations), of
/// `types` when given and changed since `since_ms` when given; at most
/// [`MAX_INCLUDED_RESOURCES`]. Resources of the compartment come as matches on their own page.
fn referenced_outside(
    conn: &mut dyn Conn,
    patient_id: &str,
    since_ms: Option<i64>,
    types: &[String],
    page: &[(i64, StoredResource)],
) -> Result<Vec<StoredResource>, StoreError> {
    if page.is_empty() {
        return Ok(Vec::new());
    }
    let mut b = SqlBuilder::new(conn.dialect());
    b.push("SELECT DISTINCT r.rid, r.res_type, r.id, r.version, r.last_updated, v.content FROM idx_reference ref JOIN resources r ON r.res_type = ref.target_type AND r.id = ref.target_id JOIN versions v ON v.seq = r.current_seq WHERE r.deleted = 0 AND ref.rid IN ");
    bind_list(&mut b, page.iter().map(|(rid, _)| SqlValue::Int(*rid)));
    b.push(" AND NOT EXISTS (SELECT 1 FROM compartment c WHERE c.rid = r.rid AND c.patient_id = ")
        .bind(patient_id)
        .push(")");
    if let Some(since) = since_ms {
        b.push(" AND r.last_updated >= ").bind(since);
    }
    if !types.is_empty() {
        b.push(" AND r.res_type IN ");
        bind_list(&mut b, types.iter().map(|t| SqlValue::Text(t.clone())));
    }
    b.push(" ORDER BY r.rid LIMIT ")
        .count(MAX_INCLUDED_RESOURCES as u64);
    Ok(conn
        .query(&b.sql, &b.params)?
        .into_iter()
        .map(|row| to_stored(row).1)
        .collect())
}

pub(crate) fn counts(conn: &mut dyn Conn) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = conn.query(
        "SELECT res_type, COUNT(*) FROM resources WHERE deleted = 0 GROUP BY res_type ORDER BY res_type",
        &[],
    )?;
    Ok(rows
        .into_iter()
        .map(|mut r| (r[0].take_text(), r[1].int()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys() -> Vec<SortKey> {
        vec![
            SortKey::LastUpdated { descending: true },
            SortKey::Id { descending: false },
        ]
    }

    #[test]
    fn cursors_round_trip_and_refuse_other_sorts() {
        let values = [
            SqlValue::Int(1_700_000_000_000),
            SqlValue::Text("abc".into()),
        ];
        for direction in [Direction::After, Direction::Before] {
            let text = Cursor::encode(direction, &values, 42);
            assert_eq!(
                Cursor::parse(&text, &keys()).unwrap(),
                Cursor {
                    direction,
                    sort_values: values.to_vec(),
                    rid: 42
                }
            );
            assert!(
                Cursor::parse(&text, &keys()[..1]).is_err(),
                "too many values"
            );
        }
        // The right number of values, of the wrong kinds: text for `_lastUpdated`.
        let swapped = Cursor::encode(
            Direction::After,
            &[SqlValue::Text("abc".into()), SqlValue::Int(1)],
            42,
        );
        assert!(Cursor::parse(&swapped, &keys()).is_err());
        // `_id` and `_lastUpdated` are never NULL.
        let null = Cursor::encode(Direction::After, &[SqlValue::Null, SqlValue::Null], 42);
        assert!(Cursor::parse(&null, &keys()).is_err());
    }

    #[test]
    fn key_cursors_round_trip_and_refuse_the_rest() {
        for direction in [Direction::After, Direction::Before] {
            let text = KeyCursor::encode(direction, -7);
            assert_eq!(
                KeyCursor::parse(&text).unwrap(),
                KeyCursor { direction, key: -7 }
            );
        }
        for bad in ["", "n", "r12", "n1x", "p 1", "n99999999999999999999", "é1"] {
            assert!(KeyCursor::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cut_pages_get_the_links_of_their_direction() {
        // (rows read, direction, through a cursor) -> (page, next, previous)
        let cases = [
            (
                vec![1, 2, 3],
                Direction::After,
                false,
                vec![1, 2],
                true,
                false,
            ),
            (
                vec![1, 2],
                Direction::After,
                false,
                vec![1, 2],
                false,
                false,
            ),
            (vec![1, 2], Direction::After, true, vec![1, 2], false, true),
            (
                vec![3, 2, 1],
                Direction::Before,
                true,
                vec![2, 3],
                true,
                true,
            ),
            (vec![2], Direction::Before, true, vec![2], true, false),
        ];
        for (mut rows, direction, from_cursor, page, next, previous) in cases {
            let links = cut_page(&mut rows, 2, direction, from_cursor);
            assert_eq!((rows, links), (page, (next, previous)));
        }
    }

    proptest! {
        /// Any text is a cursor or a clear error, never a panic.
        #[test]
        fn any_text_parses_or_is_refused(text in "\\PC{0,80}") {
            let _ = Cursor::parse(&text, &keys());
            let _ = KeyCursor::parse(&text);
        }

        /// Any bytes behind a valid prefix, too.
        #[test]
        fn any_payload_parses_or_is_refused(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Cursor::parse(&format!("n{}", URL_SAFE_NO_PAD.encode(&bytes)), &keys());
        }
    }
}
