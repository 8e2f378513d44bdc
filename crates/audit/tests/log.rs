//! The access log on SQLite and (with `ZORGNET_TEST_POSTGRES_URL`) PostgreSQL: its tree
//! against an independent RFC 6962 computation, inclusion and consistency proofs that hold
//! and fail as they must, and verification that names the first record changed, removed,
//! inserted or moved in the database directly (its packed bytes or its text), and catches a
//! log rewritten with its key; packed bytes that do not unpack are reported, and a log of
//! text records (an earlier build's) goes on with packed ones.

use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use zorgnet_audit::{
    AuditError, AuditLog, ChainKey, Checkpoint, Hash, LogQuery, check_consistency, check_inclusion,
    verify,
};
use zorgnet_db::Database;
use zorgnet_db::sql::SqlValue;

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

fn records(from: usize, count: usize) -> Vec<String> {
    (from..from + count)
        .map(|i| {
            format!(
                r#"{{"seq":{i},"who":"uzi:{}","what":"Patient/p{}"}}"#,
                i % 7,
                i % 13
            )
        })
        .collect()
}

/// RFC 6962's Merkle tree hash, computed directly from the records.
fn reference_root(records: &[String]) -> Hash {
    fn mth(leaves: &[[u8; 32]]) -> [u8; 32] {
        match leaves {
            [] => Sha256::digest([]).into(),
            [one] => *one,
            _ => {
                let k = leaves.len().next_power_of_two() / 2;
                let mut h = Sha256::new();
                h.update([1]);
                h.update(mth(&leaves[..k]));
                h.update(mth(&leaves[k..]));
                h.finalize().into()
            }
        }
    }
    let leaves: Vec<[u8; 32]> = records
        .iter()
        .map(|r| {
            let mut h = Sha256::new();
            h.update([0]);
            h.update(r.as_bytes());
            h.finalize().into()
        })
        .collect();
    Hash(mth(&leaves))
}

fn execute(db: &Database, sql: &str, params: &[SqlValue]) {
    db.with_writer(|conn| conn.execute(sql, params)).unwrap();
}

#[test]
fn the_tree_and_its_proofs_are_rfc_6962s() {
    for (backend, db, _dir) in databases("proofs") {
        let log = AuditLog::open(db, ChainKey::generate()).unwrap();
        assert_eq!(
            log.tree_head().unwrap(),
            (0, reference_root(&[])),
            "{backend}"
        );
        let mut all = Vec::new();
        let mut heads = Vec::new();
        for batch in [1, 1, 2, 5, 8, 31, 64, 100, 1, 187] {
            let more = records(all.len(), batch);
            assert_eq!(log.append(&more).unwrap(), all.len() as u64, "{backend}");
            all.extend(more);
            let (size, root) = log.tree_head().unwrap();
            assert_eq!(size, all.len() as u64, "{backend}");
            assert_eq!(root, reference_root(&all), "{backend}: root of {size}");
            heads.push((size, root));
        }
        for &(size, root) in &heads {
            for seq in [0, size / 3, size / 2, size - 1] {
                let proof = log.inclusion_proof(seq, size).unwrap();
                let record = log.record(seq).unwrap().unwrap();
                assert!(
                    check_inclusion(&proof, size, root, seq, record.as_bytes()),
                    "{backend}: {seq} in {size}"
                );
                assert!(
                    !check_inclusion(&proof, size, root, seq, b"{}"),
                    "{backend}: another record"
                );
                if size > 1 {
                    let other = (seq + 1) % size;
                    assert!(
                        !check_inclusion(&proof, size, root, other, record.as_bytes()),
                        "{backend}: another place"
                    );
                }
            }
            for &(old, old_root) in heads.iter().filter(|(old, _)| *old <= size) {
                let proof = log.consistency_proof(old, size).unwrap();
                assert!(
                    check_consistency(&proof, size, root, old, old_root),
                    "{backend}: {old} in {size}"
                );
                assert!(
                    !check_consistency(
                        &proof,
                        size,
                        root,
                        old,
                        reference_root(&records(1_000, old as usize))
                    ),
                    "{backend}: another history of {old}"
                );
            }
        }
        assert!(
            log.inclusion_proof(0, 10_000).is_err(),
            "{backend}: beyond the log"
        );
    }
}

