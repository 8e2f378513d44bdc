//! `zorgnet bench-security`: what security costs the node, measured in one run against one
//! store of synthetic patients served three ways at once.
//!
//! - **Security off**: the FHIR server of `zorgnet-rest` over the store, without the node's
//!   layers (no authentication, access policy or access log), over plain HTTP; requests
//!   carry no credentials.
//! - **mTLS only**: the same router over mutual TLS (`zorgnet_trust::tls::serve` with the
//!   GP's certificate, clients showing the hospital's): the transport's share alone.
//! - **Security on**: the same store as a GP's node in a network, over mutual TLS with the
//!   GP's certificate (client certificates checked against a temporary network CA and its
//!   revocation list); every request carries a hospital specialist's access token bound to
//!   the hospital's certificate and goes through token verification and the access policy,
//!   whose consent decisions come from the node's cache (warmed before measuring, kept for
//!   [`DECISION_TTL`]), and into the node's access log, which lets each answer leave once
//!   its record is committed.
//!
//! The hub runs in the same process over mutual TLS, with the two organisations, the
//! specialist in its professional register and the hospital's treatment relations with the
//! sampled patients, all made through its API. The load generator is this process too (wrk
//! cannot show a client certificate): `--connections` tasks on a thread of their own, each
//! with one kept-alive HTTP/1.1 connection (hyper's, without a pool), every latency
//! recorded; the server's CPU per request is the process's CPU time less that thread's. The
//! three ways take turns, off, mTLS only, on, for `--rounds` rounds per scenario (read by
//! id, search), so all see the same machine.
//!
//! A new connection's cost is measured apart: `--handshakes` connections one after the
//! other, each with one `GET /health`, from a client thread of its own; the server's CPU is
//! the process's CPU time minus that thread's, over mutual TLS and over plain HTTP.
//!
//! What it is not: a measurement of the consent register's answers (the decisions are
//! cached by design, [`zorgnet_node::access::DecisionCache`] has its own benchmark), of
//! `$fetch` between two nodes, or of a load generator on another machine: client and
//! server share the cores, and TLS costs the client too.

use crate::bench::{PROCESS_STAT, cpu_s};
use crate::import::load_into_store;
use anyhow::{Context, Result, bail};
use clap::Args;
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zorgnet_fhir::identifiers::BSN_SYSTEM;
use zorgnet_node::NodeIdentity;
use zorgnet_node::access::AccessConfig;
use zorgnet_node::authn::{LocalClients, NodeOidc};
use zorgnet_node::hub_client::{HubClient, token_value};
use zorgnet_pseudonym::{Bsn, PersonalId};
use zorgnet_trust::certificate::HostName;
use zorgnet_trust::pki::{NetworkCa, Validity};
use zorgnet_trust::tls::{self, ClientAuth, ClientVerifier, Credentials};

/// The GP, whose node holds the data.
const GP_URA: &str = "00000011";
/// The hospital, whose specialist reads.
const HOSPITAL_URA: &str = "00000022";
/// The specialist, in the hub's professional register.
const SPECIALIST_UZI: &str = "900000123";
/// A medical specialist's UZI role: may see every data category.
const SPECIALIST_ROLE: &str = "01.016";
/// How long the node reuses a consent decision during the run: longer than any run, so
/// every measured request is served from the cache.
const DECISION_TTL: Duration = Duration::from_secs(60 * 60);
/// Longest any one request of the benchmark may take before the run is called failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The only ALPN protocol the load generator offers, so that both modes speak HTTP/1.1.
const HTTP_1_1: &[u8] = b"http/1.1";
/// The calling thread's CPU times.
const THREAD_STAT: &str = "/proc/thread-self/stat";
/// Milliseconds in a second.
const MILLIS_PER_S: f64 = 1_000.0;
/// Microseconds in a second.
const MICROS_PER_S: f64 = 1_000_000.0;
/// Nanoseconds in a millisecond.
const NANOS_PER_MS: f64 = 1_000_000.0;
/// The targets (issue 15): "on" keeps at least this share of "off"'s throughput…
const THROUGHPUT_TARGET: f64 = 0.85;
/// …and its p99 latency is at most this multiple of "off"'s.
const P99_TARGET: f64 = 1.3;
/// The target for a new mTLS connection's full handshake, server CPU in milliseconds.
const HANDSHAKE_TARGET_MS: f64 = 2.0;

