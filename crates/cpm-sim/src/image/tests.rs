//! The image table and image-config parsing.

use super::*;

fn check(reference: &str, source: Option<Source>, binary_path: &str, user: (u32, u32)) {
    match (resolve(reference, "cpm"), source) {
        (Ok(spec), Some(source)) => {
            assert_eq!(spec.source, source, "{reference}");
            assert_eq!(spec.binary_path, binary_path, "{reference}");
            assert_eq!(spec.user, user, "{reference}");
        }
        (Err(e), None) => assert!(e.contains(reference), "{e}"),
        (got, want) => panic!("{reference}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn references_map_to_what_stands_for_them() {
    check(
        "cpm/cpm-certs:0.1.0",
        Some(Source::Workspace("cpm-certs")),
        "/usr/local/bin/cpm-certs",
        (65532, 65532),
    );
    check(
        "cpm/cpm-holder:0.1.0",
        Some(Source::Workspace("cpm-holder")),
        "/usr/local/bin/cpm-holder",
        (65532, 65532),
    );
    check(
        "registry.k8s.io/etcd:3.5.21-0",
        Some(Source::Host("/usr/bin/etcd")),
        "/usr/local/bin/etcd",
        (0, 0),
    );
    check(
        "registry.k8s.io/etcd@sha256:abc",
        Some(Source::Host("/usr/bin/etcd")),
        "/usr/local/bin/etcd",
        (0, 0),
    );
    check(
        "registry.k8s.io/kube-apiserver:v1.33.4",
        Some(Source::NotRunnable(NOT_YET)),
        "/usr/local/bin/kube-apiserver",
        (0, 0),
    );
    check("localhost:5000/cpm/cpm-certs:0.1.0", None, "", (0, 0));
    check("cpm/unknown:0.1.0", None, "", (0, 0));
    check("docker.io/library/busybox:1", None, "", (0, 0));
    let other =
        resolve("reg.example.com/cpm/api-proxy:0.1.0", "reg.example.com/cpm").expect("known");
    assert_eq!(other.source, Source::Workspace("api-proxy"));
    assert_eq!(other.entrypoint, ["/usr/local/bin/api-proxy"]);
}

#[test]
fn the_workspace_table_lists_every_image_folder() {
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images");
    let mut folders: Vec<String> = std::fs::read_dir(&images)
        .expect("images/")
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    assert_eq!(folders, WORKSPACE_IMAGES);
    for bin in WORKSPACE_IMAGES {
        let decl =
            std::fs::read_to_string(images.join(bin).join("image.yaml")).expect("image.yaml");
        assert!(
            decl.contains("\nuser: 65532"),
            "{bin}: the table says 65532"
        );
    }
}

#[test]
fn image_users_are_numeric() {
    assert_eq!(parse_user(""), Some((0, 0)));
    assert_eq!(parse_user("65532"), Some((65532, 65532)));
    assert_eq!(parse_user("65532:65533"), Some((65532, 65533)));
    assert_eq!(parse_user("nonroot"), None);
}
