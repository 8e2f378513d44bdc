//! The access token's format, shared by the hub that issues tokens and the nodes that
//! check them: a JWT in JWS compact serialisation signed with Ed25519 (`alg: EdDSA`,
//! RFC 8037), whose header names the key by its RFC 7638 thumbprint (`kid`), and whose
//! claims are [`AccessClaims`]. The keys travel as a JWK set (`{"keys": [...]}`).
//! Signing and verification are `ed25519-dalek`'s (strict verification); this module
//! only frames bytes. What it is not: a general JWT library (one algorithm, one claim
//! set) or a key store.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Longest token accepted, in bytes; a real one is about 400.
pub const MAX_ACCESS_TOKEN_BYTES: usize = 4 * 1024;
/// How far the verifier's and the issuer's clocks may disagree, in seconds.
pub const CLOCK_SKEW_S: i64 = 60;
/// The one signature algorithm (JWS `alg`).
pub const ALGORITHM: &str = "EdDSA";

/// Why a read is asked for (as the consent register's purposes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// Regular care within a treatment relation.
    #[default]
    Treatment,
    /// Break-the-glass in an emergency.
    Emergency,
}

impl Purpose {
    /// The code on the wire.
    pub fn code(self) -> &'static str {
        match self {
            Purpose::Treatment => "treatment",
            Purpose::Emergency => "emergency",
        }
    }
}

/// What an access token asserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessClaims {
    /// The organisation's URA number.
    pub ura: String,
    /// The professional's UZI role code, when the organisation names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Why the organisation reads.
    #[serde(default)]
    pub purpose: Purpose,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds (exclusive).
    pub exp: i64,
    /// The one organisation (URA) the token is for; absent for any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// Why a token is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a token of this format.
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// Signed with a key the hub does not (or no longer) publish.
    #[error("signed with an unknown key")]
    UnknownKey,
    /// The signature does not match.
    #[error("the signature does not verify")]
    BadSignature,
    /// Past its expiry.
    #[error("expired")]
    Expired,
    /// Issued in the future.
    #[error("issued in the future")]
    NotYetValid,
    /// Meant for another organisation.
    #[error("meant for another organisation")]
    WrongAudience,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: String,
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The key id of `key`: its RFC 7638 JWK thumbprint (SHA-256, base64url).
pub fn key_id(key: &VerifyingKey) -> String {
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        b64(key.as_bytes())
    );
    b64(Sha256::digest(canonical.as_bytes()))
}

/// `key` as a public JWK (RFC 8037).
pub fn public_jwk(key: &VerifyingKey) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "x": b64(key.as_bytes()),
        "kid": key_id(key), "alg": ALGORITHM, "use": "sig"})
}

/// The Ed25519 keys of a JWK set, by key id (recomputed, not taken from the set);
/// members of another kind or malformed are skipped.
pub fn parse_key_set(set: &Value) -> HashMap<String, VerifyingKey> {
    set.get("keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|k| {
            k.get("kty").and_then(Value::as_str) == Some("OKP")
                && k.get("crv").and_then(Value::as_str) == Some("Ed25519")
        })
        .filter_map(|k| {
            let x = URL_SAFE_NO_PAD
                .decode(k.get("x").and_then(Value::as_str)?)
                .ok()?;
            let key = VerifyingKey::from_bytes(&x.try_into().ok()?).ok()?;
            Some((key_id(&key), key))
        })
        .collect()
}

/// Signs `claims` into a token.
pub fn sign(key: &SigningKey, claims: &AccessClaims) -> String {
    let header = json!({"alg": ALGORITHM, "typ": "JWT", "kid": key_id(&key.verifying_key())});
    let payload = serde_json::to_vec(claims).expect("access claims always serialise");
    let signing_input = format!("{}.{}", b64(header.to_string()), b64(payload));
    let signature = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(signature.to_bytes()))
}

fn parts(token: &str) -> Result<[&str; 3], TokenError> {
    if token.len() > MAX_ACCESS_TOKEN_BYTES {
        return Err(TokenError::Malformed("too long"));
    }
    let parts: Vec<&str> = token.split('.').collect();
    <[&str; 3]>::try_from(parts).map_err(|_| TokenError::Malformed("not three parts"))
}

fn decode_json<T: DeserializeOwned>(part: &str, what: &'static str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed(what))?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed(what))
}

/// The key id a token's header names (checked to be an EdDSA token).
pub fn key_id_of(token: &str) -> Result<String, TokenError> {
    let [header, _, _] = parts(token)?;
    let header: Header = decode_json(header, "header")?;
    if header.alg != ALGORITHM {
        return Err(TokenError::Malformed("not signed with EdDSA"));
    }
    Ok(header.kid)
}