/// Arguments of `zorgnet bench-security`.
#[derive(Args)]
pub struct BenchSecurityArgs {
    /// Synthetic patients in the store (about 200 resources each).
    #[arg(long, default_value_t = 1_000)]
    patients: usize,
    /// Seed of the synthetic data.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Patients the hospital has a treatment relation with: the requests rotate over them.
    #[arg(long, default_value_t = 200)]
    related: usize,
    /// Seconds per measured run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent clients, each with one kept-alive connection.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Rounds of (off, on) per scenario.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// New connections made one after the other for the connection-cost figure.
    #[arg(long, default_value_t = 2_000)]
    handshakes: usize,
}

/// How much of a node's security a run goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    /// Plain HTTP, no credentials, no policy.
    Off,
    /// Mutual TLS with the hospital's certificate, to the same router as [`Security::Off`]:
    /// the transport's share of the cost, without token or policy.
    TransportOnly,
    /// Mutual TLS, the hospital's token, the access policy: the node in a network.
    On,
}

impl Security {
    /// The order of the runs in a round.
    const ALL: [Security; 3] = [Security::Off, Security::TransportOnly, Security::On];

    fn label(self) -> &'static str {
        match self {
            Security::Off => "off",
            Security::TransportOnly => "mTLS only",
            Security::On => "on",
        }
    }
}

/// One kind of request, rotating over the sampled patients.
struct Scenario {
    name: &'static str,
    paths: Arc<Vec<String>>,
}

/// The two ways to the one store, and what the hospital needs to ask the secure one.
struct Targets {
    /// `http://127.0.0.1:PORT`: security off.
    plain: String,
    /// `https://127.0.0.1:PORT`: the router of `plain` over mutual TLS.
    transport_only: String,
    /// `https://127.0.0.1:PORT`: the GP's node in the network.
    secure: String,
    /// The hospital's client configuration, HTTP/1.1 only.
    hospital_tls: rustls::ClientConfig,
    /// The hub's base URL and the hospital's key there, for access tokens.
    hub: String,
    hospital_key: String,
}

impl Targets {
    /// A reqwest client for the setup, the warm-up and the connection cost: plain, or with
    /// the hospital's certificate and `token`.
    fn client(&self, security: Security, token: Option<&str>) -> Result<reqwest::Client> {
        let builder = reqwest::Client::builder()
            .http1_only()
            .pool_max_idle_per_host(1)
            .timeout(REQUEST_TIMEOUT);
        let builder = match security {
            Security::Off => builder,
            Security::TransportOnly | Security::On => {
                let mut headers = reqwest::header::HeaderMap::new();
                if let Some(token) = token {
                    let mut value =
                        reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))?;
                    value.set_sensitive(true);
                    headers.insert(reqwest::header::AUTHORIZATION, value);
                }
                builder
                    .tls_backend_preconfigured(self.hospital_tls.clone())
                    .default_headers(headers)
            }
        };
        builder.build().context("set up a load client")
    }

    /// The load generator's way to `security`'s server.
    fn endpoint(&self, security: Security, token: Option<&str>) -> Result<Endpoint> {
        let base = self.base(security);
        let address = base
            .rsplit_once("//")
            .map_or(base, |(_, address)| address)
            .parse()
            .with_context(|| format!("the address of {base}"))?;
        let authorization = token
            .map(|token| {
                let mut value = http::HeaderValue::from_str(&format!("Bearer {token}"))?;
                value.set_sensitive(true);
                Ok::<_, anyhow::Error>(value)
            })
            .transpose()?;
        Ok(Endpoint {
            address,
            tls: (security != Security::Off).then(|| Arc::new(self.hospital_tls.clone())),
            authorization,
        })
    }

    fn base(&self, security: Security) -> &str {
        match security {
            Security::Off => &self.plain,
            Security::TransportOnly => &self.transport_only,
            Security::On => &self.secure,
        }
    }

    /// A fresh access token of the specialist for the GP's node, bound to the hospital's
    /// certificate (tokens live five minutes, so each run asks for its own).
    async fn token(&self) -> Result<String> {
        let answer = self
            .client(Security::On, None)?
            .post(format!("{}/trust/token", self.hub))
            .bearer_auth(&self.hospital_key)
            .json(&json!({"audience": GP_URA, "uzi": SPECIALIST_UZI, "role": SPECIALIST_ROLE}))
            .send()
            .await?;
        if !answer.status().is_success() {
            bail!("the hub refused an access token: {}", answer.text().await?);
        }
        let issued: Value = answer.json().await?;
        issued["access_token"]
            .as_str()
            .map(str::to_string)
            .context("no access_token in the hub's answer")
    }
}

