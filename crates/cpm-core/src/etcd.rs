//! The etcd client over mutual TLS, built from PEM files (the node's etcd CA, and a client
//! certificate signed by it), with connect and request timeouts.
//!
//! The channel is lazy: TLS problems (a wrong CA, a certificate from another CA) surface on the
//! first request, which [`connect`] makes (a `member list`) so they are reported at once.

use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Client URLs (`https://127.0.0.1:2379`), tried in order.
    pub endpoints: Vec<String>,
    /// The etcd CA, PEM.
    pub ca: Vec<u8>,
    /// The client certificate, PEM.
    pub cert: Vec<u8>,
    /// The client key, PEM. Secret.
    pub key: Vec<u8>,
    /// TCP and TLS connect timeout.
    pub connect_timeout: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
}

/// The client could not be set up or the first request failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach etcd at {endpoints}")]
pub struct EtcdError {
    /// The endpoints tried.
    pub endpoints: String,
    /// Why.
    #[source]
    pub source: etcd_client::Error,
}

/// Connects and lists the members once, so an unreachable cluster or a TLS mismatch is an error
/// here rather than later.
pub async fn connect(opts: &EtcdOptions) -> Result<Client, EtcdError> {
    let err = |source| EtcdError {
        endpoints: opts.endpoints.join(","),
        source,
    };
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(&opts.ca))
        .identity(Identity::from_pem(&opts.cert, &opts.key));
    let connect = ConnectOptions::new()
        .with_tls(tls)
        .with_connect_timeout(opts.connect_timeout)
        .with_timeout(opts.request_timeout);
    let mut client = Client::connect(opts.endpoints.clone(), Some(connect))
        .await
        .map_err(err)?;
    client.member_list().await.map_err(err)?;
    Ok(client)
}
