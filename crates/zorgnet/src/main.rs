//! The `zorgnet` command: run a node, a demo node with synthetic data, generate data, import,
//! and ask a running node where a patient's data is and fetch it.
//!
//! This is the binary edge: it parses arguments and configuration, opens storage, and turns
//! errors into messages (`anyhow`). The logic lives in the library crates.

mod audit_cli;
mod bench;
mod bench_audit;
mod bench_demo;
mod bench_hub;
mod bench_security;
mod ca_cli;
mod config;
mod consent_cli;
mod demo;
mod export_cli;
mod import;
mod network_cli;
mod professional_cli;
mod registry_cli;
mod relation_cli;

/// mimalloc instead of glibc's allocator: request handling allocates from many threads, and
/// glibc's arenas showed up as lock contention and a tenth of CPU time under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::io::Write as _;
use std::path::PathBuf;
use zorgnet_fhir::search::SearchRegistry;
use zorgnet_node::NodeIdentity;
use zorgnet_store::Store;
use zorgnet_trust::pki;

#[derive(Parser)]
#[command(
    name = "zorgnet",
    version,
    about = "zorgnet: a FHIR R4 node for the Dutch health-information network"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// For commands that call a node or a hub over HTTPS: the network CA's certificate
    /// (`ca.pem`) to verify them by. Without it, plain-http URLs only.
    #[arg(long, global = true, env = "ZORGNET_CACERT")]
    cacert: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: the FHIR R4 server of one care organisation (`node status`: its outbox).
    Node(Box<NodeCommand>),
    /// Run a hub: pseudonym service, referral index, consent register, addressing, registry.
    Hub(config::HubArgs),
    /// Run a node on a local SQLite database, filled with synthetic Dutch patients on first start.
    Demo(demo::DemoArgs),
    /// Write deterministic synthetic Dutch FHIR data (NDJSON, or transaction Bundles for .json).
    Generate(GenerateArgs),
    /// Load NDJSON or Bundle files into a node (over HTTP) or straight into its database.
    Import(import::ImportArgs),
    /// Export a running node's data as NDJSON files (FHIR Bulk Data `$export`).
    Export(export_cli::ExportArgs),
    /// Ask a running node which organisations hold a patient's data, and their FHIR endpoints.
    Localize(network_cli::LocalizeArgs),
    /// Have a running node fetch a patient's data from every organisation holding it, as one Bundle.
    Fetch(network_cli::FetchArgs),
    /// Register an organisation at the hub (the operator), or list the registered ones.
    Organisation(registry_cli::OrganisationArgs),
    /// Keep the hub's professional register (the operator): UZI number, roles per organisation.
    Professional(professional_cli::ProfessionalArgs),
    /// Record, list or revoke a person's consent directives at the hub (opt-outs, consent).
    Consent(consent_cli::ConsentArgs),
    /// Register, list or end the organisation's treatment relations at the hub.
    Relation(relation_cli::RelationArgs),
    /// The network's certificate authority: create it, issue and revoke certificates, sign the CRL.
    Ca(ca_cli::CaArgs),
    /// The access log: verify a node's log where it lies.
    Audit(audit_cli::AuditArgs),
    /// Measure import, read, search and `$everything` on synthetic data (needs `wrk`).
    Bench(bench::BenchArgs),
    /// Measure the hub's referral index and pseudonym service on bulk-loaded registrations (needs `wrk`).
    BenchHub(bench_hub::BenchHubArgs),
    /// Measure the access log: appends, size on disk, inclusion proofs and verification.
    BenchAudit(bench_audit::BenchAuditArgs),
    /// Measure what security costs the node: reads and searches over mTLS with tokens and
    /// policy against the same store without, a new mTLS connection's server CPU.
    BenchSecurity(bench_security::BenchSecurityArgs),
    /// Measure the demo network as its users meet it: its starts, the citizen's overview, the
    /// professional's merged view and the emergency view, and what a source that does not
    /// answer costs (runs `zorgnet demo`, and a sixth organisation's `zorgnet node` it stops).
    BenchDemo(bench_demo::BenchDemoArgs),
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct NodeCommand {
    #[command(subcommand)]
    action: Option<NodeAction>,
    #[command(flatten)]
    args: config::NodeArgs,
}

