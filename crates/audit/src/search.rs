//! Searching the access log: by patient, agent, time and entity, in sequence order, a page
//! at a time.
//!
//! The index (migration 2 of component `audit`, table `audit_blocks`) has one row per
//! complete block of [`BLOCK_RECORDS`] records, written in the transaction of the append
//! that completes the block: a Bloom filter of the Patients its records name, one of their
//! agents (the id: a UZI number, a citizen's `issuer subject`, a system client's id; and the
//! organisation's URA), its records' earliest time, and the latest time of its records and of
//! every record before them (a running maximum, so it never decreases along the log and the
//! first block that can hold a record at or after a time is found by bisection). Most
//! appends write nothing to it, and one that completes a block reads that block's earlier
//! records back and writes one row: an index keyed by Patient would write a page per record,
//! at random places, and cost the log most of its append rate. A search reads the filters of
//! the blocks in order (6 KiB per block), reads only the records of blocks whose filter may
//! hold what it asks (skipping without parsing the records that do not name it), and reads
//! the records after the last complete block directly.
//!
//! The index is no part of the chain and `verify` does not check it: a search takes only
//! candidates from it and keeps a record when the record itself, parsed, matches the query.
//! A changed index can hide records from a search but never add one that does not match
//! (and a changed record is what `verify` catches). Records appended before the index
//! existed (a log of an earlier build) are read directly. A record read that cannot be read
//! back (`AuditError::Damaged`) fails the search, never the append that indexes its block.
//!
//! A page examines at most [`MAX_RECORDS_EXAMINED_PER_PAGE`] records and
//! [`MAX_BLOCKS_PER_PAGE`] filters, so every search costs a bounded amount whatever it asks;
//! a page that stops there, or is full, says where the next one starts ([`LogPage::next`]).
//!
//! What it is not: a policy (who may search what is the caller's to decide and to express in
//! [`LogQuery::within`]), or FHIR (the node turns queries and pages into FHIR's words).

use crate::log::{AuditError, AuditLog, insert_rows, record_of, seq_of, seq_value};
use crate::packed::RECORD_COLUMNS;
use crate::record::AuditRecord;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeSet;
use zorgnet_db::sql::{Conn, Dialect, SqlValue};

/// Most records one page holds.
pub const MAX_RECORDS_PER_PAGE: usize = 1_000;
/// Most records one page reads and compares with the query: the bound on a search's cost
/// when few records match (a few milliseconds of parsing).
pub const MAX_RECORDS_EXAMINED_PER_PAGE: usize = 10_000;
/// Most block filters one page reads: 20 million records' worth, 80 MiB of filters.
pub const MAX_BLOCKS_PER_PAGE: usize = 20_000;
/// Records per block of the index: a filter's reach, and what a search reads when the
/// filter says a block may hold what it asks.
pub const BLOCK_RECORDS: u64 = 1_024;
/// Bytes of a block's filter of Patients: 32 bits per record, so that with
/// [`FILTER_HASHES`] a block of records naming one Patient each is a false match about
/// once in 100,000 (a block of records naming two, once in 2,000).
const PATIENT_FILTER_BYTES: usize = 4_096;
/// Bytes of a block's filter of agents: a block holds the accesses of far fewer agents
/// than Patients.
const AGENT_FILTER_BYTES: usize = 2_048;
/// Bits a key sets in a filter.
const FILTER_HASHES: u64 = 8;
/// Records read per query; a tenth of what a page may examine, so a selective search stops
/// early and a broad one takes few round trips.
const CANDIDATES_PER_READ: usize = 1_000;
/// Block filters read per query.
const BLOCKS_PER_READ: usize = 64;
const _: () = assert!(CANDIDATES_PER_READ <= MAX_RECORDS_EXAMINED_PER_PAGE);
const _: () = assert!(CANDIDATES_PER_READ as u64 <= BLOCK_RECORDS);
const _: () = assert!(MAX_RECORDS_PER_PAGE <= MAX_RECORDS_EXAMINED_PER_PAGE);
const _: () = assert!(BLOCKS_PER_READ <= MAX_BLOCKS_PER_PAGE);

