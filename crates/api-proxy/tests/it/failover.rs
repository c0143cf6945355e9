//! Failover: a killed upstream, a blackholed upstream, an unhealthy upstream, and no healthy
//! upstream at all.

use std::time::Duration;

use api_proxy::pool::Health;

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_upstream_new_connections_fail_over_and_its_connections_close() {
    let cluster = Cluster::generate();
    let mut a = Upstream::start(&cluster, "a").await;
    let b = Upstream::start(&cluster, "b").await;
    let c = Upstream::start(&cluster, "c").await;
    cluster.set_upstreams(&[a.addr, b.addr, c.addr]);
    let proxy = cluster.proxy(&[]).await;
    all_up(&proxy, &[a.addr, b.addr, c.addr]).await;

    // Least connections spreads six streams over the three upstreams.
    let mut streams = Vec::new();
    for _ in 0..6 {
        streams.push(Stream::open(proxy.addr, &cluster).await.unwrap());
    }
    let on_a = streams.iter().filter(|s| s.upstream == "a").count();
    assert_eq!(
        on_a,
        2,
        "{:?}",
        streams.iter().map(|s| &s.upstream).collect::<Vec<_>>()
    );

    a.kill().await;
    // New connections, at once: every one succeeds through b or c (a refused connect fails over).
    for i in 0..20 {
        let who = id(proxy.addr, &cluster)
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e:#}"));
        assert!(who == "b" || who == "c", "request {i} answered by {who}");
    }
    let down = eventually(Duration::from_secs(10), || {
        health(&proxy, a.addr) == Some(Health::Down)
    })
    .await;
    assert!(down, "a is {:?}", health(&proxy, a.addr));
    for s in &mut streams {
        if s.upstream == "a" {
            assert!(
                s.closed_within(Duration::from_secs(10)).await,
                "a's stream still open"
            );
        } else {
            assert!(s.echo("still there").await, "{}'s stream broke", s.upstream);
        }
    }
    proxy.shutdown(Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blackholed_upstream_is_excluded_within_the_health_window() {
    let cluster = Cluster::generate();
    let mut a = Upstream::start(&cluster, "a").await;
    let b = Upstream::start(&cluster, "b").await;
    cluster.set_upstreams(&[a.addr, b.addr]);
    let proxy = cluster.proxy(&[]).await;
    all_up(&proxy, &[a.addr, b.addr]).await;

    a.blackhole().await;
    // No client traffic: the health checks alone must find it (the benchmark times this).
    let excluded = eventually(Duration::from_secs(10), || {
        health(&proxy, a.addr) == Some(Health::Down)
    })
    .await;
    assert!(
        excluded,
        "the blackholed upstream is still {:?}",
        health(&proxy, a.addr)
    );
    assert_eq!(health(&proxy, b.addr), Some(Health::Up));
    for i in 0..10 {
        assert_eq!(id(proxy.addr, &cluster).await.unwrap(), "b", "request {i}");
    }
    assert_eq!(
        proxy.pool.metrics.failovers.get(),
        0,
        "a was tried after exclusion"
    );
    proxy.shutdown(Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unhealthy_upstream_loses_its_connections_after_the_grace_period() {
    let cluster = Cluster::generate();
    let a = Upstream::start(&cluster, "a").await;
    let b = Upstream::start(&cluster, "b").await;
    cluster.set_upstreams(&[a.addr, b.addr]);
    let proxy = cluster.proxy(&[]).await;
    all_up(&proxy, &[a.addr, b.addr]).await;
    let mut streams = Vec::new();
    for _ in 0..4 {
        streams.push(Stream::open(proxy.addr, &cluster).await.unwrap());
    }

    // a answers 503 on /readyz but still serves its connections: the proxy moves them.
    a.ready.store(false, std::sync::atomic::Ordering::SeqCst);
    for s in &mut streams {
        if s.upstream == "a" {
            assert!(
                s.closed_within(Duration::from_secs(10)).await,
                "a's stream not evicted"
            );
        } else {
            assert!(s.echo("kept").await);
        }
    }
    let down = eventually(Duration::from_secs(10), || {
        health(&proxy, a.addr) == Some(Health::Down)
    })
    .await;
    assert!(down);
    assert_eq!(
        Stream::open(proxy.addr, &cluster).await.unwrap().upstream,
        "b"
    );

    // a recovers: it takes new connections again.
    a.ready.store(true, std::sync::atomic::Ordering::SeqCst);
    all_up(&proxy, &[a.addr]).await;
    let mut names = Vec::new();
    for _ in 0..4 {
        names.push(Stream::open(proxy.addr, &cluster).await.unwrap().upstream);
    }
    assert!(names.iter().any(|n| n == "a"), "{names:?}");
    proxy.shutdown(Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_no_healthy_upstream_every_known_one_is_still_tried() {
    let cluster = Cluster::generate();
    let a = Upstream::start(&cluster, "a").await;
    let b = Upstream::start(&cluster, "b").await;
    cluster.set_upstreams(&[a.addr, b.addr]);
    let proxy = cluster.proxy(&[]).await;
    all_up(&proxy, &[a.addr, b.addr]).await;
    a.ready.store(false, std::sync::atomic::Ordering::SeqCst);
    b.ready.store(false, std::sync::atomic::Ordering::SeqCst);
    let down = eventually(Duration::from_secs(10), || {
        [a.addr, b.addr]
            .iter()
            .all(|x| health(&proxy, *x) == Some(Health::Down))
    })
    .await;
    assert!(down);
    // Nothing healthy: connections still go through, and existing ones are not evicted (there
    // is nowhere better to go).
    let mut s = Stream::open(proxy.addr, &cluster).await.unwrap();
    let who = id(proxy.addr, &cluster).await.unwrap();
    assert!(who == "a" || who == "b");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(s.echo("not evicted").await);
    proxy.shutdown(Duration::ZERO).await;
}
