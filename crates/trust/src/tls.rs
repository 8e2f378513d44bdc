//! Mutual TLS inside the network: server and client configurations that trust only the
//! network's CA, a client-certificate verifier whose revocation list is replaced at run
//! time, and an accept loop that hands each request the verified peer's identity.
//!
//! What it is:
//! - [`Credentials`]: a party's certificate, key and the network's trust anchor, read from
//!   the directory `zorgnet ca issue` writes;
//! - [`ClientVerifier`]: `rustls`' `WebPkiClientVerifier` over the CA and the current CRL,
//!   kept behind an [`ArcSwap`] so [`ClientVerifier::replace_crl`] takes effect for the next
//!   handshake. A CRL is accepted only when the CA signed it, its next-update is ahead and
//!   its CRL number is not lower than the current one (no rollback to an older list); a CRL
//!   past its next-update refuses every client (fail closed);
//! - [`server_config`]: TLS 1.3 only, client certificates required or optional, no session
//!   resumption (a resumed session would skip the revocation check);
//! - [`client_config`]: the CA as the only root, no platform roots, the party's certificate
//!   as client certificate; for `reqwest::ClientBuilder::tls_backend_preconfigured`;
//! - [`serve`]: accept TCP → TLS handshake within [`TLS_HANDSHAKE_TIMEOUT`] → the peer's
//!   [`PeerIdentity`] and `SocketAddr` as request extensions → HTTP/1.1 or HTTP/2 with
//!   `hyper_util`'s auto builder, for any tower service (an axum `Router`), with graceful
//!   shutdown.
//!
//! What it is not: a policy. A verified identity says who the peer is, never what it may
//! do; the node's and the hub's access layers decide that. Clients do not check the
//! server's revocation yet.

pub use crate::certificate::PeerIdentity;
use crate::pki::{CA_CERTIFICATE_FILE, CERTIFICATE_FILE, KEY_FILE};
use arc_swap::ArcSwap;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

/// Longest a TLS handshake may take after the TCP connection is accepted.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest [`serve`] waits, after `shutdown`, for open connections to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Pause after a failed `accept` (out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// The application protocols offered, best first.
const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why TLS material or configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("read {}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// PEM text without the expected certificate, key or CRL.
    #[error("no {0} in the PEM text")]
    NoPem(&'static str),
    /// A CRL that is not the CA's, is expired, or is older than the current one.
    #[error("CRL refused: {0}")]
    CrlRefused(&'static str),
    /// A CRL with a lower number than the one in force: the current one stays (no
    /// rollback to an older list).
    #[error("CRL refused: older than the current CRL")]
    CrlNotNewer,
    /// The verifier could not be built from the CA and CRL.
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// rustls refused the configuration (a key not matching the certificate, say).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The one crypto provider: aws-lc-rs.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Every certificate in PEM text, in order.
pub fn read_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsError::NoPem("certificate"))?;
    if certificates.is_empty() {
        return Err(TlsError::NoPem("certificate"));
    }
    Ok(certificates)
}

/// The first CRL in PEM text.
pub fn read_crl(pem: &[u8]) -> Result<CertificateRevocationListDer<'static>, TlsError> {
    CertificateRevocationListDer::from_pem_slice(pem).map_err(|_| TlsError::NoPem("CRL"))
}

/// A party's TLS credentials: its certificate chain and key, and the network's trust
/// anchor. `Debug` leaves the key out.
pub struct Credentials {
    /// The party's certificate (first) and any intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// The network CA's certificate.
    pub trust_anchor: CertificateDer<'static>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("chain", &self.chain.len())
            .field("key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl Clone for Credentials {
    fn clone(&self) -> Self {
        Credentials {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            trust_anchor: self.trust_anchor.clone(),
        }
    }
}

impl Credentials {
    /// From PEM text: the certificate (chain), the private key, the CA certificate.
    pub fn from_pem(certificate: &[u8], key: &[u8], ca: &[u8]) -> Result<Self, TlsError> {
        Ok(Credentials {
            chain: read_certificates(certificate)?,
            key: PrivateKeyDer::from_pem_slice(key).map_err(|_| TlsError::NoPem("private key"))?,
            trust_anchor: read_certificates(ca)?.remove(0),
        })
    }

