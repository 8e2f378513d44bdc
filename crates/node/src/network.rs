//! The node as a member of the network: localising a patient's data at other organisations
//! (`/fhir/$localize`) and fetching it from all of them at once (`/fhir/$fetch`), each by
//! `GET` with query parameters or by `POST` with a `Parameters` body (or both).
//!
//! `$localize` asks the hub's referral index which organisations hold data of the asked
//! categories (consent filtering happens there) and answers each with its FHIR endpoint from
//! the node's cached address book, so addressing works while the hub is unreachable.
//! `$fetch` then queries every source in parallel with a per-source timeout, presenting to
//! each a short-lived access token from the hub made for that source alone (its URA is the
//! token's audience, so no source can replay what it was shown at another; `Authorization:
//! Bearer`, cached per audience and asker until shortly before it expires), naming the
//! professional the `$fetch` caller acts for (`uzi`, `role`), the purpose and, for an
//! emergency, the break-the-glass `reason`. It merges the answers into one Bundle whose
//! OperationOutcome says which sources answered, which refused by consent (a source's 403),
//! and which did not answer.
//! What it is not: the access policy at the sources (each source decides for itself, in
//! [`crate::access`]), or a viewer that de-duplicates across sources.

use crate::AppState;
use crate::access::{AccessConfig, AccessControl};
use crate::addressing::AddressBookCache;
use crate::hub_client::{HubClient, HubClientError};
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zorgnet_fhir::IssueCode;
use zorgnet_fhir::categories::{DataCategory, categories_of, parse_categories};
use zorgnet_fhir::identifiers::{BSN_SYSTEM, ZVN_SYSTEM};
use zorgnet_pseudonym::{Bsn, PersonalId, Zvn};
use zorgnet_rest::error::{FHIR_JSON, FhirError};
use zorgnet_trust::token::{MAX_REASON_CHARS, Purpose, TokenRequest};
use zorgnet_trust::{is_role_code, is_uzi_number};

/// How long one source may take to answer a fetch.
pub const FETCH_SOURCE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most resources taken from one source per resource type (one page).
pub const FETCH_PAGE_SIZE: usize = 1_000;
/// How long before its expiry a cached access token is replaced by a new one, so that a
/// token never expires on its way to a source.
pub const ACCESS_TOKEN_RENEW_MARGIN: Duration = Duration::from_secs(30);
/// Most access tokens kept (one per source, professional, role, purpose and reason).
pub const MAX_CACHED_ACCESS_TOKENS: usize = 10_000;
/// Shortest time between two refreshes of the address book copy caused by a lookup that
/// named an organisation the copy does not know: a new organisation is found within one
/// lookup, and a referral index naming an organisation that is in no address book cannot
/// make every lookup wait for the hub.
pub const ADDRESS_MISS_SYNC_INTERVAL: Duration = Duration::from_secs(5);

/// What a node needs to reach the rest of the network.
pub struct Network {
    /// The hub, as this organisation.
    pub hub: HubClient,
    /// The local copy of the address book.
    pub addresses: AddressBookCache,
    http: reqwest::Client,
    access: AccessControl,
    tokens: Mutex<HashMap<TokenRequest, CachedToken>>,
    /// When a lookup last refreshed the address book copy because it missed an organisation.
    last_miss_sync: tokio::sync::Mutex<Option<Instant>>,
}

/// An access token of this organisation and when to stop using it.
struct CachedToken {
    token: String,
    renew_at: Instant,
}

impl Network {
    /// A network connection through `hub`, addressing from `addresses`.
    /// Sources are reached over the hub client's TLS configuration ([`HubClient::tls`]).
    pub fn new(hub: HubClient, addresses: AddressBookCache) -> Result<Network, FhirError> {
        let mut http = reqwest::Client::builder();
        if let Some(tls) = hub.tls() {
            http = http.tls_backend_preconfigured(tls.clone());
        }
        let http = http.timeout(FETCH_SOURCE_TIMEOUT).build().map_err(|e| {
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
            access: AccessControl::new(AccessConfig::default()),
            tokens: Mutex::default(),
            last_miss_sync: tokio::sync::Mutex::new(None),
        })
    }

    /// The same network connection with the access policy tuned by `config`.
    pub fn with_access(mut self, config: AccessConfig) -> Network {
        self.access = AccessControl::new(config);
        self
    }

