//! Answers the API reuses for a few seconds (`api.cache_ttl`): which token a presented
//! secret is, and that a user has a valid key for a provider. Without them every `POST
//! /v1/jobs` would read both from the database before doing its own work.
//!
//! The price is a bound on how late a change made elsewhere is seen: a token revoked with
//! `byok token revoke`, or a key deleted or found invalid by another process (another API
//! pod, a worker), still passes here for at most `api.cache_ttl` after this process last read
//! it. Keys stored, replaced, checked or deleted through this process are forgotten here at
//! once; a token's expiry is checked on every request, cached or not. Only positive answers are kept: an unknown token or a missing key
//! is read again on the next request, so a key stored a moment ago is usable at once and a
//! flood of bad tokens fills nothing. A job accepted on a stale answer is still checked by
//! the worker, which reads the key with the job and fails it with `credentials_missing` or
//! `credentials_invalid`.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Positive answers kept for `ttl` (none when `ttl` is zero), at most `capacity` of them.
#[derive(Debug)]
pub(crate) struct Recent<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash, V: Clone> Recent<K, V> {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Recent<K, V> {
        Recent {
            ttl,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The answer kept for `key`, if it is younger than the ttl.
    pub(crate) fn get(&self, key: &K) -> Option<V> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().expect("recent answers lock");
        match entries.get(key) {
            Some((at, value)) if at.elapsed() < self.ttl => Some(value.clone()),
            _ => None,
        }
    }

    /// Keeps `value` for `key` from now.
    pub(crate) fn put(&self, key: K, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().expect("recent answers lock");
        if entries.len() >= self.capacity {
            // Full: drop what has expired; if that is not enough, start over (a burst of
            // distinct keys costs one database read each, as without the cache).
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), value));
    }

    /// Forgets the answer for `key`.
    pub(crate) fn forget(&self, key: &K) {
        self.entries
            .lock()
            .expect("recent answers lock")
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_live_for_the_ttl_and_are_forgotten_on_demand() {
        let recent = Recent::new(Duration::from_secs(60), 2);
        recent.put("a", 1);
        recent.put("b", 2);
        assert_eq!((recent.get(&"a"), recent.get(&"b")), (Some(1), Some(2)));
        // Full of fresh answers: a third starts over rather than growing.
        recent.put("c", 3);
        assert_eq!((recent.get(&"a"), recent.get(&"c")), (None, Some(3)));
        recent.forget(&"c");
        assert_eq!(recent.get(&"c"), None);

        let expired = Recent::new(Duration::from_nanos(1), 10);
        expired.put("a", 1);
        std::thread::sleep(Duration::from_millis(1));
        assert_eq!(expired.get(&"a"), None);

        let off = Recent::new(Duration::ZERO, 10);
        off.put("a", 1);
        assert_eq!(off.get(&"a"), None, "a ttl of zero keeps nothing");
    }
}
