//! The pseudonym service (PRS) itself: its keys, the per-recipient OPRF evaluation that
//! answers a holder's blinded input with a JWE for the recipient, and the derivation of
//! zorgverificatienummers.
//!
//! Keys: one 32-byte OPRF master seed; recipient `R`'s OPRF key is RFC 9497
//! `DeriveKeyPair(seed, info = R's recipient id)` in OPRF mode (ristretto255-SHA512), so
//! the PRS stores no per-recipient secrets and every recipient's key is independent.
//! Besides: a 32-byte ZVN key (HMAC-SHA256) and an X25519 key pair on which holders seal
//! BSNs for ZVN derivation. The PRS sees only blinded inputs and never a pseudonym.
//! No HTTP, no database, no authorisation of who may ask for which recipient.

use std::fmt;
use std::path::Path;

use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use time::Date;
use voprf::{OprfServer, Ristretto255};
use zeroize::{Zeroize, Zeroizing};

use crate::b64::{jose_decode, jose_encode, protocol_encode};
use crate::error::{Error, Result};
use crate::holder::BlindedInput;
use crate::identifier::RecipientId;
use crate::jwe::{KeyAlgorithm, PrivateKey, RecipientPublicKey};
use crate::keystore::{create_key_file, read_key_file};
use crate::token::{EXCHANGE_TOKEN_LIFETIME_S, EvaluationClaims, SUBJECT_PREFIX};
use crate::zvn::{self, Zvn};

/// File name of the PRS key set inside its key directory.
pub const PRS_KEY_FILE: &str = "prs-keys.json";

const PRS_KEY_FILE_FORMAT: &str = "zorgnet-prs-keys-v1";

/// The PRS's secrets. Generated once, stored with [`PrsKeys::load_or_generate`], and
/// never printed: `Debug` shows only the generation and the sealing key id.
pub struct PrsKeys {
    generation: u32,
    oprf_master_seed: Zeroizing<[u8; 32]>,
    zvn_key: Zeroizing<[u8; 32]>,
    sealing_key: PrivateKey,
}

/// The key file as JSON; secret members are base64url and wiped on drop.
#[derive(Serialize, Deserialize)]
struct PrsKeyFile {
    format: String,
    generation: u32,
    oprf_master_seed: String,
    zvn_key: String,
    sealing_key_x25519: String,
}

impl Drop for PrsKeyFile {
    fn drop(&mut self) {
        self.oprf_master_seed.zeroize();
        self.zvn_key.zeroize();
        self.sealing_key_x25519.zeroize();
    }
}

impl PrsKeys {
    /// Fresh random keys, generation 1.
    pub fn generate() -> Self {
        Self {
            generation: 1,
            oprf_master_seed: random_32(),
            zvn_key: random_32(),
            sealing_key: PrivateKey::X25519(x25519_dalek::StaticSecret::random_from_rng(OsRng)),
        }
    }

    /// Loads the key set from `dir`, or generates and stores one if there is none yet.
    /// The directory is created with mode 0700 and the file with mode 0600; a key file
    /// that group or others can read is refused.
    pub fn load_or_generate(dir: &Path) -> Result<Self> {
        if let Some(keys) = Self::load(dir)? {
            return Ok(keys);
        }
        let keys = Self::generate();
        if keys.save_new(dir)? {
            Ok(keys)
        } else {
            // Another process created the file between our read and our write: use its keys.
            Self::load(dir)?.ok_or(Error::CorruptKeyFile {
                path: dir.join(PRS_KEY_FILE),
                reason: "vanished while being created",
            })
        }
    }

