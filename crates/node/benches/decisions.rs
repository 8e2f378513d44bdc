//! Benchmark: a consent decision served from the node's cache, which must stay within
//! 5 µs (issue 15). The cache holds `MAX_CACHED_DECISIONS` answers, as a busy node's would.
//!
//! Run: `cargo bench -p zorgnet-node --bench decisions`

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};
use zorgnet_fhir::categories::DataCategory;
use zorgnet_node::access::{DecisionCache, DecisionKey, MAX_CACHED_DECISIONS, Verdict};
use zorgnet_trust::token::Purpose;

fn key(i: usize) -> DecisionKey {
    DecisionKey {
        patient: format!("01a24db4-73b6-755b-9590-{i:012}"),
        requester: "00000022".into(),
        role: Some("01.015".into()),
        category: DataCategory::ALL[i % DataCategory::ALL.len()],
        purpose: Purpose::Treatment,
    }
}

fn cached_decision(c: &mut Criterion) {
    let cache = DecisionCache::new(Duration::from_secs(3600));
    let now = Instant::now();
    for i in 0..MAX_CACHED_DECISIONS - 1 {
        let verdict = Verdict {
            permit: i % 3 != 0,
            reason: "treatment relation at the source".into(),
        };
        cache.put(key(i), verdict, now);
    }
    let asked = key(MAX_CACHED_DECISIONS / 2);
    c.bench_function("cached consent decision", |b| {
        b.iter(|| black_box(cache.get(black_box(&asked), now)))
    });
}

criterion_group!(benches, cached_decision);
criterion_main!(benches);