/// The largest sequence number a query names (SQL integers are signed 64-bit).
const SEQ_END: u64 = i64::MAX as u64;

/// In which order a search returns records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Oldest first (sequence order).
    #[default]
    Ascending,
    /// Newest first.
    Descending,
}

/// Which agent a search asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentFilter {
    /// The person or system (the record's `agent.id`: a UZI number, a citizen's
    /// `issuer subject`, a system client's id).
    Id(String),
    /// The organisation (the record's `agent.organisation`: its URA).
    Organisation(String),
    /// Either of the two.
    Any(String),
}

impl AgentFilter {
    fn value(&self) -> &str {
        match self {
            AgentFilter::Id(v) | AgentFilter::Organisation(v) | AgentFilter::Any(v) => v,
        }
    }

    fn matches(&self, record: &AuditRecord) -> bool {
        let id = record.agent.id.as_deref();
        let organisation = record.agent.organisation.as_deref();
        match self {
            AgentFilter::Id(v) => id == Some(v),
            AgentFilter::Organisation(v) => organisation == Some(v),
            AgentFilter::Any(v) => id == Some(v) || organisation == Some(v),
        }
    }
}

/// What a record's request must be about: a resource type, or one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityFilter {
    /// The resource type.
    pub resource_type: String,
    /// The resource's id, when one resource is asked for.
    pub id: Option<String>,
}

impl EntityFilter {
    /// `Type` or `Type/id`; `None` for anything else.
    pub fn parse(text: &str) -> Option<EntityFilter> {
        let (resource_type, id) = match text.split_once('/') {
            Some((t, id)) => (t, Some(id)),
            None => (text, None),
        };
        let type_ok = resource_type
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_uppercase())
            && resource_type.chars().all(|c| c.is_ascii_alphanumeric());
        let id_ok = id.is_none_or(|id| {
            !id.is_empty()
                && id.len() <= 64
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        });
        (type_ok && id_ok).then(|| EntityFilter {
            resource_type: resource_type.to_string(),
            id: id.map(str::to_string),
        })
    }

    /// Whether `request` (`METHOD /fhir/path?query`, as a record holds it) is about the
    /// entity: its path names the type (and the id), or, for one resource, a parameter's
    /// value is a reference to it (`subject=Patient/p1`).
    pub fn matches(&self, request: &str) -> bool {
        let target = request.split_once(' ').map_or(request, |(_, t)| t);
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut segments = path
            .trim_start_matches("/fhir")
            .split('/')
            .filter(|s| !s.is_empty());
        let in_path = segments.next() == Some(self.resource_type.as_str())
            && self
                .id
                .as_deref()
                .is_none_or(|id| segments.next() == Some(id));
        if in_path {
            return true;
        }
        let Some(id) = &self.id else {
            return false;
        };
        let reference = format!("{}/{id}", self.resource_type);
        let suffix = format!("/{reference}");
        query
            .split('&')
            .filter_map(|pair| pair.split_once('=').map(|(_, v)| v))
            .flat_map(|value| value.split(','))
            .map(|value| value.replace("%2F", "/").replace("%2f", "/"))
            .any(|value| value == reference || value.ends_with(&suffix))
    }
}

/// What a search asks for; every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Records naming any of these Patients (ids at the source); none: any record.
    pub patients: Vec<String>,
    /// Only records that name at least one Patient and no Patient outside this set (how a
    /// caller confines a search to one person's records, whatever else it asks).
    pub within: Option<BTreeSet<String>>,
    /// Records of this agent.
    pub agent: Option<AgentFilter>,
    /// Records at or after this time, epoch milliseconds.
    pub since_ms: Option<i64>,
    /// Records at or before this time, epoch milliseconds.
    pub until_ms: Option<i64>,
    /// Records whose request is about this entity.
    pub entity: Option<EntityFilter>,
    /// The order of the records.
    pub order: Order,
    /// Where the page starts: after this sequence number in `order` (a previous page's
    /// [`LogPage::next`]).
    pub after: Option<u64>,
    /// Most records on the page (at most [`MAX_RECORDS_PER_PAGE`]).
    pub limit: usize,
}

