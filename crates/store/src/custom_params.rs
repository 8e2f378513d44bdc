//! Search parameters as data: the `SearchParameter` resources stored in the store extend the
//! parameters it indexes, and a new or changed one is reindexed over the existing resources
//! in the background.
//!
//! The store's [`Indexing`] is swapped whole when the stored SearchParameters change (after a
//! write that touched one, and when the store opens). It holds two registries: what writes
//! index (the built-in parameters and every usable stored one) and what searches see (the
//! built-ins and the stored ones whose index rows are complete). A parameter is *pending*
//! from the swap that adds it until its reindex is done: writes index it at once, searches
//! treat it as unknown (a lenient search says so, a strict one is refused) until every
//! existing resource has its rows. The reindex runs on a thread of its own in batches of
//! [`REINDEX_BATCH_RESOURCES`], each a short transaction on the writer connection, so writes
//! interleave with it and reads are never blocked; a batch deletes the parameter's rows of
//! its resources and writes them again, so a reindex cut short by a crash is simply run again
//! at the next start (the table `custom_search_params` records which parameters are done,
//! with a fingerprint of their definition).
//!
//! A stored SearchParameter is used for each of its base types whose code no built-in
//! parameter takes (built-ins are never replaced), when its expression compiles
//! ([`zorgnet_fhir::search::SearchRegistry::add_search_parameter`]); one with status `retired`
//! is not used. Deleting it, or changing it, removes its rows.
//! What it is not: a FHIRPath engine for arbitrary expressions (the compiled path forms only),
//! or a way to change the built-in R4 parameters.

use crate::write::{self, PARAM_TABLES};
use crate::{Inner, ParamRows, StoreError, shared};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use zorgnet_db::sql::Conn;
use zorgnet_fhir::search::SearchRegistry;

/// Resources reindexed per writer transaction.
pub const REINDEX_BATCH_RESOURCES: usize = 500;
/// The resource type whose instances define search parameters.
pub const SEARCH_PARAMETER: &str = "SearchParameter";

/// The parameters a store indexes and searches, swapped whole when they change.
pub(crate) struct Indexing {
    /// What searches see: the built-ins and the stored parameters whose rows are complete.
    pub(crate) registry: Arc<SearchRegistry>,
    /// What writes index: the built-ins and every usable stored parameter.
    pub(crate) writing: SearchRegistry,
    /// (resource type, code) → param_id, for every parameter with rows of its own.
    pub(crate) param_ids: HashMap<String, HashMap<String, i64>>,
    /// (resource type, code) → the rows a search on it reads.
    pub(crate) param_rows: HashMap<String, HashMap<String, ParamRows>>,
    /// The stored parameters, by (resource type, code).
    pub(crate) custom: BTreeMap<(String, String), CustomParam>,
    /// The stored parameters not used, and why.
    pub(crate) unused: Vec<UnusedParam>,
}

/// A stored SearchParameter the store does not use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnusedParam {
    /// Its canonical URL.
    pub url: String,
    /// Its code.
    pub code: String,
    /// Why it is not used.
    pub reason: String,
}

/// A stored SearchParameter as it applies to one resource type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CustomParam {
    /// Its canonical URL.
    pub(crate) url: String,
    /// What it is defined as (type, expression, URL): a change means a reindex.
    pub(crate) fingerprint: String,
    /// Whether its rows are complete.
    pub(crate) ready: bool,
}

/// Where the reindex of one parameter stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReindexStatus {
    /// The resource type.
    pub resource_type: String,
    /// The parameter's code.
    pub code: String,
    /// The SearchParameter's canonical URL.
    pub url: String,
    /// Whether searches use it: its rows are complete.
    pub ready: bool,
    /// Resources of the type reindexed so far (while pending).
    pub done: u64,
}

/// The background reindex of a store.
#[derive(Default)]
pub(crate) struct Reindexer {
    running: AtomicBool,
    /// Resources done per (type, code) of the reindex under way.
    progress: std::sync::Mutex<HashMap<(String, String), u64>>,
}