#[test]
fn a_reopened_log_goes_on_where_it_stopped() {
    let key = ChainKey::generate();
    for (backend, db, _dir) in databases("reopen") {
        let first = records(0, 45);
        let log = AuditLog::open(db.clone(), key.clone()).unwrap();
        log.append(&first).unwrap();
        drop(log);
        let log = AuditLog::open(db.clone(), key.clone()).unwrap();
        assert_eq!(log.size(), 45, "{backend}");
        let second = records(45, 20);
        assert_eq!(log.append(&second).unwrap(), 45, "{backend}");
        let all: Vec<String> = first.into_iter().chain(second).collect();
        assert_eq!(
            log.tree_head().unwrap(),
            (65, reference_root(&all)),
            "{backend}"
        );
        let report = verify(&db, &key, None, &[]).unwrap();
        assert_eq!((report.records, report.problem), (65, None), "{backend}");
    }
}

/// A log of 300 records with checkpoints at 100 and 300, and its owner's key.
fn checkpointed_log(db: Database, key: &ChainKey) -> (AuditLog, SigningKey, Vec<Checkpoint>) {
    let signer = SigningKey::from_bytes(&[42; 32]);
    let log = AuditLog::open(db, key.clone()).unwrap();
    log.append(&records(0, 100)).unwrap();
    let early = log.checkpoint(&signer, "node", 1).unwrap();
    assert_eq!(
        log.checkpoint(&signer, "node", 2).unwrap(),
        early,
        "nothing new: the same checkpoint"
    );
    log.append(&records(100, 200)).unwrap();
    let late = log.checkpoint(&signer, "node", 3).unwrap();
    (log, signer, vec![early, late])
}

/// The packed bytes of record `seq` as stored.
fn packed(db: &Database, seq: i64) -> Vec<u8> {
    let sql = format!(
        "SELECT packed FROM audit_records WHERE seq = {}",
        db.dialect().placeholder(1)
    );
    let mut rows = db
        .with_reader(|conn| conn.query(&sql, &[SqlValue::Int(seq)]))
        .unwrap();
    rows[0][0].take_blob()
}

/// Stores `packed` as record `seq`'s packed bytes.
fn set_packed(db: &Database, seq: i64, packed: Vec<u8>) {
    let d = db.dialect();
    let sql = format!(
        "UPDATE audit_records SET packed = {} WHERE seq = {}",
        d.placeholder(1),
        d.placeholder(2)
    );
    execute(db, &sql, &[SqlValue::Blob(packed), SqlValue::Int(seq)]);
}

/// An edit of the log's database, made directly.
type Edit = fn(&Database);

