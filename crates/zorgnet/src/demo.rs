//! `zorgnet demo`: a node of a GP practice on a local SQLite database, filled with synthetic
//! patients at first start, served the way a node runs in a network: over TLS with a
//! certificate of a demo CA, and with a development identity provider whose citizens read
//! their own data and whose professionals read and write within their scopes.
//!
//! What it is: everything one needs to try a node, in one command, with nothing in it
//! running without TLS. The demo CA, the node's credentials and the identity provider's key
//! live in the data directory and are reused at the next start (the revocation list is
//! signed anew at every start: one lives a week). `--token USER` prints an access token of
//! a demo user and exits, for `curl`.
//! What it is not: a network (no hub: the node's registrations wait in its outbox), or
//! anything for real data: the identity provider logs in anyone as anyone on its list.

use crate::{ServiceTls, import, local_clients, open_store, serve};
use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use zorgnet_idp::{ClientRegistration, DemoUser, IdpConfig, KeySource};
use zorgnet_node::NodeIdentity;
use zorgnet_trust::certificate::HostName;
use zorgnet_trust::pki;

/// Arguments of `zorgnet demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Directory for the SQLite database, the demo CA and the keys.
    #[arg(long, env = "ZORGNET_DEMO_DATA", default_value = "zorgnet-data/demo")]
    data: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "ZORGNET_DEMO_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Address of the development identity provider.
    #[arg(
        long,
        env = "ZORGNET_DEMO_IDP_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    idp_listen: String,
    /// Synthetic patients loaded on first start.
    #[arg(long, env = "ZORGNET_DEMO_PATIENTS", default_value_t = 100)]
    patients: usize,
    /// Print an access token of this demo user (as the start lists them) and exit.
    #[arg(long)]
    token: Option<String>,
}

/// The demo organisation's URA number.
const DEMO_URA: &str = "00000001";
/// The demo organisation's name.
const DEMO_NAME: &str = "zorgnet demo huisartsenpraktijk";
/// The demo CA's directory inside the demo's data directory: for demonstrations only.
const DEMO_CA_DIR: &str = "demo-ca";
/// The demo node's credentials' directory inside the demo's data directory.
const DEMO_TLS_DIR: &str = "tls";
/// The identity provider's key directory inside the demo's data directory.
const DEMO_IDP_DIR: &str = "dev-idp";
/// The client id the demo's tokens are issued to, and the node's audience.
const DEMO_CLIENT_ID: &str = "zorgnet-demo";
/// Seed of the demo's synthetic data.
const DEMO_SEED: u64 = 1;
/// Demo citizens: the first patients of the synthetic data that have a BSN.
const DEMO_CITIZENS: usize = 3;
/// Demo professionals of the practice: subject, name, UZI number.
const DEMO_PROFESSIONALS: [(&str, &str, &str); 2] = [
    ("huisarts", "Dr. A. Jansen (huisarts)", "900000001"),
    ("assistent", "B. de Wit (doktersassistent)", "900000002"),
];
/// What a professional's demo token may do: read and write everything of the practice.
const PROFESSIONAL_SCOPE: &str = "openid user/*.read user/*.write";
/// What a citizen's demo token may do: read their own data.
const CITIZEN_SCOPE: &str = "openid patient/*.read";

