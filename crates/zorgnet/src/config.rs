//! Settings of the commands that run a service (`node`, `node status`, `hub`, `demo`):
//! defaults < TOML file (`--config`) < `ZORGNET_*` environment variables < command line.
//!
//! A TOML key is the long option as written on the command line (`base-url = "…"`); the
//! snake_case spelling (`base_url`) is accepted too, as files written before keys were
//! documented used it. Unknown keys are refused, so a misspelt setting is never ignored.
//! `--help` shows every default, because clap holds them: whether a value came from clap's
//! default or from the command line or environment ([`clap::parser::ValueSource`]) decides
//! whether the file may override it.
//! One-off commands (`generate`, `import`, `bench`, …) take arguments, not settings: they
//! have no environment variables and no file.

use anyhow::{Context, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where a node keeps its SQLite database when nothing says otherwise.
pub const DEFAULT_NODE_DATA: &str = "zorgnet-data";
/// A node's listen address when nothing says otherwise.
pub const DEFAULT_NODE_LISTEN: &str = "127.0.0.1:8080";
/// Where a hub keeps its keys and SQLite database when nothing says otherwise.
pub const DEFAULT_HUB_DATA: &str = "zorgnet-data/hub";
/// A hub's listen address when nothing says otherwise.
pub const DEFAULT_HUB_LISTEN: &str = "127.0.0.1:7000";
/// Seconds between a hub's polls of its mCSD update suppliers when nothing says otherwise.
pub const DEFAULT_HUB_SYNC_INTERVAL_S: u64 = 60;
/// Seconds between refreshes of the revocation list when nothing says otherwise: a revoked
/// certificate is refused within this time (plus the operator's publishing of the list).
pub const DEFAULT_CRL_REFRESH_S: u64 = 300;

/// Where a node's data is: all that `zorgnet node status` needs, and part of `zorgnet node`.
#[derive(Args, Debug)]
pub struct NodeStorageArgs {
    /// TOML settings file; keys as the long options (`data`, `listen`, `base-url`, …), and
    /// a `[monitor]` table for the access log's alert rules.
    #[arg(long, env = "ZORGNET_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the SQLite database (ignored with --postgres).
    #[arg(long, env = "ZORGNET_DATA", default_value = DEFAULT_NODE_DATA)]
    data: PathBuf,
    /// PostgreSQL URL; when set, PostgreSQL is used instead of SQLite.
    #[arg(long, env = "ZORGNET_POSTGRES", hide_env_values = true)]
    postgres: Option<String>,
}

/// Command-line (and environment) arguments of `zorgnet node`.
#[derive(Args, Debug)]
pub struct NodeArgs {
    #[command(flatten)]
    storage: NodeStorageArgs,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "ZORGNET_LISTEN", default_value = DEFAULT_NODE_LISTEN)]
    listen: String,
    /// URA number of the organisation running this node (required).
    #[arg(long, env = "ZORGNET_URA")]
    ura: Option<String>,
    /// Name of the organisation [default: organisation <URA>].
    #[arg(long, env = "ZORGNET_NAME")]
    name: Option<String>,
    /// Public base URL of the FHIR API [default: http://<listen address>/fhir].
    #[arg(long, env = "ZORGNET_BASE_URL")]
    base_url: Option<String>,
    /// Base URL of the hub whose referral index this node registers at (e.g.
    /// http://hub:7000); without it, registrations wait in the outbox.
    #[arg(long, env = "ZORGNET_HUB")]
    hub: Option<String>,
    /// This organisation's API key at the hub.
    #[arg(long, env = "ZORGNET_HUB_KEY", hide_env_values = true)]
    hub_key: Option<String>,
    /// How long (milliseconds) a consent decision of the hub is reused before other
    /// organisations' reads ask again; a citizen's change takes effect within this time.
    #[arg(long, env = "ZORGNET_CONSENT_CACHE_TTL_MS",
        default_value_t = zorgnet_node::access::DEFAULT_DECISION_TTL.as_millis() as u64)]
    consent_cache_ttl_ms: u64,
    /// Directory with the organisation's TLS credentials as `zorgnet ca issue` writes them:
    /// `cert.pem`, `key.pem`, the network CA's `ca.pem` and a first `crl.pem`. The node
    /// serves HTTPS, verifies other organisations' client certificates, and shows its own to
    /// the hub and to other nodes. Required unless --insecure-dev.
    #[arg(long, env = "ZORGNET_TLS")]
    tls: Option<PathBuf>,
    /// Seconds between fetches of the revocation list from the hub (at least 1).
    #[arg(long, env = "ZORGNET_CRL_REFRESH_S", default_value_t = DEFAULT_CRL_REFRESH_S)]
    crl_refresh_s: u64,
    /// Development only: plain HTTP, and requests without credentials served as the node's
    /// administrator. Accepted only on a loopback listen address; warns at every start.
    #[arg(long, env = "ZORGNET_INSECURE_DEV", conflicts_with = "tls")]
    insecure_dev: bool,
    /// The organisation's OpenID Connect provider (issuer URL): its professionals' and
    /// systems' bearer tokens are accepted within their SMART scopes.
    #[arg(
        long,
        env = "ZORGNET_STAFF_OIDC_ISSUER",
        requires = "staff_oidc_audience"
    )]
    staff_oidc_issuer: Option<String>,
    /// The client id the staff provider's tokens must name as audience.
    #[arg(
        long,
        env = "ZORGNET_STAFF_OIDC_AUDIENCE",
        requires = "staff_oidc_issuer"
    )]
    staff_oidc_audience: Option<String>,
    /// The citizens' OpenID Connect provider (issuer URL, DigiD-like): a citizen's token
    /// (BSN or zorgverificatienummer) reads their own data, nothing else.
    #[arg(
        long,
        env = "ZORGNET_CITIZEN_OIDC_ISSUER",
        requires = "citizen_oidc_audience"
    )]
    citizen_oidc_issuer: Option<String>,
    /// The client id the citizens' provider's tokens must name as audience.
    #[arg(
        long,
        env = "ZORGNET_CITIZEN_OIDC_AUDIENCE",
        requires = "citizen_oidc_issuer"
    )]
    citizen_oidc_audience: Option<String>,
    /// The CA certificate (PEM) to verify the OpenID providers by, instead of the
    /// platform's roots.
    #[arg(long, env = "ZORGNET_OIDC_CACERT")]
    oidc_cacert: Option<PathBuf>,
    /// A folder of StructureDefinitions, ValueSets and CodeSystems (JSON files, or FHIR
    /// packages) that `$validate` and --enforce-profiles use beside those stored in the node.
    #[arg(long, env = "ZORGNET_PROFILES")]
    profiles: Option<PathBuf>,
    /// Refuse (422) creates and updates that break a profile they declare in `meta.profile`.
    #[arg(long, env = "ZORGNET_ENFORCE_PROFILES")]
    enforce_profiles: bool,
}

