//! Lease lock tests against the test API server: mutual exclusion over many contended rounds,
//! takeover of a crashed holder, and a holder that loses the lease stopping its work.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use cpm_testing::apiserver::{ApiServer, RequestMatch};
use futures::future::join_all;
use http::Method;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::*;

const WAIT: Duration = Duration::from_secs(15);

/// A clock tests move by hand.
#[derive(Debug)]
struct ManualClock(AtomicU64);

impl ManualClock {
    fn new() -> Arc<Self> {
        Arc::new(Self(AtomicU64::new(1_700_000_000_000)))
    }

    fn advance(&self, d: Duration) {
        self.0.fetch_add(
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0.load(Ordering::SeqCst))
    }
}

fn cfg(identity: &str, lease: u64, deadline: Duration, retry: Duration) -> LeaseConfig {
    LeaseConfig {
        namespace: "kube-system".into(),
        name: "cpm-risky-work".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(lease),
        renew_deadline: deadline,
        retry_period: retry,
    }
}

fn fast(identity: &str) -> LeaseConfig {
    cfg(
        identity,
        1,
        Duration::from_millis(600),
        Duration::from_millis(100),
    )
}

async fn lease_spec(client: &Client) -> anyhow::Result<LeaseSpec> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    Ok(leases.get("cpm-risky-work").await?.spec.unwrap_or_default())
}

/// One holding period, by the shared clock: [from, until).
#[derive(Debug, Clone, Copy)]
struct Hold {
    who: usize,
    from: SystemTime,
    until: SystemTime,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_contenders_never_hold_at_the_same_time() -> anyhow::Result<()> {
    let server = ApiServer::start().await?;
    let client = server.admin_client().await?;
    let clock = ManualClock::new();
    let mut locks = Vec::new();
    for id in ["m0", "m1", "m2"] {
        let c = cfg(id, 10, Duration::from_secs(7), Duration::from_secs(1));
        locks.push(LeaseLock::new(client.clone(), c)?.with_clock(clock.clone()));
    }
    let log: Mutex<Vec<Hold>> = Mutex::new(Vec::new());
    let mut paused_until = [0usize; 3];
    let mut rng = StdRng::seed_from_u64(0x1ea5e);
    let mut acquisitions = 0;
    let mut releases = 0;

    for round in 0..1000 {
        clock.advance(Duration::from_millis(rng.random_range(0..=3000)));
        // Crashes and pauses: a contender skips a few rounds (its renewals stop).
        for p in paused_until.iter_mut() {
            if *p <= round && rng.random_bool(0.04) {
                *p = round + rng.random_range(1..8);
            }
        }
        let release_now: Vec<bool> = (0..3).map(|_| rng.random_bool(0.03)).collect();
        let steps = locks
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| paused_until[*i] <= round)
            .map(|(i, lock)| {
                let release = release_now[i];
                let clock = clock.clone();
                let log = &log;
                async move {
                    let now = clock.now();
                    if release && lock.holds() {
                        let released = lock.release().await?;
                        // Work stops the moment we decide to release: every holding period of
                        // ours ends now.
                        if let Ok(mut l) = log.lock() {
                            for h in l.iter_mut().filter(|h| h.who == i) {
                                h.until = h.until.min(now);
                            }
                        }
                        return anyhow::Ok((i, now, None, released));
                    }
                    let step = lock.try_acquire_or_renew().await?;
                    anyhow::Ok((i, now, Some(step), false))
                }
            });
        for result in join_all(steps).await {
            let (who, now, step, released) = result?;
            releases += usize::from(released);
            if let Some(Step::Held {
                valid_until,
                acquired,
            }) = step
            {
                acquisitions += usize::from(acquired);
                if let Ok(mut l) = log.lock() {
                    l.push(Hold {
                        who,
                        from: now,
                        until: valid_until,
                    });
                }
            }
        }
    }

