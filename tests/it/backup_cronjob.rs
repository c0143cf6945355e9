//! The etcd-backup CronJob as deployed: the committed `manifests/etcd-backup/cronjob-template.yaml`
//! (the drift test keeps it equal to the generator's output), rendered for one master the way
//! `manifests/README.md` says (`${NODE_NAME}` replaced), is run as the kubelet would run its
//! container, against a real etcd 3.4 with certificates issued by cpm's own PKI code.
//!
//! Exactly the container's `command` (the image's entrypoint when absent) and `args` run, with
//! exactly its `env` and nothing else: `fieldRef`s resolve to this test's pod (`spec.nodeName`
//! → `master-1`, `status.hostIP` → the etcd's address), `secretKeyRef`s and Secret volumes to
//! the example Secret `manifests/examples/cpm-config-secret.yaml`, and `$(VAR)` references are
//! expanded as Kubernetes does.
//!
//! **The only liberty is a path mapping.** The container's `/` becomes a directory `C` of this
//! test: every volume mount `P` is a symlink `C/P` to its source (a hostPath `H` to `N/H`, `N`
//! being the simulated master's root; a Secret to a directory holding its keys), created with
//! the kubelet's hostPath type rules (`DirectoryOrCreate` makes `N/H` 0755, `Directory` and
//! `File` must exist). Every absolute path in the command, the args and the env values is then
//! rewritten to `C/<path>`, which is `--root` semantics applied to the container: a path `/x` in
//! the pod is `C/x` here. Paths the binary would use by default without naming them are not
//! mapped; they point at this machine's real `/config` or `/host`, which do not exist (asserted),
//! so a job that leans on an unmounted default fails here as it fails in the cluster.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use cpm_core::config::KeyAlgorithm;
use cpm_testing::etcd::{
    EtcdOptions, EtcdProcess, EtcdTls, etcd_binary, etcdctl_binary, free_port,
};
use cpm_testing::fixtures::{ca_bundle, etcd_pki};
use cpm_testing::process::{code, stderr, stdout};
use cpm_testing::root::FakeRoot;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, Secret, Volume};

const NODE: &str = "master-1";
/// The master's address (its etcd listens on `<ip>:2379`, as cpm-etcd renders it).
const NODE_IP: &str = "127.0.12.1";
/// The image's entrypoint (`cargo xtask images`: `/usr/local/bin/<binary>`).
const ENTRYPOINT: &str = "/usr/local/bin/etcd-backup";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("invariant: tests/ is in the workspace")
        .to_path_buf()
}

/// The committed template, rendered for `node` as the install steps do.
fn cronjob(node: &str) -> CronJob {
    let path = workspace().join("manifests/etcd-backup/cronjob-template.yaml");
    let text = std::fs::read_to_string(&path).expect("read the CronJob template");
    serde_saphyr::from_str(&text.replace("${NODE_NAME}", node)).expect("a CronJob")
}

/// The example Secrets a cluster has (`cpm-config`): name → key → bytes.
fn secrets() -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
    let path = workspace().join("manifests/examples/cpm-config-secret.yaml");
    let s: Secret =
        serde_saphyr::from_str(&std::fs::read_to_string(&path).expect("read")).expect("Secret");
    let mut keys: BTreeMap<String, Vec<u8>> = s
        .string_data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    for (k, v) in s.data.unwrap_or_default() {
        keys.insert(k, v.0);
    }
    BTreeMap::from([(s.metadata.name.expect("named"), keys)])
}

/// Kubernetes' `$(VAR)` expansion: defined variables are replaced, `$$` is a literal `$`,
/// anything else stays as written.
fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$$") {
            out.push('$');
            rest = t;
        } else if let Some((name, t)) = tail
            .strip_prefix("$(")
            .and_then(|t| t.split_once(')'))
            .filter(|(name, _)| env.contains_key(*name))
        {
            out.push_str(&env[name]);
            rest = t;
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The container's environment, in order, as the kubelet resolves it for this test's pod.
fn resolve_env(
    vars: &[EnvVar],
    secrets: &BTreeMap<String, BTreeMap<String, Vec<u8>>>,
) -> BTreeMap<String, String> {
    let fields = BTreeMap::from([
        ("spec.nodeName", NODE.to_string()),
        ("status.hostIP", NODE_IP.to_string()),
        // The pod uses the host network.
        ("status.podIP", NODE_IP.to_string()),
        ("metadata.namespace", "cpm-system".to_string()),
    ]);
    let mut env = BTreeMap::new();
    for v in vars {
        let value = match (&v.value, &v.value_from) {
            (Some(value), None) => expand(value, &env),
            (None, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    fields
                        .get(f.field_path.as_str())
                        .unwrap_or_else(|| panic!("{}: no test value for {}", v.name, f.field_path))
                        .clone()
                } else if let Some(s) = &from.secret_key_ref {
                    let bytes = &secrets[&s.name][&s.key];
                    String::from_utf8(bytes.clone()).expect("text")
                } else {
                    panic!("{}: unsupported valueFrom {from:?}", v.name)
                }
            }
            (None, None) => String::new(),
            (Some(_), Some(_)) => panic!("{}: value and valueFrom", v.name),
        };
        env.insert(v.name.clone(), value);
    }
    env
}

