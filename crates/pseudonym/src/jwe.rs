//! JSON Web Encryption (RFC 7516, compact serialisation) for the two key-management
//! modes of the PRS protocol, both with `A256GCM` content encryption:
//! `ECDH-ES` (direct key agreement, RFC 7518 §4.6) on X25519 (RFC 8037) or P-256, and
//! `RSA-OAEP-256` (RFC 7518 §4.3). Also the public JWK (RFC 7517) a recipient registers,
//! with its RFC 7638 thumbprint as key id.
//!
//! It is assembled from audited RustCrypto primitives (x25519-dalek, p256, rsa, aes-gcm,
//! sha2); the only code of our own is the JOSE framing and the Concat KDF, and both are
//! checked against RFC test vectors and against an independent JOSE implementation.
//! It is not a general JOSE library: no JWS, no other algorithms, no JSON serialisation,
//! no compression, no `crit` extensions.

use std::fmt;
use std::sync::Arc;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use curve25519_dalek::edwards::{EdwardsBasepointTable, EdwardsPoint};
use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::traits::BasepointTable;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand_core::{OsRng, RngCore};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Oaep, RsaPrivateKey, RsaPublicKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::b64::{jose_decode, jose_encode};
use crate::error::{Error, Result};

/// Longest compact JWE accepted, in bytes. A PRS token is about 400 bytes with ECDH-ES
/// and about 1 KiB with a 4096-bit RSA key; anything much larger is not ours.
pub const MAX_JWE_BYTES: usize = 8 * 1024;

/// Longest JWK accepted for registration, in bytes; a 4096-bit RSA JWK is under 1 KiB.
pub const MAX_JWK_BYTES: usize = 4 * 1024;

/// Smallest RSA modulus accepted for `RSA-OAEP-256`, in bits.
pub const MIN_RSA_MODULUS_BITS: usize = 2048;

/// Largest RSA modulus accepted, in bits: the `rsa` crate's own ceiling for public keys,
/// which also bounds the PRS's cost per encryption.
pub const MAX_RSA_MODULUS_BITS: usize = 4096;

/// Modulus size of RSA key pairs this crate generates, in bits (NIST's 128-bit level).
pub const GENERATED_RSA_MODULUS_BITS: usize = 3072;

const ALG_ECDH_ES: &str = "ECDH-ES";
const ALG_RSA_OAEP_256: &str = "RSA-OAEP-256";
const ENC_A256GCM: &str = "A256GCM";
const CEK_BYTES: usize = 32;
const GCM_IV_BYTES: usize = 12;
const GCM_TAG_BYTES: usize = 16;
const X25519_BYTES: usize = 32;
const P256_COORDINATE_BYTES: usize = 32;

/// The kind of key pair a recipient holds; it decides the JWE `alg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// X25519 with `ECDH-ES`: the fast default.
    X25519,
    /// NIST P-256 with `ECDH-ES`: for recipients whose key lives in an HSM or PKI that
    /// has no X25519.
    P256,
    /// RSA with `RSA-OAEP-256`: for interoperability with RSA-only recipients.
    Rsa,
}

impl KeyAlgorithm {
    /// The JWE `alg` used with this key.
    pub fn jwe_alg(self) -> &'static str {
        match self {
            KeyAlgorithm::X25519 | KeyAlgorithm::P256 => ALG_ECDH_ES,
            KeyAlgorithm::Rsa => ALG_RSA_OAEP_256,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::X25519 => "X25519",
            KeyAlgorithm::P256 => "P-256",
            KeyAlgorithm::Rsa => "RSA",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "X25519" => Some(KeyAlgorithm::X25519),
            "P-256" => Some(KeyAlgorithm::P256),
            "RSA" => Some(KeyAlgorithm::Rsa),
            _ => None,
        }
    }
}

impl std::str::FromStr for KeyAlgorithm {
    type Err = Error;

    /// `X25519`, `P-256` or `RSA`.
    fn from_str(text: &str) -> Result<Self> {
        KeyAlgorithm::parse(text).ok_or(Error::InvalidIdentifier("key algorithm"))
    }
}

/// A public encryption key, parsed and checked once: the key a recipient registers at the
/// PRS (and the PRS's own key for sealed BSNs). Its key id is the RFC 7638 thumbprint.
#[derive(Clone)]
pub struct RecipientPublicKey {
    key: PublicKey,
    kid: String,
    /// An X25519 key's multiples, once [`RecipientPublicKey::precompute`] made them.
    table: Option<Arc<EdwardsBasepointTable>>,
}

/// Bytes an X25519 key's precomputed multiples take (curve25519-dalek's radix-16 table).
pub const PRECOMPUTED_KEY_BYTES: usize = std::mem::size_of::<EdwardsBasepointTable>();

#[derive(Clone)]
enum PublicKey {
    /// The key as sent (`u`) and as the Edwards point [`x25519`] multiplies.
    X25519(x25519_dalek::PublicKey, EdwardsPoint),
    P256(p256::PublicKey),
    Rsa(RsaPublicKey),
}

