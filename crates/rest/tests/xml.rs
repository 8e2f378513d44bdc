//! FHIR XML over HTTP, to real nodes on port 0 on SQLite and PostgreSQL: everything that is
//! served in JSON is served in XML when `Accept` or `_format` asks for it (resources,
//! searchset and transaction-response Bundles, OperationOutcomes, the CapabilityStatement),
//! and XML bodies are taken wherever JSON bodies are (create, update, transaction,
//! operations). A body that is not FHIR XML, or that carries a DOCTYPE, is a 400
//! OperationOutcome and stores nothing.

mod support;

use serde_json::{Value, json};
use support::{Node, Reply, assert_outcome, nodes};
use zorgnet_fhir::xml::{json_to_xml, xml_to_json};

const FHIR_XML: &str = "application/fhir+xml";

/// The JSON form of an XML answer, after checking that it is one.
fn from_xml(reply: &Reply, context: &str) -> Value {
    let content_type = reply.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with(FHIR_XML),
        "{context}: content-type {content_type}: {}",
        reply.text
    );
    assert!(
        reply.text.contains("xmlns=\"http://hl7.org/fhir\""),
        "{context}: {}",
        reply.text
    );
    xml_to_json(&reply.text).unwrap_or_else(|e| panic!("{context}: {e}: {}", reply.text))
}

/// An OperationOutcome error in XML with the given status.
fn assert_xml_outcome(reply: &Reply, status: u16, context: &str) -> Value {
    assert_eq!(reply.status, status, "{context}: {}", reply.text);
    let outcome = from_xml(reply, context);
    assert_eq!(outcome["resourceType"], "OperationOutcome", "{context}");
    assert!(
        outcome["issue"][0]["diagnostics"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{context}: {outcome}"
    );
    outcome
}

async fn get_xml(node: &Node, path: &str) -> Reply {
    node.send(node.client.get(node.url(path)).header("accept", FHIR_XML))
        .await
}

async fn send_xml(
    node: &Node,
    method: reqwest::Method,
    path: &str,
    content_type: &str,
    body: String,
) -> Reply {
    node.send(
        node.client
            .request(method, node.url(path))
            .header("content-type", content_type)
            .header("accept", FHIR_XML)
            .body(body),
    )
    .await
}

/// A Patient with what XML treats specially: a narrative, primitive extensions, nulls in a
/// repeating primitive, an extension's `url` and an element's `id`, a decimal (parsed from
/// text, as a body brings it: `json!` would make it a float and drop its trailing zero).
fn patient() -> Value {
    let patient = json!({
        "resourceType": "Patient",
        "text": {"status": "generated",
                 "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Sara de Vries &amp; co</p></div>"},
        "extension": [{"url": "http://example.org/weight", "valueDecimal": 61.50}],
        "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "999911120"}],
        "name": [{
            "id": "official",
            "family": "de Vries",
            "_family": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/humanname-own-prefix",
                                       "valueString": "de"}]},
            "given": ["Sara", "J."],
            "_given": [null, {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-qualifier",
                                             "valueCode": "IN"}]}]
        }],
        "gender": "female",
        "birthDate": "1971-02-03",
        "multipleBirthInteger": 2
    });
    serde_json::from_str(&patient.to_string().replace("61.5", "61.50")).unwrap()
}

