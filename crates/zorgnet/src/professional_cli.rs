//! `zorgnet professional`: the operator keeps the hub's professional register: which
//! professional (UZI number) holds which role (UZI role code) at which organisation (URA).
//!
//! What it is: a thin client of the hub's `/professionals` API with the operator's key (the
//! hub's `admin.key`). `set` replaces the professional's name and all of their roles;
//! `remove` takes them out of the register; `list` prints one line per role.
//! What it is not: a way for an organisation to name its own staff's roles; only the
//! operator writes the register (the hub's token endpoint trusts nothing else).
//!
//! Exit status: 0 when the hub accepted, 1 when it refused or could not be reached (its
//! reason is printed), 2 for arguments clap refuses.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
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

/// Arguments of `zorgnet professional`.
#[derive(Args)]
pub struct ProfessionalArgs {
    #[command(subcommand)]
    action: ProfessionalAction,
}

#[derive(Subcommand)]
enum ProfessionalAction {
    /// Set a professional's name and every role they hold (replacing what the register had).
    Set {
        #[command(flatten)]
        access: OperatorAccess,
        /// The professional's UZI number (9 digits).
        #[arg(long)]
        uzi: String,
        /// The professional's name.
        #[arg(long)]
        name: String,
        /// A role at an organisation, as URA:ROLE (`00000011:01.015`); repeat for more.
        #[arg(long = "role", value_name = "URA:ROLE")]
        roles: Vec<String>,
    },
    /// Remove a professional and all of their roles from the register.
    Remove {
        #[command(flatten)]
        access: OperatorAccess,
        /// The professional's UZI number.
        #[arg(long)]
        uzi: String,
    },
    /// List the register: UZI number, URA, role code and name, one role per line.
    List {
        #[command(flatten)]
        access: OperatorAccess,
    },
}

/// Runs `zorgnet professional`.
pub async fn run(args: ProfessionalArgs) -> Result<()> {
    match args.action {
        ProfessionalAction::Set {
            access,
            uzi,
            name,
            roles,
        } => {
            let roles = roles
                .iter()
                .map(|pair| match pair.split_once(':') {
                    Some((ura, role)) => Ok(json!({"ura": ura, "role": role})),
                    None => bail!("--role {pair:?} is not URA:ROLE (like 00000011:01.015)"),
                })
                .collect::<Result<Vec<Value>>>()?;
            operator(&access)?
                .put(
                    &format!("/professionals/{uzi}"),
                    &json!({"name": name, "roles": roles}),
                )
                .await
                .context("the hub refused the professional")?;
            Ok(())
        }
        ProfessionalAction::Remove { access, uzi } => {
            let key = operator_key(&access)?;
            let response = crate::client_builder()
                .build()
                .context("set up the HTTP client")?
                .delete(format!(
                    "{}/professionals/{uzi}",
                    access.hub.trim_end_matches('/')
                ))
                .bearer_auth(key)
                .send()
                .await
                .context("the hub could not be reached")?;
            if !response.status().is_success() {
                let status = response.status();
                let problem: Value = response.json().await.unwrap_or(Value::Null);
                bail!(
                    "the hub refused the removal ({status}): {}",
                    problem["detail"].as_str().unwrap_or("no reason given")
                );
            }
            Ok(())
        }
        ProfessionalAction::List { access } => {
            let client = operator(&access)?;
            let mut after = String::new();
            loop {
                let page = client
                    .get(&format!("/professionals?after={after}"))
                    .await
                    .context("the hub refused the list")?;
                for professional in page["professionals"].as_array().into_iter().flatten() {
                    let uzi = professional["uzi"].as_str().unwrap_or("");
                    let name = professional["name"].as_str().unwrap_or("");
                    for role in professional["roles"].as_array().into_iter().flatten() {
                        println!(
                            "{uzi}  {}  {}  {name}",
                            role["ura"].as_str().unwrap_or(""),
                            role["role"].as_str().unwrap_or("")
                        );
                    }
                }
                match page["next"].as_str() {
                    Some(next) => after = next.to_string(),
                    None => return Ok(()),
                }
            }
        }
    }
}

fn operator_key(access: &OperatorAccess) -> Result<String> {
    let key = std::fs::read_to_string(&access.admin_key_file).with_context(|| {
        format!(
            "read the operator's key from {}",
            access.admin_key_file.display()
        )
    })?;
    Ok(key.trim().to_string())
}

fn operator(access: &OperatorAccess) -> Result<HubClient> {
    crate::hub_client(&access.hub, &operator_key(access)?)
        .context("the hub's URL or key is not usable")
}
