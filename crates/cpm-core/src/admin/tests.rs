//! Tests of the admin endpoints over real HTTP.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::metrics::ReconcileMetrics;

async fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn serves_metrics_health_and_readiness() {
    let mut reg = Registry::default();
    let m = ReconcileMetrics::register(&mut reg, "t");
    m.observe_pass(true, 0.1, 1.0);
    let ready = Readiness::new(Duration::from_secs(60));
    let srv = spawn("127.0.0.1:0".parse().unwrap(), reg, ready.clone())
        .await
        .unwrap();

    assert!(get(srv.addr, "/livez").await.starts_with("HTTP/1.1 200"));
    let r = get(srv.addr, "/readyz").await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    ready.mark_success(SystemTime::now());
    assert!(get(srv.addr, "/readyz").await.starts_with("HTTP/1.1 200"));
    let metrics = get(srv.addr, "/metrics").await;
    assert!(
        metrics.contains("content-type: application/openmetrics-text"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cpm_reconcile_total{agent=\"t\",result=\"success\"} 1"),
        "{metrics}"
    );
    assert!(get(srv.addr, "/nope").await.starts_with("HTTP/1.1 404"));
    srv.task.abort();
}
