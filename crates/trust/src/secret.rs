//! Secrets a zorgnet process keeps in files: API keys (random 256-bit values shown once)
//! and the files that hold them.
//!
//! A key is stored by whoever checks it only as its SHA-256 ([`key_hash`]): a hash is the
//! right tool for a high-entropy secret, there is nothing to brute-force. A secret file is
//! created once, with mode 0600, and never rewritten ([`read_or_create`]).
//! What it is not: a key store for signing keys' rotation, or a password hash.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// Random bytes in a key.
pub const KEY_SECRET_BYTES: usize = 32;

/// A new random key: `prefix` (so a leaked key is recognisable in logs and scanners) and 32
/// random bytes in base64url.
pub fn new_key(prefix: &str) -> String {
    let mut secret = [0u8; KEY_SECRET_BYTES];
    rand::rng().fill_bytes(&mut secret);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(secret))
}

/// The stored form of a key: lowercase hex SHA-256.
pub fn key_hash(key: &str) -> String {
    const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(key.as_bytes());
    let mut hex = String::with_capacity(2 * digest.len());
    for byte in digest {
        hex.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(HEX_DIGITS[usize::from(byte & 0x0f)]));
    }
    hex
}

/// The secret in `path`, creating it with `make` (mode 0600, never overwriting a file that
/// appeared meanwhile) when there is none. Blocking.
pub fn read_or_create(path: &Path, make: impl FnOnce() -> String) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(secret) => Ok(secret),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = make();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(path)?;
            file.write_all(secret.as_bytes())?;
            file.sync_all()?;
            Ok(secret)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_prefixed_and_hashed_stably() {
        let (a, b) = (new_key("zn_"), new_key("zn_"));
        assert_ne!(a, b);
        assert!(a.starts_with("zn_"));
        assert_eq!(key_hash(&a), key_hash(&a));
        assert_ne!(key_hash(&a), key_hash(&b));
        assert_eq!(key_hash(&a).len(), 64);
    }

    #[test]
    fn key_hash_is_lowercase_hex_sha256() {
        // FIPS 180-2's SHA-256 example: the stored hashes of existing keys must not change.
        assert_eq!(
            key_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_secret_file_is_private_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node-admin.key");
        let first = read_or_create(&path, || new_key("zn_")).unwrap();
        let again = read_or_create(&path, || unreachable!("the file exists")).unwrap();
        assert_eq!(first, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
