//! The network's certificate authority: its trust anchor, the certificates it issues to
//! organisations and to the network's own services, and its revocation list.
//!
//! What it is: a CA kept in one directory —
//! - `ca.pem`: the self-signed CA certificate (the trust anchor every party configures);
//! - `ca-key.pem`: its private key (PKCS#8, mode 0600, written atomically, refused when
//!   readable by others);
//! - `ledger.json`: the certificates issued, the ones revoked and the last CRL number — the
//!   revocation list the CRLs are made from;
//! - `ledger.lock`: serialises changes to the ledger between processes.
//!
//! Keys are ECDSA P-256 (fast to verify in a handshake), signed with SHA-256, made by
//! `rcgen` on `aws-lc-rs`. Certificates carry the URA as [`crate::certificate`] describes
//! and the extended key usages `serverAuth` and `clientAuth`, so one certificate serves a
//! node both as TLS server and as client of other nodes and the hub.
//! What it is not: a TLS configuration ([`crate::tls`]), an online service (the hub publishes
//! the CRL this makes), or a hardware-backed key store.

use crate::certificate::{self, HostName, NameError, SUBJECT_ALT_NAME_OID};
use rcgen::{
    CertificateParams, CertificateRevocationListParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, RevokedCertParams, SerialNumber,
};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

/// The CA certificate's file in the CA directory (and in an organisation's credentials).
pub const CA_CERTIFICATE_FILE: &str = "ca.pem";
/// The CA private key's file in the CA directory.
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// The issued and revoked certificates, in the CA directory.
pub const LEDGER_FILE: &str = "ledger.json";
/// The lock file serialising ledger changes, in the CA directory.
const LEDGER_LOCK_FILE: &str = "ledger.lock";
/// An organisation's certificate file in its credentials directory.
pub const CERTIFICATE_FILE: &str = "cert.pem";
/// An organisation's private key file in its credentials directory.
pub const KEY_FILE: &str = "key.pem";
/// File name of a revocation list written beside issued credentials, so that a party can
/// start verifying peers before it reaches the hub that publishes fresh ones.
pub const CRL_FILE: &str = "crl.pem";
/// Mode of private key files (and of the CA directory).
pub const PRIVATE_MODE: u32 = 0o600;
/// Mode of certificate and ledger files.
const PUBLIC_MODE: u32 = 0o644;
/// Mode of a directory made for a CA or for credentials.
const PRIVATE_DIR_MODE: u32 = 0o700;

/// How long the CA certificate is valid, in days.
pub const CA_VALIDITY_DAYS: i64 = 10 * 365;
/// How long an issued certificate is valid unless the caller says otherwise, in days.
pub const DEFAULT_CERTIFICATE_VALIDITY_DAYS: i64 = 365;
/// Longest validity of an issued certificate, in days.
pub const MAX_CERTIFICATE_VALIDITY_DAYS: i64 = 825;
/// How long a CRL is valid (its next-update), in hours. Verifiers refuse every client once
/// their CRL is past it, so the hub re-signs well before.
pub const CRL_VALIDITY_HOURS: i64 = 7 * 24;
/// How far back a certificate's or a CRL's start is dated, in minutes: a peer whose clock
/// is a little behind must not refuse a certificate issued a moment ago.
pub const BACKDATE_MINUTES: i64 = 5;
/// Random bytes in a certificate serial number (RFC 5280: at most 20 octets).
pub const SERIAL_BYTES: usize = 16;

