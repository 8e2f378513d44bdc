//! Node settings: defaults < TOML file < `ZORGNET_*` environment variables < command line.

use anyhow::{Context, Result};
use clap::Args;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Command-line (and environment) arguments of `zorgnet node`.
#[derive(Args, Debug, Default)]
pub struct NodeArgs {
    /// TOML settings file (keys as the long options, `data`, `listen`, `ura`, …).
    #[arg(long, env = "ZORGNET_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the SQLite database (ignored with --postgres).
    #[arg(long, env = "ZORGNET_DATA")]
    data: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port).
    #[arg(long, env = "ZORGNET_LISTEN")]
    listen: Option<String>,
    /// URA number of the organisation running this node.
    #[arg(long, env = "ZORGNET_URA")]
    ura: Option<String>,
    /// Name of the organisation.
    #[arg(long, env = "ZORGNET_NAME")]
    name: Option<String>,
    /// PostgreSQL URL; when set, PostgreSQL is used instead of SQLite.
    #[arg(long, env = "ZORGNET_POSTGRES")]
    postgres: Option<String>,
    /// Public base URL of the FHIR API (default: from the request's Host header).
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
    #[arg(long, env = "ZORGNET_CONSENT_CACHE_TTL_MS")]
    consent_cache_ttl_ms: Option<u64>,
}

/// The settings file.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    /// See [`NodeArgs::data`].
    data: Option<PathBuf>,
    /// See [`NodeArgs::listen`].
    listen: Option<String>,
    /// See [`NodeArgs::ura`].
    ura: Option<String>,
    /// See [`NodeArgs::name`].
    name: Option<String>,
    /// See [`NodeArgs::postgres`].
    postgres: Option<String>,
    /// See [`NodeArgs::base_url`].
    base_url: Option<String>,
    /// See [`NodeArgs::hub`].
    hub: Option<String>,
    /// See [`NodeArgs::hub_key`].
    hub_key: Option<String>,
    /// See [`NodeArgs::consent_cache_ttl_ms`].
    consent_cache_ttl_ms: Option<u64>,
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
}

impl NodeSettings {
    /// Merges command line, environment and file over the defaults.
    pub fn resolve(args: NodeArgs) -> Result<NodeSettings> {
        let file = FileSettings::read(&args)?;
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
        Ok(NodeSettings {
            data: args
                .data
                .or(file.data)
                .unwrap_or_else(|| PathBuf::from("zorgnet-data")),
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| "127.0.0.1:8080".into()),
            name: args
                .name
                .or(file.name)
                .unwrap_or_else(|| format!("organisation {ura}")),
            ura,
            postgres: args.postgres.or(file.postgres),
            base_url: args
                .base_url
                .or(file.base_url)
                .map(|b| b.trim_end_matches('/').to_string()),
            hub,
            access: zorgnet_node::access::AccessConfig {
                decision_ttl: args
                    .consent_cache_ttl_ms
                    .or(file.consent_cache_ttl_ms)
                    .map_or(
                        zorgnet_node::access::DEFAULT_DECISION_TTL,
                        Duration::from_millis,
                    ),
            },
        })
    }

    /// Only where the node's data is (`data`, `postgres`): enough for `zorgnet node status`.
    pub fn storage(args: NodeArgs) -> Result<(PathBuf, Option<String>)> {
        let file = FileSettings::read(&args)?;
        Ok((
            args.data
                .or(file.data)
                .unwrap_or_else(|| PathBuf::from("zorgnet-data")),
            args.postgres.or(file.postgres),
        ))
    }
}

impl FileSettings {
    fn read(args: &NodeArgs) -> Result<FileSettings> {
        match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("read settings file {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("parse settings file {}", path.display()))
            }
            None => Ok(FileSettings::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_beats_file_and_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "ura = \"12345678\"\nname = \"From file\"\nlisten = \"127.0.0.1:9999\"\n",
        )
        .unwrap();
        let settings = NodeSettings::resolve(NodeArgs {
            config: Some(path.clone()),
            name: Some("From CLI".into()),
            ..NodeArgs::default()
        })
        .unwrap();
        assert_eq!(settings.name, "From CLI");
        assert_eq!(settings.listen, "127.0.0.1:9999");
        assert_eq!(settings.ura, "12345678");
        assert_eq!(settings.data, PathBuf::from("zorgnet-data"));
    }

    #[test]
    fn unknown_keys_and_bad_ura_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "ura = \"12345678\"\nlisten_adress = \"x\"\n").unwrap();
        assert!(
            NodeSettings::resolve(NodeArgs {
                config: Some(path),
                ..NodeArgs::default()
            })
            .is_err()
        );
        assert!(
            NodeSettings::resolve(NodeArgs {
                ura: Some("123".into()),
                ..NodeArgs::default()
            })
            .is_err()
        );
    }
}
