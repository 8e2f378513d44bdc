//! The access token's format, shared by the hub that issues tokens and the nodes that
//! check them: a JWT in JWS compact serialisation signed with Ed25519 (`alg: EdDSA`,
//! RFC 8037), whose header names the key by its RFC 7638 thumbprint (`kid`), and whose
//! claims are [`AccessClaims`]. The keys travel as a JWK set (`{"keys": [...]}`).
//! Signing and verification are `ed25519-dalek`'s (strict verification); this module
//! only frames bytes.
//!
//! A token names the organisation (`ura`), the professional (`uzi`) and the role the hub's
//! professional register gives them there, the purpose, for an emergency the
//! break-the-glass `reason`, and always one audience (`aud`, the URA of the one node that
//! may accept it): [`verify`] refuses a token without one, so a source can never replay a
//! token it was shown at another source. A token without `uzi` is a system token: it carries
//! no role. A token may be bound to the organisation's client certificate (RFC 8705 `cnf`
//! with `x5t#S256`, [`certificate_thumbprint`]); [`check_binding`] compares it with the
//! certificate of the connection it arrived on (the TLS layer's
//! [`crate::certificate::PeerIdentity`]).
//! What it is not: a general JWT library (one algorithm, one claim set), a key store, or
//! the policy that decides what a token's holder may read.

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
/// Longest break-the-glass reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;

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
    /// The professional's UZI number; absent in a system token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uzi: Option<String>,
    /// The professional's UZI role code at the organisation, as the hub's professional
    /// register gives it; absent in a system token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Why the organisation reads.
    #[serde(default)]
    pub purpose: Purpose,
    /// The professional's break-the-glass reason (purpose emergency only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds (exclusive).
    pub exp: i64,
    /// The one organisation (URA) the token is for. Required: [`verify`] refuses a token
    /// without it (read as empty).
    #[serde(default)]
    pub aud: String,
    /// The client certificate the token is bound to (RFC 8705), when the hub knew it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// RFC 8705's confirmation claim: the certificate a token may only be used with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirmation {
    /// base64url SHA-256 of the certificate's DER ([`certificate_thumbprint`]).
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

/// What an organisation asks the hub's `POST /trust/token` for; the node sends it, the hub
/// reads it (one definition for both).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The one organisation (URA) the token is for: required.
    pub audience: String,
    /// The professional's UZI number; absent for a system token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uzi: Option<String>,
    /// The professional's role code at the calling organisation (with `uzi` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Why; default treatment.
    #[serde(default)]
    pub purpose: Purpose,
    /// Break-the-glass reason: required with purpose emergency, refused otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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
    /// Names no audience: it could be replayed anywhere.
    #[error("names no audience")]
    NoAudience,
    /// Bound to a client certificate, but the connection showed none.
    #[error("bound to a client certificate, but none was shown")]
    CertificateMissing,
    /// Bound to another client certificate than the connection's.
    #[error("bound to another client certificate")]
    WrongCertificate,
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
    if claims.aud.is_empty() {
        return Err(TokenError::NoAudience);
    }
    if claims.aud != audience {
        return Err(TokenError::WrongAudience);
    }
    if claims.role.is_some() && claims.uzi.is_none() {
        return Err(TokenError::Malformed("a role without a professional"));
    }
    if (claims.purpose == Purpose::Emergency) != claims.reason.is_some() {
        return Err(TokenError::Malformed(
            "a break-the-glass reason belongs to purpose emergency, and only there",
        ));
    }
    Ok(claims)
}

/// The RFC 8705 thumbprint of a certificate: base64url (no padding) of the SHA-256 of its
/// DER encoding, as `cnf.x5t#S256` carries it.
pub fn certificate_thumbprint(der: &[u8]) -> String {
    b64(Sha256::digest(der))
}

