//! The `zorgnet` command: run a node, a demo node with synthetic data, generate data, import.
//!
//! This is the binary edge: it parses arguments and configuration, opens storage, and turns
//! errors into messages (`anyhow`). The logic lives in the library crates.

mod bench;
mod config;
mod import;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::io::Write as _;
use std::path::PathBuf;
use zorgnet_fhir::search::SearchRegistry;
use zorgnet_node::NodeIdentity;
use zorgnet_store::Store;

#[derive(Parser)]
#[command(
    name = "zorgnet",
    version,
    about = "zorgnet: a FHIR R4 node for the Dutch health-information network"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: the FHIR R4 server of one care organisation.
    Node(config::NodeArgs),
    /// Run a node on a local SQLite database, filled with synthetic Dutch patients on first start.
    Demo(DemoArgs),
    /// Write deterministic synthetic Dutch FHIR data (NDJSON, or transaction Bundles for .json).
    Generate(GenerateArgs),
    /// Load NDJSON or Bundle files into a node (over HTTP) or straight into its database.
    Import(import::ImportArgs),
    /// Measure import, read, search and `$everything` on synthetic data (needs `wrk`).
    Bench(bench::BenchArgs),
}

#[derive(Args)]
struct DemoArgs {
    /// Directory for the SQLite database.
    #[arg(long, default_value = "zorgnet-data/demo")]
    data: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Synthetic patients loaded on first start.
    #[arg(long, default_value_t = 100)]
    patients: usize,
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

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Node(args) => run_node(config::NodeSettings::resolve(args)?).await,
            Command::Demo(args) => demo(args).await,
            Command::Generate(args) => generate(args),
            Command::Import(args) => import::run(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    })
}

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
                let path = data.join("node.sqlite");
                Store::open_sqlite(&path, registry)
                    .with_context(|| format!("open SQLite storage at {}", path.display()))
            }
        }
    })
    .await?
}

async fn run_node(settings: config::NodeSettings) -> Result<()> {
    let store = open_store(&settings.data, settings.postgres.as_deref()).await?;
    serve(
        store,
        &settings.listen,
        NodeIdentity {
            ura: settings.ura,
            name: settings.name,
        },
        settings.base_url,
    )
    .await
}

async fn serve(
    store: Store,
    listen: &str,
    identity: NodeIdentity,
    base_url: Option<String>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listen on {listen}"))?;
    let address = listener.local_addr()?;
    let shown_base = base_url
        .clone()
        .unwrap_or_else(|| format!("http://{address}/fhir"));
    tracing::info!(%address, ura = %identity.ura, "node listening");
    // A supervisor may close stdout; the node must keep serving, so print errors are ignored.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "zorgnet node '{}' (URA {}) serving FHIR R4 at {shown_base}",
        identity.name, identity.ura
    );
    let _ = writeln!(
        stdout,
        "  try: curl {shown_base}/metadata   |   curl '{shown_base}/Patient?_count=5'"
    );
    let _ = stdout.flush();
    drop(stdout);
    let router = zorgnet_node::router(store, identity, base_url);
    zorgnet_node::serve(listener, router, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .context("serve HTTP")
}

async fn demo(args: DemoArgs) -> Result<()> {
    let store = open_store(&args.data, None).await?;
    let existing: i64 = store.counts().await?.iter().map(|(_, n)| n).sum();
    if existing == 0 {
        println!(
            "first start: loading {} synthetic patients into {}",
            args.patients,
            args.data.display()
        );
        let generator = zorgnet_synth::Generator::new(zorgnet_synth::SynthConfig {
            patients: args.patients,
            seed: 1,
        });
        let report = import::load_into_store(&store, generator.resources(), None).await?;
        println!(
            "loaded {} resources ({} failed)",
            report.stored,
            report.failures.len()
        );
    }
    let identity = NodeIdentity {
        ura: "00000001".into(),
        name: "zorgnet demo huisartsenpraktijk".into(),
    };
    serve(store, &args.listen, identity, None).await
}

fn generate(args: GenerateArgs) -> Result<()> {
    let generator = zorgnet_synth::Generator::new(zorgnet_synth::SynthConfig {
        patients: args.patients,
        seed: args.seed,
    });
    let format = zorgnet_synth::OutputFormat::from_path(&args.out);
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("create {}", args.out.display()))?;
    let progress = indicatif::ProgressBar::new_spinner();
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