/// What one measured run gave.
struct Run {
    scenario: &'static str,
    round: usize,
    security: Security,
    requests: usize,
    not_ok: usize,
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// The process's CPU time less the load generator's thread's, per request.
    server_cpu_us: f64,
    /// The load generator's thread's CPU time, per request.
    generator_cpu_us: f64,
}

/// Runs the benchmark and prints its Markdown tables on stdout, its progress on stderr.
pub async fn run(args: BenchSecurityArgs) -> Result<()> {
    if args.connections == 0 || args.rounds == 0 || args.related == 0 {
        bail!("--connections, --rounds and --related must be at least 1");
    }
    let temp = tempfile::tempdir()?;
    let (targets, hub, stop) = network(temp.path(), &args).await?;
    let scenarios = scenarios(&args);
    if scenarios[0].paths.is_empty() {
        bail!("no sampled patient has a BSN and Observations; give more --patients");
    }
    relate(&targets, &args).await?;
    warm(&targets, &scenarios).await?;

    let mut runs = Vec::new();
    for scenario in &scenarios {
        for round in 1..=args.rounds {
            for security in Security::ALL {
                let token = match security {
                    Security::On => Some(targets.token().await?),
                    Security::Off | Security::TransportOnly => None,
                };
                eprintln!(
                    "{}: round {round}, security {}: {} s with {} connections",
                    scenario.name,
                    security.label(),
                    args.seconds,
                    args.connections
                );
                let run =
                    load(&targets, security, token.as_deref(), scenario, round, &args).await?;
                eprintln!(
                    "  {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, server CPU {:.0} µs/request, {} not 200",
                    run.per_s, run.p50_ms, run.p99_ms, run.server_cpu_us, run.not_ok
                );
                runs.push(run);
            }
        }
    }

    eprintln!(
        "new connections: {} over mutual TLS, then {} over plain HTTP, one at a time",
        args.handshakes, args.handshakes
    );
    let secure_ms = connection_cost(&targets, Security::On, args.handshakes).await?;
    let plain_ms = connection_cost(&targets, Security::Off, args.handshakes).await?;

    println!("{}", report(&args, &scenarios, &runs, secure_ms, plain_ms));
    let _ = stop.send(());
    tokio::task::spawn_blocking(move || drop(hub)).await?;
    Ok(())
}

