//! `zorgnet audit` against the built binary. `verify`: a node's access log that holds is
//! reported as such; a record edited in the database file is named, with exit status 1; a
//! directory that is no node's is refused with a clear message. `search` prints the records
//! of a patient, an agent, a period, an entity; `export` writes a period as NDJSON of valid
//! FHIR AuditEvents.

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

/// A node's store and access log in `data`, with `count` records; answers the log's
/// database.
fn node_with_log(data: &Path, count: usize) -> zorgnet_db::Database {
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
    zorgnet_db::Database::open_sqlite(&data.join(zorgnet_audit::AUDIT_DATABASE_FILE), &[]).unwrap()
}

#[test]
fn a_log_that_holds_passes_and_an_edited_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let log_db = node_with_log(dir.path(), 25);
    let output = verify(dir.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("holds: 25 records"), "{stdout}");
    assert!(stdout.contains("1 checkpoints match"), "{stdout}");

    log_db
        .with_writer(|conn| {
            conn.execute(
                // Record 18's packed bytes (about p18) in record 17's place.
                "UPDATE audit_records SET packed = (SELECT packed FROM audit_records WHERE seq = 18) \
                 WHERE seq = 17",
                &[],
            )
        })
        .unwrap();
    drop(log_db);
    let output = verify(dir.path());
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("at record 17"), "{stderr}");
}

#[test]
fn a_checkpoint_not_signed_by_the_node_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let log_db = node_with_log(dir.path(), 10);
    log_db
        .with_writer(|conn| conn.execute("UPDATE audit_checkpoints SET signed_ms = 2", &[]))
        .unwrap();
    drop(log_db);
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

/// `zorgnet audit` with `args`, the data directory given.
fn audit(data: &Path, args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(["audit", args[0], "--data"])
        .arg(data)
        .args(&args[1..])
        .output()
        .expect("run zorgnet")
}

/// A node's log of three accesses a day apart from 2025-12-06T05:46:40Z: a professional of
/// another organisation reads p1, a citizen reads p2, the node's system searches p1's
/// observations breaking the glass.
fn node_with_accesses(data: &Path) -> zorgnet_store::Store {
    let store = zorgnet_store::Store::open_sqlite(
        &data.join("node.sqlite"),
        zorgnet_fhir::search::SearchRegistry::r4(),
    )
    .unwrap();
    let (log, _sink, signer) = zorgnet_node::audit::open(&store, data).unwrap();
    let day_ms = 86_400_000;
    let records = [
        serde_json::json!({"at_ms": 1_765_000_000_000_i64,
            "agent": {"kind": "professional", "id": "900000001", "role": "01.015", "organisation": "00000022"},
            "patients": ["p1"], "action": "read", "request": "GET /fhir/Patient/p1",
            "purpose": "treatment", "bases": ["treatment-relation"], "status": 200}),
        serde_json::json!({"at_ms": 1_765_000_000_000_i64 + day_ms,
            "agent": {"kind": "citizen", "id": "https://digid.example anna"},
            "patients": ["p2"], "action": "read", "request": "GET /fhir/Patient/p2", "status": 200}),
        serde_json::json!({"at_ms": 1_765_000_000_000_i64 + 2 * day_ms,
            "agent": {"kind": "system", "organisation": "00000011"},
            "patients": ["p1"], "action": "search", "request": "GET /fhir/Observation?patient=p1",
            "purpose": "emergency", "reason": "unconscious", "status": 200}),
    ]
    .map(|value| {
        serde_json::from_value::<AuditRecord>(value)
            .unwrap()
            .to_json()
    });
    log.append(&records).unwrap();
    log.checkpoint(&signer, "00000011", 1).unwrap();
    store
}

