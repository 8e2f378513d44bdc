//! The hub as witness of the nodes' access logs (issue 16): a node publishes the signed
//! checkpoints of its log with consistency proofs, and the hub keeps the whole history; a node
//! that rewrote its log (changed, truncated and re-appended, or shrunk) and publishes again is
//! refused with a 409, counted and kept as a conflict; nobody publishes for another
//! organisation, a forged signature is refused, and malformed publications are 4xx.

mod support;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use support::{TestHub, call_hub};
use zorgnet_audit::CheckpointJson;
use zorgnet_audit::{AuditLog, ChainKey, Checkpoint, SigningKey};
use zorgnet_node::checkpoints::{PublishError, Published, publish_once};
use zorgnet_node::hub_client::HubClientError;

const GP: &str = "00000011";
const HOSPITAL: &str = "00000022";

/// An access log of its own database holding `records`, chained with `key`.
struct TestLog {
    log: Arc<AuditLog>,
    dir: tempfile::TempDir,
}

impl TestLog {
    /// The log's database, opened again.
    fn database(&self) -> zorgnet_db::Database {
        zorgnet_db::Database::open_sqlite(&self.dir.path().join("log.sqlite"), &[]).unwrap()
    }
}

async fn log_with(key: &ChainKey, records: Vec<String>) -> TestLog {
    let key = key.clone();
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let db = zorgnet_db::Database::open_sqlite(&dir.path().join("log.sqlite"), &[]).unwrap();
        let log = Arc::new(AuditLog::open(db, key).unwrap());
        if !records.is_empty() {
            log.append(&records).unwrap();
        }
        TestLog { log, dir }
    })
    .await
    .unwrap()
}

/// Records `first..last` of a log, the same text for the same number.
fn records(first: usize, last: usize) -> Vec<String> {
    (first..last)
        .map(|n| format!("{{\"record\":{n}}}"))
        .collect()
}

async fn append(log: &Arc<AuditLog>, records: Vec<String>) {
    let log = log.clone();
    tokio::task::spawn_blocking(move || log.append(&records).unwrap())
        .await
        .unwrap();
}

async fn checkpoint(log: &Arc<AuditLog>, signer: &SigningKey) -> Checkpoint {
    let (log, signer) = (log.clone(), signer.clone());
    tokio::task::spawn_blocking(move || log.checkpoint(&signer, GP, zorgnet_db::now_ms()).unwrap())
        .await
        .unwrap()
}

/// Signs a checkpoint of `log` and publishes it for the GP.
async fn publish(
    hub: &TestHub,
    key: &str,
    log: &Arc<AuditLog>,
    signer: &SigningKey,
) -> Result<Published, PublishError> {
    let checkpoint = checkpoint(log, signer).await;
    publish_once(log, &hub.client(key), &checkpoint, &signer.verifying_key()).await
}

