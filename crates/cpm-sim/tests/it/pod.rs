//! A pod with every volume kind, downward-API and Secret env, a non-root user and a read-only
//! root runs cpm-holder under runc and sees exactly what the kubelet would give it.

use std::time::Duration;

use cpm_sim::cluster::MasterOptions;
use cpm_testing::apiserver::Identity;

use crate::common::{cluster, container_id, eventually, exec, pod};

const SETUP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: sim-test}
---
apiVersion: v1
kind: Secret
metadata: {name: demo-secret, namespace: sim-test}
stringData: {password: s3cr3t, other: x}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: demo-config, namespace: sim-test}
data: {level: debug}
"#;

fn pod_yaml(node: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: probe-all, namespace: sim-test, labels: {{app: demo}}}}
spec:
  nodeName: {node}
  hostNetwork: true
  terminationGracePeriodSeconds: 2
  securityContext: {{runAsUser: 1000, runAsGroup: 3000, fsGroup: 2000}}
  containers:
  - name: holder
    image: cpm/cpm-holder:0.1.0
    args: [hold]
    env:
    - {{name: NODE_NAME, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}
    - {{name: NODE_IP, valueFrom: {{fieldRef: {{fieldPath: status.hostIP}}}}}}
    - {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
    - {{name: PASSWORD, valueFrom: {{secretKeyRef: {{name: demo-secret, key: password}}}}}}
    - {{name: URL, value: "https://$(NODE_IP):2379"}}
    securityContext:
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities: {{drop: [ALL]}}
    volumeMounts:
    - {{name: host-data, mountPath: /host/data, readOnly: true}}
    - {{name: secret, mountPath: /secret}}
    - {{name: config, mountPath: /config}}
    - {{name: projected, mountPath: /projected}}
    - {{name: scratch, mountPath: /scratch}}
  volumes:
  - {{name: host-data, hostPath: {{path: /srv/data, type: Directory}}}}
  - {{name: secret, secret: {{secretName: demo-secret, defaultMode: 0o400, items: [{{key: password, path: password}}]}}}}
  - {{name: config, configMap: {{name: demo-config}}}}
  - name: projected
    projected:
      sources:
      - serviceAccountToken: {{path: token, expirationSeconds: 3600}}
      - configMap: {{name: kube-root-ca.crt, items: [{{key: ca.crt, path: ca.crt}}]}}
      - downwardAPI: {{items: [{{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}]}}
  - {{name: scratch, emptyDir: {{}}}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_sees_exactly_its_volumes_env_user_and_read_only_root() -> anyhow::Result<()> {
    let Some(cluster) = cluster().await? else {
        return Ok(());
    };
    let opts = MasterOptions {
        api_proxy: false,
        control_plane: false,
    };
    let m = cluster.add_master_with("node-a", &opts).await?;
    let data = m.root.join("srv/data");
    std::fs::create_dir_all(&data)?;
    cpm_core::apply::write_atomic(&data.join("hello.txt"), b"from the host", 0o644, None, None)?;
    cluster.apply_yaml(SETUP).await?;
    cluster.apply_yaml(&pod_yaml("node-a")).await?;

    let id = eventually(
        "the pod's container to run",
        Duration::from_secs(60),
        || async {
            let p = pod(&cluster, "sim-test", "probe-all").await?;
            let running = crate::common::container_status(&p, "holder")?
                .state
                .as_ref()?
                .running
                .is_some();
            running.then(|| container_id(&p, "holder")).flatten()
        },
    )
    .await?;

    // Identity: the pod's user and group, fsGroup as a supplementary group, no capabilities,
    // no privilege escalation.
    assert_eq!(exec(&cluster, &id, "id -u; id -g")?, "1000\n3000\n");
    assert!(
        exec(&cluster, &id, "id -G")?
            .split_whitespace()
            .any(|g| g == "2000")
    );
    let status = exec(
        &cluster,
        &id,
        "grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/1/status",
    )?;
    assert_eq!(
        status,
        "CapEff:\t0000000000000000\nCapBnd:\t0000000000000000\nNoNewPrivs:\t1\n"
    );

    // The environment of the container's process: downward API, Secret, $(VAR) expansion.
    let environ = exec(&cluster, &id, "tr '\\0' '\\n' < /proc/1/environ | sort")?;
    let ip = m.ip.to_string();
    for want in [
        "NODE_NAME=node-a".to_string(),
        format!("NODE_IP={ip}"),
        format!("POD_IP={ip}"),
        "PASSWORD=s3cr3t".into(),
        format!("URL=https://{ip}:2379"),
        "PATH=/usr/local/bin".into(),
        "KUBERNETES_SERVICE_HOST=10.96.0.1".into(),
        "HOSTNAME=node-a".into(),
    ] {
        assert!(
            environ.lines().any(|l| l == want),
            "{want} not in\n{environ}"
        );
    }
    assert_eq!(
        exec(&cluster, &id, "cat /proc/1/cmdline | tr '\\0' ' '")?,
        "/usr/local/bin/cpm-holder hold "
    );

    // Volumes: exactly the expected files, contents, modes and groups.
    let listing = exec(
        &cluster,
        &id,
        "cd / && for f in host/data/hello.txt secret/password config/level projected/ca.crt projected/labels projected/token; do stat -L -c '%n %a %g' $f; done",
    )?;
    assert_eq!(
        listing,
        "host/data/hello.txt 644 0\nsecret/password 440 2000\nconfig/level 644 2000\nprojected/ca.crt 644 2000\nprojected/labels 644 2000\nprojected/token 644 2000\n"
    );
    let entries = exec(&cluster, &id, "ls -A /secret")?;
    let entries: Vec<&str> = entries.lines().collect();
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert!(
        entries[0].starts_with("..2") && entries[1] == "..data" && entries[2] == "password",
        "{entries:?}"
    );
    assert_eq!(
        exec(
            &cluster,
            &id,
            "cat /host/data/hello.txt /secret/password; echo; cat /config/level"
        )?,
        "from the hosts3cr3t\ndebug"
    );
    assert_eq!(
        exec(&cluster, &id, "cat /projected/labels")?,
        "app=\"demo\"\n"
    );
    assert_eq!(
        exec(&cluster, &id, "cat /projected/ca.crt")?,
        cluster.server().ca_pem()
    );
    assert_eq!(
        exec(&cluster, &id, "readlink /secret/password")?,
        "..data/password\n"
    );

    // The projected token authenticates as the pod's ServiceAccount.
    let token = exec(&cluster, &id, "cat /projected/token")?;
    let as_sa = cluster
        .server()
        .client(&Identity::Token(token.clone()))
        .await?;
    kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(as_sa, "sim-test")
        .get("demo-config")
        .await?;
    let user = cluster
        .server()
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path.ends_with("/configmaps/demo-config"))
        .and_then(|r| r.user);
    assert_eq!(
        user.as_deref(),
        Some("system:serviceaccount:sim-test:default")
    );

    // Writes: the root and the Secret volume are read-only, the emptyDir is not.
    exec(&cluster, &id, "touch /scratch/ok")?;
    let root_write = exec(&cluster, &id, "touch /new-file").expect_err("read-only root");
    assert!(
        root_write.to_string().contains("Read-only file system"),
        "{root_write}"
    );
    let secret_write = exec(&cluster, &id, "touch /secret/x").expect_err("read-only volume");
    assert!(
        secret_write.to_string().contains("Read-only file system"),
        "{secret_write}"
    );
    let host_write = exec(&cluster, &id, "touch /host/data/x").expect_err("readOnly mount");
    assert!(
        host_write.to_string().contains("Read-only file system"),
        "{host_write}"
    );

    // A changed Secret reaches the volume (atomically), not the environment.
    cluster
        .apply_yaml("apiVersion: v1\nkind: Secret\nmetadata: {name: demo-secret, namespace: sim-test}\nstringData: {password: rotated, other: x}\n")
        .await?;
    eventually(
        "the rotated Secret in the volume",
        Duration::from_secs(30),
        || async { (exec(&cluster, &id, "cat /secret/password").ok()? == "rotated").then_some(()) },
    )
    .await?;
    assert!(
        exec(&cluster, &id, "tr '\\0' '\\n' < /proc/1/environ")?
            .lines()
            .any(|l| l == "PASSWORD=s3cr3t")
    );
    cluster.shutdown().await;
    Ok(())
}
