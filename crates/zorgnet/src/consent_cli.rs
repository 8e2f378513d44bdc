//! `zorgnet consent`: record, list and revoke a person's directives in the hub's consent
//! register from the command line, as an organisation (its hub key) or as the operator.
//!
//! What it is: a client of the hub's `/consent` API. The BSN never leaves this process in
//! clear: it is blinded here and turned into an exchange token for the referral index by the
//! hub's pseudonym service, exactly as a node does (`zorgnet_node::hub_client`).
//! What it is not: the citizen's own way to state a wish (that is the portal), and not a
//! policy: the hub decides who may record what.
//!
//! Exit status: 0 when the hub accepted the request, 1 when it refused or could not be
//! reached (its reason is printed), 2 for arguments clap refuses.

use anyhow::{Context, Result, bail};
use clap::builder::PossibleValuesParser;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use zorgnet_fhir::categories::DataCategory;
use zorgnet_node::hub_client::{HubClient, token_value};
use zorgnet_pseudonym::{Bsn, PersonalId};

/// Which hub, with whose key.
#[derive(Args)]
struct HubAccess {
    /// Base URL of the hub.
    #[arg(long, env = "ZORGNET_HUB", default_value = "https://127.0.0.1:7000")]
    hub: String,
    /// An organisation's API key at the hub, or the operator's key (the hub's `admin.key`).
    #[arg(long, env = "ZORGNET_HUB_KEY", hide_env_values = true)]
    hub_key: String,
    /// The person's BSN: `123456782` or `http://fhir.nl/fhir/NamingSystem/bsn|123456782`.
    #[arg(long)]
    bsn: String,
}

/// Arguments of `zorgnet consent`.
#[derive(Args)]
pub struct ConsentArgs {
    #[command(subcommand)]
    action: ConsentAction,
}

#[derive(Subcommand)]
enum ConsentAction {
    /// Record an opt-out: no sharing of one category, or of anything without --category.
    OptOut {
        #[command(flatten)]
        access: HubAccess,
        /// The data category; all categories when omitted.
        #[arg(long, value_parser = PossibleValuesParser::new(DataCategory::ALL.map(DataCategory::code)))]
        category: Option<String>,
    },
    /// Record an emergency opt-out: no break-the-glass access.
    EmergencyOptOut {
        #[command(flatten)]
        access: HubAccess,
    },
    /// Record explicit consent (yes or no) for one organisation.
    Consent {
        #[command(flatten)]
        access: HubAccess,
        /// URA of the organisation the consent is about.
        #[arg(long)]
        ura: String,
        /// `permit` (yes) or `deny` (no).
        #[arg(long, value_parser = ["permit", "deny"])]
        decision: String,
        /// The data category; all categories when omitted.
        #[arg(long, value_parser = PossibleValuesParser::new(DataCategory::ALL.map(DataCategory::code)))]
        category: Option<String>,
    },
    /// List the person's directives in force or revoked (current versions), one per line.
    List {
        #[command(flatten)]
        access: HubAccess,
    },
    /// Revoke a directive by its id (as `list` shows it).
    Revoke {
        #[command(flatten)]
        access: HubAccess,
        /// The directive's id.
        id: String,
    },
}

/// Runs `zorgnet consent`.
pub async fn run(args: ConsentArgs) -> Result<()> {
    match args.action {
        ConsentAction::OptOut { access, category } => {
            let mut body = json!({"kind": "opt-out"});
            if let Some(category) = category {
                body["category"] = json!(category);
            }
            record(&access, body).await
        }
        ConsentAction::EmergencyOptOut { access } => {
            record(&access, json!({"kind": "emergency-opt-out"})).await
        }
        ConsentAction::Consent {
            access,
            ura,
            decision,
            category,
        } => {
            let mut body = json!({"kind": "consent", "ura": ura, "decision": decision});
            if let Some(category) = category {
                body["category"] = json!(category);
            }
            record(&access, body).await
        }
        ConsentAction::List { access } => {
            let (client, token) = person_token(&access).await?;
            let answer = client
                .post("/consent/directives/query", &json!({"token": token}))
                .await
                .context("the hub refused the query")?;
            let current = answer["current"].as_array().cloned().unwrap_or_default();
            if current.is_empty() {
                println!("no directives");
            }
            for directive in &current {
                println!("{}", directive_line(directive));
            }
            Ok(())
        }
        ConsentAction::Revoke { access, id } => {
            let (client, token) = person_token(&access).await?;
            let Ok(id) = uuid::Uuid::parse_str(id.trim()) else {
                bail!("a directive id is a UUID, as `zorgnet consent list` shows it");
            };
            let path = format!("/consent/directives/{id}/revoke");
            let revoked = client
                .post(&path, &json!({"token": token}))
                .await
                .context("the hub refused the revocation")?;
            println!("{}", directive_line(&revoked));
            Ok(())
        }
    }
}

/// Sends a new directive (`body` without the person) and prints what the hub recorded.
async fn record(access: &HubAccess, mut body: Value) -> Result<()> {
    let (client, token) = person_token(access).await?;
    body["token"] = token;
    let recorded = client
        .post("/consent/directives", &body)
        .await
        .context("the hub refused the directive")?;
    println!("{}", directive_line(&recorded));
    Ok(())
}

/// A hub client and an exchange token for the referral index naming the person.
async fn person_token(access: &HubAccess) -> Result<(HubClient, Value)> {
    let Ok(bsn) = Bsn::parse(crate::network_cli::bsn(&access.bsn)?) else {
        bail!("--bsn is not a valid BSN (nine digits that pass the 11-check)");
    };
    let client = crate::hub_client(&access.hub, access.hub_key.trim())
        .context("the hub's URL or key is not usable")?;
    let token = client
        .referral_index_token(&PersonalId::from(bsn))
        .await
        .with_context(|| format!("no pseudonym from the hub at {}", access.hub))?;
    Ok((client, token_value(&token)))
}

/// One directive as a line: id, status, kind, decision, what it covers, who recorded it.
fn directive_line(directive: &Value) -> String {
    let text = |key: &str| directive[key].as_str().unwrap_or("");
    let about = match (directive["category"].as_str(), directive["ura"].as_str()) {
        (Some(category), Some(ura)) => format!("{category} at {ura}"),
        (Some(category), None) => category.to_string(),
        (None, Some(ura)) => format!("everything at {ura}"),
        (None, None) => "everything".to_string(),
    };
    format!(
        "{}  {}  {} {}  {}  from {}  recorded by {}",
        text("directive_id"),
        text("status"),
        text("kind"),
        text("decision"),
        about,
        text("valid_from"),
        text("recorded_by"),
    )
}
