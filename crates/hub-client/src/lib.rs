//! An organisation's client of the hub's JSON APIs, for whatever acts on its behalf (its
//! node, the command line, the professional's viewer): exchange tokens from the pseudonym
//! service, registrations and lookups at the referral index, consent directives and
//! decisions, treatment relations, and access tokens and their verification keys from the
//! trust module.
//!
//! A BSN (or zorgverificatienummer) never leaves the caller in clear: the client blinds it
//! locally, sends only the blinded element to the pseudonym service, and pairs the answer
//! with its blinding factor into an exchange token for the recipient.
//! What it is not: a retry loop (the node's outbox retries), a cache (the node's consent
//! cache is its policy's), or the hub (which it only calls over HTTP).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;
use zorgnet_fhir::categories::DataCategory;
use zorgnet_pseudonym::{BlindFactor, ExchangeToken, PersonalId, RecipientId, Zvn, blind};
use zorgnet_trust::token::{Purpose, TokenRequest};

/// How long one call to the hub may take before it counts as failed.
pub const HUB_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting to the hub may take.
pub const HUB_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a call to the hub failed.
#[derive(Debug, thiserror::Error)]
pub enum HubClientError {
    /// The hub could not be reached or did not answer in time: retry later.
    #[error("hub unreachable: {0}")]
    Unreachable(String),
    /// The hub answered with an error status.
    #[error("hub answered {status}: {detail}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The problem document's detail.
        detail: String,
    },
    /// The input cannot be turned into a request (a malformed BSN).
    #[error("{0}")]
    Invalid(String),
}

impl HubClientError {
    /// Whether trying again later may succeed (the hub was down, overloaded or failing),
    /// as opposed to a request the hub will always refuse.
    pub fn is_transient(&self) -> bool {
        match self {
            HubClientError::Unreachable(_) => true,
            HubClientError::Refused { status, .. } => {
                *status >= 500 || *status == 429 || *status == 401
            }
            HubClientError::Invalid(_) => false,
        }
    }
}

/// A client of one hub, authenticated as one organisation.
#[derive(Clone)]
pub struct HubClient {
    base: String,
    key: String,
    http: reqwest::Client,
    tls: Option<rustls::ClientConfig>,
}

impl std::fmt::Debug for HubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// One holder of data, as a lookup answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// URA number.
    pub ura: String,
    /// Categories it holds and may share.
    pub categories: Vec<String>,
}

#[derive(Deserialize)]
struct Evaluations {
    evaluations: Vec<String>,
}

/// People blinded for the pseudonym service, in order: the blinding factors the holder keeps
/// for the exchange tokens and the base64url inputs it sends.
pub struct BlindedBatch {
    factors: Vec<BlindFactor>,
    inputs: Vec<String>,
}

/// Blinds each person locally (the first half of [`HubClient::exchange_tokens`]).
pub fn blind_all(people: &[PersonalId]) -> Result<BlindedBatch, HubClientError> {
    let mut factors = Vec::with_capacity(people.len());
    let mut inputs = Vec::with_capacity(people.len());
    for person in people {
        let (factor, input) = blind(person).map_err(|e| HubClientError::Invalid(e.to_string()))?;
        factors.push(factor);
        inputs.push(input.to_base64());
    }
    Ok(BlindedBatch { factors, inputs })
}

#[derive(Deserialize)]
struct Holders {
    organisations: Vec<Holder>,
}

/// An access token the hub issued to this organisation.
#[derive(Clone, Deserialize)]
pub struct IssuedToken {
    /// The token, for `Authorization: Bearer`.
    pub access_token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// The question a node puts to the consent register before serving another organisation.
#[derive(Debug, Clone)]
pub struct ConsentQuestion<'a> {
    /// The organisation whose professional wants to read.
    pub requester_ura: &'a str,
    /// This node's organisation, which holds the data.
    pub holder_ura: &'a str,
    /// The professional's UZI role code, when the requester names one.
    pub role: Option<&'a str>,
    /// The category.
    pub category: DataCategory,
    /// Why.
    pub purpose: Purpose,
}

#[derive(Deserialize)]
struct DecisionAnswer {
    decision: String,
    reason: String,
}

/// What a registration batch changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct BatchResult {
    /// (person, category) pairs sent.
    pub pairs: usize,
    /// Pairs that changed.
    pub changed: usize,
}

