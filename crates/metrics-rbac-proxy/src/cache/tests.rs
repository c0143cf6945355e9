//! The cache: TTLs by answer, failures not stored, single flight, bounded size.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;

fn cache(max_entries: usize) -> Cache<bool> {
    Cache::new(
        CacheOptions {
            allow_ttl: Duration::from_secs(300),
            deny_ttl: Duration::from_secs(30),
            max_entries,
        },
        |v| *v,
    )
}

/// Looks `key` up with a fetch answering `answer`; returns the result, the lookup kind and
/// whether the fetch ran.
async fn check(
    c: &Cache<bool>,
    key: &str,
    answer: Result<bool, &'static str>,
) -> (Result<bool, &'static str>, Lookup) {
    c.get_or_fetch(Key::of(&[key.as_bytes()]), || async move { answer })
        .await
}

#[tokio::test]
async fn allow_lives_longer_than_deny() {
    // Lifetimes far apart, so a short sleep expires only the deny.
    let c = Cache::new(
        CacheOptions {
            allow_ttl: Duration::from_secs(3600),
            deny_ttl: Duration::from_millis(10),
            max_entries: 100,
        },
        |v: &bool| *v,
    );
    assert_eq!(check(&c, "a", Ok(true)).await, (Ok(true), Lookup::Miss));
    assert_eq!(check(&c, "d", Ok(false)).await, (Ok(false), Lookup::Miss));
    tokio::time::sleep(Duration::from_millis(30)).await;
    // The allow is still cached (the fetch's answer is ignored); the deny expired.
    assert_eq!(check(&c, "a", Ok(false)).await, (Ok(true), Lookup::Hit));
    assert_eq!(check(&c, "d", Ok(true)).await, (Ok(true), Lookup::Miss));
}

#[tokio::test]
async fn an_expired_allow_is_fetched_again() {
    let c = Cache::new(
        CacheOptions {
            allow_ttl: Duration::from_millis(10),
            deny_ttl: Duration::from_secs(3600),
            max_entries: 100,
        },
        |v: &bool| *v,
    );
    assert_eq!(check(&c, "a", Ok(true)).await, (Ok(true), Lookup::Miss));
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(check(&c, "a", Ok(false)).await, (Ok(false), Lookup::Miss));
}

#[tokio::test]
async fn failures_are_not_stored() {
    let c = cache(100);
    assert_eq!(
        check(&c, "a", Err("down")).await,
        (Err("down"), Lookup::Miss)
    );
    assert!(c.is_empty());
    assert_eq!(check(&c, "a", Ok(true)).await, (Ok(true), Lookup::Miss));
    assert_eq!(check(&c, "a", Err("down")).await, (Ok(true), Lookup::Hit));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_share_one_fetch() {
    let c = Arc::new(cache(100));
    let calls = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (c, calls, mut rx) = (c.clone(), calls.clone(), rx.clone());
        tasks.push(tokio::spawn(async move {
            c.get_or_fetch(Key::of(&[b"same"]), || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let _ = rx.wait_for(|go| *go).await;
                Ok::<_, ()>(true)
            })
            .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    tx.send_replace(true);
    let mut misses = 0;
    for t in tasks {
        let (r, lookup) = t.await.unwrap();
        assert_eq!(r, Ok(true));
        misses += usize::from(lookup == Lookup::Miss);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(misses, 1);
}

#[tokio::test]
async fn size_is_bounded() {
    let c = cache(3);
    for k in ["a", "b", "c", "d", "e"] {
        assert_eq!(check(&c, k, Ok(true)).await.0, Ok(true));
        assert!(c.len() <= 3, "{} keys", c.len());
    }
}

#[test]
fn keys_are_length_prefixed() {
    assert_ne!(Key::of(&[b"ab", b"c"]), Key::of(&[b"a", b"bc"]));
    assert_eq!(Key::of(&[b"ab", b"c"]), Key::of(&[b"ab", b"c"]));
}
