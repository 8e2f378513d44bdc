//! Bounded work per search request, over HTTP on both backends: every named limit of a
//! search answers 400 with an OperationOutcome naming it, numbers and dates at the edges of
//! their types parse or are refused, control characters from the URL never reach SQL, and
//! ordinary searches at the limits still work.
//!
//! Memory is not measured here: repeating a request proves nothing about growth. What keeps
//! it flat is by construction (statement caches bounded in count and statement size, see
//! `zorgnet_db::sql::MAX_CACHED_STATEMENT_BYTES`).

// Expected results are written as array literals, which reads better than slice::from_ref.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use support::{Node, Reply, match_ids, nodes};
use zorgnet_fhir::search::{
    MAX_CHAIN_EXPANSION, MAX_CURSOR_BYTES, MAX_INCLUDES, MAX_OR_VALUES, MAX_QUERY_BYTES,
    MAX_SORT_KEYS,
};

/// Asserts a 400 OperationOutcome whose issue has `code` and whose diagnostics mention
/// `mentions`.
fn assert_refused(reply: &Reply, code: &str, mentions: &str, context: &str) {
    assert_eq!(reply.status, 400, "{context}: {}", reply.text);
    assert_eq!(
        reply.body["resourceType"], "OperationOutcome",
        "{context}: {}",
        reply.text
    );
    assert_eq!(
        reply.body["issue"][0]["code"], code,
        "{context}: {}",
        reply.text
    );
    let diagnostics = reply.body["issue"][0]["diagnostics"].as_str().unwrap_or("");
    assert!(
        diagnostics.contains(mentions),
        "{context}: '{diagnostics}' does not mention '{mentions}'"
    );
}

/// `n` distinct values, comma-separated.
fn values(n: usize) -> String {
    (0..n)
        .map(|i| format!("v{i}"))
        .collect::<Vec<_>>()
        .join(",")
}

async fn observation_of(node: &Node, patient: &str, bsn: &str) -> String {
    node.create(&json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "focus": [{"reference": format!("Patient/{patient}")}],
        "valueQuantity": {"value": 5.4, "system": "http://unitsofmeasure.org", "code": "mmol/L"},
        "note": [{"text": bsn}]
    }))
    .await
}

async fn patient(node: &Node, bsn: &str, family: &str) -> String {
    node.create(&json!({
        "resourceType": "Patient",
        "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": bsn}],
        "name": [{"family": family, "given": ["Anna"]}],
        "gender": "female",
        "birthDate": "1980-05-02"
    }))
    .await
}

#[tokio::test]
async fn chains_expanding_beyond_their_limits_are_refused_and_narrow_ones_work() {
    for node in nodes().await {
        let b = node.backend;
        let p = patient(&node, "123456782", "Chain").await;
        let o = observation_of(&node, &p, "123456782").await;

        // The fuzzer's find: `focus` may point at any type, so 100 values expand to every
        // type × 100, three times over; SQLite's limit on bound values answered 500.
        let many = values(MAX_OR_VALUES);
        let query = format!(
            "Observation?focus.identifier={many}&focus.identifier={many}&focus.identifier={many}"
        );
        assert_refused(
            &node.get(&query).await,
            "too-costly",
            "MAX_CHAIN_EXPANSION",
            &format!("[{b}] focus chain over every type"),
        );
        // Conditional writes parse the same way.
        let create = node
            .send(
                node.client
                    .post(node.url("Observation"))
                    .header("content-type", "application/fhir+json")
                    .header(
                        "if-none-exist",
                        format!("focus.identifier={}", values(MAX_CHAIN_EXPANSION)),
                    )
                    .body(json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}}).to_string()),
            )
            .await;
        assert_refused(
            &create,
            "too-costly",
            "MAX_CHAIN_EXPANSION",
            &format!("[{b}] If-None-Exist"),
        );

        // Within the expansion limit each, but together beyond the bound values' limit.
        let subject_chains: Vec<String> = (0..10)
            .map(|_| format!("subject.identifier={many}"))
            .collect();
        assert_refused(
            &node
                .get(&format!("Observation?{}", subject_chains.join("&")))
                .await,
            "too-costly",
            "MAX_BOUND_PARAMETERS",
            &format!("[{b}] ten chains of 100 values"),
        );

        // Narrowed to one type, the full OR list works, and finds the match.
        let with_match = format!(
            "{},http://fhir.nl/fhir/NamingSystem/bsn|123456782",
            values(MAX_OR_VALUES - 1)
        );
        assert_eq!(
            node.search_ids(&format!(
                "Observation?focus:Patient.identifier={with_match}&subject:Patient.identifier={with_match}"
            ))
            .await,
            [o.clone()],
            "[{b}]"
        );
        // Unnarrowed, a few values over every type still work.
        assert_eq!(
            node.search_ids("Observation?focus.identifier=123456782,999999999")
                .await,
            [o],
            "[{b}]"
        );
        // MAX_OR_VALUES is still enforced on plain parameters.
        assert_refused(
            &node
                .get(&format!("Observation?code={}", values(MAX_OR_VALUES + 1)))
                .await,
            "too-costly",
            "MAX_OR_VALUES",
            &format!("[{b}] OR list"),
        );
    }
}