#[test]
fn verification_names_the_first_record_edited_in_the_database() {
    let key = ChainKey::generate();
    let cases: [(&str, Edit, u64); 9] = [
        (
            "changed: a byte of its packed bytes",
            |db| {
                // The last byte of an LZ4 block is a literal: the record's last character.
                let mut bytes = packed(db, 137);
                *bytes.last_mut().unwrap() ^= 1;
                set_packed(db, 137, bytes);
            },
            137,
        ),
        (
            "changed: another record's packed bytes",
            |db| {
                execute(
                    db,
                    "UPDATE audit_records SET packed = (SELECT packed FROM audit_records WHERE seq = 138) WHERE seq = 137",
                    &[],
                )
            },
            137,
        ),
        (
            "changed: text in place of its packed bytes",
            |db| {
                execute(
                    db,
                    "UPDATE audit_records SET packed = NULL, record = '{\"seq\":137}' WHERE seq = 137",
                    &[],
                )
            },
            137,
        ),
        (
            "damaged: bytes that do not unpack",
            |db| set_packed(db, 137, vec![1, 0xff, 0xff, 0xf0, 0xff, 0xff]),
            137,
        ),
        (
            "removed",
            |db| execute(db, "DELETE FROM audit_records WHERE seq = 58", &[]),
            58,
        ),
        (
            "moved",
            |db| {
                // Two rows cannot trade places under a primary key in one statement on every
                // backend: park one first.
                for edit in [
                    "UPDATE audit_records SET seq = -1 WHERE seq = 201",
                    "UPDATE audit_records SET seq = 201 WHERE seq = 202",
                    "UPDATE audit_records SET seq = 202 WHERE seq = -1",
                ] {
                    execute(db, edit, &[]);
                }
            },
            201,
        ),
        (
            "inserted and renumbered",
            |db| {
                execute(
                    db,
                    "UPDATE audit_records SET seq = seq + 1000 WHERE seq >= 250",
                    &[],
                )
            },
            250,
        ),
        (
            "inserted: a copy of another row",
            |db| {
                execute(
                    db,
                    "UPDATE audit_records SET seq = seq + 1000 WHERE seq >= 250",
                    &[],
                );
                execute(
                    db,
                    "INSERT INTO audit_records (seq, record, packed, chain) \
                     SELECT 250, record, packed, chain FROM audit_records WHERE seq = 249",
                    &[],
                );
            },
            250,
        ),
        (
            "removed at the end",
            |db| execute(db, "DELETE FROM audit_records WHERE seq >= 290", &[]),
            290,
        ),
    ];
    for (what, edit, first_bad) in cases {
        for (backend, db, _dir) in databases("tamper") {
            let (_log, signer, published) = checkpointed_log(db.clone(), &key);
            let owner = signer.verifying_key();
            let clean = verify(&db, &key, Some(&owner), &published).unwrap();
            assert_eq!(
                (clean.records, clean.checkpoints, clean.problem),
                (300, 4, None),
                "{backend}"
            );
            edit(&db);
            let report = verify(&db, &key, Some(&owner), &published).unwrap();
            let problem = report
                .problem
                .unwrap_or_else(|| panic!("{backend}: {what} went unnoticed"));
            assert_eq!(
                problem.seq, first_bad,
                "{backend}: {what}: {}",
                problem.what
            );
        }
    }
}

#[test]
fn packed_bytes_that_do_not_unpack_are_reported_as_damage_never_a_panic() {
    let key = ChainKey::generate();
    let mut noise = 0x2545_f491_4f6c_dd1d_u64;
    let mut random = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                noise ^= noise << 13;
                noise ^= noise >> 7;
                noise ^= noise << 17;
                noise as u8
            })
            .collect()
    };
    let damaged: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", random(120)),
        ("random bytes of the packed format", {
            let mut bytes = vec![1];
            bytes.extend(random(120));
            bytes
        }),
        ("the largest claimed size", {
            let mut bytes = vec![1, 0xff, 0xff];
            bytes.extend(random(40));
            bytes
        }),
        ("an unknown format", vec![9, 10, 0, 0xa0, b'{', b'}']),
        ("no bytes", Vec::new()),
    ];
    for (what, bytes) in damaged {
        for (backend, db, _dir) in databases("damaged") {
            let log = AuditLog::open(db.clone(), key.clone()).unwrap();
            log.append(&records(0, 20)).unwrap();
            set_packed(&db, 7, bytes.clone());
            let problem = verify(&db, &key, None, &[])
                .unwrap()
                .problem
                .unwrap_or_else(|| panic!("{backend}: {what} went unnoticed"));
            assert_eq!(problem.seq, 7, "{backend}: {what}: {}", problem.what);
            assert!(
                problem.what.contains("cannot be read back"),
                "{backend}: {what}: {}",
                problem.what
            );
            match log.record(7) {
                Err(e @ AuditError::Damaged { seq: 7, .. }) => {
                    assert!(e.to_string().contains("record 7 is damaged"), "{e}")
                }
                other => panic!("{backend}: {what}: {other:?}"),
            }
            assert_eq!(log.record(8).unwrap(), Some(records(8, 1).remove(0)));
            let search = log.search(&LogQuery {
                limit: 50,
                ..LogQuery::default()
            });
            assert!(
                matches!(search, Err(AuditError::Damaged { seq: 7, .. })),
                "{backend}: {what}: {search:?}"
            );
            // Appends go on, the index's block included.
            log.append(&records(20, 1_100)).unwrap();
            assert_eq!(log.size(), 1_120, "{backend}");
        }
    }
}

