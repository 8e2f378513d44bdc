//! Mutual TLS end to end: a tiny axum router served by `zorgnet_trust::tls::serve` on port 0,
//! called with reqwest over the network's client configuration. A valid organisation gets
//! its answer and the handler sees its URA and certificate thumbprint; no certificate, a
//! certificate of another CA, an expired one and a revoked one (after the CRL is replaced,
//! on a new connection, even one that tries to resume a session) are refused; an old or
//! foreign CRL cannot replace the current one; a client does not talk to a server whose
//! certificate is not the network's.

use axum::extract::Extension;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use tokio::sync::oneshot;
use zorgnet_trust::certificate::{HostName, thumbprint};
use zorgnet_trust::pki::{IssuedCertificate, NetworkCa, Validity};
use zorgnet_trust::tls::{
    self, ClientAuth, ClientVerifier, Credentials, PeerIdentity, client_config, server_config,
};

const SERVER_URA: &str = "11111111";
const CLIENT_URA: &str = "22222222";

fn hosts() -> Vec<HostName> {
    vec!["localhost".parse().unwrap(), "127.0.0.1".parse().unwrap()]
}

fn credentials(issued: &IssuedCertificate, ca: &NetworkCa) -> Credentials {
    Credentials::from_pem(
        issued.certificate_pem.as_bytes(),
        issued.key_pem.as_bytes(),
        ca.certificate_pem().as_bytes(),
    )
    .unwrap()
}

/// Answers who called: `<ura or "anonymous">|<name>|<thumbprint>|<peer address>`.
fn router() -> axum::Router {
    axum::Router::new().route(
        "/whoami",
        get(
            |identity: Option<Extension<PeerIdentity>>, Extension(peer): Extension<SocketAddr>| async move {
                match identity {
                    Some(Extension(identity)) => format!(
                        "{}|{}|{}|{peer}",
                        identity.ura.as_deref().unwrap_or("service"),
                        identity.name,
                        identity.thumbprint
                    ),
                    None => format!("anonymous|||{peer}"),
                }
            },
        ),
    )
}

/// A network: its CA, a server organisation serving the router, and its verifier.
struct Network {
    _dir: tempfile::TempDir,
    ca: NetworkCa,
    verifier: ClientVerifier,
    base: String,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Network {
    async fn start(mode: ClientAuth) -> Network {
        let dir = tempfile::tempdir().unwrap();
        let ca = NetworkCa::init(&dir.path().join("ca"), "Test network CA").unwrap();
        let server = ca
            .issue_organisation(SERVER_URA, "Ziekenhuis Oost", &hosts(), Validity::default())
            .unwrap();
        let crl = ca.crl().unwrap();
        let verifier = ClientVerifier::new(ca.certificate_der(), crl.der, mode).unwrap();
        let config = server_config(&credentials(&server, &ca), &verifier).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(tls::serve(
            listener,
            config,
            Some(verifier.clone()),
            router(),
            async {
                let _ = stopped.await;
            },
        ));
        Network {
            _dir: dir,
            ca,
            verifier,
            base: format!("https://localhost:{}", address.port()),
            stop: Some(stop),
            served: Some(served),
        }
    }

    fn organisation(&self, ura: &str, validity: Validity) -> IssuedCertificate {
        self.ca
            .issue_organisation(ura, "Huisartsenpraktijk West", &[], validity)
            .unwrap()
    }

    /// Asks `/whoami` on a new connection with `config`.
    async fn whoami(&self, config: rustls::ClientConfig) -> Result<String, reqwest::Error> {
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .build()
            .unwrap();
        let response = client.get(format!("{}/whoami", self.base)).send().await?;
        assert_eq!(response.status(), 200);
        response.text().await
    }

    /// Publishes a new CRL of the CA to the server's verifier.
    fn refresh_crl(&self) {
        self.verifier
            .replace_crl(self.ca.crl().unwrap().der)
            .unwrap();
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        let served = self.served.take().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), served)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

/// A client trusting the network's CA but presenting no certificate.
fn anonymous_config(ca: &NetworkCa) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.certificate_der().clone()).unwrap();
    rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth()
}