impl HubClient {
    /// A client for the hub at `base` (`http://hub:7000`), using the organisation's key.
    pub fn new(base: &str, key: &str) -> Result<HubClient, HubClientError> {
        HubClient::with_tls(base, key, None)
    }

    /// A client for the hub at `base` (`https://hub:7000`) over `tls` (the network CA as
    /// the only root and, for an organisation, its certificate as client certificate:
    /// `zorgnet_trust::tls::client_config`), using the organisation's (or the operator's)
    /// key. A node's other clients in the network use the same `tls`.
    pub fn with_tls(
        base: &str,
        key: &str,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<HubClient, HubClientError> {
        let mut http = reqwest::Client::builder();
        if let Some(tls) = &tls {
            http = http.tls_backend_preconfigured(tls.clone());
        }
        let http = http
            .timeout(HUB_REQUEST_TIMEOUT)
            .connect_timeout(HUB_CONNECT_TIMEOUT)
            .build()
            .map_err(|e| HubClientError::Invalid(format!("HTTP client: {e}")))?;
        Ok(HubClient {
            base: base.trim_end_matches('/').to_string(),
            key: key.to_string(),
            http,
            tls,
        })
    }

    /// The TLS client configuration this client was made with.
    pub fn tls(&self) -> Option<&rustls::ClientConfig> {
        self.tls.as_ref()
    }

    /// The hub's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The organisation's key at the hub.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// GETs a hub path and returns the JSON answer.
    pub async fn get(&self, path: &str) -> Result<Value, HubClientError> {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// POSTs JSON to a hub path and returns the JSON answer.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, HubClientError> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// PUTs JSON to a hub path and returns the JSON answer.
    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, HubClientError> {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, HubClientError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| HubClientError::Unreachable(e.to_string()))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| HubClientError::Unreachable(e.to_string()))?;
        if !status.is_success() {
            let detail = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("detail").and_then(Value::as_str).map(String::from))
                .unwrap_or(text);
            return Err(HubClientError::Refused {
                status: status.as_u16(),
                detail,
            });
        }
        serde_json::from_str(&text).map_err(|e| HubClientError::Refused {
            status: status.as_u16(),
            detail: format!("unreadable answer: {e}"),
        })
    }

    /// Exchange tokens for `recipient`, one per person, in order: blinds locally, asks the
    /// pseudonym service to evaluate, pairs each answer with its blinding factor.
    pub async fn exchange_tokens(
        &self,
        people: &[PersonalId],
        recipient: &RecipientId,
    ) -> Result<Vec<ExchangeToken>, HubClientError> {
        self.evaluate_blinded(blind_all(people)?, recipient).await
    }

    /// The second half of [`HubClient::exchange_tokens`], for inputs blinded earlier with
    /// [`blind_all`]: asks the pseudonym service to evaluate them for `recipient` and pairs
    /// each answer with its blinding factor.
    pub async fn evaluate_blinded(
        &self,
        blinded: BlindedBatch,
        recipient: &RecipientId,
    ) -> Result<Vec<ExchangeToken>, HubClientError> {
        let BlindedBatch { factors, inputs } = blinded;
        let answer = self
            .post(
                "/prs/evaluate",
                &json!({"recipient": recipient.as_str(), "blinded": inputs}),
            )
            .await?;
        let evaluations: Evaluations =
            serde_json::from_value(answer).map_err(|e| HubClientError::Refused {
                status: 200,
                detail: format!("unreadable evaluations: {e}"),
            })?;
        if evaluations.evaluations.len() != factors.len() {
            return Err(HubClientError::Refused {
                status: 200,
                detail: "the pseudonym service answered a different number of evaluations".into(),
            });
        }
        Ok(evaluations
            .evaluations
            .into_iter()
            .zip(factors)
            .map(|(jwe, factor)| ExchangeToken::new(jwe, factor))
            .collect())
    }

    /// One exchange token for the referral index.
    pub async fn referral_index_token(
        &self,
        person: &PersonalId,
    ) -> Result<ExchangeToken, HubClientError> {
        let mut tokens = self
            .exchange_tokens(std::slice::from_ref(person), &RecipientId::referral_index())
            .await?;
        tokens.pop().ok_or_else(|| HubClientError::Refused {
            status: 200,
            detail: "no evaluation".into(),
        })
    }

    /// Registers (or, with `register == false`, deregisters) the calling organisation as a
    /// holder of `categories` for each person.
    pub async fn update_registrations(
        &self,
        items: &[(ExchangeToken, Vec<String>)],
        register: bool,
    ) -> Result<BatchResult, HubClientError> {
        let registrations: Vec<Value> = items
            .iter()
            .map(|(token, categories)| json!({"token": token_value(token), "categories": categories}))
            .collect();
        let path = if register {
            "/nvi/registrations"
        } else {
            "/nvi/deregistrations"
        };
        let answer = self
            .post(path, &json!({"registrations": registrations}))
            .await?;
        serde_json::from_value(answer).map_err(|e| HubClientError::Refused {
            status: 200,
            detail: format!("unreadable answer: {e}"),
        })
    }

    /// Which organisations hold `categories` about the person, after consent filtering.
    pub async fn lookup(
        &self,
        person: &PersonalId,
        categories: &[String],
        emergency: bool,
    ) -> Result<Vec<Holder>, HubClientError> {
        let token = self.referral_index_token(person).await?;
        let purpose = if emergency { "emergency" } else { "treatment" };
        let answer = self
            .post(
                "/nvi/lookup",
                &json!({"token": token_value(&token), "categories": categories, "purpose": purpose}),
            )
            .await?;
        let holders: Holders =
            serde_json::from_value(answer).map_err(|e| HubClientError::Refused {
                status: 200,
                detail: format!("unreadable lookup: {e}"),
            })?;
        Ok(holders.organisations)
    }

    /// A short-lived access token asserting this organisation (and, when named, the
    /// professional and their role) towards one other organisation's node.
    pub async fn access_token(
        &self,
        request: &TokenRequest,
    ) -> Result<IssuedToken, HubClientError> {
        let body =
            serde_json::to_value(request).map_err(|e| HubClientError::Invalid(e.to_string()))?;
        let answer = self.post("/trust/token", &body).await?;
        serde_json::from_value(answer).map_err(|e| HubClientError::Refused {
            status: 200,
            detail: format!("unreadable access token: {e}"),
        })
    }

    /// The hub's token-verification keys, as a JWK set.
    pub async fn trust_keys(&self) -> Result<Value, HubClientError> {
        self.get("/trust/keys").await
    }

    /// Asks the consent register whether `question` is allowed for the person behind
    /// `token` (an exchange token for the referral index).
    pub async fn consent_decision(
        &self,
        token: &ExchangeToken,
        question: &ConsentQuestion<'_>,
    ) -> Result<Verdict, HubClientError> {
        let mut body = json!({
            "token": token_value(token),
            "requester_ura": question.requester_ura,
            "holder_ura": question.holder_ura,
            "category": question.category.code(),
            "purpose": question.purpose.code(),
        });
        if let Some(role) = question.role {
            body["role"] = Value::from(role);
        }
        let answer = self.post("/consent/decision", &body).await?;
        let answer: DecisionAnswer =
            serde_json::from_value(answer).map_err(|e| HubClientError::Refused {
                status: 200,
                detail: format!("unreadable decision: {e}"),
            })?;
        Ok(Verdict {
            permit: answer.decision == "permit",
            reason: answer.reason,
        })
    }

    /// The zorgverificatienummer the hub derives from a sédula number and birth date; `None`
    /// when the hub will not derive one (a malformed sédula number or birth date).
    pub async fn zvn_of_sedula(
        &self,
        sedula: &str,
        birth_date: &str,
    ) -> Result<Option<PersonalId>, HubClientError> {
        match self
            .post(
                "/prs/zvn",
                &json!({"sedula": sedula, "birth_date": birth_date}),
            )
            .await
        {
            Ok(body) => Ok(body
                .get("zvn")
                .and_then(Value::as_str)
                .and_then(|z| Zvn::parse(z).ok())
                .map(PersonalId::from)),
            Err(e) if e.is_transient() => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "no zorgverificatienummer for a patient");
                Ok(None)
            }
        }
    }
}

