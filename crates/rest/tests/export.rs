//! Bulk Data export (`$export`) on both backends: the three levels, `_type` and `_since`,
//! the manifest and its files, the refusals, and cancellation.

mod support;

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::{Node, Reply, assert_outcome, nodes};

/// How long a test waits for a job before it fails: generous, the jobs are tiny.
const JOB_DEADLINE: Duration = Duration::from_secs(60);
/// Between two status polls.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Sends a kick-off with `Prefer: respond-async`.
async fn kick_off(node: &Node, path: &str) -> Reply {
    node.send(
        node.client
            .get(node.url(path))
            .header("prefer", "respond-async")
            .header("accept", "application/fhir+json"),
    )
    .await
}

/// Kicks off, asserts 202, and returns the status URL.
async fn started(node: &Node, path: &str) -> String {
    let reply = kick_off(node, path).await;
    assert_eq!(
        reply.status, 202,
        "[{}] {path}: {}",
        node.backend, reply.text
    );
    let location = reply
        .header("content-location")
        .expect("a kick-off names its status URL");
    assert!(
        location.starts_with(&format!("{}/$export-status/", node.base)),
        "{location}"
    );
    location
}

/// Polls the status URL until the manifest is there.
async fn manifest(node: &Node, status_url: &str) -> Value {
    let started = Instant::now();
    loop {
        let reply = node.send(node.client.get(status_url)).await;
        match reply.status {
            200 => return reply.body,
            202 => {
                assert!(
                    reply.header("x-progress").is_some(),
                    "202 without X-Progress"
                );
                assert!(
                    reply.header("retry-after").is_some(),
                    "202 without Retry-After"
                );
            }
            other => panic!("[{}] status {other}: {}", node.backend, reply.text),
        }
        assert!(
            started.elapsed() < JOB_DEADLINE,
            "[{}] the export did not finish",
            node.backend
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Runs an export to its end and downloads every file: type → resources, checking that each
/// line is a resource of the listed type and that the counts match.
async fn export(node: &Node, path: &str) -> BTreeMap<String, Vec<Value>> {
    let status_url = started(node, path).await;
    let manifest = manifest(node, &status_url).await;
    assert_eq!(manifest["requiresAccessToken"], true);
    assert!(manifest["transactionTime"].as_str().is_some());
    assert_eq!(manifest["request"], format!("{}/{path}", node.base));
    assert_eq!(manifest["error"], json!([]));
    let mut files = BTreeMap::new();
    for output in manifest["output"].as_array().unwrap() {
        let resource_type = output["type"].as_str().unwrap().to_string();
        let url = output["url"].as_str().unwrap();
        let reply = node.send(node.client.get(url)).await;
        assert_eq!(reply.status, 200, "{url}: {}", reply.text);
        assert_eq!(
            reply.header("content-type").as_deref(),
            Some("application/fhir+ndjson")
        );
        let resources: Vec<Value> = reply
            .text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert!(
            resources.iter().all(|r| r["resourceType"] == resource_type),
            "{url} holds another type"
        );
        assert_eq!(output["count"], resources.len(), "{url}'s count");
        assert!(
            files.insert(resource_type, resources).is_none(),
            "one file per type"
        );
    }
    files
}

fn ids(files: &BTreeMap<String, Vec<Value>>, resource_type: &str) -> Vec<String> {
    let mut ids: Vec<String> = files
        .get(resource_type)
        .into_iter()
        .flatten()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

fn observation(patient: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": format!("Patient/{patient}")}
    })
}

#[tokio::test]
async fn exports_every_level_with_type_and_since() {
    for node in nodes().await {
        let patient = json!({"resourceType": "Patient", "active": true});
        let (p1, p2, p3) = (
            node.create(&patient).await,
            node.create(&patient).await,
            node.create(&patient).await,
        );
        let (o1, o2, o3) = (
            node.create(&observation(&p1)).await,
            node.create(&observation(&p2)).await,
            node.create(&observation(&p3)).await,
        );
        let organisation = node
            .create(&json!({"resourceType": "Organization", "name": "Elsewhere"}))
            .await;
        let group = node
            .create(&json!({
                "resourceType": "Group",
                "type": "person",
                "actual": true,
                "member": [
                    {"entity": {"reference": format!("Patient/{p1}")}},
                    {"entity": {"reference": format!("Patient/{p2}")}}
                ]
            }))
            .await;
        let boundary = node.get(&format!("Group/{group}")).await.body["meta"]["lastUpdated"]
            .as_str()
            .unwrap()
            .to_string();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let o4 = node.create(&observation(&p1)).await;
        // A deleted resource is not exported.
        let gone = node.create(&observation(&p3)).await;
        assert_eq!(
            node.delete(&format!("Observation/{gone}")).await.status,
            204
        );

        let all = export(&node, "$export").await;
        assert_eq!(
            ids(&all, "Patient"),
            sorted(vec![p1.clone(), p2.clone(), p3.clone()])
        );
        let every_observation = sorted(vec![o1.clone(), o2.clone(), o3.clone(), o4.clone()]);
        assert_eq!(ids(&all, "Observation"), every_observation);
        assert_eq!(ids(&all, "Organization"), vec![organisation.clone()]);
        assert_eq!(ids(&all, "Group"), vec![group.clone()]);

        let typed = export(&node, "$export?_type=Patient,Observation").await;
        assert_eq!(
            typed.keys().collect::<Vec<_>>(),
            vec!["Observation", "Patient"]
        );

        let since = export(
            &node,
            &format!("$export?_type=Observation&_since={boundary}"),
        )
        .await;
        assert_eq!(ids(&since, "Observation"), vec![o4.clone()]);

        let patients = export(
            &node,
            "Patient/$export?_outputFormat=application/fhir%2Bndjson",
        )
        .await;
        assert_eq!(
            ids(&patients, "Patient"),
            sorted(vec![p1.clone(), p2.clone(), p3.clone()])
        );
        assert_eq!(ids(&patients, "Observation"), every_observation);
        assert!(
            ids(&patients, "Organization").is_empty(),
            "not in a compartment"
        );

        let members = export(
            &node,
            &format!("Group/{group}/$export?_type=Patient,Observation&_outputFormat=ndjson"),
        )
        .await;
        assert_eq!(
            ids(&members, "Patient"),
            sorted(vec![p1.clone(), p2.clone()])
        );
        assert_eq!(
            ids(&members, "Observation"),
            sorted(vec![o1.clone(), o2.clone(), o4.clone()])
        );

        // The other interactions on these paths still work.
        assert_eq!(node.get(&format!("Patient/{p1}")).await.status, 200);
        assert_eq!(
            node.get(&format!("Group/{group}/_history")).await.status,
            200
        );
        assert_outcome(
            &node.get(&format!("Patient/{p1}/$nonsense")).await,
            404,
            "unknown operation",
        );
    }
}

fn coded(patient: &str, code: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": format!("Patient/{patient}")}
    })
}