#[tokio::test]
async fn a_valid_organisation_is_served_and_the_handler_sees_its_ura() {
    let network = Network::start(ClientAuth::Required).await;
    let client = network.organisation(CLIENT_URA, Validity::default());
    let answer = network
        .whoami(client_config(&credentials(&client, &network.ca)).unwrap())
        .await
        .unwrap();
    let fields: Vec<&str> = answer.split('|').collect();
    assert_eq!(fields[0], CLIENT_URA);
    assert_eq!(fields[1], "Huisartsenpraktijk West");
    assert_eq!(fields[2], thumbprint(&client.certificate_der));
    assert!(fields[3].starts_with("127.0.0.1:"), "{answer}");
    // The IP address in the server's certificate works as well as the name.
    let by_ip = network.base.replace("localhost", "127.0.0.1");
    let response = reqwest::Client::builder()
        .tls_backend_preconfigured(client_config(&credentials(&client, &network.ca)).unwrap())
        .build()
        .unwrap()
        .get(format!("{by_ip}/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    network.stop().await;
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let network = Network::start(ClientAuth::Required).await;
    let refused = network.whoami(anonymous_config(&network.ca)).await;
    assert!(refused.is_err(), "{refused:?}");
    network.stop().await;
}

#[tokio::test]
async fn a_certificate_of_another_ca_is_refused_even_with_a_known_ura() {
    let network = Network::start(ClientAuth::Required).await;
    let dir = tempfile::tempdir().unwrap();
    // Another CA with the very same name, issuing the server's own URA.
    let impostor_ca = NetworkCa::init(dir.path(), "Test network CA").unwrap();
    let forged = impostor_ca
        .issue_organisation(SERVER_URA, "Ziekenhuis Oost", &[], Validity::default())
        .unwrap();
    let config = client_config(
        &Credentials::from_pem(
            forged.certificate_pem.as_bytes(),
            forged.key_pem.as_bytes(),
            network.ca.certificate_pem().as_bytes(),
        )
        .unwrap(),
    )
    .unwrap();
    let refused = network.whoami(config).await;
    assert!(refused.is_err(), "{refused:?}");
    network.stop().await;
}

#[tokio::test]
async fn an_expired_or_not_yet_valid_certificate_is_refused() {
    let network = Network::start(ClientAuth::Required).await;
    let now = OffsetDateTime::now_utc();
    for validity in [
        Validity {
            not_before: now - Duration::days(30),
            not_after: now - Duration::days(1),
        },
        Validity {
            not_before: now + Duration::days(1),
            not_after: now + Duration::days(30),
        },
    ] {
        let client = network.organisation(CLIENT_URA, validity);
        let refused = network
            .whoami(client_config(&credentials(&client, &network.ca)).unwrap())
            .await;
        assert!(refused.is_err(), "{validity:?}: {refused:?}");
    }
    network.stop().await;
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_on_the_next_connection_after_the_crl_is_replaced() {
    let network = Network::start(ClientAuth::Required).await;
    let revoked = network.organisation(CLIENT_URA, Validity::default());
    let other = network.organisation("33333333", Validity::default());
    // One configuration (one session cache) throughout: a resumed session must not skip
    // the revocation check.
    let config = client_config(&credentials(&revoked, &network.ca)).unwrap();
    network.whoami(config.clone()).await.unwrap();
    network.whoami(config.clone()).await.unwrap();

    assert!(network.ca.revoke(&revoked.serial).unwrap());
    // Revoked in the ledger, but the server has the old CRL yet.
    network.whoami(config.clone()).await.unwrap();
    network.refresh_crl();
    let refused = network.whoami(config.clone()).await;
    assert!(refused.is_err(), "{refused:?}");
    let fresh = client_config(&credentials(&revoked, &network.ca)).unwrap();
    assert!(network.whoami(fresh).await.is_err());
    // Others are still served.
    let answer = network
        .whoami(client_config(&credentials(&other, &network.ca)).unwrap())
        .await
        .unwrap();
    assert!(answer.starts_with("33333333|"), "{answer}");
    network.stop().await;
}

/// A revocation also reaches connections that were verified before it: the next request
/// over a kept-alive connection gets a 401, over HTTP/1.1 and HTTP/2 alike.
#[tokio::test]
async fn a_kept_alive_connection_of_a_revoked_certificate_is_refused_at_its_next_request() {
    let network = Network::start(ClientAuth::Required).await;
    let revoked = network.organisation(CLIENT_URA, Validity::default());
    let mut clients = Vec::new();
    for http1 in [true, false] {
        let mut config = client_config(&credentials(&revoked, &network.ca)).unwrap();
        if http1 {
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .pool_max_idle_per_host(1)
            .build()
            .unwrap();
        let served = client
            .get(format!("{}/whoami", network.base))
            .send()
            .await
            .unwrap();
        assert_eq!(served.status(), 200);
        assert_eq!(
            served.version(),
            if http1 {
                reqwest::Version::HTTP_11
            } else {
                reqwest::Version::HTTP_2
            }
        );
        served.text().await.unwrap();
        clients.push((http1, client));
    }
    network.ca.revoke(&revoked.serial).unwrap();
    network.refresh_crl();
    for (http1, client) in clients {
        let refused = client
            .get(format!("{}/whoami", network.base))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!("the kept-alive connection was not used (http1: {http1}): {e}")
            });
        assert_eq!(refused.status(), 401, "http1: {http1}");
        let outcome: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(outcome["resourceType"], "OperationOutcome");
    }
    network.stop().await;
}

#[tokio::test]
async fn an_older_or_foreign_crl_cannot_replace_the_current_one() {
    let network = Network::start(ClientAuth::Required).await;
    let client = network.organisation(CLIENT_URA, Validity::default());
    let before_revocation = network.ca.crl().unwrap();
    network.ca.revoke(&client.serial).unwrap();
    network.refresh_crl();

    // Rolling back to the list from before the revocation is refused.
    let rollback = network.verifier.replace_crl(before_revocation.der);
    assert!(rollback.is_err(), "{rollback:?}");
    // So is an empty list from another CA of the same name, with a higher number.
    let dir = tempfile::tempdir().unwrap();
    let impostor = NetworkCa::init(dir.path(), "Test network CA").unwrap();
    for _ in 0..5 {
        impostor.crl().unwrap();
    }
    let foreign = network.verifier.replace_crl(impostor.crl().unwrap().der);
    assert!(foreign.is_err(), "{foreign:?}");
    // Garbage too.
    let garbage = network.verifier.replace_crl(b"not a CRL".to_vec().into());
    assert!(garbage.is_err());

    let refused = network
        .whoami(client_config(&credentials(&client, &network.ca)).unwrap())
        .await;
    assert!(refused.is_err(), "still revoked: {refused:?}");
    network.stop().await;
}

#[tokio::test]
async fn optional_client_auth_serves_the_anonymous_but_not_the_invalid() {
    let network = Network::start(ClientAuth::Optional).await;
    let answer = network.whoami(anonymous_config(&network.ca)).await.unwrap();
    assert!(answer.starts_with("anonymous|"), "{answer}");

    let valid = network.organisation(CLIENT_URA, Validity::default());
    let answer = network
        .whoami(client_config(&credentials(&valid, &network.ca)).unwrap())
        .await
        .unwrap();
    assert!(answer.starts_with(CLIENT_URA), "{answer}");

    let now = OffsetDateTime::now_utc();
    let expired = network.organisation(
        CLIENT_URA,
        Validity {
            not_before: now - Duration::days(30),
            not_after: now - Duration::days(1),
        },
    );
    network.ca.revoke(&valid.serial).unwrap();
    network.refresh_crl();
    for refused_certificate in [&expired, &valid] {
        let refused = network
            .whoami(client_config(&credentials(refused_certificate, &network.ca)).unwrap())
            .await;
        assert!(refused.is_err(), "{refused:?}");
    }
    network.stop().await;
}

#[tokio::test]
async fn a_client_refuses_a_server_that_is_not_of_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(ClientAuth::Required).await;
    // An impostor server with a certificate from another CA, on its own port.
    let impostor_ca = NetworkCa::init(dir.path(), "Test network CA").unwrap();
    let impostor = impostor_ca
        .issue_organisation(SERVER_URA, "Ziekenhuis Oost", &hosts(), Validity::default())
        .unwrap();
    let impostor_verifier = ClientVerifier::new(
        network.ca.certificate_der(),
        network.ca.crl().unwrap().der,
        ClientAuth::Required,
    )
    .unwrap();
    let impostor_config = server_config(
        &Credentials::from_pem(
            impostor.certificate_pem.as_bytes(),
            impostor.key_pem.as_bytes(),
            network.ca.certificate_pem().as_bytes(),
        )
        .unwrap(),
        &impostor_verifier,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(tls::serve(
        listener,
        impostor_config,
        None,
        router(),
        async {
            let _ = stopped.await;
        },
    ));
    let client = network.organisation(CLIENT_URA, Validity::default());
    let refused = reqwest::Client::builder()
        .tls_backend_preconfigured(client_config(&credentials(&client, &network.ca)).unwrap())
        .build()
        .unwrap()
        .get(format!("https://localhost:{port}/whoami"))
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");
    stop.send(()).unwrap();
    served.await.unwrap().unwrap();
    network.stop().await;
}
