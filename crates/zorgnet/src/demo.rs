//! `zorgnet demo`: a whole network on loopback in one process: a hub, the nodes of a GP
//! practice, a hospital, a pharmacy, a nursing home and a clinic on Saba (each its own SQLite
//! database and certificate of a demo CA, mutual TLS between all of them), and a development
//! identity provider for citizens and professionals.
//!
//! What it is: everything one needs to try the network, in one command, with nothing in it
//! running without TLS. At first start it makes the demo CA and every part's credentials,
//! registers the organisations and their professionals at the hub, and loads synthetic
//! patients spread the way care is: a resource goes to the node of the kind of organisation
//! it names (a dispense to the pharmacy, an admission to the hospital, a nursing home's care
//! to the nursing home, anything else to the GP); everything of a patient in the Caribbean
//! Netherlands to the clinic on Saba; every node holds the Patient of each person it holds
//! data of. The nodes' outboxes then register their data at the referral index, and each node
//! publishes its address to the hub's address book. The demo logins are three citizens with
//! data at three organisations, one citizen of Saba without a BSN (named by the
//! zorgverificatienummer the hub derives from their sédula number and birth date), and six
//! professionals with different roles. A second start reuses all of it
//! ([`NETWORK_FILE`] names where each part listens, for `--token` and for scripts).
//! `--token USER` prints an access token of a demo user and exits, for `curl`.
//! What it is not: a deployment (every part in one process, a development identity provider
//! that logs in anyone as anyone on its list, loopback addresses admitted to the address
//! book), or anything for real data.

use crate::{LocalAccess, NodeParts, ServiceTls, import, local_clients, open_node_store};
use anyhow::{Context, Result};
use clap::Args;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use zorgnet_idp::{ClientRegistration, DemoUser, IdpConfig, KeySource, ResourceServer};
use zorgnet_node::NodeIdentity;
use zorgnet_store::Store;
use zorgnet_trust::certificate::HostName;
use zorgnet_trust::pki;

/// Arguments of `zorgnet demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Directory for the databases, the demo CA and the keys.
    #[arg(long, env = "ZORGNET_DEMO_DATA", default_value = "zorgnet-data/demo")]
    data: PathBuf,
    /// Loopback address the parts listen on.
    #[arg(long, env = "ZORGNET_DEMO_HOST", default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// First port: the portal's; the identity provider, the hub and the nodes take the ones
    /// after it. 0 takes free ports.
    #[arg(long, env = "ZORGNET_DEMO_PORT", default_value_t = 8080)]
    port: u16,
    /// Synthetic patients loaded on first start.
    #[arg(long, env = "ZORGNET_DEMO_PATIENTS", default_value_t = 2_000)]
    patients: usize,
    /// Print an access token of this demo user (as the start lists them) and exit.
    #[arg(long)]
    token: Option<String>,
}

/// The file in the data directory that says where the running demo's parts listen.
pub const NETWORK_FILE: &str = "network.json";
/// The demo CA's directory inside the demo's data directory: for demonstrations only.
const DEMO_CA_DIR: &str = "demo-ca";
/// The identity provider's key directory inside the demo's data directory.
const DEMO_IDP_DIR: &str = "dev-idp";
/// The hub's data directory inside the demo's.
pub(crate) const HUB_DIR: &str = "hub";
/// The nodes' data directories' parent inside the demo's.
const NODES_DIR: &str = "nodes";
/// Credentials' directory inside a part's data directory.
pub(crate) const TLS_DIR: &str = "tls";
/// A node's API key at the hub, inside its data directory.
const HUB_KEY_FILE: &str = "hub-api.key";
/// Credentials of the services without a URA (identity provider, portal).
const SERVICES_TLS_DIR: &str = "tls-services";
/// Seed of the demo's synthetic data.
const DEMO_SEED: u64 = 1;
/// The portal's URA at the hub, where the operator admitted it as a citizen portal.
const PORTAL_URA: &str = "00000999";
/// The portal's name in the hub's registry.
const PORTAL_NAME: &str = "Mijn Gezondheidsoverzicht";
/// The portal's directory (its API key at the hub) inside the demo's.
const PORTAL_DIR: &str = "portal";
/// How long a node reuses a consent decision of the hub: a citizen's choice is in force at
/// every node within this time.
const DECISION_TTL: Duration = Duration::from_secs(5);
/// The path the professionals' viewer is nested under, on the portal's address.
const VIEWER_PATH: &str = "/zorgverlener";
/// The portal's client id at the identity provider, and the audience of citizens' tokens
/// at every node.
pub const PORTAL_CLIENT_ID: &str = "zorgnet-portal";
/// A citizen's app (a PGO) registered at the identity provider as a native public client:
/// it logs in with PKCE, is sent back to [`DEMO_APP_REDIRECT_URI`] on any port (RFC 8252),
/// and asks for a token for the portal's FHIR endpoint by SMART's `aud` parameter.
pub const DEMO_APP_CLIENT_ID: &str = "demo-pgo-app";
/// The demo app's registered redirect URI.
pub const DEMO_APP_REDIRECT_URI: &str = "http://127.0.0.1/callback";
/// Demo citizens: patients with a BSN whose data lies at this many organisations or more.
const CITIZEN_MIN_SOURCES: usize = 3;
/// Demo citizens listed.
const DEMO_CITIZENS: usize = 3;
/// Patients looked at when choosing the demo citizens.
const CITIZEN_CANDIDATES: usize = 400;
/// Patients generated and loaded per step of the first start.
const LOAD_CHUNK_PATIENTS: usize = 50;
/// How often the hub polls the nodes' directories, and the nodes the hub's address book: a
/// node knows the others' addresses within about twice this after the start.
const ADDRESS_BOOK_SYNC: Duration = Duration::from_secs(1);
/// How often the hub re-reads its revocation list and the nodes fetch it.
const CRL_REFRESH: Duration = Duration::from_secs(60);
/// How long the start waits for the hub to answer its first request.
const HUB_START_TIMEOUT: Duration = Duration::from_secs(30);
/// What a professional's demo token may do at their own organisation.
const PROFESSIONAL_SCOPE: &str = "openid user/*.read user/*.write";
/// What a citizen's demo token may do: read their own data.
const CITIZEN_SCOPE: &str = "openid patient/*.read";

