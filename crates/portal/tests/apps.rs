//! The same data for apps: the portal's read-only FHIR R4 endpoint (`/fhir`, SMART scopes)
//! and its JSON API for choices and the access log (`/api/v1`), with citizens' bearer tokens
//! of the development provider, against the portal's world (see `support`): two real nodes,
//! a source that does not answer, and, for the choices, a real hub.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use support::*;
use zorgnet_portal::Source;

const OAUTH_URIS: &str = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris";

/// The world with a source nobody listens at.
async fn world() -> World {
    let (closed, closed_url) = listener().await;
    drop(closed);
    let (world, _) = start(vec![Source {
        name: "Apotheek Gesloten".into(),
        ura: "00000033".into(),
        fhir_base: format!("{closed_url}/fhir"),
    }])
    .await;
    world
}

fn token(world: &World, subject: &str, scope: &str) -> String {
    world
        .idp
        .access_token(PORTAL_CLIENT, subject, scope)
        .unwrap()
}

async fn fhir_get(world: &World, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().get(format!("{}/fhir/{path}", world.portal));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let answer = request.send().await.unwrap();
    let status = answer.status();
    assert_eq!(
        answer.headers()["content-type"],
        if path.starts_with(".well-known") {
            "application/json"
        } else {
            "application/fhir+json"
        },
        "{path}"
    );
    (status, answer.json().await.unwrap())
}

/// The matches of a searchset Bundle: (fullUrl, resource).
fn matches(bundle: &Value) -> Vec<(String, Value)> {
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "searchset");
    bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| {
            (
                e["fullUrl"].as_str().unwrap().to_string(),
                e["resource"].clone(),
            )
        })
        .collect()
}

/// The outcome entry's OperationOutcome of a searchset Bundle, if any.
fn outcome_entry(bundle: &Value) -> Option<Value> {
    let entry = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")?;
    assert!(entry["fullUrl"].as_str().unwrap().starts_with("urn:uuid:"));
    assert_eq!(entry["resource"]["resourceType"], "OperationOutcome");
    assert!(entry["resource"]["id"].is_string());
    Some(entry["resource"].clone())
}

