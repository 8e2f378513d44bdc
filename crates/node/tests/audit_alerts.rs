//! The access log's monitor in a running node, over HTTP: a professional of the node's own
//! organisation who opens one patient more than the limit raises one alert, which is a
//! record of the log (chained: the log still verifies), and is counted at `/metrics`.

use reqwest::StatusCode;
use serde_json::json;
use std::sync::Arc;
use zorgnet_audit::{Alert, AuditRecord, ChainKey, Monitor, MonitorRules, Rule};
use zorgnet_idp::{ClientRegistration, DemoUser, DevIdp, IdpConfig, KeySource};
use zorgnet_node::NodeIdentity;
use zorgnet_node::authn::{LocalClients, NodeOidc};
use zorgnet_trust::oidc::{OidcConfig, OidcVerifier};

const ADMIN_KEY: &str = "zn_node_test-admin-key";
const STAFF_CLIENT: &str = "node-staff";
const UZI: &str = "123456789";
/// The test's limit of different patients one professional opens in an hour.
const PATIENTS_MAX: u32 = 3;
const ALERTS: &str = "zorgnet_audit_alerts_total{rule=\"unrelated-patients\"}";

/// The value of the counter `series` at the node's `/metrics`; 0 when it is not there.
async fn counter(http: &reqwest::Client, base: &str, series: &str) -> u64 {
    let metrics = http
        .get(format!("{base}/metrics"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .map_or(0, |value| value.trim().parse().unwrap())
}

#[tokio::test]
async fn a_professional_opening_too_many_patients_raises_one_alert_in_the_log() {
    let idp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", idp_listener.local_addr().unwrap());
    let idp = DevIdp::new(IdpConfig {
        resources: Vec::new(),
        issuer: issuer.clone(),
        clients: vec![ClientRegistration {
            client_id: STAFF_CLIENT.into(),
            redirect_uris: vec![format!("{issuer}/callback")],
        }],
        users: vec![DemoUser::professional("gp", "Dr. Jansen", UZI)],
        key: KeySource::Ephemeral,
    })
    .unwrap();
    let idp_router = idp.router();
    tokio::spawn(async move { axum::serve(idp_listener, idp_router).await });
    let oidc = NodeOidc {
        staff: Some(Arc::new(
            OidcVerifier::new(OidcConfig {
                issuer,
                audience: STAFF_CLIENT.into(),
            })
            .unwrap(),
        )),
        citizens: None,
    };

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.sqlite");
    let key = ChainKey::generate();
    let chain_key = key.clone();
    let (store, log, audit) = tokio::task::spawn_blocking(move || {
        let store =
            zorgnet_store::Store::open_sqlite(&path, zorgnet_fhir::search::SearchRegistry::r4())
                .unwrap();
        let (log, audit) = zorgnet_node::audit::open_with_key(&store, chain_key).unwrap();
        (store, log, audit)
    })
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let root = format!("http://{}", listener.local_addr().unwrap());
    let base = format!("{root}/fhir");
    let router = zorgnet_node::router_in_network(
        store.clone(),
        NodeIdentity {
            ura: "00000011".into(),
            name: "Huisartsenpraktijk".into(),
        },
        base.clone(),
        None,
        LocalClients::key(ADMIN_KEY),
        oidc,
        audit,
    );
    let rules = MonitorRules {
        unrelated_patients_max: PATIENTS_MAX,
        ..MonitorRules::default()
    };
    let router = zorgnet_node::audit::monitored(router, Monitor::new(&rules).unwrap());
    tokio::spawn(zorgnet_node::serve(
        listener,
        router,
        std::future::pending(),
    ));

    let http = reqwest::Client::new();
    let patients: Vec<String> = (0..=PATIENTS_MAX + 1).map(|i| format!("p{i}")).collect();
    for id in &patients {
        let answer = http
            .put(format!("{base}/Patient/{id}"))
            .bearer_auth(ADMIN_KEY)
            .header("content-type", "application/fhir+json")
            .body(json!({"resourceType": "Patient", "id": id}).to_string())
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{id}: {}", answer.status());
    }
    let alerts_before = counter(&http, &root, ALERTS).await;
    let first = log.size();

    let token = idp
        .access_token(STAFF_CLIENT, "gp", "openid user/*.read")
        .unwrap();
    let mut reads = Vec::new();
    for id in &patients {
        let answer = http
            .get(format!("{base}/Patient/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{id}");
        reads.push(log.size());
    }

    let records: Vec<AuditRecord> = (first..log.size())
        .map(|seq| serde_json::from_str(&log.record(seq).unwrap().unwrap()).unwrap())
        .collect();
    assert_eq!(
        records.len(),
        patients.len() + 1,
        "one record per read, and one alert"
    );
    let [alert]: [Alert; 1] = records
        .iter()
        .filter_map(Alert::from_record)
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    assert_eq!(alert.rule, Rule::UnrelatedPatients);
    assert_eq!(alert.agent.id.as_deref(), Some(UZI));
    assert_eq!(alert.patients, patients[..=PATIENTS_MAX as usize]);
    assert_eq!((alert.count, alert.max), (PATIENTS_MAX + 1, PATIENTS_MAX));
    let trigger: AuditRecord =
        serde_json::from_str(&log.record(alert.seq).unwrap().unwrap()).unwrap();
    assert_eq!(
        trigger.request,
        format!("GET /fhir/Patient/p{PATIENTS_MAX}"),
        "the alert names the read of the patient one over the limit"
    );
    assert_eq!(trigger.at_ms, alert.at_ms);
    assert_eq!(
        reads[PATIENTS_MAX as usize],
        alert.seq + 2,
        "the alert's record follows the read before its answer leaves"
    );
    let record = log.record(alert.seq + 1).unwrap().unwrap();
    assert_eq!(
        serde_json::from_str::<AuditRecord>(&record).unwrap(),
        alert.to_record()
    );

    assert_eq!(
        counter(&http, &root, ALERTS).await,
        alerts_before + 1,
        "counted at /metrics"
    );
    let report = tokio::task::spawn_blocking(move || {
        zorgnet_audit::verify(store.database(), &key, None, &[]).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(report.problem, None);
    assert_eq!(report.records, log.size());
}
