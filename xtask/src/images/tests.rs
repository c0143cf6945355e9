//! Unit tests of the pure parts: tarballs, gzip, digests, image JSON, names, declarations.

use std::process::Command;

use super::oci::{self, Input, Source};
use super::registry::{Target, path_of};
use super::spec::{self, Spec};
use super::tarball::{self, Entry};

fn spec() -> Spec {
    spec::parse("description: test image\nuser: 65532\nports: [9601]\n").unwrap()
}

fn source() -> Source {
    Source {
        epoch: 1_700_000_000,
        revision: "0123456789abcdef".into(),
        url: "https://example.invalid/cpm".into(),
        version: "0.1.0".into(),
    }
}

fn assemble(exe: &[u8]) -> oci::Image {
    oci::assemble(Input {
        binary: "cpm-demo",
        exe,
        spec: &spec(),
        source: &source(),
    })
    .unwrap()
}

#[test]
fn tar_sorts_entries_and_ignores_input_order() {
    let a = vec![
        Entry::file("b/x", 0o644, b"x".to_vec()),
        Entry::dir("b", 0o755, 0, 0),
        Entry::file("a", 0o600, b"hello".to_vec()),
    ];
    let mut b = a.clone();
    b.reverse();
    let ta = tarball::tar(&a, 42).unwrap();
    assert_eq!(ta, tarball::tar(&b, 42).unwrap());
    assert_eq!(ta.len() % 512, 0);
    // Names in order: a, b/, b/x.
    let names: Vec<&[u8]> = [0, 1024, 1536]
        .iter()
        .map(|&o| {
            let n = &ta[o..o + 100];
            &n[..n.iter().position(|&c| c == 0).unwrap()]
        })
        .collect();
    assert_eq!(names, [&b"a"[..], b"b/", b"b/x"]);
    // Another mtime changes the bytes.
    assert_ne!(ta, tarball::tar(&a, 43).unwrap());
}

