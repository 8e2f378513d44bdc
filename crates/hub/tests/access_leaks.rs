//! No answer of a node to another organisation depends on data that organisation may not
//! see. Every search feature the node offers is asked twice with a valid token of another
//! organisation: before and after the patient gets lab results they opted out of sharing.
//! The answers must be the same (but for Bundle ids, times and sealed cursors). Then: an
//! unknown patient and a patient who opted out of everything get the same refusal; no
//! refusal names the patient's choice; identifiers must be complete; roles and emergency
//! purposes are the role's, not the token's say-so.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use support::{TestHub, TestNode, node_with_access};
use zorgnet_node::access::{AccessConfig, NOT_PERMITTED, ROLE_NOT_PERMITTED};
use zorgnet_node::hub_client::token_value;
use zorgnet_pseudonym::{Bsn, PersonalId};
use zorgnet_trust::token::{Purpose, TokenRequest};

const GP: &str = "00000011";
const HOSPITAL: &str = "00000022";
/// The patient whose lab results are opted out.
const BSN: &str = "123456782";
/// A patient who opted out of all sharing.
const OPTED_OUT_BSN: &str = "111222333";
/// Nobody at the GP's.
const UNKNOWN_BSN: &str = "999999990";
const BSN_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/bsn";
const GLUCOSE: &str = "http://loinc.org|2339-0";
const HEART_RATE: &str = "http://loinc.org|8867-4";
/// How many hidden lab results the patient gets: more than a page of `_count=1` holds, and
/// more than the first reads of a page cover.
const HIDDEN_RESULTS: usize = 12;
/// Most pages a walk along `next` or `previous` links follows.
const MAX_WALK_PAGES: usize = 40;

async fn call(
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<(&str, String)>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some((content_type, body)) = body {
        request = request.header("content-type", content_type).body(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn create(base: &str, resource: Value) -> String {
    let url = format!("{base}/{}", resource["resourceType"].as_str().unwrap());
    let body = Some(("application/fhir+json", resource.to_string()));
    let (status, created) = call(Method::POST, &url, None, body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["id"].as_str().unwrap().to_string()
}

async fn patient(base: &str, bsn: &str) -> String {
    create(
        base,
        json!({"resourceType": "Patient", "identifier": [{"system": BSN_SYSTEM, "value": bsn}]}),
    )
    .await
}

fn observation(patient: &str, category: &str, code: &str, value: f64, performer: &str) -> Value {
    let (system, code) = code.split_once('|').unwrap();
    json!({"resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": category}]}],
        "code": {"coding": [{"system": system, "code": code}], "text": "glucose or heart rate"},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": "2024-03-01",
        "performer": [{"reference": format!("Practitioner/{performer}")}],
        "valueQuantity": {"value": value, "unit": "1", "system": "http://unitsofmeasure.org", "code": "1"}})
}

async fn opt_out(hub: &TestHub, key: &str, bsn: &str, category: Option<&str>) {
    let client = hub.client(key);
    let person = PersonalId::from(Bsn::parse(bsn).unwrap());
    let token = client.referral_index_token(&person).await.unwrap();
    let mut body = json!({"kind": "opt-out", "token": token_value(&token)});
    if let Some(category) = category {
        body["category"] = json!(category);
    }
    client.post("/consent/directives", &body).await.unwrap();
}

/// A token of the hospital for the GP's node: with a role, for a professional the register
/// gives that role at the hospital (registered here); without one, a system token.
async fn token(hub: &TestHub, key: &str, role: Option<&str>, purpose: Purpose) -> String {
    let uzi = role.map(|role| format!("9000{}", role.replace('.', "")));
    if let (Some(uzi), Some(role)) = (&uzi, role) {
        let registered = reqwest::Client::new()
            .put(format!("{}/professionals/{uzi}", hub.base))
            .bearer_auth(&hub.admin_key)
            .json(&json!({"name": "Zorgverlener", "roles": [{"ura": HOSPITAL, "role": role}]}))
            .send()
            .await
            .unwrap();
        assert!(registered.status().is_success(), "{registered:?}");
    }
    let request = TokenRequest {
        audience: GP.into(),
        role: uzi.as_ref().and(role.map(String::from)),
        uzi,
        purpose,
        reason: (purpose == Purpose::Emergency).then(|| "bewusteloos binnengebracht".into()),
    };
    hub.client(key)
        .access_token(&request)
        .await
        .unwrap()
        .access_token
}