fn sort_cursor(values: &[Value]) -> String {
    format!(
        "n{}",
        URL_SAFE_NO_PAD.encode(Value::Array(values.to_vec()).to_string())
    )
}

#[tokio::test]
async fn sort_keys_cursors_and_includes_are_bounded() {
    for node in nodes().await {
        let b = node.backend;
        let mut ids = Vec::new();
        for bsn in ["123456782", "111222333", "012345672"] {
            ids.push(patient(&node, bsn, "Sortlimit").await);
        }

        // MAX_SORT_KEYS keys page as before, to the last match …
        let keys = "family,given,birthdate,gender,-_lastUpdated,name,address,_id";
        assert_eq!(keys.split(',').count(), MAX_SORT_KEYS);
        let mut page = node
            .get(&format!("Patient?family=sortlimit&_sort={keys}&_count=1"))
            .await;
        let mut seen = Vec::new();
        loop {
            assert_eq!(page.status, 200, "[{b}] {}", page.text);
            seen.extend(match_ids(&page.body));
            let next = page.body["link"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["relation"] == "next")
                .map(|l| l["url"].as_str().unwrap().to_string());
            let Some(next) = next else { break };
            page = node.send(node.client.get(next)).await;
        }
        seen.sort();
        let mut expected = ids.clone();
        expected.sort();
        assert_eq!(seen, expected, "[{b}] every match once, sorted on 8 keys");

        // … one more is refused before any SQL is built.
        let nine = format!("{keys},-family");
        assert_refused(
            &node.get(&format!("Patient?_sort={nine}")).await,
            "too-costly",
            "MAX_SORT_KEYS",
            &format!("[{b}] nine sort keys"),
        );
        // The crafted case: many keys and a cursor that fits them.
        let many_keys = vec!["_id"; 200].join(",");
        let cursor = sort_cursor(&vec![json!("x"); 201]);
        assert_refused(
            &node
                .get(&format!("Patient?_sort={many_keys}&_cursor={cursor}"))
                .await,
            "too-costly",
            "MAX_SORT_KEYS",
            &format!("[{b}] 200 keys with a cursor"),
        );
        // A cursor longer than its limit, and one of the right shape with a NUL inside.
        let long = sort_cursor(&[json!("x".repeat(MAX_CURSOR_BYTES)), json!(1)]);
        assert_refused(
            &node.get(&format!("Patient?_sort=_id&_cursor={long}")).await,
            "too-costly",
            "MAX_CURSOR_BYTES",
            &format!("[{b}] long cursor"),
        );
        let nul = sort_cursor(&[json!("a\u{0}b"), json!(1)]);
        let reply = node.get(&format!("Patient?_sort=_id&_cursor={nul}")).await;
        assert_refused(&reply, "invalid", "cursor", &format!("[{b}] NUL in cursor"));

        // MAX_INCLUDES items work; one more is refused.
        let includes: Vec<&str> = vec!["_include=Patient:general-practitioner"; MAX_INCLUDES];
        let reply = node
            .get(&format!("Patient?family=sortlimit&{}", includes.join("&")))
            .await;
        assert_eq!(reply.status, 200, "[{b}] {}", reply.text);
        assert_refused(
            &node
                .get(&format!(
                    "Patient?family=sortlimit&{}&_revinclude=Observation:subject",
                    includes.join("&")
                ))
                .await,
            "too-costly",
            "MAX_INCLUDES",
            &format!("[{b}] one include too many"),
        );
        assert_refused(
            &node
                .get("Patient?_include=Nonsense:general-practitioner")
                .await,
            "invalid",
            "Nonsense",
            &format!("[{b}] include of an unknown type"),
        );
    }
}