/// The kind of care an organisation of the demo gives, and so which data it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Care {
    GeneralPractice,
    Hospital,
    Pharmacy,
    NursingHome,
    Island,
}

/// One organisation of the demo network, with its node.
struct Organisation {
    slug: &'static str,
    ura: &'static str,
    name: &'static str,
    care: Care,
}

/// The organisations, in the order their nodes take ports.
const ORGANISATIONS: [Organisation; 5] = [
    Organisation {
        slug: "huisarts",
        ura: "00000101",
        name: "Huisartsenpraktijk De Linde",
        care: Care::GeneralPractice,
    },
    Organisation {
        slug: "ziekenhuis",
        ura: "00000202",
        name: "Ziekenhuis Rivierenland",
        care: Care::Hospital,
    },
    Organisation {
        slug: "apotheek",
        ura: "00000303",
        name: "Apotheek Het Kruispunt",
        care: Care::Pharmacy,
    },
    Organisation {
        slug: "verpleeghuis",
        ura: "00000404",
        name: "Verpleeghuis De Hoge Weide",
        care: Care::NursingHome,
    },
    Organisation {
        slug: "saba",
        ura: "00000505",
        name: "Saba Health Care Foundation",
        care: Care::Island,
    },
];

/// A demo professional: login subject, name, UZI number, organisation slug, UZI role code.
struct Professional {
    subject: &'static str,
    name: &'static str,
    uzi: &'static str,
    organisation: &'static str,
    role: &'static str,
}

/// The demo professionals, with different roles at different organisations.
const PROFESSIONALS: [Professional; 6] = [
    Professional {
        subject: "huisarts",
        name: "Dr. A. Jansen (huisarts)",
        uzi: "900000101",
        organisation: "huisarts",
        role: "01.015",
    },
    Professional {
        subject: "internist",
        name: "Dr. E. de Vries (internist)",
        uzi: "900000202",
        organisation: "ziekenhuis",
        role: "01.016",
    },
    Professional {
        subject: "seh-arts",
        name: "Dr. S. Bakker (SEH-arts)",
        uzi: "900000203",
        organisation: "ziekenhuis",
        role: "01.018",
    },
    Professional {
        subject: "apotheker",
        name: "Apr. M. Visser (apotheker)",
        uzi: "900000303",
        organisation: "apotheek",
        role: "17.000",
    },
    Professional {
        subject: "verpleegkundige",
        name: "R. Smit (verpleegkundige)",
        uzi: "900000404",
        organisation: "verpleeghuis",
        role: "30.000",
    },
    Professional {
        subject: "saba-arts",
        name: "Dr. J. Hassell (huisarts, Saba)",
        uzi: "900000505",
        organisation: "saba",
        role: "01.015",
    },
];

/// Where the parts of a running demo listen, as written to [`NETWORK_FILE`].
#[derive(serde::Serialize, serde::Deserialize)]
struct NetworkFile {
    patients: usize,
    portal: String,
    issuer: String,
    hub: String,
    nodes: Vec<NodeEntry>,
    /// The demo citizen without a BSN, with the zorgverificatienummer the hub derived (kept
    /// here so that `--token` needs no running hub).
    #[serde(default)]
    without_bsn: Option<DemoUser>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct NodeEntry {
    ura: String,
    name: String,
    fhir_base: String,
    admin_key_file: PathBuf,
}

/// The client id of an organisation's staff at the identity provider, and the audience of
/// their tokens at its node (and only there).
fn staff_client_id(ura: &str) -> String {
    format!("zorgnet-staff-{ura}")
}

/// Runs `zorgnet demo`.
pub async fn run(args: DemoArgs) -> Result<()> {
    if !args.host.is_loopback() {
        anyhow::bail!(
            "the demo listens on loopback only (its identity provider logs in anyone), not on {}",
            args.host
        );
    }
    if let Some(subject) = &args.token {
        return print_token(&args.data, subject);
    }
    let started = Instant::now();
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("create {}", args.data.display()))?;
    let patients = match read_network(&args.data) {
        Ok(earlier) if earlier.patients != args.patients => {
            println!(
                "{} holds the demo of {} patients, not {}: remove it for another size",
                args.data.display(),
                earlier.patients,
                args.patients
            );
            earlier.patients
        }
        _ => args.patients,
    };
    let generator = zorgnet_synth::Generator::new(zorgnet_synth::SynthConfig {
        patients,
        seed: DEMO_SEED,
    });
    let listeners = Listeners::bind(args.host, args.port).await?;
    let https = |address: SocketAddr| format!("https://{address}");
    let portal_url = https(listeners.portal.local_addr()?);
    let issuer = https(listeners.idp.local_addr()?);
    let hub_url = https(listeners.hub.local_addr()?);
    let ca = demo_ca(&args.data)?;
    let hosts: Vec<HostName> = vec![
        "localhost".parse()?,
        args.host.to_string().parse()?,
        "127.0.0.1".parse()?,
    ];
    let crl = ca.crl().context("sign the demo revocation list")?;
    let services_tls = credentials(
        &ca,
        &crl,
        &args.data.join(SERVICES_TLS_DIR),
        None,
        "zorgnet demo services",
        &hosts,
    )?;
    let hub_tls = credentials(
        &ca,
        &crl,
        &args.data.join(HUB_DIR).join(TLS_DIR),
        None,
        "zorgnet demo hub",
        &hosts,
    )?;
    let mut node_tls = Vec::new();
    for organisation in &ORGANISATIONS {
        node_tls.push(credentials(
            &ca,
            &crl,
            &node_dir(&args.data, organisation).join(TLS_DIR),
            Some(organisation.ura),
            organisation.name,
            &hosts,
        )?);
    }

