//! "Mijn keuzes" end to end: the portal's world (see `support`) with a real hub whose
//! operator admitted the portal as a citizen portal, care organisations that record and look
//! up at the same hub, and citizens who log in and manage their consent directives.

mod support;

use reqwest::StatusCode;
use std::time::Duration;
use support::*;
use zorgnet_fhir::categories::DataCategory;
use zorgnet_hub_client::{ConsentDirective, HubClient};
use zorgnet_pseudonym::{Bsn, PersonalId};

/// The portal's organisation at the hub.
const PORTAL_URA: &str = "00000099";
/// The first node's organisation: a source of the portal.
const GP: &str = "00000011";
/// The second node's organisation.
const HOSPITAL: &str = "00000022";

/// The hub and the organisations' clients of it.
struct Network {
    hub: TestHub,
    gp: HubClient,
    hospital: HubClient,
    operator: HubClient,
}

/// The portal's world with a consent register: the hub, the portal admitted there as a citizen
/// portal, and the two nodes' organisations registered.
async fn world_with_register() -> (World, Network) {
    let hub = TestHub::start().await;
    let portal_key = hub
        .organisation(PORTAL_URA, "Mijn Gezondheidsoverzicht")
        .await;
    hub.state.admit_citizen_portal(PORTAL_URA);
    let gp = hub.client(&hub.organisation(GP, "Huisartsenpraktijk De Linde").await);
    let hospital = hub.client(&hub.organisation(HOSPITAL, "Ziekenhuis Oost").await);
    let operator = hub.client(&hub.admin_key);
    let (world, _) = start_with(Vec::new(), Some(hub.client(&portal_key))).await;
    let network = Network {
        hub,
        gp,
        hospital,
        operator,
    };
    (world, network)
}

fn person(bsn: &str) -> PersonalId {
    PersonalId::from(Bsn::parse(bsn).unwrap())
}

impl Network {
    /// Every current directive of the citizen with `bsn`, as the operator reads them.
    async fn directives_of(&self, bsn: &str) -> Vec<ConsentDirective> {
        let token = self.gp.referral_index_token(&person(bsn)).await.unwrap();
        self.operator
            .consent_directives(&token)
            .await
            .unwrap()
            .current
    }

    /// The GP records `directive` on behalf of the citizen with `bsn`.
    async fn gp_records(&self, bsn: &str, directive: serde_json::Value) -> ConsentDirective {
        let mut body = directive;
        let token = self.gp.referral_index_token(&person(bsn)).await.unwrap();
        body["token"] = zorgnet_hub_client::token_value(&token);
        serde_json::from_value(self.gp.post("/consent/directives", &body).await.unwrap()).unwrap()
    }

    /// The categories of the GP's data about the citizen with `bsn` that the hospital's
    /// lookup at the referral index finds.
    async fn hospital_finds_at_gp(&self, bsn: &str) -> Vec<String> {
        let holders = self
            .hospital
            .lookup(
                &person(bsn),
                &["medication".into(), "lab-results".into()],
                false,
            )
            .await
            .unwrap();
        let mut found: Vec<String> = holders
            .into_iter()
            .filter(|h| h.ura == GP)
            .flat_map(|h| h.categories)
            .collect();
        found.sort();
        found
    }
}

/// The active choices' part of a choices page (before the revoked ones).
fn active_part(page: &str) -> &str {
    let end = page
        .find("<summary>Ingetrokken keuzes")
        .or_else(|| page.find("<summary>Revoked choices"))
        .unwrap_or(page.len());
    &page[..end]
}