impl fmt::Debug for RecipientPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecipientPublicKey")
            .field("algorithm", &self.algorithm())
            .field("kid", &self.kid)
            .finish()
    }
}

/// The members of a JWK this crate reads; unknown members are ignored.
#[derive(Deserialize)]
struct JwkFields {
    kty: String,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
    d: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    key_use: Option<String>,
}

impl RecipientPublicKey {
    /// Parses a public JWK: `{"kty":"OKP","crv":"X25519","x":…}`,
    /// `{"kty":"EC","crv":"P-256","x":…,"y":…}` or `{"kty":"RSA","n":…,"e":…}`.
    /// Refuses private members, a `use` other than `enc`, an `alg` that does not fit the
    /// key, small-order X25519 points, points off the curve, and RSA moduli outside
    /// [`MIN_RSA_MODULUS_BITS`]..=[`MAX_RSA_MODULUS_BITS`]. A `kid` in the JWK is ignored:
    /// the key id is always the thumbprint.
    pub fn from_jwk(json: &str) -> Result<Self> {
        if json.len() > MAX_JWK_BYTES {
            return Err(Error::InvalidPublicKey("JWK too large"));
        }
        let fields: JwkFields =
            serde_json::from_str(json).map_err(|_| Error::InvalidPublicKey("not a JWK"))?;
        if fields.d.is_some() {
            return Err(Error::InvalidPublicKey("JWK contains private key material"));
        }
        if fields.key_use.as_deref().is_some_and(|u| u != "enc") {
            return Err(Error::InvalidPublicKey("JWK use is not enc"));
        }
        let key = PublicKey::from_fields(&fields)?;
        let algorithm = key.algorithm();
        if fields
            .alg
            .as_deref()
            .is_some_and(|a| a != algorithm.jwe_alg())
        {
            return Err(Error::InvalidPublicKey("JWK alg does not fit the key type"));
        }
        if let PublicKey::X25519(_, point) = &key {
            // A small-order point makes every shared secret predictable.
            if point.is_small_order() {
                return Err(Error::InvalidPublicKey("X25519 point of small order"));
            }
        }
        Ok(Self::new(key))
    }

    fn new(key: PublicKey) -> Self {
        let kid = jose_encode(&Sha256::digest(key.thumbprint_input().as_bytes()));
        Self {
            key,
            kid,
            table: None,
        }
    }

    /// The public JWK, with `kid` (the thumbprint), `use` and `alg`, for registration.
    pub fn to_jwk(&self) -> String {
        let algorithm = self.algorithm().jwe_alg();
        let members = match &self.key {
            PublicKey::X25519(public, _) => format!(
                r#""kty":"OKP","crv":"X25519","x":"{}""#,
                jose_encode(public.as_bytes())
            ),
            PublicKey::P256(public) => {
                let (x, y) = p256_coordinates(public);
                format!(r#""kty":"EC","crv":"P-256","x":"{x}","y":"{y}""#)
            }
            PublicKey::Rsa(public) => format!(
                r#""kty":"RSA","n":"{}","e":"{}""#,
                jose_encode(&public.n().to_bytes_be()),
                jose_encode(&public.e().to_bytes_be())
            ),
        };
        format!(
            r#"{{{members},"kid":"{}","use":"enc","alg":"{algorithm}"}}"#,
            self.kid
        )
    }

    /// The key id: the base64url SHA-256 JWK thumbprint (RFC 7638).
    pub fn key_id(&self) -> &str {
        &self.kid
    }

    /// What kind of key this is.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.key.algorithm()
    }

    /// Precomputes the multiples of an X25519 key ([`PRECOMPUTED_KEY_BYTES`] of memory), so
    /// that the key exchange of every later [`RecipientPublicKey::encrypt`] is a fixed-base
    /// multiplication: about a third of the time of a variable-base one. For a key the PRS
    /// encrypts to often. Other kinds of key are left as they are; returns whether this one
    /// is now precomputed.
    pub fn precompute(&mut self) -> bool {
        let PublicKey::X25519(_, point) = &self.key else {
            return false;
        };
        if self.table.is_none() {
            self.table = Some(Arc::new(EdwardsBasepointTable::create(point)));
        }
        true
    }

