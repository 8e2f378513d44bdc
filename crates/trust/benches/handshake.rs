//! Server CPU per new mTLS connection: one full TLS 1.3 handshake with a client certificate
//! (ECDSA P-256, verified against the network CA and a CRL), driven in memory between a
//! rustls client and server so that only the server's own work is timed — what a node
//! spends on a new connection besides the kernel's TCP accept. With an empty CRL and with
//! one listing 1,000 revoked certificates. The target (issue 15) is ≤ 2 ms.
//!
//! Run: `cargo bench -p zorgnet-trust --bench handshake -- --quick`
//!
//! Measured 2026-12-07 on the 2-core development machine (dev profile, dependencies at
//! opt-level 2; `--profile dev`, as the disk had no room for a release build): median
//! 0.39 ms with an empty CRL and 0.38 ms with 1,000 revoked certificates while the machine
//! was quiet; 0.9 and 1.3 ms while other builds kept both cores busy (the timer then counts
//! time the server thread waits for a core too).

use criterion::{Criterion, criterion_group, criterion_main};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zorgnet_trust::pki::{NetworkCa, Validity};
use zorgnet_trust::tls::{ClientAuth, ClientVerifier, Credentials, client_config, server_config};

/// Revoked certificates in the larger CRL.
const REVOKED: usize = 1_000;

struct Setup {
    _dir: tempfile::TempDir,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

fn setup(revoked: usize) -> Setup {
    let dir = tempfile::tempdir().expect("temporary directory");
    let ca = NetworkCa::init(dir.path(), "Bench network CA").expect("CA");
    let credentials = |ura: &str, hosts: &[&str]| {
        let hosts: Vec<_> = hosts.iter().map(|h| h.parse().expect("host")).collect();
        let issued = ca
            .issue_organisation(ura, "Bench", &hosts, Validity::default())
            .expect("issue");
        Credentials::from_pem(
            issued.certificate_pem.as_bytes(),
            issued.key_pem.as_bytes(),
            ca.certificate_pem().as_bytes(),
        )
        .expect("credentials")
    };
    let server = credentials("11111111", &["localhost"]);
    let client = credentials("22222222", &[]);
    for i in 0..revoked {
        let issued = ca
            .issue_organisation(&format!("3{i:07}"), "Revoked", &[], Validity::default())
            .expect("issue");
        ca.revoke(&issued.serial).expect("revoke");
    }
    let verifier = ClientVerifier::new(
        ca.certificate_der(),
        ca.crl().expect("CRL").der,
        ClientAuth::Required,
    )
    .expect("verifier");
    Setup {
        _dir: dir,
        server: server_config(&server, &verifier).expect("server config"),
        client: Arc::new(client_config(&client).expect("client config")),
    }
}

/// Runs one full handshake in memory and returns the time spent in the server's calls.
fn handshake(setup: &Setup) -> Duration {
    let mut client = ClientConnection::new(
        setup.client.clone(),
        ServerName::try_from("localhost").expect("name"),
    )
    .expect("client");
    let started = Instant::now();
    let mut server = ServerConnection::new(setup.server.clone()).expect("server");
    let mut server_time = started.elapsed();
    let mut buffer = Vec::new();
    while client.is_handshaking() || server.is_handshaking() {
        buffer.clear();
        while client.wants_write() {
            client.write_tls(&mut buffer).expect("client write");
        }
        let started = Instant::now();
        let mut incoming = &buffer[..];
        while !incoming.is_empty() {
            server.read_tls(&mut incoming).expect("server read");
            server.process_new_packets().expect("server handshake");
        }
        let mut outgoing = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut outgoing).expect("server write");
        }
        server_time += started.elapsed();
        let mut incoming = &outgoing[..];
        while !incoming.is_empty() {
            client.read_tls(&mut incoming).expect("client read");
            client.process_new_packets().expect("client handshake");
        }
    }
    server
        .peer_certificates()
        .expect("client certificate verified");
    server_time
}

fn bench(c: &mut Criterion) {
    for (label, revoked) in [("empty_crl", 0), ("crl_1000_revoked", REVOKED)] {
        let setup = setup(revoked);
        c.bench_function(&format!("server_cpu_per_mtls_handshake_{label}"), |b| {
            b.iter_custom(|iterations| (0..iterations).map(|_| handshake(&setup)).sum())
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