    /// The access policy's state: the hub's token keys and the cached consent decisions.
    pub fn access(&self) -> &AccessControl {
        &self.access
    }

    /// An access token of this organisation as `request` asks (one audience), from the hub
    /// or from memory while it is valid for at least [`ACCESS_TOKEN_RENEW_MARGIN`].
    pub async fn access_token(&self, request: &TokenRequest) -> Result<String, HubClientError> {
        {
            let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(cached) = tokens.get(request).filter(|c| Instant::now() < c.renew_at) {
                return Ok(cached.token.clone());
            }
        }
        let issued = self.hub.access_token(request).await?;
        let now = Instant::now();
        let renew_at =
            now + Duration::from_secs(issued.expires_in).saturating_sub(ACCESS_TOKEN_RENEW_MARGIN);
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if tokens.len() >= MAX_CACHED_ACCESS_TOKENS {
            tokens.retain(|_, cached| now < cached.renew_at);
            if tokens.len() >= MAX_CACHED_ACCESS_TOKENS {
                tokens.clear();
            }
        }
        tokens.insert(
            request.clone(),
            CachedToken {
                token: issued.access_token.clone(),
                renew_at,
            },
        );
        Ok(issued.access_token)
    }
}

/// Who a `$fetch` asks for: the professional (UZI number and role at this organisation) or
/// nobody (a system request), why, and for an emergency the break-the-glass reason. Each
/// source gets a token of its own for it ([`Asker::token_request`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Asker {
    /// The professional's UZI number.
    pub uzi: Option<String>,
    /// The professional's UZI role code.
    pub role: Option<String>,
    /// Why.
    pub purpose: Purpose,
    /// The break-the-glass reason (purpose emergency).
    pub reason: Option<String>,
}

impl Asker {
    /// The token request for showing this asker to the organisation `audience` only.
    pub fn token_request(&self, audience: &str) -> TokenRequest {
        TokenRequest {
            audience: audience.to_string(),
            uzi: self.uzi.clone(),
            role: self.role.clone(),
            purpose: self.purpose,
            reason: self.reason.clone(),
        }
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

/// The canonical URL of the definition of `$localize`.
pub const LOCALIZE_DEFINITION: &str = "http://zorgnet.nl/fhir/OperationDefinition/localize";
/// The canonical URL of the definition of `$fetch`.
pub const FETCH_DEFINITION: &str = "http://zorgnet.nl/fhir/OperationDefinition/fetch";

/// The one value of parameter `name`, if given; a second one is a 400.
fn single<'a>(params: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, FhirError> {
    let mut values = params.iter().filter(|(n, _)| n == name).map(|(_, v)| v);
    match (values.next(), values.next()) {
        (Some(_), Some(_)) => Err(FhirError::bad_request(format!("{name} may be given once"))),
        (first, _) => Ok(first.map(String::as_str)),
    }
}

/// The person `patient.identifier` names: a BSN (with or without the BSN system) or a
/// zorgverificatienummer (with the [`ZVN_SYSTEM`]), parsed, and as the `system|value` the
/// sources are asked by.
fn person_of_params(params: &[(String, String)]) -> Result<(PersonalId, String), FhirError> {
    let identifier = single(params, "patient.identifier")?.ok_or_else(|| {
        FhirError::bad_request("patient.identifier is required (a BSN or a zorgverificatienummer)")
    })?;
    let (system, value) = identifier
        .split_once('|')
        .unwrap_or((BSN_SYSTEM, identifier));
    let person = match system {
        BSN_SYSTEM => Bsn::parse(value).map(PersonalId::Bsn).map_err(|_| {
            FhirError::bad_request("patient.identifier is not a valid BSN (11-check)")
        })?,
        ZVN_SYSTEM => Zvn::parse(value).map(PersonalId::Zvn).map_err(|_| {
            FhirError::bad_request(
                "patient.identifier is not a valid zorgverificatienummer (16 digits)",
            )
        })?,
        other => {
            return Err(FhirError::bad_request(format!(
                "patient.identifier must be a BSN ({BSN_SYSTEM}) or a zorgverificatienummer \
                 ({ZVN_SYSTEM}), not {other}"
            )));
        }
    };
    Ok((person, format!("{system}|{}", value.trim())))
}

/// Reads `patient.identifier` (a BSN or a zorgverificatienummer), `category` (repeated or comma-separated; all when
/// absent) and `purpose`.
fn question(
    params: &[(String, String)],
) -> Result<(PersonalId, Vec<DataCategory>, bool), FhirError> {
    let (person, _) = person_of_params(params)?;
    let asked: Vec<&str> = params
        .iter()
        .filter(|(name, _)| name == "category")
        .flat_map(|(_, list)| list.split(','))
        .collect();
    let categories = if asked.is_empty() {
        DataCategory::ALL.to_vec()
    } else {
        let mut categories = parse_categories(asked).map_err(FhirError::bad_request)?;
        categories.sort_unstable();
        categories.dedup();
        categories
    };
    if categories.is_empty() {
        return Err(FhirError::bad_request("category names no category"));
    }
    let emergency = single(params, "purpose")? == Some("emergency");
    Ok((person, categories, emergency))
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
        let mut address = endpoint_for(network, &holder.ura).await?;
        if address.is_none() && network.refresh_addresses_after_miss().await {
            address = endpoint_for(network, &holder.ura).await?;
        }
        sources.push(Source {
            name: address.as_ref().map(|a| a.name.clone()).unwrap_or_default(),
            fhir_base_url: address.and_then(|a| a.fhir_base_urls.into_iter().next()),
            ura: holder.ura,
            categories: holder.categories,
        });
    }
    Ok(sources)
}

