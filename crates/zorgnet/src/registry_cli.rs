//! `zorgnet organisation`: the operator registers an organisation at the hub (and gets its
//! API key), or lists the registered ones.
//!
//! What it is: a client of the hub's `/registry` API with the operator's key (the hub's
//! `admin.key`). `add` prints the new key alone on stdout, so a script can keep it
//! (`KEY=$(zorgnet organisation add …)`).
//! What it is not: a way for an organisation to register itself; only the operator can.
//!
//! Exit status: 0 when the hub accepted, 1 when it refused or could not be reached (its
//! reason is printed), 2 for arguments clap refuses.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use std::path::PathBuf;
use zorgnet_node::hub_client::HubClient;

/// The hub and the operator's key.
#[derive(Args)]
struct OperatorAccess {
    /// Base URL of the hub.
    #[arg(long, env = "ZORGNET_HUB", default_value = "https://127.0.0.1:7000")]
    hub: String,
    /// The file holding the operator's key: `admin.key` in the hub's data directory.
    #[arg(long, env = "ZORGNET_HUB_ADMIN_KEY_FILE")]
    admin_key_file: PathBuf,
}

/// Arguments of `zorgnet organisation`.
#[derive(Args)]
pub struct OrganisationArgs {
    #[command(subcommand)]
    action: OrganisationAction,
}

#[derive(Subcommand)]
enum OrganisationAction {
    /// Register an organisation; prints its new API key for `zorgnet node --hub-key`.
    Add {
        #[command(flatten)]
        access: OperatorAccess,
        /// The organisation's URA number (8 digits).
        #[arg(long)]
        ura: String,
        /// The organisation's name.
        #[arg(long)]
        name: String,
    },
    /// List the registered organisations: URA and name, one per line.
    List {
        #[command(flatten)]
        access: OperatorAccess,
    },
}

/// Runs `zorgnet organisation`.
pub async fn run(args: OrganisationArgs) -> Result<()> {
    match args.action {
        OrganisationAction::Add { access, ura, name } => {
            let issued = operator(&access)?
                .post(
                    "/registry/organisations",
                    &json!({"ura": ura, "name": name}),
                )
                .await
                .context("the hub refused the registration")?;
            let Some(key) = issued["api_key"].as_str() else {
                bail!("the hub's answer holds no API key");
            };
            println!("{key}");
            Ok(())
        }
        OrganisationAction::List { access } => {
            let listed = operator(&access)?
                .get("/registry/organisations")
                .await
                .context("the hub refused the list")?;
            for organisation in listed.as_array().into_iter().flatten() {
                println!(
                    "{}  {}",
                    organisation["ura"].as_str().unwrap_or(""),
                    organisation["name"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
    }
}

fn operator(access: &OperatorAccess) -> Result<HubClient> {
    let key = std::fs::read_to_string(&access.admin_key_file).with_context(|| {
        format!(
            "read the operator's key from {}",
            access.admin_key_file.display()
        )
    })?;
    crate::hub_client(&access.hub, key.trim()).context("the hub's URL or key is not usable")
}
