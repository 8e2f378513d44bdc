//! Group commit: concurrent records each get their own place, durable when `record`
//! returns, and a record that could not be committed is reported, never acknowledged.

use std::collections::BTreeMap;
use std::sync::Arc;
use zorgnet_audit::{AuditLog, AuditSink, ChainKey, verify};
use zorgnet_db::Database;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_records_are_each_committed_once_in_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_sqlite(&dir.path().join("audit.sqlite"), &[]).unwrap();
    let key = ChainKey::generate();
    let log = Arc::new(AuditLog::open(db.clone(), key.clone()).unwrap());
    let sink = AuditSink::start(log.clone()).unwrap();
    let mut tasks = Vec::new();
    for task in 0..200 {
        let sink = sink.clone();
        tasks.push(tokio::spawn(async move {
            let mut placed = Vec::new();
            for i in 0..20 {
                let record = format!(r#"{{"task":{task},"i":{i}}}"#);
                placed.push((sink.record(record.clone()).await.unwrap(), record));
            }
            placed
        }));
    }
    let mut by_seq = BTreeMap::new();
    for task in tasks {
        for (seq, record) in task.await.unwrap() {
            assert!(
                by_seq.insert(seq, record).is_none(),
                "seq {seq} given twice"
            );
        }
    }
    assert_eq!(by_seq.len(), 4_000);
    assert_eq!(
        by_seq.keys().copied().collect::<Vec<_>>(),
        (0..4_000).collect::<Vec<u64>>()
    );
    for (seq, record) in &by_seq {
        assert_eq!(
            log.record(*seq).unwrap().as_ref(),
            Some(record),
            "record {seq}"
        );
    }
    let report = verify(&db, &key, None, &[]).unwrap();
    assert_eq!((report.records, report.problem), (4_000, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_cannot_be_committed_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_sqlite(&dir.path().join("audit.sqlite"), &[]).unwrap();
    let log = Arc::new(AuditLog::open(db.clone(), ChainKey::generate()).unwrap());
    let sink = AuditSink::start(log.clone()).unwrap();
    assert_eq!(sink.record("{\"n\":0}".into()).await.unwrap(), 0);
    // A row in the way of the next record's place.
    db.with_writer(|conn| {
        conn.execute(
            "INSERT INTO audit_records (seq, record, chain) VALUES (1, 'x', 'x')",
            &[],
        )
    })
    .unwrap();
    assert!(sink.record("{\"n\":1}".into()).await.is_err());
    assert_eq!(
        log.size(),
        1,
        "nothing acknowledged was lost, nothing unacknowledged kept"
    );
}
