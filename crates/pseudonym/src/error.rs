//! The one error type of this crate, with one variant per decision a caller makes.
//! It is not a logging facility: messages name what was wrong, never the value, so no BSN,
//! key or blinding factor can leak through `Display`.

use std::path::PathBuf;

/// Everything that can go wrong in pseudonym cryptography and key storage.
///
/// Input problems (the first group) are the caller's to report back to its client;
/// key-store problems (the last group) are operator problems and should stop the service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A BSN, zorgverificatienummer, sédula number, birth date or recipient id is not valid.
    #[error("invalid {0}")]
    InvalidIdentifier(&'static str),
    /// Input is not well-formed: bad base64, bad JSON, a wrong length or a missing field.
    #[error("malformed input: {0}")]
    Malformed(&'static str),
    /// A group element (ristretto255 point) does not decode, or is the identity.
    #[error("invalid group element")]
    InvalidElement,
    /// A JWE uses an algorithm, encryption or header this crate does not accept.
    #[error("unsupported JWE algorithm or header: {0}")]
    UnsupportedAlgorithm(&'static str),
    /// The token was made for another recipient (JWE key id or audience differs).
    #[error("token is for another recipient")]
    WrongRecipient,
    /// The JWE does not decrypt: tampered, truncated, or encrypted to another key.
    #[error("decryption failed")]
    DecryptionFailed,
    /// The exchange token is past its expiry time, or issued in the future.
    #[error("token expired or not yet valid")]
    Expired,
    /// A public key offered for registration is not acceptable.
    #[error("unacceptable public key: {0}")]
    InvalidPublicKey(&'static str),
    /// The key directory or a key file could not be read or written.
    #[error("key store I/O at {path}: {source}")]
    KeyStoreIo {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A key file is readable by group or others; it is refused rather than used.
    #[error("key file {path} has mode {mode:o}; it must not be accessible by group or others")]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A key file exists but its content is not a valid key set.
    #[error("key file {path} is corrupt: {reason}")]
    CorruptKeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong, without key material.
        reason: &'static str,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