    /// Encrypts `plaintext` to this key as a compact JWE with `kid` and
    /// `"cty":"application/json"` in the protected header.
    pub(crate) fn encrypt(&self, plaintext: &[u8]) -> Result<String> {
        match &self.key {
            PublicKey::X25519(_, point) => {
                let mut ephemeral = Zeroizing::new([0u8; X25519_BYTES]);
                OsRng.fill_bytes(ephemeral.as_mut());
                let epk = EdwardsPoint::mul_base_clamped(*ephemeral).to_montgomery();
                let product = match &self.table {
                    Some(table) => table.mul_base_clamped(*ephemeral),
                    None => point.mul_clamped(*ephemeral),
                };
                let shared = contributory(product)
                    .ok_or(Error::InvalidPublicKey("X25519 point of small order"))?;
                let cek = concat_kdf(shared.as_ref(), ENC_A256GCM.as_bytes(), &[], &[], CEK_BYTES);
                let header = format!(
                    r#"{{"alg":"{ALG_ECDH_ES}","enc":"{ENC_A256GCM}","cty":"application/json","kid":"{}","epk":{{"kty":"OKP","crv":"X25519","x":"{}"}}}}"#,
                    self.kid,
                    jose_encode(epk.as_bytes())
                );
                seal(&header, "", &cek, plaintext)
            }
            PublicKey::P256(public) => {
                let ephemeral = p256::ecdh::EphemeralSecret::random(&mut OsRng);
                let (x, y) = p256_coordinates(&ephemeral.public_key());
                let shared = ephemeral.diffie_hellman(public);
                let cek = concat_kdf(
                    shared.raw_secret_bytes(),
                    ENC_A256GCM.as_bytes(),
                    &[],
                    &[],
                    CEK_BYTES,
                );
                let header = format!(
                    r#"{{"alg":"{ALG_ECDH_ES}","enc":"{ENC_A256GCM}","cty":"application/json","kid":"{}","epk":{{"kty":"EC","crv":"P-256","x":"{x}","y":"{y}"}}}}"#,
                    self.kid
                );
                seal(&header, "", &cek, plaintext)
            }
            PublicKey::Rsa(public) => {
                let mut cek = Zeroizing::new([0u8; 32]);
                OsRng.fill_bytes(cek.as_mut());
                let encrypted_key = public
                    .encrypt(&mut OsRng, Oaep::new::<Sha256>(), cek.as_ref())
                    .map_err(|_| Error::InvalidPublicKey("RSA encryption failed"))?;
                let header = format!(
                    r#"{{"alg":"{ALG_RSA_OAEP_256}","enc":"{ENC_A256GCM}","cty":"application/json","kid":"{}"}}"#,
                    self.kid
                );
                seal(&header, &jose_encode(&encrypted_key), &cek, plaintext)
            }
        }
    }
}

impl PublicKey {
    fn from_fields(fields: &JwkFields) -> Result<Self> {
        let member = |value: &Option<String>| {
            value
                .as_deref()
                .ok_or(Error::InvalidPublicKey("JWK misses a member"))
                .and_then(|text| {
                    jose_decode(text, "JWK member")
                        .map_err(|_| Error::InvalidPublicKey("JWK member is not base64url"))
                })
        };
        match (fields.kty.as_str(), fields.crv.as_deref()) {
            ("OKP", Some("X25519")) => {
                let x: [u8; X25519_BYTES] = member(&fields.x)?
                    .try_into()
                    .map_err(|_| Error::InvalidPublicKey("X25519 key is not 32 bytes"))?;
                let point = x25519_point(&x).ok_or(Error::InvalidPublicKey(
                    "X25519 key is not a point of the curve (it is on the twist)",
                ))?;
                Ok(PublicKey::X25519(x25519_dalek::PublicKey::from(x), point))
            }
            ("EC", Some("P-256")) => Ok(PublicKey::P256(p256_from_coordinates(
                &member(&fields.x)?,
                &member(&fields.y)?,
            )?)),
            ("RSA", _) => {
                let n = BigUint::from_bytes_be(&member(&fields.n)?);
                let e = BigUint::from_bytes_be(&member(&fields.e)?);
                let bits = n.bits();
                if !(MIN_RSA_MODULUS_BITS..=MAX_RSA_MODULUS_BITS).contains(&bits) {
                    return Err(Error::InvalidPublicKey("RSA modulus size out of range"));
                }
                let public = RsaPublicKey::new(n, e)
                    .map_err(|_| Error::InvalidPublicKey("invalid RSA public key"))?;
                Ok(PublicKey::Rsa(public))
            }
            _ => Err(Error::InvalidPublicKey(
                "key type must be OKP/X25519, EC/P-256 or RSA",
            )),
        }
    }

    fn algorithm(&self) -> KeyAlgorithm {
        match self {
            PublicKey::X25519(..) => KeyAlgorithm::X25519,
            PublicKey::P256(_) => KeyAlgorithm::P256,
            PublicKey::Rsa(_) => KeyAlgorithm::Rsa,
        }
    }

    /// RFC 7638 §3.2: the required members only, in lexicographic order, no whitespace.
    fn thumbprint_input(&self) -> String {
        match self {
            PublicKey::X25519(public, _) => format!(
                r#"{{"crv":"X25519","kty":"OKP","x":"{}"}}"#,
                jose_encode(public.as_bytes())
            ),
            PublicKey::P256(public) => {
                let (x, y) = p256_coordinates(public);
                format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#)
            }
            PublicKey::Rsa(public) => format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                jose_encode(&public.e().to_bytes_be()),
                jose_encode(&public.n().to_bytes_be())
            ),
        }
    }
}

fn p256_coordinates(public: &p256::PublicKey) -> (String, String) {
    let point = public.to_encoded_point(false);
    // An uncompressed encoding of a valid public key always has both coordinates.
    let x = point.x().map(|x| jose_encode(x)).unwrap_or_default();
    let y = point.y().map(|y| jose_encode(y)).unwrap_or_default();
    (x, y)
}

