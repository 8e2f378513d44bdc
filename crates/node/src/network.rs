//! The node as a member of the network: localising a patient's data at other organisations
//! (`GET /fhir/$localize`) and fetching it from all of them at once (`GET /fhir/$fetch`).
//!
//! `$localize` asks the hub's referral index which organisations hold data of the asked
//! categories (consent filtering happens there) and answers each with its FHIR endpoint from
//! the node's cached address book, so addressing works while the hub is unreachable.
//! `$fetch` then queries every source in parallel with a per-source timeout and merges the
//! answers into one Bundle whose OperationOutcome says which sources answered and which did
//! not. What it is not: the access policy at the sources (each source decides for itself),
//! or a viewer that de-duplicates across sources.

use crate::AppState;
use crate::addressing::AddressBookCache;
use crate::error::{FHIR_JSON, FhirError};
use crate::hub_client::HubClient;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use zorgnet_fhir::IssueCode;
use zorgnet_fhir::categories::{DataCategory, categories_of, parse_categories};
use zorgnet_fhir::identifiers::BSN_SYSTEM;
use zorgnet_pseudonym::{Bsn, PersonalId};

/// How long one source may take to answer a fetch.
pub const FETCH_SOURCE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most resources taken from one source per resource type (one page).
pub const FETCH_PAGE_SIZE: usize = 1_000;

/// What a node needs to reach the rest of the network.
pub struct Network {
    /// The hub, as this organisation.
    pub hub: HubClient,
    /// The local copy of the address book.
    pub addresses: AddressBookCache,
    http: reqwest::Client,
}

impl Network {
    /// A network connection through `hub`, addressing from `addresses`.
    pub fn new(hub: HubClient, addresses: AddressBookCache) -> Result<Network, FhirError> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_SOURCE_TIMEOUT)
            .build()
            .map_err(|e| {
                FhirError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    IssueCode::Exception,
                    e.to_string(),
                )
            })?;
        Ok(Network {
            hub,
            addresses,
            http,
        })
    }
}

/// One organisation holding data, with where to reach it.
#[derive(Debug, Clone)]
pub struct Source {
    /// URA number.
    pub ura: String,
    /// Name from the address book (empty when unknown).
    pub name: String,
    /// FHIR base URL, when the address book knows one.
    pub fhir_base_url: Option<String>,
    /// Categories it holds.
    pub categories: Vec<String>,
}

fn network(state: &AppState) -> Result<Arc<Network>, FhirError> {
    state.network.clone().ok_or_else(|| {
        FhirError::new(
            StatusCode::NOT_IMPLEMENTED,
            IssueCode::NotSupported,
            "this node is not connected to a hub (start it with --hub and --hub-key)",
        )
    })
}

/// Reads `patient.identifier` (a BSN, with or without the BSN system) and `category`.
fn question(
    params: &HashMap<String, String>,
) -> Result<(PersonalId, Vec<DataCategory>, bool), FhirError> {
    let identifier = params
        .get("patient.identifier")
        .ok_or_else(|| FhirError::bad_request("patient.identifier is required (a BSN)"))?;
    let bsn = match identifier.split_once('|') {
        Some((system, value)) if system == BSN_SYSTEM => value,
        Some((system, _)) => {
            return Err(FhirError::bad_request(format!(
                "patient.identifier must be a BSN ({BSN_SYSTEM}), not {system}"
            )));
        }
        None => identifier.as_str(),
    };
    let bsn = Bsn::parse(bsn)
        .map_err(|_| FhirError::bad_request("patient.identifier is not a valid BSN (11-check)"))?;
    let categories = match params.get("category") {
        Some(list) => parse_categories(list.split(',')).map_err(FhirError::bad_request)?,
        None => DataCategory::ALL.to_vec(),
    };
    if categories.is_empty() {
        return Err(FhirError::bad_request("category names no category"));
    }
    let emergency = params.get("purpose").is_some_and(|p| p == "emergency");
    Ok((PersonalId::from(bsn), categories, emergency))
}

/// Who holds data of `categories` about `person`, with their endpoints.
pub async fn localize(
    network: &Network,
    person: &PersonalId,
    categories: &[DataCategory],
    emergency: bool,
) -> Result<Vec<Source>, FhirError> {
    let codes: Vec<String> = categories.iter().map(|c| c.code().to_string()).collect();
    let holders = network
        .hub
        .lookup(person, &codes, emergency)
        .await
        .map_err(|e| {
            let status = if e.is_transient() {
                StatusCode::BAD_GATEWAY
            } else {
                StatusCode::BAD_REQUEST
            };
            FhirError::new(status, IssueCode::Exception, format!("referral index: {e}"))
        })?;
    let mut sources = Vec::with_capacity(holders.len());
    for holder in holders {
        let address = network
            .addresses
            .endpoint_for(&holder.ura)
            .await
            .map_err(|e| {
                FhirError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    IssueCode::Exception,
                    format!("address book: {e}"),
                )
            })?;
        sources.push(Source {
            name: address.as_ref().map(|a| a.name.clone()).unwrap_or_default(),
            fhir_base_url: address.and_then(|a| a.fhir_base_urls.into_iter().next()),
            ura: holder.ura,
            categories: holder.categories,
        });
    }
    Ok(sources)
}

fn fhir_response(body: Value) -> Response {
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    response
}

