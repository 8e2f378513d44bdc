//! What the store's integration tests share.

use zorgnet_fhir::search::SearchRegistry;
use zorgnet_store::Store;

/// A fresh SQLite store and, with `ZORGNET_TEST_POSTGRES_URL`, a fresh PostgreSQL one in a
/// schema named after `name` (the PostgreSQL half is announced as skipped without it).
pub async fn stores(name: &str) -> Vec<(Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open_sqlite(&dir.path().join("node.sqlite"), SearchRegistry::r4()).unwrap();
    let mut stores = vec![(sqlite, Some(dir))];
    match std::env::var("ZORGNET_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => {
            // Tests of one binary run at once and may ask in the same millisecond.
            static OPENED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let schema = format!(
                "zorgnet_store_{name}_{}_{}_{}",
                std::process::id(),
                zorgnet_store::now_ms(),
                OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            let store = tokio::task::spawn_blocking(move || {
                let url = zorgnet_db::postgres_fresh_schema(&url, &schema).unwrap();
                Store::open_postgres(&url, SearchRegistry::r4()).unwrap()
            })
            .await
            .unwrap();
            stores.push((store, None));
        }
        _ => {
            {
                // Written to the process's stderr, not through the test harness's capture, so
                // that a skip shows in every run.
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "\n*** SKIPPED: PostgreSQL half (ZORGNET_TEST_POSTGRES_URL is not set) ***\n"
                );
            }
        }
    }
    stores
}
