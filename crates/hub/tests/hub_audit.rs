//! The hub's own access log (issue 16): every request to a module about people, served or
//! refused, leaves exactly one record of who asked what and with what outcome, with no BSN in
//! it; requests about no one leave none; an access whose record cannot be made durable is not
//! served; and the log verifies with the keys in the hub's data directory.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::json;
use support::{TestHub, call_hub};
use zorgnet_audit::{AgentKind, AuditRecord};
use zorgnet_audit::{CHAIN_KEY_FILE, CHECKPOINT_KEY_FILE};
use zorgnet_hub::audit::OPERATOR_AGENT_ID;

const GP: &str = "00000011";
const UZI: &str = "900000017";
const BSN: &str = "123456782";

/// The records the hub's log holds from `from` on.
async fn records_from(hub: &TestHub, from: u64) -> Vec<AuditRecord> {
    let log = hub.audit.clone();
    tokio::task::spawn_blocking(move || {
        (from..log.size())
            .map(|seq| serde_json::from_str(&log.record(seq).unwrap().unwrap()).unwrap())
            .collect()
    })
    .await
    .unwrap()
}

/// Sends a request and returns its status and the one record it left.
async fn one_record(
    hub: &TestHub,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<serde_json::Value>,
) -> (StatusCode, AuditRecord) {
    let before = hub.audit.size();
    let (status, answer) = call_hub(hub, method.clone(), path, key, body).await;
    let mut records = records_from(hub, before).await;
    assert_eq!(
        records.len(),
        1,
        "[{}] {method} {path} ({status} {answer}): {records:?}",
        hub.backend
    );
    let record = records.remove(0);
    assert_eq!(record.status, status.as_u16(), "[{}] {path}", hub.backend);
    (status, record)
}