fn p256_from_coordinates(x: &[u8], y: &[u8]) -> Result<p256::PublicKey> {
    if x.len() != P256_COORDINATE_BYTES || y.len() != P256_COORDINATE_BYTES {
        return Err(Error::InvalidPublicKey("P-256 coordinate is not 32 bytes"));
    }
    let mut sec1 = [0u8; 1 + 2 * P256_COORDINATE_BYTES];
    sec1[0] = 0x04;
    sec1[1..=P256_COORDINATE_BYTES].copy_from_slice(x);
    sec1[1 + P256_COORDINATE_BYTES..].copy_from_slice(y);
    p256::PublicKey::from_sec1_bytes(&sec1)
        .map_err(|_| Error::InvalidPublicKey("P-256 point not on the curve"))
}

/// A private decryption key. Key material is wiped on drop by the underlying crates.
#[derive(Clone)]
pub(crate) enum PrivateKey {
    X25519(x25519_dalek::StaticSecret),
    P256(p256::SecretKey),
    Rsa(Box<RsaPrivateKey>),
}

impl PrivateKey {
    pub(crate) fn generate(algorithm: KeyAlgorithm) -> Result<Self> {
        Ok(match algorithm {
            KeyAlgorithm::X25519 => {
                PrivateKey::X25519(x25519_dalek::StaticSecret::random_from_rng(OsRng))
            }
            KeyAlgorithm::P256 => PrivateKey::P256(p256::SecretKey::random(&mut OsRng)),
            KeyAlgorithm::Rsa => PrivateKey::Rsa(Box::new(
                RsaPrivateKey::new(&mut OsRng, GENERATED_RSA_MODULUS_BITS)
                    .map_err(|_| Error::InvalidPublicKey("RSA key generation failed"))?,
            )),
        })
    }

    pub(crate) fn algorithm(&self) -> KeyAlgorithm {
        match self {
            PrivateKey::X25519(_) => KeyAlgorithm::X25519,
            PrivateKey::P256(_) => KeyAlgorithm::P256,
            PrivateKey::Rsa(_) => KeyAlgorithm::Rsa,
        }
    }

    pub(crate) fn public_key(&self) -> RecipientPublicKey {
        RecipientPublicKey::new(match self {
            PrivateKey::X25519(secret) => {
                let public = x25519_dalek::PublicKey::from(secret);
                // The public key of a secret is on the curve.
                let point = x25519_point(public.as_bytes())
                    .unwrap_or_else(|| unreachable!("X25519 public keys are curve points"));
                PublicKey::X25519(public, point)
            }
            PrivateKey::P256(secret) => PublicKey::P256(secret.public_key()),
            PrivateKey::Rsa(secret) => PublicKey::Rsa(secret.to_public_key()),
        })
    }

    /// Raw scalar (X25519, P-256) or PKCS#8 DER (RSA), for the key file.
    pub(crate) fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>> {
        Ok(match self {
            PrivateKey::X25519(secret) => Zeroizing::new(secret.to_bytes().to_vec()),
            PrivateKey::P256(secret) => Zeroizing::new(secret.to_bytes().to_vec()),
            PrivateKey::Rsa(secret) => Zeroizing::new(
                secret
                    .to_pkcs8_der()
                    .map_err(|_| Error::Malformed("RSA private key does not encode"))?
                    .as_bytes()
                    .to_vec(),
            ),
        })
    }

    /// The inverse of [`PrivateKey::to_bytes`].
    pub(crate) fn from_bytes(algorithm: KeyAlgorithm, bytes: &[u8]) -> Result<Self> {
        let invalid = Error::Malformed("private key");
        Ok(match algorithm {
            KeyAlgorithm::X25519 => {
                let raw: [u8; X25519_BYTES] = bytes.try_into().map_err(|_| invalid)?;
                PrivateKey::X25519(x25519_dalek::StaticSecret::from(raw))
            }
            KeyAlgorithm::P256 => {
                PrivateKey::P256(p256::SecretKey::from_slice(bytes).map_err(|_| invalid)?)
            }
            KeyAlgorithm::Rsa => PrivateKey::Rsa(Box::new(
                RsaPrivateKey::from_pkcs8_der(bytes).map_err(|_| invalid)?,
            )),
        })
    }