    let mut servers = tokio::task::JoinSet::new();
    let admin_key_file =
        start_hub(&args.data, &hub_tls, listeners.hub, &hub_url, &mut servers).await?;
    let operator = operator_client(&hub_tls)?;
    wait_for_hub(&operator, &hub_url).await?;
    let admin_key = std::fs::read_to_string(&admin_key_file)
        .with_context(|| format!("read {}", admin_key_file.display()))?;
    let mut hub_keys = Vec::new();
    for organisation in &ORGANISATIONS {
        hub_keys.push(
            register_organisation(
                &operator,
                &hub_url,
                admin_key.trim(),
                &node_dir(&args.data, organisation),
                organisation.ura,
                organisation.name,
            )
            .await?,
        );
    }
    for professional in &PROFESSIONALS {
        register_professional(&operator, &hub_url, admin_key.trim(), professional).await?;
    }
    // The demo logins, with the island citizen known by the zorgverificatienummer the hub
    // derives; the identity provider serves from here on, before any node can send a
    // professional or a citizen to it.
    let island_clinic = ORGANISATIONS
        .iter()
        .position(|organisation| organisation.care == Care::Island)
        .context("the demo has an island clinic")?;
    let island_hub = zorgnet_hub_client::HubClient::with_tls(
        &hub_url,
        &hub_keys[island_clinic],
        Some(
            ServiceTls::load(
                &node_tls[island_clinic],
                &[node_tls[island_clinic].join(pki::CRL_FILE)],
            )?
            .client,
        ),
    )?;
    let without_bsn = match island_citizen(&generator) {
        Some(citizen) => citizen.user(&island_hub).await?,
        None => None,
    };
    let (users, citizens) = demo_users(&generator, without_bsn.clone())?;
    let idp = demo_idp(&args.data, &issuer, &portal_url, users.clone())?;
    let idp_tls = ServiceTls::load(&services_tls, &[services_tls.join(pki::CRL_FILE)])?;
    tokio::spawn(zorgnet_trust::tls::serve(
        listeners.idp,
        idp_tls.server.clone(),
        None,
        idp.router(),
        shutdown_signal(),
    ));
    let portal_key = register_organisation(
        &operator,
        &hub_url,
        admin_key.trim(),
        &args.data.join(PORTAL_DIR),
        PORTAL_URA,
        PORTAL_NAME,
    )
    .await?;

    let mut stores = Vec::new();
    for organisation in &ORGANISATIONS {
        stores.push(open_node_store(&node_dir(&args.data, organisation), None).await?);
    }
    let empty = stores_empty(&stores).await?;
    if empty {
        load(&generator, &stores).await?;
    }

    let mut nodes = Vec::new();
    for (((organisation, (store, wake)), listener), (tls_dir, hub_key)) in ORGANISATIONS
        .iter()
        .zip(stores)
        .zip(listeners.nodes)
        .zip(node_tls.iter().zip(&hub_keys))
    {
        let data = node_dir(&args.data, organisation);
        let tls = ServiceTls::load(tls_dir, &[tls_dir.join(pki::CRL_FILE)])?;
        let hub_client = zorgnet_node::hub_client::HubClient::with_tls(
            &hub_url,
            hub_key,
            Some(tls.client.clone()),
        )?;
        let source = zorgnet_trust::tls::CrlSource::Hub {
            client: reqwest::Client::builder()
                .tls_backend_preconfigured(tls.client.clone())
                .timeout(zorgnet_node::hub_client::HUB_REQUEST_TIMEOUT)
                .build()
                .context("set up the revocation list's client")?,
            url: format!("{hub_url}/trust/crl"),
        };
        tokio::spawn(tls.verifier.clone().keep_fresh(source, CRL_REFRESH, None));
        let base = format!("{}/fhir", https(listener.local_addr()?));
        let local: LocalAccess = local_clients(&data, &base, false)?;
        let admin_key_file = local.key_file.clone().unwrap_or_default();
        let parts = NodeParts {
            store,
            data: data.clone(),
            identity: NodeIdentity {
                ura: organisation.ura.into(),
                name: organisation.name.into(),
            },
            hub: Some((
                hub_client,
                wake,
                zorgnet_node::access::AccessConfig {
                    decision_ttl: DECISION_TTL,
                },
            )),
            address_book_sync: ADDRESS_BOOK_SYNC,
            local,
            tls: Some(tls),
            oidc: node_oidc(&issuer, organisation.ura, &services_tls)?,
            monitor: zorgnet_audit::Monitor::new(&zorgnet_audit::MonitorRules::default())?,
            profiles: None,
            enforce_profiles: false,
        };
        let node = crate::prepare_node(parts, listener, base.clone()).await?;
        servers.spawn(crate::serve_router(node.listener, node.router, node.tls));
        nodes.push(NodeEntry {
            ura: organisation.ura.into(),
            name: organisation.name.into(),
            fhir_base: base,
            admin_key_file,
        });
    }
    let network = NetworkFile {
        patients,
        portal: format!("{portal_url}/"),
        issuer: issuer.clone(),
        hub: hub_url.clone(),
        nodes,
        without_bsn,
    };
    std::fs::write(
        args.data.join(NETWORK_FILE),
        serde_json::to_vec_pretty(&network)?,
    )
    .context("write the demo's network file")?;
    let portal = start_portal(&args.data, &network, &services_tls)?.with_consent_register(
        zorgnet_hub_client::HubClient::with_tls(
            &hub_url,
            &portal_key,
            Some(crate::client_config_trusting(&ca_file(&args.data))?),
        )?,
    );
    let viewer = start_viewer(&network, &hub_keys, &services_tls)?;
    servers.spawn(crate::serve_router(
        listeners.portal,
        portal
            .router()
            .nest(VIEWER_PATH, viewer.router())
            .route("/health", axum::routing::get(|| async { "UP" })),
        Some((idp_tls.server.clone(), idp_tls.verifier.clone())),
    ));
    announce(
        &args,
        &network,
        &users,
        &citizens,
        &ca_file(&args.data),
        started,
    );
    while let Some(ended) = servers.join_next().await {
        ended.context("a part of the demo stopped")??;
    }
    Ok(())
}