#[derive(Subcommand)]
enum NodeAction {
    /// Show the node's outbox: registrations waiting for the hub, and refused ones. Reads an
    /// existing database and never creates one.
    Status(config::NodeStorageArgs),
}

#[derive(Args)]
struct GenerateArgs {
    /// Number of patients.
    #[arg(long)]
    patients: usize,
    /// Seed: the same seed gives the same data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output file: `.ndjson` for one resource per line, `.json` for transaction Bundles.
    #[arg(long)]
    out: PathBuf,
}

/// The folder of a node's data directory that holds its bulk exports' files while they may
/// be fetched.
const EXPORT_DIR: &str = "exports";

/// Log filter of the services (`node`, `hub`, `demo`) when `RUST_LOG` says nothing.
const SERVICE_LOG_FILTER: &str = "info,tower_http=warn";
/// Log filter of the one-off bulk commands when `RUST_LOG` says nothing: they report on
/// stdout, and the servers they run in-process would otherwise log an INFO line per
/// organisation registered (`bench-hub`: thousands) or per schema migration.
const BULK_LOG_FILTER: &str = "warn";

/// Logs go to stderr, coloured only when stderr is a terminal and `NO_COLOR` is unset or
/// empty (<https://no-color.org>): a log file or a journal must not fill with escape codes.
fn init_logging(command: &Command) {
    use std::io::IsTerminal as _;
    let default_filter = match command {
        Command::Node(_) | Command::Hub(_) | Command::Demo(_) => SERVICE_LOG_FILTER,
        Command::Generate(_)
        | Command::Import(_)
        | Command::Export(_)
        | Command::Localize(_)
        | Command::Fetch(_)
        | Command::Bench(_)
        | Command::BenchHub(_)
        | Command::BenchAudit(_)
        | Command::BenchSecurity(_)
        | Command::BenchDemo(_)
        | Command::Consent(_)
        | Command::Relation(_)
        | Command::Organisation(_)
        | Command::Professional(_)
        | Command::Ca(_)
        | Command::Audit(_) => BULK_LOG_FILTER,
    };
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter))
                // At debug, tokio-postgres logs every statement's parameters: BSNs and whole
                // resources. Capped whatever RUST_LOG says.
                .add_directive(
                    "tokio_postgres=info"
                        .parse()
                        .expect("a constant, valid directive"),
                ),
        )
        .with_ansi(std::io::stderr().is_terminal() && !no_color)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    init_logging(&cli.command);
    // Settings with defaults need to know whether a value came from clap's default (a
    // settings file may override it) or from the command line or environment.
    let (_, command_matches) = matches.subcommand().context("no command given")?;
    if let Some(cacert) = &cli.cacert {
        let config = client_config_trusting(cacert)?;
        let _ = CLIENT_TLS.set(config);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Node(node) => match node.action {
                Some(NodeAction::Status(args)) => {
                    let (_, status_matches) = command_matches
                        .subcommand()
                        .context("no node subcommand given")?;
                    node_status(config::NodeStorage::resolve(args, status_matches)?).await
                }
                None => run_node(config::NodeSettings::resolve(node.args, command_matches)?).await,
            },
            Command::Hub(args) => {
                run_hub(config::HubSettings::resolve(args, command_matches)?).await
            }
            Command::Demo(args) => demo::run(args).await,
            Command::Generate(args) => generate(args),
            Command::Import(args) => import::run(args).await,
            Command::Export(args) => export_cli::run(args).await,
            Command::Localize(args) => network_cli::localize(args).await,
            Command::Consent(args) => consent_cli::run(args).await,
            Command::Relation(args) => relation_cli::run(args).await,
            Command::Organisation(args) => registry_cli::run(args).await,
            Command::Professional(args) => professional_cli::run(args).await,
            Command::Ca(args) => ca_cli::run(args),
            Command::Audit(args) => audit_cli::run(args).await,
            Command::Fetch(args) => network_cli::fetch(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::BenchHub(args) => bench_hub::run(args).await,
            Command::BenchAudit(args) => bench_audit::run(args).await,
            Command::BenchSecurity(args) => bench_security::run(args).await,
            Command::BenchDemo(args) => bench_demo::run(args).await,
        }
    })
}