fn lines(output: &Output) -> Vec<String> {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn search_prints_one_line_per_record_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let _store = node_with_accesses(dir.path());
    let found = lines(&audit(dir.path(), &["search", "--patient", "p1"]));
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("2  2025-12-08T05:46:40.000Z  200  system of 00000011  search  Patient/p1  GET /fhir/Observation?patient=p1  purpose=emergency  reason=\"unconscious\""), "{}", found[0]);
    assert!(found[1].starts_with("0  2025-12-06T05:46:40.000Z  200  professional 900000001 (01.015) of 00000022  read  Patient/p1"), "{}", found[1]);
    assert!(
        found[1].ends_with("basis=treatment-relation"),
        "{}",
        found[1]
    );

    let by_organisation = lines(&audit(dir.path(), &["search", "--agent", "00000022"]));
    assert_eq!(by_organisation.len(), 1);
    assert!(by_organisation[0].starts_with("0  "));
    let on_a_day = lines(&audit(
        dir.path(),
        &["search", "--since", "2025-12-07", "--until", "2025-12-07"],
    ));
    assert_eq!(on_a_day.len(), 1);
    assert!(
        on_a_day[0].contains("citizen https://digid.example anna"),
        "{on_a_day:?}"
    );
    let since_instant = lines(&audit(
        dir.path(),
        &["search", "--since", "2025-12-07T05:46:40.001Z"],
    ));
    assert_eq!(since_instant.len(), 1, "{since_instant:?}");
    let observations = lines(&audit(dir.path(), &["search", "--entity", "Observation"]));
    assert_eq!(observations.len(), 1);
    let newest = lines(&audit(dir.path(), &["search", "--limit", "1"]));
    assert_eq!(newest.len(), 1);
    assert!(newest[0].starts_with("2  "));
    let none = audit(dir.path(), &["search", "--patient", "p9"]);
    assert!(lines(&none).is_empty());
    assert!(String::from_utf8_lossy(&none.stderr).contains("no records match"));

    for bad in [
        vec!["search", "--since", "last tuesday"],
        vec!["search", "--entity", "observation"],
    ] {
        let output = audit(dir.path(), &bad);
        assert_eq!(output.status.code(), Some(1), "{bad:?}");
        assert!(!String::from_utf8_lossy(&output.stderr).is_empty());
    }
    let elsewhere = tempfile::tempdir().unwrap();
    let output = audit(elsewhere.path(), &["search"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no access log's chain key"));
    assert!(
        !elsewhere
            .path()
            .join(zorgnet_audit::AUDIT_DATABASE_FILE)
            .exists(),
        "no database is made"
    );
}

#[test]
fn export_writes_a_period_as_ndjson_of_valid_audit_events() {
    let dir = tempfile::tempdir().unwrap();
    let _store = node_with_accesses(dir.path());
    let file = dir.path().join("export.ndjson");
    let output = audit(
        dir.path(),
        &[
            "export",
            "--since",
            "2025-12-06",
            "--until",
            "2025-12-07",
            "--out",
            file.to_str().unwrap(),
            "--base-url",
            "https://gp.example/fhir",
        ],
    );
    assert!(lines(&output).is_empty(), "all of it in the file");
    assert!(String::from_utf8_lossy(&output.stderr).contains("exported 2 AuditEvents"));
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    for (event, id) in events.iter().zip(["0", "1"]) {
        assert_eq!(event["resourceType"], "AuditEvent");
        assert_eq!(event["id"], id, "oldest first, id the record's number");
        let errors: Vec<_> = zorgnet_fhir::validate_resource(event)
            .into_iter()
            .filter(|i| i.severity == zorgnet_fhir::Severity::Error)
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(event["source"]["site"], "https://gp.example/fhir");
        assert_eq!(
            event["source"]["observer"]["identifier"]["value"], "00000011",
            "the log's origin, from its checkpoint"
        );
    }
    assert_eq!(
        events[0]["entity"][1]["what"]["reference"], "Patient/p1",
        "{}",
        events[0]
    );
    let to_stdout = lines(&audit(
        dir.path(),
        &["export", "--since", "2025-12-01", "--until", "2025-12-31"],
    ));
    assert_eq!(to_stdout.len(), 3);
    let output = audit(dir.path(), &["export", "--since", "2025-12-01"]);
    assert_eq!(output.status.code(), Some(2), "--until is required");
}
