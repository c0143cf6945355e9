//! Tests of the upstream file format.

use super::*;

fn check(input: &str, expected: Result<&[&str], &str>) {
    let got = parse(input.as_bytes(), Path::new("u.json"));
    match (got, expected) {
        (Ok(list), Ok(want)) => {
            let list: Vec<String> = list.iter().map(ToString::to_string).collect();
            assert_eq!(list, want, "{input}");
        }
        (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{input}: {e}"),
        (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn parses_and_validates() {
    check(
        r#"{"version":1,"upstreams":["10.0.0.2:6443","10.0.0.1:6443","10.0.0.2:6443"]}"#,
        Ok(&["10.0.0.1:6443", "10.0.0.2:6443"]),
    );
    check(
        r#"{"version":1,"upstreams":["[fd00::1]:6443"]}"#,
        Ok(&["[fd00::1]:6443"]),
    );
    check(
        r#"{"version":1,"upstreams":[]}"#,
        Err("empty upstream list"),
    );
    check(
        r#"{"version":2,"upstreams":["10.0.0.1:6443"]}"#,
        Err("version 2"),
    );
    check(
        r#"{"version":1,"upstreams":["10.0.0.1"]}"#,
        Err("\"10.0.0.1\""),
    );
    check(
        r#"{"version":1,"upstreams":["10.0.0.1:0"]}"#,
        Err("10.0.0.1:0"),
    );
    check(
        r#"{"version":1,"upstreams":["0.0.0.0:6443"]}"#,
        Err("0.0.0.0"),
    );
    check(
        r#"{"version":1,"upstreams":["master-1:6443"]}"#,
        Err("master-1"),
    );
    check(
        r#"{"version":1,"upstreams":["10.0.0.1:6443"],"x":1}"#,
        Err("not an upstream file"),
    );
    check("garbage", Err("not an upstream file"));
    check("", Err("not an upstream file"));
}

#[test]
fn render_round_trips() {
    let list: Vec<SocketAddr> = vec![
        "10.0.0.2:6443".parse().unwrap(),
        "10.0.0.1:6443".parse().unwrap(),
    ];
    let bytes = render(&list);
    assert_eq!(
        String::from_utf8(bytes.clone()).unwrap(),
        "{\"version\":1,\"upstreams\":[\"10.0.0.1:6443\",\"10.0.0.2:6443\"]}\n"
    );
    let back = parse(&bytes, Path::new("u.json")).unwrap();
    assert_eq!(back, merge(&list, &[]));
}

#[test]
fn initial_falls_back_to_last_good_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("upstreams.json");
    let flag: SocketAddr = "127.0.0.9:6443".parse().unwrap();
    // Nothing: flags only, with the file's error.
    let (list, source, err) = initial(&file, &[flag]);
    assert_eq!((list, source), (vec![flag], Source::Flags));
    assert!(err.is_some());
    // A last good list but a broken file.
    let good: Vec<SocketAddr> = vec!["127.0.0.2:6443".parse().unwrap()];
    save_last_good(&last_good_path(&file), &good).unwrap();
    cpm_core::apply::write_atomic(&file, b"{broken", 0o644, None, None).unwrap();
    let (list, source, err) = initial(&file, &[flag]);
    assert_eq!((list, source), (merge(&good, &[flag]), Source::LastGood));
    assert!(err.unwrap().to_string().contains("not an upstream file"));
    // A valid file wins.
    let fresh: Vec<SocketAddr> = vec!["127.0.0.3:6443".parse().unwrap()];
    cpm_core::apply::write_atomic(&file, &render(&fresh), 0o644, None, None).unwrap();
    let (list, source, err) = initial(&file, &[]);
    assert_eq!((list, source), (fresh, Source::File));
    assert!(err.is_none());
}