/// A TLS client configuration that verifies servers by the CA certificate in `path` (PEM)
/// alone and shows no certificate of its own.
fn client_config_trusting(path: &std::path::Path) -> Result<rustls::ClientConfig> {
    let pem = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let anchor = zorgnet_trust::tls::read_certificates(&pem)
        .with_context(|| format!("no certificate in {}", path.display()))?
        .remove(0);
    zorgnet_trust::tls::anchor_only_client_config(&anchor)
        .with_context(|| format!("a TLS client configuration trusting {}", path.display()))
}

/// The TLS client configuration of the one-off commands: the `--cacert` trust anchor.
static CLIENT_TLS: std::sync::OnceLock<rustls::ClientConfig> = std::sync::OnceLock::new();

/// An HTTP client builder for the one-off commands: it verifies HTTPS servers by the
/// `--cacert` trust anchor alone, when one was given.
fn client_builder() -> reqwest::ClientBuilder {
    match CLIENT_TLS.get() {
        Some(tls) => reqwest::Client::builder().tls_backend_preconfigured(tls.clone()),
        None => reqwest::Client::builder(),
    }
}

/// A client of the hub for the one-off commands, with `key`, over the `--cacert` trust
/// anchor.
fn hub_client(
    base: &str,
    key: &str,
) -> Result<zorgnet_node::hub_client::HubClient, zorgnet_node::hub_client::HubClientError> {
    zorgnet_node::hub_client::HubClient::with_tls(base, key, CLIENT_TLS.get().cloned())
}

/// An HTTP client for a node's own systems: it sends the node key, when there is one, with
/// every request.
fn node_client(builder: reqwest::ClientBuilder, key: Option<&str>) -> Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = key {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", key.trim()))
            .context("the node key is not a valid header value")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    builder
        .default_headers(headers)
        .build()
        .context("set up the HTTP client")
}

/// The node's SQLite file in its data directory.
const NODE_DATABASE_FILE: &str = "node.sqlite";

/// Opens the store a node's settings name. Opening connects and migrates with blocking
/// clients, so it runs on the blocking pool, never on an async worker thread.
async fn open_store(data: &std::path::Path, postgres: Option<&str>) -> Result<Store> {
    let data = data.to_path_buf();
    let postgres = postgres.map(String::from);
    tokio::task::spawn_blocking(move || {
        let registry = SearchRegistry::r4();
        match postgres {
            Some(url) => Store::open_postgres(&url, registry).context("open PostgreSQL storage"),
            None => {
                let path = data.join(NODE_DATABASE_FILE);
                Store::open_sqlite(&path, registry)
                    .with_context(|| format!("open SQLite storage at {}", path.display()))
            }
        }
    })
    .await?
}

/// Opens a node's store with the outbox's write hook installed, as every writer of a node's
/// data must (the node itself and `zorgnet import --data`/`--postgres`): a write then records
/// its referral-index registrations in its own transaction. Returns the signal the hook
/// raises when it queued something, for the delivery task.
async fn open_node_store(
    data: &std::path::Path,
    postgres: Option<&str>,
) -> Result<(Store, std::sync::Arc<tokio::sync::Notify>)> {
    let store = open_store(data, postgres).await?;
    let hooked = store.clone();
    let wake = tokio::task::spawn_blocking(move || zorgnet_node::outbox::install(&hooked))
        .await?
        .context("set up the outbox")?;
    Ok((store, wake))
}