/// A decimal with exactly the digits given.
fn decimal(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// `resource` without what the server sets.
fn without_meta(resource: &Value) -> Value {
    let mut resource = resource.clone();
    if let Some(object) = resource.as_object_mut() {
        object.remove("meta");
        object.remove("id");
    }
    resource
}

#[tokio::test]
async fn a_resource_is_read_as_xml_by_accept_or_format() {
    for node in nodes().await {
        let b = node.backend;
        let id = node.create(&patient()).await;
        let json = node.get(&format!("Patient/{id}")).await;
        assert_eq!(json.status, 200, "[{b}] {}", json.text);

        let by_accept = get_xml(&node, &format!("Patient/{id}")).await;
        assert_eq!(by_accept.status, 200, "[{b}] {}", by_accept.text);
        assert_eq!(from_xml(&by_accept, b), json.body, "[{b}] Accept");
        assert_eq!(by_accept.header("etag"), json.header("etag"), "[{b}] ETag");
        assert!(by_accept.text.contains(
            "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Sara de Vries &amp; co</p></div>"
        ));
        assert!(by_accept.text.contains("<valueDecimal value=\"61.50\"/>"));

        for format in [
            "xml",
            "application/fhir%2Bxml",
            "text/xml",
            "application/xml",
        ] {
            let reply = node.get(&format!("Patient/{id}?_format={format}")).await;
            assert_eq!(reply.status, 200, "[{b}] {format}: {}", reply.text);
            assert_eq!(from_xml(&reply, b), json.body, "[{b}] _format={format}");
        }
        // `_format` wins over `Accept`, both ways.
        let reply = node
            .send(
                node.client
                    .get(node.url(&format!("Patient/{id}?_format=json")))
                    .header("accept", FHIR_XML),
            )
            .await;
        assert_eq!(reply.body, json.body, "[{b}] _format=json wins");
        let reply = node
            .send(
                node.client
                    .get(node.url(&format!("Patient/{id}?_format=xml")))
                    .header("accept", "application/fhir+json"),
            )
            .await;
        assert_eq!(from_xml(&reply, b), json.body, "[{b}] _format=xml wins");

        let vread = get_xml(&node, &format!("Patient/{id}/_history/1")).await;
        assert_eq!(from_xml(&vread, b), json.body, "[{b}] vread");

        let pretty = node
            .get(&format!("Patient/{id}?_format=xml&_pretty=true"))
            .await;
        assert!(
            pretty
                .text
                .contains("\n  <name id=\"official\">\n    <family value=\"de Vries\">"),
            "{}",
            pretty.text
        );
        assert_eq!(from_xml(&pretty, b), json.body, "[{b}] _pretty");

        let history = get_xml(&node, &format!("Patient/{id}/_history")).await;
        let history = from_xml(&history, b);
        assert_eq!(history["type"], "history", "[{b}]");
        assert_eq!(history["entry"][0]["resource"], json.body, "[{b}] history");
    }
}

#[tokio::test]
async fn a_search_bundle_is_served_as_xml() {
    for node in nodes().await {
        let b = node.backend;
        let id = node.create(&patient()).await;
        node.create(&json!({"resourceType": "Observation", "status": "final",
            "code": {"text": "weight"}, "subject": {"reference": format!("Patient/{id}")},
            "valueQuantity": {"value": decimal("61.50"), "unit": "kg"}}))
            .await;
        let query = format!("Patient?_id={id}&_revinclude=Observation:subject");
        let json = node.get(&query).await;
        assert_eq!(json.status, 200, "[{b}] {}", json.text);
        for reply in [
            get_xml(&node, &query).await,
            node.get(&format!("{query}&_format=xml")).await,
        ] {
            assert_eq!(reply.status, 200, "[{b}] {}", reply.text);
            let bundle = from_xml(&reply, b);
            assert_eq!(bundle["resourceType"], "Bundle", "[{b}]");
            assert_eq!(bundle["type"], "searchset", "[{b}]");
            assert_eq!(bundle["total"], json.body["total"], "[{b}]");
            assert_eq!(
                bundle["entry"], json.body["entry"],
                "[{b}] the same entries"
            );
            assert!(
                reply.text.contains("<value value=\"61.50\"/>"),
                "[{b}] the decimal keeps its text: {}",
                reply.text
            );
        }
        // A POSTed search form asking for XML.
        let reply = node
            .send(
                node.client
                    .post(node.url("Patient/_search"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(format!("_id={id}&_format=xml")),
            )
            .await;
        let bundle = from_xml(&reply, b);
        assert_eq!(
            bundle["entry"][0]["resource"]["id"],
            json!(id),
            "[{b}] _search"
        );
    }
}

#[tokio::test]
async fn a_resource_is_created_and_updated_from_xml() {
    for node in nodes().await {
        let b = node.backend;
        let xml = json_to_xml(&patient()).unwrap();
        for content_type in [
            "application/fhir+xml",
            "application/fhir+xml; charset=utf-8",
            "application/xml",
            "text/xml",
        ] {
            let created = send_xml(
                &node,
                reqwest::Method::POST,
                "Patient",
                content_type,
                xml.clone(),
            )
            .await;
            assert_eq!(
                created.status, 201,
                "[{b}] {content_type}: {}",
                created.text
            );
            assert!(created.header("location").is_some(), "[{b}] Location");
            let answered = from_xml(&created, b);
            assert_eq!(without_meta(&answered), patient(), "[{b}] {content_type}");
            let id = answered["id"].as_str().unwrap().to_string();
            let stored = node.get(&format!("Patient/{id}")).await;
            assert_eq!(
                without_meta(&stored.body),
                patient(),
                "[{b}] stored as sent"
            );
        }

        // An update in XML, answered in JSON when no XML is asked for.
        let id = node.create(&patient()).await;
        let mut changed = patient();
        changed["id"] = json!(id);
        changed["birthDate"] = json!("1971-02-04");
        let reply = node
            .send(
                node.client
                    .put(node.url(&format!("Patient/{id}")))
                    .header("content-type", FHIR_XML)
                    .body(json_to_xml(&changed).unwrap()),
            )
            .await;
        assert_eq!(reply.status, 200, "[{b}] {}", reply.text);
        assert!(
            reply
                .header("content-type")
                .is_some_and(|t| t.starts_with("application/fhir+json")),
            "[{b}] JSON by default"
        );
        assert_eq!(reply.body["birthDate"], "1971-02-04", "[{b}]");
        assert_eq!(reply.body["meta"]["versionId"], "2", "[{b}]");
    }
}

#[tokio::test]
async fn a_transaction_is_sent_and_answered_in_xml() {
    for node in nodes().await {
        let b = node.backend;
        let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:6a2f3d2e-0b7c-4a1e-9d3f-1c2b3a4d5e6f",
             "resource": patient(),
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
                          "subject": {"reference": "urn:uuid:6a2f3d2e-0b7c-4a1e-9d3f-1c2b3a4d5e6f"},
                          "valueQuantity": {"value": decimal("61.50"), "unit": "kg"}},
             "request": {"method": "POST", "url": "Observation"}}
        ]});
        let reply = send_xml(
            &node,
            reqwest::Method::POST,
            "",
            FHIR_XML,
            json_to_xml(&transaction).unwrap(),
        )
        .await;
        assert_eq!(reply.status, 200, "[{b}] {}", reply.text);
        let response = from_xml(&reply, b);
        assert_eq!(response["type"], "transaction-response", "[{b}]");
        let locations: Vec<&str> = response["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["response"]["location"].as_str().unwrap())
            .collect();
        assert_eq!(locations.len(), 2, "[{b}]");
        let patient_id = locations[0].split('/').nth(1).unwrap().to_string();
        let observation = node
            .get(&format!("Observation?subject=Patient/{patient_id}"))
            .await;
        assert_eq!(observation.body["total"], 1, "[{b}] {}", observation.text);
        assert_eq!(
            observation.body["entry"][0]["resource"]["subject"]["reference"],
            json!(format!("Patient/{patient_id}")),
            "[{b}] the reference was resolved"
        );

        // A batch too, with an entry that fails: its outcome is an XML OperationOutcome
        // inside the XML response Bundle.
        let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": format!("Patient/{patient_id}")}},
            {"request": {"method": "GET", "url": "Patient/does-not-exist"}}
        ]});
        let reply = send_xml(
            &node,
            reqwest::Method::POST,
            "",
            FHIR_XML,
            json_to_xml(&batch).unwrap(),
        )
        .await;
        let response = from_xml(&reply, b);
        assert_eq!(response["type"], "batch-response", "[{b}]");
        assert_eq!(
            response["entry"][0]["resource"]["id"],
            json!(patient_id),
            "[{b}]"
        );
        assert_eq!(
            response["entry"][1]["response"]["outcome"]["resourceType"], "OperationOutcome",
            "[{b}] {response}"
        );
    }
}

