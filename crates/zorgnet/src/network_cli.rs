//! `zorgnet localize` and `zorgnet fetch`: the command line in front of a running node's
//! `$localize` and `$fetch` operations (`crates/node/src/network.rs`).
//!
//! What it is: an HTTP client of one node. `localize` asks which organisations hold a
//! patient's data of some categories and prints them as a table (URA, name, FHIR endpoint,
//! categories), or the node's Parameters resource with `--json`. `fetch` has the node collect
//! that data from every source and writes the node's Bundle (stdout or `--out`), with a
//! summary on stderr: which sources answered, which refused by consent, which did not answer
//! and why, and how many resources of each type came back.
//! What it is not: a client of the hub or of the sources (the node blinds the BSN, asks the
//! referral index, looks up the endpoints and fetches in parallel), and not a viewer: the
//! Bundle is written as the node sent it, without de-duplication across sources.
//!
//! Exit status: 0 when the node answered the operation, also when some or all sources did
//! not answer or refused, because the Bundle is then a partial result that says so (the
//! summary and the Bundle's OperationOutcome name those sources); 1 when there is nothing
//! to show: the node is unreachable, refused the question (its OperationOutcome's
//! diagnostics are printed), or the Bundle could not be written; 2 for arguments clap
//! refuses.

use anyhow::{Context, Result, bail};
use clap::Args;
use clap::builder::PossibleValuesParser;
use reqwest::Url;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;
use zorgnet_fhir::categories::DataCategory;
use zorgnet_fhir::identifiers::{BSN_SYSTEM, bsn_is_valid};
use zorgnet_node::network::FETCH_SOURCE_TIMEOUT;

/// The node asked when neither `--node` nor `ZORGNET_NODE` says otherwise: the FHIR base of
/// `zorgnet node` on its default listen address (127.0.0.1:8080, see `config.rs`).
pub const DEFAULT_NODE_URL: &str = "https://127.0.0.1:8080/fhir";
/// How long connecting to the node may take: it is one machine or one LAN away.
const NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the node may take to answer: a `$fetch` is a referral-index lookup at the hub
/// plus the sources in parallel, each cut off by the node after [`FETCH_SOURCE_TIMEOUT`].
const NODE_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
const _: () = assert!(
    NODE_ANSWER_TIMEOUT.as_secs() >= 2 * FETCH_SOURCE_TIMEOUT.as_secs(),
    "the node's own per-source timeout must end a fetch well before the client gives up"
);
/// Characters of a non-FHIR answer shown in an error message.
const MAX_ANSWER_SHOWN_CHARS: usize = 300;

/// Which node to ask.
#[derive(Args)]
struct NodeUrl {
    /// FHIR base URL of a running node that was started with --hub.
    #[arg(long = "node", env = "ZORGNET_NODE", default_value = DEFAULT_NODE_URL)]
    url: String,
    /// The node's key (its data directory's `node-admin.key`); a node started with
    /// --insecure-dev needs none.
    #[arg(long = "node-key", env = "ZORGNET_NODE_KEY", hide_env_values = true)]
    key: Option<String>,
}

/// Whose data, of which categories.
#[derive(Args)]
struct Question {
    /// The patient's BSN: `123456782` or `http://fhir.nl/fhir/NamingSystem/bsn|123456782`.
    #[arg(long)]
    bsn: String,
    /// Data category; repeat it or separate with commas. All categories when omitted.
    #[arg(
        long = "category",
        value_name = "CATEGORY",
        value_delimiter = ',',
        value_parser = PossibleValuesParser::new(DataCategory::ALL.map(DataCategory::code))
    )]
    categories: Vec<String>,
    /// Ask for emergency access (break-the-glass): the consent register allows it unless the
    /// patient opted out of emergency access.
    #[arg(long)]
    emergency: bool,
}