/// Why a CA operation failed. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file of the CA failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// `init` on a directory that already holds a CA.
    #[error("{} already holds a CA", .0.display())]
    AlreadyInitialised(PathBuf),
    /// The CA's key file may be read by others than its owner.
    #[error("{} may be read by others (mode {mode:o}); it must be 0600", path.display())]
    KeyReadableByOthers {
        /// The key file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// A file of the CA is not what it should be.
    #[error("{}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A name, URA or host given for a certificate.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A validity that ends before it starts, or lasts longer than allowed.
    #[error(
        "a certificate's validity must end after it starts and last at most {MAX_CERTIFICATE_VALIDITY_DAYS} days"
    )]
    InvalidValidity,
    /// A certificate of a service names no host.
    #[error("a server certificate names at least one host")]
    NoHost,
    /// Not a serial number in hexadecimal.
    #[error("{0:?} is not a serial number in hexadecimal")]
    InvalidSerial(String),
    /// A serial number this CA did not issue.
    #[error("this CA issued no certificate with serial number {0}")]
    UnknownSerial(String),
    /// A certificate not issued by this CA.
    #[error("the certificate was not issued by this CA")]
    ForeignCertificate,
    /// The system's random generator failed.
    #[error("the system random generator failed")]
    Random,
    /// Making or signing a certificate or CRL failed.
    #[error("signing failed: {0}")]
    Signing(#[from] rcgen::Error),
}

/// When an issued certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// The first moment it is valid.
    pub not_before: OffsetDateTime,
    /// The last moment it is valid.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// Valid from a few minutes ago ([`BACKDATE_MINUTES`]) for `days` days.
    pub fn days(days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::minutes(BACKDATE_MINUTES),
            not_after: now + Duration::days(days),
        }
    }

    fn check(&self) -> Result<(), PkiError> {
        let length = self.not_after - self.not_before;
        if length <= Duration::ZERO || length > Duration::days(MAX_CERTIFICATE_VALIDITY_DAYS) {
            return Err(PkiError::InvalidValidity);
        }
        Ok(())
    }
}

impl Default for Validity {
    fn default() -> Self {
        Validity::days(DEFAULT_CERTIFICATE_VALIDITY_DAYS)
    }
}

/// A certificate the CA issued, with its private key. `Debug` leaves the key out; the key
/// is wiped from memory when this is dropped.
pub struct IssuedCertificate {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// The certificate, DER.
    pub certificate_der: CertificateDer<'static>,
    /// The private key, PKCS#8 PEM.
    pub key_pem: Zeroizing<String>,
    /// The serial number, lowercase hexadecimal.
    pub serial: String,
    /// The last moment the certificate is valid.
    pub not_after: OffsetDateTime,
}

impl std::fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .field("key_pem", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl IssuedCertificate {
    /// Writes `cert.pem`, `key.pem` (mode 0600) and the CA's `ca.pem` into `dir` (made
    /// mode 0700 when missing): what [`crate::tls::Credentials::load`] reads. Refuses to
    /// overwrite an existing key.
    pub fn write(&self, dir: &Path, ca_certificate_pem: &str) -> Result<(), PkiError> {
        create_private_dir(dir)?;
        write_atomically(
            &dir.join(KEY_FILE),
            self.key_pem.as_bytes(),
            PRIVATE_MODE,
            false,
        )?;
        write_atomically(
            &dir.join(CERTIFICATE_FILE),
            self.certificate_pem.as_bytes(),
            PUBLIC_MODE,
            true,
        )?;
        write_atomically(
            &dir.join(CA_CERTIFICATE_FILE),
            ca_certificate_pem.as_bytes(),
            PUBLIC_MODE,
            true,
        )
    }
}

/// A certificate revocation list signed by the CA.
#[derive(Debug, Clone)]
pub struct Crl {
    /// DER, as verifiers take it.
    pub der: CertificateRevocationListDer<'static>,
    /// PEM, as it is published and stored.
    pub pem: String,
    /// Its CRL number (increases with every CRL the CA signs).
    pub number: u64,
    /// When the next one is due; verifiers refuse clients after this.
    pub next_update: OffsetDateTime,
}

/// A revoked certificate in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Serial number, lowercase hexadecimal.
    pub serial: String,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
}

