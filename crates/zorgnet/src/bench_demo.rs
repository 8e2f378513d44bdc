//! `zorgnet bench-demo`: the demo network as its users meet it, measured from outside.
//!
//! It starts `zorgnet demo` (this binary) as a child process on free ports in a fresh data
//! directory, with `--patients` synthetic patients: five nodes, the hub, the identity
//! provider, the portal and the viewer, everything over mutual TLS with the access policy
//! and the access log on, as a newcomer runs it. Measured:
//!
//! - **Starts**: wall time from spawning the process to its printed `portal:` line, at the
//!   first start (demo CA, credentials, registrations at the hub, generating and loading the
//!   patients) and, after Ctrl-C (`kill -INT`), at a second start on the same data. Also how
//!   long after the first spawn every node's outbox has delivered its registrations to the
//!   referral index (`zorgnet node status`), which the views below need.
//! - **The citizen's overview**: a demo citizen logs in at the portal through the identity
//!   provider's form; `GET /overzicht` (the portal asks every node, each within the portal's
//!   per-source timeout, and merges) `--requests` times, one after the other.
//! - **The professional's merged view**: the hospital's internist logs in at the viewer,
//!   finds the same citizen by BSN and registers a treatment relation; `GET /{ura}/patient`
//!   (the hospital's node localises at the hub's referral index, gets an access token per
//!   source and fetches from every source in parallel; the viewer merges) `--requests` times.
//! - **The emergency view**: the hospital's emergency doctor finds the citizen and breaks the
//!   glass with a reason; `POST /{ura}/nood` `--requests` times.
//!
//! Every measured answer is checked: a 200 naming every organisation that holds the
//! citizen's data (and, for the viewer, no notice that a source did not answer). Before
//! measuring, the run waits until the outboxes have drained and the hospital's node knows
//! every other node's address (the page names all sources). Requests are sequential over one
//! kept-alive connection per user: the latency one user sees, not a throughput.
//! The client is a small browser of its own (cookies by name and path, redirects followed),
//! trusting the demo CA alone.
//!
//! What it is not: a measurement of a source that does not answer. The demo's parts all run
//! in one process and none can be made silent from outside without changing the demo; the
//! per-source timeouts are constants of the code ([`FETCH_SOURCE_TIMEOUT`] at the node,
//! [`zorgnet_portal::DEFAULT_SOURCE_TIMEOUT`] at the portal), and the table states them.
//! Nor a load test: one user at a time, and the client shares the machine with the demo.

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use zorgnet_node::network::FETCH_SOURCE_TIMEOUT;

/// The last line of the demo's announcement.
const LAST_LINE: &str = "a demo user's access token";
/// The line that names the portal's URL.
const PORTAL_LINE: &str = "portal: ";
/// The line that names the viewer's URL.
const VIEWER_LINE: &str = "viewer (professionals): ";
/// The demo citizen whose data the views show.
const CITIZEN: &str = "burger-1";
/// The hospital's internist (a treatment relation) and emergency doctor (break the glass).
const INTERNIST: &str = "internist";
const EMERGENCY_DOCTOR: &str = "seh-arts";
/// The break-the-glass reason the emergency doctor gives.
const EMERGENCY_REASON: &str = "bewusteloos op de SEH (benchmark)";
/// The viewer's notice that a source did not answer.
const SILENT_NOTICE: &str = "Niet alle bronnen gaven antwoord";
/// The viewer's notice that the organisation has a treatment relation.
const RELATION_NOTICE: &str = "Uw organisatie heeft een behandelrelatie";
/// What marks the emergency view.
const EMERGENCY_MARK: &str = "emergency-access";
/// Requests before each measurement, not counted.
const WARMUP_REQUESTS: usize = 5;
/// Longest a start may take before the run is called failed.
const START_DEADLINE: Duration = Duration::from_secs(30 * 60);
/// Longest the outboxes may take to deliver every registration after the first start.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(20 * 60);
/// Longest the hospital's node may take to know every source's address.
const ADDRESS_BOOK_DEADLINE: Duration = Duration::from_secs(120);
/// Longest the demo may take to stop after Ctrl-C.
const STOP_DEADLINE: Duration = Duration::from_secs(60);
/// Longest one request of the benchmark may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Most redirects one navigation follows.
const MAX_REDIRECTS: usize = 10;
/// How often the run polls the outboxes and the patient page while it waits.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// The targets.
const FIRST_START_TARGET_S: f64 = 60.0;
const SECOND_START_TARGET_S: f64 = 5.0;
const OVERVIEW_P95_TARGET_MS: f64 = 300.0;
const VIEW_P95_TARGET_MS: f64 = 150.0;
const SILENT_SOURCE_TARGET: Duration = Duration::from_secs(2);