/// Command-line (and environment) arguments of `zorgnet hub`.
#[derive(Args, Debug)]
pub struct HubArgs {
    /// TOML settings file; keys as the long options (`data`, `listen`, `sync-interval-s`, …).
    #[arg(long, env = "ZORGNET_HUB_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for keys (and the SQLite database unless --postgres is given).
    #[arg(long, env = "ZORGNET_HUB_DATA", default_value = DEFAULT_HUB_DATA)]
    data: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "ZORGNET_HUB_LISTEN", default_value = DEFAULT_HUB_LISTEN)]
    listen: String,
    /// PostgreSQL URL; when set, the hub's tables live there.
    #[arg(long, env = "ZORGNET_HUB_POSTGRES", hide_env_values = true)]
    postgres: Option<String>,
    /// Seconds between polls of the mCSD update suppliers (at least 1).
    #[arg(long, env = "ZORGNET_HUB_SYNC_INTERVAL_S", default_value_t = DEFAULT_HUB_SYNC_INTERVAL_S)]
    sync_interval_s: u64,
    /// Development only: accept plain-http and local addresses in the address book.
    #[arg(long, env = "ZORGNET_HUB_ALLOW_INSECURE_ENDPOINTS")]
    allow_insecure_endpoints: bool,
    /// Directory with the hub's TLS credentials as `zorgnet ca issue-service` writes them
    /// (`cert.pem`, `key.pem`, `ca.pem`) and the revocation list `crl.pem`, which the
    /// operator replaces with `zorgnet ca crl --out`; the hub re-reads it, enforces it and
    /// publishes it at `/trust/crl`. Required unless --insecure-dev.
    #[arg(long, env = "ZORGNET_HUB_TLS")]
    tls: Option<PathBuf>,
    /// Seconds between re-reads of `crl.pem` (at least 1).
    #[arg(long, env = "ZORGNET_HUB_CRL_REFRESH_S", default_value_t = DEFAULT_CRL_REFRESH_S)]
    crl_refresh_s: u64,
    /// Development only: plain HTTP on a loopback address, and plain-http and local
    /// addresses in the address book. Warns at every start.
    #[arg(long, env = "ZORGNET_HUB_INSECURE_DEV", conflicts_with = "tls")]
    insecure_dev: bool,
    /// URA of a registered organisation admitted as a citizen portal: it authenticates
    /// citizens itself and manages every consent directive of the citizen it names
    /// (repeatable; comma-separated in the environment).
    #[arg(long, env = "ZORGNET_HUB_CITIZEN_PORTALS", value_delimiter = ',')]
    citizen_portal: Vec<String>,
}

