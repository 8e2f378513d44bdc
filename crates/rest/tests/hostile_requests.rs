//! Requests a careless client or an attacker sends, over HTTP to real nodes on port 0 on
//! SQLite and PostgreSQL: each is answered with a 4xx OperationOutcome (or served correctly),
//! never a 500, and no answer is JSON when the request asked for XML only.
//!
//! Covered here: `$everything` parameters repeated until they exceed the database's limit on
//! bound values, Bundle entries whose `request.url` carries a control character or is not
//! `Type/id`, `_format` sent in a `_search` form body or an operation's `Parameters` body,
//! and bodies declared in a character set other than UTF-8.

mod support;

use serde_json::{Value, json};
use support::{Node, Reply, assert_outcome, nodes};

async fn patient_with_observation(node: &Node) -> String {
    let patient = node
        .create(&json!({"resourceType": "Patient", "name": [{"family": "Jansen"}]}))
        .await;
    node.create(&json!({"resourceType": "Observation", "status": "final",
        "code": {"text": "gewicht"}, "subject": {"reference": format!("Patient/{patient}")}}))
        .await;
    patient
}

fn types(resource_type: &str, n: usize) -> String {
    vec![resource_type; n].join(",")
}

fn entry_types(reply: &Reply) -> Vec<String> {
    let mut types: Vec<String> = reply.body["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["resource"]["resourceType"].as_str().unwrap().to_string())
        .collect();
    types.sort();
    types
}

#[tokio::test]
async fn everything_with_a_type_repeated_beyond_the_bound_value_limit_is_served() {
    for node in nodes().await {
        let patient = patient_with_observation(&node).await;
        let path = format!("Patient/{patient}/$everything");
        // 80,000 values in one Parameters body: beyond SQLite's 32,766 and PostgreSQL's
        // 65,535 bound values if each became one.
        let body = json!({"resourceType": "Parameters", "parameter": [
            {"name": "_type", "valueString": types("Observation", 80_000)}]});
        let reply = node.post(&path, &body).await;
        assert_eq!(reply.status, 200, "[{}] {}", node.backend, reply.text);
        assert_eq!(entry_types(&reply), ["Observation"], "[{}]", node.backend);

        let many: Vec<Value> = (0..20_000)
            .map(|_| json!({"name": "_type", "valueCode": "Observation"}))
            .chain([json!({"name": "_type", "valueCode": "Patient"})])
            .collect();
        let body = json!({"resourceType": "Parameters", "parameter": many});
        let reply = node.post(&path, &body).await;
        assert_eq!(reply.status, 200, "[{}] {}", node.backend, reply.text);
        assert_eq!(
            entry_types(&reply),
            ["Observation", "Patient"],
            "[{}]",
            node.backend
        );

        let reply = node
            .get(&format!("{path}?_type={}", types("Patient", 7_000)))
            .await;
        assert_eq!(reply.status, 200, "[{}] {}", node.backend, reply.text);
        assert_eq!(entry_types(&reply), ["Patient"], "[{}]", node.backend);
    }
}

#[tokio::test]
async fn bundle_entries_whose_url_is_not_type_and_id_are_refused_not_stored_or_failed() {
    for node in nodes().await {
        let patient = patient_with_observation(&node).await;
        for url in [
            "Patient/a\u{0}b",
            "Patient/a\u{1}b",
            format!("Patient/{patient}/_history/1\u{0}").as_str(),
            format!("Patient/{patient}/_history/1").as_str(),
            "Patient/",
            "Patient/a b",
        ] {
            for method in ["DELETE", "GET"] {
                let entry = json!({"request": {"method": method, "url": url}});
                let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [entry]});
                let reply = node.post("", &batch).await;
                let context = format!("[{}] batch {method} {url:?}", node.backend);
                assert_eq!(reply.status, 200, "{context}: {}", reply.text);
                let status = reply.body["entry"][0]["response"]["status"]
                    .as_str()
                    .unwrap_or("");
                assert!(status.starts_with("400"), "{context}: {}", reply.text);

                let transaction =
                    json!({"resourceType": "Bundle", "type": "transaction", "entry": [entry]});
                let reply = node.post("", &transaction).await;
                assert_outcome(&reply, 400, &format!("{context} in a transaction"));
            }
        }
        // Nothing was deleted on the way.
        let reply = node.get(&format!("Patient/{patient}")).await;
        assert_eq!(reply.status, 200, "[{}] {}", node.backend, reply.text);
    }
}

