//! Searching the access log on SQLite and (with `ZORGNET_TEST_POSTGRES_URL`) PostgreSQL: by
//! patient, agent, time and entity, alone and together, page by page in both orders, always
//! giving what a scan of every record gives; a changed index cannot add a record that does
//! not match; records without index rows (a log of an earlier build) are still found.

use std::collections::BTreeSet;
use zorgnet_audit::{
    Agent, AgentFilter, AgentKind, AuditLog, AuditRecord, ChainKey, EntityFilter, LogQuery, Order,
};
use zorgnet_db::Database;

/// A fresh SQLite database and, with `ZORGNET_TEST_POSTGRES_URL`, a fresh PostgreSQL schema
/// named after `name` (announced as skipped without it).
fn databases(name: &str) -> Vec<(String, Database, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Database::open_sqlite(&dir.path().join("audit.sqlite"), &[]).unwrap();
    let mut out = vec![("SQLite".to_string(), sqlite, Some(dir))];
    match std::env::var("ZORGNET_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => {
            let schema = format!(
                "zorgnet_audit_{name}_{}_{}",
                std::process::id(),
                zorgnet_db::now_ms()
            );
            let url = zorgnet_db::postgres_fresh_schema(&url, &schema).unwrap();
            out.push((
                "PostgreSQL".to_string(),
                Database::open_postgres(&url, &[]).unwrap(),
                None,
            ));
        }
        _ => {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED: PostgreSQL half (ZORGNET_TEST_POSTGRES_URL is not set) ***\n"
            );
        }
    }
    out
}

const START_MS: i64 = 1_765_000_000_000;
/// The one record of a Patient, in the second block: the other blocks' filters skip it.
const RARE_PATIENT_AT: usize = 1_700;
/// The one record of a professional, in the third block.
const RARE_AGENT_AT: usize = 2_900;

/// Record `i` of a varied log: seven patients (some records name two, some none), three
/// professionals of two organisations, a citizen and the system, reads, searches and writes
/// of three types, and times that go up by a second but now and then step back a little
/// (concurrent requests commit out of order).
fn record(i: usize) -> AuditRecord {
    let patient = |n: usize| format!("p{}", n % 7);
    let patients = match i % 5 {
        _ if i == RARE_PATIENT_AT => vec!["p-rare".to_string()],
        0 => Vec::new(),
        1 => vec![patient(i), patient(i + 3)],
        _ => vec![patient(i)],
    };
    let (kind, id, organisation) = match i % 6 {
        _ if i == RARE_AGENT_AT => (
            AgentKind::Professional,
            Some("900000099".to_string()),
            Some("00000099".to_string()),
        ),
        0 => (AgentKind::Citizen, Some("https://idp c1".to_string()), None),
        1 => (AgentKind::System, None, Some("00000011".to_string())),
        n => (
            AgentKind::Professional,
            Some(format!("90000000{}", n % 3)),
            Some(if n % 2 == 0 { "00000011" } else { "00000022" }.to_string()),
        ),
    };
    let types = ["Observation", "Condition", "Patient"];
    let resource_type = types[i % 3];
    let (action, request) = match i % 4 {
        0 => ("read", format!("GET /fhir/{resource_type}/r{}", i % 10)),
        1 => (
            "search",
            format!("GET /fhir/{resource_type}?subject=Patient/{}", patient(i)),
        ),
        2 => ("create", format!("POST /fhir/{resource_type}")),
        _ => ("update", format!("PUT /fhir/{resource_type}/r{}", i % 10)),
    };
    let skew_ms = if i.is_multiple_of(11) { 2_500 } else { 0 };
    AuditRecord {
        at_ms: START_MS + 1_000 * i as i64 - skew_ms,
        agent: Agent {
            kind,
            id,
            role: None,
            organisation,
            certificate: None,
        },
        patients,
        action: action.into(),
        request,
        purpose: None,
        reason: None,
        bases: Vec::new(),
        status: 200,
    }
}

/// Three blocks of the index and a part of a fourth.
const RECORDS: usize = 3_500;

/// A log of [`RECORDS`] records in appends of varied sizes.
fn filled(db: Database) -> (AuditLog, Vec<AuditRecord>) {
    let log = AuditLog::open(db, ChainKey::generate()).unwrap();
    let all: Vec<AuditRecord> = (0..RECORDS).map(record).collect();
    let mut appended = 0;
    for size in [1, 7, 64, 3, 200, 25].iter().cycle() {
        if appended == RECORDS {
            break;
        }
        let end = (appended + size).min(RECORDS);
        let batch: Vec<String> = all[appended..end].iter().map(|r| r.to_json()).collect();
        log.append(&batch).unwrap();
        appended = end;
    }
    (log, all)
}