    /// Decrypts a compact JWE made for this key (whose thumbprint is `kid`).
    pub(crate) fn decrypt(&self, kid: &str, compact: &str) -> Result<Zeroizing<Vec<u8>>> {
        if compact.len() > MAX_JWE_BYTES {
            return Err(Error::Malformed("JWE too large"));
        }
        let mut parts = compact.split('.');
        let (Some(header_b64), Some(key_b64), Some(iv_b64), Some(ct_b64), Some(tag_b64), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(Error::Malformed("JWE must have five parts"));
        };
        let header: Header = serde_json::from_slice(&jose_decode(header_b64, "JWE header")?)
            .map_err(|_| Error::Malformed("JWE header is not JSON"))?;
        // The key id is the recipient key's thumbprint: a different one means the token
        // was made for another key, whatever else the header says.
        if header.kid.as_deref().is_some_and(|k| k != kid) {
            return Err(Error::WrongRecipient);
        }
        if header.enc != ENC_A256GCM {
            return Err(Error::UnsupportedAlgorithm("enc must be A256GCM"));
        }
        if header.zip.is_some() {
            return Err(Error::UnsupportedAlgorithm("zip is not supported"));
        }
        if header.crit.is_some() {
            return Err(Error::UnsupportedAlgorithm("crit is not supported"));
        }
        if header.alg != self.algorithm().jwe_alg() {
            return Err(Error::UnsupportedAlgorithm(
                "alg does not fit the recipient key",
            ));
        }
        let cek = self.content_key(&header, key_b64)?;
        let iv: [u8; GCM_IV_BYTES] = jose_decode(iv_b64, "JWE IV")?
            .try_into()
            .map_err(|_| Error::Malformed("JWE IV must be 96 bits"))?;
        let tag: [u8; GCM_TAG_BYTES] = jose_decode(tag_b64, "JWE tag")?
            .try_into()
            .map_err(|_| Error::Malformed("JWE tag must be 128 bits"))?;
        let mut buffer = Zeroizing::new(jose_decode(ct_b64, "JWE ciphertext")?);
        Aes256Gcm::new(cek.as_ref().into())
            .decrypt_in_place_detached(
                &Nonce::from(iv),
                header_b64.as_bytes(),
                &mut buffer,
                &Tag::from(tag),
            )
            .map_err(|_| Error::DecryptionFailed)?;
        Ok(buffer)
    }

    fn content_key(&self, header: &Header, key_b64: &str) -> Result<Zeroizing<[u8; 32]>> {
        match self {
            PrivateKey::X25519(secret) => {
                let epk = ecdh_preamble(header, key_b64)?;
                if epk.kty != "OKP" || epk.crv.as_deref() != Some("X25519") {
                    return Err(Error::UnsupportedAlgorithm("epk must be OKP X25519"));
                }
                let x: [u8; X25519_BYTES] = jose_decode(epk.x.as_deref().unwrap_or(""), "epk x")?
                    .try_into()
                    .map_err(|_| Error::Malformed("epk x must be 32 bytes"))?;
                let point =
                    x25519_point(&x).ok_or(Error::Malformed("epk is not an X25519 point"))?;
                let shared = x25519(&Zeroizing::new(secret.to_bytes()), &point)
                    .ok_or(Error::DecryptionFailed)?;
                ecdh_cek(header, shared.as_ref())
            }
            PrivateKey::P256(secret) => {
                let epk = ecdh_preamble(header, key_b64)?;
                if epk.kty != "EC" || epk.crv.as_deref() != Some("P-256") {
                    return Err(Error::UnsupportedAlgorithm("epk must be EC P-256"));
                }
                let public = p256_from_coordinates(
                    &jose_decode(epk.x.as_deref().unwrap_or(""), "epk x")?,
                    &jose_decode(epk.y.as_deref().unwrap_or(""), "epk y")?,
                )
                .map_err(|_| Error::Malformed("epk is not a P-256 point"))?;
                let shared =
                    p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), public.as_affine());
                ecdh_cek(header, shared.raw_secret_bytes())
            }
            PrivateKey::Rsa(secret) => {
                let encrypted_key = jose_decode(key_b64, "JWE encrypted key")?;
                // One error for every failure, so the caller cannot tell padding from tag
                // failures apart (no decryption oracle).
                let cek = Zeroizing::new(
                    secret
                        .decrypt(Oaep::new::<Sha256>(), &encrypted_key)
                        .map_err(|_| Error::DecryptionFailed)?,
                );
                let cek: [u8; CEK_BYTES] = cek
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::DecryptionFailed)?;
                Ok(Zeroizing::new(cek))
            }
        }
    }
}

/// An X25519 public key `u` as a point of Curve25519's Edwards form; `None` when `u` is not
/// on the curve but on its quadratic twist (honest keys never are). Either sign of the
/// point will do: `[k]P` and `[k](−P)` have the same `u`.
fn x25519_point(u: &[u8; X25519_BYTES]) -> Option<EdwardsPoint> {
    MontgomeryPoint(*u).to_edwards(0)
}

/// X25519 (RFC 7748) of `secret` and a peer's key, computed on the Edwards form of the
/// curve: curve25519-dalek multiplies Edwards points with its vectorised (AVX2) backend
/// where the CPU has one, and its Montgomery ladder has none (59 → 39 µs per exchange on
/// the benchmark machine, docs/benchmarks.md). The birational map takes `[k]P` to `[k]P`
/// and `mul_clamped` clamps the scalar exactly as X25519 does, so the result is X25519's
/// (checked against x25519-dalek and RFC 7748 §6.1 below). `None` when the result is all
/// zeros: the peer's key was of small order, the exchange not contributory.
fn x25519(secret: &[u8; X25519_BYTES], peer: &EdwardsPoint) -> Option<Zeroizing<[u8; 32]>> {
    contributory(peer.mul_clamped(*secret))
}