/// Runs `zorgnet demo`.
pub async fn run(args: DemoArgs) -> Result<()> {
    let generator = zorgnet_synth::Generator::new(zorgnet_synth::SynthConfig {
        patients: args.patients,
        seed: DEMO_SEED,
    });
    let users = demo_users(&generator);
    let idp = zorgnet_idp::DevIdp::new(IdpConfig {
        issuer: format!("https://{}", args.idp_listen),
        clients: vec![ClientRegistration {
            client_id: DEMO_CLIENT_ID.into(),
            redirect_uris: vec![format!("https://{}/", args.listen)],
        }],
        users: users.clone(),
        key: KeySource::Directory(args.data.join(DEMO_IDP_DIR)),
    })
    .context("the development identity provider")?;
    if let Some(subject) = &args.token {
        let user = users
            .iter()
            .find(|user| user.subject == *subject)
            .with_context(|| {
                format!(
                    "no demo user {subject:?}; there are: {}",
                    users
                        .iter()
                        .map(|u| u.subject.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        let scope = if user.uzi.is_some() {
            PROFESSIONAL_SCOPE
        } else {
            CITIZEN_SCOPE
        };
        println!("{}", idp.access_token(DEMO_CLIENT_ID, subject, scope)?);
        return Ok(());
    }
    let tls_dir = demo_credentials(&args.data, &[&args.listen, &args.idp_listen])?;
    let tls = ServiceTls::load(&tls_dir, &[tls_dir.join(pki::CRL_FILE)])?;
    let store = open_store(&args.data, None).await?;
    let existing: i64 = store.counts().await?.iter().map(|(_, n)| n).sum();
    if existing == 0 {
        println!(
            "first start: loading {} synthetic patients into {}",
            args.patients,
            args.data.display()
        );
        let report = import::load_into_store(&store, generator.resources(), None).await?;
        println!(
            "loaded {} resources ({} failed)",
            report.stored,
            report.failures.len()
        );
    }
    let idp_listener = tokio::net::TcpListener::bind(&args.idp_listen)
        .await
        .with_context(|| format!("listen on {}", args.idp_listen))?;
    tokio::spawn(zorgnet_trust::tls::serve(
        idp_listener,
        tls.server.clone(),
        None,
        idp.router(),
        std::future::pending(),
    ));
    println!(
        "development identity provider (for demos only; anyone may log in as anyone listed): {}",
        idp.issuer()
    );
    for user in &users {
        println!(
            "  demo user {:<10} {:<32} {}",
            user.subject,
            user.name,
            match (&user.bsn, &user.uzi) {
                (Some(bsn), _) => format!("citizen, BSN {bsn}"),
                (_, Some(uzi)) => format!("professional, UZI {uzi}"),
                _ => String::new(),
            }
        );
    }
    println!(
        "  a demo user's access token: zorgnet demo --data {} --idp-listen {} --token {}",
        args.data.display(),
        args.idp_listen,
        users[0].subject
    );
    let oidc = demo_oidc(idp.issuer(), &tls_dir)?;
    let identity = NodeIdentity {
        ura: DEMO_URA.into(),
        name: DEMO_NAME.into(),
    };
    let local = local_clients(&args.data, &args.listen, false)?;
    serve(
        store,
        &args.data,
        &args.listen,
        identity,
        None,
        None,
        local,
        Some(tls),
        oidc,
        zorgnet_audit::Monitor::new(&zorgnet_audit::MonitorRules::default())?,
    )
    .await
}

/// The demo's people: the first synthetic patients with a BSN, and the practice's staff.
fn demo_users(generator: &zorgnet_synth::Generator) -> Vec<DemoUser> {
    let citizens = generator
        .resources()
        .filter(|resource| resource["resourceType"] == "Patient")
        .filter_map(|patient| {
            let bsn = patient["identifier"]
                .as_array()?
                .iter()
                .find(|identifier| identifier["system"] == zorgnet_fhir::identifiers::BSN_SYSTEM)?
                ["value"]
                .as_str()?
                .to_string();
            let name = patient["name"][0]["text"]
                .as_str()
                .or_else(|| patient["name"][0]["family"].as_str())
                .unwrap_or("burger")
                .to_string();
            Some((bsn, name))
        })
        .take(DEMO_CITIZENS)
        .enumerate()
        .map(|(index, (bsn, name))| {
            DemoUser::citizen(&format!("burger-{}", index + 1), &name, &bsn)
        });
    citizens
        .chain(
            DEMO_PROFESSIONALS
                .iter()
                .map(|(subject, name, uzi)| DemoUser::professional(subject, name, uzi)),
        )
        .collect()
}

/// The node's OpenID providers in the demo: the development provider for staff and citizens
/// alike, reached over TLS with the demo CA.
fn demo_oidc(issuer: &str, tls_dir: &Path) -> Result<zorgnet_node::authn::NodeOidc> {
    use zorgnet_trust::oidc::{OidcConfig, OidcVerifier};
    let tls = crate::client_config_trusting(&tls_dir.join(pki::CA_CERTIFICATE_FILE))?;
    let verifier = || {
        OidcVerifier::with_tls(
            OidcConfig {
                issuer: issuer.to_string(),
                audience: DEMO_CLIENT_ID.into(),
            },
            Some(tls.clone()),
        )
        .map(std::sync::Arc::new)
    };
    Ok(zorgnet_node::authn::NodeOidc {
        staff: Some(verifier()?),
        citizens: Some(verifier()?),
    })
}

/// The demo's TLS credentials: a demo CA and a certificate for the node (and the identity
/// provider) on loopback and the listen addresses' hosts, made at first start; a fresh
/// revocation list at every start (a list lives a week). Answers the credentials'
/// directory.
fn demo_credentials(data: &Path, listen: &[&str]) -> Result<PathBuf> {
    std::fs::create_dir_all(data).with_context(|| format!("create {}", data.display()))?;
    let ca_dir = data.join(DEMO_CA_DIR);
    let ca = if ca_dir.join(pki::CA_CERTIFICATE_FILE).exists() {
        pki::NetworkCa::open(&ca_dir)
    } else {
        pki::NetworkCa::init(&ca_dir, "zorgnet demo CA (not for real data)")
    }
    .with_context(|| format!("the demo CA in {}", ca_dir.display()))?;
    let tls_dir = data.join(DEMO_TLS_DIR);
    if !tls_dir.join(pki::KEY_FILE).exists() {
        let mut hosts: Vec<HostName> =
            vec!["localhost".parse()?, "127.0.0.1".parse()?, "::1".parse()?];
        for ip in listen
            .iter()
            .filter_map(|address| address.parse::<std::net::SocketAddr>().ok())
            .map(|address| address.ip())
            .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        {
            hosts.push(ip.to_string().parse()?);
        }
        ca.issue_organisation(DEMO_URA, DEMO_NAME, &hosts, pki::Validity::default())
            .context("issue the demo node's certificate")?
            .write(&tls_dir, ca.certificate_pem())
            .with_context(|| format!("write {}", tls_dir.display()))?;
    }
    let crl = ca.crl().context("sign the demo revocation list")?;
    std::fs::write(tls_dir.join(pki::CRL_FILE), &crl.pem)
        .with_context(|| format!("write the revocation list in {}", tls_dir.display()))?;
    Ok(tls_dir)
}