/// Checks `token`'s signature with `key`, then its times at `now_s` (Unix seconds) and
/// its audience against `audience` (the checking organisation's URA).
pub fn verify(
    token: &str,
    key: &VerifyingKey,
    audience: &str,
    now_s: i64,
) -> Result<AccessClaims, TokenError> {
    let [header, payload, signature] = parts(token)?;
    if key_id_of(token)? != key_id(key) {
        return Err(TokenError::UnknownKey);
    }
    let signature: [u8; 64] = URL_SAFE_NO_PAD
        .decode(signature)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or(TokenError::Malformed("signature"))?;
    key.verify_strict(
        format!("{header}.{payload}").as_bytes(),
        &Signature::from_bytes(&signature),
    )
    .map_err(|_| TokenError::BadSignature)?;
    let claims: AccessClaims = decode_json(payload, "claims")?;
    if now_s >= claims.exp.saturating_add(CLOCK_SKEW_S) {
        return Err(TokenError::Expired);
    }
    if claims.iat > now_s.saturating_add(CLOCK_SKEW_S) {
        return Err(TokenError::NotYetValid);
    }
    if claims.aud.as_deref().is_some_and(|a| a != audience) {
        return Err(TokenError::WrongAudience);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn claims() -> AccessClaims {
        AccessClaims {
            ura: "00000022".into(),
            role: Some("01.015".into()),
            purpose: Purpose::Treatment,
            iat: NOW,
            exp: NOW + 300,
            aud: None,
        }
    }

    #[test]
    fn a_signed_token_verifies_and_says_what_was_signed() {
        let key = key(7);
        let token = sign(&key, &claims());
        assert_eq!(key_id_of(&token).unwrap(), key_id(&key.verifying_key()));
        assert_eq!(
            verify(&token, &key.verifying_key(), "00000011", NOW + 10).unwrap(),
            claims()
        );
    }

    #[test]
    fn tampered_foreign_expired_and_misaddressed_tokens_are_refused() {
        let signer = key(7);
        let public = signer.verifying_key();
        let token = sign(&signer, &claims());
        let [header, _, signature] = parts(&token).unwrap();
        let mut forged_claims = claims();
        forged_claims.ura = "00000011".into();
        let forged = format!(
            "{header}.{}.{signature}",
            b64(serde_json::to_vec(&forged_claims).unwrap())
        );
        assert_eq!(
            verify(&forged, &public, "00000011", NOW),
            Err(TokenError::BadSignature)
        );

        let foreign = sign(&key(8), &claims());
        assert_eq!(
            verify(&foreign, &public, "00000011", NOW),
            Err(TokenError::UnknownKey)
        );

        assert_eq!(
            verify(&token, &public, "00000011", NOW + 300 + CLOCK_SKEW_S),
            Err(TokenError::Expired)
        );
        assert!(verify(&token, &public, "00000011", NOW + 300 + CLOCK_SKEW_S - 1).is_ok());
        assert_eq!(
            verify(&token, &public, "00000011", NOW - CLOCK_SKEW_S - 1),
            Err(TokenError::NotYetValid)
        );

        let mut addressed = claims();
        addressed.aud = Some("00000033".into());
        let addressed = sign(&signer, &addressed);
        assert_eq!(
            verify(&addressed, &public, "00000011", NOW),
            Err(TokenError::WrongAudience)
        );
        assert!(verify(&addressed, &public, "00000033", NOW).is_ok());

        for garbage in ["", "a.b", "a.b.c.d", "zn_abc", "!!.!!.!!"] {
            assert!(
                matches!(
                    verify(garbage, &public, "00000011", NOW),
                    Err(TokenError::Malformed(_))
                ),
                "{garbage}"
            );
        }
        let long = "a".repeat(MAX_ACCESS_TOKEN_BYTES + 1);
        assert_eq!(
            verify(&long, &public, "00000011", NOW),
            Err(TokenError::Malformed("too long"))
        );
        let none_alg = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","kid":"x"}"#),
            b64(serde_json::to_vec(&claims()).unwrap())
        );
        assert!(matches!(
            verify(&none_alg, &public, "00000011", NOW),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn a_key_set_round_trips_and_key_ids_are_thumbprints() {
        let public = key(7).verifying_key();
        let set = json!({"keys": [public_jwk(&public), {"kty": "RSA", "n": "x"},
            {"kty": "OKP", "crv": "Ed25519", "x": "short"}]});
        let keys = parse_key_set(&set);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys.get(&key_id(&public)), Some(&public));
        assert_ne!(key_id(&public), key_id(&key(8).verifying_key()));
        assert_eq!(key_id(&public).len(), 43, "base64url of 32 bytes");
    }
}