async fn endpoint_for(
    network: &Network,
    ura: &str,
) -> Result<Option<crate::addressing::OrganisationAddress>, FhirError> {
    network.addresses.endpoint_for(ura).await.map_err(|e| {
        FhirError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            IssueCode::Exception,
            format!("address book: {e}"),
        )
    })
}

impl Network {
    /// Refreshes the address book copy from the hub because a lookup named an organisation
    /// it does not know, at most once per [`ADDRESS_MISS_SYNC_INTERVAL`]; concurrent misses
    /// wait for one refresh. True when a refresh ran and succeeded (worth looking again).
    async fn refresh_addresses_after_miss(&self) -> bool {
        let mut last = self.last_miss_sync.lock().await;
        if last.is_some_and(|at| at.elapsed() < ADDRESS_MISS_SYNC_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        match self.addresses.sync(self.hub.base(), self.hub.key()).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "address book refresh after a miss failed; using the cached copy");
                false
            }
        }
    }
}

fn fhir_response(body: Value) -> Response {
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    response
}

/// `GET /fhir/$localize?patient.identifier=BSN&category=medication` (or `POST` with these
/// as a Parameters body): a Parameters resource with one `source` per organisation (URA,
/// name, endpoint, categories).
pub(crate) async fn localize_operation(
    State(state): State<Arc<AppState>>,
    method: Method,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Response, FhirError> {
    let network = network(&state)?;
    let params = zorgnet_rest::operation::parameters(&method, query.as_deref(), body).await?;
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
    fetched: Result<Fetched, String>,
}

/// The answers of a source that could be reached.
#[derive(Default)]
struct Fetched {
    /// The resources of the asked categories, each with its URL at the source.
    resources: Vec<(String, Value)>,
    /// Resource types the source answered for.
    answered: usize,
    /// `type: reason` for each resource type the source refused (HTTP 403).
    refusals: Vec<String>,
}

/// One resource type's answer.
enum TypeAnswer {
    Bundle(Value),
    Refused(String),
}

/// The diagnostics of an OperationOutcome body, joined.
fn outcome_diagnostics(body: &Value) -> Option<String> {
    let diagnostics: Vec<&str> = body
        .get("issue")?
        .as_array()?
        .iter()
        .filter_map(|i| i.get("diagnostics").and_then(Value::as_str))
        .collect();
    (!diagnostics.is_empty()).then(|| diagnostics.join("; "))
}

/// Asks a source for one resource type of the person's data.
async fn ask_type(
    http: &reqwest::Client,
    url: &str,
    resource_type: &str,
    token: &str,
) -> Result<TypeAnswer, String> {
    let response = http
        .get(url)
        .header(header::ACCEPT, "application/fhir+json")
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("{resource_type}: {}", e.without_url()))?;
    if response.status() == StatusCode::FORBIDDEN {
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        return Ok(TypeAnswer::Refused(
            outcome_diagnostics(&body).unwrap_or_else(|| "no reason given".into()),
        ));
    }
    if !response.status().is_success() {
        return Err(format!("{resource_type}: HTTP {}", response.status()));
    }
    response
        .json::<Value>()
        .await
        .map(TypeAnswer::Bundle)
        .map_err(|e| format!("{resource_type}: {}", e.without_url()))
}