async fn run_node(settings: config::NodeSettings) -> Result<()> {
    let tls = match &settings.tls {
        Some(dir) => Some(ServiceTls::load(
            dir,
            &[settings.data.join(CACHED_CRL_FILE), dir.join(pki::CRL_FILE)],
        )?),
        None if settings.insecure_dev => None,
        None => anyhow::bail!(
            "a node serves HTTPS: give --tls DIR (the organisation's credentials from `zorgnet ca issue`), or --insecure-dev for plain HTTP on loopback during development"
        ),
    };
    let local = local_clients(&settings.data, &settings.listen, settings.insecure_dev)?;
    let oidc = node_oidc(&settings)?;
    let monitor = zorgnet_audit::Monitor::new(&settings.monitor)
        .context("the access log's monitoring rules")?;
    let profiles = match settings.profiles.clone() {
        Some(dir) => Some(
            tokio::task::spawn_blocking(move || {
                zorgnet_profiles::ProfileSet::load_dir(&dir)
                    .with_context(|| format!("load the profiles in {}", dir.display()))
            })
            .await??,
        ),
        None => None,
    };
    let (store, wake) = open_node_store(&settings.data, settings.postgres.as_deref()).await?;
    let hub = match settings.hub {
        Some((url, key)) => Some(zorgnet_node::hub_client::HubClient::with_tls(
            &url,
            &key,
            tls.as_ref().map(|tls| tls.client.clone()),
        )?),
        None => {
            tracing::info!("no --hub: registrations wait in the outbox");
            None
        }
    };
    if let (Some(tls), Some(hub)) = (&tls, &hub) {
        let source = zorgnet_trust::tls::CrlSource::Hub {
            client: reqwest::Client::builder()
                .tls_backend_preconfigured(tls.client.clone())
                .timeout(zorgnet_node::hub_client::HUB_REQUEST_TIMEOUT)
                .build()
                .context("set up the revocation list's client")?,
            url: format!("{}/trust/crl", hub.base()),
        };
        let cache = settings.data.join(CACHED_CRL_FILE);
        if let Err(error) = tls.verifier.refresh_crl(&source, Some(&cache)).await {
            tracing::warn!(%error, "could not fetch the hub's revocation list at start; using the one on disk");
        }
        tokio::spawn(
            tls.verifier
                .clone()
                .keep_fresh(source, settings.crl_refresh, Some(cache)),
        );
    }
    let parts = NodeParts {
        store,
        data: settings.data,
        identity: NodeIdentity {
            ura: settings.ura,
            name: settings.name,
        },
        hub: hub.map(|client| (client, wake, settings.access)),
        address_book_sync: ADDRESS_BOOK_SYNC_INTERVAL,
        local,
        tls,
        oidc,
        monitor,
        profiles,
        enforce_profiles: settings.enforce_profiles,
    };
    serve(parts, &settings.listen, settings.base_url).await
}

/// The OpenID providers the node's settings name.
fn node_oidc(settings: &config::NodeSettings) -> Result<zorgnet_node::authn::NodeOidc> {
    use zorgnet_trust::oidc::{OidcConfig, OidcVerifier};
    let tls = match &settings.oidc_cacert {
        Some(path) => Some(client_config_trusting(path)?),
        None => None,
    };
    let verifier = |provider: &Option<(String, String)>, who: &str| {
        provider
            .as_ref()
            .map(|(issuer, audience)| {
                OidcVerifier::with_tls(
                    OidcConfig {
                        issuer: issuer.clone(),
                        audience: audience.clone(),
                    },
                    tls.clone(),
                )
                .map(std::sync::Arc::new)
                .with_context(|| format!("the {who} OpenID provider {issuer}"))
            })
            .transpose()
    };
    Ok(zorgnet_node::authn::NodeOidc {
        staff: verifier(&settings.staff_oidc, "staff")?,
        citizens: verifier(&settings.citizen_oidc, "citizen")?,
    })
}

/// The file in a node's data directory holding the last revocation list it fetched.
const CACHED_CRL_FILE: &str = "crl.pem";

/// A service's mutual TLS: the server configuration it serves with (client certificates
/// optional, verified against the network CA and the revocation list when shown), the
/// client configuration it calls others with (its own certificate), and the verifier whose
/// revocation list is kept fresh.
struct ServiceTls {
    server: std::sync::Arc<rustls::ServerConfig>,
    client: rustls::ClientConfig,
    verifier: zorgnet_trust::tls::ClientVerifier,
    ca_file: PathBuf,
}