/// The network of the run: a temporary CA, the hub over mutual TLS with both
/// organisations and the specialist registered, the store loaded with synthetic patients,
/// and the store's two servers. Answers the targets, the hub, and the signal that stops
/// every server.
async fn network(
    dir: &std::path::Path,
    args: &BenchSecurityArgs,
) -> Result<(Targets, zorgnet_hub::Hub, tokio::sync::watch::Sender<()>)> {
    let ca = NetworkCa::init(&dir.join("ca"), "zorgnet benchmark CA (temporary)")
        .context("make the temporary network CA")?;
    let loopback: HostName = "127.0.0.1".parse()?;
    let credentials = |issued: zorgnet_trust::pki::IssuedCertificate| {
        Credentials::from_pem(
            issued.certificate_pem.as_bytes(),
            issued.key_pem.as_bytes(),
            ca.certificate_pem().as_bytes(),
        )
    };
    let hub_credentials = credentials(ca.issue_server(
        "zorgnet hub",
        std::slice::from_ref(&loopback),
        Validity::default(),
    )?)?;
    let gp = credentials(ca.issue_organisation(
        GP_URA,
        "Huisartsenpraktijk (benchmark)",
        std::slice::from_ref(&loopback),
        Validity::default(),
    )?)?;
    let hospital = credentials(ca.issue_organisation(
        HOSPITAL_URA,
        "Ziekenhuis (benchmark)",
        &[],
        Validity::default(),
    )?)?;
    let crl = ca.crl().context("sign the revocation list")?;
    let verifier =
        || ClientVerifier::new(ca.certificate_der(), crl.der.clone(), ClientAuth::Optional);
    let (hub_verifier, gp_verifier) = (verifier()?, verifier()?);
    let (stop, stopped) = tokio::sync::watch::channel(());
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.changed().await;
        }
    };

    // The hub.
    let config = zorgnet_hub::HubConfig {
        data_dir: dir.join("hub"),
        postgres: None,
        allow_insecure_endpoints: false,
        client_tls: Some(tls::client_config(&hub_credentials)?),
    };
    let hub = tokio::task::spawn_blocking(move || zorgnet_hub::Hub::open(&config))
        .await?
        .context("open the hub")?;
    hub.publish_revocations(hub_verifier.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    hub.serving_at(address);
    let hub_base = format!("https://{address}");
    tokio::spawn(tls::serve(
        listener,
        tls::server_config(&hub_credentials, &hub_verifier)?,
        Some(hub_verifier),
        hub.router(&hub_base),
        until_stopped(),
    ));
    let admin_key = std::fs::read_to_string(hub.admin_key_path())?;
    let operator = reqwest::Client::builder()
        .tls_backend_preconfigured(tls::anchor_only_client_config(ca.certificate_der())?)
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    let mut keys = Vec::new();
    for (ura, name) in [(GP_URA, "Huisartsenpraktijk"), (HOSPITAL_URA, "Ziekenhuis")] {
        let answer = operator
            .post(format!("{hub_base}/registry/organisations"))
            .bearer_auth(admin_key.trim())
            .json(&json!({"ura": ura, "name": name}))
            .send()
            .await?;
        if !answer.status().is_success() {
            bail!("registering {ura} at the hub: {}", answer.text().await?);
        }
        let issued: Value = answer.json().await?;
        keys.push(
            issued["api_key"]
                .as_str()
                .context("no api_key in the registry's answer")?
                .to_string(),
        );
    }
    let answer = operator
        .put(format!("{hub_base}/professionals/{SPECIALIST_UZI}"))
        .bearer_auth(admin_key.trim())
        .json(&json!({
            "name": "Dr. E. de Vries",
            "roles": [{"ura": HOSPITAL_URA, "role": SPECIALIST_ROLE}]
        }))
        .send()
        .await?;
    if !answer.status().is_success() {
        bail!(
            "registering the specialist at the hub: {}",
            answer.text().await?
        );
    }

    // The store, with synthetic patients.
    let store = crate::open_store(&dir.join("node"), None).await?;
    let generator = zorgnet_synth::Generator::new(zorgnet_synth::SynthConfig {
        patients: args.patients,
        seed: args.seed,
    });
    eprintln!(
        "loading {} synthetic patients (about {} resources)",
        args.patients,
        generator.estimated_resource_count()
    );
    let started = Instant::now();
    let loaded = load_into_store(&store, generator.resources(), None).await?;
    if let Some(failure) = loaded.failures.first() {
        bail!(
            "{} resources failed to import, first: {failure:?}",
            loaded.failures.len()
        );
    }
    store.analyze().await?;
    eprintln!(
        "loaded {} resources in {:.0} s",
        loaded.stored + loaded.unchanged,
        started.elapsed().as_secs_f64()
    );
    let identity = NodeIdentity {
        ura: GP_URA.into(),
        name: "Huisartsenpraktijk (benchmark)".into(),
    };

    // Security off: plain HTTP, no network, no credentials.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let plain = format!("http://{}", listener.local_addr()?);
    let router = zorgnet_rest::finish(zorgnet_rest::routes(zorgnet_rest::AppState::new(
        store.clone(),
        identity.clone(),
        format!("{plain}/fhir"),
        Vec::new(),
    )));
    tokio::spawn(zorgnet_node::serve(
        listener,
        router.clone(),
        until_stopped(),
    ));
    // The same router over mutual TLS.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let transport_only = format!("https://{}", listener.local_addr()?);
    tokio::spawn(tls::serve(
        listener,
        tls::server_config(&gp, &gp_verifier)?,
        Some(gp_verifier.clone()),
        router,
        until_stopped(),
    ));

    // Security on: the GP's node in the network, over mutual TLS.
    let gp_tls = tls::client_config(&gp)?;
    let gp_hub = HubClient::with_tls(&hub_base, &keys[0], Some(gp_tls.clone()))?;
    let db = store.database().clone();
    let addresses =
        tokio::task::spawn_blocking(move || zorgnet_node::addressing::AddressBookCache::open(db))
            .await?
            .context("open the address book cache")?
            .with_tls(gp_tls)
            .context("the address book cache's TLS")?;
    let network = zorgnet_node::network::Network::new(gp_hub, addresses)
        .map_err(|e| anyhow::anyhow!("network client: {:?}", e.issues))?
        .with_access(AccessConfig {
            decision_ttl: DECISION_TTL,
        });
    let (logged, data) = (store.clone(), dir.join("node"));
    let (_, audit, _) =
        tokio::task::spawn_blocking(move || zorgnet_node::audit::open(&logged, &data))
            .await?
            .context("open the access log")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let secure = format!("https://{}", listener.local_addr()?);
    let router = zorgnet_node::router_in_network(
        store,
        identity,
        format!("{secure}/fhir"),
        Some(Arc::new(network)),
        LocalClients::key(&zorgnet_trust::secret::new_key(
            zorgnet_node::authn::NODE_KEY_PREFIX,
        )),
        NodeOidc::default(),
        audit,
    );
    tokio::spawn(tls::serve(
        listener,
        tls::server_config(&gp, &gp_verifier)?,
        Some(gp_verifier),
        router,
        until_stopped(),
    ));

    let mut hospital_tls = tls::client_config(&hospital)?;
    hospital_tls.alpn_protocols = vec![HTTP_1_1.to_vec()];
    let targets = Targets {
        plain,
        transport_only,
        secure,
        hospital_tls,
        hub: hub_base,
        hospital_key: keys[1].clone(),
    };
    Ok((targets, hub, stop))
}