    /// From `cert.pem`, `key.pem` and `ca.pem` in `dir`, as `zorgnet ca issue` writes them.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| TlsError::Io { path, source })
        };
        let key = zeroize::Zeroizing::new(read(KEY_FILE)?);
        Credentials::from_pem(&read(CERTIFICATE_FILE)?, &key, &read(CA_CERTIFICATE_FILE)?)
    }

    /// This party's identity as its peers see it.
    pub fn identity(&self) -> Result<PeerIdentity, crate::certificate::NameError> {
        PeerIdentity::from_certificate(&self.chain[0])
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.trust_anchor.clone())?;
        Ok(Arc::new(roots))
    }
}

/// Whether a server asks for client certificates and refuses a connection without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every client presents a valid certificate, or the handshake fails.
    Required,
    /// A client may connect without a certificate (no [`PeerIdentity`] then); one that
    /// presents an invalid, expired or revoked certificate is still refused.
    Optional,
}

/// The client-certificate verifier of a server, with a replaceable CRL. Cheap to clone;
/// clones share the CRL.
#[derive(Debug, Clone)]
pub struct ClientVerifier {
    inner: Arc<ReloadableVerifier>,
}

#[derive(Debug)]
struct ReloadableVerifier {
    roots: Arc<RootCertStore>,
    /// The CA's subject, whose CRLs alone are accepted.
    ca_subject: Vec<u8>,
    /// The CA's public key (SubjectPublicKeyInfo DER), that must have signed each CRL.
    ca_public_key: Vec<u8>,
    mode: ClientAuth,
    /// Hints sent to clients: the CA's subject. Fixed, as the roots are.
    root_hints: Vec<DistinguishedName>,
    current: ArcSwap<CurrentCrl>,
}

#[derive(Debug)]
struct CurrentCrl {
    verifier: Arc<dyn ClientCertVerifier>,
    number: Vec<u8>,
    /// Serial numbers it revokes ([`crate::certificate::serial_hex`]), for connections
    /// that were verified before it came into force.
    revoked: std::collections::HashSet<String>,
    /// The CRL itself, DER, to pass on to others ([`ClientVerifier::crl_pem`]).
    der: Vec<u8>,
}

/// What a CRL says about itself, once its signature checked out.
struct CheckedCrl {
    number: Vec<u8>,
    revoked: std::collections::HashSet<String>,
}

impl ClientVerifier {
    /// A verifier trusting `trust_anchor` alone and refusing what `crl` revokes.
    pub fn new(
        trust_anchor: &CertificateDer<'static>,
        crl: CertificateRevocationListDer<'static>,
        mode: ClientAuth,
    ) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.add(trust_anchor.clone())?;
        let (_, ca) = x509_parser::parse_x509_certificate(trust_anchor)
            .map_err(|_| TlsError::NoPem("CA certificate"))?;
        let ca_subject = ca.subject().as_raw().to_vec();
        let ca_public_key = ca.public_key().raw.to_vec();
        let roots = Arc::new(roots);
        let mut reloadable = ReloadableVerifier {
            roots,
            ca_subject,
            ca_public_key,
            mode,
            root_hints: Vec::new(),
            current: ArcSwap::from_pointee(CurrentCrl {
                verifier: WebPkiClientVerifier::no_client_auth(),
                number: Vec::new(),
                revoked: std::collections::HashSet::new(),
                der: Vec::new(),
            }),
        };
        let checked = reloadable.check(&crl, None)?;
        let der = crl.to_vec();
        let verifier = reloadable.build(crl)?;
        reloadable.root_hints = verifier.root_hint_subjects().to_vec();
        reloadable.current.store(Arc::new(CurrentCrl {
            verifier,
            number: checked.number,
            revoked: checked.revoked,
            der,
        }));
        Ok(ClientVerifier {
            inner: Arc::new(reloadable),
        })
    }

    /// Replaces the CRL for every handshake from now on. Refuses (keeping the current one) a
    /// CRL the CA did not sign, one past its next-update, and one with a lower CRL number.
    pub fn replace_crl(&self, crl: CertificateRevocationListDer<'static>) -> Result<(), TlsError> {
        let current = self.inner.current.load_full();
        let checked = self.inner.check(&crl, Some(&current.number))?;
        let der = crl.to_vec();
        let verifier = self.inner.build(crl)?;
        self.inner.current.store(Arc::new(CurrentCrl {
            verifier,
            number: checked.number,
            revoked: checked.revoked,
            der,
        }));
        Ok(())
    }

    /// Whether the CRL in force revokes the certificate with this serial number (lowercase
    /// hexadecimal, as [`PeerIdentity::serial`]).
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.inner.current.load().revoked.contains(serial)
    }

    /// The CRL in force, PEM: what the hub publishes and a node keeps for its next start.
    pub fn crl_pem(&self) -> String {
        pem_encode("X509 CRL", &self.inner.current.load().der)
    }

    /// The verifier to put into a rustls `ServerConfig`.
    pub fn as_rustls(&self) -> Arc<dyn ClientCertVerifier> {
        self.inner.clone()
    }
}

