//! Tests of the agent's pure helpers.

use super::*;

#[test]
fn peers_come_from_the_current_etcd_servers_flag() {
    let m = b"    - --etcd-servers=https://192.0.2.10:2379,https://192.0.2.11:2379,https://[2001:db8::3]:2379\n";
    let own: IpAddr = "192.0.2.10".parse().unwrap();
    assert_eq!(
        peers_from_manifest(m, own),
        vec![
            "192.0.2.11".parse::<IpAddr>().unwrap(),
            "2001:db8::3".parse().unwrap()
        ]
    );
    assert!(peers_from_manifest(b"no flags", own).is_empty());
}