/// The hub's database, opened again as `zorgnet audit verify` opens it.
async fn the_database(hub: &TestHub) -> zorgnet_db::Database {
    let (postgres, path) = (
        hub.postgres.clone(),
        hub.dir.path().join(zorgnet_audit::AUDIT_DATABASE_FILE),
    );
    tokio::task::spawn_blocking(move || match postgres {
        Some(url) => {
            zorgnet_db::Database::open_existing_postgres(&url, zorgnet_audit::MIGRATIONS).unwrap()
        }
        None => {
            zorgnet_db::Database::open_existing_sqlite(&path, zorgnet_audit::MIGRATIONS).unwrap()
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_about_people_leaves_one_record_of_who_what_and_outcome() {
    for hub in support::hubs().await {
        let backend = hub.backend;
        let gp = hub.organisation(GP, "Huisarts").await;
        let admin = hub.admin_key.clone();

        // An organisation.
        let (status, record) = one_record(&hub, Method::GET, "/relations", Some(&gp), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(record.agent.kind, AgentKind::Organisation, "[{backend}]");
        assert_eq!(record.agent.organisation.as_deref(), Some(GP));
        assert_eq!(record.agent.id, None);
        assert_eq!(record.request, "GET /relations");
        assert_eq!(record.action, "read");
        let now = zorgnet_db::now_ms();
        assert!(
            (now - 60_000..=now).contains(&record.at_ms),
            "{}",
            record.at_ms
        );

        // The operator.
        let professional =
            json!({"name": "Zorgverlener", "roles": [{"ura": GP, "role": "01.015"}]});
        let (status, record) = one_record(
            &hub,
            Method::PUT,
            &format!("/professionals/{UZI}"),
            Some(&admin),
            Some(professional.clone()),
        )
        .await;
        assert!(status.is_success(), "[{backend}] {status}");
        assert_eq!(record.agent.kind, AgentKind::System);
        assert_eq!(record.agent.id.as_deref(), Some(OPERATOR_AGENT_ID));
        assert_eq!(record.agent.organisation, None);
        assert_eq!(record.request, format!("PUT /professionals/{UZI}"));
        assert_eq!(record.action, "update");

        // Refused: forbidden to the operator, to the organisation, and unauthenticated.
        let (status, record) =
            one_record(&hub, Method::GET, "/relations", Some(&admin), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "[{backend}]");
        assert_eq!(record.agent.id.as_deref(), Some(OPERATOR_AGENT_ID));
        let (status, record) = one_record(
            &hub,
            Method::PUT,
            &format!("/professionals/{UZI}"),
            Some(&gp),
            Some(professional),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "[{backend}]");
        assert_eq!(record.agent.organisation.as_deref(), Some(GP));
        let (status, record) =
            one_record(&hub, Method::POST, "/nvi/lookup", None, Some(json!({}))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "[{backend}]");
        assert_eq!(record.agent.kind, AgentKind::Unauthenticated);
        assert_eq!(record.action, "operation:lookup");
        let (status, record) = one_record(
            &hub,
            Method::GET,
            "/relations",
            Some("zn_not-a-key-of-anyone"),
            None,
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "[{backend}] refused by authentication itself"
        );
        assert_eq!(record.agent.kind, AgentKind::Unauthenticated);
        assert_eq!(record.agent.organisation, None);

        // A BSN where it does not belong is not written down.
        let (_, record) = one_record(
            &hub,
            Method::GET,
            &format!("/relations?after={BSN}&limit=5"),
            Some(&gp),
            None,
        )
        .await;
        assert_eq!(record.request, "GET /relations?after=[bsn]&limit=5");
        assert!(!record.to_json().contains(BSN));

        // Requests about no one leave no record.
        let before = hub.audit.size();
        for (path, key) in [
            ("/health", None),
            ("/openapi.json", None),
            ("/registry/organisations", Some(&gp)),
            ("/trust/keys", None),
            ("/audit/checkpoints/00000011", Some(&gp)),
        ] {
            let (status, _) =
                call_hub(&hub, Method::GET, path, key.map(String::as_str), None).await;
            assert!(status.as_u16() < 500, "[{backend}] {path}: {status}");
        }
        assert_eq!(hub.audit.size(), before, "[{backend}]");

        // The log verifies with the keys in the hub's data directory, checkpoints included.
        let dir = hub.dir.path().to_path_buf();
        let log = hub.audit.clone();
        let db = the_database(&hub).await;
        let report = tokio::task::spawn_blocking(move || {
            let key = zorgnet_audit::ChainKey::load_or_create(&dir.join(CHAIN_KEY_FILE)).unwrap();
            let signer = zorgnet_audit::checkpoint_key(&dir.join(CHECKPOINT_KEY_FILE)).unwrap();
            log.checkpoint(&signer, "zorgnet-hub", zorgnet_db::now_ms())
                .unwrap();
            zorgnet_audit::verify(&db, &key, Some(&signer.verifying_key()), &[]).unwrap()
        })
        .await
        .unwrap();
        assert_eq!(report.problem, None, "[{backend}]");
        assert_eq!(report.records, hub.audit.size(), "[{backend}]");
        assert_eq!(report.checkpoints, 1, "[{backend}]");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_that_cannot_be_logged_is_not_served() {
    for hub in support::hubs().await {
        let backend = hub.backend;
        let gp = hub.organisation(GP, "Huisarts").await;
        let (status, _) = call_hub(&hub, Method::GET, "/relations", Some(&gp), None).await;
        assert_eq!(status, StatusCode::OK, "[{backend}]");
        let db = the_database(&hub).await;
        tokio::task::spawn_blocking(move || {
            db.with_writer(|conn| {
                conn.execute(
                    "ALTER TABLE audit_records RENAME TO audit_records_gone",
                    &[],
                )
            })
            .unwrap()
        })
        .await
        .unwrap();
        let (status, problem) = call_hub(&hub, Method::GET, "/relations", Some(&gp), None).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "[{backend}] {problem}"
        );
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("could not be logged"),
            "{problem}"
        );
        let (status, _) = call_hub(&hub, Method::GET, "/health", None, None).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "[{backend}] what is not logged is served"
        );
    }
}
