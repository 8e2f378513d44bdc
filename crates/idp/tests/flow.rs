//! The development provider's authorization code flow with PKCE over HTTP, and its tokens
//! checked by the node's verifier (`zorgnet_trust::oidc`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use zorgnet_idp::{ClientRegistration, DEVELOPMENT_NOTICE, DemoUser, DevIdp, IdpConfig, KeySource};
use zorgnet_pseudonym::{Bsn, PersonalId};
use zorgnet_trust::oidc::{OidcConfig, OidcError, OidcVerifier};

const CLIENT: &str = "citizen-portal";
const BSN: &str = "999911120";

struct Running {
    issuer: String,
    redirect_uri: String,
    http: reqwest::Client,
}

async fn start() -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let redirect_uri = format!("{issuer}/callback");
    let idp = DevIdp::new(IdpConfig {
        resources: Vec::new(),
        issuer: issuer.clone(),
        clients: vec![ClientRegistration {
            client_id: CLIENT.into(),
            redirect_uris: vec![redirect_uri.clone()],
        }],
        users: vec![
            DemoUser::citizen("citizen-1", "Anna de Vries", BSN),
            DemoUser::professional("gp-1", "Dr. Jansen", "123456789"),
        ],
        key: KeySource::Ephemeral,
    })
    .unwrap();
    let router = idp.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Running {
        issuer,
        redirect_uri,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    }
}

fn pkce() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

impl Running {
    fn authorization(&self, challenge: &str, redirect_uri: &str) -> Vec<(&'static str, String)> {
        vec![
            ("response_type", "code".into()),
            ("client_id", CLIENT.into()),
            ("redirect_uri", redirect_uri.into()),
            ("scope", "openid patient/*.read user/*.write".into()),
            ("state", "xyz&state".into()),
            ("nonce", "n-1".into()),
            ("code_challenge", challenge.into()),
            ("code_challenge_method", "S256".into()),
        ]
    }

    /// Logs in as `user` and returns the code the provider redirects with.
    async fn code(&self, challenge: &str, user: &str) -> String {
        let parameters = self.authorization(challenge, &self.redirect_uri);
        let page = self
            .http
            .get(format!("{}/authorize", self.issuer))
            .query(&parameters)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.unwrap();
        assert!(html.contains("Development only"), "{html}");
        assert!(html.contains("<label for=\"user-0\">Anna de Vries (BSN 999911120)</label>"));
        assert!(html.contains("<legend>Log in as a demo professional</legend>"));
        let mut form = parameters.clone();
        form.push(("user", user.into()));
        let answer = self
            .http
            .post(format!("{}/authorize", self.issuer))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::SEE_OTHER);
        let location = answer.headers()["location"].to_str().unwrap().to_string();
        let (base, query) = location.split_once('?').unwrap();
        assert_eq!(base, self.redirect_uri);
        let query: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        assert!(query.contains(&("state".into(), "xyz&state".into())));
        query
            .into_iter()
            .find(|(name, _)| name == "code")
            .unwrap()
            .1
    }

    async fn exchange(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> (StatusCode, Value) {
        let answer = self
            .http
            .post(format!("{}/token", self.issuer))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("client_id", CLIENT),
                ("code_verifier", verifier),
            ])
            .send()
            .await
            .unwrap();
        (answer.status(), answer.json().await.unwrap())
    }

    fn verifier(&self) -> OidcVerifier {
        OidcVerifier::new(OidcConfig {
            issuer: self.issuer.clone(),
            audience: CLIENT.into(),
        })
        .unwrap()
    }
}

#[tokio::test]
async fn a_citizen_logs_in_and_the_tokens_verify() {
    let idp = start().await;
    let (verifier, challenge) = pkce();
    let code = idp.code(&challenge, "citizen-1").await;
    let (status, tokens) = idp.exchange(&code, &verifier, &idp.redirect_uri).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(
        tokens["scope"], "openid patient/*.read",
        "no user/ scope for a citizen"
    );
    let oidc = idp.verifier();
    for token in ["access_token", "id_token"] {
        let citizen = oidc
            .verify(tokens[token].as_str().unwrap())
            .await
            .unwrap()
            .into_citizen()
            .unwrap();
        assert_eq!(citizen.subject, "citizen-1");
        assert_eq!(citizen.person, PersonalId::Bsn(Bsn::parse(BSN).unwrap()));
    }
    let access = oidc
        .verify(tokens["access_token"].as_str().unwrap())
        .await
        .unwrap()
        .into_citizen()
        .unwrap();
    assert!(access.permits("Observation", zorgnet_trust::smart::Interaction::Read));
    let other_client = OidcVerifier::new(OidcConfig {
        issuer: idp.issuer.clone(),
        audience: "another-client".into(),
    })
    .unwrap();
    assert_eq!(
        other_client
            .verify(tokens["access_token"].as_str().unwrap())
            .await,
        Err(OidcError::WrongAudience)
    );
}