/// Arguments of `zorgnet localize`.
#[derive(Args)]
pub struct LocalizeArgs {
    #[command(flatten)]
    node: NodeUrl,
    #[command(flatten)]
    question: Question,
    /// Print the node's Parameters resource instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `zorgnet fetch`.
#[derive(Args)]
pub struct FetchArgs {
    #[command(flatten)]
    node: NodeUrl,
    #[command(flatten)]
    question: Question,
    /// Write the Bundle to this file instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The UZI number of the professional the fetch is for (with --role); without it the
    /// sources are shown a system token.
    #[arg(long, requires = "role")]
    uzi: Option<String>,
    /// The professional's UZI role code here, as the hub's professional register gives it.
    #[arg(long, requires = "uzi")]
    role: Option<String>,
    /// The professional's break-the-glass reason (with --emergency).
    #[arg(long, requires = "emergency")]
    reason: Option<String>,
}

/// `zorgnet localize`: who holds the patient's data, and where to reach them.
pub async fn localize(args: LocalizeArgs) -> Result<()> {
    let parameters = ask(&args.node, "$localize", &args.question, &[], "Parameters").await?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &parameters)?;
        writeln!(stdout)?;
        return Ok(());
    }
    let rows: Vec<[String; 4]> = sources(&parameters)
        .into_iter()
        .map(|source| {
            [
                source.ura,
                if source.name.is_empty() {
                    "-".into()
                } else {
                    source.name
                },
                source
                    .endpoint
                    .unwrap_or_else(|| "(not in the node's address book)".into()),
                source.categories.join(", "),
            ]
        })
        .collect();
    if rows.is_empty() {
        writeln!(
            stdout,
            "no organisation holds data of {} about this patient that may be shown",
            asked_categories(&args.question)
        )?;
    } else {
        write!(
            stdout,
            "{}",
            table(["URA", "NAME", "ENDPOINT", "CATEGORIES"], &rows)
        )?;
    }
    Ok(())
}

/// `zorgnet fetch`: the patient's data from every source, as one Bundle.
pub async fn fetch(args: FetchArgs) -> Result<()> {
    let asker: Vec<(&str, &str)> = [
        ("uzi", args.uzi.as_deref()),
        ("role", args.role.as_deref()),
        ("reason", args.reason.as_deref()),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name, value?)))
    .collect();
    let bundle = ask(&args.node, "$fetch", &args.question, &asker, "Bundle").await?;
    let mut text = serde_json::to_string_pretty(&bundle)?;
    text.push('\n');
    match &args.out {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("write {}", path.display()))?
        }
        None => std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .context("write the Bundle to stdout")?,
    }
    let summary = FetchSummary::of(&bundle, bsn(&args.question.bsn)?);
    eprint!(
        "{}",
        summary.render(
            args.node.url.trim_end_matches('/'),
            &asked_categories(&args.question)
        )
    );
    Ok(())
}

/// One organisation in a `$localize` answer.
struct Source {
    ura: String,
    name: String,
    endpoint: Option<String>,
    categories: Vec<String>,
}

/// The `source` parameters of a `$localize` answer.
fn sources(parameters: &Value) -> Vec<Source> {
    let parameter = parameters.get("parameter").and_then(Value::as_array);
    parameter
        .into_iter()
        .flatten()
        .filter(|p| p.get("name").and_then(Value::as_str) == Some("source"))
        .map(|source| {
            let parts: Vec<&Value> = source
                .get("part")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .collect();
            let values = |name: &str, pointer: &str| -> Vec<String> {
                parts
                    .iter()
                    .filter(|p| p.get("name").and_then(Value::as_str) == Some(name))
                    .filter_map(|p| p.pointer(pointer).and_then(Value::as_str))
                    .map(String::from)
                    .collect()
            };
            Source {
                ura: values("organization", "/valueIdentifier/value")
                    .into_iter()
                    .next()
                    .unwrap_or_default(),
                name: values("name", "/valueString")
                    .into_iter()
                    .next()
                    .unwrap_or_default(),
                endpoint: values("endpoint", "/valueUrl").into_iter().next(),
                categories: values("category", "/valueCode"),
            }
        })
        .collect()
}

/// Left-aligned columns two spaces apart; the last column is not padded.
fn table<const N: usize>(headers: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = headers.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row = headers.map(String::from);
    for row in std::iter::once(&header_row).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(column, (cell, width))| {
                if column + 1 == N {
                    cell.clone()
                } else {
                    format!("{cell:<width$}")
                }
            })
            .collect();
        out.push_str(&cells.join("  "));
        out.push('\n');
    }
    out
}

/// What the node said about one source in a `$fetch` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    /// It answered (an `information` issue).
    Answered,
    /// It refused some or all of the data by consent (a `forbidden` issue).
    Refused,
    /// It could not be reached, failed or was too slow (any other issue).
    Silent,
}