/// The patients of the run: `--related` of them spread over the store, each with a BSN and
/// Observations.
fn sampled_patients(args: &BenchSecurityArgs) -> Vec<(String, String)> {
    let generator = zorgnet_synth::Generator::new(zorgnet_synth::SynthConfig {
        patients: args.patients,
        seed: args.seed,
    });
    let step = (args.patients / args.related).max(1);
    let mut sampled = Vec::new();
    for index in (0..args.patients).step_by(step) {
        let resources = generator.patient_resources(index);
        let Some(patient) = resources.iter().find(|r| r["resourceType"] == "Patient") else {
            continue;
        };
        let bsn = patient["identifier"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["system"] == BSN_SYSTEM)
            .and_then(|i| i["value"].as_str());
        let has_observations = resources.iter().any(|r| r["resourceType"] == "Observation");
        if let (Some(id), Some(bsn), true) = (patient["id"].as_str(), bsn, has_observations) {
            sampled.push((id.to_string(), bsn.to_string()));
        }
        if sampled.len() == args.related {
            break;
        }
    }
    sampled
}

/// Read by id and search, over the sampled patients.
fn scenarios(args: &BenchSecurityArgs) -> Vec<Scenario> {
    let patients = sampled_patients(args);
    vec![
        Scenario {
            name: "read Patient/{id}",
            paths: Arc::new(
                patients
                    .iter()
                    .map(|(id, _)| format!("/fhir/Patient/{id}"))
                    .collect(),
            ),
        },
        Scenario {
            name: "search Observation?patient=Patient/{id}",
            paths: Arc::new(
                patients
                    .iter()
                    // A page of 20, as the figures in docs/benchmarks.md were measured before
                    // the default page grew to 50.
                    .map(|(id, _)| format!("/fhir/Observation?patient=Patient/{id}&_count=20"))
                    .collect(),
            ),
        },
    ]
}

/// The hospital registers a treatment relation with each sampled patient, through the
/// hub's API (the BSN blinded here, as `zorgnet relation add` does).
async fn relate(targets: &Targets, args: &BenchSecurityArgs) -> Result<()> {
    let patients = sampled_patients(args);
    eprintln!(
        "registering the hospital's treatment relations with {} patients",
        patients.len()
    );
    let hospital = HubClient::with_tls(
        &targets.hub,
        &targets.hospital_key,
        Some(targets.hospital_tls.clone()),
    )?;
    for (_, bsn) in &patients {
        let bsn = Bsn::parse(bsn).map_err(|e| anyhow::anyhow!("a synthetic BSN: {e:?}"))?;
        let token = hospital
            .referral_index_token(&PersonalId::from(bsn))
            .await?;
        hospital
            .post(
                "/relations",
                &json!({"token": token_value(&token), "kind": "referral"}),
            )
            .await
            .context("the hub refused a treatment relation")?;
    }
    Ok(())
}