impl ServiceTls {
    /// Reads the credentials in `dir` and the newest valid revocation list of `crls`.
    fn load(dir: &std::path::Path, crls: &[PathBuf]) -> Result<ServiceTls> {
        use zorgnet_trust::tls;
        let credentials = tls::Credentials::load(dir)
            .with_context(|| format!("read the TLS credentials in {}", dir.display()))?;
        credentials
            .identity()
            .with_context(|| format!("the certificate in {}", dir.display()))?;
        let mut verifier: Option<tls::ClientVerifier> = None;
        for path in crls.iter().filter(|path| path.exists()) {
            let read = std::fs::read(path)
                .map_err(anyhow::Error::from)
                .and_then(|pem| Ok(tls::read_crl(&pem)?));
            let crl = match read {
                Ok(crl) => crl,
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "ignored an unreadable revocation list");
                    continue;
                }
            };
            let installed = match &verifier {
                Some(current) => current.replace_crl(crl).map(|()| current.clone()),
                None => tls::ClientVerifier::new(
                    &credentials.trust_anchor,
                    crl,
                    tls::ClientAuth::Optional,
                ),
            };
            match installed {
                Ok(installed) => verifier = Some(installed),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "ignored a revocation list")
                }
            }
        }
        let verifier = verifier.with_context(|| {
            format!(
                "no valid revocation list in {}: write one with `zorgnet ca crl --ca CA --out {}`",
                crls.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or "),
                dir.join(pki::CRL_FILE).display()
            )
        })?;
        Ok(ServiceTls {
            server: tls::server_config(&credentials, &verifier)?,
            client: tls::client_config(&credentials)?,
            verifier,
            ca_file: dir.join(pki::CA_CERTIFICATE_FILE),
        })
    }
}

/// Refuses `--insecure-dev` on anything but a loopback address, and announces it.
fn insecure_development(listen: &str, what: &str) -> Result<()> {
    let loopback = listen
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|address| address.ip().is_loopback())
        || listen
            .rsplit_once(':')
            .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost"));
    if !loopback {
        anyhow::bail!(
            "--insecure-dev speaks plain HTTP and is accepted only on a loopback address (127.0.0.1 or [::1]), not on {listen}"
        );
    }
    eprintln!("WARNING: --insecure-dev: {what} For development only; never with real data.");
    tracing::warn!(%listen, "insecure development mode");
    Ok(())
}

/// How the node's own systems authenticate, and the file holding the node key, if any.
struct LocalAccess {
    clients: zorgnet_node::authn::LocalClients,
    key_file: Option<std::path::PathBuf>,
}

/// How the node's own systems authenticate: with the node key in `data` (created at first
/// start), or, with `--insecure-dev` on a loopback address only, without credentials.
fn local_clients(data: &std::path::Path, listen: &str, insecure_dev: bool) -> Result<LocalAccess> {
    if insecure_dev {
        insecure_development(
            listen,
            &format!(
                "plain HTTP, and every request without credentials to {listen} acts as this node's administrator."
            ),
        )?;
        return Ok(LocalAccess {
            clients: zorgnet_node::authn::LocalClients::InsecureDev,
            key_file: None,
        });
    }
    std::fs::create_dir_all(data).with_context(|| format!("create {}", data.display()))?;
    let path = data.join(zorgnet_node::authn::NODE_KEY_FILE);
    let key = zorgnet_trust::secret::read_or_create(&path, || {
        zorgnet_trust::secret::new_key(zorgnet_node::authn::NODE_KEY_PREFIX)
    })
    .with_context(|| format!("read or create the node key {}", path.display()))?;
    Ok(LocalAccess {
        clients: zorgnet_node::authn::LocalClients::key(&key),
        key_file: Some(path),
    })
}

