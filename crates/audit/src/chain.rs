//! The keyed hash chain over the log's records.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::io::Write;
use std::path::Path;
use tlog_tiles::Hash;

/// Bytes of a chain key.
const KEY_BYTES: usize = 32;

/// What the chain starts from: the "previous" of record 0.
pub(crate) const GENESIS: Hash = Hash([0; 32]);

/// The secret that keys the log's hash chain. Kept outside the database (a file of its own,
/// mode 0600), so that whoever can edit the database but not read this key cannot make an
/// edited record fit the chain.
#[derive(Clone)]
pub struct ChainKey([u8; KEY_BYTES]);

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(…)")
    }
}

impl ChainKey {
    /// A new random key.
    pub fn generate() -> ChainKey {
        let mut key = [0; KEY_BYTES];
        rand::rng().fill_bytes(&mut key);
        ChainKey(key)
    }

    /// The key in `path` (base64), creating the file (mode 0600) with a new key when there is
    /// none.
    pub fn load_or_create(path: &Path) -> std::io::Result<ChainKey> {
        secret_file(path).map(ChainKey)
    }

    /// The chain value of a record whose leaf hash is `leaf`, after `previous`.
    pub(crate) fn link(&self, previous: &Hash, leaf: &Hash) -> Hash {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(&previous.0);
        mac.update(&leaf.0);
        Hash(mac.finalize().into_bytes().into())
    }
}

/// The Ed25519 key in `path` (its 32-byte seed in base64) that signs a log's checkpoints,
/// creating the file (mode 0600) with a new key when there is none.
pub fn checkpoint_key(path: &Path) -> std::io::Result<ed25519_dalek::SigningKey> {
    secret_file(path).map(|seed| ed25519_dalek::SigningKey::from_bytes(&seed))
}

/// 32 secret bytes kept in `path` as base64; a new random secret, written with mode 0600
/// (and the directory made), when the file is not there.
fn secret_file(path: &Path) -> std::io::Result<[u8; KEY_BYTES]> {
    match std::fs::read_to_string(path) {
        Ok(text) => STANDARD
            .decode(text.trim())
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} holds no key of {KEY_BYTES} bytes", path.display()),
                )
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut secret = [0; KEY_BYTES];
            rand::rng().fill_bytes(&mut secret);
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path)?;
            writeln!(file, "{}", STANDARD.encode(secret))?;
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
    fn a_key_file_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not yet there").join("audit.key");
        let made = ChainKey::load_or_create(&path).unwrap();
        let read = ChainKey::load_or_create(&path).unwrap();
        let leaf = Hash([7; 32]);
        assert_eq!(made.link(&GENESIS, &leaf), read.link(&GENESIS, &leaf));
        assert_ne!(
            made.link(&GENESIS, &leaf),
            ChainKey::generate().link(&GENESIS, &leaf),
            "another key, another chain"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "not a key").unwrap();
        assert!(ChainKey::load_or_create(&path).is_err());
        assert!(!format!("{made:?}").contains(&STANDARD.encode(made.0)));
        let signing = dir.path().join("sign.key");
        assert_eq!(
            checkpoint_key(&signing).unwrap().verifying_key(),
            checkpoint_key(&signing).unwrap().verifying_key(),
            "the same key read back"
        );
    }
}