#[test]
fn a_log_of_text_records_goes_on_with_packed_ones_and_verifies_and_proves() {
    let key = ChainKey::generate();
    for (backend, db, _dir) in databases("upgrade") {
        // A log as a build before packing wrote it: records as text, without `packed`.
        let mut old = records(0, 40);
        old.push(format!(r#"{{"request":"{}"}}"#, "x".repeat(70_000)));
        let log = AuditLog::open(db.clone(), key.clone()).unwrap();
        log.append(&old).unwrap();
        drop(log);
        for (seq, record) in (0_i64..).zip(&old[..40]) {
            let d = db.dialect();
            let sql = format!(
                "UPDATE audit_records SET record = {}, packed = NULL WHERE seq = {}",
                d.placeholder(1),
                d.placeholder(2)
            );
            execute(
                &db,
                &sql,
                &[SqlValue::Text(record.clone()), SqlValue::Int(seq)],
            );
        }
        execute(&db, "ALTER TABLE audit_records DROP COLUMN packed", &[]);
        execute(
            &db,
            "DELETE FROM schema_migrations WHERE component = 'audit' AND version = 3",
            &[],
        );

        // Verified by this build before it opens the log.
        let report = verify(&db, &key, None, &[]).unwrap();
        assert_eq!((report.records, report.problem), (41, None), "{backend}");
        let signer = SigningKey::from_bytes(&[42; 32]);
        let log = AuditLog::open(db.clone(), key.clone()).unwrap();
        let before = log.checkpoint(&signer, "node", 1).unwrap();
        let new = records(41, 30);
        assert_eq!(log.append(&new).unwrap(), 41, "{backend}");
        let stored = |seq: i64| {
            let sql = format!(
                "SELECT record, packed FROM audit_records WHERE seq = {}",
                db.dialect().placeholder(1)
            );
            let rows = db
                .with_reader(|conn| conn.query(&sql, &[SqlValue::Int(seq)]))
                .unwrap();
            (
                matches!(&rows[0][0], SqlValue::Text(t) if !t.is_empty()),
                matches!(rows[0][1], SqlValue::Blob(_)),
            )
        };
        assert_eq!(stored(3), (true, false), "{backend}: an old row is text");
        assert_eq!(
            stored(40),
            (true, false),
            "{backend}: a long record is text"
        );
        assert_eq!(stored(50), (false, true), "{backend}: a new row is packed");
        let all: Vec<String> = old.into_iter().chain(new).collect();
        let (size, root) = log.tree_head().unwrap();
        assert_eq!((size, root), (71, reference_root(&all)), "{backend}");
        for seq in [0, 39, 40, 41, 70] {
            let record = log.record(seq).unwrap().unwrap();
            assert_eq!(record, all[seq as usize], "{backend}: {seq}");
            let proof = log.inclusion_proof(seq, size).unwrap();
            assert!(
                check_inclusion(&proof, size, root, seq, record.as_bytes()),
                "{backend}: {seq}"
            );
        }
        let proof = log.consistency_proof(before.size, size).unwrap();
        assert!(
            check_consistency(&proof, size, root, before.size, before.root),
            "{backend}"
        );
        let after = log.checkpoint(&signer, "node", 2).unwrap();
        let report = verify(&db, &key, Some(&signer.verifying_key()), &[]).unwrap();
        assert_eq!(
            (report.records, report.checkpoints, report.problem),
            (71, 2, None),
            "{backend}"
        );
        assert_eq!(after.size, 71);
        // An old text row edited is named as before.
        execute(
            &db,
            "UPDATE audit_records SET record = '{\"seq\":9}' WHERE seq = 9",
            &[],
        );
        let report = verify(&db, &key, None, &[]).unwrap();
        assert_eq!(report.problem.map(|p| p.seq), Some(9), "{backend}");
    }
}

#[test]
fn a_forged_record_or_tree_hash_does_not_fit() {
    let key = ChainKey::generate();
    for (backend, db, _dir) in databases("forged") {
        let (log, signer, published) = checkpointed_log(db.clone(), &key);
        // Whoever has the database but not the chain key appends a record of their own.
        let forger = AuditLog::open(db.clone(), ChainKey::generate()).unwrap();
        forger.append(&records(300, 1)).unwrap();
        let report = verify(&db, &key, Some(&signer.verifying_key()), &published).unwrap();
        assert_eq!(
            report.problem.map(|p| p.seq),
            Some(300),
            "{backend}: a record chained with another key"
        );
        execute(&db, "DELETE FROM audit_records WHERE seq = 300", &[]);
        execute(
            &db,
            "UPDATE audit_hashes SET hash = (SELECT hash FROM audit_hashes WHERE idx = 0) WHERE idx = 5",
            &[],
        );
        let report = verify(&db, &key, None, &[]).unwrap();
        assert!(
            report.problem.is_some_and(|p| p.seq <= 5),
            "{backend}: an altered tree hash"
        );
        drop(log);
    }
}

#[test]
fn a_log_rewritten_with_its_keys_is_caught_by_the_published_checkpoints() {
    let key = ChainKey::generate();
    for (backend, db, _dir) in databases("rewrite") {
        let (_log, signer, published) = checkpointed_log(db, &key);
        // The node rewrites its history from record 50 on with both of its keys, and signs
        // new checkpoints: its own database is consistent again.
        for (_, rewritten_db, _rewritten_dir) in databases("rewritten")
            .into_iter()
            .filter(|(b, _, _)| *b == backend)
        {
            let rewritten = AuditLog::open(rewritten_db.clone(), key.clone()).unwrap();
            rewritten.append(&records(0, 50)).unwrap();
            rewritten.append(&records(5_000, 250)).unwrap();
            let own = rewritten.checkpoint(&signer, "node", 4).unwrap();
            let alone = verify(&rewritten_db, &key, Some(&signer.verifying_key()), &[]).unwrap();
            assert_eq!(alone.problem, None, "{backend}: consistent on its own");
            // Against the hub's copy of what it published before, it is not.
            let report = verify(
                &rewritten_db,
                &key,
                Some(&signer.verifying_key()),
                &published,
            )
            .unwrap();
            let problem = report.problem.expect("the rewrite goes unnoticed");
            assert_eq!(problem.seq, 99, "{backend}: {}", problem.what);
            let early = &published[0];
            let proof = rewritten.consistency_proof(early.size, own.size).unwrap();
            assert!(
                !check_consistency(&proof, own.size, own.root, early.size, early.root),
                "{backend}"
            );
        }
        // A checkpoint not signed by the owner is refused.
        let mut forged = published[1].clone();
        forged.size += 1;
        let dir = tempfile::tempdir().unwrap();
        let other = Database::open_sqlite(&dir.path().join("x.sqlite"), &[]).unwrap();
        AuditLog::open(other.clone(), key.clone()).unwrap();
        let report = verify(&other, &key, Some(&signer.verifying_key()), &[forged]).unwrap();
        assert!(
            report.problem.is_some(),
            "{backend}: an unsigned checkpoint"
        );
    }
}

#[test]
fn an_append_that_fails_appends_nothing() {
    let key = ChainKey::generate();
    for (backend, db, _dir) in databases("atomic") {
        let log = AuditLog::open(db.clone(), key.clone()).unwrap();
        log.append(&records(0, 10)).unwrap();
        let before = log.tree_head().unwrap();
        // A row in the way of the second of the next three makes their transaction fail.
        execute(
            &db,
            "INSERT INTO audit_records (seq, record, chain) VALUES (11, 'x', 'x')",
            &[],
        );
        assert!(log.append(&records(10, 3)).is_err(), "{backend}");
        assert_eq!(
            log.tree_head().unwrap(),
            before,
            "{backend}: nothing appended"
        );
        execute(&db, "DELETE FROM audit_records WHERE seq = 11", &[]);
        assert_eq!(log.append(&records(10, 3)).unwrap(), 10, "{backend}");
        let all = records(0, 13);
        assert_eq!(
            log.tree_head().unwrap(),
            (13, reference_root(&all)),
            "{backend}"
        );
        let report = verify(&db, &key, None, &[]).unwrap();
        assert_eq!((report.records, report.problem), (13, None), "{backend}");
    }
}