/// An answer without what may differ between two equal answers: Bundle ids and times,
/// and the sealed cursors in links (fresh nonces every time).
fn normalised(mut answer: Value) -> Value {
    if let Some(object) = answer.as_object_mut() {
        object.remove("id");
        object.remove("meta");
    }
    if let Some(links) = answer.get_mut("link").and_then(Value::as_array_mut) {
        for link in links {
            let url = link["url"].as_str().unwrap_or_default().to_string();
            link["url"] = json!(without_cursor(&url));
        }
    }
    answer
}

fn without_cursor(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("_cursor", _)) => "_cursor=…".to_string(),
            _ => pair.to_string(),
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

fn link(bundle: &Value, relation: &str) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == relation)
        .and_then(|l| l["url"].as_str())
        .map(String::from)
}

/// One row of the table: how to ask, and whether to walk the answer's links.
struct Ask {
    what: &'static str,
    method: Method,
    url: String,
    body: Option<(&'static str, String)>,
}

/// The answer to `ask`: its first page and, for a searchset, every page along `next`
/// links and then back along `previous` links from the last one.
async fn answer(ask: &Ask, token: &str) -> Vec<(StatusCode, Value)> {
    let (status, first) = call(ask.method.clone(), &ask.url, Some(token), ask.body.clone()).await;
    let mut pages = vec![(status, first.clone())];
    if first["type"] != "searchset" {
        return pages;
    }
    assert!(first.get("total").is_none(), "{}: {first}", ask.what);
    let mut last = first;
    while let Some(next) = link(&last, "next") {
        let (status, page) = call(Method::GET, &next, Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "{}: {page}", ask.what);
        pages.push((status, page.clone()));
        last = page;
        assert!(
            pages.len() < MAX_WALK_PAGES,
            "{}: endless next links",
            ask.what
        );
    }
    let forward = pages.len();
    while let Some(previous) = link(&last, "previous") {
        let (status, page) = call(Method::GET, &previous, Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "{}: {page}", ask.what);
        pages.push((status, page.clone()));
        last = page;
        assert!(
            pages.len() < forward + MAX_WALK_PAGES,
            "{}: endless previous links",
            ask.what
        );
    }
    pages
        .into_iter()
        .map(|(status, page)| (status, normalised(page)))
        .collect()
}

fn the_table(node: &TestNode, p: &str, practitioner: &str) -> Vec<Ask> {
    let base = &node.base;
    let get = |what: &'static str, query: String| Ask {
        what,
        method: Method::GET,
        url: format!("{base}/{query}"),
        body: None,
    };
    let by_bsn = format!("{BSN_SYSTEM}%7C{BSN}");
    let parameters = |list: Value| {
        Some((
            "application/fhir+json",
            json!({"resourceType": "Parameters", "parameter": list}).to_string(),
        ))
    };
    vec![
        get("plain search", format!("Observation?patient={p}")),
        get(
            "search by the hidden code",
            format!("Observation?patient={p}&code={GLUCOSE}"),
        ),
        get(
            "search by value",
            format!("Observation?patient={p}&value-quantity=gt5"),
        ),
        get(
            "OR-list with the hidden code",
            format!("Observation?patient={p}&code={GLUCOSE},{HEART_RATE}"),
        ),
        get(
            ":not",
            format!("Observation?patient={p}&code:not={HEART_RATE}"),
        ),
        get(
            ":missing",
            format!("Observation?patient={p}&value-quantity:missing=false"),
        ),
        get(
            ":text",
            format!("Observation?patient={p}&code:text=glucose"),
        ),
        get(
            ":contains",
            format!("Patient?_id={p}&name:contains=x&_revinclude=Observation:subject"),
        ),
        get(
            "_include",
            format!("Observation?patient={p}&_include=Observation:performer"),
        ),
        get(
            "_revinclude",
            format!("Patient?_id={p}&_revinclude=Observation:subject"),
        ),
        get(
            "_revinclude on the performer",
            format!(
                "Patient?_id={p}&_revinclude=Observation:patient&_include:iterate=Observation:performer"
            ),
        ),
        get(
            "chain into reference data",
            format!("Observation?patient={p}&performer:Practitioner.name=x"),
        ),
        get(
            "chain into hidden data",
            format!("DiagnosticReport?patient={p}&result.code={GLUCOSE}"),
        ),
        get(
            "diagnostic reports",
            format!("DiagnosticReport?patient={p}"),
        ),
        get(
            "_summary=count",
            format!("Observation?patient={p}&_summary=count"),
        ),
        get("_count=0", format!("Observation?patient={p}&_count=0")),
        get("_total", format!("Observation?patient={p}&_total=accurate")),
        get(
            "_summary=true",
            format!("Observation?patient={p}&_summary=true"),
        ),
        get(
            "_elements",
            format!("Observation?patient={p}&_elements=code"),
        ),
        get(
            "_sort by value, paged",
            format!("Observation?patient={p}&_sort=-value-quantity&_count=1"),
        ),
        get(
            "_sort by code",
            format!("Observation?patient={p}&_sort=code"),
        ),
        get("paging", format!("Observation?patient={p}&_count=1")),
        get("paging by two", format!("Observation?patient={p}&_count=2")),
        get("_id", format!("Patient?_id={p}")),
        get("identifier", format!("Patient?identifier={by_bsn}")),
        get(
            "patient.identifier",
            format!("Observation?patient.identifier={by_bsn}"),
        ),
        get("read by id", format!("Patient/{p}")),
        get(
            "read of reference data",
            format!("Practitioner/{practitioner}"),
        ),
        get("history", format!("Patient/{p}/_history")),
        get("vread", format!("Patient/{p}/_history/1")),
        get("type history", "Observation/_history".to_string()),
        get("$everything", format!("Patient/{p}/$everything")),
        get(
            "$everything, paged",
            format!("Patient/{p}/$everything?_count=1"),
        ),
        get(
            "$everything of Observations",
            format!("Patient/{p}/$everything?_type=Observation"),
        ),
        Ask {
            what: "$everything by POST",
            method: Method::POST,
            url: format!("{base}/Patient/{p}/$everything"),
            body: parameters(json!([{"name": "_count", "valueInteger": 1}])),
        },
        Ask {
            what: "_search by POST",
            method: Method::POST,
            url: format!("{base}/Observation/_search"),
            body: Some((
                "application/x-www-form-urlencoded",
                format!("patient={p}&code={}&_count=1", GLUCOSE.replace('|', "%7C")),
            )),
        },
    ]
}