/// Arguments of `zorgnet bench-demo`.
#[derive(Args, Debug)]
pub struct BenchDemoArgs {
    /// Synthetic patients the demo loads on its first start.
    #[arg(long, default_value_t = 5_000)]
    patients: usize,
    /// Measured requests per view (after a few not counted).
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// The demo's data directory, kept after the run (default: a temporary one, removed).
    /// A directory that already holds a demo makes the first start a second one.
    #[arg(long)]
    data: Option<PathBuf>,
}

/// Runs the benchmark: a Markdown table on stdout, progress on stderr.
pub async fn run(args: BenchDemoArgs) -> Result<()> {
    anyhow::ensure!(args.requests > 0, "--requests must be at least 1");
    let temporary = tempfile::tempdir()?;
    let data = match &args.data {
        Some(dir) => dir.clone(),
        None => temporary.path().join("demo"),
    };

    let first = start(&data, args.patients, "first start").await?;
    let network = read_network(&data)?;
    let delivered_s = wait_for_outboxes(&network, first.spawned).await?;
    first.demo.interrupt().await?;

    let second = start(&data, args.patients, "second start").await?;
    let demo = &second;
    let citizen = Citizen::of(&demo.lines)?;
    let portal = demo.url_after(PORTAL_LINE)?.to_string();
    let viewer = demo.url_after(VIEWER_LINE)?.to_string();
    let hospital = network
        .nodes
        .iter()
        .find(|(name, _, _)| name.starts_with("Ziekenhuis"))
        .map(|(_, ura, _)| ura.clone())
        .context("no hospital in the demo's network file")?;
    let ca = data
        .join("demo-ca")
        .join(zorgnet_trust::pki::CA_CERTIFICATE_FILE);

    // The citizen's overview at the portal.
    let mut browser = Browser::trusting(&ca)?;
    let landed = log_in(&mut browser, &format!("{portal}login"), CITIZEN).await?;
    anyhow::ensure!(
        landed.url.path() == "/overzicht",
        "the citizen's login landed on {}",
        landed.url
    );
    let overview_url = format!("{portal}overzicht");
    let overview = measure(
        "citizen's overview",
        args.requests,
        &mut browser,
        |browser| browser.get(&overview_url),
        |page| citizen.check_overview(page),
    )
    .await?;

    // The internist's merged view.
    let mut internist = Browser::trusting(&ca)?;
    let search = log_in(
        &mut internist,
        &format!("{viewer}/{hospital}/login"),
        INTERNIST,
    )
    .await?;
    let found = internist
        .post(
            &format!("{viewer}/{hospital}/zoeken"),
            &[("csrf", &csrf(&search.body)?), ("bsn", &citizen.bsn)],
        )
        .await?
        .ok()?;
    let related = internist
        .post(
            &format!("{viewer}/{hospital}/relatie"),
            &[("csrf", &csrf(&found.body)?), ("kind", "referral")],
        )
        .await?
        .ok()?;
    anyhow::ensure!(
        related.body.contains(RELATION_NOTICE),
        "the treatment relation was not registered: {}",
        related.body
    );
    let patient_url = format!("{viewer}/{hospital}/patient");
    wait_for_sources(&mut internist, &patient_url, &citizen).await?;
    let merged = measure(
        "professional's merged view",
        args.requests,
        &mut internist,
        |browser| browser.get(&patient_url),
        |page| citizen.check_view(page),
    )
    .await?;

    // The emergency doctor's view.
    let mut emergency = Browser::trusting(&ca)?;
    let search = log_in(
        &mut emergency,
        &format!("{viewer}/{hospital}/login"),
        EMERGENCY_DOCTOR,
    )
    .await?;
    emergency
        .post(
            &format!("{viewer}/{hospital}/zoeken"),
            &[("csrf", &csrf(&search.body)?), ("bsn", &citizen.bsn)],
        )
        .await?
        .ok()?;
    let emergency_url = format!("{viewer}/{hospital}/nood");
    let form = emergency.get(&emergency_url).await?.ok()?;
    let token = csrf(&form.body)?;
    let broken = measure(
        "emergency view",
        args.requests,
        &mut emergency,
        |browser| {
            browser.post(
                &emergency_url,
                &[("csrf", token.as_str()), ("reason", EMERGENCY_REASON)],
            )
        },
        |page| {
            citizen.check_view(page)?;
            anyhow::ensure!(
                page.body.contains(EMERGENCY_MARK),
                "the answer is not the emergency view"
            );
            Ok(())
        },
    )
    .await?;
    let rss = resident_mib(demo.demo.0.id());
    second.demo.interrupt().await?;

    let first_label = if first.first {
        "clean data directory"
    } else {
        "a data directory that already held a demo"
    };
    println!(
        "\nDemo network: {} patients (as loaded), 5 nodes, hub, identity provider, portal and viewer in one process over mutual TLS, access policy and access log on; {} requests per view, one at a time, after {WARMUP_REQUESTS} not counted; citizen {CITIZEN} (data at {})\n",
        network.patients,
        args.requests,
        citizen.sources.join(", ")
    );
    println!("| measure | figure | target | met |\n|---|---|---|---|");
    println!(
        "| `zorgnet demo`, {first_label}, to the printed portal URL | {:.1} s | ≤ {FIRST_START_TARGET_S:.0} s | {} |",
        first.portal_s,
        met(first.first && first.portal_s <= FIRST_START_TARGET_S)
    );
    println!(
        "| every node's outbox delivered to the referral index, after the first spawn | {delivered_s:.1} s | — | — |"
    );
    println!(
        "| `zorgnet demo`, second start, to the printed portal URL | {:.1} s | ≤ {SECOND_START_TARGET_S:.0} s | {} |",
        second.portal_s,
        met(!second.first && second.portal_s <= SECOND_START_TARGET_S)
    );
    println!(
        "| citizen's overview, `GET /overzicht` (all {} nodes asked, {} with data) | {} | p95 ≤ {OVERVIEW_P95_TARGET_MS:.0} ms | {} |",
        network.nodes.len(),
        citizen.sources.len(),
        overview.figure(),
        met(overview.p95_ms() <= OVERVIEW_P95_TARGET_MS)
    );
    println!(
        "| professional's merged view, `GET /{{ura}}/patient` (localise, fetch from {} sources, merge) | {} | p95 ≤ {VIEW_P95_TARGET_MS:.0} ms | {} |",
        citizen.sources.len() - 1,
        merged.figure(),
        met(merged.p95_ms() <= VIEW_P95_TARGET_MS)
    );
    println!(
        "| emergency view, `POST /{{ura}}/nood` (the same, break the glass) | {} | p95 ≤ {VIEW_P95_TARGET_MS:.0} ms | {} |",
        broken.figure(),
        met(broken.p95_ms() <= VIEW_P95_TARGET_MS)
    );
    println!(
        "| a source that does not answer | not measured; the node's per-source timeout is {} s, the portal's {} s | ≤ its timeout, default {} s | {} |",
        FETCH_SOURCE_TIMEOUT.as_secs_f64(),
        zorgnet_portal::DEFAULT_SOURCE_TIMEOUT.as_secs_f64(),
        SILENT_SOURCE_TARGET.as_secs_f64(),
        if FETCH_SOURCE_TIMEOUT <= SILENT_SOURCE_TARGET {
            "not measured"
        } else {
            "no: the node's timeout is longer"
        }
    );
    if let Some(rss) = rss {
        println!("| the demo's resident memory after the measurements | {rss} MiB | — | — |");
    }
    drop(temporary);
    Ok(())
}