#[tokio::test]
async fn type_filters_select_within_their_type_at_every_level() {
    for node in nodes().await {
        let patient = json!({"resourceType": "Patient"});
        let (p1, p2) = (node.create(&patient).await, node.create(&patient).await);
        let a1 = node.create(&coded(&p1, "718-7")).await;
        let b1 = node.create(&coded(&p1, "2345-7")).await;
        let b2 = node.create(&coded(&p2, "2345-7")).await;
        let condition = node
            .create(&json!({
                "resourceType": "Condition",
                "subject": {"reference": format!("Patient/{p2}")}
            }))
            .await;
        let code_a = "Observation%3Fcode%3Dhttp://loinc.org%7C718-7";
        let of_p1 = format!("Observation%3Fsubject%3DPatient/{p1}");

        // Types without a filter are exported whole.
        let filtered = export(&node, &format!("$export?_typeFilter={code_a}")).await;
        assert_eq!(ids(&filtered, "Observation"), vec![a1.clone()]);
        assert_eq!(
            ids(&filtered, "Patient"),
            sorted(vec![p1.clone(), p2.clone()])
        );
        assert_eq!(ids(&filtered, "Condition"), vec![condition.clone()]);

        // Several filters of a type: a match of any, each resource once; as one value
        // (a comma inside a search's value stays in it) or as repeated parameters.
        let either = sorted(vec![a1.clone(), b1.clone()]);
        for query in [
            format!("_typeFilter={code_a},{of_p1}"),
            format!("_typeFilter={code_a}&_typeFilter={of_p1}"),
            format!(
                "_typeFilter=Observation%3Fcode%3Dhttp://loinc.org%7C718-7,http://loinc.org%7C9999-9,{of_p1}"
            ),
        ] {
            let both = export(&node, &format!("$export?_type=Observation&{query}")).await;
            assert_eq!(ids(&both, "Observation"), either, "{query}");
        }

        // At the Patient and Group levels the filters narrow each compartment.
        let patients = export(
            &node,
            "Patient/$export?_type=Observation&_typeFilter=Observation%3Fcode%3Dhttp://loinc.org%7C2345-7",
        )
        .await;
        assert_eq!(
            ids(&patients, "Observation"),
            sorted(vec![b1.clone(), b2.clone()])
        );
        let group = node
            .create(&json!({
                "resourceType": "Group",
                "type": "person",
                "actual": true,
                "member": [{"entity": {"reference": format!("Patient/{p2}")}}]
            }))
            .await;
        let members = export(
            &node,
            &format!("Group/{group}/$export?_typeFilter={code_a}"),
        )
        .await;
        assert!(ids(&members, "Observation").is_empty(), "{members:?}");
        assert_eq!(ids(&members, "Condition"), vec![condition.clone()]);
        assert_eq!(ids(&members, "Patient"), vec![p2.clone()]);
    }
}

