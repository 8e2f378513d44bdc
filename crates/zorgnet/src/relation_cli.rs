//! `zorgnet relation`: register, list and end an organisation's treatment relations in the
//! hub's relation register from the command line, with the organisation's hub key.
//!
//! What it is: a client of the hub's `/relations` API. The BSN never leaves this process in
//! clear: it is blinded here and turned into an exchange token for the referral index by the
//! hub's pseudonym service, exactly as `zorgnet consent` and a node do.
//! What it is not: a policy (the hub decides what a relation allows) or a way to see other
//! organisations' relations (the hub shows each organisation only its own).
//!
//! Exit status: 0 when the hub accepted the request, 1 when it refused or could not be
//! reached (its reason is printed), 2 for arguments clap refuses.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use zorgnet_node::hub_client::{HubClient, token_value};
use zorgnet_pseudonym::{Bsn, PersonalId};

/// Which hub, with whose key.
#[derive(Args)]
struct HubAccess {
    /// Base URL of the hub.
    #[arg(long, env = "ZORGNET_HUB", default_value = "https://127.0.0.1:7000")]
    hub: String,
    /// The organisation's API key at the hub.
    #[arg(long, env = "ZORGNET_HUB_KEY", hide_env_values = true)]
    hub_key: String,
}

/// Arguments of `zorgnet relation`.
#[derive(Args)]
pub struct RelationArgs {
    #[command(subcommand)]
    action: RelationAction,
}

#[derive(Subcommand)]
enum RelationAction {
    /// Register a treatment relation of the organisation with a person.
    Add {
        #[command(flatten)]
        access: HubAccess,
        /// The person's BSN: `123456782` or `http://fhir.nl/fhir/NamingSystem/bsn|123456782`.
        #[arg(long)]
        bsn: String,
        /// What kind of relation.
        #[arg(long, value_parser = ["referral", "consultation", "co-treatment", "own-patient"])]
        kind: String,
        /// Start (a date or an RFC 3339 date-time); now when omitted.
        #[arg(long)]
        valid_from: Option<String>,
        /// End, exclusive (a date or an RFC 3339 date-time); a year after the start when
        /// omitted, at most two years after it.
        #[arg(long)]
        valid_until: Option<String>,
    },
    /// List the organisation's relations, one per line: with a person's, without all.
    List {
        #[command(flatten)]
        access: HubAccess,
        /// Only the relations with this person.
        #[arg(long)]
        bsn: Option<String>,
    },
    /// End one of the organisation's relations by its id (as `list` shows it).
    End {
        #[command(flatten)]
        access: HubAccess,
        /// The relation's id.
        id: String,
    },
}

/// Runs `zorgnet relation`.
pub async fn run(args: RelationArgs) -> Result<()> {
    match args.action {
        RelationAction::Add {
            access,
            bsn,
            kind,
            valid_from,
            valid_until,
        } => {
            let client = client(&access)?;
            let mut body =
                json!({"token": person_token(&client, &access, &bsn).await?, "kind": kind});
            if let Some(from) = valid_from {
                body["valid_from"] = json!(from);
            }
            if let Some(until) = valid_until {
                body["valid_until"] = json!(until);
            }
            let registered = client
                .post("/relations", &body)
                .await
                .context("the hub refused the relation")?;
            println!("{}", relation_line(&registered));
            Ok(())
        }
        RelationAction::List { access, bsn } => {
            let client = client(&access)?;
            let relations = match bsn {
                Some(bsn) => {
                    let token = person_token(&client, &access, &bsn).await?;
                    let answer = client
                        .post("/relations/query", &json!({"token": token}))
                        .await
                        .context("the hub refused the query")?;
                    answer["relations"].as_array().cloned().unwrap_or_default()
                }
                None => all_relations(&client).await?,
            };
            if relations.is_empty() {
                println!("no relations");
            }
            for relation in &relations {
                println!("{}", relation_line(relation));
            }
            Ok(())
        }
        RelationAction::End { access, id } => {
            let Ok(id) = uuid::Uuid::parse_str(id.trim()) else {
                bail!("a relation id is a UUID, as `zorgnet relation list` shows it");
            };
            let ended = client(&access)?
                .post(&format!("/relations/{id}/end"), &json!({}))
                .await
                .context("the hub refused to end the relation")?;
            println!("{}", relation_line(&ended));
            Ok(())
        }
    }
}

fn client(access: &HubAccess) -> Result<HubClient> {
    crate::hub_client(&access.hub, access.hub_key.trim())
        .context("the hub's URL or key is not usable")
}

/// Every relation of the organisation, page by page.
async fn all_relations(client: &HubClient) -> Result<Vec<Value>> {
    let mut relations = Vec::new();
    let mut path = "/relations".to_string();
    loop {
        let page = client
            .get(&path)
            .await
            .context("the hub refused the listing")?;
        relations.extend(page["relations"].as_array().cloned().unwrap_or_default());
        match page["next"].as_str() {
            Some(next) => path = format!("/relations?after={next}"),
            None => return Ok(relations),
        }
    }
}

/// An exchange token for the referral index naming the person, as JSON.
async fn person_token(client: &HubClient, access: &HubAccess, bsn: &str) -> Result<Value> {
    let Ok(bsn) = Bsn::parse(crate::network_cli::bsn(bsn)?) else {
        bail!("--bsn is not a valid BSN (nine digits that pass the 11-check)");
    };
    let token = client
        .referral_index_token(&PersonalId::from(bsn))
        .await
        .with_context(|| format!("no pseudonym from the hub at {}", access.hub))?;
    Ok(token_value(&token))
}

/// One relation as a line: id, status, kind, validity.
fn relation_line(relation: &Value) -> String {
    let text = |key: &str| relation[key].as_str().unwrap_or("");
    format!(
        "{}  {}  {}  from {} until {}",
        text("relation_id"),
        text("status"),
        text("kind"),
        text("valid_from"),
        text("valid_until"),
    )
}
