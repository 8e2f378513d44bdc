//! `zorgnet demo` as a newcomer meets it: a whole network on loopback over HTTPS with a demo
//! CA — a hub, five organisations' nodes, a development identity provider and the citizen
//! portal — started by the real binary on free ports.
//!
//! Checked: every part answers over TLS and nothing without it; each node holds its kind of
//! care's share of the data and its outbox delivers every registration to the hub's referral
//! index; a citizen logs in at the portal through the identity provider and sees data of the
//! organisations the start names, and a citizen of Saba without a BSN sees the island clinic's
//! data by the zorgverificatienummer the demo names, by which a professional finds them too;
//! a professional's token is staff at their own node only; a
//! second start reuses everything instead of loading again; Ctrl-C stops the demo cleanly.

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::BINARY;
use support::demo::{Demo, outbox_empty};

/// Patients of the test's demo: enough for citizens with data at three organisations.
const PATIENTS: usize = 120;
/// Longest the outboxes may take to deliver every registration.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(120);
/// Longest the nodes may take to know each other's addresses.
const ADDRESS_BOOK_DEADLINE: Duration = Duration::from_secs(30);
/// Longest a citizen's choice may take to reach every node (the demo's nodes reuse a
/// consent decision for 5 s).
const CHOICE_DEADLINE: Duration = Duration::from_secs(30);
/// Longest the demo may take to stop after Ctrl-C.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// Sends Ctrl-C to the demo and answers whether it ended by itself, successfully, in time.
fn interrupt(demo: &mut Demo) -> bool {
    let pid = demo.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + STOP_DEADLINE;
    while Instant::now() < deadline {
        if let Some(status) = demo.child.try_wait().unwrap() {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The nodes the demo named: (name, FHIR base URL).
fn nodes(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter_map(|line| line.strip_prefix("node "))
        .map(|rest| {
            let (name, url) = rest.rsplit_once(": ").unwrap();
            let name = name.split(" (URA").next().unwrap();
            (name.to_string(), url.to_string())
        })
        .collect()
}

/// An HTTPS client trusting the demo CA alone, with cookies (a browser).
fn browser(data: &Path) -> reqwest::Client {
    let pem = std::fs::read(data.join("demo-ca/ca.pem")).unwrap();
    let anchor = zorgnet_trust::tls::read_certificates(&pem)
        .unwrap()
        .remove(0);
    reqwest::Client::builder()
        .tls_backend_preconfigured(zorgnet_trust::tls::anchor_only_client_config(&anchor).unwrap())
        .cookie_store(true)
        .build()
        .unwrap()
}

fn token(data: &Path, user: &str) -> String {
    let output = Command::new(BINARY)
        .args(["demo", "--token", user, "--data"])
        .arg(data)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// The hidden inputs of an HTML form: (name, value).
fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    html.split("<input type=\"hidden\" ")
        .skip(1)
        .map(|rest| {
            let attribute = |name: &str| {
                rest.split(&format!("{name}=\""))
                    .nth(1)
                    .and_then(|value| value.split('"').next())
                    .unwrap_or_default()
                    .replace("&amp;", "&")
                    .replace("&#x2F;", "/")
                    .replace("&#x3D;", "=")
                    .replace("&#43;", "+")
            };
            (attribute("name"), attribute("value"))
        })
        .collect()
}

/// The medication overview section of the viewer's patient page.
fn medication_overview(page: &str) -> &str {
    let start = page
        .find("id=\"medicatieoverzicht\"")
        .unwrap_or_else(|| panic!("no medication overview in {page}"));
    let rest = &page[start..];
    &rest[..rest.find("</section>").unwrap()]
}

/// The CSRF token of a page's forms.
fn csrf(page: &str) -> String {
    hidden_inputs(page)
        .into_iter()
        .find(|(name, _)| name == "csrf")
        .map(|(_, value)| value)
        .unwrap_or_else(|| panic!("no csrf token in {page}"))
}

/// Logs `browser` in at `login` as `user` through the identity provider's form, and
/// answers the page it lands on.
async fn log_in_at(browser: &reqwest::Client, login: &str, user: &str) -> String {
    let form = browser.get(login).send().await.unwrap();
    assert_eq!(form.status(), 200);
    let authorize = form.url().clone();
    assert!(authorize.path().ends_with("/authorize"), "{authorize}");
    let mut fields = hidden_inputs(&form.text().await.unwrap());
    fields.push(("user".into(), user.into()));
    let landed = browser
        .post(authorize.as_str().split('?').next().unwrap())
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(landed.status(), 200, "{user} logs in at {login}");
    landed.text().await.unwrap()
}

/// Logs `browser` in at the portal as `user` through the identity provider's form, and
/// answers the page it lands on.
async fn log_in(browser: &reqwest::Client, portal: &str, user: &str) -> String {
    let form = browser.get(format!("{portal}login")).send().await.unwrap();
    assert_eq!(form.status(), 200);
    let authorize = form.url().clone();
    assert!(authorize.path().ends_with("/authorize"), "{authorize}");
    let mut fields = hidden_inputs(&form.text().await.unwrap());
    assert!(fields.iter().any(|(name, _)| name == "code_challenge"));
    fields.push(("user".into(), user.into()));
    let landed = browser
        .post(authorize.as_str().split('?').next().unwrap())
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(landed.status(), 200);
    assert_eq!(landed.url().path(), "/overzicht");
    landed.text().await.unwrap()
}

/// A native app's SMART standalone launch as `user`: discovery at the portal's FHIR endpoint
/// `aud`, the authorization request with PKCE and `registered`'s redirect URI on a port of
/// its own, the choice at the provider, the code exchanged; answers its `Patient` search.
async fn app_reads(data: &Path, client_id: &str, registered: &str, aud: &str, user: &str) -> Value {
    use base64::Engine;
    use sha2::Digest;
    let pem = std::fs::read(data.join("demo-ca/ca.pem")).unwrap();
    let anchor = zorgnet_trust::tls::read_certificates(&pem)
        .unwrap()
        .remove(0);
    let app = reqwest::Client::builder()
        .tls_backend_preconfigured(zorgnet_trust::tls::anchor_only_client_config(&anchor).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let smart: Value = app
        .get(format!("{aud}/.well-known/smart-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let own_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let redirect_uri = registered.replacen(
        "127.0.0.1/",
        &format!("127.0.0.1:{}/", own_port.local_addr().unwrap().port()),
        1,
    );
    let base64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let verifier = base64url.encode(*b"the demo app's PKCE code verifier");
    let challenge = base64url.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let authorize = smart["authorization_endpoint"].as_str().unwrap();
    let page = app
        .get(authorize)
        .query(&[
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", &redirect_uri),
            ("scope", "openid patient/*.read"),
            ("state", "s"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("aud", aud),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let mut fields = hidden_inputs(&page.text().await.unwrap());
    fields.push(("user".into(), user.into()));
    let chosen = app.post(authorize).form(&fields).send().await.unwrap();
    assert_eq!(chosen.status(), 303);
    let location = reqwest::Url::parse(chosen.headers()["location"].to_str().unwrap()).unwrap();
    assert!(location.as_str().starts_with(&redirect_uri), "{location}");
    let code = location
        .query_pairs()
        .find(|(name, _)| name == "code")
        .unwrap()
        .1
        .into_owned();
    let tokens: Value = app
        .post(smart["token_endpoint"].as_str().unwrap())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect_uri),
            ("client_id", client_id),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let records = app
        .get(format!("{aud}/Patient"))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(records.status(), 200);
    records.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_is_a_network_a_citizen_and_professionals_use() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let mut demo = Demo::start(&data, PATIENTS);
    let lines = demo.lines.clone();
    let output = lines.join("\n");
    assert!(output.contains("first start"), "{output}");
    let portal = demo.after("portal: ").to_string();
    assert!(
        portal.starts_with("https://127.0.0.1:") && portal.ends_with('/'),
        "{output}"
    );
    let hub = demo.after("hub: ").to_string();
    let nodes = nodes(&lines);
    assert_eq!(nodes.len(), 5, "{output}");
    let client = browser(&data);

    // Every part answers over TLS with the demo CA, and nothing answers without it.
    for url in [format!("{portal}health"), format!("{hub}/health")]
        .into_iter()
        .chain(nodes.iter().map(|(_, base)| format!("{base}/metadata")))
    {
        let answer = client.get(&url).send().await.unwrap();
        assert!(answer.status().is_success(), "{url}: {}", answer.status());
        let plain = reqwest::Client::new()
            .get(url.replace("https://", "http://"))
            .send()
            .await;
        assert!(
            plain.map_or(true, |r| !r.status().is_success()),
            "{url} answers without TLS"
        );
    }

    // Each organisation holds its share, and the referral index receives all of it.
    let network: Value =
        serde_json::from_slice(&std::fs::read(data.join("network.json")).unwrap()).unwrap();
    let mut node_dirs = Vec::new();
    for node in network["nodes"].as_array().unwrap() {
        let (name, base) = (
            node["name"].as_str().unwrap(),
            node["fhir_base"].as_str().unwrap(),
        );
        assert!(nodes.iter().any(|(n, b)| n == name && b == base), "{node}");
        let key_file = Path::new(node["admin_key_file"].as_str().unwrap());
        let key = std::fs::read_to_string(key_file).unwrap();
        let answer = client
            .get(format!("{base}/Patient?_summary=count"))
            .bearer_auth(key.trim())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{name}");
        let counted = answer.json::<Value>().await.unwrap()["total"]
            .as_u64()
            .unwrap();
        if !name.starts_with("Verpleeghuis") && !name.starts_with("Saba") {
            assert!(counted > 0, "{name} holds patients");
        }
        node_dirs.push(key_file.parent().unwrap().to_path_buf());
    }
    assert_eq!(node_dirs.len(), 5);
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    for node in &node_dirs {
        while !outbox_empty(node) {
            assert!(
                Instant::now() < deadline,
                "{}: registrations still pending",
                node.display()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    // A citizen logs in at the portal and sees data of the organisations the start names.
    let citizen = lines
        .iter()
        .find(|line| line.trim_start().starts_with("burger-1 "))
        .unwrap_or_else(|| panic!("no demo citizen in {output}"));
    let sources: Vec<&str> = citizen
        .split("data at ")
        .nth(1)
        .unwrap()
        .split(", ")
        .collect();
    assert!(sources.len() >= 3, "{citizen}");
    let page = log_in(&client, &portal, "burger-1").await;
    for source in &sources {
        assert!(
            page.contains(&format!("<td>{source}</td>")),
            "the overview shows data of {source}"
        );
    }

    // The citizen's app logs them in by itself, as the start line says (SMART standalone
    // launch, PKCE, a loopback redirect on its own port), and reads their Patient at every
    // organisation the start names through the portal's FHIR endpoint.
    let app = lines
        .iter()
        .find(|line| line.starts_with("apps ("))
        .unwrap_or_else(|| panic!("no app line in {output}"));
    let field = |name: &str| {
        app.split(&format!("{name} "))
            .nth(1)
            .unwrap()
            .split([',', ' '])
            .next()
            .unwrap()
            .to_string()
    };
    let (client_id, registered, aud) = (field("client_id"), field("redirect"), field("aud"));
    assert_eq!(aud, format!("{portal}fhir"));
    let records = app_reads(&data, &client_id, &registered, &aud, "burger-1").await;
    let bases: std::collections::BTreeSet<&str> = records["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| {
            e["fullUrl"]
                .as_str()
                .unwrap()
                .split("/Patient/")
                .next()
                .unwrap()
        })
        .collect();
    for source in &sources {
        let base = &nodes.iter().find(|(name, _)| name == source).unwrap().1;
        assert!(bases.contains(base.as_str()), "{source} in {records}");
    }

    // A hospital's internist finds the citizen, registers the treatment relation and sees
    // the data of the other organisations; an emergency doctor breaks the glass, and the
    // citizen sees it in who looked at their data.
    let bsn = citizen
        .split("BSN ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    let viewer = demo.after("viewer (professionals): ").to_string();
    let hospital_ura = &network["nodes"][1]["ura"].as_str().unwrap().to_string();
    let internist = browser(&data);
    let search = log_in_at(
        &internist,
        &format!("{viewer}/{hospital_ura}/login"),
        "internist",
    )
    .await;
    let patient = internist
        .post(format!("{viewer}/{hospital_ura}/zoeken"))
        .form(&[("csrf", csrf(&search).as_str()), ("bsn", bsn)])
        .send()
        .await
        .unwrap();
    assert_eq!(patient.status(), 200);
    let page = patient.text().await.unwrap();
    let mut page = internist
        .post(format!("{viewer}/{hospital_ura}/relatie"))
        .form(&[("csrf", csrf(&page).as_str()), ("kind", "referral")])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Uw organisatie heeft een behandelrelatie"),
        "{page}"
    );
    // The nodes learn each other's addresses from the hub's address book within seconds of
    // the start.
    let deadline = Instant::now() + ADDRESS_BOOK_DEADLINE;
    while page.contains("Niet alle bronnen gaven antwoord") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        page = internist
            .get(format!("{viewer}/{hospital_ura}/patient"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    }
    for source in sources.iter().filter(|s| !s.starts_with("Ziekenhuis")) {
        assert!(
            page.contains(&format!("<li>{source}</li>")),
            "the internist sees data of {source}: {page}"
        );
    }
    // A citizen of Saba without a BSN: the demo names them by the zorgverificatienummer the
    // hub derived; they see the island clinic's data in the portal, and the internist finds
    // them by that number.
    let island = lines
        .iter()
        .find(|line| line.trim_start().starts_with("burger-saba "))
        .unwrap_or_else(|| panic!("no demo citizen without a BSN in {output}"));
    assert!(island.contains("no BSN"), "{island}");
    let zvn = island
        .split("zorgverificatienummer ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    let island_clinic = island.split("data at ").nth(1).unwrap();
    let island_page = log_in(&browser(&data), &portal, "burger-saba").await;
    assert!(
        island_page.contains(&format!("<td>{island_clinic}</td>")),
        "the citizen without a BSN sees the island clinic's data: {island_page}"
    );
    let island_internist = browser(&data);
    let search = log_in_at(
        &island_internist,
        &format!("{viewer}/{hospital_ura}/login"),
        "internist",
    )
    .await;
    let found = island_internist
        .post(format!("{viewer}/{hospital_ura}/zoeken"))
        .form(&[("csrf", csrf(&search).as_str()), ("bsn", zvn)])
        .send()
        .await
        .unwrap();
    assert_eq!(found.status(), 200);
    let found = found.text().await.unwrap();
    let mut island_view = island_internist
        .post(format!("{viewer}/{hospital_ura}/relatie"))
        .form(&[("csrf", csrf(&found).as_str()), ("kind", "referral")])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The hospital's node learns the island clinic's address from the hub within seconds.
    let deadline = Instant::now() + ADDRESS_BOOK_DEADLINE;
    while island_view.contains("Niet alle bronnen gaven antwoord") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        island_view = island_internist
            .get(format!("{viewer}/{hospital_ura}/patient"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    }
    assert!(
        island_view.contains(zvn) && island_view.contains(&format!("<li>{island_clinic}</li>")),
        "the internist sees the island clinic's data of the citizen without a BSN: {island_view}"
    );

    let pharmacy = sources
        .iter()
        .find(|s| s.starts_with("Apotheek"))
        .expect("the citizen's data lies at the pharmacy");
    assert!(
        medication_overview(&page).contains(pharmacy),
        "the pharmacy's dispenses are in the medication overview"
    );

    // The citizen opts out of sharing medication at the portal: the internist's view loses
    // the other organisations' medication (within the nodes' reuse of decisions).
    let choices = client
        .get(format!("{portal}keuzes"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let confirmed = client
        .post(format!("{portal}keuzes"))
        .form(&[
            ("csrf", csrf(&choices).as_str()),
            ("keuze", "onderwerp"),
            ("onderwerp", "medication"),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(confirmed.contains("Uw keuze is vastgelegd"), "{confirmed}");
    let deadline = Instant::now() + CHOICE_DEADLINE;
    loop {
        let page = internist
            .get(format!("{viewer}/{hospital_ura}/patient"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if !medication_overview(&page).contains(pharmacy) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the opt-out of medication took effect: {page}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let emergency = browser(&data);
    let search = log_in_at(
        &emergency,
        &format!("{viewer}/{hospital_ura}/login"),
        "seh-arts",
    )
    .await;
    emergency
        .post(format!("{viewer}/{hospital_ura}/zoeken"))
        .form(&[("csrf", csrf(&search).as_str()), ("bsn", bsn)])
        .send()
        .await
        .unwrap();
    let form = emergency
        .get(format!("{viewer}/{hospital_ura}/nood"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let answer = emergency
        .post(format!("{viewer}/{hospital_ura}/nood"))
        .form(&[
            ("csrf", csrf(&form).as_str()),
            ("reason", "bewusteloos op de SEH"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.text().await.unwrap().contains("emergency-access"));
    let log = client
        .get(format!("{portal}wie-keek"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        log.contains("900000203"),
        "the emergency doctor's access is listed: {log}"
    );
    assert!(
        log.contains("NOODTOEGANG: bewusteloos op de SEH"),
        "and marked as emergency access, with its reason: {log}"
    );

    // A professional's token makes them staff at their own node and nobody elsewhere.
    let gp_doctor = token(&data, "huisarts");
    let (gp_name, gp_base) = &nodes[0];
    assert!(gp_name.starts_with("Huisartsenpraktijk"), "{gp_name}");
    let own = client
        .get(format!("{gp_base}/Patient?_summary=count"))
        .bearer_auth(&gp_doctor)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    for (name, base) in &nodes[1..] {
        let elsewhere = client
            .get(format!("{base}/Patient?_summary=count"))
            .bearer_auth(&gp_doctor)
            .send()
            .await
            .unwrap();
        assert_eq!(
            elsewhere.status(),
            401,
            "the GP's token is nobody's at {name}"
        );
    }

    // Ctrl-C stops everything; a second start reuses the data.
    assert!(interrupt(&mut demo), "the demo stops cleanly on Ctrl-C");
    let again = Demo::start(&data, PATIENTS);
    let output = again.lines.join("\n");
    assert!(!output.contains("first start"), "{output}");
    assert!(output.contains("demo logins:"), "{output}");
    assert!(
        output.contains("burger-1 "),
        "the logins are listed again: {output}"
    );
}