/// The network's CA, opened from its directory.
pub struct NetworkCa {
    dir: PathBuf,
    certificate_pem: String,
    certificate_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for NetworkCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkCa")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl NetworkCa {
    /// Creates a CA in `dir` (made mode 0700 when missing): a new key and a self-signed
    /// certificate with subject `CN=<name>, O=zorgnet`. Refuses a directory that already
    /// holds a CA.
    pub fn init(dir: &Path, name: &str) -> Result<NetworkCa, PkiError> {
        certificate::check_name(name)?;
        create_private_dir(dir)?;
        if dir.join(CA_CERTIFICATE_FILE).exists() || dir.join(CA_KEY_FILE).exists() {
            return Err(PkiError::AlreadyInitialised(dir.to_path_buf()));
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "zorgnet");
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?);
        let validity = Validity::days(CA_VALIDITY_DAYS);
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let certificate = params.self_signed(&key)?;
        let key_pem = Zeroizing::new(key.serialize_pem());
        // The key first, never overwriting: two `init`s racing leave one CA, not a mix.
        write_atomically(
            &dir.join(CA_KEY_FILE),
            key_pem.as_bytes(),
            PRIVATE_MODE,
            false,
        )?;
        write_atomically(
            &dir.join(CA_CERTIFICATE_FILE),
            certificate.pem().as_bytes(),
            PUBLIC_MODE,
            false,
        )?;
        let ledger = Ledger::default();
        ledger.save(dir)?;
        NetworkCa::open(dir)
    }

    /// Opens the CA in `dir`. Refuses a key file readable by others, and a key that does
    /// not belong to the certificate.
    pub fn open(dir: &Path) -> Result<NetworkCa, PkiError> {
        let key_path = dir.join(CA_KEY_FILE);
        let mode = fs::metadata(&key_path)
            .map_err(|source| io_error("read", &key_path, source))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(PkiError::KeyReadableByOthers {
                path: key_path,
                mode: mode & 0o777,
            });
        }
        let key_pem = Zeroizing::new(
            fs::read_to_string(&key_path).map_err(|source| io_error("read", &key_path, source))?,
        );
        let key = KeyPair::from_pem(&key_pem).map_err(|_| corrupt(&key_path, "not a PEM key"))?;
        let certificate_path = dir.join(CA_CERTIFICATE_FILE);
        let certificate_pem = fs::read_to_string(&certificate_path)
            .map_err(|source| io_error("read", &certificate_path, source))?;
        let certificate_der = crate::tls::read_certificates(certificate_pem.as_bytes())
            .ok()
            .and_then(|certificates| certificates.into_iter().next())
            .ok_or_else(|| corrupt(&certificate_path, "no PEM certificate"))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&certificate_der)
            .map_err(|_| corrupt(&certificate_path, "not an X.509 certificate"))?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(corrupt(
                &key_path,
                "the key does not belong to the CA certificate",
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&certificate_der, key)
            .map_err(|_| corrupt(&certificate_path, "not a CA certificate"))?;
        Ok(NetworkCa {
            dir: dir.to_path_buf(),
            certificate_pem,
            certificate_der,
            issuer,
        })
    }

    /// The CA certificate, PEM: the trust anchor.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The CA certificate, DER.
    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.certificate_der
    }

    /// Issues an organisation's certificate and key: the URA in the subject alternative
    /// name (see [`crate::certificate`]), `hosts` as its DNS names and IP addresses (may be
    /// empty for a certificate used only as a client).
    pub fn issue_organisation(
        &self,
        ura: &str,
        name: &str,
        hosts: &[HostName],
        validity: Validity,
    ) -> Result<IssuedCertificate, PkiError> {
        if !certificate::is_ura(ura) {
            return Err(NameError::InvalidUra.into());
        }
        self.issue(Some(ura), name, hosts, validity)
    }

    /// Issues a certificate for one of the network's own services (the hub): no URA, at
    /// least one host.
    pub fn issue_server(
        &self,
        name: &str,
        hosts: &[HostName],
        validity: Validity,
    ) -> Result<IssuedCertificate, PkiError> {
        if hosts.is_empty() {
            return Err(PkiError::NoHost);
        }
        self.issue(None, name, hosts, validity)
    }

    fn issue(
        &self,
        ura: Option<&str>,
        name: &str,
        hosts: &[HostName],
        validity: Validity,
    ) -> Result<IssuedCertificate, PkiError> {
        certificate::check_name(name)?;
        validity.check()?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let serial = random_serial()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CountryName, "NL");
        params
            .distinguished_name
            .push(DnType::OrganizationName, name);
        params.distinguished_name.push(DnType::CommonName, name);
        params.serial_number = Some(serial.clone());
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.custom_extensions = vec![CustomExtension::from_oid_content(
            SUBJECT_ALT_NAME_OID,
            certificate::subject_alt_name_der(ura, hosts),
        )];
        let certificate = params.signed_by(&key, &self.issuer)?;
        let serial = certificate::serial_hex(serial.as_ref());
        self.change_ledger(|ledger| {
            ledger.issued.push(IssuedEntry {
                serial: serial.clone(),
                ura: ura.map(str::to_string),
                name: name.to_string(),
                not_after: validity.not_after.unix_timestamp(),
            });
            Ok(())
        })?;
        Ok(IssuedCertificate {
            certificate_pem: certificate.pem(),
            certificate_der: certificate.der().clone(),
            key_pem: Zeroizing::new(key.serialize_pem()),
            serial,
            not_after: validity.not_after,
        })
    }

    /// Revokes the certificate with this serial number (hexadecimal; colons and case are
    /// ignored). Returns `false` when it was revoked already. The next [`NetworkCa::crl`]
    /// lists it.
    pub fn revoke(&self, serial: &str) -> Result<bool, PkiError> {
        let serial = normalise_serial(serial)?;
        self.change_ledger(|ledger| {
            if !ledger.issued.iter().any(|entry| entry.serial == serial) {
                return Err(PkiError::UnknownSerial(serial.clone()));
            }
            if ledger.revoked.iter().any(|entry| entry.serial == serial) {
                return Ok(false);
            }
            ledger.revoked.push(RevokedEntry {
                serial: serial.clone(),
                revoked_at: OffsetDateTime::now_utc().unix_timestamp(),
            });
            Ok(true)
        })
    }

    /// Revokes the certificate given as PEM or DER, which must be one this CA issued.
    pub fn revoke_certificate(&self, certificate: &[u8]) -> Result<bool, PkiError> {
        let der = crate::tls::read_certificates(certificate)
            .ok()
            .and_then(|certificates| certificates.into_iter().next())
            .map(|der| der.to_vec())
            .unwrap_or_else(|| certificate.to_vec());
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|_| PkiError::Name(NameError::Unparsable))?;
        let (_, ca) = x509_parser::parse_x509_certificate(&self.certificate_der)
            .map_err(|_| PkiError::ForeignCertificate)?;
        if parsed.issuer() != ca.subject()
            || parsed.verify_signature(Some(ca.public_key())).is_err()
        {
            return Err(PkiError::ForeignCertificate);
        }
        self.revoke(&certificate::serial_hex(parsed.raw_serial()))
    }

    /// The revoked certificates, oldest first.
    pub fn revocations(&self) -> Result<Vec<Revocation>, PkiError> {
        Ok(Ledger::load(&self.dir)?
            .revoked
            .into_iter()
            .map(|entry| Revocation {
                serial: entry.serial,
                revoked_at: OffsetDateTime::from_unix_timestamp(entry.revoked_at)
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            })
            .collect())
    }

    /// Signs a new CRL of every revoked certificate, valid for [`CRL_VALIDITY_HOURS`], with
    /// the next CRL number.
    pub fn crl(&self) -> Result<Crl, PkiError> {
        let (number, revoked) = self.change_ledger(|ledger| {
            ledger.crl_number += 1;
            Ok((ledger.crl_number, ledger.revoked.clone()))
        })?;
        let now = OffsetDateTime::now_utc();
        let next_update = now + Duration::hours(CRL_VALIDITY_HOURS);
        let mut revoked_certs = Vec::with_capacity(revoked.len());
        for entry in revoked {
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial_bytes(&entry.serial)?),
                revocation_time: OffsetDateTime::from_unix_timestamp(entry.revoked_at)
                    .map_err(|_| corrupt(&self.dir.join(LEDGER_FILE), "revocation time"))?,
                reason_code: None,
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(BACKDATE_MINUTES),
            next_update,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer)?;
        Ok(Crl {
            pem: crl.pem()?,
            der: crl.der().clone(),
            number,
            next_update,
        })
    }

    /// Runs `change` on the ledger under the ledger lock and saves it when `change`
    /// succeeds.
    fn change_ledger<T>(
        &self,
        change: impl FnOnce(&mut Ledger) -> Result<T, PkiError>,
    ) -> Result<T, PkiError> {
        let lock_path = self.dir.join(LEDGER_LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(PUBLIC_MODE)
            .open(&lock_path)
            .map_err(|source| io_error("open", &lock_path, source))?;
        lock.lock()
            .map_err(|source| io_error("lock", &lock_path, source))?;
        let mut ledger = Ledger::load(&self.dir)?;
        let result = change(&mut ledger)?;
        ledger.save(&self.dir)?;
        Ok(result)
    }
}