/// `/x` → `C/x`, also inside `--flag=/x`.
fn map_path(s: &str, c: &Path) -> String {
    let mapped = |p: &str| c.join(p.trim_start_matches('/')).display().to_string();
    if s.starts_with('/') {
        return mapped(s);
    }
    match s.split_once('=') {
        Some((flag, v)) if flag.starts_with("--") && v.starts_with('/') => {
            format!("{flag}={}", mapped(v))
        }
        _ => s.to_string(),
    }
}

/// Lays out the container's filesystem in `c`: each mount a symlink to its source, hostPath
/// sources under the node root `n` with the kubelet's type rules, Secret volumes as directories
/// of their keys.
fn mount_volumes(
    c: &Path,
    n: &Path,
    spec: &PodSpec,
    container: &Container,
    secrets: &BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    scratch: &Path,
) {
    let volumes: BTreeMap<&str, &Volume> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| (v.name.as_str(), v))
        .collect();
    for m in container.volume_mounts.iter().flatten() {
        let v = volumes[m.name.as_str()];
        let source = if let Some(h) = &v.host_path {
            let on_node = n.join(h.path.trim_start_matches('/'));
            match h.type_.as_deref() {
                Some("DirectoryOrCreate") if !on_node.exists() => {
                    std::fs::create_dir_all(&on_node).expect("mkdir");
                    std::fs::set_permissions(&on_node, std::fs::Permissions::from_mode(0o755))
                        .expect("chmod");
                }
                Some("DirectoryOrCreate" | "Directory") => {
                    assert!(on_node.is_dir(), "hostPath {} is not a directory", h.path);
                }
                Some("File") => {
                    assert!(on_node.is_file(), "hostPath {} is not a file", h.path);
                }
                other => panic!("{}: hostPath type {other:?} not modelled", v.name),
            }
            on_node
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.as_deref().expect("secretName");
            let dir = scratch.join(format!("secret-{}", v.name));
            std::fs::create_dir_all(&dir).expect("mkdir");
            let keys = &secrets[name];
            let items: Vec<(String, String)> = match &s.items {
                Some(items) => items
                    .iter()
                    .map(|i| (i.key.clone(), i.path.clone()))
                    .collect(),
                None => keys.keys().map(|k| (k.clone(), k.clone())).collect(),
            };
            for (key, path) in items {
                let file = dir.join(path);
                cpm_core::apply::write_atomic(&file, &keys[&key], 0o644, None, None)
                    .expect("write secret key");
                let mode = s
                    .default_mode
                    .map_or(0o644, |m| u32::try_from(m).expect("mode"));
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))
                    .expect("chmod");
            }
            dir
        } else {
            panic!("{}: volume kind not modelled: {v:?}", v.name)
        };
        assert!(m.sub_path.is_none(), "subPath not modelled");
        let at = c.join(m.mount_path.trim_start_matches('/'));
        std::fs::create_dir_all(at.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(&source, &at).expect("mount");
    }
}

/// Every regular file reachable from `dir`, following symlinks (what the container can see).
fn visible(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            visible(&p, out);
        } else if p.is_file() {
            out.push(std::fs::canonicalize(&p).expect("canonical"));
        }
    }
}

