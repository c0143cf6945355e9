//! Both copy modes of the data path carry bulk TLS traffic intact in both directions.

use std::time::Duration;

use crate::*;

async fn bulk_echo(splice: bool) {
    let cluster = Cluster::generate();
    let a = Upstream::start(&cluster, "a").await;
    let mut opts = cluster.options(&[a.addr]);
    opts.forward.splice = splice;
    let proxy = api_proxy::start(&opts, ProxyMetrics::unregistered())
        .await
        .unwrap();
    all_up(&proxy, &[a.addr]).await;

    // 4 MiB of varied bytes; TLS would reject any byte changed on the way (record MAC).
    let data: Vec<u8> = (0..4u32 << 20)
        .map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()[2])
        .collect();
    let mut stream = Stream::open(proxy.addr, &cluster).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(60), stream.roundtrip(&data))
        .await
        .expect("echo of 4 MiB timed out")
        .unwrap();
    assert!(back == data, "echoed bytes differ (splice: {splice})");
    // Still a working connection afterwards.
    assert!(stream.echo("after bulk").await);
    // Both directions were counted: at least the payload (plus TLS framing) each way.
    let up = proxy.pool.get(a.addr).unwrap();
    assert!(
        up.counters.tx.get() >= data.len() as u64,
        "client→upstream bytes"
    );
    assert!(
        up.counters.rx.get() >= data.len() as u64,
        "upstream→client bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splice_carries_bulk_traffic_intact() {
    bulk_echo(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_copy_carries_bulk_traffic_intact() {
    bulk_echo(false).await;
}