    /// Loads the key set from `dir`, or `None` when `dir` has no key file.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let Some(bytes) = read_key_file(dir, PRS_KEY_FILE)? else {
            return Ok(None);
        };
        let corrupt = |reason| Error::CorruptKeyFile {
            path: dir.join(PRS_KEY_FILE),
            reason,
        };
        let file: PrsKeyFile =
            serde_json::from_slice(&bytes).map_err(|_| corrupt("not a PRS key file"))?;
        if file.format != PRS_KEY_FILE_FORMAT {
            return Err(corrupt("unknown key file format"));
        }
        let secret = |text: &str| -> Result<Zeroizing<[u8; 32]>> {
            let bytes =
                Zeroizing::new(jose_decode(text, "key").map_err(|_| corrupt("bad base64url"))?);
            let mut out = Zeroizing::new([0u8; 32]);
            if bytes.len() != 32 {
                return Err(corrupt("key is not 32 bytes"));
            }
            out.copy_from_slice(&bytes);
            Ok(out)
        };
        let sealing = secret(&file.sealing_key_x25519)?;
        Ok(Some(Self {
            generation: file.generation,
            oprf_master_seed: secret(&file.oprf_master_seed)?,
            zvn_key: secret(&file.zvn_key)?,
            sealing_key: PrivateKey::from_bytes(KeyAlgorithm::X25519, sealing.as_ref())
                .map_err(|_| corrupt("bad sealing key"))?,
        }))
    }

    /// Writes the key set into `dir` unless a key file is already there; returns whether
    /// it wrote. Used by [`PrsKeys::load_or_generate`] and to store a rotated key set in
    /// a new directory.
    pub fn save_new(&self, dir: &Path) -> Result<bool> {
        let file = PrsKeyFile {
            format: PRS_KEY_FILE_FORMAT.to_owned(),
            generation: self.generation,
            oprf_master_seed: jose_encode(self.oprf_master_seed.as_ref()),
            zvn_key: jose_encode(self.zvn_key.as_ref()),
            sealing_key_x25519: jose_encode(&self.sealing_key.to_bytes()?),
        };
        let json = Zeroizing::new(
            serde_json::to_vec_pretty(&file).map_err(|_| Error::Malformed("PRS key file"))?,
        );
        create_key_file(dir, PRS_KEY_FILE, &json)
    }

    /// A new key set for rotating the OPRF master seed: a fresh seed and the next
    /// generation number, with the same ZVN key and sealing key (so ZVNs stay the same).
    /// Every pseudonym changes under the new seed; see `docs/pseudonyms.md` for the
    /// procedure.
    pub fn rotate_oprf_seed(&self) -> Self {
        Self {
            generation: self.generation.saturating_add(1),
            oprf_master_seed: random_32(),
            zvn_key: self.zvn_key.clone(),
            sealing_key: self.sealing_key.clone(),
        }
    }

    /// A new key set for rotating the sealing key pair only: same seed, generation and
    /// ZVN key, so no pseudonym or ZVN changes. Publish the new sealing JWK.
    pub fn rotate_sealing_key(&self) -> Self {
        Self {
            generation: self.generation,
            oprf_master_seed: self.oprf_master_seed.clone(),
            zvn_key: self.zvn_key.clone(),
            sealing_key: PrivateKey::X25519(x25519_dalek::StaticSecret::random_from_rng(OsRng)),
        }
    }

    /// The generation of the OPRF master seed: 1 at first start, one more per rotation.
    /// It travels in every JWE as `key_version`.
    pub fn generation(&self) -> u32 {
        self.generation
    }
}

impl fmt::Debug for PrsKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrsKeys")
            .field("generation", &self.generation)
            .field("sealing_key_id", &self.sealing_key.public_key().key_id())
            .finish_non_exhaustive()
    }
}

fn random_32() -> Zeroizing<[u8; 32]> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(bytes.as_mut());
    bytes
}

/// The pseudonym service: evaluates blinded inputs for registered recipients and derives
/// zorgverificatienummers. Cheap to share between threads (`Send + Sync`).
pub struct Prs {
    keys: PrsKeys,
    sealing_public_key: RecipientPublicKey,
}

impl fmt::Debug for Prs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prs").field("keys", &self.keys).finish()
    }
}

impl Prs {
    /// A PRS with these keys.
    pub fn new(keys: PrsKeys) -> Self {
        let sealing_public_key = keys.sealing_key.public_key();
        Self {
            keys,
            sealing_public_key,
        }
    }