/// Every path once each way: fills the node's consent-decision cache and the page cache,
/// and checks that every way answers 200 with the same resources, so that the runs do the
/// same work.
async fn warm(targets: &Targets, scenarios: &[Scenario]) -> Result<()> {
    eprintln!("warming up: every path once each way");
    let token = targets.token().await?;
    let clients = Security::ALL
        .into_iter()
        .map(|security| {
            let token = (security == Security::On).then_some(token.as_str());
            Ok((security, targets.client(security, token)?))
        })
        .collect::<Result<Vec<_>>>()?;
    for scenario in scenarios {
        for path in scenario.paths.iter() {
            let mut answers = Vec::new();
            for (security, client) in &clients {
                let security = *security;
                let response = client
                    .get(format!("{}{path}", targets.base(security)))
                    .send()
                    .await?;
                let status = response.status();
                let body: Value = response.json().await?;
                if status != reqwest::StatusCode::OK {
                    bail!(
                        "warm-up {path} with security {}: {status}: {body}",
                        security.label()
                    );
                }
                answers.push(served_ids(&body));
            }
            if answers.iter().any(|served| *served != answers[0]) {
                bail!(
                    "warm-up {path}: the ways served different resources ({answers:?}); the runs would not compare"
                );
            }
        }
    }
    Ok(())
}

/// The resources an answer serves: the resource itself, or a Bundle's entries but its
/// OperationOutcome notices.
fn served_ids(body: &Value) -> Vec<String> {
    let id = |resource: &Value| {
        format!(
            "{}/{}",
            resource["resourceType"].as_str().unwrap_or(""),
            resource["id"].as_str().unwrap_or("")
        )
    };
    match body["entry"].as_array() {
        Some(entries) => entries
            .iter()
            .map(|entry| &entry["resource"])
            .filter(|resource| resource["resourceType"] != "OperationOutcome")
            .map(id)
            .collect(),
        None => vec![id(body)],
    }
}

/// One measured run: `--connections` tasks, each on its own kept-alive connection (opened
/// before the clock starts), for `--seconds`. The tasks run on a thread of their own, whose
/// CPU time is taken from the process's to give the server's.
async fn load(
    targets: &Targets,
    security: Security,
    token: Option<&str>,
    scenario: &Scenario,
    round: usize,
    args: &BenchSecurityArgs,
) -> Result<Run> {
    let endpoint = targets.endpoint(security, token)?;
    let (connections, paths) = (args.connections, scenario.paths.clone());
    let window = Duration::from_secs(args.seconds);
    let generator = std::thread::spawn(move || generate(endpoint, connections, paths, window));
    let mut measured = tokio::task::spawn_blocking(move || generator.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the load generator panicked"))??;
    measured.latencies_ns.sort_unstable();
    let latencies = &measured.latencies_ns;
    let percentile_ms = |p: usize| {
        latencies
            .get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |&ns| ns as f64 / NANOS_PER_MS)
    };
    let requests = latencies.len();
    Ok(Run {
        scenario: scenario.name,
        round,
        security,
        requests,
        not_ok: measured.not_ok,
        per_s: requests as f64 / measured.elapsed_s,
        p50_ms: percentile_ms(50),
        p99_ms: percentile_ms(99),
        server_cpu_us: measured.server_cpu_s * MICROS_PER_S / requests.max(1) as f64,
        generator_cpu_us: measured.generator_cpu_s * MICROS_PER_S / requests.max(1) as f64,
    })
}

/// What the load generator saw in its window.
struct Measured {
    latencies_ns: Vec<u64>,
    not_ok: usize,
    elapsed_s: f64,
    /// The process's CPU time in the window less the generator thread's.
    server_cpu_s: f64,
    /// The generator thread's CPU time in the window.
    generator_cpu_s: f64,
}