#[tokio::test]
async fn operations_take_and_give_xml() {
    for node in nodes().await {
        let b = node.backend;
        let id = node.create(&patient()).await;
        let parameters = "<Parameters xmlns=\"http://hl7.org/fhir\"><parameter><name value=\"_count\"/>\
                          <valueInteger value=\"10\"/></parameter></Parameters>";
        let reply = send_xml(
            &node,
            reqwest::Method::POST,
            &format!("Patient/{id}/$everything"),
            FHIR_XML,
            parameters.to_string(),
        )
        .await;
        let bundle = from_xml(&reply, b);
        assert_eq!(
            bundle["entry"][0]["resource"]["id"],
            json!(id),
            "[{b}] {bundle}"
        );

        let capability = node.get("metadata?_format=xml").await;
        let capability = from_xml(&capability, b);
        assert_eq!(
            capability["resourceType"], "CapabilityStatement",
            "[{b}] {capability}"
        );
        assert!(
            capability["format"]
                .as_array()
                .unwrap()
                .contains(&json!("application/fhir+xml")),
            "[{b}] the CapabilityStatement lists XML"
        );
    }
}

#[tokio::test]
async fn errors_are_operation_outcomes_in_the_format_asked() {
    for node in nodes().await {
        let b = node.backend;
        assert_xml_outcome(&get_xml(&node, "Patient/does-not-exist").await, 404, b);
        assert_xml_outcome(&node.get("Nothing/1?_format=xml").await, 404, b);
        assert_xml_outcome(&get_xml(&node, "Patient?birthdate=yesterday").await, 400, b);
        // A JSON body refused by validation, answered in XML.
        let reply = node
            .send(
                node.client
                    .post(node.url("Patient?_format=xml"))
                    .header("content-type", "application/fhir+json")
                    .body(json!({"resourceType": "Patient", "gender": "x"}).to_string()),
            )
            .await;
        assert_eq!(reply.status / 100, 4, "[{b}] {}", reply.text);
        from_xml(&reply, b);
    }
}