impl ReloadableVerifier {
    fn check(
        &self,
        crl: &CertificateRevocationListDer<'_>,
        current_number: Option<&[u8]>,
    ) -> Result<CheckedCrl, TlsError> {
        let (rest, parsed) =
            x509_parser::parse_x509_crl(crl).map_err(|_| TlsError::CrlRefused("not a DER CRL"))?;
        if !rest.is_empty() {
            return Err(TlsError::CrlRefused("bytes after the CRL"));
        }
        if parsed.issuer().as_raw() != self.ca_subject.as_slice() {
            return Err(TlsError::CrlRefused("issued by another CA"));
        }
        let (_, ca_key) =
            <x509_parser::x509::SubjectPublicKeyInfo as x509_parser::prelude::FromDer<_>>::from_der(&self.ca_public_key)
                .map_err(|_| TlsError::CrlRefused("CA key"))?;
        parsed
            .verify_signature(&ca_key)
            .map_err(|_| TlsError::CrlRefused("not signed by the CA"))?;
        let next_update = parsed
            .next_update()
            .ok_or(TlsError::CrlRefused("no next-update"))?;
        if next_update.timestamp() <= time::OffsetDateTime::now_utc().unix_timestamp() {
            return Err(TlsError::CrlRefused("past its next-update"));
        }
        let number = parsed
            .crl_number()
            .ok_or(TlsError::CrlRefused("no CRL number"))?
            .to_bytes_be();
        if current_number
            .is_some_and(|current| compare_numbers(&number, current) == std::cmp::Ordering::Less)
        {
            return Err(TlsError::CrlNotNewer);
        }
        let revoked = parsed
            .iter_revoked_certificates()
            .map(|entry| crate::certificate::serial_hex(entry.raw_serial()))
            .collect();
        Ok(CheckedCrl { number, revoked })
    }

    fn build(
        &self,
        crl: CertificateRevocationListDer<'static>,
    ) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
        let builder = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .with_crls([crl])
            .enforce_revocation_expiration();
        let builder = match self.mode {
            ClientAuth::Required => builder,
            ClientAuth::Optional => builder.allow_unauthenticated(),
        };
        Ok(builder.build()?)
    }
}

/// Orders two unsigned big-endian numbers.
fn compare_numbers(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let trim = |n: &[u8]| {
        let start = n.iter().position(|&x| x != 0).unwrap_or(n.len());
        n[start..].to_vec()
    };
    let (a, b) = (trim(a), trim(b));
    a.len().cmp(&b.len()).then_with(|| a.cmp(&b))
}

impl ClientCertVerifier for ReloadableVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mode == ClientAuth::Required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.root_hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current
            .load()
            .verifier
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current.load().verifier.supported_verify_schemes()
    }
}

