//! `Database::read_async`: the same rows as a reader connection gives, on SQLite and (with
//! `ZORGNET_TEST_POSTGRES_URL`) PostgreSQL, and on PostgreSQL it survives its connections
//! being terminated.

use zorgnet_db::sql::SqlValue;
use zorgnet_db::{ASYNC_READERS_PER_CORE, Database, DbError, Migration};

const MIGRATIONS: &[Migration] = &[Migration {
    component: "async_reads_test",
    version: 1,
    sql: "CREATE TABLE people (name {text} NOT NULL, age {int} NOT NULL)",
}];

fn fill(db: &Database) {
    db.with_writer(|conn| -> Result<(), DbError> {
        for (name, age) in [("An", 41), ("Bo", 7), ("Cor", 88)] {
            conn.execute(
                &format!(
                    "INSERT INTO people (name, age) VALUES ({}, {})",
                    conn.dialect().placeholder(1),
                    conn.dialect().placeholder(2)
                ),
                &[name.into(), SqlValue::Int(age)],
            )?;
        }
        Ok(())
    })
    .unwrap();
}

async fn older_than(db: &Database, age: i64) -> Vec<String> {
    let sql = format!(
        "SELECT name FROM people WHERE age > {} ORDER BY name",
        db.dialect().placeholder(1)
    );
    db.read_async(&sql, &[SqlValue::Int(age)])
        .await
        .unwrap()
        .into_iter()
        .map(|mut row| row[0].take_text())
        .collect()
}

#[tokio::test]
async fn sqlite_reads_from_async_code() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_sqlite(&dir.path().join("test.sqlite"), MIGRATIONS).unwrap();
    fill(&db);
    assert_eq!(older_than(&db, 10).await, ["An", "Cor"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reads_from_async_code_and_reconnects() {
    let Ok(url) = std::env::var("ZORGNET_TEST_POSTGRES_URL") else {
        {
            // Written to the process's stderr, not through the test harness's capture, so
            // that a skip shows in every run.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED: PostgreSQL (ZORGNET_TEST_POSTGRES_URL is not set) ***\n"
            );
        };
        return;
    };
    let schema = format!(
        "zorgnet_async_reads_{}_{}",
        std::process::id(),
        zorgnet_db::now_ms()
    );
    let db = tokio::task::spawn_blocking(move || {
        let url = zorgnet_db::postgres_fresh_schema(&url, &schema).unwrap();
        let db = Database::open_postgres(&url, MIGRATIONS).unwrap();
        fill(&db);
        db
    })
    .await
    .unwrap();
    assert_eq!(older_than(&db, 10).await, ["An", "Cor"]);

    // Open every async reader and learn its backend, then terminate them all.
    let readers = ASYNC_READERS_PER_CORE * std::thread::available_parallelism().unwrap().get();
    let mut backends = Vec::new();
    for _ in 0..readers {
        let rows = db
            .read_async("SELECT pg_backend_pid()::bigint", &[])
            .await
            .unwrap();
        backends.push(rows[0][0].int());
    }
    backends.sort_unstable();
    backends.dedup();
    assert_eq!(backends.len(), readers, "one backend per reader");
    let terminator = db.clone();
    tokio::task::spawn_blocking(move || {
        terminator.with_writer(|conn| -> Result<(), DbError> {
            for pid in backends {
                conn.query(
                    "SELECT pg_terminate_backend(CAST($1::bigint AS int))",
                    &[SqlValue::Int(pid)],
                )?;
            }
            Ok(())
        })
    })
    .await
    .unwrap()
    .unwrap();
    // Every reader in turn finds its connection gone and reads on a new one.
    for _ in 0..readers {
        assert_eq!(older_than(&db, 40).await, ["An", "Cor"]);
    }
}