/// How often a node refreshes its copy of the hub's address book.
const ADDRESS_BOOK_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Joins the network: publishes the node's own Organization and Endpoint, delivers the
/// outbox, lists the node as an mCSD update supplier at the hub and keeps the local address
/// book in sync. Everything that talks to the hub runs in the background and retries, so a
/// node starts and serves while the hub is down.
async fn join_network(
    store: &Store,
    identity: &NodeIdentity,
    fhir_base: &str,
    (hub, wake, access): (
        zorgnet_node::hub_client::HubClient,
        std::sync::Arc<tokio::sync::Notify>,
        zorgnet_node::access::AccessConfig,
    ),
    address_book_sync: std::time::Duration,
) -> Result<std::sync::Arc<zorgnet_node::network::Network>> {
    zorgnet_node::addressing::publish_own_entries(store, identity, fhir_base)
        .await
        .context("publish the node's Organization and Endpoint")?;
    tokio::spawn(zorgnet_node::outbox::run_delivery(
        store.clone(),
        hub.clone(),
        wake,
        std::future::pending(),
    ));
    let db = store.database().clone();
    let mut cache =
        tokio::task::spawn_blocking(move || zorgnet_node::addressing::AddressBookCache::open(db))
            .await?
            .context("open the address book cache")?;
    if let Some(tls) = hub.tls() {
        cache = cache
            .with_tls(tls.clone())
            .context("the address book cache's TLS")?;
    }
    let supplier = serde_json::json!({"name": identity.name, "fhir_base_url": fhir_base});
    let supplier_path = format!("/addressing/suppliers/{}", identity.ura);
    let (sync_hub, sync_cache) = (hub.clone(), cache.clone());
    tokio::spawn(async move {
        let mut listed = false;
        loop {
            if !listed {
                match sync_hub.put(&supplier_path, &supplier).await {
                    Ok(_) => listed = true,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not list this node as an mCSD supplier yet")
                    }
                }
            }
            match sync_cache.sync(sync_hub.base(), sync_hub.key()).await {
                Ok(report) => tracing::debug!(
                    stored = report.stored,
                    removed = report.removed,
                    "address book synced"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "address book sync failed; using the cached copy")
                }
            }
            tokio::time::sleep(address_book_sync).await;
        }
    });
    tracing::info!(hub = %hub.base(), "joined the network");
    Ok(std::sync::Arc::new(
        zorgnet_node::network::Network::new(hub, cache)
            .map_err(|e| anyhow::anyhow!("network client: {:?}", e.issues))?
            .with_access(access),
    ))
}

/// A node put together and listening, not yet serving: what `serve` runs, and what
/// `zorgnet demo` runs several of.
struct PreparedNode {
    listener: tokio::net::TcpListener,
    router: axum::Router,
    tls: Option<(
        std::sync::Arc<rustls::ServerConfig>,
        zorgnet_trust::tls::ClientVerifier,
    )>,
}

/// What a node is made of, apart from its listener.
struct NodeParts {
    store: Store,
    data: PathBuf,
    identity: NodeIdentity,
    hub: Option<(
        zorgnet_node::hub_client::HubClient,
        std::sync::Arc<tokio::sync::Notify>,
        zorgnet_node::access::AccessConfig,
    )>,
    /// How often the node refreshes its copy of the hub's address book.
    address_book_sync: std::time::Duration,
    local: LocalAccess,
    tls: Option<ServiceTls>,
    oidc: zorgnet_node::authn::NodeOidc,
    monitor: zorgnet_audit::Monitor,
    /// Profiles loaded at start (`--profiles`), and whether writes must conform to those
    /// they declare (`--enforce-profiles`).
    profiles: Option<zorgnet_profiles::ProfileSet>,
    enforce_profiles: bool,
}

/// Serves a node at `listen` until Ctrl-C, announcing its base URL.
async fn serve(parts: NodeParts, listen: &str, base_url: Option<String>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listen on {listen}"))?;
    let address = listener.local_addr()?;
    let scheme = if parts.tls.is_some() { "https" } else { "http" };
    let shown_base = base_url.unwrap_or_else(|| format!("{scheme}://{address}/fhir"));
    tracing::info!(%address, ura = %parts.identity.ura, "node listening");
    // A supervisor may close stdout; the node must keep serving, so print errors are ignored.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "zorgnet node '{}' (URA {}) serving FHIR R4 at {shown_base}",
        parts.identity.name, parts.identity.ura
    );
    let cacert = match &parts.tls {
        Some(tls) => format!(" --cacert {}", tls.ca_file.display()),
        None => String::new(),
    };
    let _ = writeln!(
        stdout,
        "  try: curl{cacert} {shown_base}/metadata   |   curl{cacert}{} '{shown_base}/Patient?_count=5'",
        match &parts.local.key_file {
            None => String::new(),
            Some(path) => format!(" -H \"Authorization: Bearer $(cat {})\"", path.display()),
        }
    );
    let _ = stdout.flush();
    drop(stdout);
    let node = prepare_node(parts, listener, shown_base).await?;
    serve_router(node.listener, node.router, node.tls).await
}