/// A server configuration: this party's certificate, clients verified by `clients`, TLS 1.3,
/// HTTP/2 and HTTP/1.1, and no session resumption, so every connection's certificate is
/// checked against the CRL current at its handshake.
pub fn server_config(
    credentials: &Credentials,
    clients: &ClientVerifier,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(clients.as_rustls())
        .with_single_cert(credentials.chain.clone(), credentials.key.clone_key())?;
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// A client configuration: the network's CA as the only root (no platform roots), this
/// party's certificate as client certificate, TLS 1.3, HTTP/2 and HTTP/1.1. For reqwest:
/// `reqwest::Client::builder().tls_backend_preconfigured(client_config(&credentials)?)`
/// (reqwest's `rustls` feature).
pub fn client_config(credentials: &Credentials) -> Result<ClientConfig, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(credentials.roots()?)
        .with_client_auth_cert(credentials.chain.clone(), credentials.key.clone_key())?;
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A client configuration for a party without a certificate of its own (the operator's
/// tools, an organisation's own systems talking to its node): the server must prove itself
/// against the network's CA, the client shows nothing and authenticates with a key or token.
pub fn anchor_only_client_config(
    trust_anchor: &CertificateDer<'static>,
) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(trust_anchor.clone())?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(Arc::new(roots))
        .with_no_client_auth();
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// PEM text of one DER object: base64 in lines of 64 characters between the labels.
fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// Where a party gets fresh revocation lists.
#[derive(Debug, Clone)]
pub enum CrlSource {
    /// A file the operator rewrites with `zorgnet ca crl --out` (the hub).
    File(std::path::PathBuf),
    /// The hub's `GET /trust/crl`, over a client that trusts the network's CA (a node).
    Hub {
        /// The client.
        client: reqwest::Client,
        /// The CRL's URL.
        url: String,
    },
}

/// Longest CRL accepted from a source, in bytes (a CRL of 100,000 revocations is about 4 MB).
pub const MAX_CRL_BYTES: usize = 8 * 1024 * 1024;

impl CrlSource {
    /// The source's current CRL, PEM.
    pub async fn fetch(&self) -> Result<Vec<u8>, CrlFetchError> {
        match self {
            CrlSource::File(path) => {
                let path = path.clone();
                let bytes = tokio::task::spawn_blocking(move || std::fs::read(path))
                    .await
                    .map_err(|e| CrlFetchError::Unavailable(e.to_string()))?
                    .map_err(|e| CrlFetchError::Unavailable(e.to_string()))?;
                if bytes.len() > MAX_CRL_BYTES {
                    return Err(CrlFetchError::TooLarge);
                }
                Ok(bytes)
            }
            CrlSource::Hub { client, url } => {
                let response = client
                    .get(url)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| CrlFetchError::Unavailable(e.without_url().to_string()))?;
                if response
                    .content_length()
                    .is_some_and(|n| n > MAX_CRL_BYTES as u64)
                {
                    return Err(CrlFetchError::TooLarge);
                }
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|e| CrlFetchError::Unavailable(e.without_url().to_string()))?;
                if bytes.len() > MAX_CRL_BYTES {
                    return Err(CrlFetchError::TooLarge);
                }
                Ok(bytes.to_vec())
            }
        }
    }
}

/// Why a fresh CRL could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CrlFetchError {
    /// The file or the hub could not be read.
    #[error("CRL source unavailable: {0}")]
    Unavailable(String),
    /// More than [`MAX_CRL_BYTES`].
    #[error("CRL larger than {MAX_CRL_BYTES} bytes")]
    TooLarge,
    /// The CRL was not PEM, or the verifier refused it.
    #[error(transparent)]
    Refused(#[from] TlsError),
}

impl ClientVerifier {
    /// Fetches a CRL from `source` and installs it ([`ClientVerifier::replace_crl`]'s
    /// checks apply; a list older than the one in force is left aside without complaint, as
    /// a party may have a newer one than its source); with `cache`, writes the installed CRL
    /// there (for the next start when the source is unreachable).
    pub async fn refresh_crl(
        &self,
        source: &CrlSource,
        cache: Option<&Path>,
    ) -> Result<(), CrlFetchError> {
        let pem = source.fetch().await?;
        match self.replace_crl(read_crl(&pem)?) {
            Err(TlsError::CrlNotNewer) => return Ok(()),
            other => other?,
        }
        if let Some(cache) = cache {
            let (cache, pem) = (cache.to_path_buf(), self.crl_pem());
            let written = tokio::task::spawn_blocking(move || {
                let partial = cache.with_extension("partial");
                std::fs::write(&partial, pem)?;
                std::fs::rename(&partial, &cache)
            })
            .await
            .map_err(|e| CrlFetchError::Unavailable(e.to_string()))?;
            if let Err(error) = written {
                tracing::warn!(%error, "could not keep the revocation list for the next start");
            }
        }
        Ok(())
    }

