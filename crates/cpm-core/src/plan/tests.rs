//! Tests of planning and plan rendering.

use std::os::unix::fs::PermissionsExt;

use super::*;

fn root() -> (tempfile::TempDir, NodeRoot) {
    let dir = tempfile::tempdir().unwrap();
    let root = NodeRoot::new(dir.path());
    (dir, root)
}

/// Plans `set` on `root` and checks the operation kinds in order.
fn check(root: &NodeRoot, set: &FileSet, expected: &[&str]) -> Plan {
    let p = plan(root, set).unwrap();
    let kinds: Vec<_> = p.ops.iter().map(Op::kind).collect();
    assert_eq!(kinds, expected);
    p
}

fn put(root: &NodeRoot, rel: &str, bytes: &[u8], mode: u32) {
    let full = root.join(rel).unwrap();
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    crate::apply::write_atomic(&full, bytes, mode, None, None).unwrap();
}

#[test]
fn plans_create_replace_chmod_delete_and_nothing_when_matching() {
    let (_d, root) = root();
    let mut set = FileSet::new();
    set.dir("etc", 0o755).unwrap();
    set.file(DesiredFile::new("etc/new", b"n\n".to_vec(), 0o644))
        .unwrap();
    set.file(DesiredFile::new("etc/changed", b"v2\n".to_vec(), 0o600))
        .unwrap();
    set.file(DesiredFile::new("etc/mode", b"m\n".to_vec(), 0o600))
        .unwrap();
    set.file(DesiredFile::new("etc/same", b"s\n".to_vec(), 0o600))
        .unwrap();
    set.own("etc/orphan")
        .unwrap()
        .own("etc/absent-orphan")
        .unwrap();
    put(&root, "etc/changed", b"v1\n", 0o600);
    put(&root, "etc/mode", b"m\n", 0o644);
    put(&root, "etc/same", b"s\n", 0o600);
    put(&root, "etc/orphan", b"o\n", 0o600);
    put(&root, "etc/unowned", b"u\n", 0o600);
    std::fs::set_permissions(
        root.join("etc").unwrap(),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();

    let p = check(
        &root,
        &set,
        &["chmod", "create", "replace", "chmod", "delete"],
    );
    assert_eq!(p.summary()[1], ("create", 1));
    crate::apply::apply(&root, &p, &Default::default()).unwrap();
    check(&root, &set, &[]);
    assert!(
        root.join("etc/unowned").unwrap().exists(),
        "unowned files are never deleted"
    );
}

#[test]
fn a_directory_in_the_way_is_an_error() {
    let (_d, root) = root();
    std::fs::create_dir_all(root.join("etc/x").unwrap()).unwrap();
    let mut set = FileSet::new();
    set.file(DesiredFile::new("etc/x", b"".to_vec(), 0o600))
        .unwrap();
    let err = plan(&root, &set).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("etc/x is in the way: expected a file"),
        "{err}"
    );
}

#[test]
fn render_shows_diffs_but_never_secret_bytes() {
    let (_d, root) = root();
    put(&root, "a.conf", b"one\ntwo\n", 0o644);
    put(&root, "k.key", b"OLD-SECRET", 0o600);
    let mut set = FileSet::new();
    set.file(DesiredFile::new("a.conf", b"one\nthree\n".to_vec(), 0o644).note("because"))
        .unwrap();
    set.file(DesiredFile::new("k.key", b"NEW-SECRET".to_vec(), 0o600).secret())
        .unwrap();
    set.file(DesiredFile::new("n.key", b"FRESH-SECRET".to_vec(), 0o600).secret())
        .unwrap();
    let text = plan(&root, &set).unwrap().render();
    assert!(
        text.contains("replace a.conf (mode 0644)\n  # because\n--- a/a.conf\n+++ b/a.conf\n"),
        "{text}"
    );
    assert!(text.contains("-two\n+three\n"), "{text}");
    assert!(!text.contains("SECRET"), "{text}");
    assert!(
        text.contains(&format!(
            "secret content: sha256 {} -> {}",
            sha256_hex(b"OLD-SECRET"),
            sha256_hex(b"NEW-SECRET")
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "create n.key (mode 0600)\n  secret content: sha256 none -> {}",
            sha256_hex(b"FRESH-SECRET")
        )),
        "{text}"
    );
}

#[test]
fn sha256_is_hex() {
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn symlinks_are_created_repointed_left_alone_and_unlinked() {
    let (_d, root) = root();
    let mut set = FileSet::new();
    set.symlink("home/.kube/config", "/etc/kubernetes/admin.conf")
        .unwrap();
    let p = check(&root, &set, &["symlink"]);
    assert_eq!(
        p.render(),
        "symlink home/.kube/config -> /etc/kubernetes/admin.conf\n"
    );
    crate::apply::apply(&root, &p, &Default::default()).unwrap();
    assert_eq!(
        std::fs::read_link(root.join("home/.kube/config").unwrap()).unwrap(),
        Path::new("/etc/kubernetes/admin.conf")
    );
    check(&root, &set, &[]);

    let mut other = FileSet::new();
    other.symlink("home/.kube/config", "/elsewhere").unwrap();
    let p = check(&root, &other, &["symlink"]);
    assert!(
        p.render().contains("(was -> /etc/kubernetes/admin.conf)"),
        "{}",
        p.render()
    );

    let mut gone = FileSet::new();
    gone.own("home/.kube/config").unwrap();
    let p = check(&root, &gone, &["delete"]);
    crate::apply::apply(&root, &p, &Default::default()).unwrap();
    assert!(std::fs::symlink_metadata(root.join("home/.kube/config").unwrap()).is_err());

    put(&root, "home/.kube/config", b"user file", 0o600);
    let err = plan(&root, &set).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("is in the way: expected a symlink"),
        "{err}"
    );
}