/// The citizen portal over every node of the demo. It checks the nodes' checkpoints with the
/// keys their access logs sign with, read from the nodes' data directories: in one process
/// the demo has them at hand.
fn start_portal(
    data: &Path,
    network: &NetworkFile,
    services_tls: &Path,
) -> Result<zorgnet_portal::Portal> {
    let portal = zorgnet_portal::Portal::new(zorgnet_portal::PortalConfig {
        base_url: network.portal.trim_end_matches('/').to_string(),
        issuer: network.issuer.clone(),
        client_id: PORTAL_CLIENT_ID.into(),
        sources: network
            .nodes
            .iter()
            .map(|node| zorgnet_portal::Source {
                name: node.name.clone(),
                ura: node.ura.clone(),
                fhir_base: node.fhir_base.clone(),
            })
            .collect(),
        tls: Some(crate::client_config_trusting(
            &services_tls.join(pki::CA_CERTIFICATE_FILE),
        )?),
        source_timeout: zorgnet_portal::DEFAULT_SOURCE_TIMEOUT,
    })
    .context("the portal")?;
    let mut keys = Vec::new();
    for organisation in &ORGANISATIONS {
        let path = node_dir(data, organisation).join(zorgnet_audit::CHECKPOINT_KEY_FILE);
        let key = zorgnet_audit::checkpoint_key(&path)
            .with_context(|| format!("read {}", path.display()))?;
        keys.push((organisation.ura.to_string(), key.verifying_key()));
    }
    portal.add_checkpoint_keys(keys);
    Ok(portal)
}

/// The professionals' viewer of every organisation of the demo, beside the portal.
fn start_viewer(
    network: &NetworkFile,
    hub_keys: &[String],
    services_tls: &Path,
) -> Result<zorgnet_viewer::Viewer> {
    zorgnet_viewer::Viewer::new(zorgnet_viewer::ViewerConfig {
        base_url: viewer_url(network),
        issuer: network.issuer.clone(),
        organisations: network
            .nodes
            .iter()
            .zip(hub_keys)
            .map(|(node, hub_key)| zorgnet_viewer::Organisation {
                ura: node.ura.clone(),
                name: node.name.clone(),
                client_id: staff_client_id(&node.ura),
                fhir_base: node.fhir_base.clone(),
                hub_url: network.hub.clone(),
                hub_key: hub_key.clone(),
            })
            .collect(),
        tls: Some(crate::client_config_trusting(
            &services_tls.join(pki::CA_CERTIFICATE_FILE),
        )?),
    })
    .context("the professionals' viewer")
}

/// Where the professionals' viewer is reached: [`VIEWER_PATH`] on the portal's address.
fn viewer_url(network: &NetworkFile) -> String {
    format!("{}{VIEWER_PATH}", network.portal.trim_end_matches('/'))
}

/// Ctrl-C, for every part's graceful shutdown.
async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// The listeners of every part, bound before anything else so that their addresses (also
/// free ones, with port 0) are known to the certificates, the provider and the hub.
struct Listeners {
    portal: TcpListener,
    idp: TcpListener,
    hub: TcpListener,
    nodes: Vec<TcpListener>,
}

impl Listeners {
    async fn bind(host: std::net::IpAddr, first: u16) -> Result<Listeners> {
        let mut next = first;
        let mut bind = async || {
            let address = SocketAddr::new(host, next);
            if first != 0 {
                next = next
                    .checked_add(1)
                    .context("the demo's ports run past 65535")?;
            }
            TcpListener::bind(address)
                .await
                .with_context(|| format!("listen on {address} (choose other ports with --port)"))
        };
        let portal = bind().await?;
        let idp = bind().await?;
        let hub = bind().await?;
        let mut nodes = Vec::new();
        for _ in &ORGANISATIONS {
            nodes.push(bind().await?);
        }
        Ok(Listeners {
            portal,
            idp,
            hub,
            nodes,
        })
    }
}

fn node_dir(data: &Path, organisation: &Organisation) -> PathBuf {
    data.join(NODES_DIR).join(organisation.slug)
}

pub(crate) fn ca_file(data: &Path) -> PathBuf {
    data.join(DEMO_CA_DIR).join(pki::CA_CERTIFICATE_FILE)
}

