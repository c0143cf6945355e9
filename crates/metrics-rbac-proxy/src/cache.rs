//! A decision cache keyed by a sha256 digest: positive answers live `allow_ttl`, negative ones
//! `deny_ttl`, failures are never stored. Concurrent lookups of the same missing key share one
//! fetch (single flight), so a burst of scrapes by one identity costs one API call.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tokio::time::Instant;

/// A cache key: the sha256 of the parts it was made from (never the parts themselves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key([u8; 32]);

impl Key {
    /// The sha256 of `parts`, each length-prefixed so `["ab", "c"]` and `["a", "bc"]` differ.
    pub fn of(parts: &[&[u8]]) -> Self {
        let mut h = Sha256::new();
        for p in parts {
            h.update((p.len() as u64).to_be_bytes());
            h.update(p);
        }
        Self(h.finalize().into())
    }
}

/// How long answers are kept and how many keys at most.
#[derive(Debug, Clone, Copy)]
pub struct CacheOptions {
    /// Lifetime of a positive answer (authenticated, allowed).
    pub allow_ttl: Duration,
    /// Lifetime of a negative answer (unknown token, denied).
    pub deny_ttl: Duration,
    /// Keys kept at most; expired ones are dropped first, then everything.
    pub max_entries: usize,
}

#[derive(Debug, Clone)]
struct Fetched<V> {
    value: V,
    expires: Instant,
}

type Slot<V> = Arc<OnceCell<Fetched<V>>>;

/// Whether a lookup was answered from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A stored answer (or one fetched by a concurrent lookup of the same key).
    Hit,
    /// This lookup fetched the answer.
    Miss,
}

/// The cache; `V` is the answer, `positive` decides its lifetime.
#[derive(Debug)]
pub struct Cache<V> {
    opts: CacheOptions,
    slots: Mutex<HashMap<Key, Slot<V>>>,
    positive: fn(&V) -> bool,
}

impl<V: Clone + Send + Sync> Cache<V> {
    /// An empty cache.
    pub fn new(opts: CacheOptions, positive: fn(&V) -> bool) -> Self {
        Self {
            opts,
            slots: Mutex::new(HashMap::new()),
            positive,
        }
    }

    /// Keys currently held (fresh, expired or being fetched).
    pub fn len(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stored answer for `key`, else the answer of `fetch` (stored unless it failed).
    pub async fn get_or_fetch<E, F, Fut>(&self, key: Key, fetch: F) -> (Result<V, E>, Lookup)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let slot = self.slot(key);
        let mut fetched = false;
        let (allow, deny, positive) = (self.opts.allow_ttl, self.opts.deny_ttl, self.positive);
        let result = slot
            .get_or_try_init(|| {
                fetched = true;
                async move {
                    let value = fetch().await?;
                    let ttl = if positive(&value) { allow } else { deny };
                    Ok(Fetched {
                        value,
                        expires: Instant::now() + ttl,
                    })
                }
            })
            .await
            .map(|f| f.value.clone());
        if result.is_err() {
            // Never keep a failure: the next lookup asks again.
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            if slots.get(&key).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                slots.remove(&key);
            }
        }
        let lookup = if fetched { Lookup::Miss } else { Lookup::Hit };
        (result, lookup)
    }

    /// The slot for `key`: the current one while it is fresh or being fetched, else a new one.
    fn slot(&self, key: Key) -> Slot<V> {
        let now = Instant::now();
        let live = |s: &Slot<V>| s.get().is_none_or(|f| f.expires > now);
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = slots.get(&key)
            && live(s)
        {
            return s.clone();
        }
        if slots.len() >= self.opts.max_entries {
            slots.retain(|_, s| live(s));
            if slots.len() >= self.opts.max_entries {
                slots.clear();
            }
        }
        let s = Arc::new(OnceCell::new());
        slots.insert(key, s.clone());
        s
    }
}

#[cfg(test)]
mod tests;