    /// Refreshes the CRL from `source` every `interval`, for ever; a failure is logged and
    /// counted, and the current CRL stays in force (until its next-update, after which every
    /// client is refused: fail closed).
    pub async fn keep_fresh(
        self,
        source: CrlSource,
        interval: Duration,
        cache: Option<std::path::PathBuf>,
    ) {
        loop {
            tokio::time::sleep(interval).await;
            match self.refresh_crl(&source, cache.as_deref()).await {
                Ok(()) => tracing::debug!("revocation list refreshed"),
                Err(error) => {
                    metrics::counter!("zorgnet_crl_refresh_failures_total").increment(1);
                    tracing::warn!(%error, "could not refresh the revocation list; keeping the current one");
                }
            }
        }
    }
}

/// Serves `service` over TLS on `listener` until `shutdown` resolves, then lets open
/// connections finish for at most [`SHUTDOWN_GRACE`].
///
/// With `revocations` (the verifier in `config`), every request is checked against the CRL
/// in force, not only the handshake: a request over a kept-alive connection whose client
/// certificate was revoked since gets a 401 OperationOutcome (and, over HTTP/1.1, the
/// connection is closed), so a revocation takes effect when the new CRL does.
///
/// Each connection is handshaken on its own task within [`TLS_HANDSHAKE_TIMEOUT`]; a
/// refused handshake closes it. Every request carries the peer's `SocketAddr` and, when it
/// presented a certificate, its [`PeerIdentity`] as extensions (in axum:
/// `Extension<SocketAddr>`, `Option<Extension<PeerIdentity>>`). A certificate that verifies
/// but names its holder in a way this network does not issue closes the connection.
pub async fn serve<S, B>(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    revocations: Option<ClientVerifier>,
    service: S,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()>
where
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let service = service.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let revocations = revocations.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let identity = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                Some(certificate) => match PeerIdentity::from_certificate(certificate) {
                    Ok(identity) => Some(identity),
                    Err(error) => {
                        tracing::warn!(%peer, %error, "peer certificate names no holder");
                        return;
                    }
                },
                None => None,
            };
            let per_request = hyper::service::service_fn(
                move |mut request: http::Request<Incoming>| {
                    let revoked = match (&identity, &revocations) {
                        (Some(identity), Some(revocations)) => {
                            revocations.is_revoked(&identity.serial)
                        }
                        _ => false,
                    };
                    let version = request.version();
                    request.extensions_mut().insert(peer);
                    if let Some(identity) = &identity {
                        request.extensions_mut().insert(identity.clone());
                    }
                    let service = service.clone();
                    async move {
                        if revoked {
                            tracing::info!(%peer, "refused a request over a revoked client certificate");
                            return Ok::<_, Infallible>(revoked_response(version));
                        }
                        let response = service.oneshot(request).await?;
                        Ok(response.map(Either::Left))
                    }
                },
            );
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), per_request)
                .into_owned();
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period");
    }
    Ok(())
}

/// The answer to a request over a connection whose client certificate was revoked after
/// its handshake.
fn revoked_response<B>(version: http::Version) -> http::Response<Either<B, Full<bytes::Bytes>>> {
    let outcome = r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"security","diagnostics":"the client certificate of this connection has been revoked"}]}"#;
    let mut response = http::Response::new(Either::Right(Full::new(bytes::Bytes::from_static(
        outcome.as_bytes(),
    ))));
    *response.status_mut() = http::StatusCode::UNAUTHORIZED;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/fhir+json"),
    );
    if version <= http::Version::HTTP_11 {
        headers.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crl_numbers_compare_as_numbers() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_numbers(&[0, 2], &[1]), Greater);
        assert_eq!(compare_numbers(&[1, 0], &[0xff]), Greater);
        assert_eq!(compare_numbers(&[], &[0]), Equal);
        assert_eq!(compare_numbers(&[3], &[0, 0, 4]), Less);
    }
}