/// The demo CA, made at first start.
pub(crate) fn demo_ca(data: &Path) -> Result<pki::NetworkCa> {
    let ca_dir = data.join(DEMO_CA_DIR);
    if ca_dir.join(pki::CA_CERTIFICATE_FILE).exists() {
        pki::NetworkCa::open(&ca_dir)
    } else {
        pki::NetworkCa::init(&ca_dir, "zorgnet demo CA (not for real data)")
    }
    .with_context(|| format!("the demo CA in {}", ca_dir.display()))
}

/// A part's credentials in `dir` (an organisation's with its URA, else a service's), made
/// at first start, and the current revocation list beside them. Answers `dir`.
pub(crate) fn credentials(
    ca: &pki::NetworkCa,
    crl: &pki::Crl,
    dir: &Path,
    ura: Option<&str>,
    name: &str,
    hosts: &[HostName],
) -> Result<PathBuf> {
    if !dir.join(pki::KEY_FILE).exists() {
        let issued = match ura {
            Some(ura) => ca.issue_organisation(ura, name, hosts, pki::Validity::default()),
            None => ca.issue_server(name, hosts, pki::Validity::default()),
        }
        .with_context(|| format!("issue the certificate of {name}"))?;
        issued
            .write(dir, ca.certificate_pem())
            .with_context(|| format!("write {}", dir.display()))?;
    }
    std::fs::write(dir.join(pki::CRL_FILE), &crl.pem)
        .with_context(|| format!("write the revocation list in {}", dir.display()))?;
    Ok(dir.to_path_buf())
}

/// The development identity provider: the portal's client, and one staff client per
/// organisation whose tokens only that organisation's node accepts.
fn demo_idp(
    data: &Path,
    issuer: &str,
    portal_url: &str,
    users: Vec<DemoUser>,
) -> Result<zorgnet_idp::DevIdp> {
    let mut clients = vec![
        ClientRegistration {
            client_id: PORTAL_CLIENT_ID.into(),
            redirect_uris: vec![format!("{portal_url}/callback")],
        },
        ClientRegistration {
            client_id: DEMO_APP_CLIENT_ID.into(),
            redirect_uris: vec![DEMO_APP_REDIRECT_URI.into()],
        },
    ];
    clients.extend(ORGANISATIONS.iter().map(|organisation| ClientRegistration {
        client_id: staff_client_id(organisation.ura),
        redirect_uris: vec![format!(
            "{portal_url}{VIEWER_PATH}/{}/callback",
            organisation.ura
        )],
    }));
    zorgnet_idp::DevIdp::new(IdpConfig {
        issuer: issuer.to_string(),
        clients,
        resources: vec![ResourceServer {
            audience: PORTAL_CLIENT_ID.into(),
            urls: vec![format!("{portal_url}/fhir")],
        }],
        users,
        key: KeySource::Directory(data.join(DEMO_IDP_DIR)),
    })
    .context("the development identity provider")
}

/// `--token USER`: an access token of a demo user from the provider of the demo last
/// started in `data`.
fn print_token(data: &Path, subject: &str) -> Result<()> {
    let network = read_network(data).with_context(|| {
        format!(
            "no demo was started in {} yet: run `zorgnet demo --data {}` first",
            data.display(),
            data.display()
        )
    })?;
    let generator = zorgnet_synth::Generator::new(zorgnet_synth::SynthConfig {
        patients: network.patients,
        seed: DEMO_SEED,
    });
    let (users, _) = demo_users(&generator, network.without_bsn.clone())?;
    let idp = demo_idp(data, &network.issuer, &network.portal, users.clone())?;
    let user = users
        .iter()
        .find(|user| user.subject == subject)
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
    let token = match PROFESSIONALS.iter().find(|p| p.subject == subject) {
        Some(professional) => {
            let organisation = organisation(professional.organisation);
            idp.access_token(
                &staff_client_id(organisation.ura),
                &user.subject,
                PROFESSIONAL_SCOPE,
            )?
        }
        None => idp.access_token(PORTAL_CLIENT_ID, &user.subject, CITIZEN_SCOPE)?,
    };
    println!("{token}");
    Ok(())
}

/// What the demo last started in `data` wrote to [`NETWORK_FILE`].
fn read_network(data: &Path) -> Result<NetworkFile> {
    let path = data.join(NETWORK_FILE);
    let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("read {}", path.display()))
}

fn organisation(slug: &str) -> &'static Organisation {
    ORGANISATIONS
        .iter()
        .find(|organisation| organisation.slug == slug)
        .expect("every demo professional works at a demo organisation")
}

/// Opens the hub in the demo's data directory, starts its background tasks and serves it
/// among `servers` at once, so that the organisations can be registered. Answers the path
/// of the operator's key.
async fn start_hub(
    data: &Path,
    tls_dir: &Path,
    listener: TcpListener,
    url: &str,
    servers: &mut tokio::task::JoinSet<Result<()>>,
) -> Result<PathBuf> {
    let tls = ServiceTls::load(tls_dir, &[tls_dir.join(pki::CRL_FILE)])?;
    let config = zorgnet_hub::HubConfig {
        data_dir: data.join(HUB_DIR),
        postgres: None,
        allow_insecure_endpoints: true,
        client_tls: Some(tls.client.clone()),
    };
    let hub = tokio::task::spawn_blocking(move || zorgnet_hub::Hub::open(&config))
        .await?
        .context("open the hub")?;
    hub.publish_revocations(tls.verifier.clone());
    tokio::spawn(tls.verifier.clone().keep_fresh(
        zorgnet_trust::tls::CrlSource::File(tls_dir.join(pki::CRL_FILE)),
        CRL_REFRESH,
        None,
    ));
    hub.serving_at(listener.local_addr()?);
    hub.admit_citizen_portal(PORTAL_URA);
    // The tasks run as long as the process; their handles are not needed.
    drop(hub.spawn_addressing_consumer(ADDRESS_BOOK_SYNC));
    drop(hub.spawn_audit_checkpoints());
    let router = hub.router(url);
    servers.spawn(crate::serve_router(
        listener,
        router,
        Some((tls.server, tls.verifier)),
    ));
    Ok(hub.admin_key_path().to_path_buf())
}