impl Verdict {
    fn of(issue: &Value) -> Verdict {
        let field = |name: &str| issue.get(name).and_then(Value::as_str);
        match (field("severity"), field("code")) {
            (Some("information"), _) => Verdict::Answered,
            (_, Some("forbidden")) => Verdict::Refused,
            _ => Verdict::Silent,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Verdict::Answered => "answered",
            Verdict::Refused => "refused",
            Verdict::Silent => "did not answer",
        }
    }
}

/// What the stderr summary of `zorgnet fetch` says.
#[derive(Debug, Default, PartialEq)]
struct FetchSummary {
    /// (verdict, URA, the node's words) per issue of the node's OperationOutcome, answered
    /// first; a source can have two (answered for some resource types, refused for others).
    verdicts: Vec<(Verdict, String, String)>,
    /// Resources in the Bundle per resource type.
    resources_by_type: BTreeMap<String, usize>,
}

impl FetchSummary {
    /// Reads a `$fetch` Bundle: its first entry is the node's OperationOutcome with issues
    /// per source (see [`Verdict`]), the rest the data.
    /// The node's words can quote a source's URL, whose query holds the BSN: it is blanked.
    fn of(bundle: &Value, bsn: &str) -> FetchSummary {
        let mut summary = FetchSummary::default();
        let entries = bundle.get("entry").and_then(Value::as_array);
        for (position, entry) in entries.into_iter().flatten().enumerate() {
            let Some(resource) = entry.get("resource") else {
                continue;
            };
            let resource_type = resource
                .get("resourceType")
                .and_then(Value::as_str)
                .unwrap_or("(no resourceType)");
            if position == 0 && resource_type == "OperationOutcome" {
                summary.read_outcome(resource, bsn);
                continue;
            }
            *summary
                .resources_by_type
                .entry(resource_type.to_string())
                .or_default() += 1;
        }
        summary
    }

    fn read_outcome(&mut self, outcome: &Value, bsn: &str) {
        let issues = outcome.get("issue").and_then(Value::as_array);
        for issue in issues.into_iter().flatten() {
            let ura = issue
                .pointer("/details/coding/0/code")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string();
            let words = issue
                .get("diagnostics")
                .and_then(Value::as_str)
                .unwrap_or("")
                .replace(bsn, "<BSN>");
            self.verdicts.push((Verdict::of(issue), ura, words));
        }
        self.verdicts.sort_by_key(|(verdict, _, _)| *verdict);
    }

    /// Distinct sources with `verdict`, or all distinct sources.
    fn sources(&self, verdict: Option<Verdict>) -> usize {
        let uras: BTreeSet<&str> = self
            .verdicts
            .iter()
            .filter(|(v, _, _)| verdict.is_none_or(|wanted| *v == wanted))
            .map(|(_, ura, _)| ura.as_str())
            .collect();
        uras.len()
    }

    fn render(&self, node: &str, categories: &str) -> String {
        let sources = self.sources(None);
        let resources: usize = self.resources_by_type.values().sum();
        if sources == 0 {
            return format!(
                "fetched through {node}: no organisation holds data of {categories} about this patient that may be shown\n"
            );
        }
        let mut out = format!(
            "fetched through {node}: {} of {sources} sources answered, {resources} resources\n",
            self.sources(Some(Verdict::Answered))
        );
        let rows: Vec<[String; 3]> = self
            .verdicts
            .iter()
            .map(|(verdict, ura, words)| [verdict.label().to_string(), ura.clone(), words.clone()])
            .collect();
        out.push_str(&table(["SOURCE", "URA", "WHAT THE NODE SAYS"], &rows));
        if !self.resources_by_type.is_empty() {
            let counts: Vec<String> = self
                .resources_by_type
                .iter()
                .map(|(resource_type, n)| format!("{resource_type} {n}"))
                .collect();
            out.push_str(&format!("resources by type: {}\n", counts.join(", ")));
        }
        out
    }
}

/// The categories asked, for messages.
fn asked_categories(question: &Question) -> String {
    if question.categories.is_empty() {
        "any category".into()
    } else {
        question.categories.join(", ")
    }
}