/// A node's settings file.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct NodeFile {
    data: Option<PathBuf>,
    listen: Option<String>,
    ura: Option<String>,
    name: Option<String>,
    postgres: Option<String>,
    #[serde(alias = "base_url")]
    base_url: Option<String>,
    hub: Option<String>,
    #[serde(alias = "hub_key")]
    hub_key: Option<String>,
    #[serde(alias = "consent_cache_ttl_ms")]
    consent_cache_ttl_ms: Option<u64>,
    #[serde(alias = "insecure_dev")]
    insecure_dev: Option<bool>,
    tls: Option<PathBuf>,
    #[serde(alias = "crl_refresh_s")]
    crl_refresh_s: Option<u64>,
    #[serde(alias = "staff_oidc_issuer")]
    staff_oidc_issuer: Option<String>,
    #[serde(alias = "staff_oidc_audience")]
    staff_oidc_audience: Option<String>,
    #[serde(alias = "citizen_oidc_issuer")]
    citizen_oidc_issuer: Option<String>,
    #[serde(alias = "citizen_oidc_audience")]
    citizen_oidc_audience: Option<String>,
    #[serde(alias = "oidc_cacert")]
    oidc_cacert: Option<PathBuf>,
    profiles: Option<PathBuf>,
    #[serde(alias = "enforce_profiles")]
    enforce_profiles: Option<bool>,
    /// The access log's monitoring rules: a `[monitor]` table, file only.
    monitor: Option<zorgnet_audit::MonitorRules>,
}

/// A hub's settings file.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct HubFile {
    data: Option<PathBuf>,
    listen: Option<String>,
    postgres: Option<String>,
    #[serde(alias = "sync_interval_s")]
    sync_interval_s: Option<u64>,
    #[serde(alias = "allow_insecure_endpoints")]
    allow_insecure_endpoints: Option<bool>,
    tls: Option<PathBuf>,
    #[serde(alias = "crl_refresh_s")]
    crl_refresh_s: Option<u64>,
    #[serde(alias = "insecure_dev")]
    insecure_dev: Option<bool>,
    #[serde(alias = "citizen_portal")]
    citizen_portal: Option<Vec<String>>,
}

/// Resolved settings of a node.
#[derive(Debug)]
pub struct NodeSettings {
    /// SQLite directory.
    pub data: PathBuf,
    /// Listen address.
    pub listen: String,
    /// URA number.
    pub ura: String,
    /// Organisation name.
    pub name: String,
    /// PostgreSQL URL.
    pub postgres: Option<String>,
    /// Public base URL.
    pub base_url: Option<String>,
    /// The hub and this organisation's key there.
    pub hub: Option<(String, String)>,
    /// How other organisations' reads are checked against the consent register.
    pub access: zorgnet_node::access::AccessConfig,
    /// Plain HTTP, requests without credentials served as the administrator (development
    /// only).
    pub insecure_dev: bool,
    /// The TLS credentials' directory.
    pub tls: Option<PathBuf>,
    /// Time between fetches of the revocation list.
    pub crl_refresh: Duration,
    /// The staff's OpenID provider: issuer and audience.
    pub staff_oidc: Option<(String, String)>,
    /// The citizens' OpenID provider: issuer and audience.
    pub citizen_oidc: Option<(String, String)>,
    /// The root to verify the OpenID providers by.
    pub oidc_cacert: Option<PathBuf>,
    /// The folder of profiles loaded at start.
    pub profiles: Option<PathBuf>,
    /// Whether writes must conform to the profiles they declare.
    pub enforce_profiles: bool,
    /// The access log's monitoring rules (the file's `[monitor]` table, checked), else the
    /// defaults.
    pub monitor: zorgnet_audit::MonitorRules,
}

