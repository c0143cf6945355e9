//! Unit tests of issued service-account tokens.

use std::time::{Duration, SystemTime};

use base64::Engine as _;

use super::*;

fn request(expiration: Duration) -> Request {
    Request {
        namespace: "ns1".into(),
        name: "robot".into(),
        uid: "u-1".into(),
        audiences: vec!["https://kubernetes.default.svc.cluster.local".into()],
        expiration,
        bound: Some(Bound {
            kind: "Pod".into(),
            name: "p1".into(),
            uid: "p-uid".into(),
        }),
    }
}

#[test]
fn a_token_authenticates_until_it_expires() {
    let mut tokens = Tokens::new("https://kubernetes.default.svc.cluster.local");
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let (token, expires) = tokens.issue(t0, request(Duration::from_secs(600)));
    assert_eq!(expires, t0 + Duration::from_secs(600));
    let check = |at: SystemTime, token: &str, valid: bool| {
        assert_eq!(tokens.lookup(token, at).is_some(), valid, "at {at:?}");
    };
    check(t0, &token, true);
    check(t0 + Duration::from_secs(599), &token, true);
    check(t0 + Duration::from_secs(600), &token, false);
    // A forged signature or another server's token is nothing.
    let forged = format!("{}x", &token[..token.len() - 1]);
    check(t0, &forged, false);
    check(t0, "not-a-token", false);
    let issued = tokens.lookup(&token, t0).unwrap();
    assert_eq!(issued.user.username, "system:serviceaccount:ns1:robot");
    assert_eq!(
        issued.user.groups,
        ["system:serviceaccounts", "system:serviceaccounts:ns1"]
    );
    assert_eq!(
        issued.user.extra["authentication.kubernetes.io/pod-name"],
        ["p1"]
    );
}

#[test]
fn a_token_is_a_jwt_with_kube_apiserver_claims() {
    let mut tokens = Tokens::new("https://issuer.example");
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let (token, _) = tokens.issue(t0, request(Duration::from_secs(3600)));
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let claims: serde_json::Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["iss"], "https://issuer.example");
    assert_eq!(claims["sub"], "system:serviceaccount:ns1:robot");
    assert_eq!(claims["exp"], 1_800_003_600);
    assert_eq!(claims["kubernetes.io"]["serviceaccount"]["uid"], "u-1");
    assert_eq!(claims["kubernetes.io"]["pod"]["name"], "p1");
    // Expired tokens are forgotten when the next one is issued.
    let later = t0 + Duration::from_secs(7200);
    tokens.issue(later, request(Duration::from_secs(600)));
    assert!(tokens.lookup(&token, t0).is_none());
}

#[test]
fn audiences_intersect_in_the_wanted_order() {
    let s = |v: &[&str]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(
        intersect(&s(&["b", "a"]), &s(&["a", "b", "c"])),
        s(&["b", "a"])
    );
    assert!(intersect(&s(&["x"]), &s(&["a"])).is_empty());
}

#[test]
fn hmac_matches_rfc_4231_shape() {
    // HMAC-SHA256 with a 32-byte key of 0x0b over "Hi There" (RFC 4231 case 1 uses 20 bytes;
    // a key shorter than the block is zero-padded, so the 32-byte zero-padded key is the same).
    let mut key = [0u8; 32];
    key[..20].copy_from_slice(&[0x0b; 20]);
    let mac = hmac_sha256(&key, b"Hi There");
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    );
}