async fn fetch_from(
    network: &Network,
    source: Source,
    identifier_query: &str,
    categories: &[DataCategory],
    token: &str,
) -> SourceAnswer {
    let Some(base) = source.fhir_base_url.clone() else {
        return SourceAnswer {
            source,
            fetched: Err("the address book has no FHIR endpoint for this organisation".into()),
        };
    };
    let mut types: Vec<&str> = categories
        .iter()
        .flat_map(|c| c.resource_types().iter().copied())
        .collect();
    types.sort_unstable();
    types.dedup();
    // Every type at once: the source answers each as one access (and one record of its log,
    // whose group commit then serves them together), so asking them one after another would
    // add up their latencies.
    let mut asking = tokio::task::JoinSet::new();
    for (position, resource_type) in types.into_iter().enumerate() {
        let url = format!(
            "{base}/{resource_type}?patient.identifier={identifier_query}&_count={FETCH_PAGE_SIZE}"
        );
        let (http, token) = (network.http.clone(), token.to_string());
        asking.spawn(async move {
            (
                position,
                resource_type,
                ask_type(&http, &url, resource_type, &token).await,
            )
        });
    }
    let mut answers = asking.join_all().await;
    answers.sort_by_key(|(position, _, _)| *position);
    let mut fetched = Fetched::default();
    for (_, resource_type, answer) in answers {
        let bundle = match answer {
            Ok(TypeAnswer::Bundle(bundle)) => bundle,
            Ok(TypeAnswer::Refused(reason)) => {
                fetched.refusals.push(format!("{resource_type}: {reason}"));
                continue;
            }
            Err(reason) => {
                return SourceAnswer {
                    source,
                    fetched: Err(reason),
                };
            }
        };
        fetched.answered += 1;
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
                // The URL is made here from the source's own endpoint, whatever the source
                // wrote as its entry's fullUrl.
                let full_url = format!(
                    "{}/{}/{}",
                    base.trim_end_matches('/'),
                    resource["resourceType"].as_str().unwrap_or_default(),
                    resource["id"].as_str().unwrap_or_default()
                );
                fetched.resources.push((full_url, resource.clone()));
            }
        }
    }
    SourceAnswer {
        source,
        fetched: Ok(fetched),
    }
}