/// What the CA issued and revoked.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ledger {
    issued: Vec<IssuedEntry>,
    revoked: Vec<RevokedEntry>,
    crl_number: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuedEntry {
    serial: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ura: Option<String>,
    name: String,
    /// Unix seconds.
    not_after: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokedEntry {
    serial: String,
    /// Unix seconds.
    revoked_at: i64,
}

impl Ledger {
    fn load(dir: &Path) -> Result<Ledger, PkiError> {
        let path = dir.join(LEDGER_FILE);
        let text = fs::read(&path).map_err(|source| io_error("read", &path, source))?;
        serde_json::from_slice(&text).map_err(|e| corrupt(&path, &e.to_string()))
    }

    fn save(&self, dir: &Path) -> Result<(), PkiError> {
        let mut text = serde_json::to_vec_pretty(self).unwrap_or_default();
        text.push(b'\n');
        write_atomically(&dir.join(LEDGER_FILE), &text, PUBLIC_MODE, true)
    }
}

/// A random positive serial number of [`SERIAL_BYTES`] bytes whose first byte is not zero
/// (so its hexadecimal form is the same read back from any certificate).
/// Drawn from aws-lc-rs's system random generator, the one the keys come from.
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; SERIAL_BYTES];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| PkiError::Random)?;
    bytes[0] = (bytes[0] & 0x7f).max(1);
    Ok(SerialNumber::from_slice(&bytes))
}

