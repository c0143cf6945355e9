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