#[test]
fn tar_is_read_back_by_gnu_tar_with_modes_owners_and_mtime() {
    let entries = vec![
        Entry::dir("home", 0o755, 0, 0),
        Entry::dir("home/nonroot", 0o700, 65532, 65532),
        Entry::dir("tmp", 0o1777, 0, 0),
        Entry::file("hello", 0o755, b"#!/bin/true\n".to_vec()),
    ];
    let t = tarball::tar(&entries, 1_700_000_000).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.tar");
    crate::images::write_file(&path, &t).unwrap();
    let out = Command::new("tar")
        .args(["--numeric-owner", "--full-time", "--utc", "-tvf"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let listing = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = listing
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let brief: Vec<(&str, &str, &str, &str)> =
        rows.iter().map(|r| (r[0], r[1], r[4], r[5])).collect();
    assert_eq!(
        brief,
        [
            ("-rwxr-xr-x", "0/0", "22:13:20", "hello"),
            ("drwxr-xr-x", "0/0", "22:13:20", "home/"),
            ("drwx------", "65532/65532", "22:13:20", "home/nonroot/"),
            ("drwxrwxrwt", "0/0", "22:13:20", "tmp/"),
        ]
    );
    assert!(rows.iter().all(|r| r[3] == "2023-11-14"), "{listing}");
}

#[test]
fn tar_refuses_bad_paths() {
    for (entries, why) in [
        (vec![Entry::file("/abs", 0o644, vec![])], "clean relative"),
        (vec![Entry::file("a/../b", 0o644, vec![])], "clean relative"),
        (
            vec![
                Entry::file("a", 0o644, vec![]),
                Entry::file("a", 0o644, vec![]),
            ],
            "duplicate",
        ),
        (vec![Entry::file("no/parent", 0o644, vec![])], "parent"),
        (
            vec![Entry::file(&"x".repeat(100), 0o644, vec![])],
            "99 bytes",
        ),
    ] {
        let err = tarball::tar(&entries, 0).unwrap_err();
        assert!(format!("{err:#}").contains(why), "{err:#}");
    }
}

#[test]
fn gzip_is_stable_and_decodes() {
    let data = b"the same bytes give the same gzip".repeat(100);
    let a = tarball::gzip(&data).unwrap();
    assert_eq!(a, tarball::gzip(&data).unwrap());
    // Header: magic, deflate, no flags (no name), mtime 0; byte 8 is the level hint; OS 255.
    assert_eq!(&a[..8], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
    assert_eq!(a[9], 255);
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&a[..]), &mut back).unwrap();
    assert_eq!(back, data);
}

#[test]
fn sha256_has_the_oci_form() {
    assert_eq!(
        oci::sha256(b""),
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn same_inputs_give_the_same_image_and_archive() {
    let a = assemble(b"\x7fELF pretend");
    let b = assemble(b"\x7fELF pretend");
    assert_eq!(a.manifest, b.manifest);
    assert_eq!(a.config, b.config);
    assert_eq!(a.layer, b.layer);
    assert_eq!(
        a.archive("cpm/cpm-demo:0.1.0", 1).unwrap(),
        b.archive("cpm/cpm-demo:0.1.0", 1).unwrap()
    );
    assert_ne!(
        a.manifest.digest,
        assemble(b"\x7fELF other").manifest.digest
    );
}

#[test]
fn manifest_and_config_reference_each_other_by_digest() {
    let img = assemble(b"exe");
    let m: serde_json::Value = serde_json::from_slice(&img.manifest.bytes).unwrap();
    assert_eq!(m["schemaVersion"], 2);
    assert_eq!(m["mediaType"], oci::MANIFEST_TYPE);
    assert_eq!(m["config"]["digest"], img.config.digest.as_str());
    assert_eq!(m["config"]["size"], img.config.bytes.len());
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(m["layers"][0]["digest"], img.layer.digest.as_str());
    let c: serde_json::Value = serde_json::from_slice(&img.config.bytes).unwrap();
    assert_eq!(c["created"], "2023-11-14T22:13:20Z");
    assert_eq!(c["architecture"], "amd64");
    assert_eq!(c["config"]["User"], "65532:65532");
    assert_eq!(
        c["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/cpm-demo"])
    );
    assert_eq!(
        c["config"]["ExposedPorts"],
        serde_json::json!({"9601/tcp": {}})
    );
    let labels = &c["config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "cpm-demo");
    assert_eq!(labels["org.opencontainers.image.version"], "0.1.0");
    assert_eq!(
        labels["org.opencontainers.image.revision"],
        "0123456789abcdef"
    );
    assert_eq!(
        labels["org.opencontainers.image.source"],
        "https://example.invalid/cpm"
    );
    // diff_id is the digest of the uncompressed layer.
    let mut tar = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&img.layer.bytes[..]),
        &mut tar,
    )
    .unwrap();
    assert_eq!(c["rootfs"]["diff_ids"][0], oci::sha256(&tar).as_str());
}

#[test]
fn archive_holds_a_layout_and_docker_manifest() {
    let img = assemble(b"exe");
    let a = img.archive("localhost:5000/cpm/cpm-demo:0.1.0", 0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.tar");
    crate::images::write_file(&path, &a).unwrap();
    let out = Command::new("tar").arg("-tf").arg(&path).output().unwrap();
    let names = String::from_utf8(out.stdout).unwrap();
    let mut want = vec![
        "blobs/".to_string(),
        "blobs/sha256/".into(),
        "index.json".into(),
        "manifest.json".into(),
        "oci-layout".into(),
    ];
    for b in [&img.layer, &img.config, &img.manifest] {
        want.push(format!("blobs/sha256/{}", b.hex()));
    }
    want.sort();
    assert_eq!(names.lines().collect::<Vec<_>>(), want);
}

#[test]
fn push_targets_parse_and_name_repositories() {
    let t = Target::parse("localhost:5000/cpm").unwrap();
    assert_eq!(t.host, "localhost:5000");
    assert_eq!(
        t.reference("cpm-certs", "0.1.0"),
        "localhost:5000/cpm/cpm-certs:0.1.0"
    );
    assert!(t.is_loopback());
    let t = Target::parse("127.0.0.1:5000").unwrap();
    assert_eq!(t.repository("api-proxy"), "api-proxy");
    assert!(t.is_loopback());
    let t = Target::parse("registry.example.com/a/b/").unwrap();
    assert_eq!(t.reference("x", "1"), "registry.example.com/a/b/x:1");
    assert!(!t.is_loopback());
    assert!(Target::parse("[::1]:5000/cpm").unwrap().is_loopback());
    assert!(Target::parse("cpm").is_err());
    assert!(Target::parse("localhost:5000/Upper").is_err());
    assert!(Target::parse("localhost:5000/a//b").is_err());
}

#[test]
fn upload_locations_reduce_to_paths() {
    assert_eq!(
        path_of("http://127.0.0.1:1/v2/x/blobs/uploads/u?_state=s"),
        "/v2/x/blobs/uploads/u?_state=s"
    );
    assert_eq!(path_of("/v2/x/blobs/uploads/u"), "/v2/x/blobs/uploads/u");
}

#[test]
fn declarations_are_validated() {
    assert_eq!(spec().ports, [9601]);
    assert!(spec::parse("description: x\nuser: 1000\n").is_err());
    assert!(spec::parse("description: x\nuser: 0\nextra: 1\n").is_err());
    assert!(spec::parse("description: ''\nuser: 0\n").is_err());
    let root = spec::parse("description: x\nuser: 0\nrootInCluster: writes host files\n").unwrap();
    assert_eq!(root.root_in_cluster.as_deref(), Some("writes host files"));
}

#[test]
fn binaries_are_found_in_metadata_and_helpers_skipped() {
    let meta = serde_json::json!({"packages": [
        {"name": "cpm-core", "version": "0.1.0", "repository": "r", "targets": [{"name": "cpm_core", "kind": ["lib"]}]},
        {"name": "xtask", "version": "0.1.0", "targets": [{"name": "xtask", "kind": ["bin"]}]},
        {"name": "cpm-certs", "version": "0.1.0", "repository": "r", "targets": [{"name": "cpm_certs", "kind": ["lib"]}, {"name": "cpm-certs", "kind": ["bin"]}]},
        {"name": "api-proxy", "version": "0.1.0", "repository": "r", "targets": [{"name": "api-proxy", "kind": ["bin"]}]},
    ]});
    let bins = super::compile::binaries_of(&meta).unwrap();
    let names: Vec<&str> = bins.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["api-proxy", "cpm-certs"]);
    assert_eq!(bins[1].package, "cpm-certs");
}

#[test]
fn every_declaration_in_the_tree_parses() {
    let root = crate::cmd::workspace_root();
    for e in std::fs::read_dir(root.join("images")).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            let name = e.file_name().to_string_lossy().into_owned();
            spec::load(&root, &name).unwrap();
        }
    }
}