/// The operator's HTTPS client: trusts the demo CA and shows the hub's certificate.
pub(crate) fn operator_client(hub_tls: &Path) -> Result<reqwest::Client> {
    let credentials = zorgnet_trust::tls::Credentials::load(hub_tls)
        .with_context(|| format!("read the credentials in {}", hub_tls.display()))?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(zorgnet_trust::tls::client_config(&credentials)?)
        .timeout(Duration::from_secs(30))
        .build()
        .context("the operator's HTTP client")
}

/// Waits until the hub answers.
async fn wait_for_hub(client: &reqwest::Client, hub: &str) -> Result<()> {
    let deadline = Instant::now() + HUB_START_TIMEOUT;
    loop {
        match client.get(format!("{hub}/health")).send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Ok(response) => anyhow::bail!("the hub answers {}", response.status()),
            Err(error) => return Err(error).context("the hub does not answer"),
        }
    }
}

/// Registers `organisation` at the hub at first start and keeps its API key in its data
/// directory (mode 0600); later starts read the key.
pub(crate) async fn register_organisation(
    client: &reqwest::Client,
    hub: &str,
    admin_key: &str,
    dir: &Path,
    ura: &str,
    name: &str,
) -> Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join(HUB_KEY_FILE);
    if path.exists() {
        let key =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        return Ok(key.trim().to_string());
    }
    let known = client
        .get(format!("{hub}/registry/organisations/{ura}"))
        .bearer_auth(admin_key)
        .send()
        .await?;
    let issued = if known.status().is_success() {
        client
            .post(format!("{hub}/registry/organisations/{ura}/key"))
            .bearer_auth(admin_key)
            .send()
            .await?
    } else {
        client
            .post(format!("{hub}/registry/organisations"))
            .bearer_auth(admin_key)
            .json(&json!({"ura": ura, "name": name}))
            .send()
            .await?
    };
    let status = issued.status();
    let body: Value = issued.json().await.unwrap_or_default();
    let key = body["api_key"]
        .as_str()
        .with_context(|| format!("register {name} at the hub: {status} {body}"))?
        .to_string();
    zorgnet_trust::secret::read_or_create(&path, || key.clone())
        .with_context(|| format!("write {}", path.display()))?;
    Ok(key)
}

/// Puts a demo professional in the hub's professional register.
async fn register_professional(
    client: &reqwest::Client,
    hub: &str,
    admin_key: &str,
    professional: &Professional,
) -> Result<()> {
    let organisation = organisation(professional.organisation);
    let response = client
        .put(format!("{hub}/professionals/{}", professional.uzi))
        .bearer_auth(admin_key)
        .json(&json!({
            "name": professional.name,
            "roles": [{"ura": organisation.ura, "role": professional.role}],
        }))
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "register {} at the hub: {}",
        professional.name,
        response.status()
    );
    Ok(())
}

/// A node's OpenID providers in the demo: the development provider, for its own staff
/// (tokens of its organisation's staff client only) and for citizens (tokens of the
/// portal), reached over TLS with the demo CA.
fn node_oidc(issuer: &str, ura: &str, tls_dir: &Path) -> Result<zorgnet_node::authn::NodeOidc> {
    use zorgnet_trust::oidc::{OidcConfig, OidcVerifier};
    let tls = crate::client_config_trusting(&tls_dir.join(pki::CA_CERTIFICATE_FILE))?;
    let verifier = |audience: String| {
        OidcVerifier::with_tls(
            OidcConfig {
                issuer: issuer.to_string(),
                audience,
            },
            Some(tls.clone()),
        )
        .map(std::sync::Arc::new)
    };
    Ok(zorgnet_node::authn::NodeOidc {
        staff: Some(verifier(staff_client_id(ura))?),
        citizens: Some(verifier(PORTAL_CLIENT_ID.into())?),
    })
}