/// Every page of `query`, following the cursor; the sequence numbers found.
fn all_pages(log: &AuditLog, query: &LogQuery) -> Vec<u64> {
    let mut query = query.clone();
    let mut seqs = Vec::new();
    for _ in 0..RECORDS + 2 {
        let page = log.search(&query).unwrap();
        assert!(page.found.len() <= query.limit);
        for found in &page.found {
            assert_eq!(
                serde_json::from_str::<AuditRecord>(&found.json).unwrap(),
                found.record,
                "the record's own bytes"
            );
        }
        seqs.extend(page.found.iter().map(|f| f.seq));
        match page.next {
            Some(next) => query.after = Some(next),
            None => return seqs,
        }
    }
    panic!("the pages never end");
}

/// What a scan of every record finds.
fn expected(all: &[AuditRecord], query: &LogQuery) -> Vec<u64> {
    let mut seqs: Vec<u64> = (0..)
        .zip(all)
        .filter(|(_, r)| query.matches(r))
        .map(|(seq, _)| seq)
        .collect();
    if query.order == Order::Descending {
        seqs.reverse();
    }
    seqs
}

fn queries() -> Vec<(&'static str, LogQuery)> {
    let q = LogQuery {
        limit: 25,
        ..LogQuery::default()
    };
    let at = |seconds: i64| Some(START_MS + 1_000 * seconds);
    vec![
        ("everything", q.clone()),
        (
            "one patient",
            LogQuery {
                patients: vec!["p3".into()],
                ..q.clone()
            },
        ),
        (
            "two patients",
            LogQuery {
                patients: vec!["p3".into(), "p5".into()],
                ..q.clone()
            },
        ),
        (
            "a patient of one record",
            LogQuery {
                patients: vec!["p-rare".into()],
                ..q.clone()
            },
        ),
        (
            "a professional of one record",
            LogQuery {
                agent: Some(AgentFilter::Any("00000099".into())),
                ..q.clone()
            },
        ),
        (
            "a professional",
            LogQuery {
                agent: Some(AgentFilter::Id("900000002".into())),
                ..q.clone()
            },
        ),
        (
            "an organisation",
            LogQuery {
                agent: Some(AgentFilter::Organisation("00000022".into())),
                ..q.clone()
            },
        ),
        (
            "an organisation's URA as any agent",
            LogQuery {
                agent: Some(AgentFilter::Any("00000011".into())),
                ..q.clone()
            },
        ),
        (
            "a citizen",
            LogQuery {
                agent: Some(AgentFilter::Id("https://idp c1".into())),
                ..q.clone()
            },
        ),
        (
            "since",
            LogQuery {
                since_ms: at(2_400),
                ..q.clone()
            },
        ),
        (
            "until",
            LogQuery {
                until_ms: at(1_100),
                ..q.clone()
            },
        ),
        (
            "a window with records that stepped back",
            LogQuery {
                since_ms: at(2_046),
                until_ms: at(2_071),
                ..q.clone()
            },
        ),
        (
            "a window after the end",
            LogQuery {
                since_ms: at(100_000),
                ..q.clone()
            },
        ),
        (
            "a type",
            LogQuery {
                entity: EntityFilter::parse("Condition"),
                ..q.clone()
            },
        ),
        (
            "a resource, in the path or as a reference",
            LogQuery {
                entity: EntityFilter::parse("Patient/p2"),
                ..q.clone()
            },
        ),
        (
            "a patient's records by one organisation in a window",
            LogQuery {
                patients: vec!["p1".into()],
                agent: Some(AgentFilter::Organisation("00000011".into())),
                since_ms: at(1_000),
                until_ms: at(2_500),
                ..q.clone()
            },
        ),
        (
            "one person's records only",
            LogQuery {
                within: Some(BTreeSet::from(["p1".to_string(), "p4".to_string()])),
                ..q.clone()
            },
        ),
        (
            "a patient, confined to another person",
            LogQuery {
                patients: vec!["p2".into()],
                within: Some(BTreeSet::from(["p1".to_string()])),
                ..q.clone()
            },
        ),
        (
            "one record per page",
            LogQuery {
                patients: vec!["p6".into()],
                limit: 1,
                ..q.clone()
            },
        ),
    ]
}

