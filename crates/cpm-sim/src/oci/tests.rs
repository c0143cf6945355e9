//! Security-context mapping and the runtime config.

use super::*;

fn pod(yaml: &str) -> PodSpec {
    serde_saphyr::from_str(yaml).expect("a pod spec")
}

fn check(yaml: &str, image_user: (u32, u32), expected: Result<Security, &str>) {
    let spec = pod(yaml);
    let got = security(&spec, &spec.containers[0], image_user);
    match (got, expected) {
        (Ok(got), Ok(want)) => assert_eq!(got, want, "{yaml}"),
        (Err(e), Err(want)) => assert!(e.contains(want), "{e}"),
        (got, want) => panic!("{yaml}: got {got:?}, want {want:?}"),
    }
}

fn default_caps() -> Vec<String> {
    let mut v: Vec<String> = DEFAULT_CAPABILITIES
        .iter()
        .map(ToString::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn the_agents_context_is_root_without_capabilities_on_a_read_only_root() {
    check(
        "containers:
- name: cpm-certs
  securityContext:
    allowPrivilegeEscalation: false
    capabilities: {drop: [ALL]}
    privileged: false
    readOnlyRootFilesystem: true
    runAsGroup: 0
    runAsNonRoot: false
    runAsUser: 0
    seccompProfile: {type: RuntimeDefault}
",
        (65532, 65532),
        Ok(Security {
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            capabilities: vec![],
            no_new_privileges: true,
            readonly_root: true,
            privileged: false,
        }),
    );
}

#[test]
fn the_image_user_applies_unless_the_pod_or_container_says_otherwise() {
    let base = Security {
        uid: 65532,
        gid: 65532,
        additional_gids: vec![],
        capabilities: default_caps(),
        no_new_privileges: true,
        readonly_root: false,
        privileged: false,
    };
    check("containers: [{name: c}]", (65532, 65532), Ok(base.clone()));
    check(
        "securityContext: {runAsUser: 1000, runAsGroup: 2000, fsGroup: 3000, supplementalGroups: [4000, 3000]}\ncontainers: [{name: c, securityContext: {runAsUser: 1001}}]",
        (0, 0),
        Ok(Security {
            uid: 1001,
            gid: 2000,
            additional_gids: vec![3000, 4000],
            ..base.clone()
        }),
    );
    check(
        "containers: [{name: c, securityContext: {capabilities: {drop: [NET_RAW, chown], add: [NET_ADMIN]}, allowPrivilegeEscalation: true}}]",
        (0, 0),
        Ok(Security {
            uid: 0,
            gid: 0,
            capabilities: {
                let mut v = default_caps();
                v.retain(|c| c != "CAP_NET_RAW" && c != "CAP_CHOWN");
                v.push("CAP_NET_ADMIN".into());
                v.sort();
                v
            },
            no_new_privileges: false,
            ..base.clone()
        }),
    );
}

#[test]
fn run_as_non_root_refuses_uid_0_and_privileged_gets_everything() {
    check(
        "securityContext: {runAsNonRoot: true}\ncontainers: [{name: c}]",
        (0, 0),
        Err("runAsNonRoot"),
    );
    check(
        "containers: [{name: c, securityContext: {runAsNonRoot: true}}]",
        (65532, 65532),
        Ok(Security {
            uid: 65532,
            gid: 65532,
            additional_gids: vec![],
            capabilities: default_caps(),
            no_new_privileges: true,
            readonly_root: false,
            privileged: false,
        }),
    );
    let spec = pod(
        "containers: [{name: c, securityContext: {privileged: true, capabilities: {drop: [ALL]}}}]",
    );
    let s = security(&spec, &spec.containers[0], (0, 0)).expect("ok");
    assert_eq!(s.capabilities.len(), ALL_CAPABILITIES.len());
    assert!(s.privileged && !s.no_new_privileges);
}

#[test]
fn the_config_joins_the_given_network_namespace_and_keeps_mount_order() {
    let bundle = Bundle {
        args: vec!["/usr/local/bin/cpm-certs".into()],
        env: vec!["PATH=/usr/local/bin".into()],
        cwd: "/".into(),
        security: Security {
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            capabilities: vec![],
            no_new_privileges: true,
            readonly_root: true,
            privileged: false,
        },
        rootfs: "/tmp/rootfs".into(),
        mounts: vec![
            Mount {
                destination: "/host/etc/kubernetes".into(),
                kind: MountKind::Bind("/sim/m1/etc/kubernetes".into()),
                readonly: true,
            },
            Mount {
                destination: "/host/etc/kubernetes/manifests".into(),
                kind: MountKind::Bind("/sim/m1/etc/kubernetes/manifests".into()),
                readonly: false,
            },
        ],
        netns: "/run/netns/cpms-x-m1".into(),
        hostname: "master-1".into(),
        cgroups_path: "/cpm-sim/x".into(),
    };
    let c = config_json(&bundle);
    assert_eq!(c["root"]["readonly"], true);
    assert_eq!(c["process"]["noNewPrivileges"], true);
    assert_eq!(c["process"]["capabilities"]["bounding"], json!([]));
    let ns = c["linux"]["namespaces"].as_array().expect("namespaces");
    assert!(ns.contains(&json!({"type": "network", "path": "/run/netns/cpms-x-m1"})));
    let dests: Vec<&str> = c["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .filter_map(|m| m["destination"].as_str())
        .collect();
    let at = |d: &str| dests.iter().position(|x| *x == d).expect("mounted");
    assert!(at("/host/etc/kubernetes") < at("/host/etc/kubernetes/manifests"));
    assert!(at("/proc") < at("/host/etc/kubernetes"));
    assert_eq!(c["mounts"][at("/host/etc/kubernetes")]["options"][2], "ro");
    assert!(c["linux"]["maskedPaths"].is_array());
}