/// Where a node's data is.
#[derive(Debug)]
pub struct NodeStorage {
    /// SQLite directory (unused with `postgres`).
    pub data: PathBuf,
    /// PostgreSQL URL.
    pub postgres: Option<String>,
}

/// Resolved settings of a hub.
#[derive(Debug)]
pub struct HubSettings {
    /// Key (and SQLite) directory.
    pub data: PathBuf,
    /// Listen address.
    pub listen: String,
    /// PostgreSQL URL.
    pub postgres: Option<String>,
    /// Time between polls of the mCSD update suppliers.
    pub sync_interval: Duration,
    /// Development only: plain-http and local addresses in the address book.
    pub allow_insecure_endpoints: bool,
    /// The TLS credentials' directory.
    pub tls: Option<PathBuf>,
    /// Time between re-reads of the revocation list.
    pub crl_refresh: Duration,
    /// Development only: plain HTTP on loopback.
    pub insecure_dev: bool,
    /// URAs of the organisations admitted as citizen portals.
    pub citizen_portals: Vec<String>,
}

/// Whether the command line or the environment set `id`, rather than clap's default.
fn given(matches: &ArgMatches, id: &str) -> bool {
    matches
        .value_source(id)
        .is_some_and(|source| source != ValueSource::DefaultValue)
}

/// A setting with a default in clap: the command line's or the environment's value, else
/// the file's, else the default.
fn layered<T>(matches: &ArgMatches, id: &str, value: T, file: Option<T>) -> T {
    match file {
        Some(from_file) if !given(matches, id) => from_file,
        _ => value,
    }
}

fn read_file<T: serde::de::DeserializeOwned + Default>(path: Option<&Path>) -> Result<T> {
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read settings file {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parse settings file {}", path.display()))
        }
        None => Ok(T::default()),
    }
}

impl NodeStorage {
    /// Merges `node status`'s command line, environment and file over the defaults.
    pub fn resolve(args: NodeStorageArgs, matches: &ArgMatches) -> Result<NodeStorage> {
        let file: NodeFile = read_file(args.config.as_deref())?;
        Ok(NodeStorage::merge(args, &file, matches))
    }

    fn merge(args: NodeStorageArgs, file: &NodeFile, matches: &ArgMatches) -> NodeStorage {
        NodeStorage {
            data: layered(matches, "data", args.data, file.data.clone()),
            postgres: args.postgres.or_else(|| file.postgres.clone()),
        }
    }
}

impl NodeSettings {
    /// Merges command line, environment and file over the defaults.
    pub fn resolve(args: NodeArgs, matches: &ArgMatches) -> Result<NodeSettings> {
        let file: NodeFile = read_file(args.storage.config.as_deref())?;
        let storage = NodeStorage::merge(args.storage, &file, matches);
        let hub = match (args.hub.or(file.hub), args.hub_key.or(file.hub_key)) {
            (Some(url), Some(key)) => Some((url.trim_end_matches('/').to_string(), key)),
            (None, None) => None,
            (Some(_), None) => anyhow::bail!("--hub needs --hub-key (or ZORGNET_HUB_KEY)"),
            (None, Some(_)) => anyhow::bail!("--hub-key needs --hub (or ZORGNET_HUB)"),
        };
        let ura = args
            .ura
            .or(file.ura)
            .context("--ura (or ZORGNET_URA, or `ura` in the settings file) is required")?;
        if ura.len() != 8 || !ura.bytes().all(|b| b.is_ascii_digit()) {
            anyhow::bail!("URA must be 8 digits, not '{ura}'");
        }
        let monitor = file.monitor.unwrap_or_default();
        zorgnet_audit::Monitor::new(&monitor).context("the settings file's [monitor] table")?;
        let decision_ttl_ms = layered(
            matches,
            "consent_cache_ttl_ms",
            args.consent_cache_ttl_ms,
            file.consent_cache_ttl_ms,
        );
        Ok(NodeSettings {
            data: storage.data,
            postgres: storage.postgres,
            listen: layered(matches, "listen", args.listen, file.listen),
            name: args
                .name
                .or(file.name)
                .unwrap_or_else(|| format!("organisation {ura}")),
            ura,
            base_url: args
                .base_url
                .or(file.base_url)
                .map(|b| b.trim_end_matches('/').to_string()),
            hub,
            access: zorgnet_node::access::AccessConfig {
                decision_ttl: Duration::from_millis(decision_ttl_ms),
            },
            insecure_dev: args.insecure_dev || file.insecure_dev.unwrap_or(false),
            tls: args.tls.or(file.tls),
            crl_refresh: crl_refresh(layered(
                matches,
                "crl_refresh_s",
                args.crl_refresh_s,
                file.crl_refresh_s,
            ))?,
            staff_oidc: provider(
                "staff",
                args.staff_oidc_issuer.or(file.staff_oidc_issuer),
                args.staff_oidc_audience.or(file.staff_oidc_audience),
            )?,
            citizen_oidc: provider(
                "citizen",
                args.citizen_oidc_issuer.or(file.citizen_oidc_issuer),
                args.citizen_oidc_audience.or(file.citizen_oidc_audience),
            )?,
            oidc_cacert: args.oidc_cacert.or(file.oidc_cacert),
            profiles: args.profiles.or(file.profiles),
            enforce_profiles: args.enforce_profiles || file.enforce_profiles.unwrap_or(false),
            monitor,
        })
    }
}