/// Where and how the load generator connects: the server's address, the hospital's TLS
/// configuration (none for plain HTTP) and the `Authorization` header, if any.
#[derive(Clone)]
struct Endpoint {
    address: std::net::SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    authorization: Option<http::HeaderValue>,
}

/// One kept-alive HTTP/1.1 connection of the load generator: hyper's connection itself, not
/// a pool, so that every request of a task goes over the same connection (a pool opens a
/// new one when the previous answer's connection is not back in it yet).
type Connection = hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>;

impl Endpoint {
    /// Opens a connection (over TLS: a full handshake), its driver spawned on the current
    /// runtime.
    async fn connect(&self) -> Result<Connection> {
        let tcp = tokio::net::TcpStream::connect(self.address).await?;
        tcp.set_nodelay(true)?;
        Ok(match &self.tls {
            None => {
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(connection);
                sender
            }
            Some(config) => {
                let server = rustls::pki_types::ServerName::IpAddress(self.address.ip().into());
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(server, tcp)
                    .await?;
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
                tokio::spawn(connection);
                sender
            }
        })
    }

    /// `GET path` over `connection`, the answer read to its end: whether it was a 200.
    async fn get(&self, connection: &mut Connection, path: &str) -> Result<bool> {
        let mut request = http::Request::get(path)
            .header(http::header::HOST, self.address.to_string())
            .body(http_body_util::Empty::new())?;
        if let Some(authorization) = &self.authorization {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, authorization.clone());
        }
        connection.ready().await?;
        let response = connection.send_request(request).await?;
        let ok = response.status() == http::StatusCode::OK;
        response.into_body().collect().await?;
        Ok(ok)
    }
}

/// The load generator, on the calling thread: one task per connection, each opening it,
/// then, once all are open, sending requests one after the other over it for `window`.
fn generate(
    endpoint: Endpoint,
    connections: usize,
    paths: Arc<Vec<String>>,
    window: Duration,
) -> Result<Measured> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let ready = Arc::new(tokio::sync::Barrier::new(connections + 1));
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..connections {
            let (ready, paths, endpoint) = (ready.clone(), paths.clone(), endpoint.clone());
            tasks.spawn(async move {
                let mut next = task % paths.len();
                let opened = match endpoint.connect().await {
                    Ok(mut connection) => endpoint
                        .get(&mut connection, &paths[next])
                        .await
                        .map(|_| connection),
                    Err(e) => Err(e),
                };
                ready.wait().await;
                let mut connection = opened?;
                let deadline = Instant::now() + window;
                let mut latencies_ns: Vec<u64> = Vec::new();
                let mut not_ok = 0usize;
                while Instant::now() < deadline {
                    next = (next + connections) % paths.len();
                    let sent = Instant::now();
                    let ok = endpoint.get(&mut connection, &paths[next]).await?;
                    latencies_ns.push(sent.elapsed().as_nanos() as u64);
                    not_ok += usize::from(!ok);
                }
                Ok::<_, anyhow::Error>((latencies_ns, not_ok))
            });
        }
        ready.wait().await;
        let (started, process_before, generator_before) =
            (Instant::now(), cpu_s(PROCESS_STAT), cpu_s(THREAD_STAT));
        let mut measured = Measured {
            latencies_ns: Vec::new(),
            not_ok: 0,
            elapsed_s: 0.0,
            server_cpu_s: 0.0,
            generator_cpu_s: 0.0,
        };
        while let Some(done) = tasks.join_next().await {
            let (latencies, not_ok) = done?.context("a load connection failed")?;
            measured.latencies_ns.extend(latencies);
            measured.not_ok += not_ok;
        }
        measured.elapsed_s = started.elapsed().as_secs_f64();
        measured.generator_cpu_s = cpu_s(THREAD_STAT) - generator_before;
        measured.server_cpu_s = cpu_s(PROCESS_STAT) - process_before - measured.generator_cpu_s;
        Ok(measured)
    })
}