/// The BSN the node is asked about: nine digits passing the 11-check, given bare or with the
/// BSN system. The node's `$localize` takes nothing else (no sédula or other identifiers).
/// Messages never repeat the number: it is personal data.
pub(crate) fn bsn(given: &str) -> Result<&str> {
    let value = match given.split_once('|') {
        Some((system, value)) if system == BSN_SYSTEM => value,
        Some((system, _)) => bail!(
            "--bsn takes a BSN, bare or as {BSN_SYSTEM}|<BSN>; the node's $localize does not look people up by {system}"
        ),
        None => given,
    }
    .trim();
    if !bsn_is_valid(value) {
        bail!("--bsn is not a valid BSN (nine digits that pass the 11-check)");
    }
    Ok(value)
}

/// Asks `operation` of the node at `node` and returns its answer, which must be a
/// `expected` resource; an OperationOutcome or any other answer is an error naming the node.
async fn ask(
    node_url: &NodeUrl,
    operation: &str,
    question: &Question,
    asker: &[(&str, &str)],
    expected: &str,
) -> Result<Value> {
    let node = node_url.url.as_str();
    let base = node.trim_end_matches('/');
    let mut url = Url::parse(&format!("{base}/{operation}"))
        .with_context(|| format!("--node '{node}' is not a URL like {DEFAULT_NODE_URL}"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        bail!("--node '{node}': only http:// and https:// node URLs are supported");
    }
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("patient.identifier", bsn(&question.bsn)?);
        if !question.categories.is_empty() {
            query.append_pair("category", &question.categories.join(","));
        }
        if question.emergency {
            query.append_pair("purpose", "emergency");
        }
        for (name, value) in asker {
            query.append_pair(name, value);
        }
    }
    let client = crate::node_client(
        crate::client_builder()
            .connect_timeout(NODE_CONNECT_TIMEOUT)
            .timeout(NODE_ANSWER_TIMEOUT),
        node_url.key.as_deref(),
    )?;
    let response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/fhir+json")
        .send()
        .await
        // The URL carries the BSN in its query: errors show the node's base URL instead.
        .map_err(reqwest::Error::without_url)
        .with_context(|| {
            format!(
                "no answer from the node at {base} to {operation} (is it running, and is this its FHIR base URL? set --node or ZORGNET_NODE)"
            )
        })?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(reqwest::Error::without_url)
        .with_context(|| format!("read the node's answer to {operation} from {base}"))?;
    let answer: Option<Value> = serde_json::from_str(&text).ok();
    let resource_type = answer
        .as_ref()
        .and_then(|a| a.get("resourceType"))
        .and_then(Value::as_str);
    match (answer.as_ref(), resource_type) {
        (Some(outcome), Some("OperationOutcome")) => bail!(
            "the node at {base} refused {operation} (HTTP {status}): {}",
            diagnostics(outcome)
        ),
        (Some(answer), Some(found)) if status.is_success() && found == expected => {
            Ok(answer.clone())
        }
        _ => {
            let shown: String = text.chars().take(MAX_ANSWER_SHOWN_CHARS).collect();
            bail!(
                "the node at {base} answered {operation} with HTTP {status} and no {expected}: {shown}"
            )
        }
    }
}