#[tokio::test]
async fn no_answer_depends_on_what_the_requester_may_not_see() {
    for hub in support::hubs().await {
        let gp_key = hub.organisation(GP, "Huisarts").await;
        let hospital_key = hub.organisation(HOSPITAL, "Ziekenhuis").await;
        for person in [BSN, OPTED_OUT_BSN] {
            support::relation(&hub, &hospital_key, person).await;
        }
        let ask_every_time = AccessConfig {
            decision_ttl: Duration::ZERO,
        };
        let gp = node_with_access(&hub, GP, &gp_key, true, ask_every_time).await;
        let p = patient(&gp.base, BSN).await;
        let doctor = create(
            &gp.base,
            json!({"resourceType": "Practitioner", "name": [{"family": "Visser"}]}),
        )
        .await;
        let lab_doctor = create(
            &gp.base,
            json!({"resourceType": "Practitioner", "name": [{"family": "Laborant"}]}),
        )
        .await;
        for value in [70.0, 60.0] {
            create(
                &gp.base,
                observation(&p, "vital-signs", HEART_RATE, value, &doctor),
            )
            .await;
        }
        create(
            &gp.base,
            json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                "medicationCodeableConcept": {"text": "metformine"},
                "subject": {"reference": format!("Patient/{p}")}}),
        )
        .await;
        opt_out(&hub, &hospital_key, BSN, Some("lab-results")).await;
        let doctor_token = token(&hub, &hospital_key, Some("01.015"), Purpose::Treatment).await;
        let table = the_table(&gp, &p, &doctor);

        let mut before = Vec::new();
        for ask in &table {
            before.push(answer(ask, &doctor_token).await);
        }

        // The patient gets lab results (and a report of them) that the hospital may not
        // see: after the visible ones by creation, before them by code and by value.
        for i in 0..HIDDEN_RESULTS {
            let value = if i % 2 == 0 {
                5.0 + i as f64
            } else {
                80.0 + i as f64
            };
            let id = create(
                &gp.base,
                observation(&p, "laboratory", GLUCOSE, value, &lab_doctor),
            )
            .await;
            if i == 0 {
                create(
                    &gp.base,
                    json!({"resourceType": "DiagnosticReport", "status": "final",
                        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}],
                        "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
                        "subject": {"reference": format!("Patient/{p}")},
                        "result": [{"reference": format!("Observation/{id}")}]}),
                )
                .await;
            }
        }
        for (ask, before) in table.iter().zip(&before) {
            let after = answer(ask, &doctor_token).await;
            let text = |pages: &[(StatusCode, Value)]| {
                pages
                    .iter()
                    .map(|(s, p)| format!("{s} {p}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            assert_eq!(
                text(before),
                text(&after),
                "{} ({}): the answer changed with data the requester may not see",
                ask.what,
                hub.backend
            );
            for (_, page) in &after {
                let shown = page.get("entry").map(Value::to_string).unwrap_or_default();
                assert!(!shown.contains("2339-0"), "{}: {shown}", ask.what);
                assert!(!shown.contains("Laborant"), "{}: {shown}", ask.what);
                assert!(
                    !page.to_string().contains("opted out"),
                    "{}: {page}",
                    ask.what
                );
            }
        }

        // The features themselves answer as documented.
        let first = |ask: &str| -> (StatusCode, Value) {
            let at = table.iter().position(|a| a.what == ask).unwrap();
            before[at][0].clone()
        };
        for refused in [
            "_summary=count",
            "_count=0",
            "chain into hidden data",
            "history",
            "vread",
            "type history",
            "read of reference data",
        ] {
            assert_eq!(first(refused).0, StatusCode::FORBIDDEN, "{refused}");
        }
        let (status, plain) = first("plain search");
        assert_eq!(status, StatusCode::OK, "{plain}");
        assert!(
            plain.to_string().contains("lab-results (policy)"),
            "the notice names the withheld category and its class: {plain}"
        );
        let at = table.iter().position(|a| a.what == "paging").unwrap();
        let walk = &before[at];
        assert_eq!(
            walk.len(),
            3,
            "two heart rates: two pages forward, one back: {walk:?}"
        );
        assert!(link(&walk[1].1, "next").is_none(), "{walk:?}");
        assert!(link(&walk[2].1, "previous").is_none(), "{walk:?}");
        let (status, elements) = first("_elements");
        assert_eq!(status, StatusCode::OK);
        assert!(
            elements.to_string().contains("SUBSETTED") && elements.to_string().contains("8867-4"),
            "{elements}"
        );
        let (_, included) = first("_include");
        assert!(included.to_string().contains("Visser"), "{included}");
        drop(gp);
    }
}

