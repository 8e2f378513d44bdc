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
}

/// What a CRL says about itself, once its signature checked out.
struct CheckedCrl {
    number: Vec<u8>,
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
            }),
        };
        let checked = reloadable.check(&crl, None)?;
        let verifier = reloadable.build(crl)?;
        reloadable.root_hints = verifier.root_hint_subjects().to_vec();
        reloadable.current.store(Arc::new(CurrentCrl {
            verifier,
            number: checked.number,
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
        let verifier = self.inner.build(crl)?;
        self.inner.current.store(Arc::new(CurrentCrl {
            verifier,
            number: checked.number,
        }));
        Ok(())
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
            return Err(TlsError::CrlRefused("older than the current CRL"));
        }
        Ok(CheckedCrl { number })
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

/// Serves `service` over TLS on `listener` until `shutdown` resolves, then lets open
/// connections finish for at most [`SHUTDOWN_GRACE`].
///
/// Each connection is handshaken on its own task within [`TLS_HANDSHAKE_TIMEOUT`]; a
/// refused handshake closes it. Every request carries the peer's `SocketAddr` and, when it
/// presented a certificate, its [`PeerIdentity`] as extensions (in axum:
/// `Extension<SocketAddr>`, `Option<Extension<PeerIdentity>>`). A certificate that verifies
/// but names its holder in a way this network does not issue closes the connection.
pub async fn serve<S, B>(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    service: S,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()>
where
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
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
            let per_request = hyper::service::service_fn(move |mut request| {
                request.extensions_mut().insert(peer);
                if let Some(identity) = &identity {
                    request.extensions_mut().insert(identity.clone());
                }
                service.clone().oneshot(request)
            });
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