/// One version of a consent directive, as the consent register answers (`/consent/directives`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentDirective {
    /// Stable id across versions.
    pub directive_id: String,
    /// Version, from 1.
    pub version: i64,
    /// `opt-out`, `consent` or `emergency-opt-out`.
    pub kind: String,
    /// The category it is about; `None` for all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The organisation it is about (consent only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ura: Option<String>,
    /// `permit` or `deny` (opt-outs are `deny`).
    pub decision: String,
    /// `active` or `revoked`.
    pub status: String,
    /// Start of validity (RFC 3339).
    pub valid_from: String,
    /// End of validity, exclusive (RFC 3339); absent for open-ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    /// When this version was recorded (RFC 3339).
    pub recorded_at: String,
    /// Who recorded this version: an organisation's URA, `operator` or `citizen`.
    pub recorded_by: String,
}

/// A person's directives the caller manages: the current version of each, and every version.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConsentDirectives {
    /// The current version of each directive (revoked ones too, with status `revoked`).
    pub current: Vec<ConsentDirective>,
    /// Every version, by directive then version.
    pub history: Vec<ConsentDirective>,
}

/// A directive to record: what `POST /consent/directives` takes besides the person's token.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct NewConsentDirective {
    /// `opt-out`, `consent` or `emergency-opt-out`.
    pub kind: String,
    /// The category; `None` for all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The organisation (consent only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ura: Option<String>,
    /// Consent only: `permit` or `deny`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// Start (RFC 3339 or a date); `None` for now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<String>,
    /// End, exclusive (RFC 3339 or a date); `None` for open-ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
}

