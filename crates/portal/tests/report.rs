//! Reporting an access as suspicious from `/wie-keek`: the citizen's form posts `$report` to
//! the record's node with the session's own token, and the node's log then holds the alert;
//! without the session's CSRF token, or for a record about someone else, nothing is reported.

mod support;

use reqwest::StatusCode;
use support::*;
use zorgnet_audit::AgentKind;

/// The node (index) holding a Patient of `citizen`, and that Patient's id.
fn patient_of(citizen: &Citizen) -> (usize, String) {
    citizen
        .loaded
        .iter()
        .enumerate()
        .find_map(|(i, loaded)| {
            loaded
                .iter()
                .find_map(|r| r.strip_prefix("Patient/"))
                .map(|id| (i, id.to_string()))
        })
        .expect("a Patient loaded")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_citizen_reports_an_access_from_the_page_and_the_node_logs_the_alert() {
    let (world, _portal) = start(Vec::new()).await;
    let (index, anna_patient) = patient_of(&world.anna);
    let node = &world.nodes[index];
    let seq = professional_read(node, &anna_patient).await;
    let (browser, _) = log_in(&world, &world.anna).await;
    let (status, page) = get(&browser, &format!("{}/wie-keek", world.portal)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Meld als verdacht"), "{page}");
    assert!(
        page.contains(&format!("name=\"id\" value=\"{seq}\"")),
        "the professional's read has a report form"
    );
    assert_eq!(
        page.matches("action=\"/wie-keek/melden\"").count(),
        1,
        "only the professional's read: the citizen's own reads are not reported"
    );
    assert!(
        page.contains("<label for=\"reden-"),
        "the reason is labelled"
    );
    let csrf = csrf_of(&page);
    let url = format!("{}/wie-keek/melden", world.portal);
    let fields = |csrf: Option<&str>, source: usize, id: u64| {
        let mut fields = vec![
            ("source".to_string(), source.to_string()),
            ("id".to_string(), id.to_string()),
            ("reden".to_string(), "Ik ken deze arts niet".to_string()),
        ];
        if let Some(csrf) = csrf {
            fields.push(("csrf".to_string(), csrf.to_string()));
        }
        fields
    };

    // Without the session's CSRF token (or with another): 403 and no alert.
    for csrf in [None, Some("forged")] {
        let answer = browser
            .post(&url)
            .form(&fields(csrf, index, seq))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::FORBIDDEN);
        assert!(
            answer
                .text()
                .await
                .unwrap()
                .contains("Het formulier is verlopen")
        );
    }
    assert!(reports(node).await.is_empty(), "nothing reported");

    // With it: the node's log holds the alert, and the page confirms it.
    let answer = browser
        .post(&url)
        .form(&fields(Some(&csrf), index, seq))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.url().path(), "/wie-keek");
    let confirmed = answer.text().await.unwrap();
    assert!(
        confirmed.contains(&format!("Uw melding is doorgegeven aan {}.", node.name)),
        "{confirmed}"
    );
    let alerts = reports(node).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].seq, seq);
    assert_eq!(alerts[0].patients, [anna_patient.as_str()]);
    assert_eq!(alerts[0].reason.as_deref(), Some("Ik ken deze arts niet"));
    assert_eq!(alerts[0].agent.kind, AgentKind::Citizen);
    for other in world.nodes.iter().filter(|n| n.ura != node.ura) {
        assert!(reports(other).await.is_empty(), "only at the record's node");
    }

    // A record about bob, sent by anna's browser: the node refuses it, nothing is reported.
    let (bob_index, bob_patient) = patient_of(&world.bob);
    let bob_node = &world.nodes[bob_index];
    let bobs = professional_read(bob_node, &bob_patient).await;
    let answer = browser
        .post(&url)
        .form(&fields(Some(&csrf), bob_index, bobs))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    assert!(
        answer
            .text()
            .await
            .unwrap()
            .contains("alleen toegang tot uw eigen gegevens"),
        "a friendly refusal"
    );
    assert_eq!(
        reports(bob_node).await.len(),
        usize::from(bob_node.ura == node.ura)
    );

    // A source or id that is not one: 400, a reason too long: 400.
    for (source, id) in [("9", "0"), ("0", "x")] {
        let answer = browser
            .post(&url)
            .form(&[("csrf", csrf.as_str()), ("source", source), ("id", id)])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{source} {id}");
    }
    let long = "x".repeat(zorgnet_audit::REPORT_REASON_CHARS_MAX + 1);
    let answer = browser
        .post(&url)
        .form(&[
            ("csrf", csrf.as_str()),
            ("source", &index.to_string()),
            ("id", &seq.to_string()),
            ("reden", &long),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    assert_eq!(reports(node).await.len(), 1, "nothing more reported");
}