/// Joins the network (when there is a hub), opens the access log and starts its
/// checkpoints, and builds the node's router with every layer, for `listener` at `base`.
async fn prepare_node(
    parts: NodeParts,
    listener: tokio::net::TcpListener,
    base: String,
) -> Result<PreparedNode> {
    let NodeParts {
        store,
        data,
        identity,
        hub,
        address_book_sync,
        local,
        tls,
        oidc,
        monitor,
        profiles,
        enforce_profiles,
    } = parts;
    let checkpoint_hub = hub.as_ref().map(|(client, _, _)| client.clone());
    let network = match hub {
        Some((client, wake, access)) => Some(
            join_network(
                &store,
                &identity,
                &base,
                (client, wake, access),
                address_book_sync,
            )
            .await?,
        ),
        None => None,
    };
    let logged = store.clone();
    let exports = data.join(EXPORT_DIR);

    let (log, audit, signer) =
        tokio::task::spawn_blocking(move || zorgnet_node::audit::open(&logged, &data))
            .await?
            .context("open the access log")?;
    tokio::spawn(zorgnet_node::checkpoints::keep_checkpoints(
        log.clone(),
        signer,
        identity.ura.clone(),
        checkpoint_hub,
    ));
    let router = zorgnet_node::router_exporting(
        store,
        identity,
        base,
        network,
        local.clients,
        oidc,
        audit,
        zorgnet_node::FhirOptions {
            export_dir: Some(exports),
            profiles,
            enforce_profiles,
            subscriptions: true,
        },
    );
    let router = zorgnet_node::audit::monitored(router, monitor);
    let router = zorgnet_node::audit_api::served(router, log);
    Ok(PreparedNode {
        listener,
        router,
        tls: tls.map(|tls| (tls.server, tls.verifier)),
    })
}

/// Serves `router` until Ctrl-C: over mutual TLS with `tls` (checking every request against
/// the verifier's current revocation list), else plain HTTP.
async fn serve_router(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    tls: Option<(
        std::sync::Arc<rustls::ServerConfig>,
        zorgnet_trust::tls::ClientVerifier,
    )>,
) -> Result<()> {
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match tls {
        Some((tls, verifier)) => {
            zorgnet_trust::tls::serve(listener, tls, Some(verifier), router, shutdown)
                .await
                .context("serve HTTPS")
        }
        None => zorgnet_node::serve(listener, router, shutdown)
            .await
            .context("serve HTTP"),
    }
}

/// Reads a node's outbox. Opening checks, without writing, that the database is there and
/// holds the outbox's tables: a mistyped `--data` must not create an empty database and
/// report "0 pending".
async fn node_status(storage: config::NodeStorage) -> Result<()> {
    let db = tokio::task::spawn_blocking(move || {
        let migrations = zorgnet_node::outbox::MIGRATIONS;
        let (opened, place) = match &storage.postgres {
            Some(url) => (
                zorgnet_db::Database::open_existing_postgres(url, migrations),
                "the PostgreSQL database given (--postgres)".to_string(),
            ),
            None => (
                zorgnet_db::Database::open_existing_sqlite(
                    &storage.data.join(NODE_DATABASE_FILE),
                    migrations,
                ),
                format!("{} (is --data right?)", storage.data.display()),
            ),
        };
        opened.map_err(|e| match e {
            zorgnet_db::DbError::Missing(_) => anyhow::anyhow!(e).context(format!(
                "no node database in {place}; `node status` never creates one"
            )),
            other => anyhow::anyhow!(other).context(format!("open the node database in {place}")),
        })
    })
    .await??;
    let status = tokio::task::spawn_blocking(move || zorgnet_node::outbox::status(&db))
        .await?
        .context("read the outbox")?;
    println!(
        "outbox: {} pending, {} refused by the hub",
        status.pending, status.failed
    );
    if let Some(oldest) = status.oldest_pending_ms {
        println!(
            "oldest pending since {}",
            zorgnet_fhir::datetime::format_instant(oldest)
        );
    }
    Ok(())
}