impl LogQuery {
    /// Whether `record` answers the query.
    pub fn matches(&self, record: &AuditRecord) -> bool {
        let named =
            self.patients.is_empty() || record.patients.iter().any(|p| self.patients.contains(p));
        let within = self.within.as_ref().is_none_or(|allowed| {
            !record.patients.is_empty() && record.patients.iter().all(|p| allowed.contains(p))
        });
        named
            && within
            && self.agent.as_ref().is_none_or(|a| a.matches(record))
            && self.since_ms.is_none_or(|since| record.at_ms >= since)
            && self.until_ms.is_none_or(|until| record.at_ms <= until)
            && self
                .entity
                .as_ref()
                .is_none_or(|e| e.matches(&record.request))
    }

    /// The Patients whose index rows give the candidates, if any.
    fn indexed_patients(&self) -> Vec<String> {
        if !self.patients.is_empty() {
            return self
                .patients
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
        }
        self.within
            .as_ref()
            .map(|w| w.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// A record a search found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its sequence number.
    pub seq: u64,
    /// The record as appended.
    pub json: String,
    /// The record, parsed.
    pub record: AuditRecord,
}

/// One page of a search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPage {
    /// The records, in the query's order.
    pub found: Vec<Found>,
    /// Where the next page starts (its [`LogQuery::after`]), when the search may go on: the
    /// page is full, or it examined [`MAX_RECORDS_EXAMINED_PER_PAGE`] records.
    pub next: Option<u64>,
}

impl AuditLog {
    /// One page of the records that answer `query`. Blocking.
    pub fn search(&self, query: &LogQuery) -> Result<LogPage, AuditError> {
        let limit = query.limit.min(MAX_RECORDS_PER_PAGE);
        if limit == 0 {
            return Ok(LogPage {
                found: Vec::new(),
                next: None,
            });
        }
        self.db.with_reader(|conn| {
            let search = Search::plan(conn, query)?;
            let mut found = Vec::new();
            let (mut examined, mut blocks) = (0, 0);
            let mut cursor = query.after;
            while let Some(chunk) = search.next_chunk(conn, cursor)? {
                for (seq, json) in chunk.records {
                    examined += 1;
                    if let Ok(record) = serde_json::from_str::<AuditRecord>(&json)
                        && query.matches(&record)
                    {
                        found.push(Found { seq, json, record });
                        if found.len() == limit {
                            return Ok(LogPage {
                                found,
                                next: Some(seq),
                            });
                        }
                    }
                    if examined >= MAX_RECORDS_EXAMINED_PER_PAGE {
                        return Ok(LogPage {
                            found,
                            next: Some(seq),
                        });
                    }
                }
                cursor = Some(chunk.last);
                blocks += chunk.blocks;
                if blocks >= MAX_BLOCKS_PER_PAGE {
                    return Ok(LogPage {
                        found,
                        next: cursor,
                    });
                }
            }
            Ok(LogPage { found, next: None })
        })
    }
}

/// Where a region's candidates come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Every record, in sequence order.
    Records,
    /// The records of the blocks whose filters and times can hold a match.
    Blocks,
}

/// What a search reads next: records that may match (those that cannot were left out
/// unparsed), the last sequence number it read past, and how many filters it read.
struct Chunk {
    records: Vec<(u64, String)>,
    last: u64,
    blocks: usize,
}

/// A search's plan: the regions of the log (sequence numbers `[start, end)`) in the order
/// they are read, each with its source, and what a block or record must name.
struct Search {
    order: Order,
    regions: Vec<(u64, u64, Source)>,
    /// The Patients a record must name one of (JSON strings, quoted), if any.
    patients: Vec<String>,
    /// The agent a record must name (a JSON string, quoted), if any.
    agent: Option<String>,
    until_ms: Option<i64>,
}

