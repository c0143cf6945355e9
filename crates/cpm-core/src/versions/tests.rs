//! Tests of the version map's shape.

use super::*;

#[test]
fn minors_are_consecutive_and_tags_match_their_minor() {
    for pair in SUPPORTED.windows(2) {
        assert_eq!(
            pair[1].minor.minor,
            pair[0].minor.minor + 1,
            "no gaps: upgrades move one minor at a time"
        );
    }
    for v in SUPPORTED {
        assert!(v.kubernetes.starts_with(&format!("v{}.", v.minor)), "{v:?}");
        assert!(v.etcd.starts_with("3.") && v.etcd.ends_with("-0"), "{v:?}");
    }
    assert_eq!(
        lookup(KubernetesMinor {
            major: 1,
            minor: 30
        }),
        None
    );
    assert_eq!(supported_range(), "1.31–1.34");
}

#[test]
fn etcd_only_moves_forward_except_to_undo_a_failed_upgrade_within_its_minor() {
    use EtcdMove::{Forward, UndoUpgrade};
    // Upgrades follow the map.
    assert_eq!(etcd_tag("3.5.21-0", Some("3.5.16-0"), Forward), "3.5.21-0");
    assert_eq!(etcd_tag("3.6.4-0", Some("3.5.21-0"), Forward), "3.6.4-0");
    // A Kubernetes downgrade keeps etcd, patch and minor.
    assert_eq!(etcd_tag("3.5.16-0", Some("3.5.21-0"), Forward), "3.5.21-0");
    assert_eq!(etcd_tag("3.5.21-0", Some("3.6.4-0"), Forward), "3.6.4-0");
    assert_eq!(etcd_tag("3.5.21-0", Some("3.5.21-1"), Forward), "3.5.21-1");
    // Undoing a failed upgrade: back a patch, never back a minor.
    assert_eq!(
        etcd_tag("3.5.16-0", Some("3.5.21-0"), UndoUpgrade),
        "3.5.16-0"
    );
    assert_eq!(
        etcd_tag("3.5.21-0", Some("3.6.4-0"), UndoUpgrade),
        "3.6.4-0"
    );
    // Nothing running, or a tag that is not a version: the map.
    assert_eq!(etcd_tag("3.5.21-0", None, Forward), "3.5.21-0");
    assert_eq!(etcd_tag("3.5.21-0", Some("latest"), Forward), "3.5.21-0");
    assert_eq!(etcd_tag("3.5.21-0", Some("3.5"), UndoUpgrade), "3.5.21-0");
}

#[test]
fn keep_leaves_the_running_tag_as_it_is() {
    use EtcdMove::Keep;
    for (mapped, running) in [
        ("3.6.4-0", "3.5.16-0"),
        ("3.5.16-0", "3.5.21-0"),
        ("3.5.21-0", "3.5.12-0"),
        ("3.5.21-0", "latest"),
    ] {
        assert_eq!(etcd_tag(mapped, Some(running), Keep), running);
    }
    assert_eq!(etcd_tag("3.6.4-0", None, Keep), "3.6.4-0", "nothing runs");
}