    let mut holds = log.into_inner().unwrap_or_default();
    holds.sort_by_key(|h| h.from);
    let mut until = [UNIX_EPOCH; 3];
    for h in &holds {
        for (other, end) in until.iter().enumerate() {
            assert!(
                other == h.who || *end <= h.from,
                "m{} held from {:?} while m{other} held until {end:?}",
                h.who,
                h.from
            );
        }
        until[h.who] = until[h.who].max(h.until);
    }
    // The run was contended: the lease changed hands many times, and the object agrees.
    let spec = lease_spec(&client).await?;
    let transitions = usize::try_from(spec.lease_transitions.unwrap_or_default())?;
    assert_eq!(
        transitions + 1,
        acquisitions,
        "every takeover is counted in leaseTransitions"
    );
    assert!(transitions >= 20, "only {transitions} transitions");
    assert!(releases >= 5, "only {releases} releases");
    Ok(())
}

#[tokio::test]
async fn a_crashed_holder_is_taken_over_after_expiry() -> anyhow::Result<()> {
    let server = ApiServer::start().await?;
    let client = server.admin_client().await?;
    let clock = ManualClock::new();
    let timing = |id| cfg(id, 10, Duration::from_secs(7), Duration::from_secs(1));
    let mut a = LeaseLock::new(client.clone(), timing("a"))?.with_clock(clock.clone());
    let mut b = LeaseLock::new(client.clone(), timing("b"))?.with_clock(clock.clone());

    assert!(matches!(
        a.try_acquire_or_renew().await?,
        Step::Held { acquired: true, .. }
    ));
    // a crashes: it never renews again.
    assert_eq!(
        b.try_acquire_or_renew().await?,
        Step::HeldByOther { holder: "a".into() }
    );
    clock.advance(Duration::from_secs(9));
    assert_eq!(
        b.try_acquire_or_renew().await?,
        Step::HeldByOther { holder: "a".into() }
    );
    assert!(
        !a.holds(),
        "a's own deadline (7 s) passed before b may take over (10 s)"
    );
    clock.advance(Duration::from_secs(2));
    assert!(matches!(
        b.try_acquire_or_renew().await?,
        Step::Held { acquired: true, .. }
    ));

    let spec = lease_spec(&client).await?;
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));
    assert_eq!(spec.lease_duration_seconds, Some(10));
    assert_eq!(spec.acquire_time, spec.renew_time);
    // a comes back: the lease is b's.
    assert_eq!(
        a.try_acquire_or_renew().await?,
        Step::HeldByOther { holder: "b".into() }
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_guard_is_taken_over_by_a_waiting_contender() -> anyhow::Result<()> {
    let server = ApiServer::start().await?;
    let client = server.admin_client().await?;
    let never = CancellationToken::new();
    let a = LeaseLock::new(client.clone(), fast("a"))?
        .acquire(&never)
        .await?;
    let work = a.token();
    drop(a); // a crash: renewals stop, nothing is released.
    assert!(work.is_cancelled(), "a dropped guard stops its own work");
    let b = tokio::time::timeout(
        WAIT,
        LeaseLock::new(client.clone(), fast("b"))?.acquire(&never),
    )
    .await??;
    assert!(b.is_held());
    let spec = lease_spec(&client).await?;
    assert_eq!(
        (spec.holder_identity.as_deref(), spec.lease_transitions),
        (Some("b"), Some(1))
    );
    b.release().await?;
    assert_eq!(lease_spec(&client).await?.holder_identity, None);
    Ok(())
}

/// Work that runs until the guard's token is cancelled; returns how many units it did.
fn spawn_work(token: CancellationToken) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut units = 0;
        loop {
            tokio::select! {
                () = token.cancelled() => return units,
                () = tokio::time::sleep(Duration::from_millis(5)) => units += 1,
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_lease_is_taken_stops_its_work() -> anyhow::Result<()> {
    let server = ApiServer::start().await?;
    let client = server.admin_client().await?;
    let guard = LeaseLock::new(client.clone(), fast("a"))?
        .acquire(&CancellationToken::new())
        .await?;
    let work = spawn_work(guard.token());

    // Someone else writes the lease (an operator, or a contender with a broken clock).
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let steal = json!({"spec": {"holderIdentity": "thief", "leaseDurationSeconds": 30}});
    leases
        .patch(
            "cpm-risky-work",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(steal),
        )
        .await?;

    tokio::time::timeout(WAIT, guard.lost()).await?;
    assert!(!guard.is_held());
    tokio::time::timeout(WAIT, work).await??;
    // The loser never wrote the lease back.
    assert_eq!(
        lease_spec(&client).await?.holder_identity.as_deref(),
        Some("thief")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_cannot_renew_gives_up_by_its_deadline() -> anyhow::Result<()> {
    let server = ApiServer::start().await?;
    let client = server.admin_client().await?;
    let guard = LeaseLock::new(client.clone(), fast("a"))?
        .acquire(&CancellationToken::new())
        .await?;
    let work = spawn_work(guard.token());
    server.faults().fail_all(
        RequestMatch::any()
            .method(Method::PUT)
            .path_contains("/leases/"),
        500,
    );
    tokio::time::timeout(WAIT, guard.lost()).await?;
    tokio::time::timeout(WAIT, work).await??;
    server.faults().clear();

    // Renewals that hang past the deadline count as failed too.
    let guard = LeaseLock::new(client.clone(), fast("b"))?
        .acquire(&CancellationToken::new())
        .await?;
    server.faults().add_latency(
        RequestMatch::any().path_contains("/leases/"),
        Duration::from_secs(5),
        None,
    );
    tokio::time::timeout(WAIT, guard.lost()).await?;
    assert!(!guard.is_held());
    Ok(())
}

#[tokio::test]
async fn release_hands_the_lease_over_at_once() -> anyhow::Result<()> {
    let server = ApiServer::start().await?;
    let client = server.admin_client().await?;
    let clock = ManualClock::new();
    let timing = |id| cfg(id, 10, Duration::from_secs(7), Duration::from_secs(1));
    let mut a = LeaseLock::new(client.clone(), timing("a"))?.with_clock(clock.clone());
    let mut b = LeaseLock::new(client.clone(), timing("b"))?.with_clock(clock.clone());
    assert!(matches!(a.try_acquire_or_renew().await?, Step::Held { .. }));
    assert!(matches!(
        b.try_acquire_or_renew().await?,
        Step::HeldByOther { .. }
    ));
    assert!(a.release().await?);
    assert!(!a.holds());
    assert!(matches!(
        b.try_acquire_or_renew().await?,
        Step::Held { acquired: true, .. }
    ));
    assert!(!a.release().await?, "a no longer holds anything to release");
    Ok(())
}

#[tokio::test]
async fn acquisition_can_be_cancelled() -> anyhow::Result<()> {
    let server = ApiServer::start().await?;
    let client = server.admin_client().await?;
    let _a = LeaseLock::new(client.clone(), fast("a"))?
        .acquire(&CancellationToken::new())
        .await?;
    let cancel = CancellationToken::new();
    cancel.cancel();
    let r = LeaseLock::new(client, fast("b"))?.acquire(&cancel).await;
    assert!(matches!(r, Err(LeaseError::Cancelled { .. })), "{r:?}");
    Ok(())
}

#[test]
fn config_validation() {
    let ok = cfg("a", 15, Duration::from_secs(10), Duration::from_secs(2));
    assert!(ok.validate().is_ok());
    let check = |c: LeaseConfig, why: &str| match c.validate() {
        Err(LeaseError::Config(msg)) => assert!(msg.contains(why), "{msg}"),
        other => panic!("expected a config error about {why}, got {other:?}"),
    };
    check(
        LeaseConfig {
            identity: String::new(),
            ..ok.clone()
        },
        "identity",
    );
    check(
        LeaseConfig {
            lease_duration: Duration::from_millis(1500),
            ..ok.clone()
        },
        "whole number",
    );
    check(
        LeaseConfig {
            renew_deadline: Duration::from_secs(15),
            ..ok.clone()
        },
        "renew_deadline",
    );
    check(
        LeaseConfig {
            retry_period: Duration::from_secs(10),
            ..ok.clone()
        },
        "retry_period",
    );
}