/// Whether `id` can be a directive id in a path (the register's ids are UUIDs): letters,
/// digits and `-` only, at most [`DIRECTIVE_ID_BYTES_MAX`] bytes.
pub fn is_directive_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= DIRECTIVE_ID_BYTES_MAX
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Longest directive id [`HubClient::revoke_consent_directive`] sends.
pub const DIRECTIVE_ID_BYTES_MAX: usize = 64;

impl HubClient {
    /// Records `directive` for the person behind `token` (an exchange token for the referral
    /// index) at the consent register; the register's answer is the version it stored.
    pub async fn record_consent_directive(
        &self,
        token: &ExchangeToken,
        directive: &NewConsentDirective,
    ) -> Result<ConsentDirective, HubClientError> {
        let mut body =
            serde_json::to_value(directive).map_err(|e| HubClientError::Invalid(e.to_string()))?;
        body["token"] = token_value(token);
        let answer = self.post("/consent/directives", &body).await?;
        unreadable(answer, "directive")
    }

    /// The directives of the person behind `token` that this organisation manages (every
    /// directive of theirs for a citizen portal or the operator).
    pub async fn consent_directives(
        &self,
        token: &ExchangeToken,
    ) -> Result<ConsentDirectives, HubClientError> {
        let answer = self
            .post(
                "/consent/directives/query",
                &json!({"token": token_value(token)}),
            )
            .await?;
        unreadable(answer, "directives")
    }

    /// Revokes directive `id` of the person behind `token`; the register's answer is the new
    /// (revoked) version. An id that is not this person's, or not one this organisation
    /// manages, is the register's 404.
    pub async fn revoke_consent_directive(
        &self,
        token: &ExchangeToken,
        id: &str,
    ) -> Result<ConsentDirective, HubClientError> {
        if !is_directive_id(id) {
            return Err(HubClientError::Invalid("not a directive id".into()));
        }
        let answer = self
            .post(
                &format!("/consent/directives/{id}/revoke"),
                &json!({"token": token_value(token)}),
            )
            .await?;
        unreadable(answer, "directive")
    }
}

/// `answer` read as a `T`, or the error of an unreadable `what`.
fn unreadable<T: serde::de::DeserializeOwned>(
    answer: Value,
    what: &str,
) -> Result<T, HubClientError> {
    serde_json::from_value(answer).map_err(|e| HubClientError::Refused {
        status: 200,
        detail: format!("unreadable {what}: {e}"),
    })
}

/// One answer of the consent register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Permit (true) or deny.
    pub permit: bool,
    /// Why, in words for the professional and the log.
    pub reason: String,
}

/// An exchange token as the JSON object the hub's APIs take.
pub fn token_value(token: &ExchangeToken) -> Value {
    serde_json::from_str(&token.to_json()).unwrap_or(Value::Null)
}