#[tokio::test]
async fn bad_kick_offs_are_refused() {
    for node in nodes().await {
        let no_prefer = node.get("$export").await;
        assert_outcome(&no_prefer, 400, "without Prefer: respond-async");
        for path in [
            "$export?_outputFormat=application/fhir%2Bjson",
            "$export?_type=Nonsense",
            "$export?_typeFilter=Observation%3Fnonsense%3Dfinal",
            "$export?_typeFilter=Observation",
            "$export?_typeFilter=Nonsense%3Fstatus%3Dfinal",
            "$export?_typeFilter=Observation%3F_include%3DObservation:subject",
            "$export?_typeFilter=Observation%3Fstatus%3Dfinal%26_count%3D1",
            "$export?_type=Patient&_typeFilter=Observation%3Fstatus%3Dfinal",
            "$export?_since=yesterday",
            "Patient/$export?_elements=id",
        ] {
            assert_outcome(&kick_off(&node, path).await, 400, path);
        }
        assert_outcome(
            &kick_off(&node, "Group/unknown/$export").await,
            404,
            "unknown Group",
        );
        let post = node
            .post("Group/g/$export", &json!({"resourceType": "Parameters"}))
            .await;
        assert_outcome(&post, 405, "POST Group/$export");
        assert_outcome(
            &node
                .get("$export-status/6f1c1b4e-0000-4000-8000-000000000000")
                .await,
            404,
            "unknown job",
        );
        assert_outcome(
            &node
                .get("$export-file/6f1c1b4e-0000-4000-8000-000000000000/Patient-1.ndjson")
                .await,
            404,
            "unknown job's file",
        );

        node.create(&json!({"resourceType": "Patient"})).await;
        let status_url = started(&node, "$export").await;
        let manifest = manifest(&node, &status_url).await;
        let job = status_url.rsplit('/').next().unwrap();
        for name in [
            "Observation-1.ndjson",
            "..",
            "%2E%2E%2FPatient-1.ndjson",
            "x%2F..%2F..%2Fetc",
        ] {
            let reply = node.get(&format!("$export-file/{job}/{name}")).await;
            assert_outcome(&reply, 404, name);
        }
        let url = manifest["output"][0]["url"].as_str().unwrap();
        assert_eq!(node.send(node.client.get(url)).await.status, 200);

        // DELETE removes the job and its files.
        let deleted = node.send(node.client.delete(&status_url)).await;
        assert_eq!(deleted.status, 202, "{}", deleted.text);
        assert_outcome(
            &node.send(node.client.get(&status_url)).await,
            404,
            "deleted job",
        );
        assert_outcome(
            &node.send(node.client.get(url)).await,
            404,
            "deleted job's file",
        );
        assert_outcome(
            &node.send(node.client.delete(&status_url)).await,
            404,
            "deleted twice",
        );

        // A job cancelled at once is gone too, whatever stage it reached.
        let cancelled = started(&node, "Patient/$export").await;
        assert_eq!(node.send(node.client.delete(&cancelled)).await.status, 202);
        assert_outcome(
            &node.send(node.client.get(&cancelled)).await,
            404,
            "cancelled job",
        );
    }
}

#[tokio::test]
async fn the_capability_statement_lists_export() {
    for node in nodes().await {
        let metadata = node.get("metadata").await.body;
        let rest = &metadata["rest"][0];
        let named = |operations: &Value| {
            operations
                .as_array()
                .into_iter()
                .flatten()
                .any(|op| op["name"] == "export")
        };
        assert!(named(&rest["operation"]), "system $export");
        let resource = |t: &str| {
            rest["resource"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["type"] == t)
                .unwrap()
                .clone()
        };
        assert!(named(&resource("Patient")["operation"]), "Patient/$export");
        assert!(named(&resource("Group")["operation"]), "Group/$export");
    }
}