#[tokio::test]
async fn format_in_a_search_form_or_an_operation_body_is_negotiated_like_in_the_url() {
    for node in nodes().await {
        let patient = patient_with_observation(&node).await;
        for format in ["ttl", "application/fhir+turtle"] {
            let form = form_urlencoded::Serializer::new(String::new())
                .append_pair("_format", format)
                .finish();
            let reply = node
                .send(
                    node.client
                        .post(node.url("Patient/_search"))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(form),
                )
                .await;
            assert_outcome(
                &reply,
                406,
                &format!("[{}] _search _format={format}", node.backend),
            );

            let body = json!({"resourceType": "Parameters", "parameter": [
                {"name": "_format", "valueString": format}]});
            let reply = node
                .post(&format!("Patient/{patient}/$everything"), &body)
                .await;
            assert_outcome(
                &reply,
                406,
                &format!("[{}] $everything _format={format}", node.backend),
            );
        }
        // XML asked in the body is served as XML, like XML asked in the URL.
        for format in ["xml", "application/fhir+xml"] {
            let form = form_urlencoded::Serializer::new(String::new())
                .append_pair("_format", format)
                .finish();
            let reply = node
                .send(
                    node.client
                        .post(node.url("Patient/_search"))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(form),
                )
                .await;
            assert_xml_bundle(
                &reply,
                &format!("[{}] _search _format={format}", node.backend),
            );

            let body = json!({"resourceType": "Parameters", "parameter": [
                {"name": "_format", "valueString": format}]});
            let reply = node
                .post(&format!("Patient/{patient}/$everything"), &body)
                .await;
            assert_xml_bundle(
                &reply,
                &format!("[{}] $everything _format={format}", node.backend),
            );
        }
        let body = json!({"resourceType": "Parameters", "parameter": [
            {"name": "_format", "valueString": "json"}]});
        let reply = node
            .post(&format!("Patient/{patient}/$everything"), &body)
            .await;
        assert_eq!(reply.status, 200, "[{}] {}", node.backend, reply.text);
        let reply = node
            .send(
                node.client
                    .post(node.url("Patient/_search"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body("_format=application/fhir%2Bjson"),
            )
            .await;
        assert_eq!(reply.status, 200, "[{}] {}", node.backend, reply.text);
    }
}

#[tokio::test]
async fn bodies_in_a_character_set_other_than_utf8_are_refused_with_415() {
    for node in nodes().await {
        let patient = patient_with_observation(&node).await;
        for content_type in [
            "application/fhir+json; charset=iso-8859-1",
            "application/fhir+json;charset=windows-1252",
            "application/json; charset=\"utf-16\"",
        ] {
            let reply = node
                .send(
                    node.client
                        .post(node.url("Patient"))
                        .header("content-type", content_type)
                        .body(json!({"resourceType": "Patient"}).to_string()),
                )
                .await;
            assert_outcome(
                &reply,
                415,
                &format!("[{}] create as {content_type}", node.backend),
            );
            let reply = node
                .send(
                    node.client
                        .post(node.url(&format!("Patient/{patient}/$everything")))
                        .header("content-type", content_type)
                        .body(json!({"resourceType": "Parameters"}).to_string()),
                )
                .await;
            assert_outcome(
                &reply,
                415,
                &format!("[{}] $everything as {content_type}", node.backend),
            );
        }
        for content_type in [
            "application/fhir+json; charset=utf-8",
            "application/fhir+json; charset=UTF-8",
            "application/fhir+json;charset=\"utf-8\"",
            "application/fhir+json; fhirVersion=4.0",
        ] {
            let reply = node
                .send(
                    node.client
                        .post(node.url("Patient"))
                        .header("content-type", content_type)
                        .body(json!({"resourceType": "Patient"}).to_string()),
                )
                .await;
            assert_eq!(
                reply.status, 201,
                "[{}] create as {content_type}: {}",
                node.backend, reply.text
            );
        }
        let reply = node
            .send(
                node.client
                    .post(node.url("Patient/_search"))
                    .header(
                        "content-type",
                        "application/x-www-form-urlencoded; charset=iso-8859-1",
                    )
                    .body("name=Jansen"),
            )
            .await;
        assert_outcome(
            &reply,
            415,
            &format!("[{}] _search in iso-8859-1", node.backend),
        );
    }
}

/// A client chooses the `Host` header: echoing it into `fullUrl`, `Location` and paging links
/// would let anyone who can make a victim's client follow a link point it elsewhere. Every
/// URL the server writes starts with its configured base, whatever `Host` says.
#[tokio::test]
async fn a_forged_host_header_never_reaches_a_link() {
    for node in nodes().await {
        let patient = patient_with_observation(&node).await;
        let forged = "attacker.example:8443";
        let send = |path: String| {
            node.client
                .get(node.url(&path))
                .header(reqwest::header::HOST, forged)
        };
        for path in [
            format!("Observation?patient={patient}&_count=1"),
            format!("Patient/{patient}/$everything?_count=1"),
            format!("Patient/{patient}/_history"),
            "metadata".to_string(),
        ] {
            let reply = node.send(send(path.clone())).await;
            assert_eq!(
                reply.status, 200,
                "[{}] {path}: {}",
                node.backend, reply.text
            );
            assert!(
                !reply.text.contains("attacker.example"),
                "[{}] {path} echoes the Host header: {}",
                node.backend,
                reply.text
            );
            assert!(
                reply.text.contains(&node.base),
                "[{}] {path} names the configured base {}: {}",
                node.backend,
                node.base,
                reply.text
            );
        }
        let created = node
            .send(
                node.client
                    .post(node.url("Patient"))
                    .header(reqwest::header::HOST, forged)
                    .header("content-type", "application/fhir+json")
                    .body(r#"{"resourceType":"Patient"}"#),
            )
            .await;
        assert_eq!(created.status, 201, "[{}] {}", node.backend, created.text);
        let location = created.header("location").unwrap();
        assert!(
            location.starts_with(&node.base),
            "[{}] Location {location}",
            node.backend
        );
    }
}

/// A 200 whose body is a FHIR XML Bundle.
fn assert_xml_bundle(reply: &support::Reply, context: &str) {
    assert_eq!(reply.status, 200, "{context}: {}", reply.text);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/fhir+xml")),
        "{context}: {:?}",
        reply.header("content-type")
    );
    let bundle = zorgnet_fhir::xml::xml_to_json(&reply.text).unwrap();
    assert_eq!(bundle["resourceType"], "Bundle", "{context}");
}
