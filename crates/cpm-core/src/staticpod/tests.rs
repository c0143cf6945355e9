//! Tests of the static-pod checksum: it changes exactly when the manifest or a referenced file
//! changes.

use super::*;

fn files<'a>(pairs: &[(&str, Option<&'a [u8]>)]) -> BTreeMap<String, FileContent<'a>> {
    pairs.iter().map(|(p, c)| ((*p).to_string(), *c)).collect()
}

#[test]
fn changes_exactly_with_its_inputs() {
    let base = checksum("m", &files(&[("/a", Some(b"1")), ("/b", Some(b"2"))]));
    assert_eq!(base.len(), 64);
    assert_eq!(
        base,
        checksum("m", &files(&[("/b", Some(b"2")), ("/a", Some(b"1"))])),
        "order-independent"
    );
    for other in [
        checksum("m2", &files(&[("/a", Some(b"1")), ("/b", Some(b"2"))])),
        checksum("m", &files(&[("/a", Some(b"1")), ("/b", Some(b"3"))])),
        checksum("m", &files(&[("/a", Some(b"1")), ("/b", None)])),
        checksum("m", &files(&[("/a", Some(b"1")), ("/b", Some(b""))])),
        checksum("m", &files(&[("/a", Some(b"12")), ("/b", Some(b""))])),
        checksum("m", &files(&[("/a", Some(b"1"))])),
    ] {
        assert_ne!(base, other);
    }
}