    /// Prepares a recipient for evaluation: derives its OPRF key and binds the public key
    /// it registered. Do this once per recipient (and again when it registers a new key)
    /// and keep the result; evaluation then costs one scalar multiplication and one JWE.
    pub fn recipient(&self, id: RecipientId, key: RecipientPublicKey) -> Result<PrsRecipient> {
        let oprf = OprfServer::<Ristretto255>::new_from_seed(
            self.keys.oprf_master_seed.as_ref(),
            id.as_str().as_bytes(),
        )
        .map_err(|_| Error::InvalidIdentifier("recipient id"))?;
        Ok(PrsRecipient {
            id,
            oprf,
            key,
            key_version: self.keys.generation,
        })
    }

    /// The public key holders seal BSNs to for [`Prs::zvn_from_sealed_bsn`]
    /// (see [`crate::seal_bsn_for_prs`]). Publish its [`RecipientPublicKey::to_jwk`].
    pub fn sealing_public_key(&self) -> &RecipientPublicKey {
        &self.sealing_public_key
    }

    /// ZVN variant (a): from a sédula number and birth date. The sédula number is
    /// normalised first (see [`crate::normalise_sedula`]).
    pub fn zvn_from_sedula(&self, sedula: &str, birth_date: Date) -> Result<Zvn> {
        zvn::derive_from_sedula(&self.keys.zvn_key, sedula, birth_date)
    }

    /// ZVN variant (b): from a BSN sealed to this PRS by [`crate::seal_bsn_for_prs`].
    /// The BSN is checked (11-check) and wiped after use.
    pub fn zvn_from_sealed_bsn(&self, sealed: &str) -> Result<Zvn> {
        let plaintext = self
            .keys
            .sealing_key
            .decrypt(self.sealing_public_key.key_id(), sealed)?;
        let bsn = zvn::open_sealed_bsn(&plaintext)?;
        Ok(zvn::derive_from_bsn(&self.keys.zvn_key, &bsn))
    }
}

/// One recipient, ready for evaluation: its derived OPRF key and its registered public
/// key. Build with [`Prs::recipient`]; keep and share it (`Send + Sync`).
pub struct PrsRecipient {
    id: RecipientId,
    oprf: OprfServer<Ristretto255>,
    key: RecipientPublicKey,
    key_version: u32,
}

impl fmt::Debug for PrsRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrsRecipient")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("key_version", &self.key_version)
            .finish_non_exhaustive()
    }
}

impl PrsRecipient {
    /// RFC 9497 `BlindEvaluate` of a holder's blinded input under this recipient's key,
    /// returned as a compact JWE for the recipient (`ECDH-ES` or `RSA-OAEP-256` by its key
    /// type, with `A256GCM`). The payload is
    /// `{"subject":"pseudonym:eval:<base64url element>","aud":"<recipient id>","iat":…,"exp":…,"key_version":…}`,
    /// valid for [`EXCHANGE_TOKEN_LIFETIME_S`] from `issued_at_unix_s`.
    pub fn evaluate(&self, blinded: &BlindedInput, issued_at_unix_s: u64) -> Result<String> {
        let evaluated = self.oprf.blind_evaluate(&blinded.0);
        let claims = EvaluationClaims {
            subject: format!(
                "{SUBJECT_PREFIX}{}",
                protocol_encode(&evaluated.serialize())
            ),
            aud: self.id.as_str().to_owned(),
            iat: issued_at_unix_s,
            exp: issued_at_unix_s.saturating_add(EXCHANGE_TOKEN_LIFETIME_S),
            key_version: self.key_version,
        };
        let payload =
            serde_json::to_vec(&claims).map_err(|_| Error::Malformed("evaluation claims"))?;
        self.key.encrypt(&payload)
    }

    /// The recipient this is for.
    pub fn id(&self) -> &RecipientId {
        &self.id
    }

    /// The public key evaluations are encrypted to.
    pub fn public_key(&self) -> &RecipientPublicKey {
        &self.key
    }
}