impl Search {
    fn plan(conn: &mut dyn Conn, query: &LogQuery) -> Result<Search, AuditError> {
        // The blocks indexed: from the first whose row was written (earlier ones filled
        // before the index existed) to the last complete one; the records after it are read
        // directly.
        let rows = conn.query("SELECT MIN(block), MAX(block) FROM audit_blocks", &[])?;
        let indexed = match rows.first().map(|row| (&row[0], &row[1])) {
            Some((first, last)) if !matches!(first, SqlValue::Null) => (
                seq_of(first)?.saturating_mul(BLOCK_RECORDS),
                seq_of(last)?
                    .saturating_add(1)
                    .saturating_mul(BLOCK_RECORDS),
            ),
            _ => (SEQ_END, SEQ_END),
        };
        let start = match query.since_ms {
            Some(since) => first_block_since(conn, since)?
                .map_or(SEQ_END, |block| block.saturating_mul(BLOCK_RECORDS)),
            None => 0,
        }
        .clamp(indexed.0, indexed.1);
        let quoted = |key: &str| serde_json::to_string(key).unwrap_or_else(|_| key.to_string());
        let patients: Vec<String> = query.indexed_patients().iter().map(|p| quoted(p)).collect();
        let agent = query.agent.as_ref().map(|a| quoted(a.value()));
        let source = if patients.is_empty() && agent.is_none() && query.until_ms.is_none() {
            Source::Records
        } else {
            Source::Blocks
        };
        let mut regions = vec![
            (0, indexed.0, Source::Records),
            (start, indexed.1, source),
            (indexed.1, SEQ_END, Source::Records),
        ];
        if query.order == Order::Descending {
            regions.reverse();
        }
        Ok(Search {
            order: query.order,
            regions,
            patients,
            agent,
            until_ms: query.until_ms,
        })
    }

    /// Whether a record's JSON names what the search asks (a cheap test before parsing; the
    /// parsed record is compared with the query after it).
    fn may_match(&self, json: &str) -> bool {
        (self.patients.is_empty() || self.patients.iter().any(|p| json.contains(p.as_str())))
            && self
                .agent
                .as_ref()
                .is_none_or(|a| json.contains(a.as_str()))
    }

    /// Whether a block's filters may hold what the search asks.
    fn may_hold(&self, patients: Option<&[u8]>, agents: Option<&[u8]>) -> bool {
        let unquoted =
            |key: &str| serde_json::from_str::<String>(key).unwrap_or_else(|_| key.to_string());
        let patient = self.patients.is_empty()
            || patients.is_none_or(|filter| {
                self.patients
                    .iter()
                    .any(|p| filter_may_hold(filter, PATIENT_FILTER_BYTES, &unquoted(p)))
            });
        let agent = self.agent.as_ref().is_none_or(|a| {
            agents.is_none_or(|filter| filter_may_hold(filter, AGENT_FILTER_BYTES, &unquoted(a)))
        });
        patient && agent
    }

    /// The next candidates after `cursor` in the search's order; `None` when the search has
    /// ended.
    fn next_chunk(
        &self,
        conn: &mut dyn Conn,
        cursor: Option<u64>,
    ) -> Result<Option<Chunk>, AuditError> {
        for &(start, end, source) in &self.regions {
            let (start, end) = match (self.order, cursor) {
                (_, None) => (start, end),
                (Order::Ascending, Some(c)) => (start.max(c.saturating_add(1)), end),
                (Order::Descending, Some(c)) => (start, end.min(c)),
            };
            if start >= end {
                continue;
            }
            let chunk = match source {
                Source::Records => {
                    let records = records_between(conn, self.order, start, end)?;
                    records.last().map(|&(last, _)| last).map(|last| Chunk {
                        records: records
                            .into_iter()
                            .filter(|(_, json)| self.may_match(json))
                            .collect(),
                        last,
                        blocks: 0,
                    })
                }
                Source::Blocks => self.blocks_chunk(conn, start, end)?,
            };
            if chunk.is_some() {
                return Ok(chunk);
            }
        }
        Ok(None)
    }

