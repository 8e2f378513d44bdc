//! The pseudonym service's API (`/prs`): recipients register their public keys; holders
//! (nodes) send blinded identifiers and get back, per identifier, the OPRF evaluation
//! encrypted to the named recipient; Caribbean Netherlands patients without a usable BSN get
//! a zorgverificatienummer. The cryptography is `zorgnet-pseudonym`'s; this module adds
//! storage of recipient keys, authorisation and HTTP.
//!
//! It also holds the hub's own recipient keys: the referral index (`nvi`) is a recipient
//! like any other, and the consent register keys its directives by the same referral-index
//! pseudonym (the two modules share one operator and one database, and every consent
//! decision the hub makes is about a referral-index lookup).
//!
//! Tables (component `prs`): `prs_recipients`.

use crate::HubState;
use crate::auth::Caller;
use crate::error::ApiError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::path::Path as FsPath;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use zorgnet_db::sql::SqlValue;
use zorgnet_db::{Database, Migration};
use zorgnet_pseudonym::{
    BlindedInput, ExchangeToken, KeyAlgorithm, Prs, PrsKeys, PrsRecipient, Pseudonym, RecipientId,
    RecipientKeys, RecipientPublicKey,
};

/// The PRS's migrations.
pub const MIGRATIONS: &[Migration] = &[Migration {
    component: "prs",
    version: 1,
    sql: "
CREATE TABLE prs_recipients (
    recipient_id {text} PRIMARY KEY,
    public_jwk {text} NOT NULL,
    registered_at_ms {int} NOT NULL,
    registered_by {text} NOT NULL
)",
}];

/// Most blinded identifiers in one evaluation request.
pub const MAX_EVALUATIONS_PER_REQUEST: usize = crate::MAX_BATCH_ITEMS;
/// Subdirectory of the data directory with the PRS's master keys.
const PRS_KEY_DIR: &str = "prs-keys";
/// Subdirectory with the referral index's recipient keys.
const NVI_KEY_DIR: &str = "nvi-keys";

/// The pseudonym service and the hub's own recipient identity.
pub struct PseudonymService {
    prs: Prs,
    recipients: RwLock<HashMap<RecipientId, Arc<PrsRecipient>>>,
    referral_index: RecipientKeys,
    /// Recipient keys precomputed so far, at most [`MAX_PRECOMPUTED_RECIPIENT_KEYS`].
    precomputed: AtomicUsize,
}

/// Recipients whose X25519 keys the PRS precomputes (each
/// [`zorgnet_pseudonym::PRECOMPUTED_KEY_BYTES`], 30 KiB: 7.5 MiB for all), which makes
/// evaluations for them about a fifth cheaper: the referral index first, then recipients in
/// the order they are loaded or registered. A national deployment has more recipients than
/// this; the first ones stay precomputed, later ones are served with plain keys.
pub const MAX_PRECOMPUTED_RECIPIENT_KEYS: usize = 256;

impl PseudonymService {
    /// Loads (or creates on first start) the keys in `data_dir` and the registered
    /// recipients from `db`. Blocking.
    pub fn open(data_dir: &FsPath, db: &Database) -> Result<PseudonymService, crate::HubError> {
        let setup = |e: zorgnet_pseudonym::Error| crate::HubError::Setup(e.to_string());
        let prs = Prs::new(PrsKeys::load_or_generate(&data_dir.join(PRS_KEY_DIR)).map_err(setup)?);
        let referral_index = RecipientKeys::load_or_generate(
            &data_dir.join(NVI_KEY_DIR),
            RecipientId::referral_index(),
            KeyAlgorithm::X25519,
        )
        .map_err(setup)?;
        let mut service = PseudonymService {
            prs,
            recipients: RwLock::new(HashMap::new()),
            referral_index,
            precomputed: AtomicUsize::new(0),
        };
        let mut recipients = HashMap::new();
        let own = RecipientId::referral_index();
        recipients.insert(
            own.clone(),
            Arc::new(
                service
                    .recipient_with_key(own, service.referral_index.public_key().clone())
                    .map_err(setup)?,
            ),
        );
        let rows = db.with_reader(|conn| {
            conn.query("SELECT recipient_id, public_jwk FROM prs_recipients", &[])
        })?;
        for mut row in rows {
            let (id, jwk) = (row[0].take_text(), row[1].take_text());
            let parsed = RecipientId::parse(&id).and_then(|rid| {
                let key = RecipientPublicKey::from_jwk(&jwk)?;
                Ok((rid.clone(), service.recipient_with_key(rid, key)?))
            });
            match parsed {
                Ok((rid, recipient)) => {
                    recipients.insert(rid, Arc::new(recipient));
                }
                Err(e) => tracing::warn!(recipient = %id, error = %e, "skipping stored recipient"),
            }
        }
        service.recipients = RwLock::new(recipients);
        Ok(service)
    }

