//! `/root/.kube/config`: every case, each from a converged node.

use std::os::unix::fs::symlink;

use super::*;

const LINK: &str = "root/.kube/config";
const TARGET: &str = "/etc/kubernetes/admin.conf";

fn link_of(node: &Node) -> Option<PathBuf> {
    std::fs::read_link(node.root.join(LINK)).ok()
}

/// Sets up `prepare` on a fresh node, runs one pass, and returns the node.
fn pass(extra_config: &str, prepare: impl FnOnce(&Node)) -> Node {
    let node = Node::new(extra_config);
    prepare(&node);
    let out = node.run(&["--once", "--no-rbac"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    node
}

fn mkdir(node: &Node, mode: u32) {
    std::fs::create_dir_all(node.root.join("root/.kube")).unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(node.root.join("root/.kube"))
            .unwrap()
            .permissions(),
        mode,
    );
    std::fs::set_permissions(
        node.root.join("root/.kube"),
        std::os::unix::fs::PermissionsExt::from_mode(mode),
    )
    .unwrap();
}

#[test]
fn absent_and_kube_dir_missing_creates_both() {
    let node = pass("", |_| {});
    assert_eq!(link_of(&node).as_deref(), Some(Path::new(TARGET)));
    assert_eq!(node.root.entries()["root/.kube"].mode, 0o700);
}

#[test]
fn an_existing_kube_dir_keeps_its_mode() {
    let node = pass("", |n| mkdir(n, 0o755));
    assert_eq!(link_of(&node).as_deref(), Some(Path::new(TARGET)));
    assert_eq!(
        node.root.entries()["root/.kube"].mode,
        0o755,
        "not ours to chmod"
    );
}

#[test]
fn a_correct_symlink_is_left_alone() {
    let node = pass("", |n| {
        mkdir(n, 0o700);
        symlink(TARGET, n.root.join(LINK)).unwrap();
    });
    let before = node.root.entries()[LINK].clone();
    let out = node.run(&["--once", "--no-rbac"]);
    assert_eq!(code(&out), 0);
    assert_eq!(node.root.entries()[LINK], before, "same inode");
}

#[test]
fn a_dangling_symlink_is_repaired() {
    let node = pass("", |n| {
        mkdir(n, 0o700);
        symlink("/etc/kubernetes/old-admin.conf", n.root.join(LINK)).unwrap();
    });
    assert_eq!(link_of(&node).as_deref(), Some(Path::new(TARGET)));
}

#[test]
fn a_symlink_pointing_elsewhere_is_kept_and_reported() {
    let node = pass("", |n| {
        mkdir(n, 0o700);
        cpm_core::apply::write_atomic(
            &n.root.join("root/my-kubeconfig"),
            b"mine",
            0o600,
            None,
            None,
        )
        .unwrap();
        symlink("/root/my-kubeconfig", n.root.join(LINK)).unwrap();
    });
    assert_eq!(
        link_of(&node).as_deref(),
        Some(Path::new("/root/my-kubeconfig"))
    );
    let out = node.run(&["--once", "--no-rbac", "--log-format", "json"]);
    assert!(
        stderr(&out).contains("points elsewhere; left alone"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_regular_file_is_never_overwritten() {
    let node = pass("", |n| {
        mkdir(n, 0o700);
        cpm_core::apply::write_atomic(
            &n.root.join(LINK),
            b"user's own kubeconfig",
            0o600,
            None,
            None,
        )
        .unwrap();
    });
    assert_eq!(node.root.read(LINK), b"user's own kubeconfig");
    let out = node.run(&["--once", "--no-rbac"]);
    assert!(
        stderr(&out)
            .contains("a regular file is in place of the root kubeconfig symlink; left alone"),
        "{}",
        stderr(&out)
    );
    assert_eq!(node.root.read(LINK), b"user's own kubeconfig");
}

#[test]
fn switched_off_removes_only_our_symlink() {
    let node = pass("", |_| {});
    node.set_config("rootKubeconfigSymlink: false\n");
    let plan = node.run(&["--dry-run", "--no-rbac"]);
    assert_eq!(
        stdout(&plan),
        format!("delete {LINK} (symlink -> {TARGET})\n")
    );
    assert_eq!(code(&node.run(&["--once", "--no-rbac"])), 0);
    assert!(
        std::fs::symlink_metadata(node.root.join(LINK)).is_err(),
        "ours is removed"
    );
    assert!(
        node.root.join("etc/kubernetes/admin.conf").exists(),
        "admin.conf stays"
    );

    let foreign = pass("rootKubeconfigSymlink: false\n", |n| {
        mkdir(n, 0o700);
        symlink("/root/other", n.root.join(LINK)).unwrap();
    });
    assert_eq!(
        link_of(&foreign).as_deref(),
        Some(Path::new("/root/other")),
        "a foreign symlink stays"
    );
}
