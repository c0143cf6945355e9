//! Tests of the etcd flags and the quota policy.

use std::path::Path;

use cpm_testing::fixtures::config_yaml;

use super::*;

const GIB: u64 = 1 << 30;

fn config(extra: &str) -> ControlPlaneConfiguration {
    ControlPlaneConfiguration::parse(&config_yaml(extra), Path::new("t.yaml")).unwrap()
}

#[test]
fn quota_is_derived_clamped_and_never_lowered() {
    let auto = config("");
    assert_eq!(quota_bytes(&auto, None, None), 2 * GIB);
    assert_eq!(
        quota_bytes(&auto, Some(8 * GIB), None),
        2 * GIB,
        "an eighth of 8 GiB is below the floor"
    );
    assert_eq!(quota_bytes(&auto, Some(32 * GIB), None), 4 * GIB);
    assert_eq!(
        quota_bytes(&auto, Some(256 * GIB), None),
        8 * GIB,
        "ceiling"
    );
    assert_eq!(
        quota_bytes(&auto, Some(16 * GIB), Some(6 * GIB)),
        6 * GIB,
        "never lowered automatically"
    );
    assert_eq!(
        quota_bytes(
            &config("etcd: {quotaBackendBytes: 3221225472}\n"),
            Some(256 * GIB),
            Some(6 * GIB)
        ),
        3 * GIB,
        "an explicit value wins"
    );
}

#[test]
fn flags_name_the_member_its_urls_and_the_cluster() {
    let cfg = config("");
    let files = BTreeMap::new();
    let this = Peer {
        name: "master-2".into(),
        ip: "192.0.2.12".parse().unwrap(),
    };
    let members = [
        Peer {
            name: "master-1".into(),
            ip: "192.0.2.11".parse().unwrap(),
        },
        this.clone(),
    ];
    let i = Inputs {
        config: &cfg,
        this,
        members: &members,
        state: ClusterState::Existing,
        quota_bytes: 2 * GIB,
        pki_files: &files,
        running_tag: None,
        etcd_move: EtcdMove::Forward,
    };
    let f = flags(&i);
    assert_eq!(
        f["initial-cluster"],
        "master-1=https://192.0.2.11:2380,master-2=https://192.0.2.12:2380"
    );
    assert_eq!(f["initial-cluster-state"], "existing");
    assert_eq!(
        f["listen-client-urls"],
        "https://127.0.0.1:2379,https://192.0.2.12:2379"
    );
    assert_eq!(f["advertise-client-urls"], "https://192.0.2.12:2379");
    assert_eq!(f["listen-metrics-urls"], "http://127.0.0.1:2381");
    assert_eq!(f["quota-backend-bytes"], (2 * GIB).to_string());
    let r = render(&i).unwrap();
    let text = String::from_utf8(r.bytes).unwrap();
    assert!(
        text.contains("image: registry.k8s.io/etcd:3.5.21-0"),
        "{text}"
    );
    assert!(text.contains(&format!("cpm.dev/config-checksum: {}", r.checksum)));
}