    /// The PRS's side of recipient `id` with `key`, the key precomputed while fewer than
    /// [`MAX_PRECOMPUTED_RECIPIENT_KEYS`] are.
    fn recipient_with_key(
        &self,
        id: RecipientId,
        mut key: RecipientPublicKey,
    ) -> Result<PrsRecipient, zorgnet_pseudonym::Error> {
        let budget = self
            .precomputed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < MAX_PRECOMPUTED_RECIPIENT_KEYS).then_some(n + 1)
            });
        if budget.is_ok() && !key.precompute() {
            // Not an X25519 key: give the slot back.
            self.precomputed.fetch_sub(1, Ordering::Relaxed);
        }
        self.prs.recipient(id, key)
    }

    fn recipient(&self, id: &RecipientId) -> Option<Arc<PrsRecipient>> {
        self.recipients
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Opens an exchange token made for the referral index into the referral index's
    /// pseudonym for the person. A token for anyone else, expired or tampered is a 422.
    pub fn open_referral_index_token(&self, token: &TokenJson) -> Result<Pseudonym, ApiError> {
        let token = parse_token(token)?;
        self.referral_index
            .open(&token, unix_now_s())
            .map_err(refused)
    }

    /// [`PseudonymService::open_referral_index_token`] for a batch of parsed tokens, in
    /// order; one scalar inversion serves the whole batch.
    pub fn open_referral_index_tokens(
        &self,
        tokens: &[ExchangeToken],
    ) -> Vec<Result<Pseudonym, ApiError>> {
        self.referral_index
            .open_batch(tokens, unix_now_s())
            .into_iter()
            .map(|opened| opened.map_err(refused))
            .collect()
    }
}

fn refused(error: zorgnet_pseudonym::Error) -> ApiError {
    ApiError::unprocessable(format!("exchange token refused: {error}"))
}

/// An exchange token as a request carries it: its JSON object, or a string holding that
/// object. Kept as the request's raw JSON text, so the token is parsed once, straight into
/// an [`ExchangeToken`], by [`parse_token`]. `Debug` does not print it (it holds the
/// blinding factor).
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenJson(Box<RawValue>);

impl std::fmt::Debug for TokenJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenJson(<redacted>)")
    }
}

/// Reads an exchange token given as a JSON object or as a string holding one.
pub fn parse_token(token: &TokenJson) -> Result<ExchangeToken, ApiError> {
    let raw = token.0.get();
    let parsed = match raw.as_bytes().first() {
        Some(b'{') => ExchangeToken::from_json(raw),
        Some(b'"') => {
            let text: String = serde_json::from_str(raw)
                .map_err(|e| ApiError::bad_request(format!("malformed exchange token: {e}")))?;
            ExchangeToken::from_json(&text)
        }
        _ => {
            return Err(ApiError::bad_request(
                "token must be an exchange token object {\"oprf_jwe\", \"blind_factor\"}",
            ));
        }
    };
    parsed.map_err(|e| ApiError::bad_request(format!("malformed exchange token: {e}")))
}

/// `f` over every item, the items split over all cores (the public-key work of a batch is
/// what costs: about 0.15 ms per token or evaluation); results in item order, or the first
/// error by position. `f` gets each item's index. Blocking.
pub(crate) fn on_all_cores<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(usize, &T) -> Result<R, ApiError> + Sync,
) -> Result<Vec<R>, ApiError> {
    let threads = cores();
    if threads == 1 || items.len() < 2 {
        return items
            .iter()
            .enumerate()
            .map(|(i, item)| f(i, item))
            .collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    let parts: Vec<Result<Vec<R>, ApiError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .enumerate()
            .map(|(n, part)| {
                scope.spawn(move || {
                    part.iter()
                        .enumerate()
                        .map(|(offset, item)| f(n * chunk + offset, item))
                        .collect::<Result<Vec<R>, ApiError>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(ApiError::internal("worker thread panicked")))
            })
            .collect()
    });
    let mut results = Vec::with_capacity(items.len());
    for part in parts {
        results.extend(part?);
    }
    Ok(results)
}

