//! Tests of departure bookkeeping: grace periods and what counts as departed.

use super::*;

fn member(id: u64, name: &str, ip: &str) -> Member {
    Member {
        id,
        name: name.into(),
        peer_urls: vec![format!("https://{ip}:2380")],
        learner: false,
    }
}

fn peer(name: &str, ip: &str) -> Peer {
    Peer {
        name: name.into(),
        ip: ip.parse().unwrap(),
    }
}

#[test]
fn members_depart_only_after_the_grace_period_and_come_back_cleanly() {
    let mut d = Departures::default();
    let members = [
        member(1, "m1", "10.0.0.1"),
        member(2, "m2", "10.0.0.2"),
        Member {
            id: 3,
            name: String::new(),
            peer_urls: vec!["https://10.0.0.3:2380".into()],
            learner: true,
        },
    ];
    let t0 = Instant::now();
    let grace = Duration::from_secs(60);
    let all = [
        peer("m1", "10.0.0.1"),
        peer("m2", "10.0.0.2"),
        peer("m3", "10.0.0.3"),
    ];
    assert!(
        d.eligible(&members, &all, grace, t0).is_empty(),
        "an unstarted learner whose master exists is not departed"
    );
    let without_m2 = [peer("m1", "10.0.0.1"), peer("m3", "10.0.0.3")];
    assert!(
        d.eligible(&members, &without_m2, grace, t0).is_empty(),
        "not before the grace period"
    );
    assert!(
        d.eligible(&members, &without_m2, grace, t0 + Duration::from_secs(59))
            .is_empty()
    );
    let ids: Vec<u64> = d
        .eligible(&members, &without_m2, grace, t0 + Duration::from_secs(60))
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, vec![2]);
    // The master returns: the clock resets.
    assert!(
        d.eligible(&members, &all, grace, t0 + Duration::from_secs(61))
            .is_empty()
    );
    assert!(
        d.eligible(&members, &without_m2, grace, t0 + Duration::from_secs(62))
            .is_empty(),
        "a flapping Node starts a new grace period"
    );
    // A learner whose master is gone departs too.
    let ids: Vec<u64> = d
        .eligible(
            &members,
            &[peer("m1", "10.0.0.1"), peer("m2", "10.0.0.2")],
            Duration::ZERO,
            t0,
        )
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, vec![3]);
}

#[test]
fn learners_that_never_start_time_out() {
    let mut d = Departures::default();
    let unstarted = Member {
        id: 9,
        name: String::new(),
        peer_urls: vec!["https://10.0.0.9:2380".into()],
        learner: true,
    };
    let started = Member {
        id: 8,
        name: "m8".into(),
        peer_urls: vec!["https://10.0.0.8:2380".into()],
        learner: true,
    };
    let members = [member(1, "m1", "10.0.0.1"), unstarted, started];
    let t0 = Instant::now();
    let timeout = Duration::from_secs(600);
    assert!(d.unstarted_learners(&members, timeout, t0).is_empty());
    assert!(
        d.unstarted_learners(&members, timeout, t0 + Duration::from_secs(599))
            .is_empty()
    );
    let ids: Vec<u64> = d
        .unstarted_learners(&members, timeout, t0 + Duration::from_secs(600))
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(
        ids,
        vec![9],
        "a started learner is caught up by promotion, not timed out"
    );
}

#[test]
fn memory_quantities() {
    use crate::membership::parse_quantity;
    for (q, want) in [
        ("16Gi", Some(16u64 << 30)),
        ("16384Mi", Some(16 << 30)),
        ("1000Ki", Some(1_024_000)),
        ("2G", Some(2_000_000_000)),
        ("1234", Some(1234)),
        ("lots", None),
    ] {
        assert_eq!(parse_quantity(q), want, "{q}");
    }
}
