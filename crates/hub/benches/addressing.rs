//! Benchmark: a full address-book sync of 1,000 organisations into an empty hub.
//!
//! Each organisation is its own mCSD update supplier: a real node server (`zorgnet_node`
//! router over its own SQLite store, on its own loopback port) holding its Organization and
//! FHIR Endpoint. All are listed in the hub's LRZa list; the benchmark then times
//! `addressing::sync_once` into an empty address book (7 `_history` polls per supplier), and a
//! second sync with nothing changed (the steady-state poll). The hub runs on SQLite, and on
//! PostgreSQL too when `ZORGNET_BENCH_POSTGRES_URL` is set.
//!
//! Run: `cargo bench -p zorgnet-hub --bench addressing`
//! (`ZORGNET_BENCH_SUPPLIERS` changes the number of organisations).

use std::sync::Arc;
use std::time::Instant;
use zorgnet_fhir::search::SearchRegistry;
use zorgnet_hub::addressing::{self, SyncReport};
use zorgnet_hub::{Hub, HubConfig};
use zorgnet_node::NodeIdentity;
use zorgnet_node::addressing::publish_own_entries;
use zorgnet_store::Store;

/// Organisations (and so suppliers) when `ZORGNET_BENCH_SUPPLIERS` is not set.
const DEFAULT_SUPPLIERS: usize = 1_000;
/// The target for a full sync of 1,000 organisations, in seconds.
const TARGET_SECONDS: f64 = 10.0;

struct Supplier {
    ura: String,
    name: String,
    base: String,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let n_suppliers = std::env::var("ZORGNET_BENCH_SUPPLIERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SUPPLIERS);
    let nodes_dir = tempfile::tempdir().expect("temporary directory");
    let started = Instant::now();
    let mut suppliers = Vec::with_capacity(n_suppliers);
    for i in 0..n_suppliers {
        suppliers.push(start_node(nodes_dir.path(), i).await);
    }
    println!(
        "started {n_suppliers} node servers (one SQLite store and port each) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let suppliers = Arc::new(suppliers);

    bench_hub("SQLite", None, &suppliers).await;
    match std::env::var("ZORGNET_BENCH_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => {
            let schema = format!(
                "zorgnet_bench_addressing_{}_{}",
                std::process::id(),
                zorgnet_db::now_ms()
            );
            let schema_url = tokio::task::spawn_blocking(move || {
                zorgnet_db::postgres_fresh_schema(&url, &schema).expect("fresh schema")
            })
            .await
            .expect("blocking task");
            bench_hub("PostgreSQL", Some(schema_url), &suppliers).await;
        }
        _ => {
            println!("\n*** SKIPPED: PostgreSQL hub (ZORGNET_BENCH_POSTGRES_URL is not set) ***\n")
        }
    }
}

async fn start_node(dir: &std::path::Path, i: usize) -> Supplier {
    let ura = format!("{:08}", 10_000_000 + i);
    let name = format!("Zorgaanbieder {i}");
    let path = dir.join(format!("node-{i}.sqlite"));
    let store =
        tokio::task::spawn_blocking(move || Store::open_sqlite(&path, SearchRegistry::r4()))
            .await
            .expect("blocking task")
            .expect("node store");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}/fhir", listener.local_addr().expect("address"));
    let identity = NodeIdentity {
        ura: ura.clone(),
        name: name.clone(),
    };
    publish_own_entries(&store, &identity, &base)
        .await
        .expect("publish");
    let router = zorgnet_rest::router(store, identity, base.clone());
    tokio::spawn(zorgnet_node::serve(
        listener,
        router,
        std::future::pending(),
    ));
    Supplier { ura, name, base }
}

async fn bench_hub(backend: &str, postgres: Option<String>, suppliers: &Arc<Vec<Supplier>>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = HubConfig {
        data_dir: dir.path().to_path_buf(),
        postgres,
        allow_insecure_endpoints: true,
        client_tls: None,
    };
    let hub = tokio::task::spawn_blocking(move || Hub::open(&config))
        .await
        .expect("blocking task")
        .expect("hub");
    let state = hub.state();
    let listed = suppliers.clone();
    let db = state.db.clone();
    tokio::task::spawn_blocking(move || register(&db, &listed))
        .await
        .expect("blocking task");

    let started = Instant::now();
    let first = addressing::sync_once(&state).await;
    let full_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let second = addressing::sync_once(&state).await;
    let idle_seconds = started.elapsed().as_secs_f64();

    let counts = state.addressing.store().counts().await.expect("counts");
    let count = |t: &str| counts.iter().find(|(n, _)| n == t).map_or(0, |(_, c)| *c);
    println!(
        "hub on {backend}: full sync of {} suppliers: {full_seconds:.2} s ({} applied, {} failed; \
         address book holds {} Organizations, {} Endpoints) — target ≤ {TARGET_SECONDS} s: {}",
        suppliers.len(),
        applied(&first),
        failed(&first),
        count("Organization"),
        count("Endpoint"),
        if full_seconds <= TARGET_SECONDS {
            "met"
        } else {
            "NOT MET"
        }
    );
    println!(
        "hub on {backend}: sync with nothing changed: {idle_seconds:.2} s ({} applied, {} failed)",
        applied(&second),
        failed(&second)
    );
    drop(state);
    tokio::task::spawn_blocking(move || drop(hub))
        .await
        .expect("blocking task");
}

/// Lists every supplier in the LRZa table, as `PUT /addressing/suppliers/{ura}` would.
fn register(db: &zorgnet_db::Database, suppliers: &[Supplier]) {
    db.write_transaction(|conn| -> Result<(), zorgnet_db::DbError> {
        let d = conn.dialect();
        let sql = format!(
            "INSERT INTO addressing_suppliers (ura, name, fhir_base_url, updated_at_ms) VALUES ({}, {}, {}, {})",
            d.placeholder(1),
            d.placeholder(2),
            d.placeholder(3),
            d.placeholder(4)
        );
        for s in suppliers {
            conn.execute(
                &sql,
                &[
                    s.ura.as_str().into(),
                    s.name.as_str().into(),
                    s.base.as_str().into(),
                    zorgnet_db::now_ms().into(),
                ],
            )?;
        }
        Ok(())
    })
    .expect("register suppliers");
}

fn applied(report: &SyncReport) -> usize {
    report.suppliers.iter().map(|s| s.applied).sum()
}

fn failed(report: &SyncReport) -> usize {
    report.suppliers.iter().filter(|s| !s.ok).count()
}
