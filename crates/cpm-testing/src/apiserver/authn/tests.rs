//! Unit tests of request-header, x509 and bearer-token authentication.

use http::{HeaderMap, HeaderValue};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::super::tls::Ca;
use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::try_from(*k).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn leaf(ca: &Ca, cn: &str, groups: &[&str]) -> CertificateDer<'static> {
    let ck = ca.client(&UserInfo::new(cn, groups)).unwrap();
    CertificateDer::from_pem_slice(ck.cert_pem.as_bytes()).unwrap()
}

#[test]
fn identity_headers_give_user_groups_and_extra() {
    let rh = RequestHeader::standard("");
    let h = headers(&[
        ("x-remote-user", "alice"),
        ("x-remote-group", "devs"),
        ("x-remote-group", "ops"),
        ("x-remote-extra-Scopes", "a"),
        ("x-remote-extra-scopes", "b"),
        ("x-remote-extra-example.com%2fteam", "blue"),
    ]);
    let user = rh.user_from_headers(&h).unwrap();
    assert_eq!(user.username, "alice");
    assert_eq!(user.groups, ["devs", "ops"]);
    assert_eq!(user.extra["scopes"], ["a", "b"]);
    assert_eq!(user.extra["example.com/team"], ["blue"]);
    assert_eq!(
        rh.user_from_headers(&headers(&[("x-remote-group", "g")])),
        None
    );
    assert_eq!(
        rh.user_from_headers(&headers(&[("x-remote-user", " ")])),
        None
    );
}

#[test]
fn strip_removes_every_identity_header() {
    let rh = RequestHeader {
        username_headers: vec!["X-Custom-User".into()],
        ..RequestHeader::standard("")
    };
    let mut h = headers(&[
        ("x-custom-user", "mallory"),
        ("x-remote-group", "system:masters"),
        ("x-remote-extra-a", "1"),
        ("x-remote-user", "kept: not configured here"),
        ("accept", "application/json"),
    ]);
    rh.strip(&mut h);
    let mut left: Vec<&str> = h.keys().map(http::HeaderName::as_str).collect();
    left.sort_unstable();
    assert_eq!(left, ["accept", "x-remote-user"]);
}

#[test]
fn extra_keys_escape_and_unescape() {
    for key in ["scopes", "example.com/team", "a b%c"] {
        assert_eq!(unescape(&escape_extra_key(key)), key);
    }
    assert_eq!(unescape("bad%zz%4"), "bad%zz%4");
}

/// `check(peer, headers, expected)` against a listener trusting `client` for x509 and `proxy`
/// (common name `front-proxy-client` only) for request-header.
#[test]
fn union_order_is_request_header_then_x509_then_next() {
    let (client, proxy) = (Ca::generate().unwrap(), Ca::generate().unwrap());
    let auth = CertAuth {
        client_cas: vec![client.cert_der()],
        request_header: Some((
            vec![proxy.cert_der()],
            RequestHeader {
                allowed_names: vec!["front-proxy-client".into()],
                ..RequestHeader::standard("")
            },
        )),
    };
    let asserted = headers(&[("x-remote-user", "alice"), ("x-remote-group", "devs")]);
    let check = |peer: Option<&CertificateDer<'_>>, h: &HeaderMap, expected: CertOutcome| {
        assert_eq!(auth.authenticate(peer, h), expected);
    };
    let front = leaf(&proxy, "front-proxy-client", &[]);
    check(
        Some(&front),
        &asserted,
        CertOutcome::User {
            user: UserInfo::new("alice", &["devs"]),
            via_proxy: true,
        },
    );
    // A proxy certificate without a username header is no identity: on to the token.
    check(Some(&front), &HeaderMap::new(), CertOutcome::Next);
    // A proxy certificate with a name that may not assert identities.
    check(
        Some(&leaf(&proxy, "intruder", &[])),
        &asserted,
        CertOutcome::Refused,
    );
    // A client certificate is its own identity: the headers are not read.
    check(
        Some(&leaf(&client, "bob", &["ops"])),
        &asserted,
        CertOutcome::User {
            user: UserInfo::new("bob", &["ops"]),
            via_proxy: false,
        },
    );
    // Issued by neither CA (rustls would have refused it; here nothing trusts it).
    check(
        Some(&leaf(&Ca::generate().unwrap(), "eve", &[])),
        &asserted,
        CertOutcome::Next,
    );
    check(None, &asserted, CertOutcome::Next);
    assert_eq!(auth.roots().len(), 2);
}

#[test]
fn bearer_tokens_are_read_from_the_authorization_header() {
    let check = |value: Option<&str>, expected: Option<Option<&str>>| {
        let h = match value {
            Some(v) => headers(&[("authorization", v)]),
            None => HeaderMap::new(),
        };
        assert_eq!(bearer(&h), expected, "{value:?}");
    };
    check(Some("Bearer abc"), Some(Some("abc")));
    check(Some("bearer  abc "), Some(Some("abc")));
    check(Some("Basic dXNlcg=="), Some(None));
    check(Some("Bearer "), Some(None));
    check(None, None);
}