#[tokio::test]
async fn malformed_xml_and_doctypes_are_400_operation_outcomes_that_store_nothing() {
    for node in nodes().await {
        let b = node.backend;
        let before = node.count("Patient").await;
        let bodies = [
            (
                "<Patient xmlns=\"http://hl7.org/fhir\"><birthDate value=\"1970\"></Patient>",
                "malformed",
            ),
            (
                "<Patient xmlns=\"http://hl7.org/fhir\"><birthDate",
                "malformed",
            ),
            ("{\"resourceType\": \"Patient\"}", "root element"),
            (
                "<?xml version=\"1.0\"?>\n<!DOCTYPE Patient [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>\n\
                 <Patient xmlns=\"http://hl7.org/fhir\"><name><family value=\"&xxe;\"/></name></Patient>",
                "DOCTYPE",
            ),
            (
                "<!DOCTYPE lol [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;\">]>\
                 <Patient xmlns=\"http://hl7.org/fhir\"><name><family value=\"&lol2;\"/></name></Patient>",
                "DOCTYPE",
            ),
            (
                "<Patient xmlns=\"http://hl7.org/fhir\"><name><family value=\"&xxe;\"/></name></Patient>",
                "not defined",
            ),
            (
                "<Patient xmlns=\"http://hl7.org/fhir\"><nickname value=\"x\"/></Patient>",
                "unknown element 'nickname'",
            ),
            (
                "<Patient xmlns=\"http://hl7.org/fhir\"><active value=\"yes\"/></Patient>",
                "boolean",
            ),
            (
                "<Patient><active value=\"true\"/></Patient>",
                "FHIR namespace",
            ),
        ];
        for (body, expected) in bodies {
            // Answered in JSON by default…
            let reply = node
                .send(
                    node.client
                        .post(node.url("Patient"))
                        .header("content-type", FHIR_XML)
                        .body(body),
                )
                .await;
            assert_outcome(&reply, 400, &format!("[{b}] {body}"));
            assert!(
                reply.text.contains(expected),
                "[{b}] {body}: {expected}: {}",
                reply.text
            );
            // …and in XML when XML is asked for.
            let reply = send_xml(
                &node,
                reqwest::Method::POST,
                "Patient",
                FHIR_XML,
                body.into(),
            )
            .await;
            assert_xml_outcome(&reply, 400, &format!("[{b}] {body}"));
            let reply = send_xml(&node, reqwest::Method::POST, "", FHIR_XML, body.into()).await;
            assert_xml_outcome(&reply, 400, &format!("[{b}] transaction {body}"));
        }
        assert_eq!(node.count("Patient").await, before, "[{b}] nothing stored");

        // Other types of body are still refused with 415.
        let reply = send_xml(
            &node,
            reqwest::Method::POST,
            "Patient",
            "text/turtle",
            "<Patient/>".into(),
        )
        .await;
        assert_xml_outcome(&reply, 415, &format!("[{b}] Turtle"));
        let reply = send_xml(
            &node,
            reqwest::Method::POST,
            "Patient",
            "application/fhir+xml; charset=iso-8859-1",
            json_to_xml(&patient()).unwrap(),
        )
        .await;
        assert_xml_outcome(&reply, 415, &format!("[{b}] Latin-1"));
    }
}
