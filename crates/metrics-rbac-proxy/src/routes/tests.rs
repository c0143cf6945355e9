//! Route flags and the routes file: parsing and validation errors naming the field.

use super::*;

fn check(yaml: &str, expected: Result<usize, &str>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.yaml");
    cpm_core::apply::write_atomic(&path, yaml.as_bytes(), 0o600, None, None).unwrap();
    match (load(&path), expected) {
        (Ok(f), Ok(n)) => assert_eq!(f.routes.len(), n),
        (Err(e), Err(want)) => {
            let text = e.to_string();
            assert!(text.contains(want), "{text:?} lacks {want:?}");
            assert!(
                text.contains("routes.yaml"),
                "{text:?} does not name the file"
            );
        }
        (got, want) => panic!("got {got:?}, want {want:?}"),
    }
}

#[test]
fn routes_file_cases() {
    check(
        "routes:\n- name: etcd\n  upstream: http://127.0.0.1:2381/metrics\n- name: scheduler\n  upstream: https://127.0.0.1:10259/metrics\n  tls: {caFile: /ca.crt}\n  resourceAttributes: {namespace: kube-system, resource: pods}\nallow:\n- paths: [/etcd/metrics]\n  users: [prom]\n",
        Ok(2),
    );
    check(
        "routes:\n- name: s\n  upstream: https://127.0.0.1:10259/metrics\n",
        Err("routes[0].tls: https upstream"),
    );
    check(
        "routes:\n- name: s\n  upstream: ftp://x/metrics\n",
        Err("routes[0].upstream"),
    );
    check(
        "routes:\n- name: a\n  upstream: http://x/m\n- name: b\n  path: /a/metrics\n  upstream: http://x/m\n",
        Err("routes[1].path"),
    );
    check(
        "routes:\n- name: a b\n  upstream: http://x/m\n",
        Err("routes[0].name"),
    );
    check(
        "routes:\n- name: a\n  upstream: http://x/m\n  bogus: 1\n",
        Err("bogus"),
    );
    check(
        "routes:\n- name: a\n  upstream: http://x/m\nallow:\n- paths: [/a/metrics]\n",
        Err("allow[0]"),
    );
    check("routes: []\n", Err("no route"));
}

#[test]
fn flags_and_defaults() {
    let r = parse_flag("etcd=http://127.0.0.1:2381/metrics").unwrap();
    assert_eq!(r.path(), "/etcd/metrics");
    assert!(parse_flag("nothing").is_err());
    let defaults: Vec<RouteSpec> = DEFAULT_ROUTES
        .iter()
        .map(|(n, u)| parse_flag(&format!("{n}={u}")).unwrap())
        .collect();
    // Built-in https routes need a CA or an explicit skip.
    let err = validate(&defaults, "flags").unwrap_err().to_string();
    assert!(err.contains("flags: routes[0].tls"), "{err}");
}

#[test]
fn allow_rules_match_user_or_group_and_path() {
    let rule = AllowRule {
        paths: vec!["/etcd/metrics".into()],
        users: vec!["prom".into()],
        groups: vec!["monitoring".into()],
    };
    assert!(rule.allows("prom", &[], "/etcd/metrics"));
    assert!(rule.allows("x", &["monitoring".into()], "/etcd/metrics"));
    assert!(!rule.allows("prom", &[], "/scheduler/metrics"));
    assert!(!rule.allows("x", &["other".into()], "/etcd/metrics"));
}
