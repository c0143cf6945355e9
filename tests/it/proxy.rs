//! The upstream file is a contract between two binaries that may not depend on each other:
//! api-proxy must accept exactly what proxy-reloader writes.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

#[test]
fn api_proxy_reads_what_proxy_reloader_writes() {
    for list in [
        vec!["10.0.0.1:6443"],
        vec!["10.0.0.1:6443", "10.0.0.2:6443", "192.0.2.3:443"],
        vec!["[2001:db8::1]:6443", "10.0.0.1:6443"],
    ] {
        let set: BTreeSet<SocketAddr> = list.iter().map(|a| a.parse().unwrap()).collect();
        let bytes = proxy_reloader::desired::render(&set);
        let read = api_proxy::upstreams::parse(&bytes, Path::new("upstreams.json"))
            .unwrap_or_else(|e| panic!("{list:?}: {e}"));
        assert_eq!(read.into_iter().collect::<BTreeSet<_>>(), set);
        // And the other way round: what api-proxy keeps as its last good list reads back.
        let kept: Vec<SocketAddr> = set.iter().copied().collect();
        assert_eq!(
            proxy_reloader::desired::parse(&api_proxy::upstreams::render(&kept)),
            set
        );
    }
}
