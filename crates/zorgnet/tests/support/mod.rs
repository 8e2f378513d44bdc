//! Helpers shared by the integration tests that drive the `zorgnet` binary against a hub.

use serde_json::{Value, json};

/// Registers organisation `ura` at the hub with the operator's key; returns its API key.
pub async fn register(hub: &str, admin_key: &str, ura: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{hub}/registry/organisations"))
        .bearer_auth(admin_key)
        .json(&json!({"ura": ura, "name": format!("Organisatie {ura}")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    body["api_key"].as_str().unwrap().to_string()
}

/// Creates `resource` at the FHIR base `base`; returns the stored resource.
pub async fn post(base: &str, resource: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!(
            "{base}/{}",
            resource["resourceType"].as_str().unwrap()
        ))
        .header("content-type", "application/fhir+json")
        .body(resource.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}