/// Special search parameters the store evaluates by a definition of its own: (url, type,
/// expression). Nictiz' `period-of-use` searches the period of use of MP9's medication
/// building blocks as a date, a Period with one bound completed by its
/// `ext-TimeInterval.Duration` (see `zorgnet_fhir::search::extract`).
const SPECIAL_PARAMETERS: [(&str, &str, &str); 1] = [(
    "http://nictiz.nl/fhir/SearchParameter/period-of-use",
    "date",
    "MedicationRequest.extension('http://nictiz.nl/fhir/StructureDefinition/ext-TimeInterval.Period').value \
     | MedicationDispense.extension('http://nictiz.nl/fhir/StructureDefinition/ext-TimeInterval.Period').value \
     | MedicationStatement.effective",
)];

/// A stored definition as the store evaluates it: a known special parameter gets the type
/// and expression of [`SPECIAL_PARAMETERS`].
fn effective_definition(mut definition: Value) -> Value {
    let url = definition["url"].as_str().unwrap_or_default();
    if let Some((_, param_type, expression)) = SPECIAL_PARAMETERS.iter().find(|(u, _, _)| *u == url)
    {
        definition["type"] = Value::from(*param_type);
        definition["expression"] = Value::from(*expression);
    }
    definition
}

/// The current, not deleted SearchParameter resources.
fn stored_definitions(conn: &mut dyn Conn) -> Result<Vec<Value>, StoreError> {
    let d = conn.dialect();
    let sql = format!(
        "SELECT v.content FROM resources r JOIN versions v ON v.seq = r.current_seq \
         WHERE r.res_type = {} AND r.deleted = 0",
        d.placeholder(1)
    );
    Ok(conn
        .query(&sql, &[SEARCH_PARAMETER.into()])?
        .into_iter()
        .filter_map(|mut row| serde_json::from_str(&row[0].take_text()).ok())
        .collect())
}

/// What the stored definitions come to.
struct Usable {
    /// (type, code) → (url, fingerprint) of every usable stored parameter.
    params: BTreeMap<(String, String), (String, String)>,
    /// The registry that indexes them beside the built-ins.
    writing: SearchRegistry,
    /// The others, and why.
    unused: Vec<UnusedParam>,
}

/// Sorts the stored definitions into those used beside `base` and those not.
fn usable(base: &SearchRegistry, definitions: &[Value]) -> Usable {
    let mut writing = base.clone();
    let mut usable = BTreeMap::new();
    let mut unused = Vec::new();
    for definition in definitions {
        let url = definition["url"].as_str().unwrap_or_default().to_string();
        let code = definition["code"].as_str().unwrap_or_default().to_string();
        let mut not_used = |reason: String| {
            unused.push(UnusedParam {
                url: url.clone(),
                code: code.clone(),
                reason,
            })
        };
        if definition["status"] == "retired" {
            not_used("it is retired".into());
            continue;
        }
        if definition["type"] == "special" || definition["type"] == "composite" {
            not_used(format!(
                "parameters of type {} are not evaluated from data",
                definition["type"]
            ));
            continue;
        }
        let fingerprint = format!(
            "{url}|{}|{}",
            definition["type"].as_str().unwrap_or_default(),
            definition["expression"].as_str().unwrap_or_default()
        );
        let code = code.as_str();
        // Only the base types whose code is free: a built-in is never replaced.
        let mut trial = SearchRegistry::default();
        let types = match trial.add_search_parameter(definition) {
            Ok(types) => types,
            Err(e) => {
                not_used(e);
                continue;
            }
        };
        let free: Vec<String> = types
            .into_iter()
            .filter(|t| base.get(t, code).is_none())
            .filter(|t| !usable.contains_key(&(t.clone(), code.to_string())))
            .collect();
        if free.is_empty() {
            not_used(format!(
                "the code '{code}' is taken on each of its base types by a built-in or \
                 another stored parameter"
            ));
            continue;
        }
        let mut narrowed = definition.clone();
        narrowed["base"] = Value::from(free.clone());
        if writing.add_search_parameter(&narrowed).is_ok() {
            for t in free {
                usable.insert((t, code.to_string()), (url.clone(), fingerprint.clone()));
            }
        }
    }
    Usable {
        params: usable,
        writing,
        unused,
    }
}