#[test]
fn the_deployed_backup_cronjob_takes_a_verified_snapshot_of_its_master() {
    let (Some(etcd_bin), Some(etcdctl)) = (etcd_binary(), etcdctl_binary()) else {
        return;
    };
    for p in ["/config", "/host"] {
        assert!(
            !Path::new(p).exists(),
            "{p} exists on this machine: unmapped default paths would not fail here"
        );
    }
    let job = cronjob(NODE);
    let pod = job
        .spec
        .and_then(|s| s.job_template.spec)
        .and_then(|s| s.template.spec)
        .expect("a pod template");
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.containers.len(), 1);
    assert!(pod.init_containers.is_none());
    let container = &pod.containers[0];

    // The master: etcd PKI from cpm's own code (with the etcd CA key a real master holds), and
    // etcd on the node IP, port 2379, as cpm-etcd renders it.
    let scratch = tempfile::tempdir().expect("tempdir");
    let bundle = ca_bundle(&scratch.path().join("bundle"), KeyAlgorithm::EcdsaP256);
    let node = FakeRoot::new();
    etcd_pki(node.path(), &bundle, NODE, NODE_IP);
    std::fs::copy(
        bundle.join("etcd-ca.key"),
        node.join("etc/kubernetes/pki/etcd/ca.key"),
    )
    .expect("install the etcd CA key");
    let ip: IpAddr = NODE_IP.parse().expect("ip");
    let mut opts = EtcdOptions::single(
        NODE,
        &node.join("var/lib/etcd"),
        Some(EtcdTls::kubeadm(&node.join("etc/kubernetes/pki"))),
    );
    opts.ip = ip;
    opts.ports = Some([2379, free_port(ip), free_port(ip)]);
    let etcd = EtcdProcess::start(&etcd_bin, &opts).expect("etcd starts");
    let put = Command::new(&etcdctl)
        .args(["--endpoints", &etcd.client_url])
        .arg("--cacert")
        .arg(node.join("etc/kubernetes/pki/etcd/ca.crt"))
        .arg("--cert")
        .arg(node.join("etc/kubernetes/pki/etcd/healthcheck-client.crt"))
        .arg("--key")
        .arg(node.join("etc/kubernetes/pki/etcd/healthcheck-client.key"))
        .args(["put", "backed-up", "yes"])
        .env("ETCDCTL_API", "3")
        .output()
        .expect("etcdctl");
    assert_eq!(code(&put), 0, "{}", stderr(&put));
    let pki_before = node.listing();

    // The container.
    let c = scratch.path().join("container");
    std::fs::create_dir_all(&c).expect("mkdir");
    let secrets = secrets();
    mount_volumes(&c, node.path(), &pod, container, &secrets, scratch.path());
    let env = resolve_env(container.env.as_deref().unwrap_or_default(), &secrets);
    let mut argv: Vec<String> = container
        .command
        .clone()
        .unwrap_or_else(|| vec![ENTRYPOINT.to_string()]);
    argv.extend(container.args.iter().flatten().cloned());
    let argv: Vec<String> = argv
        .iter()
        .map(|a| map_path(&expand(a, &env), &c))
        .collect();
    let env: BTreeMap<String, String> = env
        .into_iter()
        .map(|(k, v)| (k, map_path(&v, &c)))
        .collect();
    // The image's entrypoint is this workspace's build of etcd-backup.
    assert_eq!(argv[0], map_path(ENTRYPOINT, &c));
    let out = Command::new(cpm_tests::binary("etcd-backup"))
        .args(&argv[1..])
        .env_clear()
        .envs(&env)
        .current_dir(&c)
        .output()
        .expect("run the job's container");
    assert_eq!(
        code(&out),
        0,
        "argv {argv:?}\nenv {env:?}\nstdout: {}\nstderr: {}",
        stdout(&out),
        stderr(&out)
    );

    // Logs are JSON lines (--log-format=json), on stderr.
    for line in stderr(&out).lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    }

    // The backup is on the master, in the configured directory, 0700, verified.
    let config = cpm_core::config::ControlPlaneConfiguration::parse(
        std::str::from_utf8(&secrets["cpm-config"]["config.yaml"]).expect("text"),
        Path::new("config.yaml"),
    )
    .expect("the example config");
    let dir = node
        .node_root()
        .host(&config.etcd.backup.directory)
        .expect("backup dir");
    let mode = std::fs::metadata(&dir)
        .expect("backup dir")
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o700, "{}: mode {mode:o}", dir.display());
    let printed = stdout(&out);
    let file = PathBuf::from(printed.split_whitespace().next().expect("the new backup"));
    let name = file.file_name().expect("a file name");
    let backup = dir.join(name);
    assert!(backup.is_file(), "{} is not on the node", backup.display());
    assert!(
        name.to_string_lossy().starts_with(&format!("etcd-{NODE}-")),
        "{printed}"
    );
    let status = Command::new(&etcdctl)
        .args(["snapshot", "status", "-w", "json"])
        .arg(&backup)
        .env("ETCDCTL_API", "3")
        .output()
        .expect("etcdctl");
    assert_eq!(code(&status), 0, "{}", stderr(&status));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert!(
        status["totalKey"].as_u64().is_some_and(|k| k >= 1),
        "{status}"
    );

    // cpm-etcd exports the status file the job wrote, from the directory it reads.
    let collector = cpm_etcd::metrics::BackupStatusCollector {
        path: dir.join(cpm_core::backup_status::FILE_NAME),
        node: NODE.to_string(),
    };
    let [last_success, size, ..] = collector.values().expect("a readable status file");
    assert!(last_success > 0, "no success exported");
    assert_eq!(
        u64::try_from(size).expect("size"),
        std::fs::metadata(&backup).expect("backup").len()
    );

    // What the container could see: the config, the CA certificate and its client pair, its
    // backup directory; no other key (the etcd CA key, the server and peer keys stay hidden).
    let mut seen = Vec::new();
    visible(&c, &mut seen);
    let pki = std::fs::canonicalize(node.join("etc/kubernetes/pki/etcd")).expect("pki");
    let mut pki_seen: Vec<String> = seen
        .iter()
        .filter_map(|p| p.strip_prefix(&pki).ok())
        .map(|p| p.display().to_string())
        .collect();
    pki_seen.sort();
    assert_eq!(
        pki_seen,
        ["ca.crt", "healthcheck-client.crt", "healthcheck-client.key"]
    );
    // Read-only mounts were not written.
    let pki_after = node.listing();
    let only_pki = |l: &str| -> String {
        l.lines()
            .filter(|line| line.contains("etc/kubernetes/pki"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(only_pki(&pki_before), only_pki(&pki_after));
    drop(etcd);
}