fn refused_status(result: Result<Published, PublishError>) -> u16 {
    match result {
        Err(PublishError::Hub(HubClientError::Refused { status, .. })) => status,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The sizes of the GP's checkpoints the hub holds.
async fn history(hub: &TestHub, key: &str) -> Vec<u64> {
    let (status, history) = call_hub(
        hub,
        Method::GET,
        &format!("/audit/checkpoints/{GP}"),
        Some(key),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    history["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["size"].as_u64().unwrap())
        .collect()
}

/// The reasons of the GP's conflicts the hub keeps.
async fn conflicts(hub: &TestHub, key: &str) -> Vec<String> {
    let (status, conflicts) = call_hub(
        hub,
        Method::GET,
        &format!("/audit/checkpoints/{GP}/conflicts"),
        Some(key),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{conflicts}");
    conflicts["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["reason"].as_str().unwrap().to_string())
        .collect()
}

/// The value of a counter with a `reason` label in the process's metrics, read through a
/// node's `/metrics` (the recorder is process-wide, and the hub serves none of its own).
async fn inconsistent_checkpoints(node: &support::TestNode, reason: &str) -> u64 {
    let metrics = reqwest::get(format!("{}/metrics", node.base.trim_end_matches("/fhir")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!("zorgnet_hub_audit_inconsistent_checkpoints_total{{reason=\"{reason}\"}}");
    metrics
        .lines()
        .find(|line| line.starts_with(&series))
        .and_then(|line| line.split_whitespace().last())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_publishes_its_checkpoints_and_the_hub_keeps_the_history() {
    for hub in support::hubs().await {
        let backend = hub.backend;
        let gp = hub.organisation(GP, "Huisarts").await;
        let hospital = hub.organisation(HOSPITAL, "Ziekenhuis").await;
        let node = support::node(&hub, GP, &gp, false).await;
        let signer = SigningKey::from_bytes(&[7; 32]);
        let (status, _) = call_hub(
            &hub,
            Method::GET,
            &format!("/audit/checkpoints/{GP}/latest"),
            Some(&hospital),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "[{backend}] nothing yet");

        // The node's own access log: every FHIR request is a record.
        let log = &node.audit;
        let mut sizes = Vec::new();
        for round in 0..3 {
            for _ in 0..=round {
                let answer = reqwest::get(format!("{}/Patient", node.base))
                    .await
                    .unwrap();
                assert_eq!(answer.status(), StatusCode::OK);
            }
            let published = publish(&hub, &gp, log, &signer).await.unwrap();
            assert_eq!(published, Published::Kept, "[{backend}] round {round}");
            sizes.push(log.size());
        }
        assert_eq!(sizes, [1, 3, 6], "[{backend}]");
        assert_eq!(
            publish(&hub, &gp, log, &signer).await.unwrap(),
            Published::Held,
            "[{backend}] nothing new: the hub holds it already"
        );
        assert_eq!(history(&hub, &hospital).await, sizes, "[{backend}]");
        assert_eq!(
            history(&hub, &hub.admin_key).await,
            sizes,
            "[{backend}] the operator reads it too"
        );

        // The history is what the node signed: every checkpoint verifies with the key the
        // hub lists, and each later one extends the one before.
        let (_, listed) = call_hub(
            &hub,
            Method::GET,
            &format!("/audit/checkpoints/{GP}?limit=2"),
            Some(&hospital),
            None,
        )
        .await;
        assert_eq!(
            listed["key"],
            STANDARD.encode(signer.verifying_key().to_bytes())
        );
        assert_eq!(listed["next"], 3, "[{backend}] a second page: {listed}");
        let (_, rest) = call_hub(
            &hub,
            Method::GET,
            &format!("/audit/checkpoints/{GP}?after=3"),
            Some(&hospital),
            None,
        )
        .await;
        assert_eq!(rest["next"], Value::Null);
        let held: Vec<Checkpoint> = listed["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .chain(rest["checkpoints"].as_array().unwrap())
            .map(|c| {
                let mut c = c.clone();
                c.as_object_mut().unwrap().remove("received_at");
                serde_json::from_value::<CheckpointJson>(c)
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(held.len(), 3);
        for pair in held.windows(2) {
            assert_eq!(pair[1].verify(&signer.verifying_key()), Ok(()));
            let proof = node
                .audit
                .consistency_proof(pair[0].size, pair[1].size)
                .unwrap();
            assert!(zorgnet_audit::check_consistency(
                &proof,
                pair[1].size,
                pair[1].root,
                pair[0].size,
                pair[0].root
            ));
        }
        let (status, latest) = call_hub(
            &hub,
            Method::GET,
            &format!("/audit/checkpoints/{GP}/latest"),
            Some(&hospital),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(latest["size"], 6);
        assert_eq!(latest["origin"], GP);
        assert_eq!(conflicts(&hub, &hospital).await, Vec::<String>::new());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_rewrote_its_log_is_caught_when_it_publishes_again() {
    for hub in support::hubs().await {
        let backend = hub.backend;
        let gp = hub.organisation(GP, "Huisarts").await;
        let hospital = hub.organisation(HOSPITAL, "Ziekenhuis").await;
        let metrics_node = support::node(&hub, HOSPITAL, &hospital, false).await;
        let chain_key = ChainKey::generate();
        let signer = SigningKey::from_bytes(&[8; 32]);
        let honest_log = log_with(&chain_key, records(0, 10)).await;
        let honest = &honest_log.log;
        assert_eq!(
            publish(&hub, &gp, honest, &signer).await.unwrap(),
            Published::Kept
        );
        let reasons = ["fork", "proof", "smaller"];
        let mut counted = Vec::new();
        for reason in reasons {
            counted.push(inconsistent_checkpoints(&metrics_node, reason).await);
        }

        // Record 3 changed, same key, same signer, same size: another root.
        let mut changed = records(0, 10);
        changed[3] = "{\"record\":\"changed\"}".into();
        let forked_log = log_with(&chain_key, changed).await;
        let forked = &forked_log.log;
        assert_eq!(
            refused_status(publish(&hub, &gp, forked, &signer).await),
            409,
            "[{backend}] a rewritten log of the same size"
        );
        // Truncated after record 5 and appended to beyond the published size: the proof
        // from the published checkpoint cannot hold.
        let truncated = log_with(&chain_key, records(0, 5)).await;
        append(&truncated.log, records(100, 112)).await;
        assert_eq!(
            refused_status(publish(&hub, &gp, &truncated.log, &signer).await),
            409,
            "[{backend}] a truncated and re-appended log"
        );
        // Records removed from the end.
        let shrunk = log_with(&chain_key, records(0, 6)).await;
        assert_eq!(
            refused_status(publish(&hub, &gp, &shrunk.log, &signer).await),
            409,
            "[{backend}] a smaller log"
        );

        assert_eq!(
            conflicts(&hub, &hospital).await,
            ["fork", "proof", "smaller"],
            "[{backend}] each refusal is kept as evidence"
        );
        for (reason, before) in reasons.into_iter().zip(counted) {
            assert_eq!(
                inconsistent_checkpoints(&metrics_node, reason).await,
                before + 1,
                "[{backend}] {reason} counted"
            );
        }
        assert_eq!(
            history(&hub, &hospital).await,
            [10],
            "[{backend}] the history is untouched"
        );

        // The honest log goes on from where it was published.
        append(honest, records(10, 15)).await;
        assert_eq!(
            publish(&hub, &gp, honest, &signer).await.unwrap(),
            Published::Kept
        );
        assert_eq!(history(&hub, &hospital).await, [10, 15], "[{backend}]");

        // The hub's copies check the honest log and catch the rewritten one.
        let (_, listed) = call_hub(
            &hub,
            Method::GET,
            &format!("/audit/checkpoints/{GP}"),
            Some(&hospital),
            None,
        )
        .await;
        let published: Vec<Checkpoint> = listed["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let mut c = c.clone();
                c.as_object_mut().unwrap().remove("received_at");
                serde_json::from_value::<CheckpointJson>(c)
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        let owner = signer.verifying_key();
        let (honest_db, forked_db) = (honest_log.database(), forked_log.database());
        let (key, copies) = (chain_key.clone(), published.clone());
        let (honest_report, forked_report) = tokio::task::spawn_blocking(move || {
            (
                zorgnet_audit::verify(&honest_db, &key, Some(&owner), &copies).unwrap(),
                zorgnet_audit::verify(&forked_db, &key, Some(&owner), &copies).unwrap(),
            )
        })
        .await
        .unwrap();
        assert_eq!(honest_report.problem, None, "[{backend}]");
        assert!(
            forked_report.problem.is_some(),
            "[{backend}] the hub's copies do not fit the rewritten log"
        );
    }
}

#[tokio::test]
async fn an_organisation_publishes_only_its_own_checkpoints() {
    let hub = support::start(None).await;
    let gp = hub.organisation(GP, "Huisarts").await;
    let hospital = hub.organisation(HOSPITAL, "Ziekenhuis").await;
    let signer = SigningKey::from_bytes(&[9; 32]);
    let log = log_with(&ChainKey::generate(), records(0, 4)).await;
    let checkpoint = checkpoint(&log.log, &signer).await;
    let body = json!({
        "checkpoint": CheckpointJson::of(&checkpoint),
        "key": STANDARD.encode(signer.verifying_key().to_bytes()),
    });
    let path = format!("/audit/checkpoints/{GP}");

    // The hospital, with its own valid key, for the GP: refused, and nothing is pinned.
    let (status, problem) = call_hub(
        &hub,
        Method::POST,
        &path,
        Some(&hospital),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains(HOSPITAL),
        "{problem}"
    );
    // The GP's checkpoint under the hospital's own URA: not the hospital's log.
    let (status, problem) = call_hub(
        &hub,
        Method::POST,
        &format!("/audit/checkpoints/{HOSPITAL}"),
        Some(&hospital),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    // Neither the operator nor an anonymous caller publishes.
    let (status, _) = call_hub(
        &hub,
        Method::POST,
        &path,
        Some(&hub.admin_key),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call_hub(&hub, Method::POST, &path, None, Some(body.clone())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call_hub(&hub, Method::GET, &path, None, None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "reading needs credentials"
    );
    let (status, _) = call_hub(&hub, Method::GET, &path, Some(&gp), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was kept");

    let (status, kept) = call_hub(&hub, Method::POST, &path, Some(&gp), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{kept}");
    assert_eq!(kept["size"], 4);
}

#[tokio::test]
async fn a_forged_signature_is_refused() {
    let hub = support::start(None).await;
    let gp = hub.organisation(GP, "Huisarts").await;
    let signer = SigningKey::from_bytes(&[10; 32]);
    let forger = SigningKey::from_bytes(&[11; 32]);
    let chain_key = ChainKey::generate();
    let log = log_with(&chain_key, records(0, 4)).await;
    let log = &log.log;
    publish(&hub, &gp, log, &signer).await.unwrap();
    append(log, records(4, 8)).await;

    // Signed by another key, claiming the pinned one.
    let genuine = checkpoint(log, &signer).await;
    let forged = Checkpoint::sign(
        &forger,
        GP,
        genuine.size,
        genuine.root,
        genuine.chain,
        genuine.signed_ms,
    );
    let proof = log.consistency_proof(4, 8).unwrap();
    let body = |checkpoint: &Checkpoint, key: &SigningKey| {
        json!({
            "checkpoint": CheckpointJson::of(checkpoint),
            "key": STANDARD.encode(key.verifying_key().to_bytes()),
            "previous_size": 4,
            "proof": proof.iter().map(|h| STANDARD.encode(h.0)).collect::<Vec<_>>(),
        })
    };
    let path = format!("/audit/checkpoints/{GP}");
    let (status, problem) = call_hub(
        &hub,
        Method::POST,
        &path,
        Some(&gp),
        Some(body(&forged, &signer)),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("signature"),
        "{problem}"
    );
    // A signature changed in one bit.
    let mut flipped = genuine.clone();
    flipped.signature[0] ^= 1;
    let (status, _) = call_hub(
        &hub,
        Method::POST,
        &path,
        Some(&gp),
        Some(body(&flipped, &signer)),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // Correctly signed, but by another key than the pinned one: the history cannot restart
    // under a new key.
    let (status, problem) = call_hub(
        &hub,
        Method::POST,
        &path,
        Some(&gp),
        Some(body(&forged, &forger)),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(conflicts(&hub, &gp).await, ["key"]);
    assert_eq!(history(&hub, &gp).await, [4]);

    let (status, kept) = call_hub(
        &hub,
        Method::POST,
        &path,
        Some(&gp),
        Some(body(&genuine, &signer)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{kept}");
    assert_eq!(history(&hub, &gp).await, [4, 8]);
}

#[tokio::test]
async fn malformed_publications_are_client_errors() {
    let hub = support::start(None).await;
    let gp = hub.organisation(GP, "Huisarts").await;
    let signer = SigningKey::from_bytes(&[12; 32]);
    let log = log_with(&ChainKey::generate(), records(0, 2)).await;
    let checkpoint = checkpoint(&log.log, &signer).await;
    let good = json!({
        "checkpoint": CheckpointJson::of(&checkpoint),
        "key": STANDARD.encode(signer.verifying_key().to_bytes()),
    });
    let with = |pointer: &str, value: Value| {
        let mut body = good.clone();
        *body.pointer_mut(pointer).unwrap() = value;
        body
    };
    let path = format!("/audit/checkpoints/{GP}");
    for (what, body) in [
        ("not an object", json!([1, 2])),
        ("no checkpoint", json!({"key": good["key"]})),
        ("no key", json!({"checkpoint": good["checkpoint"]})),
        ("an unknown field", {
            let mut body = good.clone();
            body["checkpoint"]["extra"] = json!(1);
            body
        }),
        (
            "a root not in base64",
            with("/checkpoint/root", json!("%%%")),
        ),
        (
            "a short root",
            with("/checkpoint/root", json!(STANDARD.encode([0; 16]))),
        ),
        ("a negative size", with("/checkpoint/size", json!(-1))),
        (
            "a size beyond any log",
            with("/checkpoint/size", json!(u64::MAX)),
        ),
        (
            "a signature of the wrong length",
            with("/checkpoint/signature", json!(STANDARD.encode([0; 10]))),
        ),
        ("a key that is text", with("/key", json!("key"))),
        ("a proof that is not a list", {
            let mut body = good.clone();
            body["proof"] = json!("abc");
            body
        }),
        ("a proof of text", {
            let mut body = good.clone();
            body["proof"] = json!(["not a hash"]);
            body
        }),
        ("a proof far too long", {
            let mut body = good.clone();
            body["proof"] = json!(vec![STANDARD.encode([0; 32]); 1_000]);
            body
        }),
    ] {
        let (status, problem) = call_hub(&hub, Method::POST, &path, Some(&gp), Some(body)).await;
        assert!(status.is_client_error(), "{what}: {status} {problem}");
        assert!(problem["detail"].is_string(), "{what}: {problem}");
    }
    let response = reqwest::Client::new()
        .post(format!("{}{path}", hub.base))
        .bearer_auth(&gp)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    for bad in [
        "/audit/checkpoints/123/latest",
        "/audit/checkpoints/not-a-ura",
        "/audit/checkpoints/00000011?limit=many",
        "/audit/checkpoints/00000011/conflicts?sort=size",
    ] {
        let (status, problem) = call_hub(&hub, Method::GET, bad, Some(&gp), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {problem}");
    }
    let (status, _) = call_hub(&hub, Method::GET, &path, Some(&gp), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing malformed was kept");
    let (status, _) = call_hub(&hub, Method::POST, &path, Some(&gp), Some(good)).await;
    assert_eq!(status, StatusCode::CREATED);
}