fn met(yes: bool) -> &'static str {
    if yes { "yes" } else { "no" }
}

/// A spinner on stderr with the elapsed time and `message`.
fn spinner(message: String) -> Result<ProgressBar> {
    let bar = ProgressBar::new_spinner()
        .with_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})")?)
        .with_message(message);
    bar.enable_steady_tick(Duration::from_millis(200));
    Ok(bar)
}

/// The demo process, stopped when dropped.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Demo {
    /// Sends Ctrl-C (SIGINT) and waits for the demo to end by itself, successfully.
    async fn interrupt(mut self) -> Result<()> {
        let bar = spinner("stopping the demo (Ctrl-C)".into())?;
        let pid = self.0.id().to_string();
        let sent = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .context("run kill -INT")?;
        anyhow::ensure!(sent.success(), "kill -INT {pid} failed");
        let deadline = Instant::now() + STOP_DEADLINE;
        loop {
            if let Some(status) = self.0.try_wait()? {
                bar.finish_and_clear();
                anyhow::ensure!(status.success(), "the demo ended with {status} on Ctrl-C");
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the demo did not stop within {STOP_DEADLINE:?} of Ctrl-C");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A started demo: the process, what it printed, and when.
struct Started {
    demo: Demo,
    lines: Vec<String>,
    /// When the process was spawned.
    spawned: Instant,
    /// Seconds from the spawn to the printed portal URL.
    portal_s: f64,
    /// Whether the demo said it was its first start (it loaded the patients).
    first: bool,
}

impl Started {
    /// The URL on the line starting with `prefix`.
    fn url_after(&self, prefix: &str) -> Result<&str> {
        self.lines
            .iter()
            .find_map(|line| line.strip_prefix(prefix))
            .map(str::trim)
            .with_context(|| format!("the demo printed no line {prefix:?}"))
    }
}

/// Starts `zorgnet demo` on free ports with `data` and waits for its whole announcement.
async fn start(data: &Path, patients: usize, what: &str) -> Result<Started> {
    let bar = spinner(format!(
        "{what}: zorgnet demo --patients {patients} (until it prints the portal's URL)"
    ))?;
    let exe = std::env::current_exe().context("the path of this binary")?;
    let spawned = Instant::now();
    let mut child = Command::new(exe)
        .args(["demo", "--port", "0", "--patients", &patients.to_string()])
        .arg("--data")
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start zorgnet demo")?;
    let stdout = child.stdout.take().context("the demo's stdout")?;
    let demo = Demo(child);
    let (lines, portal_at) = tokio::time::timeout(
        START_DEADLINE,
        tokio::task::spawn_blocking(move || read_announcement(stdout)),
    )
    .await
    .with_context(|| format!("the demo did not start within {START_DEADLINE:?}"))???;
    bar.finish_and_clear();
    let first = lines.iter().any(|line| line.contains("first start"));
    Ok(Started {
        demo,
        lines,
        spawned,
        portal_s: portal_at.duration_since(spawned).as_secs_f64(),
        first,
    })
}

/// Reads the demo's stdout up to the last line of its announcement, noting when the portal
/// line came; then leaves a thread draining the rest.
fn read_announcement(stdout: std::process::ChildStdout) -> Result<(Vec<String>, Instant)> {
    let mut reader = BufReader::new(stdout);
    let mut lines = Vec::new();
    let mut portal_at = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("the demo ended before it was ready: {lines:#?}");
        }
        if portal_at.is_none() && line.starts_with(PORTAL_LINE) {
            portal_at = Some(Instant::now());
        }
        let last = line.contains(LAST_LINE);
        lines.push(line.trim_end().to_string());
        if last {
            break;
        }
    }
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let portal_at = portal_at.context("the demo printed no portal URL")?;
    Ok((lines, portal_at))
}

/// What the benchmark needs of the demo's network file.
struct Network {
    patients: u64,
    /// (name, URA, data directory) per node.
    nodes: Vec<(String, String, PathBuf)>,
}

fn read_network(data: &Path) -> Result<Network> {
    let path = data.join(crate::demo::NETWORK_FILE);
    let file: Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("read {}", path.display()))?,
    )
    .with_context(|| format!("parse {}", path.display()))?;
    let mut nodes = Vec::new();
    for node in file["nodes"].as_array().into_iter().flatten() {
        let field = |name: &str| {
            node[name]
                .as_str()
                .map(str::to_string)
                .with_context(|| format!("no {name} of a node in {}", path.display()))
        };
        let key_file = PathBuf::from(field("admin_key_file")?);
        let dir = key_file
            .parent()
            .context("a node's key file has no directory")?
            .to_path_buf();
        nodes.push((field("name")?, field("ura")?, dir));
    }
    Ok(Network {
        patients: file["patients"].as_u64().unwrap_or_default(),
        nodes,
    })
}

