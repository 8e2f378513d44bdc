//! The exchange token: what a holder hands a recipient so it can derive its pseudonym for
//! a person, and the claims inside the PRS's JWE.
//!
//! JSON, with the field names the national referral index uses for the same pair:
//! `{"oprf_jwe":"<compact JWE from the PRS>","blind_factor":"<base64url scalar>"}`.
//! The JWE is encrypted to the recipient's registered key and names the recipient in its
//! `kid` and `aud`, so a token made for one recipient is useless to any other.
//! This module only (de)serialises; [`crate::RecipientKeys::open`] checks and opens.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::holder::BlindFactor;
use crate::jwe::MAX_JWE_BYTES;

/// Longest exchange token accepted, in bytes of JSON: the JWE plus the blinding factor
/// and a little JSON around them.
pub const MAX_EXCHANGE_TOKEN_BYTES: usize = MAX_JWE_BYTES + 256;

/// How long the PRS's answer stays valid, in seconds (the national reference uses the same).
pub const EXCHANGE_TOKEN_LIFETIME_S: u64 = 300;

/// Clock difference tolerated between PRS and recipient, in seconds.
pub const CLOCK_SKEW_S: u64 = 60;

/// Prefix of the `subject` claim before the base64url evaluated element, as in the
/// national protocol.
pub(crate) const SUBJECT_PREFIX: &str = "pseudonym:eval:";

/// An exchange token: the PRS's JWE for one recipient plus the holder's blinding factor.
#[derive(Clone, Serialize, Deserialize)]
pub struct ExchangeToken {
    oprf_jwe: String,
    blind_factor: BlindFactor,
}

impl ExchangeToken {
    /// Pairs the PRS's answer with the blinding factor of the blinding it answered.
    pub fn new(oprf_jwe: String, blind_factor: BlindFactor) -> Self {
        Self {
            oprf_jwe,
            blind_factor,
        }
    }

    /// The token as JSON.
    pub fn to_json(&self) -> String {
        // Two strings: serialisation cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the JSON form, refusing tokens over [`MAX_EXCHANGE_TOKEN_BYTES`].
    pub fn from_json(json: &str) -> Result<Self> {
        if json.len() > MAX_EXCHANGE_TOKEN_BYTES {
            return Err(Error::Malformed("exchange token too large"));
        }
        serde_json::from_str(json).map_err(|_| {
            Error::Malformed("exchange token must be {\"oprf_jwe\":…,\"blind_factor\":…}")
        })
    }

    /// The PRS's compact JWE.
    pub fn oprf_jwe(&self) -> &str {
        &self.oprf_jwe
    }

    pub(crate) fn blind_factor(&self) -> &BlindFactor {
        &self.blind_factor
    }
}

impl fmt::Debug for ExchangeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExchangeToken")
            .field("oprf_jwe_bytes", &self.oprf_jwe.len())
            .field("blind_factor", &self.blind_factor)
            .finish()
    }
}

/// The JWE payload the PRS writes: the evaluated element for one recipient.
#[derive(Serialize, Deserialize)]
pub(crate) struct EvaluationClaims {
    /// `pseudonym:eval:<base64url evaluated element>`.
    pub(crate) subject: String,
    /// The recipient id.
    pub(crate) aud: String,
    /// Issued at, Unix seconds.
    pub(crate) iat: u64,
    /// Expires at, Unix seconds.
    pub(crate) exp: u64,
    /// Generation of the PRS master seed that made the element.
    pub(crate) key_version: u32,
}
