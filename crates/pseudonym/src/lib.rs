//! The cryptography of zorgnet's pseudonym service (PRS): how a node turns a BSN into an
//! exchange token for one recipient, and how only that recipient turns the token into its
//! own stable pseudonym for the person.
//!
//! What it is: the national PRS protocol, interoperable with the Ministry of Health's
//! reference implementation. The holder blinds `nl:bsn:<BSN>` ([`blind`]); the PRS
//! evaluates an RFC 9497 OPRF (ristretto255-SHA512) under a key derived per recipient
//! from one master seed ([`Prs`], [`PrsRecipient::evaluate`]) and encrypts the result
//! to the recipient's registered key as a JWE (`ECDH-ES`/`RSA-OAEP-256` with `A256GCM`);
//! the holder hands that JWE and its blinding factor to the recipient
//! ([`ExchangeToken`]), which unblinds and keeps only a keyed hash
//! ([`RecipientKeys::open`] → [`Pseudonym`]). Plus key generation and storage
//! ([`PrsKeys`], [`RecipientKeys`]) and the zorgverificatienummer for people in the
//! Caribbean Netherlands without a usable BSN ([`Zvn`], [`Prs::zvn_from_sedula`],
//! [`Prs::zvn_from_sealed_bsn`], [`zvn_is_valid`]).
//!
//! What it is not: an HTTP API, a database, or an authorisation layer. The hub wraps it;
//! deciding who may request tokens for which recipient is the hub's job.
//! All cryptography comes from audited crates (voprf, curve25519-dalek, x25519-dalek,
//! p256, rsa, aes-gcm, hmac, sha2); see `docs/pseudonyms.md` for the design, the formats
//! and key rotation.
#![deny(missing_docs)]

mod b64;
mod error;
mod holder;
mod identifier;
mod jwe;
mod keystore;
mod prs;
mod recipient;
mod token;
mod zvn;

pub use error::{Error, Result};
pub use holder::{BlindFactor, BlindedInput, blind};
pub use identifier::{
    BSN_DIGITS, Bsn, MAX_PROJECT_NAME_BYTES, PersonalId, RecipientId, URA_DIGITS,
};
pub use jwe::{
    GENERATED_RSA_MODULUS_BITS, KeyAlgorithm, MAX_JWE_BYTES, MAX_JWK_BYTES, MAX_RSA_MODULUS_BITS,
    MIN_RSA_MODULUS_BITS, PRECOMPUTED_KEY_BYTES, RecipientPublicKey,
};
pub use keystore::MAX_KEY_FILE_BYTES;
pub use prs::{PRS_KEY_FILE, Prs, PrsKeys, PrsRecipient};
pub use recipient::{PSEUDONYM_BYTES, Pseudonym, RECIPIENT_KEY_FILE, RecipientKeys};
pub use token::{CLOCK_SKEW_S, EXCHANGE_TOKEN_LIFETIME_S, ExchangeToken, MAX_EXCHANGE_TOKEN_BYTES};
pub use zvn::{
    MAX_SEDULA_CHARS, MIN_BIRTH_YEAR, ZVN_DIGITS, ZVN_PREFIX, Zvn, normalise_sedula,
    parse_birth_date, seal_bsn_for_prs, zvn_is_valid,
};
