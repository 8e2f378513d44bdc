//! Per-operation cost of the pseudonym exchange: holder blind, PRS evaluate+encrypt
//! (ECDH-ES on X25519 and P-256, RSA-OAEP-256), recipient decrypt+unblind+hash, the full
//! round trip, and PRS evaluation and the round trip on two threads (the throughput of
//! this 2-core machine). voprf offers batch evaluation only in its VOPRF and POPRF modes,
//! where batching saves proof work; in OPRF mode every element costs one scalar
//! multiplication either way, so there is no batch variant to measure.
//!
//! Run: `cargo bench -p zorgnet-pseudonym --bench prs -- --quick`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use zorgnet_pseudonym::{
    Bsn, ExchangeToken, KeyAlgorithm, PersonalId, Prs, PrsKeys, PrsRecipient, RecipientId,
    RecipientKeys, blind,
};

const NOW: u64 = 1_800_000_000;
const THREADS: u64 = 2;

fn person() -> PersonalId {
    PersonalId::Bsn(Bsn::parse("123456782").expect("valid BSN"))
}

fn setup(prs: &Prs, algorithm: KeyAlgorithm) -> (RecipientKeys, PrsRecipient) {
    let keys = RecipientKeys::generate(RecipientId::referral_index(), algorithm).expect("keys");
    let handle = prs
        .recipient(RecipientId::referral_index(), keys.public_key().clone())
        .expect("recipient");
    (keys, handle)
}

fn round_trip(person: &PersonalId, handle: &PrsRecipient, keys: &RecipientKeys) {
    let (factor, blinded) = blind(person).expect("blind");
    let jwe = handle.evaluate(&blinded, NOW).expect("evaluate");
    let token =
        ExchangeToken::from_json(&ExchangeToken::new(jwe, factor).to_json()).expect("token");
    black_box(keys.open(&token, NOW).expect("open"));
}

/// Runs `iters` operations spread over [`THREADS`] threads and returns the wall time.
fn on_threads(iters: u64, op: impl Fn() + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let share = iters / THREADS + u64::from(thread < iters % THREADS);
            let op = &op;
            scope.spawn(move || (0..share).for_each(|_| op()));
        }
    });
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let prs = Prs::new(PrsKeys::generate());
    let person = person();
    let (x25519_keys, x25519) = setup(&prs, KeyAlgorithm::X25519);
    let (p256_keys, p256) = setup(&prs, KeyAlgorithm::P256);
    let (rsa_keys, rsa) = setup(&prs, KeyAlgorithm::Rsa);
    let (factor, blinded) = blind(&person).expect("blind");

    c.bench_function("holder_blind", |b| {
        b.iter(|| black_box(blind(&person).expect("blind")))
    });

    for (name, handle) in [
        ("prs_evaluate_ecdh_es_x25519", &x25519),
        ("prs_evaluate_ecdh_es_p256", &p256),
        ("prs_evaluate_rsa_oaep_256_3072", &rsa),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| black_box(handle.evaluate(&blinded, NOW).expect("evaluate")))
        });
    }

    for (name, handle, keys) in [
        ("recipient_open_ecdh_es_x25519", &x25519, &x25519_keys),
        ("recipient_open_ecdh_es_p256", &p256, &p256_keys),
        ("recipient_open_rsa_oaep_256_3072", &rsa, &rsa_keys),
    ] {
        let token = ExchangeToken::new(
            handle.evaluate(&blinded, NOW).expect("evaluate"),
            factor.clone(),
        );
        c.bench_function(name, |b| {
            b.iter(|| black_box(keys.open(&token, NOW).expect("open")))
        });
    }

    c.bench_function("round_trip_ecdh_es_x25519", |b| {
        b.iter(|| round_trip(&person, &x25519, &x25519_keys))
    });

    c.bench_function("prs_evaluate_ecdh_es_x25519_2_threads", |b| {
        b.iter_custom(|iters| {
            on_threads(iters, || {
                black_box(x25519.evaluate(&blinded, NOW).expect("evaluate"));
            })
        })
    });
    c.bench_function("round_trip_ecdh_es_x25519_2_threads", |b| {
        b.iter_custom(|iters| on_threads(iters, || round_trip(&person, &x25519, &x25519_keys)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
