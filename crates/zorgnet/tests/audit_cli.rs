//! `zorgnet audit verify` against the built binary: a node's access log that holds is
//! reported as such; a record edited in the database file is named, with exit status 1; a
//! directory that is no node's is refused with a clear message.

use std::path::Path;
use std::process::{Command, Output};
use zorgnet_audit::AuditRecord;

const BINARY: &str = env!("CARGO_BIN_EXE_zorgnet");

fn verify(data: &Path) -> Output {
    Command::new(BINARY)
        .args(["audit", "verify", "--data"])
        .arg(data)
        .output()
        .expect("run zorgnet")
}

/// A node's store and access log in `data`, with `count` records.
fn node_with_log(data: &Path, count: usize) -> zorgnet_store::Store {
    let store = zorgnet_store::Store::open_sqlite(
        &data.join("node.sqlite"),
        zorgnet_fhir::search::SearchRegistry::r4(),
    )
    .unwrap();
    let (log, _sink, signer) = zorgnet_node::audit::open(&store, data).unwrap();
    let records: Vec<String> = (0..count)
        .map(|i| {
            let mut record: AuditRecord = serde_json::from_value(serde_json::json!({
                "at_ms": 1_765_000_000_000_i64, "agent": {"kind": "system"},
                "action": "read", "request": "GET /fhir/Patient/p", "status": 200}))
            .unwrap();
            record.patients = vec![format!("p{i}")];
            record.to_json()
        })
        .collect();
    log.append(&records[..count / 2]).unwrap();
    log.checkpoint(&signer, "00000011", 1).unwrap();
    log.append(&records[count / 2..]).unwrap();
    store
}

#[test]
fn a_log_that_holds_passes_and_an_edited_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = node_with_log(dir.path(), 25);
    let output = verify(dir.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("holds: 25 records"), "{stdout}");
    assert!(stdout.contains("1 checkpoints match"), "{stdout}");

    store
        .database()
        .with_writer(|conn| {
            conn.execute(
                "UPDATE audit_records SET record = replace(record, 'p17', 'p71') WHERE seq = 17",
                &[],
            )
        })
        .unwrap();
    drop(store);
    let output = verify(dir.path());
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("at record 17"), "{stderr}");
}

#[test]
fn a_checkpoint_not_signed_by_the_node_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = node_with_log(dir.path(), 10);
    store
        .database()
        .with_writer(|conn| conn.execute("UPDATE audit_checkpoints SET signed_ms = 2", &[]))
        .unwrap();
    drop(store);
    let output = verify(dir.path());
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not signed by the log's key"), "{stderr}");
}

#[test]
fn a_directory_without_a_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = verify(dir.path());
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no access log's chain key"), "{stderr}");
}
