//! Tests of content-free parse errors.

use super::*;

const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Doc {
    name: String,
    port: u16,
}

/// Parses `text` as a `Doc` and checks the error names `want` and holds none of `secret`.
fn check(text: &str, want: &str, secret: &str) {
    let err = from_str::<Doc>(text).unwrap_err();
    assert!(err.contains(want), "{err:?} should contain {want:?}");
    assert!(!err.contains(secret), "{err:?} echoes {secret:?}");
    assert!(!err.contains('\n'), "{err:?}");
}

#[test]
fn errors_name_the_reason_and_never_the_content() {
    // A private key given where a document was expected: a string, not a mapping.
    check(KEY, "expected mapping", "MIGHAgEA");
    // A syntax error: the location, no snippet of the lines around it.
    check(
        "name: a\nport: [1\nSECRETVALUE: x: y\n",
        "line",
        "SECRETVALUE",
    );
    // A wrong value: the field's type, not the value.
    check("name: a\nport: TOPSECRET\n", "invalid", "TOPSECRET");
    // An unknown field keeps its (short) name: it is a key, not a value.
    check(
        "name: a\nport: 1\nextra: s3cr3t\n",
        "unknown field `extra`",
        "s3cr3t",
    );
}

#[test]
fn redact_replaces_quoted_values_and_cuts_long_names() {
    assert_eq!(
        redact("invalid type: string \"a \\\"b\\\" c\", expected u16"),
        "invalid type: string \"…\", expected u16"
    );
    let long = "k".repeat(100);
    assert_eq!(
        redact(&format!("unknown field `{long}`")),
        format!("unknown field `{}…`", "k".repeat(64))
    );
    assert_eq!(redact("a\n  b"), "a b");
    // cpm's own message about one field's value keeps the value.
    assert_eq!(
        redact("\"bad name!\" is not a valid DNS name"),
        "\"bad name!\" is not a valid DNS name"
    );
}
