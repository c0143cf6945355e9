//! Unit tests of the protobuf decoder, on bodies encoded here as client-go encodes them.

use serde_json::json;

use super::*;

/// A length-delimited field.
fn len(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
    varint_to(out, (number << 3) | 2);
    varint_to(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A varint field.
fn var(out: &mut Vec<u8>, number: u64, value: u64) {
    varint_to(out, number << 3);
    varint_to(out, value);
}

fn varint_to(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn map_entry(out: &mut Vec<u8>, number: u64, key: &str, value: &[u8]) {
    let mut e = Vec::new();
    len(&mut e, 1, key.as_bytes());
    len(&mut e, 2, value);
    len(out, number, &e);
}

fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut tm = Vec::new();
    len(&mut tm, 1, api_version.as_bytes());
    len(&mut tm, 2, kind.as_bytes());
    let mut unknown = Vec::new();
    len(&mut unknown, 1, &tm);
    len(&mut unknown, 2, raw);
    len(&mut unknown, 3, b"");
    len(&mut unknown, 4, b"");
    [MAGIC, &unknown].concat()
}

/// ObjectMeta as Go writes it: every non-pointer field, empty or not.
fn meta(name: &str, labels: &[(&str, &str)]) -> Vec<u8> {
    let mut m = Vec::new();
    len(&mut m, 1, name.as_bytes());
    len(&mut m, 2, b"");
    len(&mut m, 3, b"");
    var(&mut m, 7, 0);
    let mut zero_time = Vec::new();
    var(&mut zero_time, 1, 0);
    var(&mut zero_time, 2, 0);
    len(&mut m, 8, &zero_time);
    for (k, v) in labels {
        map_entry(&mut m, 11, k, v.as_bytes());
    }
    m
}

#[test]
fn a_config_map_from_kubectl_create() {
    let mut cm = Vec::new();
    len(&mut cm, 1, &meta("x", &[("app", "web")]));
    map_entry(&mut cm, 2, "a", b"b");
    map_entry(&mut cm, 3, "bin", &[0, 1, 2]);
    let obj = decode(&envelope("v1", "ConfigMap", &cm)).unwrap();
    assert_eq!(
        obj,
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "x", "generation": 0, "labels": {"app": "web"}},
            "data": {"a": "b"},
            "binaryData": {"bin": "AAEC"},
        })
    );
}

#[test]
fn well_known_messages_take_their_json_forms() {
    // A Deployment with a replicas count, a rolling update of maxSurge "25%" and a container
    // port given as an int, and a negative int32.
    let mut surge = Vec::new();
    var(&mut surge, 1, 1);
    len(&mut surge, 3, b"25%");
    let mut unavailable = Vec::new();
    var(&mut unavailable, 1, 0);
    var(&mut unavailable, 2, 1);
    let mut rolling = Vec::new();
    len(&mut rolling, 1, &unavailable);
    len(&mut rolling, 2, &surge);
    let mut strategy = Vec::new();
    len(&mut strategy, 1, b"RollingUpdate");
    len(&mut strategy, 2, &rolling);
    let mut spec = Vec::new();
    var(&mut spec, 1, 3);
    len(&mut spec, 4, &strategy);
    var(&mut spec, 5, u64::MAX); // minReadySeconds: -1 as an int32 varint
    let mut d = Vec::new();
    len(&mut d, 1, &meta("d", &[]));
    len(&mut d, 2, &spec);
    let obj = decode(&envelope("apps/v1", "Deployment", &d)).unwrap();
    assert_eq!(obj["spec"]["replicas"], 3);
    assert_eq!(obj["spec"]["minReadySeconds"], -1);
    assert_eq!(
        obj["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "25%"}})
    );
    let mut t = Vec::new();
    var(&mut t, 1, 1_700_000_000);
    assert_eq!(
        message(schema::get().unwrap(), "meta.v1.Time", &t).unwrap(),
        json!("2023-11-14T22:13:20Z")
    );
    let mut q = Vec::new();
    len(&mut q, 1, b"500m");
    assert_eq!(
        message(schema::get().unwrap(), "resource.Quantity", &q).unwrap(),
        json!("500m")
    );
}

#[test]
fn unknown_kinds_fields_and_bodies_are_refused() {
    let mut cm = Vec::new();
    len(&mut cm, 1, &meta("x", &[]));
    var(&mut cm, 99, 1);
    let check = |body: &[u8], why: &str| {
        let err = decode(body).unwrap_err();
        assert!(err.contains(why), "{err}");
    };
    check(
        &envelope("v1", "ConfigMap", &cm),
        "field 99 of core.v1.ConfigMap",
    );
    check(
        &envelope("example.com/v1", "Widget", b""),
        "example.v1.Widget is not in the schema",
    );
    check(b"{\"kind\": \"ConfigMap\"}", "magic");
    check(&[MAGIC, &[0x0a, 0x05]].concat(), "truncated");
}

#[test]
fn go_durations_print_as_go_prints_them() {
    for (nanos, text) in [
        (0, "0s"),
        (1_500_000_000, "1.5s"),
        (90_000_000_000, "1m30s"),
        (3_600_000_000_000, "1h0m0s"),
        (-2_000_000_000, "-2s"),
    ] {
        assert_eq!(go_duration(nanos), text);
    }
}