/// Whether every node's store is empty: the first start.
async fn stores_empty(stores: &[(Store, std::sync::Arc<tokio::sync::Notify>)]) -> Result<bool> {
    for (store, _) in stores {
        let held: i64 = store.counts().await?.iter().map(|(_, n)| n).sum();
        if held > 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Who holds what of the synthetic data: the kind of each directory Organization, and the
/// Organization of each Practitioner.
struct Holders {
    organisations: HashMap<String, Care>,
    practitioners: HashMap<String, String>,
}

impl Holders {
    fn of(generator: &zorgnet_synth::Generator) -> Holders {
        let mut organisations = HashMap::new();
        let mut practitioners = HashMap::new();
        for resource in generator.directory_resources() {
            let id = resource["id"].as_str().unwrap_or_default();
            match resource["resourceType"].as_str() {
                Some("Organization") => {
                    // Nictiz' organisation types: V6 hospital, J8 pharmacy, R5 nursing home.
                    let care = match resource["type"][0]["coding"][0]["code"].as_str() {
                        Some("V6") => Care::Hospital,
                        Some("J8") => Care::Pharmacy,
                        Some("R5") => Care::NursingHome,
                        _ => Care::GeneralPractice,
                    };
                    organisations.insert(format!("Organization/{id}"), care);
                }
                Some("PractitionerRole") => {
                    if let (Some(practitioner), Some(organisation)) = (
                        resource["practitioner"]["reference"].as_str(),
                        resource["organization"]["reference"].as_str(),
                    ) {
                        practitioners.insert(practitioner.to_string(), organisation.to_string());
                    }
                }
                _ => {}
            }
        }
        Holders {
            organisations,
            practitioners,
        }
    }

    /// The kind of organisation that holds `resource`: the first organisation it names
    /// (directly or through a practitioner) decides; the GP holds what names none.
    fn care_of(&self, resource: &Value) -> Care {
        let mut references = Vec::new();
        references_in(resource, &mut references);
        references
            .iter()
            .find_map(|reference| {
                let organisation = self
                    .practitioners
                    .get(*reference)
                    .map(String::as_str)
                    .unwrap_or(reference);
                self.organisations.get(organisation).copied()
            })
            .unwrap_or(Care::GeneralPractice)
    }

    /// A patient's resources by the organisation that holds them; each holder also gets the
    /// Patient. Everything of a patient in the Caribbean Netherlands lies at the island clinic.
    fn split(&self, resources: Vec<Value>) -> HashMap<Care, Vec<Value>> {
        let mut held: HashMap<Care, Vec<Value>> = HashMap::new();
        let Some((patient, rest)) = resources.split_first() else {
            return held;
        };
        let island = patient["identifier"].as_array().is_some_and(|identifiers| {
            identifiers
                .iter()
                .any(|identifier| identifier["system"] == zorgnet_synth::SEDULA_SYSTEM)
        });
        for resource in rest {
            let care = if island {
                Care::Island
            } else {
                self.care_of(resource)
            };
            held.entry(care)
                .or_insert_with(|| vec![patient.clone()])
                .push(resource.clone());
        }
        held.entry(if island {
            Care::Island
        } else {
            Care::GeneralPractice
        })
        .or_insert_with(|| vec![patient.clone()]);
        held
    }
}

/// Every `reference` string in `value`, in document order.
fn references_in<'a>(value: &'a Value, into: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                match (key.as_str(), item) {
                    ("reference", Value::String(reference)) => into.push(reference),
                    _ => references_in(item, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| references_in(item, into)),
        _ => {}
    }
}

/// The first start: generates the patients and loads each organisation's share into its
/// node's store (through the outbox's hook, so that the registrations follow), with a
/// progress bar.
async fn load(
    generator: &zorgnet_synth::Generator,
    stores: &[(Store, std::sync::Arc<tokio::sync::Notify>)],
) -> Result<()> {
    let patients = generator.config().patients;
    println!("first start: generating and loading {patients} synthetic patients");
    let progress = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::new(patients as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    progress.set_style(indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} patients, {msg} ({eta} left)",
    )?);
    let holders = Holders::of(generator);
    let mut stored = 0;
    let mut failures = Vec::new();
    for start in (0..patients).step_by(LOAD_CHUNK_PATIENTS) {
        let end = (start + LOAD_CHUNK_PATIENTS).min(patients);
        let mut shares: HashMap<Care, Vec<Value>> = HashMap::new();
        for index in start..end {
            for (care, resources) in holders.split(generator.patient_resources(index)) {
                shares.entry(care).or_default().extend(resources);
            }
        }
        let mut loads = tokio::task::JoinSet::new();
        for (organisation, (store, _)) in ORGANISATIONS.iter().zip(stores) {
            if let Some(share) = shares.remove(&organisation.care) {
                let store = store.clone();
                loads.spawn(async move {
                    import::load_into_store(&store, share.into_iter(), None).await
                });
            }
        }
        while let Some(report) = loads.join_next().await {
            let report = report??;
            stored += report.stored;
            failures.extend(report.failures);
        }
        progress.set_position(end as u64);
        progress.set_message(format!("{stored} resources"));
    }
    progress.finish_and_clear();
    println!(
        "loaded {stored} resources into {} nodes ({} refused)",
        ORGANISATIONS.len(),
        failures.len()
    );
    for (place, why) in failures.iter().take(5) {
        println!("  refused {place}: {why}");
    }
    Ok(())
}

/// The demo's people: citizens with a BSN whose data lies at several organisations, and the
/// professionals. Answers the users and, per citizen, the organisations holding their data.
fn demo_users(
    generator: &zorgnet_synth::Generator,
    without_bsn: Option<DemoUser>,
) -> Result<(Vec<DemoUser>, Vec<Vec<&'static str>>)> {
    let holders = Holders::of(generator);
    let mut users = Vec::new();
    let mut sources = Vec::new();
    for index in 0..CITIZEN_CANDIDATES.min(generator.config().patients) {
        if users.len() == DEMO_CITIZENS {
            break;
        }
        let resources = generator.patient_resources(index);
        let Some(patient) = resources.first() else {
            continue;
        };
        let Some(bsn) = patient["identifier"].as_array().and_then(|identifiers| {
            identifiers
                .iter()
                .find(|identifier| identifier["system"] == zorgnet_synth::BSN_SYSTEM)
                .and_then(|identifier| identifier["value"].as_str())
        }) else {
            continue;
        };
        let name = patient["name"][0]["text"]
            .as_str()
            .or_else(|| patient["name"][0]["family"].as_str())
            .unwrap_or("burger")
            .to_string();
        let bsn = bsn.to_string();
        let held: BTreeSet<Care> = holders.split(resources).into_keys().collect();
        if held.len() < CITIZEN_MIN_SOURCES {
            continue;
        }
        users.push(DemoUser::citizen(
            &format!("burger-{}", users.len() + 1),
            &name,
            &bsn,
        ));
        sources.push(
            ORGANISATIONS
                .iter()
                .filter(|organisation| held.contains(&organisation.care))
                .map(|organisation| organisation.name)
                .collect(),
        );
    }
    if let Some(user) = without_bsn {
        users.push(user);
        sources.push(vec![organisation_of(Care::Island).name]);
    }
    users.extend(
        PROFESSIONALS
            .iter()
            .map(|p| DemoUser::professional(p.subject, p.name, p.uzi)),
    );
    Ok((users, sources))
}