/// `GET /fhir/$localize?patient.identifier=BSN&category=medication`: a Parameters resource
/// with one `source` per organisation (URA, name, endpoint, categories).
pub(crate) async fn localize_operation(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, FhirError> {
    let network = network(&state)?;
    let (person, categories, emergency) = question(&params)?;
    let sources = localize(&network, &person, &categories, emergency).await?;
    let parameters: Vec<Value> = sources
        .iter()
        .map(|source| {
            let mut parts = vec![
                json!({"name": "organization", "valueIdentifier": {"system": "http://fhir.nl/fhir/NamingSystem/ura", "value": source.ura}}),
                json!({"name": "name", "valueString": source.name}),
            ];
            if let Some(url) = &source.fhir_base_url {
                parts.push(json!({"name": "endpoint", "valueUrl": url}));
            }
            parts.extend(source.categories.iter().map(|c| json!({"name": "category", "valueCode": c})));
            json!({"name": "source", "part": parts})
        })
        .collect();
    Ok(fhir_response(
        json!({"resourceType": "Parameters", "parameter": parameters}),
    ))
}

/// What one source answered.
struct SourceAnswer {
    source: Source,
    resources: Result<Vec<Value>, String>,
}

async fn fetch_from(
    network: &Network,
    source: Source,
    bsn_query: &str,
    categories: &[DataCategory],
) -> SourceAnswer {
    let Some(base) = source.fhir_base_url.clone() else {
        return SourceAnswer {
            source,
            resources: Err("the address book has no FHIR endpoint for this organisation".into()),
        };
    };
    let mut types: Vec<&str> = categories
        .iter()
        .flat_map(|c| c.resource_types().iter().copied())
        .collect();
    types.sort_unstable();
    types.dedup();
    let mut resources = Vec::new();
    for resource_type in types {
        let url = format!(
            "{base}/{resource_type}?patient.identifier={bsn_query}&_count={FETCH_PAGE_SIZE}"
        );
        let answer = async {
            let response = network
                .http
                .get(&url)
                .header(header::ACCEPT, "application/fhir+json")
                .send()
                .await
                .map_err(|e| format!("{resource_type}: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("{resource_type}: HTTP {}", response.status()));
            }
            response
                .json::<Value>()
                .await
                .map_err(|e| format!("{resource_type}: {e}"))
        }
        .await;
        let bundle = match answer {
            Ok(bundle) => bundle,
            Err(reason) => {
                return SourceAnswer {
                    source,
                    resources: Err(reason),
                };
            }
        };
        for entry in bundle
            .get("entry")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(resource) = entry.get("resource")
                && categories_of(resource)
                    .iter()
                    .any(|c| categories.contains(c))
            {
                resources.push(resource.clone());
            }
        }
    }
    SourceAnswer {
        source,
        resources: Ok(resources),
    }
}

/// Fetches the person's data of `categories` from every source in parallel, each within
/// [`FETCH_SOURCE_TIMEOUT`], into one Bundle whose first entry is an OperationOutcome naming
/// the sources that answered and those that did not.
pub async fn fetch(
    network: Arc<Network>,
    person: &PersonalId,
    bsn: &str,
    categories: &[DataCategory],
    emergency: bool,
) -> Result<Value, FhirError> {
    let sources = localize(&network, person, categories, emergency).await?;
    let bsn_query = percent_encoding::utf8_percent_encode(
        &format!("{BSN_SYSTEM}|{bsn}"),
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string();
    let mut tasks = tokio::task::JoinSet::new();
    for (position, source) in sources.into_iter().enumerate() {
        let (network, bsn_query, categories) =
            (network.clone(), bsn_query.clone(), categories.to_vec());
        tasks.spawn(async move {
            let answer = match tokio::time::timeout(
                FETCH_SOURCE_TIMEOUT,
                fetch_from(&network, source.clone(), &bsn_query, &categories),
            )
            .await
            {
                Ok(answer) => answer,
                Err(_) => SourceAnswer {
                    source,
                    resources: Err(format!(
                        "no answer within {} s",
                        FETCH_SOURCE_TIMEOUT.as_secs()
                    )),
                },
            };
            (position, answer)
        });
    }
    let mut answers: Vec<(usize, SourceAnswer)> = tasks.join_all().await;
    answers.sort_by_key(|(position, _)| *position);
    let answers = answers.into_iter().map(|(_, answer)| answer);
    let mut issues = Vec::new();
    let mut entries = Vec::new();
    for answer in answers {
        let who = format!("{} (URA {})", answer.source.name, answer.source.ura);
        match answer.resources {
            Ok(resources) => {
                issues.push(json!({"severity": "information", "code": "informational",
                    "diagnostics": format!("{who} answered with {} resources", resources.len()),
                    "details": {"coding": [{"system": "http://fhir.nl/fhir/NamingSystem/ura", "code": answer.source.ura}]}}));
                entries.extend(resources.into_iter().map(|resource| json!({"resource": resource})));
            }
            Err(reason) => issues.push(json!({"severity": "warning", "code": "transient",
                "diagnostics": format!("{who} did not answer: {reason}"),
                "details": {"coding": [{"system": "http://fhir.nl/fhir/NamingSystem/ura", "code": answer.source.ura}]}})),
        }
    }
    let mut all = vec![json!({"resource": {"resourceType": "OperationOutcome", "issue": issues}})];
    all.extend(entries);
    Ok(
        json!({"resourceType": "Bundle", "type": "collection", "total": all.len() - 1, "entry": all}),
    )
}

/// `GET /fhir/$fetch?patient.identifier=BSN&category=medication`.
pub(crate) async fn fetch_operation(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, FhirError> {
    let network = network(&state)?;
    let (person, categories, emergency) = question(&params)?;
    let bsn = params
        .get("patient.identifier")
        .map(|i| i.rsplit('|').next().unwrap_or(i).to_string())
        .unwrap_or_default();
    Ok(fhir_response(
        fetch(network, &person, &bsn, &categories, emergency).await?,
    ))
}
