//! Signed checkpoints: a tree head (size and root) and the chain's head, signed by the log's
//! owner, in the text form of a C2SP checkpoint (`c2sp.org/tlog-checkpoint`: origin, size,
//! base64 root, then extension lines).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use tlog_tiles::Hash;

/// A signed checkpoint of a log.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Whose log (the node's or hub's name, e.g. its URA).
    pub origin: String,
    /// How many records the log held.
    pub size: u64,
    /// The RFC 6962 root of those records.
    pub root: Hash,
    /// The chain value of the last of them.
    pub chain: Hash,
    /// When it was signed, epoch milliseconds.
    pub signed_ms: i64,
    /// Ed25519 over [`Checkpoint::body`].
    pub signature: [u8; 64],
}

/// Why a checkpoint does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    /// The signature is not the key's over the checkpoint.
    #[error("the checkpoint of size {0} is not signed by this key")]
    BadSignature(u64),
    /// A field of its wire form ([`CheckpointJson`]) is not the bytes it must be.
    #[error("checkpoint.{field} must be {bytes} bytes in base64")]
    Malformed {
        /// The field.
        field: &'static str,
        /// How many bytes it must hold.
        bytes: usize,
    },
}

/// A checkpoint as it travels between a node and the hub: its fields, hashes and the
/// signature in standard base64 (as in a C2SP checkpoint).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointJson {
    /// Whose log: the organisation's URA.
    pub origin: String,
    /// Records in the log.
    pub size: u64,
    /// RFC 6962 root of those records.
    pub root: String,
    /// The chain value of the last record.
    pub chain: String,
    /// When the log's owner signed it, epoch milliseconds.
    pub signed_ms: i64,
    /// Ed25519 over the checkpoint's text.
    pub signature: String,
}

impl CheckpointJson {
    /// The wire form of a checkpoint.
    pub fn of(checkpoint: &Checkpoint) -> CheckpointJson {
        CheckpointJson {
            origin: checkpoint.origin.clone(),
            size: checkpoint.size,
            root: STANDARD.encode(checkpoint.root.0),
            chain: STANDARD.encode(checkpoint.chain.0),
            signed_ms: checkpoint.signed_ms,
            signature: STANDARD.encode(checkpoint.signature),
        }
    }

    /// The checkpoint it names, or the first malformed field.
    pub fn parse(&self) -> Result<Checkpoint, CheckpointError> {
        Ok(Checkpoint {
            origin: self.origin.clone(),
            size: self.size,
            root: Hash(decode("root", &self.root)?),
            chain: Hash(decode("chain", &self.chain)?),
            signed_ms: self.signed_ms,
            signature: decode("signature", &self.signature)?,
        })
    }
}

/// `N` bytes from standard base64, or [`CheckpointError::Malformed`] naming `field`.
fn decode<const N: usize>(field: &'static str, text: &str) -> Result<[u8; N], CheckpointError> {
    STANDARD
        .decode(text)
        .ok()
        .and_then(|bytes| <[u8; N]>::try_from(bytes).ok())
        .ok_or(CheckpointError::Malformed { field, bytes: N })
}

impl Checkpoint {
    /// Signs the head of a log.
    pub fn sign(
        key: &SigningKey,
        origin: &str,
        size: u64,
        root: Hash,
        chain: Hash,
        signed_ms: i64,
    ) -> Checkpoint {
        let mut checkpoint = Checkpoint {
            origin: origin.to_string(),
            size,
            root,
            chain,
            signed_ms,
            signature: [0; 64],
        };
        checkpoint.signature = key.sign(checkpoint.body().as_bytes()).to_bytes();
        checkpoint
    }

    /// The signed text.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\nchain {}\ntime {}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root.0),
            STANDARD.encode(self.chain.0),
            self.signed_ms
        )
    }

    /// Checks the signature with the log owner's public key.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), CheckpointError> {
        key.verify(
            self.body().as_bytes(),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| CheckpointError::BadSignature(self.size))
    }
}

impl crate::log::AuditLog {
    /// The latest checkpoint kept, if any: what a proof served to a reader is against.
    /// Blocking.
    pub fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, crate::log::AuditError> {
        let rows = self.db.with_reader(|conn| {
            conn.query(
                "SELECT size, origin, root, chain, signed_ms, signature FROM audit_checkpoints \
                 ORDER BY size DESC LIMIT 1",
                &[],
            )
        })?;
        rows.into_iter()
            .next()
            .map(crate::log::checkpoint_of_row)
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_with_its_key_only_and_only_as_signed() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let checkpoint = Checkpoint::sign(&key, "node 1", 5, Hash([1; 32]), Hash([2; 32]), 77);
        assert_eq!(checkpoint.verify(&key.verifying_key()), Ok(()));
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        assert!(checkpoint.verify(&other).is_err());
        for changed in [
            Checkpoint {
                size: 6,
                ..checkpoint.clone()
            },
            Checkpoint {
                root: Hash([3; 32]),
                ..checkpoint.clone()
            },
            Checkpoint {
                chain: Hash([3; 32]),
                ..checkpoint.clone()
            },
            Checkpoint {
                signed_ms: 78,
                ..checkpoint.clone()
            },
            Checkpoint {
                origin: "node 2".into(),
                ..checkpoint.clone()
            },
        ] {
            assert_eq!(
                changed.verify(&key.verifying_key()),
                Err(CheckpointError::BadSignature(changed.size))
            );
        }
        assert!(checkpoint.body().starts_with("node 1\n5\n"));
    }
}
