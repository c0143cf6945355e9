//! OCI images as bytes: the root filesystem layer, the config, the manifest, and the
//! `oci-archive` (a tar of an OCI image layout, plus Docker's `manifest.json` so `docker load`
//! of any version reads it too). Everything is a pure function of its inputs.

use anyhow::Context;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::spec::{NONROOT, Spec};
use super::tarball::{self, Entry};

/// OCI media types.
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Where the binary sits in every image.
pub const BIN_DIR: &str = "usr/local/bin";

/// A content-addressed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// Its media type.
    pub media_type: &'static str,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// `sha256:<hex>` of the bytes.
    pub digest: String,
}

impl Blob {
    /// Hashes `bytes`.
    pub fn new(media_type: &'static str, bytes: Vec<u8>) -> Self {
        let digest = sha256(&bytes);
        Blob {
            media_type,
            bytes,
            digest,
        }
    }

    /// The hex part of the digest.
    pub fn hex(&self) -> &str {
        self.digest.trim_start_matches("sha256:")
    }

    /// An OCI descriptor of this blob.
    fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len()})
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Where and when the sources come from (labels, `created`, every mtime).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Seconds since the epoch: `SOURCE_DATE_EPOCH`, else the last commit's time, else 0.
    pub epoch: u64,
    /// The git commit, or `unknown`.
    pub revision: String,
    /// The repository URL.
    pub url: String,
    /// The workspace version (the tag).
    pub version: String,
}

/// What goes into one image.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The binary name (image name, entrypoint).
    pub binary: &'a str,
    /// The executable's bytes.
    pub exe: &'a [u8],
    /// The image declaration.
    pub spec: &'a Spec,
    /// Provenance.
    pub source: &'a Source,
}

/// An assembled image.
#[derive(Debug, Clone)]
pub struct Image {
    /// The binary name.
    pub binary: String,
    /// The tag (workspace version).
    pub tag: String,
    /// The gzipped root filesystem layer.
    pub layer: Blob,
    /// The uncompressed layer's size.
    pub layer_tar_size: usize,
    /// The image config.
    pub config: Blob,
    /// The image manifest.
    pub manifest: Blob,
    /// The executable's size.
    pub exe_size: usize,
}

/// `/etc/passwd` of every image: root and nonroot, no shells.
pub fn passwd() -> String {
    format!(
        "root:x:0:0:root:/root:/sbin/nologin\n\
         nonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n"
    )
}

/// `/etc/group` of every image.
pub fn group() -> String {
    format!("root:x:0:\nnonroot:x:{NONROOT}:\n")
}

/// The root filesystem: the binary, passwd/group, the nonroot home, an empty sticky `/tmp`.
pub fn rootfs(binary: &str, exe: &[u8]) -> Vec<Entry> {
    vec![
        Entry::dir("etc", 0o755, 0, 0),
        Entry::file("etc/passwd", 0o644, passwd().into_bytes()),
        Entry::file("etc/group", 0o644, group().into_bytes()),
        Entry::dir("home", 0o755, 0, 0),
        Entry::dir("home/nonroot", 0o700, NONROOT, NONROOT),
        Entry::dir("root", 0o700, 0, 0),
        Entry::dir("tmp", 0o1777, 0, 0),
        Entry::dir("usr", 0o755, 0, 0),
        Entry::dir("usr/local", 0o755, 0, 0),
        Entry::dir(BIN_DIR, 0o755, 0, 0),
        Entry::file(&format!("{BIN_DIR}/{binary}"), 0o755, exe.to_vec()),
    ]
}

/// RFC 3339 UTC of an epoch second.
pub fn rfc3339(epoch: u64) -> anyhow::Result<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(epoch)?)
        .context("timestamp out of range")?;
    Ok(t.format(&time::format_description::well_known::Rfc3339)?)
}

/// Assembles the image of one binary.
pub fn assemble(input: Input<'_>) -> anyhow::Result<Image> {
    let Input {
        binary,
        exe,
        spec,
        source,
    } = input;
    let layer_tar = tarball::tar(&rootfs(binary, exe), source.epoch)
        .with_context(|| format!("{binary}: layer tarball"))?;
    let diff_id = sha256(&layer_tar);
    let layer = Blob::new(LAYER_TYPE, tarball::gzip(&layer_tar)?);
    let created = rfc3339(source.epoch)?;
    let labels = json!({
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.description": spec.description,
        "org.opencontainers.image.licenses": "Apache-2.0",
        "org.opencontainers.image.revision": source.revision,
        "org.opencontainers.image.source": source.url,
        "org.opencontainers.image.title": binary,
        "org.opencontainers.image.version": source.version,
    });
    let mut config = json!({
        "User": format!("{0}:{0}", spec.user),
        "Entrypoint": [format!("/{BIN_DIR}/{binary}")],
        "Env": [format!("PATH=/{BIN_DIR}")],
        "WorkingDir": "/",
        "Labels": labels,
    });
    if !spec.ports.is_empty() {
        let ports: serde_json::Map<String, Value> = spec
            .ports
            .iter()
            .map(|p| (format!("{p}/tcp"), json!({})))
            .collect();
        config["ExposedPorts"] = Value::Object(ports);
    }
    let config = json!({
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "cargo xtask images"}],
    });
    let config = Blob::new(CONFIG_TYPE, serde_json::to_vec(&config)?);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
        "annotations": {
            "org.opencontainers.image.created": created,
            "org.opencontainers.image.revision": source.revision,
            "org.opencontainers.image.source": source.url,
            "org.opencontainers.image.title": binary,
            "org.opencontainers.image.version": source.version,
        },
    });
    let manifest = Blob::new(MANIFEST_TYPE, serde_json::to_vec(&manifest)?);
    Ok(Image {
        binary: binary.into(),
        tag: source.version.clone(),
        layer,
        layer_tar_size: layer_tar.len(),
        config,
        manifest,
        exe_size: exe.len(),
    })
}

impl Image {
    /// The `oci-archive` of this image, named `reference` (`NAME:TAG`) in the index (as
    /// `io.containerd.image.name`, with the tag as `org.opencontainers.image.ref.name`) and in
    /// Docker's `manifest.json`. The manifest digest does not depend on the name.
    pub fn archive(&self, reference: &str, mtime: u64) -> anyhow::Result<Vec<u8>> {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": INDEX_TYPE,
            "manifests": [{
                "mediaType": MANIFEST_TYPE,
                "digest": self.manifest.digest,
                "size": self.manifest.bytes.len(),
                "annotations": {
                    "io.containerd.image.name": reference,
                    "org.opencontainers.image.ref.name": self.tag,
                },
            }],
        });
        let docker = json!([{
            "Config": format!("blobs/sha256/{}", self.config.hex()),
            "RepoTags": [reference],
            "Layers": [format!("blobs/sha256/{}", self.layer.hex())],
        }]);
        let mut entries = vec![
            Entry::dir("blobs", 0o755, 0, 0),
            Entry::dir("blobs/sha256", 0o755, 0, 0),
            Entry::file(
                "oci-layout",
                0o644,
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            Entry::file("index.json", 0o644, serde_json::to_vec(&index)?),
            Entry::file("manifest.json", 0o644, serde_json::to_vec(&docker)?),
        ];
        for blob in [&self.layer, &self.config, &self.manifest] {
            entries.push(Entry::file(
                &format!("blobs/sha256/{}", blob.hex()),
                0o644,
                blob.bytes.clone(),
            ));
        }
        tarball::tar(&entries, mtime).with_context(|| format!("{}: archive", self.binary))
    }
}