/// The X25519 shared secret (`u`) of the product of a clamped secret and the peer's key;
/// `None` when it is all zeros.
fn contributory(product: EdwardsPoint) -> Option<Zeroizing<[u8; 32]>> {
    let shared = Zeroizing::new(product.to_montgomery().to_bytes());
    let zero = shared.ct_eq(&[0u8; 32]);
    (!bool::from(zero)).then_some(shared)
}

/// The protected-header members this crate reads; unknown members are ignored.
#[derive(Deserialize)]
struct Header {
    alg: String,
    enc: String,
    kid: Option<String>,
    epk: Option<EphemeralJwk>,
    apu: Option<String>,
    apv: Option<String>,
    zip: Option<serde_json::Value>,
    crit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct EphemeralJwk {
    kty: String,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// Direct key agreement has no encrypted key and needs an `epk`.
fn ecdh_preamble<'h>(header: &'h Header, key_b64: &str) -> Result<&'h EphemeralJwk> {
    if !key_b64.is_empty() {
        return Err(Error::Malformed(
            "ECDH-ES JWE must have an empty encrypted key",
        ));
    }
    header
        .epk
        .as_ref()
        .ok_or(Error::Malformed("ECDH-ES JWE misses epk"))
}

fn ecdh_cek(header: &Header, shared_secret: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    let apu = match &header.apu {
        Some(text) => jose_decode(text, "apu")?,
        None => Vec::new(),
    };
    let apv = match &header.apv {
        Some(text) => jose_decode(text, "apv")?,
        None => Vec::new(),
    };
    Ok(concat_kdf(
        shared_secret,
        ENC_A256GCM.as_bytes(),
        &apu,
        &apv,
        CEK_BYTES,
    ))
}