/// An OpenID provider's issuer and audience: both or neither.
fn provider(
    who: &str,
    issuer: Option<String>,
    audience: Option<String>,
) -> Result<Option<(String, String)>> {
    match (issuer, audience) {
        (Some(issuer), Some(audience)) => Ok(Some((issuer, audience))),
        (None, None) => Ok(None),
        _ => anyhow::bail!("--{who}-oidc-issuer and --{who}-oidc-audience come together"),
    }
}

impl HubSettings {
    /// Merges command line, environment and file over the defaults.
    pub fn resolve(args: HubArgs, matches: &ArgMatches) -> Result<HubSettings> {
        let file: HubFile = read_file(args.config.as_deref())?;
        let sync_interval_s = layered(
            matches,
            "sync_interval_s",
            args.sync_interval_s,
            file.sync_interval_s,
        );
        if sync_interval_s == 0 {
            anyhow::bail!("--sync-interval-s must be at least 1");
        }
        Ok(HubSettings {
            data: layered(matches, "data", args.data, file.data),
            listen: layered(matches, "listen", args.listen, file.listen),
            postgres: args.postgres.or(file.postgres),
            sync_interval: Duration::from_secs(sync_interval_s),
            allow_insecure_endpoints: args.allow_insecure_endpoints
                || file.allow_insecure_endpoints.unwrap_or(false),
            tls: args.tls.or(file.tls),
            crl_refresh: crl_refresh(layered(
                matches,
                "crl_refresh_s",
                args.crl_refresh_s,
                file.crl_refresh_s,
            ))?,
            insecure_dev: args.insecure_dev || file.insecure_dev.unwrap_or(false),
            citizen_portals: if args.citizen_portal.is_empty() {
                file.citizen_portal.unwrap_or_default()
            } else {
                args.citizen_portal
            },
        })
    }
}

