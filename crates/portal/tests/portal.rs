//! The portal end to end (see `support` for the world): the overview, the download, the
//! access log and its proofs, sessions and languages.

mod support;

use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::*;
use zorgnet_audit::SigningKey;
use zorgnet_portal::Source;

#[tokio::test(flavor = "multi_thread")]
async fn the_overview_shows_every_sources_items_with_their_names() {
    let (world, _) = start(Vec::new()).await;
    let (_, page) = log_in(&world, &world.anna).await;
    assert!(page.contains("<html lang=\"nl\">"));
    assert!(page.contains("Mijn gezondheidsoverzicht"));
    assert!(page.contains("Anna de Vries"));
    for node in &world.nodes {
        assert!(
            page.contains(&format!("<td>{}</td>", node.name)),
            "items of {} are shown with its name",
            node.name
        );
    }
    for heading in [
        "Problemen en diagnoses",
        "Medicatie",
        "Allergieën en intoleranties",
        "Laboratoriumuitslagen",
        "Vaccinaties",
        "Contacten",
        "Documenten",
        "Tijdlijn",
    ] {
        assert!(page.contains(heading), "{heading}");
    }
    assert!(
        !page.contains("Dit overzicht is niet compleet"),
        "every source answered"
    );
    // The lab results, with value, unit and reference range, and their chart with a table.
    assert!(page.contains(
        "<th scope=\"row\">Hemoglobine</th><td>7.1 mmol/l</td><td>7.5 mmol/l – 10 mmol/l</td>"
    ));
    assert!(page.contains("<svg viewBox="), "a chart");
    assert!(
        page.contains("3 metingen, van 2024-01-10 tot en met 2025-02-03"),
        "its text alternative"
    );
    let chart_table = &page[page.find("De waarden als tabel").unwrap()..];
    let chart_table = &chart_table[..chart_table.find("</details>").unwrap()];
    for node in &world.nodes {
        assert!(
            chart_table.contains(&format!("<td>{}</td>", node.name)),
            "{}",
            node.name
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_that_does_not_answer_is_named_within_the_timeout() {
    // A port nobody listens on, and a server that answers too late.
    let (closed, closed_url) = listener().await;
    drop(closed);
    let (slow, slow_url) = listener().await;
    let sleepy = axum::Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        "too late"
    });
    tokio::spawn(async move { axum::serve(slow, sleepy).await });
    let (world, _) = start(vec![
        Source {
            name: "Apotheek Gesloten".into(),
            ura: "00000033".into(),
            fhir_base: format!("{closed_url}/fhir"),
        },
        Source {
            name: "Tandarts Traag".into(),
            ura: "00000044".into(),
            fhir_base: format!("{slow_url}/fhir"),
        },
    ])
    .await;
    let (browser, _) = log_in(&world, &world.anna).await;
    let asked = Instant::now();
    let (status, page) = get(&browser, &format!("{}/overzicht", world.portal)).await;
    let took = asked.elapsed();
    assert_eq!(status, StatusCode::OK, "a partial view, not an error page");
    assert!(
        took < SOURCE_TIMEOUT + Duration::from_millis(1_500),
        "{took:?}"
    );
    assert!(page.contains("Dit overzicht is niet compleet"));
    assert!(page.contains("<strong>Apotheek Gesloten</strong>: was niet bereikbaar"));
    assert!(page.contains("<strong>Tandarts Traag</strong>: antwoordde niet op tijd"));
    for node in &world.nodes {
        assert!(
            page.contains(&format!("<td>{}</td>", node.name)),
            "{}",
            node.name
        );
    }
    let (status, bundle) = get(&browser, &format!("{}/download.json", world.portal)).await;
    assert_eq!(status, StatusCode::OK);
    let bundle: Value = serde_json::from_str(&bundle).unwrap();
    let outcome = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["resourceType"] == "OperationOutcome")
        .expect("the download names the missing sources");
    let text = outcome["resource"].to_string();
    assert!(text.contains("Apotheek Gesloten") && text.contains("Tandarts Traag"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_download_is_a_collection_of_every_nodes_resources() {
    let (world, _) = start(Vec::new()).await;
    let (browser, _) = log_in(&world, &world.anna).await;
    let answer = browser
        .get(format!("{}/download.json", world.portal))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let headers = answer.headers().clone();
    assert!(
        headers["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    assert_eq!(headers["content-type"], "application/fhir+json");
    assert_eq!(headers["cache-control"], "no-store");
    let bundle: Value = answer.json().await.unwrap();
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "collection");
    for (node, loaded) in world.nodes.iter().zip(&world.anna.loaded) {
        let downloaded = downloaded_at(&bundle, &node.base);
        let missing: Vec<&String> = loaded.difference(&downloaded).collect();
        assert!(missing.is_empty(), "{}: missing {missing:?}", node.name);
    }
    let bobs: BTreeSet<String> = world.bob.loaded[0]
        .iter()
        .filter(|id| !world.anna.loaded[0].contains(*id))
        .cloned()
        .collect();
    let at_first = downloaded_at(&bundle, &world.nodes[0].base);
    assert!(at_first.is_disjoint(&bobs), "none of Bob's resources");
    let (status, print) = get(&browser, &format!("{}/afdrukken", world.portal)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(print.contains("Mijn gezondheidsoverzicht — afdruk"));
    assert!(print.contains(&world.nodes[1].name));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_lists_the_portals_reads_and_a_proof_verifies() {
    let (world, portal) = start(Vec::new()).await;
    let (browser, _) = log_in(&world, &world.anna).await;
    let (status, page) = get(&browser, &format!("{}/wie-keek", world.portal)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Wie keek naar mijn gegevens"));
    for node in &world.nodes {
        assert!(
            page.contains(&format!("<td>{}</td>", node.name)),
            "the portal's reads at {} are listed",
            node.name
        );
    }
    assert!(page.contains("U zelf"));
    assert!(page.contains("$everything"), "what was read");

    let link = |page: &str| -> String {
        let start = page.find("href=\"/wie-keek/bewijs?").unwrap() + "href=\"".len();
        unescape(&page[start..start + page[start..].find('"').unwrap()])
    };
    let proof_url = format!("{}{}", world.portal, link(&page));
    let (status, unavailable) = get(&browser, &proof_url).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        unavailable.contains("Het bewijs kon niet worden opgehaald"),
        "no checkpoint signed yet"
    );
    for node in &world.nodes {
        node.checkpoint().await;
    }
    let (_, unsigned) = get(&browser, &proof_url).await;
    assert!(
        unsigned.contains("de handtekening van het controlepunt kon niet worden gecontroleerd"),
        "{unsigned}"
    );
    portal.add_checkpoint_keys(
        world
            .nodes
            .iter()
            .map(|node| (node.ura.clone(), node.signer.verifying_key())),
    );
    let (_, verified) = get(&browser, &proof_url).await;
    assert!(
        verified.contains("Geverifieerd tegen het ondertekende controlepunt van de node."),
        "{verified}"
    );
    portal.add_checkpoint_keys(world.nodes.iter().map(|node| {
        (
            node.ura.clone(),
            SigningKey::from_bytes(&[9; 32]).verifying_key(),
        )
    }));
    let (_, refused) = get(&browser, &proof_url).await;
    assert!(
        refused.contains("Het bewijs klopt NIET."),
        "another key: {refused}"
    );
    let (status, _) = get(
        &browser,
        &format!("{}/wie-keek/bewijs?source=9&id=0", world.portal),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_without_a_session_redirect_to_login() {
    let (world, _) = start(Vec::new()).await;
    let stranger = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    for path in [
        "/overzicht",
        "/download.json",
        "/afdrukken",
        "/wie-keek",
        "/wie-keek/bewijs?source=0&id=0",
        "/keuzes",
    ] {
        for cookie in ["", "zorgnet_portal_sessie=forged"] {
            let answer = stranger
                .get(format!("{}{path}", world.portal))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), StatusCode::SEE_OTHER, "{path}");
            assert_eq!(answer.headers()["location"], "/login", "{path}");
        }
    }
    let start_page = stranger.get(&world.portal).send().await.unwrap();
    let headers = start_page.headers();
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
    let missing = stranger
        .get(format!("{}/nergens", world.portal))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // A callback is taken only for the login this browser started, with its state.
    let forged = stranger
        .get(format!("{}/callback?code=abc&state=def", world.portal))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST, "no login started");
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let form = browser
        .get(format!("{}/login", world.portal))
        .send()
        .await
        .unwrap();
    let form = form.text().await.unwrap();
    let mut fields = hidden_inputs(&form);
    for (name, value) in &mut fields {
        if name == "state" {
            *value = "another-state".into();
        }
    }
    fields.push(("user".into(), "anna".into()));
    let issuer = world.idp.issuer().to_string();
    let landed = browser
        .post(format!("{issuer}/authorize"))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(landed.url().path(), "/callback");
    assert_eq!(landed.status(), StatusCode::BAD_REQUEST, "another state");
    let after = browser
        .get(format!("{}/wie-keek", world.portal))
        .send()
        .await
        .unwrap();
    assert!(
        after.url().path().ends_with("/authorize"),
        "no session was opened"
    );

    // Logging out takes the session's CSRF token.
    let (browser, page) = log_in(&world, &world.anna).await;
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let forged = browser
        .post(format!("{}/logout", world.portal))
        .form(&[("csrf", "not-the-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let (status, _) = get(&browser, &format!("{}/overzicht", world.portal)).await;
    assert_eq!(status, StatusCode::OK, "still logged in");
    let out = browser
        .post(format!("{}/logout", world.portal))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.url().path(), "/");
    let after = browser
        .get(format!("{}/overzicht", world.portal))
        .send()
        .await
        .unwrap();
    assert!(
        after.url().path().ends_with("/authorize"),
        "back to the login: {}",
        after.url()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn another_citizens_session_never_shows_the_first_citizens_data() {
    let (world, _) = start(Vec::new()).await;
    let (anna, anna_page) = log_in(&world, &world.anna).await;
    let (bob, bob_page) = log_in(&world, &world.bob).await;
    assert!(anna_page.contains("Anna de Vries") && !anna_page.contains("Bob Bakker"));
    assert!(bob_page.contains("Bob Bakker") && !bob_page.contains("Anna de Vries"));
    assert!(
        !bob_page.contains(&format!("<td>{}</td>", world.nodes[1].name)),
        "Bob has nothing at the second node"
    );
    let download = |browser: reqwest::Client| {
        let url = format!("{}/download.json", world.portal);
        async move {
            let text = browser.get(url).send().await.unwrap().text().await.unwrap();
            serde_json::from_str::<Value>(&text).unwrap()
        }
    };
    let bobs = download(bob).await;
    let annas = download(anna).await;
    let anna_patient = world.anna.loaded[0]
        .iter()
        .find(|id| id.starts_with("Patient/"))
        .unwrap();
    let bob_patient = world.bob.loaded[0]
        .iter()
        .find(|id| id.starts_with("Patient/"))
        .unwrap();
    for node in &world.nodes {
        assert!(!downloaded_at(&bobs, &node.base).contains(anna_patient));
        assert!(!downloaded_at(&annas, &node.base).contains(bob_patient));
    }
    let bob_at_first = downloaded_at(&bobs, &world.nodes[0].base);
    assert!(bob_at_first.contains(bob_patient));
    assert!(
        bob_at_first.is_disjoint(
            &world.anna.loaded[0]
                .difference(&world.bob.loaded[0])
                .cloned()
                .collect()
        ),
        "none of Anna's resources in Bob's download"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_english_version_works() {
    let (world, _) = start(Vec::new()).await;
    let (browser, dutch) = log_in(&world, &world.anna).await;
    assert!(dutch.contains("hreflang=\"en\""), "a switch to English");
    let (status, english) = get(&browser, &format!("{}/overzicht?lang=en", world.portal)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(english.contains("<html lang=\"en\">"));
    assert!(english.contains("My health overview"));
    assert!(english.contains("Laboratory results"));
    assert!(
        english.contains("hreflang=\"nl\""),
        "a switch back to Dutch"
    );
    let (_, kept) = get(&browser, &format!("{}/wie-keek", world.portal)).await;
    assert!(kept.contains("Who looked at my data"), "the choice is kept");
    assert!(kept.contains("<html lang=\"en\">"));
    let (_, back) = get(&browser, &format!("{}/wie-keek?lang=nl", world.portal)).await;
    assert!(back.contains("<html lang=\"nl\">"));
}