    /// The records of the first block in `[start, end)` whose filter may hold a match, or,
    /// when none of the filters read does, a chunk without records past them.
    fn blocks_chunk(
        &self,
        conn: &mut dyn Conn,
        start: u64,
        end: u64,
    ) -> Result<Option<Chunk>, AuditError> {
        let d = conn.dialect();
        let direction = match self.order {
            Order::Ascending => "ASC",
            Order::Descending => "DESC",
        };
        let columns = match (self.patients.is_empty(), self.agent.is_none()) {
            (true, true) => "block, from_ms, NULL, NULL",
            (false, true) => "block, from_ms, patients, NULL",
            (true, false) => "block, from_ms, NULL, agents",
            (false, false) => "block, from_ms, patients, agents",
        };
        let sql = format!(
            "SELECT {columns} FROM audit_blocks WHERE block >= {} AND block <= {} \
             ORDER BY block {direction} LIMIT {BLOCKS_PER_READ}",
            d.placeholder(1),
            d.placeholder(2)
        );
        let rows = conn.query(
            &sql,
            &[
                seq_value(start / BLOCK_RECORDS)?,
                seq_value((end - 1) / BLOCK_RECORDS)?,
            ],
        )?;
        let Some(last_row) = rows.last() else {
            return Ok(None);
        };
        let last_block = seq_of(&last_row[0])?;
        let read = rows.len();
        for mut row in rows {
            let block = seq_of(&row[0])?;
            let early_enough = self.until_ms.is_none_or(|until| row[1].int() <= until);
            let patients = (!self.patients.is_empty()).then(|| row[2].take_blob());
            let agents = self.agent.is_some().then(|| row[3].take_blob());
            if !early_enough || !self.may_hold(patients.as_deref(), agents.as_deref()) {
                continue;
            }
            let from = start.max(block.saturating_mul(BLOCK_RECORDS));
            let to = end.min(block.saturating_add(1).saturating_mul(BLOCK_RECORDS));
            let records = records_between(conn, self.order, from, to)?;
            if let Some(&(last, _)) = records.last() {
                return Ok(Some(Chunk {
                    records: records
                        .into_iter()
                        .filter(|(_, json)| self.may_match(json))
                        .collect(),
                    last,
                    blocks: read,
                }));
            }
        }
        // None of these blocks can hold a match: go on past the last of them.
        let past = match self.order {
            Order::Ascending => last_block
                .saturating_add(1)
                .saturating_mul(BLOCK_RECORDS)
                .saturating_sub(1),
            Order::Descending => last_block.saturating_mul(BLOCK_RECORDS),
        };
        Ok(Some(Chunk {
            records: Vec::new(),
            last: past,
            blocks: read,
        }))
    }
}

/// The first block that can hold a record at or after `since_ms`: the first whose running
/// maximum time reaches it (found by bisection, as the maximum never decreases).
fn first_block_since(conn: &mut dyn Conn, since_ms: i64) -> Result<Option<u64>, AuditError> {
    let sql = format!(
        "SELECT block, to_ms FROM audit_blocks WHERE block >= {} ORDER BY block LIMIT 1",
        conn.dialect().placeholder(1)
    );
    let mut at_or_after = |block: u64| -> Result<Option<(u64, i64)>, AuditError> {
        conn.query(&sql, &[seq_value(block)?])?
            .into_iter()
            .next()
            .map(|row| Ok((seq_of(&row[0])?, row[1].int())))
            .transpose()
    };
    let Some((mut low, _)) = at_or_after(0)? else {
        return Ok(None);
    };
    let mut high = SEQ_END / BLOCK_RECORDS;
    // Invariant: no block below `low` reaches `since_ms`; some block at or after `high`
    // does, or none.
    while low < high {
        let middle = low + (high - low) / 2;
        match at_or_after(middle)? {
            Some((block, to_ms)) if to_ms >= since_ms => high = block.min(high),
            Some((block, _)) => low = block + 1,
            None => high = middle,
        }
    }
    Ok(at_or_after(low)?
        .filter(|&(_, to_ms)| to_ms >= since_ms)
        .map(|(block, _)| block))
}