#[tokio::test]
async fn unknown_and_refused_patients_look_alike_and_roles_are_applied() {
    for hub in support::hubs().await {
        let gp_key = hub.organisation(GP, "Huisarts").await;
        let hospital_key = hub.organisation(HOSPITAL, "Ziekenhuis").await;
        for person in [BSN, OPTED_OUT_BSN] {
            support::relation(&hub, &hospital_key, person).await;
        }
        let gp = node_with_access(&hub, GP, &gp_key, true, AccessConfig::default()).await;
        let p = patient(&gp.base, BSN).await;
        let refuser = patient(&gp.base, OPTED_OUT_BSN).await;
        for patient in [&p, &refuser] {
            create(
                &gp.base,
                json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                    "medicationCodeableConcept": {"text": "metformine"},
                    "subject": {"reference": format!("Patient/{patient}")}}),
            )
            .await;
            create(
                &gp.base,
                json!({"resourceType": "DocumentReference", "status": "current",
                    "type": {"coding": [{"system": "http://loinc.org", "code": "18842-5"}]},
                    "subject": {"reference": format!("Patient/{patient}")},
                    "content": [{"attachment": {"contentType": "text/plain", "data": "b250c2xhZw=="}}]}),
            )
            .await;
        }
        opt_out(&hub, &hospital_key, OPTED_OUT_BSN, None).await;
        let doctor = token(&hub, &hospital_key, Some("01.015"), Purpose::Treatment).await;
        let base = &gp.base;

        // Unknown, deleted-like and everything-denied patients: one answer, byte for byte.
        for (unknown, refused) in [
            ("Patient/nobody".to_string(), format!("Patient/{refuser}")),
            (
                "Patient/nobody/$everything".to_string(),
                format!("Patient/{refuser}/$everything"),
            ),
            (
                "MedicationRequest?patient=nobody".to_string(),
                format!("MedicationRequest?patient={refuser}"),
            ),
            (
                format!("Patient?identifier={BSN_SYSTEM}%7C{UNKNOWN_BSN}"),
                format!("Patient?identifier={BSN_SYSTEM}%7C{OPTED_OUT_BSN}"),
            ),
            (
                format!("MedicationRequest?patient.identifier={BSN_SYSTEM}%7C{UNKNOWN_BSN}"),
                format!("MedicationRequest?patient.identifier={BSN_SYSTEM}%7C{OPTED_OUT_BSN}"),
            ),
        ] {
            let unknown = call(
                Method::GET,
                &format!("{base}/{unknown}"),
                Some(&doctor),
                None,
            )
            .await;
            let refused = call(
                Method::GET,
                &format!("{base}/{refused}"),
                Some(&doctor),
                None,
            )
            .await;
            assert_eq!(unknown.0, StatusCode::FORBIDDEN, "{}", unknown.1);
            assert_eq!(unknown, refused, "{}", hub.backend);
            let text = refused.1.to_string();
            assert!(text.contains(NOT_PERMITTED), "{text}");
            assert!(
                !text.contains("opted out") && !text.contains("opt-out"),
                "{text}"
            );
        }

        // A conditional read is decided as the read: a 304 only where the read would be
        // served, the same refusal where it would not (no probing of versions).
        for (patient, expected) in [
            (&p, StatusCode::NOT_MODIFIED),
            (&refuser, StatusCode::FORBIDDEN),
        ] {
            let answer = reqwest::Client::new()
                .get(format!("{base}/Patient/{patient}"))
                .bearer_auth(&doctor)
                .header("if-none-match", "*")
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), expected, "{}", hub.backend);
            let text = answer.text().await.unwrap();
            if expected == StatusCode::FORBIDDEN {
                let plain = call(
                    Method::GET,
                    &format!("{base}/Patient/{patient}"),
                    Some(&doctor),
                    None,
                )
                .await;
                assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), plain.1);
            } else {
                assert!(text.is_empty(), "{text}");
            }
        }

        // The bulk export is the organisation's own: another organisation starts none, and
        // reads no job's status or files, whatever it guesses.
        for path in [
            "$export".to_string(),
            "Patient/$export".to_string(),
            format!("Group/{p}/$export"),
            "$export-status/00000000-0000-4000-8000-000000000000".to_string(),
            "$export-file/00000000-0000-4000-8000-000000000000/Patient-1.ndjson".to_string(),
        ] {
            for method in [Method::GET, Method::DELETE] {
                let answer = reqwest::Client::new()
                    .request(method.clone(), format!("{base}/{path}"))
                    .bearer_auth(&doctor)
                    .header("prefer", "respond-async")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    answer.status(),
                    StatusCode::FORBIDDEN,
                    "{method} {path} ({})",
                    hub.backend
                );
            }
        }

        // An identifier must name one patient exactly.
        for incomplete in [
            format!("Patient?identifier={BSN_SYSTEM}%7C"),
            format!("MedicationRequest?patient.identifier={BSN_SYSTEM}%7C"),
            format!("MedicationRequest?subject.identifier={BSN_SYSTEM}%7C"),
            format!("Patient?identifier={BSN}"),
            format!("Patient?identifier=%7C{BSN}"),
            format!("Patient?identifier={BSN_SYSTEM}%7C{BSN},{BSN_SYSTEM}%7C{OPTED_OUT_BSN}"),
            format!("Patient?identifier:not={BSN_SYSTEM}%7C{BSN}"),
            format!("MedicationRequest?patient={p}&patient:missing=true"),
            // A reverse chain's condition is on resources the requester may not see.
            format!(
                "Patient?identifier={BSN_SYSTEM}%7C{BSN}&_has:MedicationRequest:subject:status=active"
            ),
            format!("Patient?_id={p}&_has:DocumentReference:subject:type=18842-5"),
        ] {
            let (status, refused) = call(
                Method::GET,
                &format!("{base}/{incomplete}"),
                Some(&doctor),
                None,
            )
            .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{incomplete}: {refused}");
            assert!(!refused.to_string().contains("metformine"), "{refused}");
        }

        // A pharmacist sees medication, not the discharge letter; the notice says why.
        let pharmacist = token(&hub, &hospital_key, Some("17.000"), Purpose::Treatment).await;
        let (status, refused) = call(
            Method::GET,
            &format!("{base}/DocumentReference?patient={p}"),
            Some(&pharmacist),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
        assert!(
            refused.to_string().contains(ROLE_NOT_PERMITTED),
            "{refused}"
        );
        let (status, unknown) = call(
            Method::GET,
            &format!("{base}/DocumentReference?patient=nobody"),
            Some(&pharmacist),
            None,
        )
        .await;
        assert_eq!(
            (status, unknown),
            (StatusCode::FORBIDDEN, refused),
            "decided before the patient is looked up"
        );
        let (status, everything) = call(
            Method::GET,
            &format!("{base}/Patient/{p}/$everything"),
            Some(&pharmacist),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{everything}");
        let shown = everything.to_string();
        assert!(shown.contains("metformine"), "{shown}");
        assert!(!shown.contains("18842-5"), "no discharge letter: {shown}");
        assert!(shown.contains("discharge-report (role)"), "{shown}");
        let (status, letter) = call(
            Method::GET,
            &format!("{base}/DocumentReference?patient={p}"),
            Some(&doctor),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            letter.to_string().contains("18842-5"),
            "a physician reads it: {letter}"
        );

        // No role reads nothing; the emergency purpose is the role's to ask.
        let no_role = token(&hub, &hospital_key, None, Purpose::Treatment).await;
        let pharmacist_emergency =
            token(&hub, &hospital_key, Some("17.000"), Purpose::Emergency).await;
        for refused_token in [&no_role, &pharmacist_emergency] {
            for url in [
                format!("{base}/MedicationRequest?patient={p}"),
                format!("{base}/Patient/{p}"),
                format!("{base}/Patient/{p}/$everything"),
            ] {
                let (status, refused) = call(Method::GET, &url, Some(refused_token), None).await;
                assert_eq!(status, StatusCode::FORBIDDEN, "{url}: {refused}");
                assert!(
                    refused.to_string().contains("reason class: role"),
                    "{refused}"
                );
            }
        }
        let physician_emergency =
            token(&hub, &hospital_key, Some("01.015"), Purpose::Emergency).await;
        let (status, found) = call(
            Method::GET,
            &format!("{base}/MedicationRequest?patient={p}"),
            Some(&physician_emergency),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{found}");

        // Cursors are the node's own: a store cursor or another's is refused.
        let (_, paged) = call(
            Method::GET,
            &format!("{base}/Patient/{p}/$everything?_count=1"),
            Some(&doctor),
            None,
        )
        .await;
        let next = link(&paged, "next").expect("more than one resource");
        let (status, page) = call(Method::GET, &next, Some(&doctor), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let forged = format!("{base}/Patient/{p}/$everything?_count=1&_cursor=n1");
        let (status, refused) = call(Method::GET, &forged, Some(&doctor), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
        drop(gp);
    }
}

/// Every `Observation` id of `patient` that a walk of `Observation?patient=…&_count=1`
/// along `next` links shows, in order.
/// The ids of the matches of `Observation?patient=…&_count=1` and `more`, walked page by
/// page, and the notices of the pages.
async fn walked_observations(
    base: &str,
    patient: &str,
    token: &str,
    more: &str,
) -> (Vec<String>, Vec<String>) {
    let ask = Ask {
        what: "walk",
        method: Method::GET,
        url: format!("{base}/Observation?patient={patient}&_count=1{more}"),
        body: None,
    };
    let (mut ids, mut notices) = (Vec::new(), Vec::new());
    for (_, page) in &answer(&ask, token).await {
        for entry in page["entry"].as_array().into_iter().flatten() {
            if entry["search"]["mode"] == "outcome" {
                notices.push(entry["resource"].to_string());
            }
        }
        for entry in page["entry"].as_array().into_iter().flatten() {
            if entry["search"]["mode"] == "match" {
                ids.push(entry["resource"]["id"].as_str().unwrap().to_string());
            }
        }
        if link(page, "next").is_none() {
            break;
        }
    }
    (ids, notices)
}

/// A search of one type is narrowed in the store rather than filtered after it: it must keep
/// exactly what the filter keeps (not a resource that is also another patient's, not one of
/// no category, not one of a withheld category), page with sealed cursors only, and give
/// the filter's notice once a category is withheld.
#[tokio::test]
async fn a_narrowed_search_keeps_exactly_what_the_filter_keeps() {
    for hub in support::hubs().await {
        let gp_key = hub.organisation(GP, "Huisarts").await;
        let hospital_key = hub.organisation(HOSPITAL, "Ziekenhuis").await;
        support::relation(&hub, &hospital_key, BSN).await;
        let ask_every_time = AccessConfig {
            decision_ttl: Duration::ZERO,
        };
        let gp = node_with_access(&hub, GP, &gp_key, true, ask_every_time).await;
        let p = patient(&gp.base, BSN).await;
        let other = patient(&gp.base, OPTED_OUT_BSN).await;
        let doctor = create(
            &gp.base,
            json!({"resourceType": "Practitioner", "name": [{"family": "Visser"}]}),
        )
        .await;
        let mut visible = Vec::new();
        for value in [70.0, 60.0, 65.0] {
            visible.push(
                create(
                    &gp.base,
                    observation(&p, "vital-signs", HEART_RATE, value, &doctor),
                )
                .await,
            );
        }
        let lab = create(
            &gp.base,
            observation(&p, "laboratory", GLUCOSE, 5.5, &doctor),
        )
        .await;
        let mut shared_with_other = observation(&p, "vital-signs", HEART_RATE, 50.0, &doctor);
        shared_with_other["performer"] = json!([{"reference": format!("Patient/{other}")}]);
        let shared_with_other = create(&gp.base, shared_with_other).await;
        let mut uncategorised = observation(&p, "exam", HEART_RATE, 55.0, &doctor);
        uncategorised["category"][0]["coding"][0]["code"] = json!("exam");
        let uncategorised = create(&gp.base, uncategorised).await;
        create(
            &gp.base,
            observation(&other, "vital-signs", HEART_RATE, 40.0, &doctor),
        )
        .await;
        let doctor_token = token(&hub, &hospital_key, Some("01.015"), Purpose::Treatment).await;

        let (narrowed, notices) = walked_observations(&gp.base, &p, &doctor_token, "").await;
        let with_lab: Vec<String> = visible.iter().chain([&lab]).cloned().collect();
        assert_eq!(narrowed, with_lab, "{}", hub.backend);
        assert_eq!(notices, Vec::<String>::new(), "{}", hub.backend);
        for hidden in [&shared_with_other, &uncategorised] {
            assert!(!narrowed.contains(hidden), "{}", hub.backend);
        }

        // The links carry sealed cursors: the store's own cursor, as the GP's own client
        // gets it, is refused, and so is a sealed one shown by another organisation.
        let (_, own) = call(
            Method::GET,
            &format!("{}/Observation?patient={p}&_count=1", gp.base),
            None,
            None,
        )
        .await;
        let own_next = link(&own, "next").expect("the GP's own search has a next page");
        let (status, refused) = call(Method::GET, &own_next, Some(&doctor_token), None).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{}: {refused}",
            hub.backend
        );
        let (_, first) = call(
            Method::GET,
            &format!("{}/Observation?patient={p}&_count=1", gp.base),
            Some(&doctor_token),
            None,
        )
        .await;
        assert!(first.get("total").is_none(), "{first}");
        let sealed_next = link(&first, "next").unwrap();
        assert!(!sealed_next.contains(own_next.rsplit('=').next().unwrap()));
        let pharmacy_key = hub.organisation("00000033", "Apotheek").await;
        support::relation(&hub, &pharmacy_key, BSN).await;
        let pharmacy_token = token(&hub, &pharmacy_key, None, Purpose::Treatment).await;
        let (status, _) = call(Method::GET, &sealed_next, Some(&pharmacy_token), None).await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::FORBIDDEN,
            "{}: another organisation's cursor: {status}",
            hub.backend
        );

        // With a category withheld the search is still narrowed, and keeps what the filter
        // (which `_include` asks for) keeps, with the same notice.
        opt_out(&hub, &hospital_key, BSN, Some("lab-results")).await;
        let (narrowed, notices) = walked_observations(&gp.base, &p, &doctor_token, "").await;
        assert_eq!(narrowed, visible, "{}", hub.backend);
        let (filtered, filter_notices) = walked_observations(
            &gp.base,
            &p,
            &doctor_token,
            "&_include=Observation:performer",
        )
        .await;
        assert_eq!(filtered, narrowed, "{}", hub.backend);
        assert!(!notices.is_empty(), "{}", hub.backend);
        for notice in notices.iter().chain(&filter_notices) {
            assert!(
                notice.contains("lab-results (policy)"),
                "{}: {notice}",
                hub.backend
            );
            assert!(!notice.contains("opted out"), "{}: {notice}", hub.backend);
        }
    }
}

/// The records the node's access log holds from `from` on.
fn records_since(node: &TestNode, from: u64) -> Vec<zorgnet_audit::AuditRecord> {
    (from..node.audit.size())
        .map(|seq| serde_json::from_str(&node.audit.record(seq).unwrap().unwrap()).unwrap())
        .collect()
}

/// Every access, served or refused, leaves exactly one record in the node's access log with
/// who, whose, what, why and the outcome; what holds no patient data is not logged.
#[tokio::test]
async fn every_access_is_logged_once_with_who_whose_what_why_and_outcome() {
    use zorgnet_audit::AgentKind;
    let hub = support::hubs().await.into_iter().next().unwrap();
    let gp_key = hub.organisation(GP, "Huisarts").await;
    let hospital_key = hub.organisation(HOSPITAL, "Ziekenhuis").await;
    support::relation(&hub, &hospital_key, BSN).await;
    let gp = node_with_access(&hub, GP, &gp_key, true, AccessConfig::default()).await;

    // The organisation's own client (here the development client) writes.
    let before = gp.audit.size();
    let p = patient(&gp.base, BSN).await;
    let [created] = records_since(&gp, before).try_into().unwrap();
    assert_eq!(created.agent.kind, AgentKind::System);
    assert_eq!(created.agent.organisation.as_deref(), Some(GP));
    assert_eq!((created.action.as_str(), created.status), ("create", 201));
    assert!(
        created.request.starts_with("POST /fhir/Patient"),
        "{created:?}"
    );

    let doctor = token(&hub, &hospital_key, Some("01.015"), Purpose::Treatment).await;
    let emergency = token(&hub, &hospital_key, Some("01.015"), Purpose::Emergency).await;
    let no_role = token(&hub, &hospital_key, None, Purpose::Treatment).await;
    let read = format!("{}/Patient/{p}", gp.base);
    for (what, bearer, status) in [
        ("treatment", Some(doctor.as_str()), StatusCode::OK),
        ("emergency", Some(emergency.as_str()), StatusCode::OK),
        ("no role", Some(no_role.as_str()), StatusCode::FORBIDDEN),
        (
            "forged token",
            Some("eyJhbGciOiJFZERTQSJ9.e30.c2ln"),
            StatusCode::UNAUTHORIZED,
        ),
    ] {
        let before = gp.audit.size();
        let (answered, body) = call(Method::GET, &read, bearer, None).await;
        assert_eq!(answered, status, "{what}: {body}");
        let [record] = records_since(&gp, before)
            .try_into()
            .unwrap_or_else(|r: Vec<_>| panic!("{what}: {} records", r.len()));
        assert_eq!(record.status, status.as_u16(), "{what}");
        assert_eq!(record.action, "read", "{what}");
        assert_eq!(record.request, format!("GET /fhir/Patient/{p}"), "{what}");
        match what {
            "forged token" => {
                assert_eq!(record.agent.kind, AgentKind::Unauthenticated, "{what}");
                assert!(record.patients.is_empty(), "{what}: {record:?}");
            }
            _ => {
                assert_eq!(record.patients, vec![p.clone()], "{what}");
                assert_eq!(
                    record.agent.organisation.as_deref(),
                    Some(HOSPITAL),
                    "{what}"
                );
            }
        }
        match what {
            "treatment" | "emergency" => {
                assert_eq!(record.agent.kind, AgentKind::Professional, "{what}");
                assert_eq!(record.agent.id.as_deref(), Some("900001015"), "{what}");
                assert_eq!(record.agent.role.as_deref(), Some("01.015"), "{what}");
                assert_eq!(record.purpose.as_deref(), Some(what), "{what}");
            }
            "no role" => assert_eq!(record.agent.kind, AgentKind::Organisation, "{what}"),
            _ => {}
        }
        assert_eq!(
            record.reason.as_deref(),
            (what == "emergency").then_some("bewusteloos binnengebracht"),
            "{what}"
        );
        let basis = match what {
            "treatment" => vec!["treatment-relation"],
            "emergency" => vec!["emergency"],
            _ => vec![],
        };
        assert_eq!(record.bases, basis, "{what}: the basis the register gave");
    }

    // What holds no patient data is not logged.
    let before = gp.audit.size();
    let (status, _) = call(Method::GET, &format!("{}/metadata", gp.base), None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        gp.audit.size(),
        before,
        "the CapabilityStatement is not an access"
    );
}
