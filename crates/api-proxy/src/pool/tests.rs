//! Tests of the hysteresis, the candidate order and pool updates.

use super::*;

#[test]
fn hysteresis_needs_consecutive_results() {
    let mut h = Hysteresis::new(2, 2);
    let mut health = Health::Unknown;
    let mut trace = Vec::new();
    for ok in [true, true, false, true, false, false, true, true] {
        health = h.observe(health, ok);
        trace.push(health);
    }
    use Health::*;
    assert_eq!(trace, [Unknown, Up, Up, Up, Up, Down, Down, Up]);
    // A failed connect: down at once, then `rise` successes again.
    assert_eq!(h.passive_failure(), Down);
    assert_eq!(h.observe(Down, true), Down);
    assert_eq!(h.observe(Down, true), Up);
}

fn check(ranks: &[(Health, bool, usize)], rotate: usize, expected: &[usize]) {
    let ranks: Vec<Rank> = ranks
        .iter()
        .map(|&(health, local, active)| Rank {
            health,
            local,
            active,
        })
        .collect();
    assert_eq!(order(&ranks, rotate), expected, "{ranks:?} rotate {rotate}");
}

#[test]
fn order_prefers_healthy_local_then_least_connections() {
    use Health::*;
    // Least connections among healthy ones.
    check(
        &[(Up, false, 5), (Up, false, 2), (Up, false, 9)],
        0,
        &[1, 0, 2],
    );
    // Local first, even with more connections.
    check(&[(Up, false, 0), (Up, true, 7)], 0, &[1, 0]);
    // A local upstream that is down goes last.
    check(
        &[(Down, true, 0), (Up, false, 3), (Unknown, false, 0)],
        0,
        &[1, 2, 0],
    );
    // Nothing healthy: every upstream is still a candidate.
    check(&[(Down, false, 1), (Down, false, 0)], 0, &[1, 0]);
    // Ties rotate.
    check(
        &[(Up, false, 0), (Up, false, 0), (Up, false, 0)],
        1,
        &[1, 2, 0],
    );
    check(
        &[(Up, false, 0), (Up, false, 0), (Up, false, 0)],
        2,
        &[2, 0, 1],
    );
    check(&[], 3, &[]);
}

#[test]
fn set_keeps_existing_upstreams_and_marks_removed_ones() {
    let pool = Pool::new(
        Some("10.0.0.1".parse().unwrap()),
        2,
        2,
        ProxyMetrics::unregistered(),
    );
    let a: SocketAddr = "10.0.0.1:6443".parse().unwrap();
    let b: SocketAddr = "10.0.0.2:6443".parse().unwrap();
    let c: SocketAddr = "10.0.0.3:6443".parse().unwrap();
    let change = pool.set(&[b, a, a]);
    assert_eq!(change.added.len(), 2);
    assert_eq!(pool.addrs(), [a, b]);
    let kept = pool.get(a).unwrap();
    assert!(kept.local);
    assert!(!pool.get(b).unwrap().local);
    kept.record_check(true);
    kept.record_check(true);
    let _conn = kept.acquire();
    let change = pool.set(&[a, c]);
    assert_eq!(change.added.iter().map(|u| u.addr).collect::<Vec<_>>(), [c]);
    assert_eq!(
        change.removed.iter().map(|u| u.addr).collect::<Vec<_>>(),
        [b]
    );
    assert!(change.removed[0].state().removed);
    assert!(change.removed[0].state().evicting());
    // Same object, state and connections kept.
    let again = pool.get(a).unwrap();
    assert!(Arc::ptr_eq(&kept, &again));
    assert_eq!((again.state().health, again.active()), (Health::Up, 1));
    assert_eq!(pool.candidates()[0].addr, a);
    assert!(pool.any_up_except(c));
    assert!(!pool.any_up_except(a));
}
