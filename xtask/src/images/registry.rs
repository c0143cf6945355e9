//! Pushing images over the OCI distribution API with a small hyper client: blobs by monolithic
//! upload (`POST` then `PUT ?digest=`), skipped when `HEAD` finds them, then the manifest by tag.
//! Plain HTTP, so only registries on loopback; others go through `skopeo copy` (see the README).

use std::net::IpAddr;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

use super::oci::{Blob, Image, MANIFEST_TYPE};

/// Where to push: `REGISTRY[/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port` (or `host`).
    pub host: String,
    /// Repository prefix, possibly empty (`cpm` in `localhost:5000/cpm`).
    pub prefix: String,
}

impl Target {
    /// Parses `REGISTRY[/PREFIX]`: the first component must look like a registry host (has a
    /// `.` or a `:`, or is `localhost`), as in Docker's references.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let s = s.trim_end_matches('/');
        let (host, prefix) = s.split_once('/').unwrap_or((s, ""));
        if !(host.contains('.') || host.contains(':') || host == "localhost") {
            bail!("--push {s}: {host:?} is not a registry host (want e.g. localhost:5000/cpm)");
        }
        let bad_component = |c: &str| {
            c.is_empty()
                || !c
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
        };
        if !prefix.is_empty() && prefix.split('/').any(bad_component) {
            bail!("--push {s}: prefix {prefix:?} is not a valid repository path");
        }
        Ok(Target {
            host: host.into(),
            prefix: prefix.into(),
        })
    }

    /// The repository of `binary`: `PREFIX/binary`.
    pub fn repository(&self, binary: &str) -> String {
        if self.prefix.is_empty() {
            binary.into()
        } else {
            format!("{}/{binary}", self.prefix)
        }
    }

    /// The full reference `REGISTRY/PREFIX/binary:tag`.
    pub fn reference(&self, binary: &str, tag: &str) -> String {
        format!("{}/{}:{tag}", self.host, self.repository(binary))
    }

    /// Whether the host is a loopback address or `localhost`.
    pub fn is_loopback(&self) -> bool {
        let h = self.host.as_str();
        let name = if let Some(rest) = h.strip_prefix('[') {
            rest.split(']').next().unwrap_or(rest)
        } else {
            h.rsplit_once(':').map_or(h, |(n, _)| n)
        };
        name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// Fails unless this client can push to `target`: plain HTTP without auth, so loopback only.
pub fn ensure_supported(target: &Target) -> anyhow::Result<()> {
    if !target.is_loopback() {
        bail!(
            "--push {}: this client speaks plain HTTP without auth, so only loopback registries; \
             for others build the archives, then: skopeo copy \
             oci-archive:target/images/BINARY.tar docker://{}/{}BINARY:TAG",
            target.host,
            target.host,
            if target.prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", target.prefix)
            }
        );
    }
    Ok(())
}

/// What one push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The full reference pushed.
    pub reference: String,
    /// Blobs uploaded (the others were already there).
    pub uploaded: usize,
    /// The manifest digest the registry answered with.
    pub digest: String,
}

/// Pushes every image to `target`.
pub fn push(target: &Target, images: &[Image]) -> anyhow::Result<Vec<Pushed>> {
    ensure_supported(target)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut out = Vec::new();
        for image in images {
            let p = push_one(target, image)
                .await
                .with_context(|| format!("push {}", target.reference(&image.binary, &image.tag)))?;
            eprintln!(
                "pushed {} ({} blobs uploaded) {}",
                p.reference, p.uploaded, p.digest
            );
            out.push(p);
        }
        Ok(out)
    })
}

async fn push_one(target: &Target, image: &Image) -> anyhow::Result<Pushed> {
    let repo = target.repository(&image.binary);
    let mut uploaded = 0;
    for blob in [&image.layer, &image.config] {
        if upload_blob(&target.host, &repo, blob).await? {
            uploaded += 1;
        }
    }
    let path = format!("/v2/{repo}/manifests/{}", image.tag);
    let resp = request(
        &target.host,
        Method::PUT,
        &path,
        Some(MANIFEST_TYPE),
        image.manifest.bytes.clone().into(),
    )
    .await?;
    expect(&resp, StatusCode::CREATED, &path)?;
    let digest = resp
        .header("docker-content-digest")
        .unwrap_or(&image.manifest.digest)
        .to_string();
    if digest != image.manifest.digest {
        bail!(
            "{path}: registry computed {digest}, expected {}",
            image.manifest.digest
        );
    }
    Ok(Pushed {
        reference: target.reference(&image.binary, &image.tag),
        uploaded,
        digest,
    })
}

/// Uploads `blob` unless the registry has it; returns whether it uploaded.
async fn upload_blob(host: &str, repo: &str, blob: &Blob) -> anyhow::Result<bool> {
    let head = format!("/v2/{repo}/blobs/{}", blob.digest);
    let resp = request(host, Method::HEAD, &head, None, Bytes::new()).await?;
    if resp.status == StatusCode::OK {
        return Ok(false);
    }
    let start = format!("/v2/{repo}/blobs/uploads/");
    let resp = request(host, Method::POST, &start, None, Bytes::new()).await?;
    expect(&resp, StatusCode::ACCEPTED, &start)?;
    let location = resp
        .header("location")
        .with_context(|| format!("POST {start}: no Location header"))?;
    let mut url = path_of(location).to_string();
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str("digest=");
    url.push_str(&blob.digest.replace(':', "%3A"));
    let resp = request(
        host,
        Method::PUT,
        &url,
        Some("application/octet-stream"),
        blob.bytes.clone().into(),
    )
    .await?;
    expect(&resp, StatusCode::CREATED, &url)?;
    Ok(true)
}

/// The path and query of a `Location`, which may be absolute (`http://host/v2/…`) or not.
pub fn path_of(location: &str) -> &str {
    match location.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => location,
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Response {
    /// The status.
    pub status: StatusCode,
    headers: hyper::HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Response {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn expect(resp: &Response, want: StatusCode, what: &str) -> anyhow::Result<()> {
    if resp.status != want {
        bail!(
            "{what}: HTTP {} (wanted {want}): {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        );
    }
    Ok(())
}

/// One HTTP/1.1 request on a fresh connection to `host`.
pub async fn request(
    host: &str,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: Bytes,
) -> anyhow::Result<Response> {
    let what = format!("{method} http://{host}{path}");
    let tcp = tokio::net::TcpStream::connect(host)
        .await
        .with_context(|| format!("{what}: connect"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .with_context(|| format!("{what}: handshake"))?;
    let conn = tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .header("content-length", body.len());
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let req = req.body(Full::new(body))?;
    let resp = sender
        .send_request(req)
        .await
        .with_context(|| format!("{what}: request"))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .with_context(|| format!("{what}: body"))?
        .to_bytes();
    drop(sender);
    conn.abort();
    Ok(Response {
        status,
        headers,
        body,
    })
}