fn crl_refresh(seconds: u64) -> Result<Duration> {
    if seconds == 0 {
        anyhow::bail!("--crl-refresh-s must be at least 1");
    }
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Parser)]
    struct NodeCli {
        #[command(flatten)]
        args: NodeArgs,
    }

    #[derive(Parser)]
    struct HubCli {
        #[command(flatten)]
        args: HubArgs,
    }

    fn node(argv: &[&str]) -> Result<NodeSettings> {
        let matches = NodeCli::command()
            .try_get_matches_from(std::iter::once("node").chain(argv.iter().copied()))?;
        let cli = NodeCli::from_arg_matches(&matches)?;
        NodeSettings::resolve(cli.args, &matches)
    }

    fn hub(argv: &[&str]) -> Result<HubSettings> {
        let matches = HubCli::command()
            .try_get_matches_from(std::iter::once("hub").chain(argv.iter().copied()))?;
        let cli = HubCli::from_arg_matches(&matches)?;
        HubSettings::resolve(cli.args, &matches)
    }

    fn settings_file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.toml");
        std::fs::write(&path, text).unwrap();
        let path = path.to_str().unwrap().to_string();
        (dir, path)
    }

    #[test]
    fn command_line_beats_file_and_file_beats_defaults() {
        let (_dir, path) = settings_file(
            "ura = \"12345678\"\nname = \"From file\"\nlisten = \"127.0.0.1:9999\"\n",
        );
        let settings = node(&["--config", &path, "--name", "From CLI"]).unwrap();
        assert_eq!(settings.name, "From CLI");
        assert_eq!(settings.listen, "127.0.0.1:9999");
        assert_eq!(settings.ura, "12345678");
        assert_eq!(settings.data, PathBuf::from(DEFAULT_NODE_DATA));
        let settings = node(&["--config", &path, "--listen", "127.0.0.1:1"]).unwrap();
        assert_eq!(
            settings.listen, "127.0.0.1:1",
            "the command line beats the file"
        );
    }

    #[test]
    fn file_keys_are_the_long_options_and_snake_case_is_accepted() {
        let (_dir, path) = settings_file(
            "ura = \"12345678\"\nbase-url = \"https://node.example/fhir/\"\nhub = \"http://hub:7000\"\n\
             hub-key = \"secret\"\nconsent-cache-ttl-ms = 1234\n",
        );
        let settings = node(&["--config", &path]).unwrap();
        assert_eq!(
            settings.base_url.as_deref(),
            Some("https://node.example/fhir")
        );
        assert_eq!(
            settings.hub,
            Some(("http://hub:7000".to_string(), "secret".to_string()))
        );
        assert_eq!(settings.access.decision_ttl, Duration::from_millis(1234));
        let (_dir, path) = settings_file(
            "ura = \"12345678\"\nbase_url = \"https://old.example/fhir\"\nconsent_cache_ttl_ms = 5\n",
        );
        let settings = node(&["--config", &path]).unwrap();
        assert_eq!(
            settings.base_url.as_deref(),
            Some("https://old.example/fhir")
        );
        assert_eq!(settings.access.decision_ttl, Duration::from_millis(5));
        let settings = node(&["--config", &path, "--consent-cache-ttl-ms", "7"]).unwrap();
        assert_eq!(settings.access.decision_ttl, Duration::from_millis(7));
    }

    #[test]
    fn the_monitor_table_sets_the_alert_rules() {
        let (_dir, path) = settings_file(
            "ura = \"12345678\"\n[monitor]\nunrelated-patients-max = 20\nemergency-burst = false\n",
        );
        let settings = node(&["--config", &path]).unwrap();
        assert_eq!(
            settings.monitor,
            zorgnet_audit::MonitorRules {
                unrelated_patients_max: 20,
                emergency_burst: false,
                ..zorgnet_audit::MonitorRules::default()
            }
        );
        let defaults = node(&["--ura", "12345678"]).unwrap();
        assert_eq!(defaults.monitor, zorgnet_audit::MonitorRules::default());
        for refused in [
            "[monitor]\nunrelated-patients-window-s = 0\n",
            "[monitor]\nemergency-burst-max = 1000000\n",
            "[monitor]\npatients-per-hour = 5\n",
        ] {
            let (_dir, path) = settings_file(&format!("ura = \"12345678\"\n{refused}"));
            assert!(node(&["--config", &path]).is_err(), "{refused}");
        }
    }

    #[test]
    fn hub_reads_its_settings_file() {
        let (_dir, path) =
            settings_file("data = \"/srv/hub\"\nlisten = \"0.0.0.0:7001\"\nsync-interval-s = 5\n");
        let settings = hub(&["--config", &path]).unwrap();
        assert_eq!(settings.data, PathBuf::from("/srv/hub"));
        assert_eq!(settings.listen, "0.0.0.0:7001");
        assert_eq!(settings.sync_interval, Duration::from_secs(5));
        let settings = hub(&["--config", &path, "--sync-interval-s", "9"]).unwrap();
        assert_eq!(settings.sync_interval, Duration::from_secs(9));
        let defaults = hub(&[]).unwrap();
        assert_eq!(defaults.listen, DEFAULT_HUB_LISTEN);
        assert_eq!(
            defaults.sync_interval,
            Duration::from_secs(DEFAULT_HUB_SYNC_INTERVAL_S)
        );
        assert!(hub(&["--sync-interval-s", "0"]).is_err());
        let (_dir, path) = settings_file("sync-intervall-s = 5\n");
        assert!(hub(&["--config", &path]).is_err());
    }

    #[test]
    fn unknown_keys_and_bad_ura_are_refused() {
        let (_dir, path) = settings_file("ura = \"12345678\"\nlisten_adress = \"x\"\n");
        assert!(node(&["--config", &path]).is_err());
        assert!(node(&["--ura", "123"]).is_err());
        assert!(node(&[]).is_err(), "the URA is required");
    }
}