/// The demo's organisation of a kind of care.
fn organisation_of(care: Care) -> &'static Organisation {
    ORGANISATIONS
        .iter()
        .find(|organisation| organisation.care == care)
        .expect("the demo has an organisation of every kind of care")
}

/// The demo login of a citizen without a BSN.
const ISLAND_CITIZEN_LOGIN: &str = "burger-saba";
/// Patients looked at when choosing the citizen without a BSN (island patients are a few
/// percent of all).
const ISLAND_CANDIDATES: usize = 2_000;

/// A patient of the island clinic known only by a sédula number and birth date, with data.
struct IslandCitizen {
    name: String,
    sedula: String,
    birth_date: String,
}

impl IslandCitizen {
    /// Their demo login: the zorgverificatienummer the hub derives for them; none when the
    /// hub derives none.
    async fn user(&self, hub: &zorgnet_hub_client::HubClient) -> Result<Option<DemoUser>> {
        let person = hub
            .zvn_of_sedula(&self.sedula, &self.birth_date)
            .await
            .context("ask the hub for the island citizen's zorgverificatienummer")?;
        Ok(match person {
            Some(zorgnet_pseudonym::PersonalId::Zvn(zvn)) => Some(DemoUser {
                subject: ISLAND_CITIZEN_LOGIN.into(),
                name: self.name.clone(),
                bsn: None,
                zvn: Some(zvn.as_str().to_string()),
                uzi: None,
            }),
            _ => None,
        })
    }
}

/// The first generated patient without a BSN, with a sédula number, a birth date and data.
fn island_citizen(generator: &zorgnet_synth::Generator) -> Option<IslandCitizen> {
    (0..ISLAND_CANDIDATES.min(generator.config().patients)).find_map(|index| {
        let resources = generator.patient_resources(index);
        let patient = resources.first().filter(|_| resources.len() > 1)?;
        let identifier = |system: &str| {
            patient["identifier"]
                .as_array()?
                .iter()
                .find(|identifier| identifier["system"] == system)?["value"]
                .as_str()
                .map(String::from)
        };
        if identifier(zorgnet_synth::BSN_SYSTEM).is_some() {
            return None;
        }
        Some(IslandCitizen {
            name: patient["name"][0]["text"]
                .as_str()
                .or_else(|| patient["name"][0]["family"].as_str())
                .unwrap_or("burger")
                .to_string(),
            sedula: identifier(zorgnet_synth::SEDULA_SYSTEM)?,
            birth_date: patient["birthDate"].as_str()?.to_string(),
        })
    })
}

/// Prints one line per part, the demo logins and how to get a token.
fn announce(
    args: &DemoArgs,
    network: &NetworkFile,
    users: &[DemoUser],
    citizens: &[Vec<&'static str>],
    ca: &Path,
    started: Instant,
) {
    // A supervisor may close stdout; the demo must keep serving, so print errors are ignored.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "zorgnet demo network ready in {:.1} s (data in {}; the demo CA is {})",
        started.elapsed().as_secs_f64(),
        args.data.display(),
        ca.display()
    );
    let _ = writeln!(out, "portal: {}", network.portal);
    let _ = writeln!(out, "viewer (professionals): {}", viewer_url(network));
    let _ = writeln!(
        out,
        "identity provider (for demos only; anyone may log in as anyone listed): {}",
        network.issuer
    );
    let _ = writeln!(out, "hub: {}", network.hub);
    for node in &network.nodes {
        let _ = writeln!(
            out,
            "node {} (URA {}): {}",
            node.name, node.ura, node.fhir_base
        );
    }
    let _ = writeln!(out, "demo logins:");
    for (user, sources) in users.iter().zip(citizens) {
        let number = match (&user.bsn, &user.zvn) {
            (Some(bsn), _) => format!("BSN {bsn}"),
            (None, Some(zvn)) => format!("no BSN, zorgverificatienummer {zvn}"),
            (None, None) => String::new(),
        };
        let _ = writeln!(
            out,
            "  {:<16} {:<32} citizen, {number}; data at {}",
            user.subject,
            user.name,
            sources.join(", ")
        );
    }
    for professional in &PROFESSIONALS {
        let _ = writeln!(
            out,
            "  {:<16} {:<32} UZI {}, role {} at {}",
            professional.subject,
            professional.name,
            professional.uzi,
            professional.role,
            organisation(professional.organisation).name
        );
    }
    let _ = writeln!(
        out,
        "apps (SMART on FHIR, public client with PKCE): client_id {DEMO_APP_CLIENT_ID}, \
         redirect {DEMO_APP_REDIRECT_URI} on any port, aud {}fhir",
        network.portal
    );
    let _ = writeln!(
        out,
        "  a demo user's access token: zorgnet demo --data {} --token {}",
        args.data.display(),
        users[0].subject
    );
    let _ = out.flush();
}