/// The cores [`on_all_cores`] spreads work over.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Seconds since the Unix epoch.
pub fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The PRS's routes, under `/prs`.
pub fn routes() -> Router<Arc<HubState>> {
    Router::new()
        .route(
            "/recipients/{recipient}",
            put(register_recipient).get(show_recipient),
        )
        .route("/evaluate", post(evaluate))
        .route("/sealing-key", get(sealing_key))
        .route("/zvn", post(zvn))
}

/// A recipient's registered key.
#[derive(Debug, Serialize, Deserialize)]
pub struct RecipientKey {
    /// Canonical recipient id (`nvi`, `ura:12345678`, `project:name`).
    pub recipient: String,
    /// Public key as a JWK.
    pub public_jwk: Value,
}

async fn register_recipient(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    Path(recipient): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<RecipientKey>, ApiError> {
    let id = RecipientId::parse(&recipient)
        .map_err(|e| ApiError::bad_request(format!("recipient {recipient:?}: {e}")))?;
    if id == RecipientId::referral_index() {
        return Err(ApiError::conflict(
            "the referral index's key is the hub's own and cannot be replaced",
        ));
    }
    let registered_by = match &caller {
        Caller::Organisation(ura) if id.as_str() == format!("ura:{ura}") => ura.clone(),
        _ => {
            caller.admin()?;
            "operator".to_string()
        }
    };
    let Json(jwk) = body?;
    let key = RecipientPublicKey::from_jwk(&jwk.to_string())
        .map_err(|e| ApiError::bad_request(format!("public key: {e}")))?;
    let recipient_key = state
        .prs
        .recipient_with_key(id.clone(), key.clone())
        .map_err(|e| ApiError::bad_request(format!("public key: {e}")))?;
    let db = state.db.clone();
    let (stored_id, stored_jwk) = (id.as_str().to_string(), key.to_jwk());
    crate::blocking(move || {
        let now = zorgnet_db::now_ms();
        db.write_transaction(|conn| -> Result<(), ApiError> {
            let d = conn.dialect();
            let sql = format!(
                "INSERT INTO prs_recipients (recipient_id, public_jwk, registered_at_ms, registered_by) \
                 VALUES ({p1}, {p2}, {p3}, {p4}) ON CONFLICT (recipient_id) DO UPDATE SET \
                 public_jwk = {p2}, registered_at_ms = {p3}, registered_by = {p4}",
                p1 = d.placeholder(1),
                p2 = d.placeholder(2),
                p3 = d.placeholder(3),
                p4 = d.placeholder(4)
            );
            conn.execute(
                &sql,
                &[
                    stored_id.into(),
                    stored_jwk.into(),
                    now.into(),
                    registered_by.into(),
                ],
            )?;
            Ok(())
        })
    })
    .await?;
    state
        .prs
        .recipients
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.clone(), Arc::new(recipient_key));
    tracing::info!(recipient = %id, "registered recipient key");
    Ok(Json(RecipientKey {
        recipient: id.to_string(),
        public_jwk: jwk_value(&key),
    }))
}

async fn show_recipient(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    Path(recipient): Path<String>,
) -> Result<Json<RecipientKey>, ApiError> {
    caller.authenticated()?;
    let id = RecipientId::parse(&recipient)
        .map_err(|e| ApiError::bad_request(format!("recipient {recipient:?}: {e}")))?;
    let found = state
        .prs
        .recipient(&id)
        .ok_or_else(|| ApiError::not_found(format!("recipient {id} has no registered key")))?;
    Ok(Json(RecipientKey {
        recipient: id.to_string(),
        public_jwk: jwk_value(found.public_key()),
    }))
}

fn jwk_value(key: &RecipientPublicKey) -> Value {
    serde_json::from_str(&key.to_jwk()).unwrap_or(Value::Null)
}

/// An evaluation request: blinded identifiers for one recipient.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateRequest {
    /// Canonical recipient id.
    pub recipient: String,
    /// Blinded inputs, base64url.
    pub blinded: Vec<String>,
}

/// The evaluations, in request order: one compact JWE per blinded input.
#[derive(Debug, Serialize, Deserialize)]
pub struct EvaluateResponse {
    /// Compact JWEs for the recipient.
    pub evaluations: Vec<String>,
}