/// A serial number given by a person: hexadecimal, maybe with colons, any case.
fn normalise_serial(serial: &str) -> Result<String, PkiError> {
    let bytes = serial_bytes(&serial.replace(':', ""))
        .map_err(|_| PkiError::InvalidSerial(serial.to_string()))?;
    Ok(certificate::serial_hex(&bytes))
}

fn serial_bytes(hex: &str) -> Result<Vec<u8>, PkiError> {
    let invalid = || PkiError::InvalidSerial(hex.to_string());
    if hex.is_empty() || hex.len() > 2 * 20 + 2 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid());
    }
    let padded = if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex.to_string()
    };
    (0..padded.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&padded[i..i + 2], 16).map_err(|_| invalid()))
        .collect()
}

fn create_private_dir(dir: &Path) -> Result<(), PkiError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
        .map_err(|source| io_error("create", dir, source))
}

/// Writes a file through a temporary file in the same directory and a rename, so a reader
/// sees the old content or the new, never a part; the temporary file has `mode` from its
/// creation on. With `overwrite` false an existing file is an error.
fn write_atomically(
    path: &Path,
    contents: &[u8],
    mode: u32,
    overwrite: bool,
) -> Result<(), PkiError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::Builder::new()
        .prefix(".zorgnet-")
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(|source| io_error("create a file in", dir, source))?;
    file.write_all(contents)
        .and_then(|()| file.as_file().sync_all())
        .map_err(|source| io_error("write", path, source))?;
    let persisted = if overwrite {
        file.persist(path)
    } else {
        file.persist_noclobber(path)
    };
    persisted.map_err(|e| io_error("write", path, e.error))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| io_error("sync", dir, source))
}

fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> PkiError {
    PkiError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, reason: &str) -> PkiError {
    PkiError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificate::PeerIdentity;

    fn hosts() -> Vec<HostName> {
        vec!["localhost".parse().unwrap(), "127.0.0.1".parse().unwrap()]
    }

    #[test]
    fn an_organisation_certificate_names_its_ura_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let ca = NetworkCa::init(dir.path(), "Test network CA").unwrap();
        let issued = ca
            .issue_organisation(
                "12345678",
                "Huisartsenpraktijk De Linde",
                &hosts(),
                Validity::default(),
            )
            .unwrap();
        let identity = PeerIdentity::from_certificate(&issued.certificate_der).unwrap();
        assert_eq!(identity.ura.as_deref(), Some("12345678"));
        assert_eq!(identity.name, "Huisartsenpraktijk De Linde");
        assert_eq!(identity.serial, issued.serial);
        assert_eq!(identity.serial.len(), 2 * SERIAL_BYTES);
        assert_eq!(identity.thumbprint.len(), 43);
        let (_, parsed) = x509_parser::parse_x509_certificate(&issued.certificate_der).unwrap();
        let eku = parsed.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(
            parsed
                .verify_signature(Some(
                    x509_parser::parse_x509_certificate(ca.certificate_der())
                        .unwrap()
                        .1
                        .public_key()
                ))
                .is_ok()
        );
    }

    #[test]
    fn the_ca_key_is_private_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let ca = NetworkCa::init(&dir.path().join("ca"), "Test network CA").unwrap();
        let key_path = dir.path().join("ca").join(CA_KEY_FILE);
        let mode = fs::metadata(&key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, PRIVATE_MODE);
        let key = fs::read_to_string(&key_path).unwrap();
        let printed = format!("{ca:?}");
        let key_body = key.lines().nth(1).unwrap();
        assert!(!printed.contains(key_body));
        let issued = ca
            .issue_organisation("12345678", "X", &[], Validity::default())
            .unwrap();
        let printed = format!("{issued:?}");
        assert!(!printed.contains(issued.key_pem.lines().nth(1).unwrap()));
        assert!(printed.contains("redacted"));

        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o644)).unwrap();
        let refused = NetworkCa::open(&dir.path().join("ca")).unwrap_err();
        assert!(matches!(refused, PkiError::KeyReadableByOthers { .. }));
        assert!(!refused.to_string().contains(key_body));
    }

    #[test]
    fn init_refuses_an_existing_ca_and_open_finds_it() {
        let dir = tempfile::tempdir().unwrap();
        let ca = NetworkCa::init(dir.path(), "Test network CA").unwrap();
        assert!(matches!(
            NetworkCa::init(dir.path(), "Another"),
            Err(PkiError::AlreadyInitialised(_))
        ));
        let opened = NetworkCa::open(dir.path()).unwrap();
        assert_eq!(opened.certificate_pem(), ca.certificate_pem());
    }

    #[test]
    fn bad_input_is_refused_before_anything_is_issued() {
        let dir = tempfile::tempdir().unwrap();
        let ca = NetworkCa::init(dir.path(), "Test network CA").unwrap();
        let ok = Validity::default();
        assert!(matches!(
            ca.issue_organisation("1234567", "X", &[], ok),
            Err(PkiError::Name(NameError::InvalidUra))
        ));
        assert!(matches!(
            ca.issue_organisation("12345678", "", &[], ok),
            Err(PkiError::Name(NameError::InvalidName))
        ));
        assert!(matches!(
            ca.issue_organisation("12345678", "X", &[], Validity::days(10_000)),
            Err(PkiError::InvalidValidity)
        ));
        let backwards = Validity {
            not_before: ok.not_after,
            not_after: ok.not_before,
        };
        assert!(matches!(
            ca.issue_organisation("12345678", "X", &[], backwards),
            Err(PkiError::InvalidValidity)
        ));
        assert!(matches!(
            ca.issue_server("hub", &[], ok),
            Err(PkiError::NoHost)
        ));
        assert!(Ledger::load(dir.path()).unwrap().issued.is_empty());
    }

    #[test]
    fn a_service_certificate_names_no_organisation() {
        let dir = tempfile::tempdir().unwrap();
        let ca = NetworkCa::init(dir.path(), "Test network CA").unwrap();
        let issued = ca
            .issue_server("zorgnet hub", &hosts(), Validity::default())
            .unwrap();
        let identity = PeerIdentity::from_certificate(&issued.certificate_der).unwrap();
        assert_eq!(identity.ura, None);
        assert_eq!(identity.name, "zorgnet hub");
    }

    #[test]
    fn revocations_reach_the_next_crl() {
        let dir = tempfile::tempdir().unwrap();
        let ca = NetworkCa::init(dir.path(), "Test network CA").unwrap();
        let first = ca
            .issue_organisation("12345678", "A", &[], Validity::default())
            .unwrap();
        let second = ca
            .issue_organisation("87654321", "B", &[], Validity::default())
            .unwrap();
        let empty = ca.crl().unwrap();
        assert!(ca.revoke(&first.serial.to_uppercase()).unwrap());
        assert!(!ca.revoke(&first.serial).unwrap(), "revoked once");
        assert!(
            ca.revoke_certificate(second.certificate_pem.as_bytes())
                .unwrap()
        );
        assert!(matches!(ca.revoke("0102"), Err(PkiError::UnknownSerial(_))));
        assert!(matches!(ca.revoke("xyz"), Err(PkiError::InvalidSerial(_))));
        let crl = ca.crl().unwrap();
        assert!(crl.number > empty.number);
        let (_, parsed) = x509_parser::parse_x509_crl(&crl.der).unwrap();
        let listed: Vec<String> = parsed
            .iter_revoked_certificates()
            .map(|revoked| certificate::serial_hex(revoked.raw_serial()))
            .collect();
        assert_eq!(listed, [first.serial.clone(), second.serial.clone()]);
        assert!(parsed.next_update().is_some());
        let (_, ca_parsed) = x509_parser::parse_x509_certificate(ca.certificate_der()).unwrap();
        parsed.verify_signature(ca_parsed.public_key()).unwrap();
        assert_eq!(ca.revocations().unwrap().len(), 2);
    }

    #[test]
    fn a_certificate_of_another_ca_is_not_revoked_here() {
        let dir = tempfile::tempdir().unwrap();
        let ca = NetworkCa::init(&dir.path().join("a"), "A").unwrap();
        let other = NetworkCa::init(&dir.path().join("b"), "B").unwrap();
        let foreign = other
            .issue_organisation("12345678", "X", &[], Validity::default())
            .unwrap();
        assert!(matches!(
            ca.revoke_certificate(foreign.certificate_pem.as_bytes()),
            Err(PkiError::ForeignCertificate)
        ));
    }

    #[test]
    fn written_credentials_keep_the_key_private() {
        let dir = tempfile::tempdir().unwrap();
        let ca = NetworkCa::init(&dir.path().join("ca"), "Test network CA").unwrap();
        let issued = ca
            .issue_organisation("12345678", "X", &hosts(), Validity::default())
            .unwrap();
        let out = dir.path().join("org");
        issued.write(&out, ca.certificate_pem()).unwrap();
        let mode = fs::metadata(out.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, PRIVATE_MODE);
        assert!(
            issued.write(&out, ca.certificate_pem()).is_err(),
            "no overwrite"
        );
        assert_eq!(
            fs::read_to_string(out.join(CA_CERTIFICATE_FILE)).unwrap(),
            ca.certificate_pem()
        );
    }
}
