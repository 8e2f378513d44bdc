//! Membership tests for collections in near-linear time: items are bucketed by a hash that
//! equal items share, and compared with FHIRPath equality only within a bucket. Keeps `|`,
//! `distinct()`, `intersect()`, `exclude()` and `repeat()` linear on large documents.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::Value;

use crate::eval::items_equal;
use crate::item::{Item, Prim};

/// A set of indices into a pool of items.
#[derive(Default)]
pub(crate) struct Seen {
    buckets: HashMap<u64, Vec<usize>>,
    /// Nodes compare by identity (their place in the document), not by value.
    identity: bool,
}

impl Seen {
    /// A set comparing with FHIRPath `=`.
    pub(crate) fn by_value() -> Self {
        Seen::default()
    }

    /// A set comparing nodes by identity and other items with `=`.
    pub(crate) fn by_identity() -> Self {
        Seen {
            buckets: HashMap::new(),
            identity: true,
        }
    }

    /// A set holding all of `pool`.
    pub(crate) fn of(pool: &[Item<'_>]) -> Self {
        let mut seen = Seen::by_value();
        for (i, item) in pool.iter().enumerate() {
            seen.insert(i, item);
        }
        seen
    }

    pub(crate) fn insert(&mut self, index: usize, item: &Item<'_>) {
        let key = self.key(item);
        self.buckets.entry(key).or_default().push(index);
    }

    pub(crate) fn contains(&self, pool: &[Item<'_>], item: &Item<'_>) -> bool {
        let Some(bucket) = self.buckets.get(&self.key(item)) else {
            return false;
        };
        bucket.iter().any(|&i| {
            pool.get(i)
                .is_some_and(|candidate| self.same(candidate, item))
        })
    }

    fn same(&self, a: &Item<'_>, b: &Item<'_>) -> bool {
        if self.identity
            && let (Item::Node(x), Item::Node(y)) = (a, b)
        {
            let same = |p: Option<&Value>, q: Option<&Value>| match (p, q) {
                (Some(p), Some(q)) => std::ptr::eq(p, q),
                (None, None) => true,
                _ => false,
            };
            return same(x.value, y.value) && same(x.extension, y.extension);
        }
        items_equal(a, b) == Some(true)
    }

    fn key(&self, item: &Item<'_>) -> u64 {
        let mut hasher = DefaultHasher::new();
        match item {
            Item::Node(node) if self.identity => {
                node.value.map(std::ptr::from_ref).hash(&mut hasher);
                node.extension.map(std::ptr::from_ref).hash(&mut hasher);
            }
            Item::TypeInfo(info) => info.name.hash(&mut hasher),
            _ => match item.prim() {
                Some(Prim::Boolean(b)) => ("b", b).hash(&mut hasher),
                Some(Prim::Integer(i)) => {
                    ("n", crate::decimal::Decimal::from_i64(i).to_string()).hash(&mut hasher)
                }
                Some(Prim::Decimal(d)) => ("n", d.normalized().to_string()).hash(&mut hasher),
                Some(Prim::String(s)) => ("s", s).hash(&mut hasher),
                // Equality of dates, times and quantities depends on precision, zones and
                // units: one bucket each, compared in full.
                Some(Prim::Date(_) | Prim::DateTime(_)) => "d".hash(&mut hasher),
                Some(Prim::Time(_)) => "t".hash(&mut hasher),
                Some(Prim::Quantity(_)) => "q".hash(&mut hasher),
                None => {
                    if let Item::Node(node) = item {
                        hash_json(node.value, &mut hasher);
                        hash_json(node.extension, &mut hasher);
                    }
                }
            },
        }
        hasher.finish()
    }
}

/// A hash of JSON that equal values share (object keys in any order).
fn hash_json(value: Option<&Value>, hasher: &mut DefaultHasher) {
    match value {
        None | Some(Value::Null) => 0u8.hash(hasher),
        Some(Value::Bool(b)) => b.hash(hasher),
        Some(Value::Number(n)) => n.to_string().hash(hasher),
        Some(Value::String(s)) => s.hash(hasher),
        Some(Value::Array(items)) => {
            items.len().hash(hasher);
            for item in items {
                hash_json(Some(item), hasher);
            }
        }
        Some(Value::Object(object)) => {
            // Combine entries commutatively: the order of keys does not matter to equality.
            let mut combined = 0u64;
            for (key, value) in object {
                let mut entry = DefaultHasher::new();
                key.hash(&mut entry);
                hash_json(Some(value), &mut entry);
                combined = combined.wrapping_add(entry.finish());
            }
            combined.hash(hasher);
        }
    }
}