/// The fullUrls at the nodes of `citizen`'s resources of `resource_type`.
fn loaded_urls(world: &World, citizen: &Citizen, resource_type: &str) -> BTreeSet<String> {
    world
        .nodes
        .iter()
        .zip(&citizen.loaded)
        .flat_map(|(node, loaded)| {
            loaded
                .iter()
                .filter(|t| t.split('/').next() == Some(resource_type))
                .map(move |t| format!("{}/{t}", node.base))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_read_the_merged_record_with_a_standard_fhir_client() {
    let world = world().await;
    let issuer = world.idp.issuer().to_string();
    let discovery: Value = reqwest::get(format!("{issuer}/.well-known/openid-configuration"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    // Discovery: the CapabilityStatement and the SMART configuration, without a token.
    let (status, statement) = fhir_get(&world, "metadata", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(statement["resourceType"], "CapabilityStatement");
    assert_eq!(statement["fhirVersion"], "4.0.1");
    assert_eq!(statement["kind"], "instance");
    let rest = &statement["rest"][0];
    assert_eq!(rest["mode"], "server");
    let oauth = rest["security"]["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == OAUTH_URIS)
        .unwrap();
    let uri = |name: &str| {
        oauth["extension"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["url"] == name)
            .unwrap()["valueUri"]
            .clone()
    };
    assert_eq!(uri("authorize"), discovery["authorization_endpoint"]);
    assert_eq!(uri("token"), discovery["token_endpoint"]);
    let observation = rest["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Observation")
        .unwrap();
    let interactions: BTreeSet<&str> = observation["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
        .collect();
    assert_eq!(interactions, BTreeSet::from(["read", "search-type"]));
    let parameters: BTreeSet<&str> = observation["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(parameters.contains("patient") && parameters.contains("_id"));
    for resource in rest["resource"].as_array().unwrap() {
        for interaction in resource["interaction"].as_array().unwrap() {
            assert!(["read", "search-type"].contains(&interaction["code"].as_str().unwrap()));
        }
    }

    let (status, smart) = fhir_get(&world, ".well-known/smart-configuration", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        smart["authorization_endpoint"],
        discovery["authorization_endpoint"]
    );
    assert_eq!(smart["token_endpoint"], discovery["token_endpoint"]);
    let capabilities: BTreeSet<&str> = smart["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for capability in [
        "launch-standalone",
        "client-public",
        "permission-patient",
        "permission-v1",
        "permission-v2",
    ] {
        assert!(capabilities.contains(capability), "{capability}");
    }
    assert!(
        smart["scopes_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("patient/*.read"))
    );

    // A search with a citizen's token: the merged record of both nodes, each entry at its
    // source, and the source that did not answer named in the outcome entry.
    let anna = token(&world, "anna", "openid patient/*.read");
    let (status, bundle) = fhir_get(&world, "Observation", Some(&anna)).await;
    assert_eq!(status, StatusCode::OK);
    let found = matches(&bundle);
    let urls: BTreeSet<String> = found.iter().map(|(url, _)| url.clone()).collect();
    let expected = loaded_urls(&world, &world.anna, "Observation");
    assert!(expected.len() >= 3, "{expected:?}");
    assert_eq!(urls, expected);
    assert_eq!(bundle["total"], json!(expected.len()));
    for node in &world.nodes {
        assert!(
            urls.iter().any(|u| u.starts_with(&node.base)),
            "{}",
            node.name
        );
    }
    for (url, resource) in &found {
        let source = resource["meta"]["source"].as_str().unwrap();
        assert!(url.starts_with(source), "{url} {source}");
        assert_eq!(resource["resourceType"], "Observation");
    }
    let outcome = outcome_entry(&bundle).expect("an outcome entry");
    assert!(
        outcome.to_string().contains("Apotheek Gesloten"),
        "{outcome}"
    );

    // The Patient is at both nodes under one id: a search finds both, a read is ambiguous.
    let (status, patients) = fhir_get(&world, "Patient", Some(&anna)).await;
    assert_eq!(status, StatusCode::OK);
    let patients = matches(&patients);
    assert_eq!(patients.len(), 2);
    let anna_id = patients[0].1["id"].as_str().unwrap().to_string();
    let (status, ambiguous) = fhir_get(&world, &format!("Patient/{anna_id}"), Some(&anna)).await;
    assert_eq!(status, StatusCode::MULTIPLE_CHOICES);
    assert_eq!(ambiguous["resourceType"], "OperationOutcome");

    // A read by id of a resource one source holds.
    let (status, hb) = fhir_get(&world, "Observation/hb-0", Some(&anna)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(hb["id"], "hb-0");
    assert!(
        world
            .nodes
            .iter()
            .any(|n| hb["meta"]["source"] == n.base.as_str())
    );
    let (status, missing) = fhir_get(&world, "Observation/nergens", Some(&anna)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["resourceType"], "OperationOutcome");

    // The parameters supported, and those that are not.
    let (_, one) = fhir_get(&world, "Observation?_id=hb-1", Some(&anna)).await;
    assert_eq!(matches(&one).len(), 1);
    let (_, mine) = fhir_get(
        &world,
        &format!("Observation?patient=Patient/{anna_id}"),
        Some(&anna),
    )
    .await;
    assert_eq!(matches(&mine).len(), expected.len());
    let (_, none) = fhir_get(&world, "Observation?patient=iemand-anders", Some(&anna)).await;
    assert!(matches(&none).is_empty());
    let (_, counted) = fhir_get(&world, "Observation?_count=1", Some(&anna)).await;
    assert_eq!(matches(&counted).len(), 1);
    assert_eq!(counted["total"], json!(expected.len()));
    let (status, lenient) = fhir_get(&world, "Observation?code=718-7", Some(&anna)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(matches(&lenient).len(), expected.len());
    assert!(
        outcome_entry(&lenient)
            .unwrap()
            .to_string()
            .contains("code")
    );
    let strict = reqwest::Client::new()
        .get(format!("{}/fhir/Observation?code=718-7", world.portal))
        .bearer_auth(&anna)
        .header("prefer", "handling=strict")
        .send()
        .await
        .unwrap();
    assert_eq!(strict.status(), StatusCode::BAD_REQUEST);
    let strict: Value = strict.json().await.unwrap();
    assert_eq!(strict["resourceType"], "OperationOutcome");

    // Writes are refused.
    let http = reqwest::Client::new();
    for (method, path) in [
        (reqwest::Method::POST, "Observation"),
        (reqwest::Method::PUT, "Observation/hb-0"),
        (reqwest::Method::PATCH, "Observation/hb-0"),
        (reqwest::Method::DELETE, "Observation/hb-0"),
        (reqwest::Method::POST, ""),
    ] {
        let answer = http
            .request(
                method.clone(),
                format!("{}/fhir/{path}", world.portal).trim_end_matches('/'),
            )
            .bearer_auth(&anna)
            .header("content-type", "application/fhir+json")
            .body(json!({"resourceType": "Observation"}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(
            answer.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["resourceType"], "OperationOutcome");
    }

    // Another citizen never sees Anna's data.
    let bob = token(&world, "bob", "openid patient/*.read");
    let (status, bobs) = fhir_get(&world, "Observation", Some(&bob)).await;
    assert_eq!(status, StatusCode::OK);
    let bobs: BTreeSet<String> = matches(&bobs).into_iter().map(|(u, _)| u).collect();
    assert!(bobs.is_disjoint(&expected));
    assert_eq!(bobs, loaded_urls(&world, &world.bob, "Observation"));
    let (_, bob_patients) = fhir_get(&world, "Patient", Some(&bob)).await;
    let bob_patients = matches(&bob_patients);
    assert_eq!(bob_patients.len(), 1);
    assert_ne!(bob_patients[0].1["id"], anna_id.as_str());
    let (status, _) = fhir_get(&world, "Observation/hb-0", Some(&bob)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, by_anna) = fhir_get(
        &world,
        &format!("Observation?patient=Patient/{anna_id}"),
        Some(&bob),
    )
    .await;
    assert!(matches(&by_anna).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_verified_and_scopes_enforced() {
    let world = world().await;
    let issuer = world.idp.issuer().to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();

    // No token: 401 with a Bearer challenge.
    let answer = reqwest::get(format!("{}/fhir/Observation", world.portal))
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert!(
        answer.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );

    // Another audience, an expired token, a forged one: 401.
    let other = world
        .idp
        .access_token("een-andere-app", "anna", "patient/*.read")
        .unwrap();
    let expired = world
        .idp
        .sign(&json!({"iss": issuer, "sub": "anna", "aud": PORTAL_CLIENT,
        "iat": now - 7200, "exp": now - 3600, "scope": "patient/*.read",
        "bsn": world.anna.bsn}));
    let valid = token(&world, "anna", "patient/*.read");
    let forged = format!("{}x", &valid[..valid.len() - 1]);
    for (what, bad) in [
        ("audience", other),
        ("expired", expired),
        ("forged", forged),
    ] {
        let (status, body) = fhir_get(&world, "Observation", Some(&bad)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(body["resourceType"], "OperationOutcome");
    }

    // A professional's token is refused: the endpoint is for citizens.
    let professional = world.idp.sign(&json!({"iss": issuer, "sub": "dokter",
        "aud": PORTAL_CLIENT, "iat": now, "exp": now + 600, "scope": "user/*.read",
        "uzi": "123456782"}));
    let (status, body) = fhir_get(&world, "Observation", Some(&professional)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.to_string().contains("citizens"), "{body}");

    // A scope for Observations only: Observations from both nodes, no Conditions.
    let narrow = token(&world, "anna", "openid patient/Observation.read");
    let (status, bundle) = fhir_get(&world, "Observation", Some(&narrow)).await;
    assert_eq!(status, StatusCode::OK);
    let urls: BTreeSet<String> = matches(&bundle).into_iter().map(|(u, _)| u).collect();
    assert_eq!(urls, loaded_urls(&world, &world.anna, "Observation"));
    let (status, hb) = fhir_get(&world, "Observation/hb-0", Some(&narrow)).await;
    assert_eq!(status, StatusCode::OK, "{hb}");
    for path in ["Condition", "Patient", "Condition/x", "Practitioner"] {
        let (status, body) = fhir_get(&world, path, Some(&narrow)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(body["resourceType"], "OperationOutcome");
    }
    // SMART v2: read and search of Conditions.
    let v2 = token(&world, "anna", "patient/Condition.rs");
    let (status, conditions) = fhir_get(&world, "Condition", Some(&v2)).await;
    assert_eq!(status, StatusCode::OK);
    let conditions: BTreeSet<String> = matches(&conditions).into_iter().map(|(u, _)| u).collect();
    assert_eq!(conditions, loaded_urls(&world, &world.anna, "Condition"));
    let (status, _) = fhir_get(&world, "Observation", Some(&v2)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Without a consent register, the choices are 503, as a problem.
    let answer = reqwest::Client::new()
        .get(format!("{}/api/v1/choices", world.portal))
        .bearer_auth(token(&world, "anna", "patient/*.read"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.headers()["content-type"], "application/problem+json");
}

/// The portal's organisation at the hub.
const PORTAL_URA: &str = "00000099";

#[tokio::test(flavor = "multi_thread")]
async fn the_json_api_records_lists_and_revokes_choices_as_documented() {
    let hub = TestHub::start().await;
    let portal_key = hub
        .organisation(PORTAL_URA, "Mijn Gezondheidsoverzicht")
        .await;
    hub.state.admit_citizen_portal(PORTAL_URA);
    let (world, _) = start_with(Vec::new(), Some(hub.client(&portal_key))).await;
    let http = reqwest::Client::new();
    let api = format!("{}/api/v1", world.portal);

    // The document, and every path and method of it routed (401 without a token, not 404 or
    // 405); the other direction is the crate's unit test against its routing table.
    let answer = http
        .get(format!("{api}/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let document: Value = answer.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let url = format!("{}{}", world.portal, path.replace("{id}", "d-1"));
            let answer = http
                .request(method.to_uppercase().parse().unwrap(), &url)
                .send()
                .await
                .unwrap();
            let expected = if path.ends_with("openapi.json") {
                StatusCode::OK
            } else {
                StatusCode::UNAUTHORIZED
            };
            assert_eq!(answer.status(), expected, "{method} {path}");
        }
    }
    let answer = http.delete(format!("{api}/choices")).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::METHOD_NOT_ALLOWED);
    let answer = http.get(format!("{api}/nergens")).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    assert_eq!(answer.headers()["content-type"], "application/problem+json");

    let anna = token(
        &world,
        "anna",
        "openid patient/*.read patient/Consent.cruds",
    );
    let listed = |token: String| {
        let http = http.clone();
        let url = format!("{api}/choices");
        async move {
            let answer = http.get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(answer.status(), StatusCode::OK);
            let body: Value = answer.json().await.unwrap();
            body["choices"].as_array().unwrap().clone()
        }
    };
    assert!(listed(anna.clone()).await.is_empty());

    // A POST must say JSON; a read-only token may not record; nonsense is 400.
    let body = json!({"kind": "opt-out-category", "category": "medication"}).to_string();
    let answer = http
        .post(format!("{api}/choices"))
        .bearer_auth(&anna)
        .header("content-type", "text/plain")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let read_only = token(&world, "anna", "patient/*.read");
    let answer = http
        .post(format!("{api}/choices"))
        .bearer_auth(&read_only)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    let answer = http
        .post(format!("{api}/choices"))
        .bearer_auth(&anna)
        .header("content-type", "application/json")
        .body(json!({"kind": "deny", "organisation": "12345678"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    assert_eq!(answer.headers()["content-type"], "application/problem+json");

    // Recorded, listed, revoked.
    let answer = http
        .post(format!("{api}/choices"))
        .bearer_auth(&anna)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::CREATED);
    let recorded: Value = answer.json().await.unwrap();
    assert_eq!(recorded["kind"], "opt-out");
    assert_eq!(recorded["category"], "medication");
    assert_eq!(recorded["recorded_by"], "citizen");
    assert_eq!(
        recorded["description"],
        "U deelt geen gegevens over medicatie"
    );
    let id = recorded["directive_id"].as_str().unwrap().to_string();
    let choices = listed(anna.clone()).await;
    assert_eq!(choices.len(), 1);
    assert_eq!(choices[0]["directive_id"], id.as_str());
    assert_eq!(choices[0]["status"], "active");
    // Bob's token sees none of Anna's choices and cannot revoke them.
    let bob = token(&world, "bob", "patient/Consent.cruds");
    assert!(listed(bob.clone()).await.is_empty());
    let answer = http
        .post(format!("{api}/choices/{id}/revoke"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_client_error(), "{}", answer.status());
    let answer = http
        .post(format!("{api}/choices/{id}/revoke"))
        .bearer_auth(&anna)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let revoked: Value = answer.json().await.unwrap();
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(listed(anna.clone()).await[0]["status"], "revoked");

    // The access log: the portal's reads on Anna's behalf, from both nodes.
    let (status, _) = fhir_get(&world, "Observation", Some(&anna)).await;
    assert_eq!(status, StatusCode::OK);
    let answer = http
        .get(format!("{api}/access-log"))
        .bearer_auth(&anna)
        .header("accept-language", "en")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let log: Value = answer.json().await.unwrap();
    let entries = log["entries"].as_array().unwrap();
    let sources: BTreeSet<&str> = entries
        .iter()
        .map(|e| e["source"].as_str().unwrap())
        .collect();
    for node in &world.nodes {
        assert!(sources.contains(node.name.as_str()), "{log}");
    }
    assert!(log["unavailable"].as_array().unwrap().is_empty());
    let narrow = token(&world, "anna", "patient/Observation.read");
    let answer = http
        .get(format!("{api}/access-log"))
        .bearer_auth(&narrow)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
}

/// What a native app does to log a citizen in by itself (SMART App Launch, standalone, as a
/// public client with PKCE): discovery at the portal's FHIR endpoint, the authorization
/// request naming that endpoint as `aud` and a loopback redirect URI on the port it was
/// given, the citizen's choice at the provider, and the code exchanged. Returns the token
/// endpoint's answer, or the provider's refusal (status, page) of the authorization request.
async fn app_login(
    world: &World,
    redirect_uri: &str,
    aud: Option<&str>,
    scope: &str,
) -> Result<Value, (StatusCode, String)> {
    use base64::Engine;
    use sha2::Digest;
    let base64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (_, smart) = fhir_get(world, ".well-known/smart-configuration", None).await;
    let authorize = smart["authorization_endpoint"].as_str().unwrap();
    // A test's verifier need not be secret; a real app draws 32 random bytes.
    let verifier = base64url.encode(*b"a native app's PKCE code verifier");
    let challenge = base64url.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let mut query = vec![
        ("response_type", "code"),
        ("client_id", APP_CLIENT),
        ("redirect_uri", redirect_uri),
        ("scope", scope),
        ("state", "app-state-1"),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ];
    if let Some(aud) = aud {
        query.push(("aud", aud));
    }
    let app = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = app.get(authorize).query(&query).send().await.unwrap();
    let status = page.status();
    let html = page.text().await.unwrap();
    if status != StatusCode::OK {
        return Err((status, html));
    }
    let mut fields = hidden_inputs(&html);
    fields.push(("user".into(), "anna".into()));
    let chosen = app.post(authorize).form(&fields).send().await.unwrap();
    assert_eq!(chosen.status(), StatusCode::SEE_OTHER);
    let location = reqwest::Url::parse(chosen.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(
        format!(
            "{}://{}{}",
            location.scheme(),
            location.host_str().unwrap(),
            location.port().map(|p| format!(":{p}")).unwrap_or_default()
        ) + location.path(),
        redirect_uri
    );
    let parameter = |name: &str| {
        location
            .query_pairs()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.into_owned())
            .unwrap()
    };
    assert_eq!(parameter("state"), "app-state-1");
    let answer = app
        .post(smart["token_endpoint"].as_str().unwrap())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &parameter("code")),
            ("redirect_uri", redirect_uri),
            ("client_id", APP_CLIENT),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    Ok(answer.json().await.unwrap())
}

/// The payload of a JWT, unverified: what the test reads of a token it was given.
fn claims(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_native_app_logs_the_citizen_in_by_itself_and_reads_what_its_scopes_allow() {
    let world = world().await;
    let fhir_base = format!("{}/fhir", world.portal);
    // The app listens on a port the system gave it, as native apps do (RFC 8252 §7.3); the
    // provider has only `http://127.0.0.1/callback` registered for it.
    let (app_listener, app_url) = listener().await;
    let redirect_uri = format!("{app_url}/callback");

    let answer = app_login(
        &world,
        &redirect_uri,
        Some(&fhir_base),
        "openid patient/Observation.rs patient/AuditEvent.read",
    )
    .await
    .unwrap();
    let token = answer["access_token"].as_str().unwrap();
    let access = claims(token);
    assert_eq!(access["aud"], PORTAL_CLIENT, "{access}");
    assert_eq!(access["client_id"], APP_CLIENT);
    assert_eq!(
        claims(answer["id_token"].as_str().unwrap())["aud"],
        APP_CLIENT
    );

    // Its token reads the citizen's Observations at every source that answers ...
    let (status, bundle) = fhir_get(&world, "Observation", Some(token)).await;
    assert_eq!(status, StatusCode::OK);
    let urls: BTreeSet<String> = matches(&bundle).into_iter().map(|(url, _)| url).collect();
    let expected = loaded_urls(&world, &world.anna, "Observation");
    assert!(!expected.is_empty());
    assert_eq!(urls, expected);
    // ... and the access log through the JSON API, but nothing its scopes do not name.
    let log = reqwest::Client::new()
        .get(format!("{}/api/v1/access-log", world.portal))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(log.status(), StatusCode::OK);
    for path in ["MedicationRequest", "Condition", "Patient"] {
        let (status, outcome) = fhir_get(&world, path, Some(token)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {outcome}");
    }
    let choices = reqwest::Client::new()
        .get(format!("{}/api/v1/choices", world.portal))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(choices.status(), StatusCode::FORBIDDEN);
    drop(app_listener);

    // Without naming the portal, the app's token is for itself: the portal refuses it.
    let own = app_login(&world, &redirect_uri, None, "openid patient/*.read")
        .await
        .unwrap();
    let own_token = own["access_token"].as_str().unwrap();
    assert_eq!(claims(own_token)["aud"], APP_CLIENT);
    let (status, _) = fhir_get(&world, "Observation", Some(own_token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // What the provider refuses, before anything is sent to the redirect URI: a server it
    // issues no tokens for, and redirect URIs that are not the registered one on another
    // port (another path, `localhost`, https, another loopback address, a fragment).
    let port = reqwest::Url::parse(&app_url).unwrap().port().unwrap();
    let refused = [
        (
            redirect_uri.clone(),
            Some("https://elsewhere.example/fhir".to_string()),
        ),
        (
            redirect_uri.clone(),
            Some(format!("{}/fhir", world.nodes[0].base)),
        ),
        (
            format!("http://127.0.0.1:{port}/other"),
            Some(fhir_base.clone()),
        ),
        (
            format!("http://localhost:{port}/callback"),
            Some(fhir_base.clone()),
        ),
        (
            format!("https://127.0.0.1:{port}/callback"),
            Some(fhir_base.clone()),
        ),
        (
            format!("http://127.0.0.2:{port}/callback"),
            Some(fhir_base.clone()),
        ),
        (
            format!("http://127.0.0.1:{port}/callback#x"),
            Some(fhir_base.clone()),
        ),
        (
            format!("http://user@127.0.0.1:{port}/callback"),
            Some(fhir_base.clone()),
        ),
    ];
    for (redirect, aud) in refused {
        let (status, page) = app_login(&world, &redirect, aud.as_deref(), "openid patient/*.read")
            .await
            .unwrap_err();
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{redirect} {aud:?}: {page}"
        );
    }
}
