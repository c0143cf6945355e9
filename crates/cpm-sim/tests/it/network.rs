//! Masters are network namespaces: each binds the same loopback ports (api-proxy on
//! 127.0.0.1:6445, its admin on 127.0.0.1:9606, proxy-reloader's on 127.0.0.1:9605) without
//! conflict, and each is reachable from the host on its own address; inside each, the
//! `kubernetes` Service's ClusterIP leads to the store (kube-proxy's part).

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::time::Duration;

use crate::common::{cluster, dump, eventually, pod, ready};

fn server_pod(node: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: web-{node}, namespace: default}}
spec:
  nodeName: {node}
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: cpm/cpm-holder:0.1.0
    command: [/usr/bin/python3, -m, http.server, --bind, "$(NODE_IP)", "8080"]
    env: [{{name: NODE_IP, valueFrom: {{fieldRef: {{fieldPath: status.hostIP}}}}}}]
    readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
"#
    )
}

/// `GET /version` at `https://10.96.0.1:443` from inside `netns`, verified against the cluster
/// CA for the IP 10.96.0.1 (as an in-cluster client does); the status line.
async fn in_cluster_version(netns: &str, ca_pem: &str) -> anyhow::Result<String> {
    use rustls_pki_types::pem::PemObject as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr: SocketAddr = "10.96.0.1:443".parse()?;
    let tcp = cpm_sim::net::connect_in_async(netns, addr, Duration::from_secs(5)).await?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from_pem_slice(
        ca_pem.as_bytes(),
    )?)?;
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await?;
    tls.write_all(b"GET /version HTTP/1.1\r\nHost: 10.96.0.1\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string())
}

fn get_from_host(addr: SocketAddr) -> Option<String> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_masters_bind_the_same_loopback_ports_and_are_reachable_on_their_ips()
-> anyhow::Result<()> {
    let Some(cluster) = cluster().await? else {
        return Ok(());
    };
    if !std::path::Path::new("/usr/bin/python3").is_file() {
        eprintln!("SKIPPED: /usr/bin/python3 is needed for the test's web server");
        return Ok(());
    }
    let mut masters = Vec::new();
    for name in ["master-1", "master-2"] {
        let m = cluster.add_master(name).await?;
        // The node bootstrap's api-proxy static pod needs the cluster CA on the node (cpm-certs
        // writes it on a master; here it is put there directly).
        let pki = m.root.join("etc/kubernetes/pki");
        std::fs::create_dir_all(&pki)?;
        std::fs::copy(cluster.pki_dir().join("ca.crt"), pki.join("ca.crt"))?;
        cluster.apply_yaml(&server_pod(name)).await?;
        masters.push(m);
    }
    let waited = eventually(
        "both api-proxy static pods Ready and both web pods Ready",
        Duration::from_secs(120),
        || async {
            for m in &masters {
                ready(
                    &pod(
                        &cluster,
                        "kube-system",
                        &format!("kubernetes-api-proxy-{}", m.name),
                    )
                    .await?,
                )?
                .then_some(())?;
                ready(&pod(&cluster, "default", &format!("web-{}", m.name)).await?)?
                    .then_some(())?;
            }
            Some(())
        },
    )
    .await;
    if let Err(e) = waited {
        anyhow::bail!("{e}{}", dump(&cluster).await);
    }
    for m in &masters {
        // Inside each namespace: api-proxy answers on 127.0.0.1:6445 with the store behind it.
        let code = cpm_sim::probe::http_status(
            &m.netns,
            "127.0.0.1:6445".parse()?,
            "/version",
            &[],
            true,
            Duration::from_secs(5),
        )
        .await
        .map_err(anyhow::Error::msg)?;
        assert_eq!(code, 200, "{}: /version through api-proxy", m.name);
        for admin in ["127.0.0.1:9606", "127.0.0.1:9605"] {
            let code = cpm_sim::probe::http_status(
                &m.netns,
                admin.parse()?,
                "/livez",
                &[],
                false,
                Duration::from_secs(5),
            )
            .await
            .map_err(anyhow::Error::msg)?;
            assert_eq!(code, 200, "{}: {admin}/livez", m.name);
        }
        // The `kubernetes` Service's ClusterIP reaches the store, with a certificate valid for it.
        let line = in_cluster_version(&m.netns, cluster.server().ca_pem()).await?;
        assert_eq!(
            line, "HTTP/1.1 200 OK",
            "{}: https://10.96.0.1/version",
            m.name
        );
        // From the host: the node's own address.
        let answer = get_from_host(SocketAddr::new(m.ip.into(), 8080)).unwrap_or_default();
        assert!(answer.starts_with("HTTP/1.0 200"), "{}: {answer}", m.ip);
        // proxy-reloader wrote the store's address as the upstream.
        let upstreams =
            std::fs::read_to_string(m.root.join("etc/kubernetes/api-proxy/upstreams.json"))?;
        assert!(
            upstreams.contains(&cluster.server().addr().to_string()),
            "{upstreams}"
        );
    }
    assert_ne!(masters[0].ip, masters[1].ip);
    cluster.shutdown().await;
    Ok(())
}
