//! Tests of the etcd version choice: the record decides when it names a minor; otherwise a
//! running etcd keeps its tag and a first bootstrap takes the configured minor.

use cpm_core::controlplanenode::RolloutStatus;

use super::*;

fn m(s: &str) -> KubernetesMinor {
    s.parse().expect("minor")
}

fn status(version: &str, phase: Phase, from: &str, to: &str) -> ControlPlaneNodeStatus {
    ControlPlaneNodeStatus {
        version: version.into(),
        rollout: RolloutStatus {
            phase,
            from: from.into(),
            to: to.into(),
            ..RolloutStatus::default()
        },
        ..ControlPlaneNodeStatus::default()
    }
}

/// The record a status makes, and the choice it gives with the configuration at 1.34 and etcd
/// running `running`.
fn check(record: &Record, running: Option<&str>, expected: (&str, EtcdMove), tag: &str, why: &str) {
    let (minor, how) = choose(record, m("1.34"), running);
    assert_eq!((minor, how), (m(expected.0), expected.1), "{why}");
    let mapped = versions::lookup(minor).expect("mapped").etcd;
    assert_eq!(versions::etcd_tag(mapped, running, how), tag, "{why}");
}

#[test]
fn etcd_follows_the_masters_rollout_record() {
    use EtcdMove::{Forward, UndoUpgrade};
    let says = |s: ControlPlaneNodeStatus| Record::from_status("m1", &s);
    let running = Some("3.5.16-0");
    check(
        &says(status("1.32", Phase::None, "", "")),
        running,
        ("1.32", Forward),
        "3.5.16-0",
        "waits for its turn",
    );
    check(
        &says(status("1.32", Phase::InProgress, "1.32", "1.33")),
        running,
        ("1.33", Forward),
        "3.5.21-0",
        "moves in its step",
    );
    check(
        &says(status("1.32", Phase::Failed, "1.32", "1.33")),
        Some("3.5.21-0"),
        ("1.32", UndoUpgrade),
        "3.5.16-0",
        "a failed upgrade takes etcd back a patch",
    );
    check(
        &says(status("1.34", Phase::Failed, "1.34", "1.33")),
        Some("3.6.4-0"),
        ("1.34", Forward),
        "3.6.4-0",
        "a failed downgrade never moved etcd back",
    );
    check(
        &says(status("1.32", Phase::Succeeded, "1.33", "1.32")),
        Some("3.5.21-0"),
        ("1.32", Forward),
        "3.5.21-0",
        "a downgrade keeps etcd",
    );
}

#[test]
fn without_a_record_running_etcd_keeps_its_tag_and_a_first_bootstrap_takes_the_configuration() {
    use EtcdMove::{Forward, Keep};
    let unreadable = Record::Unreadable("connection refused".into());
    for record in [Record::Absent, Record::NoApi, unreadable] {
        check(
            &record,
            Some("3.5.16-0"),
            ("1.34", Keep),
            "3.5.16-0",
            &format!("{record:?} keeps what runs"),
        );
        check(
            &record,
            Some("3.5.12-0"),
            ("1.34", Keep),
            "3.5.12-0",
            &format!("{record:?} keeps a tag outside the map"),
        );
        check(
            &record,
            None,
            ("1.34", Forward),
            "3.6.4-0",
            &format!("{record:?} on a first bootstrap"),
        );
    }
}

#[test]
fn a_record_naming_no_supported_minor_is_unreadable() {
    for (s, field) in [
        (
            status("1.99", Phase::None, "", ""),
            "status.version \"1.99\"",
        ),
        (status("", Phase::None, "", ""), "status.version \"\""),
        (
            status("1.32", Phase::InProgress, "1.32", "1.30"),
            "status.rollout.to \"1.30\"",
        ),
    ] {
        let r = Record::from_status("m1", &s);
        let Record::Unreadable(why) = &r else {
            panic!("{s:?} gave {r:?}");
        };
        assert!(
            why.starts_with(&format!("ControlPlaneNode m1: {field} is not a minor")),
            "{why}"
        );
        assert!(!r.readable());
    }
    let mut obj = DynamicObject::new("m1", &cpn::api_resource());
    obj.data = serde_json::json!({"spec": {}});
    assert_eq!(
        Record::from_object("m1", &obj),
        Record::Unreadable("ControlPlaneNode m1 has no status".into())
    );
    obj.data = serde_json::json!({"spec": {}, "status": {"version": 133}});
    let r = Record::from_object("m1", &obj);
    assert!(
        matches!(&r, Record::Unreadable(why) if why.starts_with("ControlPlaneNode m1: status: ")),
        "{r:?}"
    );
    obj.data = serde_json::json!({"spec": {}, "status": {"version": "1.33"}});
    assert_eq!(
        Record::from_object("m1", &obj),
        Record::Says {
            minor: m("1.33"),
            how: EtcdMove::Forward
        }
    );
    assert!(Record::Absent.readable() && !Record::NoApi.readable());
}
