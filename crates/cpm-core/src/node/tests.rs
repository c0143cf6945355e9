//! Tests of `NodeRoot` path joining.

use super::*;

fn check(rel: &str, expected: Option<&str>) {
    let root = NodeRoot::new("/r");
    let got = root.join(rel).ok();
    assert_eq!(got.as_deref(), expected.map(Path::new), "join({rel:?})");
}

#[test]
fn join_accepts_only_relative_paths_inside_the_root() {
    check(
        "etc/kubernetes/pki/ca.crt",
        Some("/r/etc/kubernetes/pki/ca.crt"),
    );
    check("./etc", Some("/r/./etc"));
    check("/etc/passwd", None);
    check("etc/../../x", None);
    check("..", None);
    check("", None);
}

#[test]
fn host_maps_absolute_paths_under_the_root() {
    let root = NodeRoot::new("/r");
    assert_eq!(
        root.host("/etc/kubernetes/admin.conf").unwrap(),
        Path::new("/r/etc/kubernetes/admin.conf")
    );
    assert!(root.host("etc/x").is_err());
    assert!(root.host("/etc/../../x").is_err());
}