async fn run_hub(settings: config::HubSettings) -> Result<()> {
    let tls = match &settings.tls {
        Some(dir) => Some(ServiceTls::load(dir, &[dir.join(pki::CRL_FILE)])?),
        None if settings.insecure_dev => {
            insecure_development(
                &settings.listen,
                "plain HTTP, and the address book accepts plain-http and local addresses.",
            )?;
            None
        }
        None => anyhow::bail!(
            "a hub serves HTTPS: give --tls DIR (its credentials from `zorgnet ca issue-service` and the CA's crl.pem), or --insecure-dev for plain HTTP on loopback during development"
        ),
    };
    let allow_insecure_endpoints = settings.allow_insecure_endpoints || settings.insecure_dev;
    let config = zorgnet_hub::HubConfig {
        data_dir: settings.data.clone(),
        postgres: settings.postgres.clone(),
        allow_insecure_endpoints,
        client_tls: tls.as_ref().map(|tls| tls.client.clone()),
    };
    let hub = tokio::task::spawn_blocking(move || zorgnet_hub::Hub::open(&config))
        .await?
        .context("open the hub")?;
    for ura in &settings.citizen_portals {
        zorgnet_hub::registry::check_ura(ura)
            .map_err(|_| anyhow::anyhow!("--citizen-portal {ura:?} is not a URA (8 digits)"))?;
        hub.admit_citizen_portal(ura);
        tracing::info!(%ura, "admitted a citizen portal");
    }
    if let (Some(tls), Some(dir)) = (&tls, &settings.tls) {
        hub.publish_revocations(tls.verifier.clone());
        tokio::spawn(tls.verifier.clone().keep_fresh(
            zorgnet_trust::tls::CrlSource::File(dir.join(pki::CRL_FILE)),
            settings.crl_refresh,
            None,
        ));
    }
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("listen on {}", settings.listen))?;
    let address = listener.local_addr()?;
    hub.serving_at(address);
    if allow_insecure_endpoints {
        tracing::warn!("development mode: the address book accepts plain-http and local addresses");
    }
    let _consumer = hub.spawn_addressing_consumer(settings.sync_interval);
    let _checkpoints = hub.spawn_audit_checkpoints();
    tracing::info!(%address, "hub listening");
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "zorgnet hub serving at {scheme}://{address} (API description: {scheme}://{address}/openapi.json)"
    );
    let _ = writeln!(
        stdout,
        "  operator key: {} (register organisations with POST /registry/organisations)",
        hub.admin_key_path().display()
    );
    let _ = stdout.flush();
    drop(stdout);
    let router = hub.router(&format!("{scheme}://{address}"));
    serve_router(listener, router, tls.map(|tls| (tls.server, tls.verifier))).await
}

fn generate(args: GenerateArgs) -> Result<()> {
    let generator = zorgnet_synth::Generator::new(zorgnet_synth::SynthConfig {
        patients: args.patients,
        seed: args.seed,
    });
    let format = zorgnet_synth::OutputFormat::from_path(&args.out);
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("create {}", args.out.display()))?;
    let progress = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    progress.set_style(indicatif::ProgressStyle::with_template(
        "{spinner} {pos} resources written ({per_sec})",
    )?);
    let written = zorgnet_synth::write(&generator, format, std::io::BufWriter::new(file), |n| {
        progress.set_position(n)
    })
    .with_context(|| format!("write {}", args.out.display()))?;
    progress.finish_and_clear();
    println!(
        "wrote {written} resources for {} patients to {}",
        args.patients,
        args.out.display()
    );
    Ok(())
}