#[tokio::test]
async fn a_professional_logs_in_with_their_uzi_number() {
    let idp = start().await;
    let (verifier, challenge) = pkce();
    let code = idp.code(&challenge, "gp-1").await;
    let (status, tokens) = idp.exchange(&code, &verifier, &idp.redirect_uri).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let staff = idp
        .verifier()
        .verify(tokens["access_token"].as_str().unwrap())
        .await
        .unwrap()
        .into_staff()
        .unwrap();
    assert_eq!(staff.uzi.as_deref(), Some("123456789"));
    assert!(staff.permits("Observation", zorgnet_trust::smart::Interaction::Create));
    assert!(!staff.permits("Observation", zorgnet_trust::smart::Interaction::Read));
}

#[tokio::test]
async fn a_wrong_verifier_a_reused_code_and_another_redirect_uri_are_refused() {
    let idp = start().await;
    let (verifier, challenge) = pkce();
    let (other_verifier, _) = pkce();

    let code = idp.code(&challenge, "citizen-1").await;
    let (status, answer) = idp
        .exchange(&code, &other_verifier, &idp.redirect_uri)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"], "invalid_grant");
    // A failed exchange used the code up.
    let (status, _) = idp.exchange(&code, &verifier, &idp.redirect_uri).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let code = idp.code(&challenge, "citizen-1").await;
    let (status, answer) = idp
        .exchange(&code, &verifier, &format!("{}/elsewhere", idp.issuer))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"], "invalid_grant");

    let code = idp.code(&challenge, "citizen-1").await;
    let (status, _) = idp.exchange(&code, &verifier, &idp.redirect_uri).await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = idp.exchange(&code, &verifier, &idp.redirect_uri).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a code works once");
    assert_eq!(answer["error"], "invalid_grant");
}

#[tokio::test]
async fn an_unregistered_redirect_uri_or_missing_pkce_gets_a_page_not_a_redirect() {
    let idp = start().await;
    let (_, challenge) = pkce();
    let unregistered = idp.authorization(&challenge, "http://127.0.0.1:1/steal");
    let mut without_pkce = idp.authorization(&challenge, &idp.redirect_uri);
    without_pkce.retain(|(name, _)| *name != "code_challenge_method");
    let mut plain = idp.authorization(&challenge, &idp.redirect_uri);
    plain.retain(|(name, _)| *name != "code_challenge_method");
    plain.push(("code_challenge_method", "plain".into()));
    for parameters in [unregistered, without_pkce, plain] {
        for answer in [
            idp.http
                .get(format!("{}/authorize", idp.issuer))
                .query(&parameters)
                .send()
                .await
                .unwrap(),
            idp.http
                .post(format!("{}/authorize", idp.issuer))
                .form(&[parameters.clone(), vec![("user", "citizen-1".into())]].concat())
                .send()
                .await
                .unwrap(),
        ] {
            assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
            assert!(answer.headers().get("location").is_none());
            assert!(answer.text().await.unwrap().contains("Development only"));
        }
    }
}

#[tokio::test]
async fn discovery_and_keys_say_they_are_for_development() {
    let idp = start().await;
    let discovery: Value = idp
        .http
        .get(format!("{}/.well-known/openid-configuration", idp.issuer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], idp.issuer.as_str());
    assert_eq!(discovery["code_challenge_methods_supported"][0], "S256");
    assert_eq!(discovery["zorgnet_development_only"], DEVELOPMENT_NOTICE);
    let keys: Value = idp
        .http
        .get(discovery["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys["keys"][0]["kty"], "EC");
    assert_eq!(keys["keys"][0]["alg"], "ES256");
    assert!(keys["keys"][0].get("d").is_none(), "no private part");
}
