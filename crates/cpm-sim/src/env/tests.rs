//! Environment resolution and command lines.

use super::*;

fn container(yaml: &str) -> Container {
    serde_saphyr::from_str(yaml).expect("a container")
}

fn fields() -> PodFields {
    PodFields {
        name: "cpm-abcde".into(),
        namespace: "cpm-system".into(),
        node_name: "master-1".into(),
        host_ip: "10.200.0.2".into(),
        pod_ip: "10.200.0.2".into(),
        labels: BTreeMap::from([("app".into(), "cpm".into())]),
        ..PodFields::default()
    }
}

fn objects() -> Objects {
    Objects {
        secrets: BTreeMap::from([(
            "cpm-config".into(),
            BTreeMap::from([("config.yaml".into(), b"kind: x".to_vec())]),
        )]),
        config_maps: BTreeMap::from([(
            "settings".into(),
            BTreeMap::from([("level".into(), b"debug".to_vec())]),
        )]),
    }
}

fn check(yaml: &str, expected: Result<&[(&str, &str)], &str>) {
    let got = kubelet_env(&container(yaml), &[], &fields(), &objects());
    match (got, expected) {
        (Ok(env), Ok(want)) => {
            let want: BTreeMap<String, String> = want
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(env, want, "{yaml}");
        }
        (Err(e), Err(want)) => assert!(e.contains(want), "{e} lacks {want}"),
        (got, want) => panic!("{yaml}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn values_field_refs_and_object_refs_resolve_in_order() {
    check(
        "name: c
env:
- {name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
- {name: NODE_IP, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}
- {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
- {name: APP, valueFrom: {fieldRef: {fieldPath: \"metadata.labels['app']\"}}}
- {name: URL, value: 'https://$(NODE_IP):2379/$(LATER)/$$(NODE_IP)'}
- {name: LATER, value: x}
- {name: CONFIG, valueFrom: {secretKeyRef: {name: cpm-config, key: config.yaml}}}
- {name: LEVEL, valueFrom: {configMapKeyRef: {name: settings, key: level}}}
- {name: MISSING_OK, valueFrom: {secretKeyRef: {name: nope, key: k, optional: true}}}
",
        Ok(&[
            ("NODE_NAME", "master-1"),
            ("NODE_IP", "10.200.0.2"),
            ("POD_IP", "10.200.0.2"),
            ("APP", "cpm"),
            ("URL", "https://10.200.0.2:2379/$(LATER)/$(NODE_IP)"),
            ("LATER", "x"),
            ("CONFIG", "kind: x"),
            ("LEVEL", "debug"),
        ]),
    );
}

#[test]
fn missing_required_objects_and_keys_are_config_errors() {
    check(
        "name: c\nenv: [{name: A, valueFrom: {secretKeyRef: {name: nope, key: k}}}]",
        Err("secret \"nope\" not found"),
    );
    check(
        "name: c\nenv: [{name: A, valueFrom: {secretKeyRef: {name: cpm-config, key: other}}}]",
        Err("couldn't find key other in Secret cpm-system/cpm-config"),
    );
    check(
        "name: c\nenv: [{name: A, valueFrom: {configMapKeyRef: {name: settings, key: other, optional: true}}}]",
        Ok(&[]),
    );
    check(
        "name: c\nenv: [{name: A, valueFrom: {fieldRef: {fieldPath: spec.unknown}}}]",
        Err("spec.unknown"),
    );
}

#[test]
fn env_from_takes_every_key_with_a_prefix() {
    check(
        "name: c\nenvFrom: [{prefix: S_, configMapRef: {name: settings}}, {secretRef: {name: gone, optional: true}}]\nenv: [{name: S_level, value: override}]",
        Ok(&[("S_level", "override")]),
    );
    check(
        "name: c\nenvFrom: [{secretRef: {name: gone}}]",
        Err("secret \"gone\" not found"),
    );
}

#[test]
fn the_kubelet_list_overrides_the_image_env() {
    let kubelet = BTreeMap::from([
        ("PATH".to_string(), "/bin".to_string()),
        ("A".to_string(), "1".to_string()),
    ]);
    assert_eq!(
        process_env(&["PATH=/usr/local/bin".into(), "HOME=/".into()], &kubelet),
        ["HOME=/", "A=1", "PATH=/bin"]
    );
}

fn image() -> ImageSpec {
    let mut spec = crate::image::resolve("cpm/etcd-backup:0.1.0", "cpm").expect("known");
    spec.cmd = vec!["--default".into()];
    spec
}

#[test]
fn command_and_args_follow_the_entrypoint_rules() {
    let env = BTreeMap::from([("NODE".to_string(), "m1".to_string())]);
    let line = |yaml: &str| command_line(&container(yaml), &image(), &env);
    assert_eq!(
        line("name: c").expect("ok"),
        ["/usr/local/bin/etcd-backup", "--default"]
    );
    assert_eq!(
        line("name: c\nargs: [snapshot, '--node=$(NODE)']").expect("ok"),
        ["/usr/local/bin/etcd-backup", "snapshot", "--node=m1"]
    );
    assert_eq!(line("name: c\ncommand: [/bin/x]").expect("ok"), ["/bin/x"]);
    assert_eq!(
        line("name: c\ncommand: [/bin/x]\nargs: [a]").expect("ok"),
        ["/bin/x", "a"]
    );
    let mut bare = image();
    bare.entrypoint.clear();
    bare.cmd.clear();
    assert!(command_line(&container("name: c"), &bare, &env).is_err());
}

#[test]
fn a_multi_call_stand_in_gets_its_mode_after_argv0() {
    let mut spec =
        crate::image::resolve("registry.k8s.io/kube-apiserver:v1.33.0", "cpm").expect("known");
    spec.prefix_args = vec!["kube-apiserver".into()];
    let c = container("name: c\ncommand: [kube-apiserver, --secure-port=6443]");
    assert_eq!(
        command_line(&c, &spec, &BTreeMap::new()).expect("ok"),
        ["kube-apiserver", "kube-apiserver", "--secure-port=6443"]
    );
    let holder = container("name: c\ncommand: [/holder/cpm-holder, hold]");
    assert_eq!(
        command_line(&holder, &spec, &BTreeMap::new()).expect("ok"),
        ["/holder/cpm-holder", "hold"]
    );
}

#[test]
fn the_service_env_names_the_first_service_ip() {
    let env: BTreeMap<_, _> = kubernetes_service_env("10.96.0.1").into_iter().collect();
    assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.96.0.1");
    assert_eq!(env["KUBERNETES_PORT_443_TCP"], "tcp://10.96.0.1:443");
}