/// The records in `[start, end)`, at most [`CANDIDATES_PER_READ`], in `order`;
/// [`AuditError::Damaged`] when one cannot be read back.
fn records_between(
    conn: &mut dyn Conn,
    order: Order,
    start: u64,
    end: u64,
) -> Result<Vec<(u64, String)>, AuditError> {
    let d = conn.dialect();
    let direction = match order {
        Order::Ascending => "ASC",
        Order::Descending => "DESC",
    };
    let sql = format!(
        "SELECT seq, {RECORD_COLUMNS} FROM audit_records WHERE seq >= {} AND seq < {} \
         ORDER BY seq {direction} LIMIT {CANDIDATES_PER_READ}",
        d.placeholder(1),
        d.placeholder(2)
    );
    conn.query(&sql, &[seq_value(start)?, seq_value(end)?])?
        .into_iter()
        .map(|mut row| {
            let seq = seq_of(&row[0])?;
            Ok((seq, record_of(seq, &mut row[1..])?))
        })
        .collect()
}

/// The bits `key` sets in a filter of `bytes` bytes (double hashing of a 64-bit FNV-1a
/// hash and its SplitMix64 mix).
fn filter_bits(key: &str, bytes: usize) -> impl Iterator<Item = usize> {
    let mut h1: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.as_bytes() {
        h1 ^= u64::from(*byte);
        h1 = h1.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut h2 = h1.wrapping_add(0x9e37_79b9_7f4a_7c15);
    h2 = (h2 ^ (h2 >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h2 = (h2 ^ (h2 >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h2 = (h2 ^ (h2 >> 31)) | 1;
    let bits = (bytes * 8) as u64;
    (0..FILTER_HASHES).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % bits) as usize)
}

fn filter_insert(filter: &mut [u8], key: &str) {
    for bit in filter_bits(key, filter.len()) {
        filter[bit / 8] |= 1 << (bit % 8);
    }
}

/// Whether a stored filter may hold `key`; a filter of the wrong size may hold anything
/// (the index never hides a record for being damaged).
fn filter_may_hold(filter: &[u8], bytes: usize, key: &str) -> bool {
    filter.len() != bytes
        || filter_bits(key, bytes).all(|bit| filter[bit / 8] & (1 << (bit % 8)) != 0)
}

/// What the index reads of a record: only these fields, borrowed where the JSON allows.
#[derive(Deserialize)]
struct Indexed<'a> {
    at_ms: i64,
    #[serde(borrow)]
    agent: IndexedAgent<'a>,
    #[serde(default, borrow)]
    patients: Vec<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct IndexedAgent<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    organisation: Option<Cow<'a, str>>,
}

/// Indexes every block that `records` (the first of which is `first`) complete, in the
/// append's transaction: a block's row is written once, when its last record is appended,
/// from all its records (those appended before read back), so that an append that
/// completes no block writes nothing and one that does reads and writes one block's worth.
/// A record that is not an [`AuditRecord`] adds nothing (no search matches it), nor does one
/// appended before that cannot be read back (a search that reads it reports it).
pub(crate) fn write_index(
    conn: &mut dyn Conn,
    dialect: Dialect,
    first: u64,
    records: &[String],
) -> Result<(), AuditError> {
    let end = first + records.len() as u64;
    let completed = (first / BLOCK_RECORDS)..(end / BLOCK_RECORDS);
    if completed.is_empty() {
        return Ok(());
    }
    let p = |n| dialect.placeholder(n);
    let earlier = format!(
        "SELECT seq, {RECORD_COLUMNS} FROM audit_records WHERE seq >= {} AND seq < {} \
         ORDER BY seq",
        p(1),
        p(2)
    );
    let before = format!(
        "SELECT to_ms FROM audit_blocks WHERE block < {} ORDER BY block DESC LIMIT 1",
        p(1)
    );
    for block in completed {
        let (start, stop) = (block * BLOCK_RECORDS, (block + 1) * BLOCK_RECORDS);
        let mut read_back = Vec::new();
        if start < first {
            for mut row in conn.query(&earlier, &[seq_value(start)?, seq_value(first)?])? {
                let seq = seq_of(&row[0])?;
                match record_of(seq, &mut row[1..]) {
                    Ok(record) => read_back.push(record),
                    // The append goes on (`verify` names the record); the index leaves it out.
                    Err(e @ AuditError::Damaged { .. }) => {
                        tracing::warn!(error = %e, "the access log's index leaves out a damaged record");
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let appended = records
            .get((start.max(first) - first) as usize..(stop - first) as usize)
            .unwrap_or_default();
        let mut patients = vec![0; PATIENT_FILTER_BYTES];
        let mut agents = vec![0; AGENT_FILTER_BYTES];
        let (mut from_ms, mut to_ms) = (i64::MAX, i64::MIN);
        for record in read_back.iter().chain(appended) {
            let Ok(indexed) = serde_json::from_str::<Indexed>(record) else {
                continue;
            };
            from_ms = from_ms.min(indexed.at_ms);
            to_ms = to_ms.max(indexed.at_ms);
            for patient in &indexed.patients {
                filter_insert(&mut patients, patient);
            }
            for agent in [&indexed.agent.id, &indexed.agent.organisation]
                .into_iter()
                .flatten()
            {
                filter_insert(&mut agents, agent);
            }
        }
        let block = seq_value(block)?;
        if let Some(row) = conn
            .query(&before, std::slice::from_ref(&block))?
            .into_iter()
            .next()
        {
            to_ms = to_ms.max(row[0].int());
        }
        insert_rows(
            conn,
            dialect,
            "audit_blocks (block, from_ms, to_ms, patients, agents)",
            5,
            vec![
                block,
                from_ms.into(),
                to_ms.into(),
                patients.as_slice().into(),
                agents.as_slice().into(),
            ],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Agent, AgentKind};

    fn record(patients: &[&str], request: &str) -> AuditRecord {
        AuditRecord {
            at_ms: 1_000,
            agent: Agent {
                kind: AgentKind::Professional,
                id: Some("900000001".into()),
                role: None,
                organisation: Some("00000011".into()),
                certificate: None,
            },
            patients: patients.iter().map(|p| p.to_string()).collect(),
            action: "read".into(),
            request: request.into(),
            purpose: None,
            reason: None,
            bases: Vec::new(),
            status: 200,
        }
    }

    #[test]
    fn entities_are_types_or_resources_named_in_the_request() {
        assert_eq!(EntityFilter::parse("Observation/"), None);
        assert_eq!(EntityFilter::parse("observation"), None);
        assert_eq!(EntityFilter::parse("Observation/a b"), None);
        let observation = EntityFilter::parse("Observation").unwrap();
        let one = EntityFilter::parse("Observation/o-1").unwrap();
        let patient = EntityFilter::parse("Patient/p1").unwrap();
        assert!(observation.matches("GET /fhir/Observation?patient=p1"));
        assert!(observation.matches("GET /fhir/Observation/o-1"));
        assert!(!observation.matches("GET /fhir/ObservationDefinition"));
        assert!(one.matches("PUT /fhir/Observation/o-1"));
        assert!(one.matches("GET /fhir/Observation/o-1/_history/2"));
        assert!(!one.matches("GET /fhir/Observation/o-10"));
        assert!(patient.matches("GET /fhir/Patient/p1/$everything"));
        assert!(patient.matches("GET /fhir/Observation?subject=Patient%2Fp1"));
        assert!(patient.matches("GET /fhir/Observation?subject=https://x/fhir/Patient/p1"));
        assert!(!patient.matches("GET /fhir/Observation?subject=Patient/p10"));
        assert!(!patient.matches("GET /fhir/Observation?patient=p1"));
    }

    #[test]
    fn within_keeps_only_records_all_of_whose_patients_are_allowed() {
        let query = LogQuery {
            within: Some(["p1".to_string(), "p2".to_string()].into()),
            ..LogQuery::default()
        };
        assert!(query.matches(&record(&["p1"], "GET /fhir/Patient/p1")));
        assert!(query.matches(&record(&["p1", "p2"], "GET /fhir/Patient/p1")));
        assert!(!query.matches(&record(&["p1", "p3"], "GET /fhir/Patient/p1")));
        assert!(
            !query.matches(&record(&[], "GET /fhir/Observation")),
            "a record about no patient is nobody's"
        );
        let by_organisation = LogQuery {
            agent: Some(AgentFilter::Organisation("900000001".into())),
            ..LogQuery::default()
        };
        assert!(
            !by_organisation.matches(&record(&["p1"], "GET /fhir/Patient/p1")),
            "a UZI number is not an organisation"
        );
    }
}