/// Server CPU per new connection with one `GET /health`, in milliseconds: `n` connections
/// one after the other from a client thread of its own (a fresh client each, so a fresh
/// connection and, over TLS, a full handshake: the servers keep no sessions); the process's
/// CPU time minus the client thread's, divided by `n`.
async fn connection_cost(targets: &Targets, security: Security, n: usize) -> Result<f64> {
    let url = format!("{}/health", targets.base(security));
    let clients: Vec<reqwest::Client> = (0..n)
        .map(|_| targets.client(security, None))
        .collect::<Result<_>>()?;
    let process_before = cpu_s(PROCESS_STAT);
    let client_thread = std::thread::spawn(move || -> Result<f64> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let before = cpu_s(THREAD_STAT);
        runtime.block_on(async {
            for client in clients {
                let response = client.get(&url).send().await?;
                if !response.status().is_success() {
                    bail!("GET {url}: {}", response.status());
                }
                response.bytes().await?;
            }
            Ok(())
        })?;
        Ok(cpu_s(THREAD_STAT) - before)
    });
    let client_s = tokio::task::spawn_blocking(move || client_thread.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the connecting thread panicked"))??;
    let server_s = cpu_s(PROCESS_STAT) - process_before - client_s;
    Ok(server_s * MILLIS_PER_S / n.max(1) as f64)
}

/// The Markdown report: every run, the on/off ratios per scenario against the targets, and
/// the cost of a new connection.
fn report(
    args: &BenchSecurityArgs,
    scenarios: &[Scenario],
    runs: &[Run],
    secure_ms: f64,
    plain_ms: f64,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} patients, {} sampled, {} connections, {} s per run, HTTP/1.1 kept alive\n",
        args.patients,
        scenarios[0].paths.len(),
        args.connections,
        args.seconds
    );
    let _ = writeln!(
        out,
        "| scenario | round | security | req/s | p50 ms | p99 ms | server CPU µs/request | load generator CPU µs/request | requests | not 200 |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for run in runs {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} | {} | {} |",
            run.scenario,
            run.round,
            run.security.label(),
            run.per_s,
            run.p50_ms,
            run.p99_ms,
            run.server_cpu_us,
            run.generator_cpu_us,
            run.requests,
            run.not_ok
        );
    }
    let _ = writeln!(
        out,
        "\n| scenario (means of the rounds) | req/s off / mTLS only / on | on/off throughput (≥ {THROUGHPUT_TARGET}) | p99 ms off / mTLS only / on | on/off p99 (≤ {P99_TARGET}) | server CPU µs/request off / mTLS only / on | met |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for scenario in scenarios {
        let mean = |security: Security, figure: fn(&Run) -> f64| {
            let values: Vec<f64> = runs
                .iter()
                .filter(|r| r.scenario == scenario.name && r.security == security)
                .map(figure)
                .collect();
            values.iter().sum::<f64>() / values.len().max(1) as f64
        };
        let [rate, p99, cpu] = [
            |r: &Run| r.per_s,
            |r: &Run| r.p99_ms,
            |r: &Run| r.server_cpu_us,
        ]
        .map(|figure| Security::ALL.map(|security| mean(security, figure)));
        let throughput = rate[2] / rate[0];
        let latency = p99[2] / p99[0];
        let met = throughput >= THROUGHPUT_TARGET && latency <= P99_TARGET;
        let _ = writeln!(
            out,
            "| {} | {:.0} / {:.0} / {:.0} | {throughput:.2} | {:.2} / {:.2} / {:.2} | {latency:.2} | {:.0} / {:.0} / {:.0} | {} |",
            scenario.name,
            rate[0],
            rate[1],
            rate[2],
            p99[0],
            p99[1],
            p99[2],
            cpu[0],
            cpu[1],
            cpu[2],
            if met { "yes" } else { "no" }
        );
    }
    let handshake = secure_ms - plain_ms;
    let _ = writeln!(
        out,
        "\n| new connection + `GET /health`, {} one after the other | server CPU ms per connection |",
        args.handshakes
    );
    let _ = writeln!(out, "|---|---|");
    let _ = writeln!(
        out,
        "| mutual TLS (full TLS 1.3 handshake, client certificate checked against the CA and CRL) | {secure_ms:.3} |"
    );
    let _ = writeln!(out, "| plain HTTP | {plain_ms:.3} |");
    let _ = writeln!(
        out,
        "| the difference: the mTLS handshake (target ≤ {HANDSHAKE_TARGET_MS} ms) | {handshake:.3} ({}) |",
        if handshake <= HANDSHAKE_TARGET_MS {
            "met"
        } else {
            "not met"
        }
    );
    out
}