#[test]
fn searches_find_what_a_scan_finds_in_both_orders() {
    for (backend, db, _dir) in databases("search") {
        let (log, all) = filled(db);
        for (what, query) in queries() {
            for order in [Order::Ascending, Order::Descending] {
                let query = LogQuery {
                    order,
                    ..query.clone()
                };
                let want = expected(&all, &query);
                assert_eq!(
                    all_pages(&log, &query),
                    want,
                    "{backend}: {what}, {order:?}"
                );
                if what == "a patient, confined to another person" {
                    assert!(
                        want.is_empty(),
                        "{backend}: p1's and p2's records are not p1's"
                    );
                } else if what != "a window after the end" {
                    assert!(!want.is_empty(), "{backend}: {what} finds something");
                }
            }
        }
        let page = log
            .search(&LogQuery {
                patients: vec!["p3".into()],
                order: Order::Descending,
                limit: 3,
                ..LogQuery::default()
            })
            .unwrap();
        let newest: Vec<u64> = expected(
            &all,
            &LogQuery {
                patients: vec!["p3".into()],
                order: Order::Descending,
                ..LogQuery::default()
            },
        )
        .into_iter()
        .take(3)
        .collect();
        assert_eq!(
            page.found.iter().map(|f| f.seq).collect::<Vec<_>>(),
            newest,
            "{backend}"
        );
        assert_eq!(page.next, newest.last().copied(), "{backend}");
    }
}

#[test]
fn a_changed_index_cannot_add_a_record_and_unindexed_records_are_read() {
    for (backend, db, _dir) in databases("search_index") {
        let (log, all) = filled(db.clone());
        let p3 = LogQuery {
            patients: vec!["p3".into()],
            limit: 1_000,
            ..LogQuery::default()
        };
        let want = expected(&all, &p3);
        // Filters that hold everything make the search read every block; it still keeps
        // only p3's records. A filter of the wrong size is read as one that holds anything.
        let set = format!(
            "UPDATE audit_blocks SET patients = {} WHERE block = {}",
            db.dialect().placeholder(1),
            db.dialect().placeholder(2)
        );
        db.with_writer(|conn| {
            conn.execute(
                &set,
                &[vec![0xff_u8; 4_096].as_slice().into(), 0_i64.into()],
            )?;
            conn.execute(&set, &[vec![0_u8; 3].as_slice().into(), 1_i64.into()])?;
            Ok::<_, zorgnet_db::DbError>(())
        })
        .unwrap();
        assert_eq!(all_pages(&log, &p3), want, "{backend}: a forged index");

        // A log whose records predate the index: no index rows at all.
        db.with_writer(|conn| {
            conn.execute("DELETE FROM audit_blocks", &[])?;
            Ok::<_, zorgnet_db::DbError>(())
        })
        .unwrap();
        for (what, query) in queries() {
            assert_eq!(
                all_pages(&log, &query),
                expected(&all, &query),
                "{backend}: {what} without index rows"
            );
        }
        // Records appended after that are indexed (from the middle of a block on), and both
        // parts are found.
        let more: Vec<AuditRecord> = (RECORDS..RECORDS + 1_500).map(record).collect();
        log.append(&more.iter().map(|r| r.to_json()).collect::<Vec<_>>())
            .unwrap();
        let all: Vec<AuditRecord> = all.into_iter().chain(more).collect();
        for (what, query) in queries() {
            for order in [Order::Ascending, Order::Descending] {
                let query = LogQuery {
                    order,
                    ..query.clone()
                };
                let want = expected(&all, &query);
                let found = all_pages(&log, &query);
                assert_eq!(found, want, "{backend}: {what}, {order:?}, half indexed");
            }
        }
    }
}

#[test]
fn records_that_are_not_audit_records_are_kept_but_never_found() {
    for (backend, db, _dir) in databases("search_foreign") {
        let log = AuditLog::open(db, ChainKey::generate()).unwrap();
        let mut own = record(1);
        own.patients = vec!["p1".into()];
        log.append(&[
            r#"{"who":"someone","patients":["p1"]}"#.to_string(),
            own.to_json(),
            "not json".to_string(),
        ])
        .unwrap();
        let page = log
            .search(&LogQuery {
                patients: vec!["p1".into()],
                limit: 10,
                ..LogQuery::default()
            })
            .unwrap();
        assert_eq!(
            page.found.iter().map(|f| f.seq).collect::<Vec<_>>(),
            [1],
            "{backend}"
        );
        assert_eq!(page.next, None, "{backend}");
        assert_eq!(log.size(), 3, "{backend}");
    }
}