/// The Concat KDF of NIST SP 800-56A §5.8.1 with SHA-256, as RFC 7518 §4.6.2 uses it.
/// One hash round is enough for keys up to 256 bits; the first `key_bytes` bytes of the
/// result are the key.
pub(crate) fn concat_kdf(
    shared_secret: &[u8],
    algorithm_id: &[u8],
    apu: &[u8],
    apv: &[u8],
    key_bytes: usize,
) -> Zeroizing<[u8; 32]> {
    assert!(
        key_bytes <= 32,
        "one Concat KDF round gives at most 256 bits"
    );
    let length = |bytes: &[u8]| u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes();
    let mut hash = Sha256::new();
    hash.update(1u32.to_be_bytes());
    hash.update(shared_secret);
    hash.update(length(algorithm_id));
    hash.update(algorithm_id);
    hash.update(length(apu));
    hash.update(apu);
    hash.update(length(apv));
    hash.update(apv);
    hash.update(
        u32::try_from(key_bytes * 8)
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    let mut key = Zeroizing::new([0u8; 32]);
    key[..key_bytes].copy_from_slice(&hash.finalize()[..key_bytes]);
    key
}

/// AES-256-GCM over `plaintext` with the protected header as additional data, and the
/// compact serialisation.
fn seal(
    header_json: &str,
    encrypted_key_b64: &str,
    cek: &[u8; 32],
    plaintext: &[u8],
) -> Result<String> {
    let header_b64 = jose_encode(header_json.as_bytes());
    let mut iv = [0u8; GCM_IV_BYTES];
    OsRng.fill_bytes(&mut iv);
    let mut buffer = Zeroizing::new(plaintext.to_vec());
    let tag = Aes256Gcm::new(cek.into())
        .encrypt_in_place_detached(&Nonce::from(iv), header_b64.as_bytes(), &mut buffer)
        .map_err(|_| Error::Malformed("plaintext too large"))?;
    let ciphertext_b64 = jose_encode(&buffer);
    let mut out = String::with_capacity(
        header_b64.len() + encrypted_key_b64.len() + ciphertext_b64.len() + 48,
    );
    for (index, part) in [
        header_b64.as_str(),
        encrypted_key_b64,
        &jose_encode(&iv),
        &ciphertext_b64,
        &jose_encode(&tag),
    ]
    .into_iter()
    .enumerate()
    {
        if index > 0 {
            out.push('.');
        }
        out.push_str(part);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7518 Appendix C: Bob's P-256 key, Alice's ephemeral public key, "A128GCM",
    /// apu "Alice", apv "Bob" give the 128-bit key `VqqN6vgjbSBcIijNcacQGg`. This runs
    /// the same ECDH and Concat KDF code the decrypt path uses.
    #[test]
    fn rfc7518_appendix_c_ecdh_es_key_agreement() {
        let bob = p256::SecretKey::from_slice(
            &jose_decode("VEmDZpDXXK8p8N0Cndsxs924q6nS1RXFASRl6BfUqdw", "d").unwrap(),
        )
        .unwrap();
        let alice_epk = p256_from_coordinates(
            &jose_decode("gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0", "x").unwrap(),
            &jose_decode("SLW_xSffzlPWrHEVI30DHM_4egVwt3NQqeUD7nMFpps", "y").unwrap(),
        )
        .unwrap();
        let z = p256::ecdh::diffie_hellman(bob.to_nonzero_scalar(), alice_epk.as_affine());
        let key = concat_kdf(z.raw_secret_bytes(), b"A128GCM", b"Alice", b"Bob", 16);
        assert_eq!(jose_encode(&key[..16]), "VqqN6vgjbSBcIijNcacQGg");
        // Bob's public key from the same appendix, to check our point decoding.
        let (x, y) = p256_coordinates(&bob.public_key());
        assert_eq!(x, "weNJy2HscCSM6AEDTDg04biOvhFhyyWvOHQfeF_PxMQ");
        assert_eq!(y, "e8lnCO-AlStT-NJVX-crhB7QRYhiix03illJOVAOyck");
    }

    /// X25519 computed on the Edwards form is X25519: RFC 7748 §6.1's exchange, and
    /// x25519-dalek's Montgomery ladder on random key pairs, both ways round.
    #[test]
    fn x25519_on_the_edwards_form_is_x25519() {
        let hex32 = |text: &str| -> [u8; 32] {
            let bytes: Vec<u8> = (0..text.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
                .collect();
            bytes.try_into().unwrap()
        };
        let alice = hex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let bob = hex32("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        let shared = x25519(&alice, &x25519_point(&bob).unwrap()).unwrap();
        assert_eq!(
            *shared,
            hex32("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
        );
        for _ in 0..200 {
            let mut secret = [0u8; 32];
            OsRng.fill_bytes(&mut secret);
            let peer =
                x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::random_from_rng(OsRng));
            let ladder = x25519_dalek::StaticSecret::from(secret).diffie_hellman(&peer);
            let edwards = x25519(&secret, &x25519_point(peer.as_bytes()).unwrap()).unwrap();
            assert_eq!(*edwards, *ladder.as_bytes());
        }
        // u = 0 has order 2: every exchange with it gives zeros and is refused.
        assert!(x25519(&alice, &x25519_point(&[0; 32]).unwrap()).is_none());
    }

    /// Encryption to a precomputed key decrypts like encryption to a plain one, also for a
    /// key with a torsion component (which the clamped scalar removes either way).
    #[test]
    fn precomputed_keys_encrypt_alike() {
        let private = PrivateKey::generate(KeyAlgorithm::X25519).unwrap();
        let mut public = private.public_key();
        assert!(public.precompute());
        for _ in 0..20 {
            let jwe = public.encrypt(b"{}").unwrap();
            assert_eq!(
                private.decrypt(public.key_id(), &jwe).unwrap().as_slice(),
                b"{}"
            );
        }
        let mut secret = [0u8; 32];
        OsRng.fill_bytes(&mut secret);
        let PublicKey::X25519(_, point) = private.public_key().key else {
            unreachable!()
        };
        let torsion = curve25519_dalek::constants::EIGHT_TORSION[1];
        for peer in [point, point + torsion] {
            let table = EdwardsBasepointTable::create(&peer);
            assert_eq!(
                *contributory(table.mul_base_clamped(secret)).unwrap(),
                *x25519(&secret, &peer).unwrap()
            );
        }
        let mut p256 = PrivateKey::generate(KeyAlgorithm::P256)
            .unwrap()
            .public_key();
        assert!(!p256.precompute(), "only X25519 keys are precomputed");
    }

    /// A JWE whose ephemeral key is on the twist (u = 2) is refused, not decrypted.
    #[test]
    fn refuses_an_ephemeral_key_on_the_twist() {
        let private = PrivateKey::generate(KeyAlgorithm::X25519).unwrap();
        let public = private.public_key();
        let jwe = public.encrypt(b"{}").unwrap();
        let (header, rest) = jwe.split_once('.').unwrap();
        let mut header: serde_json::Value =
            serde_json::from_slice(&jose_decode(header, "header").unwrap()).unwrap();
        let mut twist = [0u8; 32];
        twist[0] = 2;
        header["epk"]["x"] = jose_encode(&twist).into();
        let forged = format!("{}.{rest}", jose_encode(header.to_string().as_bytes()));
        assert!(matches!(
            private.decrypt(public.key_id(), &forged),
            Err(Error::Malformed(_))
        ));
    }

    /// RFC 7638 §3.1: the thumbprint of the example RSA key.
    #[test]
    fn rfc7638_thumbprint() {
        let jwk = r#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RSA-OAEP-256","kid":"2011-04-29"}"#;
        let key = RecipientPublicKey::from_jwk(jwk).unwrap();
        assert_eq!(key.key_id(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
        assert_eq!(key.algorithm(), KeyAlgorithm::Rsa);
    }

    /// JWEs made by Python jwcrypto (the JOSE library of the national PRS reference),
    /// see `tests/fixtures/make_jwcrypto_fixtures.py`.
    #[test]
    fn decrypts_jwcrypto_output() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/jwcrypto.json")).unwrap();
        let plaintext = fixture["plaintext"].as_str().unwrap();
        let cases = fixture["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 4);
        for case in cases {
            let algorithm = KeyAlgorithm::parse(case["algorithm"].as_str().unwrap()).unwrap();
            let private = PrivateKey::from_bytes(
                algorithm,
                &jose_decode(case["private_key"].as_str().unwrap(), "key").unwrap(),
            )
            .unwrap();
            let kid = private.public_key().key_id().to_owned();
            let jwe = case["jwe"].as_str().unwrap();
            let decrypted = private.decrypt(&kid, jwe).unwrap();
            assert_eq!(
                decrypted.as_slice(),
                plaintext.as_bytes(),
                "{}",
                case["name"]
            );
        }
    }

    #[test]
    fn round_trip_every_algorithm_and_jwk() {
        for algorithm in [KeyAlgorithm::X25519, KeyAlgorithm::P256, KeyAlgorithm::Rsa] {
            let private = PrivateKey::generate(algorithm).unwrap();
            let public = private.public_key();
            let reparsed = RecipientPublicKey::from_jwk(&public.to_jwk()).unwrap();
            assert_eq!(reparsed.key_id(), public.key_id());
            let jwe = reparsed.encrypt(br#"{"a":1}"#).unwrap();
            let plain = private.decrypt(public.key_id(), &jwe).unwrap();
            assert_eq!(plain.as_slice(), br#"{"a":1}"#);
            let restored = PrivateKey::from_bytes(algorithm, &private.to_bytes().unwrap()).unwrap();
            assert_eq!(restored.public_key().key_id(), public.key_id());
        }
    }

    #[test]
    fn refuses_bad_jwks() {
        let small_order =
            r#"{"kty":"OKP","crv":"X25519","x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#;
        let off_curve = r#"{"kty":"EC","crv":"P-256","x":"weNJy2HscCSM6AEDTDg04biOvhFhyyWvOHQfeF_PxMQ","y":"weNJy2HscCSM6AEDTDg04biOvhFhyyWvOHQfeF_PxMQ"}"#;
        let private = r#"{"kty":"OKP","crv":"X25519","x":"3p7bfXt9wbTTW2HC7OQ1Nz-DQ8hbeGdNrfx-FG-IK08","d":"dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo"}"#;
        let wrong_alg = r#"{"kty":"OKP","crv":"X25519","x":"3p7bfXt9wbTTW2HC7OQ1Nz-DQ8hbeGdNrfx-FG-IK08","alg":"RSA-OAEP-256"}"#;
        let signing = r#"{"kty":"OKP","crv":"X25519","x":"3p7bfXt9wbTTW2HC7OQ1Nz-DQ8hbeGdNrfx-FG-IK08","use":"sig"}"#;
        let short_rsa = r#"{"kty":"RSA","n":"AQAB","e":"AQAB"}"#;
        let on_the_twist =
            r#"{"kty":"OKP","crv":"X25519","x":"AgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#;
        let ed25519 =
            r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
        for bad in [
            small_order,
            off_curve,
            private,
            wrong_alg,
            signing,
            short_rsa,
            on_the_twist,
            ed25519,
            "{",
            "[]",
        ] {
            assert!(
                matches!(
                    RecipientPublicKey::from_jwk(bad),
                    Err(Error::InvalidPublicKey(_))
                ),
                "{bad}"
            );
        }
        assert!(
            RecipientPublicKey::from_jwk(
                r#"{"kty":"OKP","crv":"X25519","x":"3p7bfXt9wbTTW2HC7OQ1Nz-DQ8hbeGdNrfx-FG-IK08"}"#
            )
            .is_ok()
        );
    }

    #[test]
    fn refuses_tampering_and_foreign_headers() {
        let private = PrivateKey::generate(KeyAlgorithm::X25519).unwrap();
        let public = private.public_key();
        let jwe = public.encrypt(b"secret").unwrap();
        let parts: Vec<&str> = jwe.split('.').collect();

        // Flip one ciphertext byte.
        let mut ciphertext = jose_decode(parts[3], "ct").unwrap();
        ciphertext[0] ^= 1;
        let tampered = [
            parts[0],
            parts[1],
            parts[2],
            &jose_encode(&ciphertext),
            parts[4],
        ]
        .join(".");
        assert!(matches!(
            private.decrypt(public.key_id(), &tampered),
            Err(Error::DecryptionFailed)
        ));

        // A header with another enc, alg, or a crit member.
        for header in [
            r#"{"alg":"ECDH-ES","enc":"A128GCM"}"#,
            r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#,
            r#"{"alg":"dir","enc":"A256GCM"}"#,
            r#"{"alg":"ECDH-ES","enc":"A256GCM","crit":["exp"]}"#,
        ] {
            let forged = [
                &jose_encode(header.as_bytes()),
                parts[1],
                parts[2],
                parts[3],
                parts[4],
            ]
            .join(".");
            assert!(
                matches!(
                    private.decrypt(public.key_id(), &forged),
                    Err(Error::UnsupportedAlgorithm(_))
                ),
                "{header}"
            );
        }

        // Structure and encoding errors.
        for broken in [
            "",
            "a.b.c.d",
            "a.b.c.d.e.f",
            "!!.a.b.c.d",
            &jwe.replace('.', ".="),
        ] {
            assert!(
                matches!(
                    private.decrypt(public.key_id(), broken),
                    Err(Error::Malformed(_))
                ),
                "{broken}"
            );
        }
    }
}