#[tokio::test]
async fn query_text_beyond_its_limit_is_refused() {
    for node in nodes().await {
        let b = node.backend;
        let long = "a".repeat(MAX_QUERY_BYTES);
        let reply = node
            .send(
                node.client
                    .post(node.url("Patient/_search"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(format!("name={long}")),
            )
            .await;
        assert_refused(
            &reply,
            "too-costly",
            "MAX_QUERY_BYTES",
            &format!("[{b}] long _search body"),
        );
        let reply = node
            .send(
                node.client
                    .post(node.url("Patient/_search"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body("name=a"),
            )
            .await;
        assert_eq!(reply.status, 200, "[{b}] {}", reply.text);
        // A body that could only decode to more than the limit is not read to its end.
        let reply = node
            .send(
                node.client
                    .post(node.url("Patient/_search"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(format!("name={}", "%41".repeat(MAX_QUERY_BYTES))),
            )
            .await;
        assert_eq!(reply.status, 413, "[{b}] {}", reply.text);
        assert_eq!(reply.body["resourceType"], "OperationOutcome", "[{b}]");
    }
}

#[tokio::test]
async fn numbers_and_dates_at_their_edges_parse_or_are_refused() {
    for node in nodes().await {
        let b = node.backend;
        let p = patient(&node, "123456782", "Edges").await;
        let risk = node
            .create(&json!({
                "resourceType": "RiskAssessment",
                "status": "final",
                "subject": {"reference": format!("Patient/{p}")},
                "prediction": [{"probabilityDecimal": 0.25}]
            }))
            .await;
        observation_of(&node, &p, "123456782").await;

        for bad in [
            "0.0e-2147483647",
            "1e-2147483648",
            "1e999999999",
            "1e400",
            "-1e309",
            "NaN",
            "nan",
            "inf",
            "-Infinity",
            "1e",
            "e5",
            "0x10",
            "1.2.3",
            "--1",
            "1e+-5",
            &format!("1.{}", "3".repeat(400)),
            &"9".repeat(400),
        ] {
            let encoded = urlencode(bad);
            assert_refused(
                &node
                    .get(&format!("RiskAssessment?probability={encoded}"))
                    .await,
                "invalid",
                "number",
                &format!("[{b}] probability={bad}"),
            );
            assert_refused(
                &node
                    .get(&format!("Observation?value-quantity={encoded}"))
                    .await,
                "invalid",
                "quantity",
                &format!("[{b}] value-quantity={bad}"),
            );
        }
        // Extreme but valid: finite, with a range that does not collapse.
        for (good, found) in [
            ("0.25", true),
            ("2.5e-1", true),
            ("25e-2", true),
            ("ge0.0e-300", true),
            ("lt1e300", true),
            ("1.7976931348623157e308", false),
            ("0.1234567890123456789", false),
            ("4.9e-324", false),
            // Zero's implied precision is ±0.5.
            ("-0", true),
        ] {
            let ids = node
                .search_ids(&format!("RiskAssessment?probability={}", urlencode(good)))
                .await;
            let expected: Vec<String> = if found { vec![risk.clone()] } else { vec![] };
            assert_eq!(ids, expected, "[{b}] probability={good}");
        }
        assert_eq!(
            node.count("Observation?value-quantity=5.4|http://unitsofmeasure.org|mmol/L")
                .await,
            1,
            "[{b}]"
        );

        for good in [
            "0000",
            "0000-01-01T00:00:00-14:00",
            "0000-01-01T00:00:00+14:00",
            "9999",
            "9999-12",
            "9999-12-31",
            "le9999-12-31T23:59:60+14:00",
            "ge9999-12-31T23:59:59.999-14:00",
        ] {
            let reply = node
                .get(&format!("Patient?birthdate={}", urlencode(good)))
                .await;
            assert_eq!(reply.status, 200, "[{b}] birthdate={good}: {}", reply.text);
        }
        assert_eq!(
            node.search_ids("Patient?birthdate=le9999-12-31T23:59:60%2B14:00&family=edges")
                .await,
            [p.clone()],
            "[{b}]"
        );
        assert_eq!(
            node.count("Patient?birthdate=ge0000&family=edges").await,
            1,
            "[{b}]"
        );
        for bad in [
            "10000",
            "-0001",
            "9999-13",
            "2020-02-30",
            "2020-01-01T24:00",
            "2020-01-01T10:00+99:00",
            "2020-01-01T10:00:00.",
            "ge",
        ] {
            assert_refused(
                &node
                    .get(&format!("Patient?birthdate={}", urlencode(bad)))
                    .await,
                "invalid",
                "date",
                &format!("[{b}] birthdate={bad}"),
            );
        }
    }
}

fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test]
async fn control_characters_from_the_url_never_reach_sql() {
    for node in nodes().await {
        let b = node.backend;
        let p = patient(&node, "123456782", "Control").await;
        observation_of(&node, &p, "123456782").await;
        let history_cursor = "n1%00";

        let mut gets: Vec<String> = Vec::new();
        // Below U+0020 but for tab, CR and LF: what no FHIR string may hold. DEL and the C1
        // controls (U+007F–U+009F) are allowed in FHIR strings, so they are searchable.
        for c in ["%00", "%01", "%1F"] {
            gets.extend([
                format!("Patient?name=a{c}b"),
                format!("Patient?family:exact={c}"),
                format!("Patient?family:contains=x{c}"),
                format!("Patient?identifier=sys|1{c}"),
                format!("Patient?identifier=sys{c}|1"),
                format!("Observation?code={c}"),
                format!("Observation?subject=Patient/{c}"),
                format!("Observation?subject.name=a{c}"),
                format!("Observation?subject:Patient.family={c}"),
                format!("Observation?value-quantity=5.4|http://unitsofmeasure.org|mmol{c}"),
                format!("Patient?_id={p}{c}"),
                format!("Patient?_id=a,{c}"),
                format!("Patient?_cursor=n{c}"),
                format!("Patient?_include=Patient{c}:general-practitioner"),
                format!("Patient?_include=Patient:general-practitioner:Organization{c}"),
                format!("Patient?_revinclude=Observation:subject{c}"),
                format!("Patient?_sort=family{c}"),
                format!("Patient?na{c}me=x"),
                format!("Patient?_elements=name{c}"),
                format!("?_type=Patient{c}"),
                format!("Patient?_lastUpdated=ge2020{c}"),
            ]);
        }
        gets.extend([
            "Patient/a%00b".to_string(),
            "Patient/a%01b/_history".to_string(),
            "Patient/a%00b/_history/1".to_string(),
            "Patient/a%00b/$everything".to_string(),
            format!("Patient/{p}/$everything?_cursor=n1%00"),
            format!("Patient/{p}/$everything?_since=2020%00"),
            format!("Patient/{p}/$everything?_type=Observation%00"),
            "_history?_since=2020-01-01%00".to_string(),
            format!("Patient/_history?_cursor={history_cursor}"),
            "_history?_cursor=n%001".to_string(),
        ]);
        for path in ["Patient?name=a%7Fb", "Patient?name=a%C2%85b"] {
            let reply = node.get(path).await;
            assert_eq!(reply.status, 200, "[{b}] GET {path}: {}", reply.text);
        }
        for path in &gets {
            let reply = node.get(path).await;
            assert_eq!(reply.status, 400, "[{b}] GET {path}: {}", reply.text);
            assert_eq!(
                reply.body["resourceType"], "OperationOutcome",
                "[{b}] GET {path}: {}",
                reply.text
            );
        }
        let form = node
            .send(
                node.client
                    .post(node.url("Patient/_search"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body("name=a%00"),
            )
            .await;
        assert_refused(&form, "invalid", "U+0000", &format!("[{b}] POST _search"));

        let body = json!({"resourceType": "Patient", "name": [{"family": "Control"}]});
        let create = node
            .send(
                node.client
                    .post(node.url("Patient"))
                    .header("content-type", "application/fhir+json")
                    .header("if-none-exist", "identifier=sys|x%00y")
                    .body(body.to_string()),
            )
            .await;
        assert_refused(
            &create,
            "invalid",
            "U+0000",
            &format!("[{b}] If-None-Exist"),
        );
        let update = node.put("Patient?identifier=sys|x%00y", &body).await;
        assert_refused(
            &update,
            "invalid",
            "U+0000",
            &format!("[{b}] conditional PUT"),
        );
        let delete = node.delete("Patient?family=Control%00").await;
        assert_refused(
            &delete,
            "invalid",
            "U+0000",
            &format!("[{b}] conditional DELETE"),
        );
        let delete = node.delete(&format!("Patient/{p}%00")).await;
        assert_eq!(delete.status, 400, "[{b}] DELETE with a NUL in the id");
        let transaction = node
            .post(
                "",
                &json!({
                    "resourceType": "Bundle",
                    "type": "transaction",
                    "entry": [{
                        "resource": body,
                        "request": {"method": "POST", "url": "Patient", "ifNoneExist": "family=a%00"}
                    }]
                }),
            )
            .await;
        assert_eq!(
            transaction.status, 400,
            "[{b}] transaction with a NUL in ifNoneExist: {}",
            transaction.text
        );

        // Tab, CR and LF are text, not control: searched, not refused.
        for allowed in ["%09", "%0D", "%0A"] {
            let reply = node.get(&format!("Patient?name=a{allowed}b")).await;
            assert_eq!(reply.status, 200, "[{b}] {allowed}: {}", reply.text);
        }
        // Nothing stored was touched.
        assert_eq!(node.search_ids("Patient?family=control").await, [p.clone()]);
        assert_eq!(node.get(&format!("Patient/{p}")).await.status, 200);
        assert_eq!(node.count("Observation").await, 1, "[{b}]");
    }
}

#[tokio::test]
async fn ordinary_searches_still_work() {
    for node in nodes().await {
        let b = node.backend;
        let p = patient(&node, "123456782", "Ordinary").await;
        let o = observation_of(&node, &p, "123456782").await;
        let bsn = "http://fhir.nl/fhir/NamingSystem/bsn|123456782";
        let mut or_list: Vec<String> = (0..MAX_OR_VALUES - 1)
            .map(|i| format!("http://fhir.nl/fhir/NamingSystem/bsn|{i}"))
            .collect();
        or_list.push(bsn.to_string());
        assert_eq!(
            node.search_ids(&format!("Patient?identifier={}", or_list.join(",")))
                .await,
            [p.clone()],
            "[{b}] a full OR list"
        );
        let reply = node
            .get(&format!(
                "Observation?patient.identifier={bsn}&code=http://loinc.org|2339-0&_include=Observation:subject&_sort=-date,_id&_count=5"
            ))
            .await;
        assert_eq!(reply.status, 200, "[{b}] {}", reply.text);
        assert_eq!(match_ids(&reply.body), [o.clone()], "[{b}]");
        let included: Vec<&str> = reply.body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["search"]["mode"] == "include")
            .map(|e| e["resource"]["id"].as_str().unwrap())
            .collect();
        assert_eq!(included, [p.as_str()], "[{b}] the subject included");
        assert_eq!(
            node.search_ids("Observation?value-quantity=ge5|http://unitsofmeasure.org|mmol/L&value-quantity=le5.4e0")
                .await,
            [o.clone()],
            "[{b}] quantities with exponents"
        );
        assert_eq!(
            node.search_ids("Patient?birthdate=1980-05&gender=female&name=ANNA")
                .await,
            [p.clone()],
            "[{b}]"
        );
        let revinclude = node
            .get("Patient?family=ordinary&_revinclude=Observation:subject&_revinclude:iterate=Observation:focus")
            .await;
        assert_eq!(revinclude.status, 200, "[{b}] {}", revinclude.text);
        assert_eq!(
            revinclude.body["entry"].as_array().unwrap().len(),
            2,
            "[{b}] the patient and its observation: {}",
            revinclude.text
        );
    }
}

/// Full-text search (`_text`, `_content`) is not offered: a lenient search says so in its
/// outcome entry and does not narrow by it (the CapabilityStatement does not list them),
/// and a strict one is refused, so nobody mistakes the whole type for the matches.
#[tokio::test]
async fn text_searches_are_reported_and_refused_under_strict_handling() {
    for node in nodes().await {
        let b = node.backend;
        let id = node
            .create(&json!({
                "resourceType": "Condition",
                "code": {"text": "asthma"},
                "subject": {"reference": "Patient/text-search"}
            }))
            .await;
        for parameter in ["_text", "_content"] {
            let path = format!("Condition?{parameter}=asthma");
            let lenient = node.get(&path).await;
            assert_eq!(lenient.status, 200, "[{b}] {path}");
            assert_eq!(match_ids(&lenient.body), [id.clone()], "[{b}] {path}");
            let outcome = lenient.body["entry"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["search"]["mode"] == "outcome")
                .unwrap_or_else(|| panic!("[{b}] {path}: no outcome entry"));
            assert!(
                outcome["resource"]["issue"][0]["diagnostics"]
                    .as_str()
                    .unwrap()
                    .contains(parameter),
                "[{b}] {path}: {outcome}"
            );
            let strict = node
                .send(
                    node.client
                        .get(node.url(&path))
                        .header("prefer", "handling=strict"),
                )
                .await;
            assert_eq!(strict.status, 400, "[{b}] {path}: {}", strict.text);
            assert!(
                strict.text.contains(parameter),
                "[{b}] {path}: {}",
                strict.text
            );
        }
        let metadata = node.get("metadata").await.body;
        let listed = metadata.to_string();
        assert!(
            !listed.contains("\"_text\"") && !listed.contains("\"_content\""),
            "[{b}] the CapabilityStatement offers no text search"
        );
    }
}