/// The diagnostics of an OperationOutcome's issues (their codes when they have none).
fn diagnostics(outcome: &Value) -> String {
    let issues = outcome.get("issue").and_then(Value::as_array);
    let said: Vec<&str> = issues
        .into_iter()
        .flatten()
        .filter_map(|issue| {
            issue
                .get("diagnostics")
                .or_else(|| issue.get("code"))
                .and_then(Value::as_str)
        })
        .collect();
    if said.is_empty() {
        "(an OperationOutcome without issues)".into()
    } else {
        said.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_bsn_is_taken_bare_or_with_its_system_and_nothing_else() {
        assert_eq!(bsn("123456782").unwrap(), "123456782");
        assert_eq!(
            bsn(&format!("{BSN_SYSTEM}|123456782")).unwrap(),
            "123456782"
        );
        let wrong = bsn("123456789").unwrap_err().to_string();
        assert!(
            wrong.contains("11-check") && !wrong.contains("123456789"),
            "{wrong}"
        );
        let sedula = bsn("http://zorgnet.nl/fhir/NamingSystem/sedula|12345678").unwrap_err();
        assert!(sedula.to_string().contains("sedula"), "{sedula}");
    }

    #[test]
    fn localize_answers_become_rows() {
        let parameters = json!({"resourceType": "Parameters", "parameter": [
            {"name": "source", "part": [
                {"name": "organization", "valueIdentifier": {"system": "x", "value": "00000011"}},
                {"name": "name", "valueString": "Huisarts"},
                {"name": "endpoint", "valueUrl": "http://gp/fhir"},
                {"name": "category", "valueCode": "medication"},
                {"name": "category", "valueCode": "patient-summary"}]},
            {"name": "source", "part": [
                {"name": "organization", "valueIdentifier": {"system": "x", "value": "00000033"}}]}]});
        let found = sources(&parameters);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].ura, "00000011");
        assert_eq!(found[0].endpoint.as_deref(), Some("http://gp/fhir"));
        assert_eq!(found[0].categories, ["medication", "patient-summary"]);
        assert_eq!(found[1].name, "");
        assert_eq!(found[1].endpoint, None);
    }

    #[test]
    fn tables_align_columns() {
        let rows = [
            [
                "00000011".to_string(),
                "Huisarts".to_string(),
                "x".to_string(),
            ],
            [
                "2".to_string(),
                "Apotheek De Brug".to_string(),
                "y".to_string(),
            ],
        ];
        assert_eq!(
            table(["URA", "NAME", "LAST"], &rows),
            "URA       NAME              LAST\n00000011  Huisarts          x\n2         Apotheek De Brug  y\n"
        );
    }

    #[test]
    fn a_fetch_summary_names_who_answered_refused_or_was_silent_and_counts_by_type() {
        let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": {"resourceType": "OperationOutcome", "issue": [
                {"severity": "warning", "code": "forbidden",
                 "diagnostics": "Huisarts (URA 00000011) refused by consent: MedicationDispense: opted out",
                 "details": {"coding": [{"code": "00000011"}]}},
                {"severity": "information", "code": "informational",
                 "diagnostics": "Huisarts (URA 00000011) answered with 2 resources",
                 "details": {"coding": [{"code": "00000011"}]}},
                {"severity": "warning", "code": "transient",
                 "diagnostics": "Apotheek (URA 00000033) did not answer: GET http://a/fhir/MedicationRequest?patient.identifier=x%7C123456782",
                 "details": {"coding": [{"code": "00000033"}]}}]}},
            {"resource": {"resourceType": "MedicationStatement"}},
            {"resource": {"resourceType": "MedicationRequest"}},
            {"resource": {"resourceType": "MedicationStatement"}}]});
        let summary = FetchSummary::of(&bundle, "123456782");
        let verdicts: Vec<(Verdict, &str)> = summary
            .verdicts
            .iter()
            .map(|(verdict, ura, _)| (*verdict, ura.as_str()))
            .collect();
        assert_eq!(
            verdicts,
            [
                (Verdict::Answered, "00000011"),
                (Verdict::Refused, "00000011"),
                (Verdict::Silent, "00000033")
            ]
        );
        assert_eq!(
            summary.resources_by_type,
            BTreeMap::from([
                ("MedicationRequest".to_string(), 1),
                ("MedicationStatement".to_string(), 2)
            ])
        );
        let text = summary.render("http://node/fhir", "medication");
        assert!(
            text.starts_with(
                "fetched through http://node/fhir: 1 of 2 sources answered, 3 resources\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("did not answer  00000033  Apotheek")
                && text.contains(
                    "refused         00000011  Huisarts (URA 00000011) refused by consent"
                ),
            "{text}"
        );
        assert!(
            text.contains("%7C<BSN>") && !text.contains("123456782"),
            "{text}"
        );
        assert!(
            text.ends_with("resources by type: MedicationRequest 1, MedicationStatement 2\n"),
            "{text}"
        );
        let empty = FetchSummary::of(
            &json!({"resourceType": "Bundle",
            "entry": [{"resource": {"resourceType": "OperationOutcome", "issue": []}}]}),
            "123456782",
        );
        assert!(
            empty
                .render("n", "medication")
                .contains("no organisation holds data of medication")
        );
    }

    #[test]
    fn refusals_show_the_diagnostics() {
        let outcome = json!({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "not-supported", "diagnostics": "not connected to a hub"},
            {"severity": "error", "code": "invalid"}]});
        assert_eq!(diagnostics(&outcome), "not connected to a hub; invalid");
    }
}