/// The directive id of the revoke button in the row of the choice `text`.
fn revoke_id(page: &str, text: &str) -> String {
    let row = format!("<th scope=\"row\">{text}</th>");
    let at = active_part(page)
        .find(&row)
        .unwrap_or_else(|| panic!("no row {text:?}"));
    page[at..]
        .split("name=\"id\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string()
}

/// POSTs `form` to the portal's `path` in `browser`, following the redirect: the final status,
/// path and page.
async fn post(
    browser: &reqwest::Client,
    world: &World,
    path: &str,
    form: &[(&str, &str)],
) -> (StatusCode, String, String) {
    let answer = browser
        .post(format!("{}{path}", world.portal))
        .form(form)
        .send()
        .await
        .unwrap();
    let (status, landed) = (answer.status(), answer.url().path().to_string());
    (status, landed, answer.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_citizen_sees_records_and_revokes_their_choices() {
    let (world, network) = world_with_register().await;
    let anna = &world.anna.bsn;
    // The GP holds Anna's medication and lab results, the hospital treats her, and the GP
    // recorded an opt-out of lab results on her behalf.
    let token = network
        .gp
        .referral_index_token(&person(anna))
        .await
        .unwrap();
    network
        .gp
        .update_registrations(
            &[(token, vec!["medication".into(), "lab-results".into()])],
            true,
        )
        .await
        .unwrap();
    let token = network
        .hospital
        .referral_index_token(&person(anna))
        .await
        .unwrap();
    network
        .hospital
        .post(
            "/relations",
            &serde_json::json!({"token": zorgnet_hub_client::token_value(&token), "kind": "referral"}),
        )
        .await
        .unwrap();
    let by_gp = network
        .gp_records(
            anna,
            serde_json::json!({"kind": "opt-out", "category": "lab-results"}),
        )
        .await;
    assert_eq!(network.hospital_finds_at_gp(anna).await, ["medication"]);

    let (browser, overview) = log_in(&world, &world.anna).await;
    assert!(
        overview.contains("<a href=\"/keuzes\">Mijn keuzes</a>"),
        "in the navigation"
    );
    let (status, page) = get(&browser, &format!("{}/keuzes", world.portal)).await;
    assert_eq!(status, StatusCode::OK);
    let lab_row = "<th scope=\"row\">U deelt geen gegevens over laboratoriumuitslagen</th>";
    assert!(active_part(&page).contains(lab_row), "{page}");
    assert!(
        page.contains("<td>Uw zorgverlener Huisartsenpraktijk De Linde</td>"),
        "who recorded it, by the name of the source"
    );
    assert_eq!(
        revoke_id(&page, "U deelt geen gegevens over laboratoriumuitslagen"),
        by_gp.directive_id
    );
    // Forms: fieldsets with legends, labelled fields, every category the register knows,
    // the portal's sources as organisations, the session's CSRF token, no scripts.
    for category in DataCategory::ALL {
        assert!(
            page.contains(&format!("<option value=\"{}\">", category.code())),
            "{category:?}"
        );
    }
    for organisation in [GP, HOSPITAL] {
        assert!(page.contains(&format!("<option value=\"{organisation}\">")));
    }
    assert!(page.contains("<legend>Over één onderwerp niets delen</legend>"));
    assert!(page.contains("<label for=\"onderwerp-nee\">Onderwerp</label>"));
    assert!(page.contains("<select id=\"onderwerp-nee\" name=\"onderwerp\""));
    assert!(!page.contains("<script"));
    let csrf = csrf_of(&page);
    let english = get(&browser, &format!("{}/keuzes?lang=en", world.portal))
        .await
        .1;
    assert!(english.contains("You share no data about laboratory results"));
    assert!(english.contains("Your care provider Huisartsenpraktijk De Linde"));
    get(&browser, &format!("{}/keuzes?lang=nl", world.portal)).await;

    // Anna opts out of medication: confirmed once, with when it takes effect, and listed.
    let (status, landed, page) = post(
        &browser,
        &world,
        "/keuzes",
        &[
            ("csrf", &csrf),
            ("keuze", "onderwerp"),
            ("onderwerp", "medication"),
        ],
    )
    .await;
    assert_eq!(
        (status, landed.as_str()),
        (StatusCode::OK, "/keuzes"),
        "{page}"
    );
    assert!(
        page.contains("Uw keuze is vastgelegd: U deelt geen gegevens over medicatie"),
        "{page}"
    );
    assert!(page.contains("meteen bij de verwijsindex"));
    assert!(page.contains("binnen een minuut"));
    let medication_row = "<th scope=\"row\">U deelt geen gegevens over medicatie</th>";
    let row_at = active_part(&page).find(medication_row).expect("listed");
    assert!(
        page[row_at..]
            .split("</tr>")
            .next()
            .unwrap()
            .contains("<td>U zelf</td>")
    );
    let again = get(&browser, &format!("{}/keuzes", world.portal)).await.1;
    assert!(!again.contains("Uw keuze is vastgelegd"), "confirmed once");
    assert!(active_part(&again).contains(medication_row));
    let at_hub = network.directives_of(anna).await;
    let own: Vec<&ConsentDirective> = at_hub
        .iter()
        .filter(|d| d.category.as_deref() == Some("medication"))
        .collect();
    assert_eq!(own.len(), 1, "{at_hub:?}");
    assert_eq!(
        (
            own[0].kind.as_str(),
            own[0].recorded_by.as_str(),
            own[0].status.as_str()
        ),
        ("opt-out", "citizen", "active")
    );
    // At once at the referral index: the hospital no longer finds her medication at the GP.
    assert!(network.hospital_finds_at_gp(anna).await.is_empty());

    // Anna revokes the GP's opt-out of lab results.
    let (status, _, page) = post(
        &browser,
        &world,
        "/keuzes/intrekken",
        &[("csrf", &csrf), ("id", &by_gp.directive_id)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("Uw keuze is ingetrokken: U deelt geen gegevens over laboratoriumuitslagen")
    );
    assert!(!active_part(&page).contains(lab_row), "no longer in force");
    assert!(page.contains("<summary>Ingetrokken keuzes</summary>"));
    let revoked = network
        .directives_of(anna)
        .await
        .into_iter()
        .find(|d| d.directive_id == by_gp.directive_id)
        .unwrap();
    assert_eq!(
        (revoked.status.as_str(), revoked.recorded_by.as_str()),
        ("revoked", "citizen")
    );
    assert_eq!(network.hospital_finds_at_gp(anna).await, ["lab-results"]);
    let (status, _, page) = post(
        &browser,
        &world,
        "/keuzes/intrekken",
        &[("csrf", &csrf), ("id", &by_gp.directive_id)],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "already revoked: {page}");
    assert!(page.contains("Deze keuze was al ingetrokken."));

    // Every other form records what it says.
    for (form, kind, ura, decision, category) in [
        (
            vec![
                ("keuze", "organisatie-nee"),
                ("organisatie", HOSPITAL),
                ("onderwerp", ""),
            ],
            "consent",
            Some(HOSPITAL),
            "deny",
            None,
        ),
        (
            vec![
                ("keuze", "organisatie-ja"),
                ("organisatie", GP),
                ("onderwerp", "imaging"),
            ],
            "consent",
            Some(GP),
            "permit",
            Some("imaging"),
        ),
        (
            vec![("keuze", "noodgeval")],
            "emergency-opt-out",
            None,
            "deny",
            None,
        ),
        (vec![("keuze", "alles")], "opt-out", None, "deny", None),
    ] {
        let before = network.directives_of(anna).await.len();
        let mut fields = vec![("csrf", csrf.as_str())];
        fields.extend(form);
        let (status, _, page) = post(&browser, &world, "/keuzes", &fields).await;
        assert_eq!(status, StatusCode::OK, "{kind}: {page}");
        assert!(page.contains("Uw keuze is vastgelegd:"), "{kind}");
        let now = network.directives_of(anna).await;
        assert_eq!(now.len(), before + 1, "{kind}");
        let newest = now.iter().max_by_key(|d| d.recorded_at.clone()).unwrap();
        assert_eq!(
            (
                newest.kind.as_str(),
                newest.ura.as_deref(),
                newest.decision.as_str(),
                newest.category.as_deref(),
                newest.recorded_by.as_str()
            ),
            (kind, ura, decision, category, "citizen")
        );
    }
    let page = get(&browser, &format!("{}/keuzes", world.portal)).await.1;
    for sentence in [
        "Ziekenhuis Oost mag uw gegevens niet inzien en niet delen",
        "Huisartsenpraktijk De Linde mag uw gegevens over beeldvorming",
        "Geen noodtoegang:",
        "U deelt geen gegevens via het netwerk, ook niet in een noodsituatie",
    ] {
        assert!(active_part(&page).contains(sentence), "{sentence}: {page}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_need_the_sessions_csrf_token_and_stay_with_the_sessions_citizen() {
    let (world, network) = world_with_register().await;
    let (anna, bob) = (&world.anna.bsn, &world.bob.bsn);
    let by_gp = network
        .gp_records(anna, serde_json::json!({"kind": "emergency-opt-out"}))
        .await;
    let (browser, _) = log_in(&world, &world.anna).await;
    let page = get(&browser, &format!("{}/keuzes", world.portal)).await.1;
    let anna_csrf = csrf_of(&page);
    let opt_out = [("keuze", "alles")];
    for csrf in [None, Some("not-the-token"), Some("")] {
        let mut fields: Vec<(&str, &str)> = opt_out.to_vec();
        let mut revoke = vec![("id", by_gp.directive_id.as_str())];
        if let Some(csrf) = csrf {
            fields.push(("csrf", csrf));
            revoke.push(("csrf", csrf));
        }
        let (status, _, page) = post(&browser, &world, "/keuzes", &fields).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{csrf:?}");
        assert!(page.contains("Het formulier is verlopen."));
        let (status, _, _) = post(&browser, &world, "/keuzes/intrekken", &revoke).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{csrf:?}");
    }
    let at_hub = network.directives_of(anna).await;
    assert_eq!(at_hub, vec![by_gp.clone()], "nothing changed");

    // A choice naming an organisation that is not one of the portal's sources is refused.
    let (status, _, _) = post(
        &browser,
        &world,
        "/keuzes",
        &[
            ("csrf", &anna_csrf),
            ("keuze", "organisatie-ja"),
            ("organisatie", "00000055"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(network.directives_of(anna).await.len(), 1);

    // Bob sees none of Anna's choices, cannot revoke them, and what he records is his, even
    // with Anna's BSN in the form; Anna's CSRF token is not his.
    let (bob_browser, _) = log_in(&world, &world.bob).await;
    let page = get(&bob_browser, &format!("{}/keuzes", world.portal))
        .await
        .1;
    assert!(page.contains("Er zijn geen keuzes vastgelegd."), "{page}");
    assert!(!page.contains("Geen noodtoegang:"));
    assert!(!page.contains(&by_gp.directive_id));
    let bob_csrf = csrf_of(&page);
    assert_ne!(bob_csrf, anna_csrf);
    let (status, _, _) = post(
        &bob_browser,
        &world,
        "/keuzes",
        &[("csrf", &anna_csrf), ("keuze", "alles")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, page) = post(
        &bob_browser,
        &world,
        "/keuzes/intrekken",
        &[("csrf", &bob_csrf), ("id", &by_gp.directive_id)],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("Deze keuze bestaat niet (meer)."));
    let (status, _, page) = post(
        &bob_browser,
        &world,
        "/keuzes",
        &[("csrf", &bob_csrf), ("keuze", "alles"), ("bsn", anna)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Uw keuze is vastgelegd: U deelt geen gegevens via het netwerk"));
    assert_eq!(
        network.directives_of(anna).await,
        vec![by_gp],
        "Anna's unchanged"
    );
    let bobs = network.directives_of(bob).await;
    assert_eq!(bobs.len(), 1);
    assert_eq!(
        (bobs[0].kind.as_str(), bobs[0].category.as_deref()),
        ("opt-out", None)
    );
    let page = get(&browser, &format!("{}/keuzes", world.portal)).await.1;
    assert!(
        !page.contains("U deelt geen gegevens via het netwerk"),
        "Bob's is not Anna's"
    );
    drop(network.hub);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_consent_register_the_choices_page_says_so() {
    let (world, _) = start(Vec::new()).await;
    let (browser, _) = log_in(&world, &world.anna).await;
    for path in ["/overzicht", "/wie-keek", "/afdrukken", "/keuzes"] {
        let (status, page) = get(&browser, &format!("{}{path}", world.portal)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            page.contains("<a href=\"/keuzes\">Mijn keuzes</a>"),
            "{path}"
        );
    }
    let page = get(&browser, &format!("{}/keuzes", world.portal)).await.1;
    assert!(page.contains("kunnen hier niet worden beheerd"), "{page}");
    assert!(!page.contains("action=\"/keuzes\""), "no forms");
    let (status, _, page) = post(
        &browser,
        &world,
        "/keuzes",
        &[("csrf", &csrf_of(&page)), ("keuze", "alles")],
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.contains("kunnen hier niet worden beheerd"));
    assert!(page.contains("<a href=\"/keuzes\">Terug naar mijn keuzes</a>"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_register_is_a_notice_and_nothing_changes() {
    let (closed, closed_url) = listener().await;
    drop(closed);
    let unreachable = HubClient::new(&closed_url, "zn_portal-key").unwrap();
    let (world, _) = start_with(Vec::new(), Some(unreachable)).await;
    let (browser, _) = log_in(&world, &world.anna).await;
    let (status, page) = get(&browser, &format!("{}/keuzes", world.portal)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        page.contains("Uw keuzes kunnen nu niet worden opgehaald"),
        "{page}"
    );
    let (status, _, page) = post(
        &browser,
        &world,
        "/keuzes",
        &[("csrf", &csrf_of(&page)), ("keuze", "alles")],
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.contains("Het toestemmingsregister is nu niet bereikbaar. Er is niets veranderd"));
}

#[test]
fn the_promised_delay_covers_the_nodes_reuse_of_decisions() {
    assert!(
        zorgnet_node::access::DEFAULT_DECISION_TTL <= zorgnet_portal::CHOICE_EFFECT_PROMISED,
        "the choices page says a change applies everywhere within a minute"
    );
    assert_eq!(
        zorgnet_portal::CHOICE_EFFECT_PROMISED,
        Duration::from_secs(60)
    );
}