/// Checks a verified token's certificate binding against the client certificate of the
/// connection it arrived on (`peer_thumbprint`, from [`certificate_thumbprint`]; `None`
/// when the connection showed none). A token without `cnf` is not bound and passes.
pub fn check_binding(
    claims: &AccessClaims,
    peer_thumbprint: Option<&str>,
) -> Result<(), TokenError> {
    let Some(bound) = &claims.cnf else {
        return Ok(());
    };
    match peer_thumbprint {
        None => Err(TokenError::CertificateMissing),
        Some(peer) if peer == bound.x5t_s256 => Ok(()),
        Some(_) => Err(TokenError::WrongCertificate),
    }
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
            uzi: Some("123456789".into()),
            role: Some("01.015".into()),
            purpose: Purpose::Treatment,
            reason: None,
            iat: NOW,
            exp: NOW + 300,
            aud: "00000011".into(),
            cnf: None,
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
        addressed.aud = "00000033".into();
        let addressed = sign(&signer, &addressed);
        assert_eq!(
            verify(&addressed, &public, "00000011", NOW),
            Err(TokenError::WrongAudience)
        );
        assert!(verify(&addressed, &public, "00000033", NOW).is_ok());
        let mut anywhere = claims();
        anywhere.aud = String::new();
        let anywhere = sign(&signer, &anywhere);
        assert_eq!(
            verify(&anywhere, &public, "00000011", NOW),
            Err(TokenError::NoAudience)
        );
        assert_eq!(
            verify(&anywhere, &public, "", NOW),
            Err(TokenError::NoAudience),
            "not even at a node that does not know its own URA"
        );
        let without_aud = serde_json::to_value(claims()).map(|mut v| {
            v.as_object_mut().unwrap().remove("aud");
            v
        });
        let header = b64(json!({"alg": ALGORITHM, "kid": key_id(&public)}).to_string());
        let payload = b64(without_aud.unwrap().to_string());
        let input = format!("{header}.{payload}");
        let unaddressed = format!("{input}.{}", b64(signer.sign(input.as_bytes()).to_bytes()));
        assert_eq!(
            verify(&unaddressed, &public, "00000011", NOW),
            Err(TokenError::NoAudience)
        );

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
    fn inconsistent_professional_claims_are_refused_even_when_signed() {
        let signer = key(7);
        let public = signer.verifying_key();
        let mut role_alone = claims();
        role_alone.uzi = None;
        let mut silent_emergency = claims();
        silent_emergency.purpose = Purpose::Emergency;
        let mut reason_without_emergency = claims();
        reason_without_emergency.reason = Some("just looking".into());
        for bad in [role_alone, silent_emergency, reason_without_emergency] {
            assert!(
                matches!(
                    verify(&sign(&signer, &bad), &public, "00000011", NOW),
                    Err(TokenError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
        let mut system = claims();
        system.uzi = None;
        system.role = None;
        assert!(verify(&sign(&signer, &system), &public, "00000011", NOW).is_ok());
        let mut emergency = claims();
        emergency.purpose = Purpose::Emergency;
        emergency.reason = Some("unconscious at the ER".into());
        assert_eq!(
            verify(&sign(&signer, &emergency), &public, "00000011", NOW),
            Ok(emergency)
        );
    }

    #[test]
    fn a_bound_token_passes_only_with_its_own_certificate() {
        let ours = certificate_thumbprint(b"our certificate's DER");
        let theirs = certificate_thumbprint(b"their certificate's DER");
        assert_eq!(ours.len(), 43, "base64url of 32 bytes");
        assert_ne!(ours, theirs);
        let mut bound = claims();
        bound.cnf = Some(Confirmation {
            x5t_s256: ours.clone(),
        });
        assert_eq!(check_binding(&bound, Some(&ours)), Ok(()));
        assert_eq!(
            check_binding(&bound, Some(&theirs)),
            Err(TokenError::WrongCertificate)
        );
        assert_eq!(
            check_binding(&bound, None),
            Err(TokenError::CertificateMissing)
        );
        assert_eq!(check_binding(&claims(), Some(&theirs)), Ok(()), "not bound");
        assert_eq!(check_binding(&claims(), None), Ok(()));

        // The binding travels in the signed claims, in RFC 8705's shape.
        let signer = key(7);
        let token = sign(&signer, &bound);
        let verified = verify(&token, &signer.verifying_key(), "00000011", NOW).unwrap();
        assert_eq!(verified, bound);
        let [_, payload, _] = parts(&token).unwrap();
        let payload: Value = decode_json(payload, "claims").unwrap();
        assert_eq!(payload["cnf"], json!({"x5t#S256": ours}));
        // RFC 8705 appendix-style check: the thumbprint is SHA-256 over the DER, base64url.
        assert_eq!(
            certificate_thumbprint(b""),
            "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
        );
    }

    #[test]
    fn a_token_request_reads_as_the_hub_expects() {
        let request: TokenRequest = serde_json::from_value(json!({"audience": "00000011",
            "uzi": "123456789", "role": "01.015", "purpose": "emergency", "reason": "ER"}))
        .unwrap();
        assert_eq!(request.purpose, Purpose::Emergency);
        assert!(serde_json::from_value::<TokenRequest>(json!({"role": "01.015"})).is_err());
        assert!(
            serde_json::from_value::<TokenRequest>(json!({"audience": "00000011", "ura": "1"}))
                .is_err()
        );
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