/// Fetches the person's data of `categories` from every source in parallel, each within
/// [`FETCH_SOURCE_TIMEOUT`], into one Bundle whose first entry is an OperationOutcome naming
/// the sources that answered, those that refused by consent, and those that did not answer.
/// Each source is shown an access token of this organisation for `asker` made for that
/// source alone; the tokens are got first, together, and a token the hub refuses fails the
/// fetch. Each source is asked by `identifier` (`system|value`: the person's BSN or
/// zorgverificatienummer).
pub async fn fetch(
    network: Arc<Network>,
    person: &PersonalId,
    identifier: &str,
    categories: &[DataCategory],
    asker: &Asker,
) -> Result<Value, FhirError> {
    let emergency = asker.purpose == Purpose::Emergency;
    let sources = localize(&network, person, categories, emergency).await?;
    let mut asking = tokio::task::JoinSet::new();
    for (position, source) in sources.iter().enumerate() {
        let (network, request) = (network.clone(), asker.token_request(&source.ura));
        asking.spawn(async move { (position, network.access_token(&request).await) });
    }
    let mut tokens = vec![String::new(); sources.len()];
    for (position, issued) in asking.join_all().await {
        tokens[position] = issued.map_err(|e| {
            let status = match &e {
                _ if e.is_transient() => StatusCode::BAD_GATEWAY,
                HubClientError::Refused { status: 403, .. } => StatusCode::FORBIDDEN,
                _ => StatusCode::BAD_REQUEST,
            };
            let code = if status == StatusCode::FORBIDDEN {
                IssueCode::Forbidden
            } else {
                IssueCode::Exception
            };
            FhirError::new(status, code, format!("access token: {e}"))
        })?;
    }
    let identifier_query =
        percent_encoding::utf8_percent_encode(identifier, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let mut tasks = tokio::task::JoinSet::new();
    for (position, (source, token)) in sources.into_iter().zip(tokens).enumerate() {
        let (network, identifier_query, categories) = (
            network.clone(),
            identifier_query.clone(),
            categories.to_vec(),
        );
        tasks.spawn(async move {
            let answer = match tokio::time::timeout(
                FETCH_SOURCE_TIMEOUT,
                fetch_from(
                    &network,
                    source.clone(),
                    &identifier_query,
                    &categories,
                    &token,
                ),
            )
            .await
            {
                Ok(answer) => answer,
                Err(_) => SourceAnswer {
                    source,
                    fetched: Err(format!(
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
        let details = json!({"coding": [{"system": "http://fhir.nl/fhir/NamingSystem/ura", "code": answer.source.ura}]});
        match answer.fetched {
            Ok(fetched) => {
                if fetched.answered > 0 {
                    issues.push(json!({"severity": "information", "code": "informational",
                        "diagnostics": format!("{who} answered with {} resources", fetched.resources.len()),
                        "details": details.clone()}));
                }
                if !fetched.refusals.is_empty() {
                    issues.push(json!({"severity": "warning", "code": "forbidden",
                        "diagnostics": format!("{who} refused by consent: {}", fetched.refusals.join("; ")),
                        "details": details}));
                }
                entries.extend(fetched.resources.into_iter().map(
                    |(full_url, resource)| json!({"fullUrl": full_url, "resource": resource}),
                ));
            }
            Err(reason) => issues.push(json!({"severity": "warning", "code": "transient",
                "diagnostics": format!("{who} did not answer: {reason}"),
                "details": details})),
        }
    }
    let mut all = vec![json!({"resource": {"resourceType": "OperationOutcome", "issue": issues}})];
    all.extend(entries);
    Ok(
        json!({"resourceType": "Bundle", "type": "collection", "total": all.len() - 1, "entry": all}),
    )
}

/// `GET /fhir/$fetch?patient.identifier=BSN&category=medication`, optionally with the
/// professional the caller acts for (`uzi=<UZI number>&role=<UZI role code>`, shown to the
/// sources in the access tokens; without them the tokens are system tokens), and
/// `purpose=emergency&reason=<break-the-glass reason>`; or `POST` with these as a
/// Parameters body.
pub(crate) async fn fetch_operation(
    State(state): State<Arc<AppState>>,
    method: Method,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Response, FhirError> {
    let network = network(&state)?;
    let params = zorgnet_rest::operation::parameters(&method, query.as_deref(), body).await?;
    let (person, categories, emergency) = question(&params)?;
    let asker = asker(&params, emergency)?;
    let (_, identifier) = person_of_params(&params)?;
    Ok(fhir_response(
        fetch(network, &person, &identifier, &categories, &asker).await?,
    ))
}

/// The professional, role and reason of a `$fetch`, checked for form (whether the
/// professional holds the role here is the hub's professional register's to say).
fn asker(params: &[(String, String)], emergency: bool) -> Result<Asker, FhirError> {
    let uzi = single(params, "uzi")?;
    let role = single(params, "role")?;
    let reason = single(params, "reason")?.map(str::trim);
    if let Some(uzi) = uzi
        && !is_uzi_number(uzi)
    {
        return Err(FhirError::bad_request(format!(
            "uzi {uzi:?} is not a UZI number (9 digits)"
        )));
    }
    if let Some(role) = role
        && !is_role_code(role)
    {
        return Err(FhirError::bad_request(format!(
            "role {role:?} is not a UZI role code (like 01.015)"
        )));
    }
    if uzi.is_some() != role.is_some() {
        return Err(FhirError::bad_request(
            "uzi and role go together: the professional and their role here",
        ));
    }
    match (emergency, reason) {
        (true, None) => {
            return Err(FhirError::bad_request(
                "purpose=emergency needs the professional's break-the-glass reason (reason)",
            ));
        }
        (true, Some(_)) if uzi.is_none() => {
            return Err(FhirError::bad_request(
                "only a professional breaks the glass: name them (uzi, role)",
            ));
        }
        (true, Some(reason)) if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS => {
            return Err(FhirError::bad_request(format!(
                "reason must be 1 to {MAX_REASON_CHARS} characters"
            )));
        }
        (false, Some(_)) => {
            return Err(FhirError::bad_request(
                "reason is given only with purpose=emergency",
            ));
        }
        _ => {}
    }
    Ok(Asker {
        uzi: uzi.map(String::from),
        role: role.map(String::from),
        purpose: if emergency {
            Purpose::Emergency
        } else {
            Purpose::Treatment
        },
        reason: reason.map(String::from),
    })
}
