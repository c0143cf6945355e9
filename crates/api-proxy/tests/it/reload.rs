//! The upstream file: reloads under load, invalid files, removal, and the last good list.

use std::time::Duration;

use api_proxy::pool::Health;

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_under_500_open_connections_drops_none() {
    let cluster = Cluster::generate();
    let a = Upstream::start(&cluster, "a").await;
    let b = Upstream::start(&cluster, "b").await;
    let c = Upstream::start(&cluster, "c").await;
    cluster.set_upstreams(&[a.addr, b.addr]);
    let proxy = cluster.proxy(&[]).await;
    all_up(&proxy, &[a.addr, b.addr]).await;

    let mut streams = Vec::new();
    for chunk in 0..10 {
        let mut opening = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let addr = proxy.addr;
            let cluster_cfg = (cluster.client_config(), addr);
            opening.spawn(async move { open_with(cluster_cfg).await });
        }
        while let Some(s) = opening.join_next().await {
            streams.push(
                s.unwrap()
                    .unwrap_or_else(|e| panic!("chunk {chunk}: {e:#}")),
            );
        }
    }
    assert_eq!(streams.len(), 500);
    assert_eq!(proxy.clients(), 500);

    // Add c, then reorder the same set: the pool changes, no connection is touched.
    cluster.set_upstreams(&[a.addr, b.addr, c.addr]);
    assert!(eventually(Duration::from_secs(10), || proxy.pool.len() == 3).await);
    all_up(&proxy, &[c.addr]).await;
    cluster.set_upstreams(&[c.addr, b.addr, a.addr]);
    assert!(
        eventually(Duration::from_secs(10), || reloads(&proxy, "unchanged")
            >= 1)
        .await
    );
    assert!(reloads(&proxy, "applied") >= 1);

    let mut broken = 0;
    for (i, s) in streams.iter_mut().enumerate() {
        if !s.echo(&format!("after reload {i}")).await {
            broken += 1;
        }
    }
    assert_eq!(broken, 0, "connections dropped by the reload");
    assert_eq!(proxy.clients(), 500);
    // The new upstream takes new connections (least connections).
    assert_eq!(
        Stream::open(proxy.addr, &cluster).await.unwrap().upstream,
        "c"
    );
    proxy.shutdown(Duration::ZERO).await;
}

async fn open_with(
    (cfg, addr): (std::sync::Arc<rustls::ClientConfig>, std::net::SocketAddr),
) -> anyhow::Result<TlsEcho> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1")?;
    let mut tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await?;
    tls.write_all(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        .await?;
    let mut io = BufReader::new(tls);
    let mut line = String::new();
    // Status line, blank line, name.
    for _ in 0..3 {
        line.clear();
        io.read_line(&mut line).await?;
    }
    Ok(TlsEcho { io })
}

struct TlsEcho {
    io: BufReader<TlsStream<TcpStream>>,
}

impl TlsEcho {
    async fn echo(&mut self, msg: &str) -> bool {
        let line = format!("{msg}\n");
        if self.io.get_mut().write_all(line.as_bytes()).await.is_err() {
            return false;
        }
        let mut back = String::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.io.read_line(&mut back)).await,
            Ok(Ok(n)) if n > 0 && back == line
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_upstream_file_is_rejected_and_the_current_list_kept() {
    let cluster = Cluster::generate();
    let a = Upstream::start(&cluster, "a").await;
    let b = Upstream::start(&cluster, "b").await;
    cluster.set_upstreams(&[a.addr, b.addr]);
    let proxy = cluster.proxy(&[]).await;
    all_up(&proxy, &[a.addr, b.addr]).await;
    let mut s = Stream::open(proxy.addr, &cluster).await.unwrap();

    let bad: [&[u8]; 4] = [
        b"{not json",
        b"{\"version\":1,\"upstreams\":[]}\n",
        b"{\"version\":2,\"upstreams\":[\"127.0.0.1:1\"]}\n",
        b"{\"version\":1,\"upstreams\":[\"master-1:6443\"]}\n",
    ];
    for (i, bytes) in bad.iter().enumerate() {
        write(&cluster.upstreams_file(), bytes);
        let want = u64::try_from(i + 1).unwrap();
        assert!(
            eventually(Duration::from_secs(10), || reloads(&proxy, "rejected")
                >= want)
            .await,
            "file {i} not rejected"
        );
        assert_eq!(proxy.pool.addrs(), {
            let mut v = vec![a.addr, b.addr];
            v.sort();
            v
        });
    }
    assert_eq!(reloads(&proxy, "applied"), 0);
    assert!(s.echo("still here").await);
    assert!(["a", "b"].contains(&id(proxy.addr, &cluster).await.unwrap().as_str()));
    // The last good list is still the valid one.
    let last = api_proxy::upstreams::load(&api_proxy::upstreams::last_good_path(
        &cluster.upstreams_file(),
    ))
    .unwrap();
    assert_eq!(last.len(), 2);
    proxy.shutdown(Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removed_upstream_loses_its_connections_after_the_grace_period() {
    let cluster = Cluster::generate();
    let a = Upstream::start(&cluster, "a").await;
    let b = Upstream::start(&cluster, "b").await;
    cluster.set_upstreams(&[a.addr, b.addr]);
    let proxy = cluster.proxy(&[]).await;
    all_up(&proxy, &[a.addr, b.addr]).await;
    let mut streams = Vec::new();
    for _ in 0..4 {
        streams.push(Stream::open(proxy.addr, &cluster).await.unwrap());
    }
    cluster.set_upstreams(&[b.addr]);
    for s in &mut streams {
        if s.upstream == "a" {
            assert!(
                s.closed_within(Duration::from_secs(10)).await,
                "a's stream kept"
            );
        } else {
            assert!(s.echo("kept").await);
        }
    }
    assert_eq!(proxy.pool.addrs(), [b.addr]);
    assert_eq!(id(proxy.addr, &cluster).await.unwrap(), "b");
    proxy.shutdown(Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn last_good_list_survives_a_restart_with_a_broken_file() {
    let cluster = Cluster::generate();
    let a = Upstream::start(&cluster, "a").await;
    cluster.set_upstreams(&[a.addr]);
    let proxy = cluster.proxy(&[]).await;
    all_up(&proxy, &[a.addr]).await;
    proxy.shutdown(Duration::ZERO).await;

    write(&cluster.upstreams_file(), b"garbage");
    let proxy = cluster.proxy(&[]).await;
    assert_eq!(proxy.pool.addrs(), [a.addr]);
    assert_eq!(id(proxy.addr, &cluster).await.unwrap(), "a");
    assert_eq!(
        health(&proxy, a.addr).map(|h| h == Health::Down),
        Some(false)
    );
    proxy.shutdown(Duration::ZERO).await;
}