async fn evaluate(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<EvaluateRequest>, JsonRejection>,
) -> Result<Json<EvaluateResponse>, ApiError> {
    caller.organisation()?;
    let Json(request) = body?;
    if request.blinded.is_empty() || request.blinded.len() > MAX_EVALUATIONS_PER_REQUEST {
        return Err(ApiError::bad_request(format!(
            "blinded must hold 1 to {MAX_EVALUATIONS_PER_REQUEST} inputs"
        )));
    }
    let id = RecipientId::parse(&request.recipient)
        .map_err(|e| ApiError::bad_request(format!("recipient {:?}: {e}", request.recipient)))?;
    let recipient = state
        .prs
        .recipient(&id)
        .ok_or_else(|| ApiError::unprocessable(format!("recipient {id} has no registered key")))?;
    let inputs = request
        .blinded
        .iter()
        .enumerate()
        .map(|(i, b)| {
            BlindedInput::from_base64(b)
                .map_err(|e| ApiError::bad_request(format!("blinded[{i}]: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let issued_at = unix_now_s();
    let evaluations = crate::blocking(move || {
        on_all_cores(&inputs, |_, input| {
            recipient
                .evaluate(input, issued_at)
                .map_err(ApiError::internal)
        })
    })
    .await?;
    metrics::counter!("zorgnet_prs_evaluations_total").increment(evaluations.len() as u64);
    Ok(Json(EvaluateResponse { evaluations }))
}

async fn sealing_key(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    caller.authenticated()?;
    Ok(Json(jwk_value(state.prs.prs.sealing_public_key())))
}

/// A zorgverificatienummer request: sédula number and birth date, or a BSN sealed to the
/// PRS's sealing key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZvnRequest {
    /// Sédula (identity card) number.
    pub sedula: Option<String>,
    /// Birth date, `YYYY-MM-DD`.
    pub birth_date: Option<String>,
    /// A BSN sealed with `zorgnet_pseudonym::seal_bsn_for_prs`.
    pub sealed_bsn: Option<String>,
}

/// A zorgverificatienummer.
#[derive(Debug, Serialize, Deserialize)]
pub struct ZvnResponse {
    /// The number.
    pub zvn: String,
}

async fn zvn(
    State(state): State<Arc<HubState>>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<ZvnRequest>, JsonRejection>,
) -> Result<Json<ZvnResponse>, ApiError> {
    caller.organisation()?;
    let Json(request) = body?;
    let zvn = match (&request.sedula, &request.birth_date, &request.sealed_bsn) {
        (Some(sedula), Some(birth_date), None) => {
            let date = zorgnet_pseudonym::parse_birth_date(birth_date)
                .map_err(|e| ApiError::bad_request(format!("birth_date: {e}")))?;
            state.prs.prs.zvn_from_sedula(sedula, date)
        }
        (None, None, Some(sealed)) => state.prs.prs.zvn_from_sealed_bsn(sealed),
        _ => {
            return Err(ApiError::bad_request(
                "send either sedula and birth_date, or sealed_bsn",
            ));
        }
    }
    .map_err(|e| ApiError::bad_request(format!("cannot derive a zorgverificatienummer: {e}")))?;
    Ok(Json(ZvnResponse {
        zvn: zvn.to_string(),
    }))
}

/// Stored pseudonym text for the database.
pub fn pseudonym_value(pseudonym: &Pseudonym) -> SqlValue {
    SqlValue::Text(pseudonym.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use zorgnet_pseudonym::BlindFactor;

    fn token_json(json: &str) -> TokenJson {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn tokens_parse_as_objects_and_as_strings_holding_one() {
        // 32 bytes of 0x01, a canonical non-zero scalar.
        let factor =
            BlindFactor::from_base64("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=").unwrap();
        let object = ExchangeToken::new("a.b.c.d.e".to_string(), factor).to_json();
        let string = serde_json::to_string(&object).unwrap();
        for json in [object.as_str(), &format!(" \n{object}"), string.as_str()] {
            let parsed = parse_token(&token_json(json)).unwrap();
            assert_eq!(parsed.oprf_jwe(), "a.b.c.d.e");
            assert_eq!(parsed.to_json(), object);
        }
        for refused in [
            "42",
            "null",
            "[]",
            r#"{"oprf_jwe":"a"}"#,
            r#""{}""#,
            r#""x""#,
        ] {
            let error = parse_token(&token_json(refused)).unwrap_err();
            assert_eq!(
                error.status,
                axum::http::StatusCode::BAD_REQUEST,
                "{refused}"
            );
        }
        assert_eq!(
            format!("{:?}", token_json(&object)),
            "TokenJson(<redacted>)"
        );
    }
}