/// Waits until every node's outbox has delivered its registrations (`zorgnet node status`),
/// and answers the seconds since `since`.
async fn wait_for_outboxes(network: &Network, since: Instant) -> Result<f64> {
    let bar = spinner("waiting for the outboxes to deliver to the referral index".into())?;
    let exe = std::env::current_exe()?;
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    for (name, _, dir) in &network.nodes {
        loop {
            let output = Command::new(&exe)
                .args(["node", "status", "--data"])
                .arg(dir)
                .env("RUST_LOG", "error")
                .output()
                .context("run zorgnet node status")?;
            let status = String::from_utf8_lossy(&output.stdout).to_string();
            anyhow::ensure!(
                output.status.success(),
                "zorgnet node status of {name}: {output:?}"
            );
            if status.starts_with("outbox: 0 pending, 0 refused") {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{name}'s outbox did not drain within {DELIVERY_DEADLINE:?}: {status}"
            );
            bar.set_message(format!(
                "waiting for the outboxes to deliver to the referral index: {name}: {}",
                status.lines().next().unwrap_or_default()
            ));
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
    bar.finish_and_clear();
    Ok(since.elapsed().as_secs_f64())
}

/// Reloads the patient page until it names every other source and no silent one: the
/// hospital's node has learnt every address from the hub's address book.
async fn wait_for_sources(browser: &mut Browser, url: &str, citizen: &Citizen) -> Result<()> {
    let bar = spinner("waiting until the hospital's node reaches every source".into())?;
    let deadline = Instant::now() + ADDRESS_BOOK_DEADLINE;
    loop {
        let page = browser.get(url).await?;
        match citizen.check_view(&page) {
            Ok(()) => break,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(POLL_INTERVAL).await,
            Err(error) => return Err(error.context("the patient page never named every source")),
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// The demo citizen whose data the views show: BSN and the organisations holding data.
struct Citizen {
    bsn: String,
    sources: Vec<String>,
}

impl Citizen {
    /// From the demo's login list: `burger-1 NAME citizen, BSN 123; data at A, B, C`.
    fn of(lines: &[String]) -> Result<Citizen> {
        let line = lines
            .iter()
            .find(|line| line.trim_start().starts_with(&format!("{CITIZEN} ")))
            .with_context(|| format!("the demo lists no {CITIZEN}"))?;
        let bsn = line
            .split("BSN ")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .with_context(|| format!("no BSN in {line:?}"))?;
        let sources = line
            .split("data at ")
            .nth(1)
            .with_context(|| format!("no sources in {line:?}"))?
            .split(", ")
            .map(str::to_string)
            .collect();
        Ok(Citizen {
            bsn: bsn.trim().to_string(),
            sources,
        })
    }

    /// The portal's overview: a 200 with a row of every source.
    fn check_overview(&self, page: &Page) -> Result<()> {
        anyhow::ensure!(page.status == 200, "{} answered {}", page.url, page.status);
        for source in &self.sources {
            anyhow::ensure!(
                page.body.contains(&format!("<td>{source}</td>")),
                "the overview does not show {source}"
            );
        }
        Ok(())
    }

    /// The viewer's patient page: a 200 naming every source but the hospital itself, and no
    /// source that did not answer.
    fn check_view(&self, page: &Page) -> Result<()> {
        anyhow::ensure!(page.status == 200, "{} answered {}", page.url, page.status);
        anyhow::ensure!(
            !page.body.contains(SILENT_NOTICE),
            "a source did not answer"
        );
        for source in self.sources.iter().filter(|s| !s.starts_with("Ziekenhuis")) {
            anyhow::ensure!(
                page.body.contains(&format!("<li>{source}</li>")),
                "the view does not name {source}"
            );
        }
        Ok(())
    }
}

/// Latencies of one view, in milliseconds, sorted.
struct Latencies(Vec<f64>);

impl Latencies {
    /// The `q` quantile, nearest rank.
    fn quantile(&self, q: f64) -> f64 {
        let rank = ((q * self.0.len() as f64).ceil() as usize).clamp(1, self.0.len());
        self.0[rank - 1]
    }

    fn p95_ms(&self) -> f64 {
        self.quantile(0.95)
    }

    fn figure(&self) -> String {
        format!(
            "p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
            self.quantile(0.5),
            self.p95_ms(),
            self.0.last().copied().unwrap_or_default()
        )
    }
}

type Navigation<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Page>> + 'a>>;

/// `requests` navigations of `browser`, one after the other, after [`WARMUP_REQUESTS`] not
/// counted; each answer must pass `check`.
async fn measure(
    what: &str,
    requests: usize,
    browser: &mut Browser,
    navigate: impl for<'a> Fn(&'a mut Browser) -> Navigation<'a>,
    check: impl Fn(&Page) -> Result<()>,
) -> Result<Latencies> {
    let bar = ProgressBar::new((WARMUP_REQUESTS + requests) as u64).with_style(
        ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} requests ({eta} left)")?,
    );
    bar.set_message(what.to_string());
    let mut latencies = Vec::with_capacity(requests);
    for n in 0..WARMUP_REQUESTS + requests {
        let asked = Instant::now();
        let page = navigate(browser).await?;
        let took = asked.elapsed();
        check(&page).with_context(|| format!("{what}: request {}", n + 1))?;
        if n >= WARMUP_REQUESTS {
            latencies.push(took.as_secs_f64() * 1_000.0);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    latencies.sort_by(f64::total_cmp);
    Ok(Latencies(latencies))
}

/// The resident memory of process `pid`, in MiB.
fn resident_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// An answered navigation: the final status, URL and body.
struct Page {
    status: reqwest::StatusCode,
    url: reqwest::Url,
    body: String,
}

impl Page {
    /// The page if it is a 200.
    fn ok(self) -> Result<Page> {
        anyhow::ensure!(
            self.status == 200,
            "{} answered {}: {}",
            self.url,
            self.status,
            self.body
        );
        Ok(self)
    }
}

/// One cookie the browser holds (the demo's parts all live on 127.0.0.1; cookies do not
/// tell ports apart, as in a browser).
#[derive(Debug, PartialEq)]
struct Cookie {
    name: String,
    value: String,
    path: String,
}

/// A browser of one user: HTTPS trusting the demo CA alone, cookies by name and path,
/// redirects followed (a `303` as a `GET`), one kept-alive connection per part.
struct Browser {
    http: reqwest::Client,
    cookies: Vec<Cookie>,
}

impl Browser {
    fn trusting(ca: &Path) -> Result<Browser> {
        let pem = std::fs::read(ca).with_context(|| format!("read {}", ca.display()))?;
        let anchor = zorgnet_trust::tls::read_certificates(&pem)
            .with_context(|| format!("no certificate in {}", ca.display()))?
            .remove(0);
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(zorgnet_trust::tls::anchor_only_client_config(&anchor)?)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("the benchmark's HTTP client")?;
        Ok(Browser {
            http,
            cookies: Vec::new(),
        })
    }

    fn get(&mut self, url: &str) -> Navigation<'_> {
        Box::pin(self.navigate(url.to_string(), None))
    }

    fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Navigation<'_> {
        let form: Vec<(String, String)> = form
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        Box::pin(self.navigate(url.to_string(), Some(form)))
    }

    async fn navigate(
        &mut self,
        url: String,
        mut form: Option<Vec<(String, String)>>,
    ) -> Result<Page> {
        let mut url = reqwest::Url::parse(&url).with_context(|| format!("parse {url}"))?;
        for _ in 0..=MAX_REDIRECTS {
            let request = match form.take() {
                Some(fields) => self.http.post(url.clone()).form(&fields),
                None => self.http.get(url.clone()),
            };
            let request = match self.cookie_header(url.path()) {
                Some(cookies) => request.header(reqwest::header::COOKIE, cookies),
                None => request,
            };
            let answer = request.send().await.with_context(|| format!("ask {url}"))?;
            for set in answer.headers().get_all(reqwest::header::SET_COOKIE) {
                if let Ok(set) = set.to_str() {
                    self.store(url.path(), set);
                }
            }
            if answer.status().is_redirection() {
                let location = answer
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .with_context(|| format!("{url} redirects without a Location"))?;
                url = url
                    .join(location)
                    .with_context(|| format!("{url} redirects to {location:?}"))?;
                continue;
            }
            let status = answer.status();
            let body = answer
                .text()
                .await
                .with_context(|| format!("read the answer of {url}"))?;
            return Ok(Page { status, url, body });
        }
        bail!("more than {MAX_REDIRECTS} redirects from {url}")
    }

    /// The `Cookie` header for a request to `path`, if any cookie matches.
    fn cookie_header(&self, path: &str) -> Option<String> {
        let sent: Vec<String> = self
            .cookies
            .iter()
            .filter(|cookie| path_matches(path, &cookie.path))
            .map(|cookie| format!("{}={}", cookie.name, cookie.value))
            .collect();
        (!sent.is_empty()).then(|| sent.join("; "))
    }

    /// Keeps (or, with `Max-Age=0`, drops) the cookie of a `Set-Cookie` header answered to
    /// a request for `request_path`.
    fn store(&mut self, request_path: &str, set_cookie: &str) {
        let mut parts = set_cookie.split(';').map(str::trim);
        let Some((name, value)) = parts.next().and_then(|pair| pair.split_once('=')) else {
            return;
        };
        let mut path = match request_path.rfind('/') {
            Some(0) | None => "/".to_string(),
            Some(end) => request_path[..end].to_string(),
        };
        let mut expired = false;
        for attribute in parts {
            let (key, val) = attribute.split_once('=').unwrap_or((attribute, ""));
            if key.eq_ignore_ascii_case("path") && val.starts_with('/') {
                path = val.to_string();
            } else if key.eq_ignore_ascii_case("max-age") {
                expired = val.trim().parse::<i64>().is_ok_and(|age| age <= 0);
            }
        }
        self.cookies
            .retain(|cookie| !(cookie.name == name && cookie.path == path));
        if !expired {
            self.cookies.push(Cookie {
                name: name.to_string(),
                value: value.to_string(),
                path,
            });
        }
    }
}

/// Whether a request to `path` carries a cookie of `cookie_path` (RFC 6265, 5.1.4).
fn path_matches(path: &str, cookie_path: &str) -> bool {
    path == cookie_path
        || (path.starts_with(cookie_path)
            && (cookie_path.ends_with('/') || path[cookie_path.len()..].starts_with('/')))
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

/// The CSRF token of a page's forms.
fn csrf(page: &str) -> Result<String> {
    hidden_inputs(page)
        .into_iter()
        .find(|(name, _)| name == "csrf")
        .map(|(_, value)| value)
        .context("no CSRF token on the page")
}

/// Logs `browser` in at `login` as `user` through the identity provider's form, and
/// answers the page it lands on (a 200).
async fn log_in(browser: &mut Browser, login: &str, user: &str) -> Result<Page> {
    let form = browser.get(login).await?.ok()?;
    anyhow::ensure!(
        form.url.path().ends_with("/authorize"),
        "{login} did not lead to the identity provider's form but to {}",
        form.url
    );
    let mut fields = hidden_inputs(&form.body);
    fields.push(("user".into(), user.into()));
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let mut authorize = form.url.clone();
    authorize.set_query(None);
    browser
        .post(authorize.as_str(), &fields)
        .await?
        .ok()
        .with_context(|| format!("{user} logs in at {login}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_go_where_their_path_says_and_max_age_0_drops_them() {
        let mut browser = Browser {
            http: reqwest::Client::new(),
            cookies: Vec::new(),
        };
        browser.store("/login", "portal=1; Path=/; HttpOnly");
        browser.store(
            "/zorgverlener/1/login",
            "login=2; Path=/zorgverlener/1/callback",
        );
        browser.store("/zorgverlener/1/x", "session=3");
        assert_eq!(
            browser.cookie_header("/overzicht").as_deref(),
            Some("portal=1")
        );
        assert_eq!(
            browser.cookie_header("/zorgverlener/1/callback").as_deref(),
            Some("portal=1; login=2; session=3")
        );
        assert_eq!(
            browser.cookie_header("/zorgverlener/10").as_deref(),
            Some("portal=1")
        );
        browser.store(
            "/zorgverlener/1/callback",
            "login=; Path=/zorgverlener/1/callback; Max-Age=0",
        );
        assert_eq!(
            browser.cookie_header("/zorgverlener/1/callback").as_deref(),
            Some("portal=1; session=3")
        );
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let latencies = Latencies((1..=100).map(f64::from).collect());
        assert_eq!(latencies.quantile(0.5), 50.0);
        assert_eq!(latencies.p95_ms(), 95.0);
        assert_eq!(Latencies(vec![7.0]).p95_ms(), 7.0);
    }
}