/// Reads the stored parameters and their state, drops the rows of parameters no longer
/// stored or changed, and builds the indexing. Runs on the writer connection.
pub(crate) fn build(conn: &mut dyn Conn, base: &SearchRegistry) -> Result<Indexing, StoreError> {
    let definitions: Vec<Value> = stored_definitions(conn)?
        .into_iter()
        .map(effective_definition)
        .collect();
    let Usable {
        params: usable,
        writing,
        unused,
    } = usable(base, &definitions);
    let known = zorgnet_db::in_transaction(conn, |conn| {
        let mut known: HashMap<(String, String), (String, bool)> = HashMap::new();
        for mut row in conn.query(
            "SELECT res_type, code, fingerprint, ready FROM custom_search_params",
            &[],
        )? {
            let ready = row[3].int() == 1;
            let fingerprint = row[2].take_text();
            known.insert(
                (row[0].take_text(), row[1].take_text()),
                (fingerprint, ready),
            );
        }
        let d = conn.dialect();
        let stale: Vec<(String, String)> = known
            .iter()
            .filter(|(key, (fingerprint, _))| {
                usable.get(*key).is_none_or(|(_, f)| f != fingerprint)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for (resource_type, code) in &stale {
            let ids = conn.query(
                &format!(
                    "SELECT param_id FROM search_params WHERE res_type = {} AND code = {}",
                    d.placeholder(1),
                    d.placeholder(2)
                ),
                &[resource_type.as_str().into(), code.as_str().into()],
            )?;
            for id in ids {
                for table in PARAM_TABLES {
                    conn.execute(
                        &format!("DELETE FROM {table} WHERE param_id = {}", d.placeholder(1)),
                        &[id[0].clone()],
                    )?;
                }
            }
            conn.execute(
                &format!(
                    "DELETE FROM custom_search_params WHERE res_type = {} AND code = {}",
                    d.placeholder(1),
                    d.placeholder(2)
                ),
                &[resource_type.as_str().into(), code.as_str().into()],
            )?;
            known.remove(&(resource_type.clone(), code.clone()));
        }
        for ((resource_type, code), (_, fingerprint)) in &usable {
            if let std::collections::hash_map::Entry::Vacant(slot) =
                known.entry((resource_type.clone(), code.clone()))
            {
                conn.execute(
                    &format!(
                        "INSERT INTO custom_search_params (res_type, code, fingerprint, ready) \
                         VALUES ({}, {}, {}, 0)",
                        d.placeholder(1),
                        d.placeholder(2),
                        d.placeholder(3)
                    ),
                    &[
                        resource_type.as_str().into(),
                        code.as_str().into(),
                        fingerprint.as_str().into(),
                    ],
                )?;
                slot.insert((fingerprint.clone(), false));
            }
        }
        Ok::<_, StoreError>(known)
    })?;
    let custom: BTreeMap<(String, String), CustomParam> = usable
        .into_iter()
        .map(|(key, (url, fingerprint))| {
            let ready = known.get(&key).is_some_and(|(_, ready)| *ready);
            (
                key,
                CustomParam {
                    url,
                    fingerprint,
                    ready,
                },
            )
        })
        .collect();
    let mut searched = base.clone();
    for definition in &definitions {
        let Some(code) = definition["code"].as_str() else {
            continue;
        };
        let ready: Vec<String> = custom
            .iter()
            .filter(|((_, c), p)| {
                c == code && p.ready && p.url == definition["url"].as_str().unwrap_or_default()
            })
            .map(|((t, _), _)| t.clone())
            .collect();
        if ready.is_empty() {
            continue;
        }
        let mut narrowed = definition.clone();
        narrowed["base"] = Value::from(ready);
        let _ = searched.add_search_parameter(&narrowed);
    }
    let mut indexing = indexing(conn, searched, writing, custom)?;
    indexing.unused = unused;
    Ok(indexing)
}

/// The param_ids and rows of `writing`'s parameters.
fn indexing(
    conn: &mut dyn Conn,
    searched: SearchRegistry,
    writing: SearchRegistry,
    custom: BTreeMap<(String, String), CustomParam>,
) -> Result<Indexing, StoreError> {
    let wanted: Vec<(String, String)> = writing
        .all_params()
        .map(|p| (p.resource_type.clone(), p.code.clone()))
        .collect();
    let ids = write::ensure_param_ids(conn, &wanted)?;
    let sharing = shared::sharing(&writing);
    let mut param_ids: HashMap<String, HashMap<String, i64>> = HashMap::new();
    let mut param_rows: HashMap<String, HashMap<String, ParamRows>> = HashMap::new();
    for (resource_type, code) in &wanted {
        let Some(id) = ids.get(&(resource_type.clone(), code.clone())) else {
            continue;
        };
        let rows = match sharing.get(resource_type).and_then(|m| m.get(code)) {
            Some(sharing) => ParamRows {
                ids: sharing
                    .codes
                    .iter()
                    .filter_map(|c| ids.get(&(resource_type.clone(), c.clone())).copied())
                    .collect(),
                target_type: sharing.target_type.clone(),
            },
            None => {
                param_ids
                    .entry(resource_type.clone())
                    .or_default()
                    .insert(code.clone(), *id);
                ParamRows {
                    ids: vec![*id],
                    target_type: None,
                }
            }
        };
        param_rows
            .entry(resource_type.clone())
            .or_default()
            .insert(code.clone(), rows);
    }
    Ok(Indexing {
        registry: Arc::new(searched),
        writing,
        param_ids,
        param_rows,
        custom,
        unused: Vec::new(),
    })
}

/// Rebuilds the indexing from what is stored now, swaps it in, and starts the reindex of
/// pending parameters. Runs on the writer connection, so no write comes between the build
/// and the swap.
pub(crate) fn refresh(inner: &Arc<Inner>) -> Result<(), StoreError> {
    let pending = inner.with_writer(|conn| {
        let indexing = build(conn, &inner.base)?;
        let pending = indexing.custom.values().any(|p| !p.ready);
        inner.indexing.store(Arc::new(indexing));
        Ok(pending)
    })?;
    if pending {
        start_reindex(inner);
    }
    Ok(())
}

/// Starts the background reindex unless it runs already.
pub(crate) fn start_reindex(inner: &Arc<Inner>) {
    if inner.reindexer.running.swap(true, Ordering::SeqCst) {
        return;
    }
    let inner = inner.clone();
    let started = std::thread::Builder::new()
        .name("zorgnet-reindex".into())
        .spawn(move || {
            loop {
                if let Err(e) = reindex_pending(&inner) {
                    tracing::error!(error = %e, "reindexing search parameters failed");
                    break;
                }
                inner.reindexer.running.store(false, Ordering::SeqCst);
                // A parameter that became pending after the last look starts another round,
                // unless another thread took it on.
                let more = inner.indexing.load().custom.values().any(|p| !p.ready);
                if !more || inner.reindexer.running.swap(true, Ordering::SeqCst) {
                    break;
                }
            }
        });
    if let Err(e) = started {
        tracing::error!(error = %e, "could not start the reindex thread");
    }
}

/// Reindexes every pending parameter, type by type, then marks them ready and swaps in the
/// indexing in which searches use them.
fn reindex_pending(inner: &Arc<Inner>) -> Result<(), StoreError> {
    loop {
        let indexing = inner.indexing.load_full();
        let mut pending: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for ((resource_type, code), param) in &indexing.custom {
            if !param.ready {
                pending
                    .entry(resource_type.clone())
                    .or_default()
                    .push((code.clone(), param.fingerprint.clone()));
            }
        }
        let Some((resource_type, codes)) = pending.into_iter().next() else {
            return Ok(());
        };
        let code_set: HashSet<String> = codes.iter().map(|(c, _)| c.clone()).collect();
        let mut after = -1i64;
        loop {
            let batch = inner
                .with_writer(|conn| reindex_batch(inner, conn, &resource_type, &code_set, after))?;
            match batch {
                Some((last, count)) => {
                    after = last;
                    if let Ok(mut progress) = inner.reindexer.progress.lock() {
                        for code in &code_set {
                            *progress
                                .entry((resource_type.clone(), code.clone()))
                                .or_default() += count;
                        }
                    }
                }
                None => break,
            }
        }
        inner.with_writer(|conn| {
            let d = conn.dialect();
            for (code, fingerprint) in &codes {
                conn.execute(
                    &format!(
                        "UPDATE custom_search_params SET ready = 1 WHERE res_type = {} \
                         AND code = {} AND fingerprint = {}",
                        d.placeholder(1),
                        d.placeholder(2),
                        d.placeholder(3)
                    ),
                    &[
                        resource_type.as_str().into(),
                        code.as_str().into(),
                        fingerprint.as_str().into(),
                    ],
                )?;
            }
            let indexing = build(conn, &inner.base)?;
            inner.indexing.store(Arc::new(indexing));
            Ok(())
        })?;
        if let Ok(mut progress) = inner.reindexer.progress.lock() {
            for code in &code_set {
                progress.remove(&(resource_type.clone(), code.clone()));
            }
        }
    }
}

/// Writes the rows of `codes` for the next [`REINDEX_BATCH_RESOURCES`] current resources of
/// `resource_type` after `rid` `after`: their last rid and how many, or `None` when none are
/// left.
fn reindex_batch(
    inner: &Inner,
    conn: &mut dyn Conn,
    resource_type: &str,
    codes: &HashSet<String>,
    after: i64,
) -> Result<Option<(i64, u64)>, StoreError> {
    let indexing = inner.indexing.load_full();
    let ids: Vec<i64> = codes
        .iter()
        .filter_map(|code| indexing.param_id(resource_type, code))
        .collect();
    zorgnet_db::in_transaction(conn, |conn| {
        let d = conn.dialect();
        let rows = conn.query(
            &format!(
                "SELECT r.rid, v.content FROM resources r JOIN versions v ON v.seq = r.current_seq \
                 WHERE r.res_type = {} AND r.deleted = 0 AND r.rid > {} ORDER BY r.rid LIMIT {}",
                d.placeholder(1),
                d.placeholder(2),
                REINDEX_BATCH_RESOURCES
            ),
            &[resource_type.into(), after.into()],
        )?;
        let Some(last) = rows.last().map(|row| row[0].int()) else {
            return Ok(None);
        };
        let count = rows.len() as u64;
        // Rows a write made since the parameter was added: made again below. The param_ids
        // are the type's own, so the rid range holds no other type's rows of them.
        for id in &ids {
            for table in PARAM_TABLES {
                conn.execute(
                    &format!(
                        "DELETE FROM {table} WHERE param_id = {} AND rid > {} AND rid <= {}",
                        d.placeholder(1),
                        d.placeholder(2),
                        d.placeholder(3)
                    ),
                    &[(*id).into(), after.into(), last.into()],
                )?;
            }
        }
        for mut row in rows {
            let rid = row[0].int();
            let Ok(resource) = serde_json::from_str::<Value>(&row[1].take_text()) else {
                continue;
            };
            let rows = write::index_rows(&indexing, resource_type, &resource, |code| {
                codes.contains(code)
            });
            write::write_index_rows(inner, conn, rid, rows)?;
        }
        Ok(Some((last, count)))
    })
}

impl Indexing {
    /// The param_id of the rows `code` writes for `resource_type`.
    pub(crate) fn param_id(&self, resource_type: &str, code: &str) -> Option<i64> {
        self.param_ids.get(resource_type)?.get(code).copied()
    }
}

/// The stored parameters not used, and why.
pub(crate) fn unused(inner: &Inner) -> Vec<UnusedParam> {
    inner.indexing.load().unused.clone()
}

/// Where every stored parameter stands.
pub(crate) fn status(inner: &Inner) -> Vec<ReindexStatus> {
    let indexing = inner.indexing.load();
    let progress = inner
        .reindexer
        .progress
        .lock()
        .map(|p| p.clone())
        .unwrap_or_default();
    indexing
        .custom
        .iter()
        .map(|((resource_type, code), param)| ReindexStatus {
            resource_type: resource_type.clone(),
            code: code.clone(),
            url: param.url.clone(),
            ready: param.ready,
            done: progress
                .get(&(resource_type.clone(), code.clone()))
                .copied()
                .unwrap_or(0),
        })
        .collect()
}
