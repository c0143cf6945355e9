//! 1 → 3 → 1 masters with real etcd: each new master is added as a learner through the existing
//! members, starts from its rendered manifest with `initial-cluster-state=existing`, and is
//! promoted once caught up; departed masters' members are removed by the Lease holder only with
//! a healthy quorum left, never the last one — while a writer puts keys. Control-plane Nodes come
//! from the test API server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use cpm_core::config::KeyAlgorithm;
use cpm_core::etcd::{EtcdOptions, connect};
use cpm_core::reconcile::{Agent, Mode};
use cpm_etcd::agent::EtcdAgent;
use cpm_testing::apiserver::ApiServer;
use cpm_testing::etcd::{EtcdProcess, etcd_binary};
use cpm_testing::fixtures::{ca_bundle, etcd_pki, write_config};
use cpm_testing::root::FakeRoot;
use k8s_openapi::api::core::v1::Node;
use kube::Api;

pub(crate) struct Master {
    pub(crate) name: String,
    pub(crate) ip: String,
    pub(crate) root: FakeRoot,
}

pub(crate) fn agent(m: &Master, config: &std::path::Path, kube: kube::Client) -> EtcdAgent {
    let cli = cpm_etcd::Cli::try_parse_from([
        "cpm-etcd",
        "--root",
        m.root.path().to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--node-name",
        &m.name,
        "--node-ip",
        &m.ip,
    ])
    .unwrap();
    let mut a = EtcdAgent::new(cli.common, Some(kube));
    a.promote_patience = Duration::from_millis(200);
    a
}

/// Three masters on `<prefix>.1`–`.3` with etcd certificates from one bundle, a config, and a
/// test API server (no Node registered yet).
pub(crate) struct ThreeMasters {
    _inputs: tempfile::TempDir,
    pub(crate) config: std::path::PathBuf,
    pub(crate) masters: Vec<Master>,
    _server: ApiServer,
    pub(crate) kube: kube::Client,
    pub(crate) nodes: Api<Node>,
}

pub(crate) async fn three_masters(prefix: &str) -> ThreeMasters {
    let inputs = tempfile::tempdir().unwrap();
    let bundle = ca_bundle(&inputs.path().join("pki"), KeyAlgorithm::EcdsaP256);
    let config = inputs.path().join("config.yaml");
    write_config(&config, "");
    let masters = (1..=3)
        .map(|i| {
            let m = Master {
                name: format!("master-{i}"),
                ip: format!("{prefix}.{i}"),
                root: FakeRoot::new(),
            };
            etcd_pki(m.root.path(), &bundle, &m.name, &m.ip);
            m
        })
        .collect();
    let server = ApiServer::start().await.unwrap();
    let kube = server.admin_client().await.unwrap();
    let nodes = Api::all(kube.clone());
    ThreeMasters {
        _inputs: inputs,
        config,
        masters,
        _server: server,
        kube,
        nodes,
    }
}

pub(crate) async fn register(api: &Api<Node>, m: &Master) {
    let node = cpm_testing::fixtures::control_plane_node(&m.name, &m.ip);
    api.create(&Default::default(), &node).await.unwrap();
}

pub(crate) fn creds(m: &Master, endpoints: Vec<String>) -> EtcdOptions {
    let pki = m.root.join("etc/kubernetes/pki/etcd");
    EtcdOptions {
        endpoints,
        ca: std::fs::read(pki.join("ca.crt")).unwrap(),
        cert: std::fs::read(pki.join("healthcheck-client.crt")).unwrap(),
        key: std::fs::read(pki.join("healthcheck-client.key")).unwrap(),
        connect_timeout: Duration::from_secs(3),
        request_timeout: Duration::from_secs(5),
    }
}

/// Runs passes until one succeeds, as the daemon's backoff would, while etcd answers "unhealthy
/// cluster" (its strict reconfiguration check right after a member (re)started).
pub(crate) async fn pass_until_ok(a: &mut EtcdAgent) {
    for _ in 0..100 {
        match a.pass(Mode::Apply).await {
            Ok(_) => return,
            Err(e) => {
                let text = cpm_core::exit::chain(&e);
                assert!(text.contains("unhealthy cluster"), "{text}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    panic!("no pass succeeded");
}

/// What a writer task did: the keys it got acknowledged, the puts that failed every try (the
/// cluster had no quorum), and the failed tries.
pub struct Writes {
    pub acked: Vec<u32>,
    pub lost: u32,
    pub failed_tries: u32,
}

/// Puts keys `w/<n>` through `opts` until `stop`, each tried up to `tries` times `retry` apart
/// (a put may fail across a leader change).
pub fn writer(
    opts: EtcdOptions,
    stop: Arc<AtomicBool>,
    tries: u32,
    retry: Duration,
) -> tokio::task::JoinHandle<Writes> {
    tokio::spawn(async move {
        let mut client = connect(&opts).await.unwrap();
        let mut w = Writes {
            acked: Vec::new(),
            lost: 0,
            failed_tries: 0,
        };
        let mut i = 0u32;
        while !stop.load(Ordering::SeqCst) && i < 100_000 {
            let mut ok = false;
            for _ in 0..tries {
                if client.put(format!("w/{i:06}"), "v", None).await.is_ok() {
                    ok = true;
                    break;
                }
                w.failed_tries += 1;
                tokio::time::sleep(retry).await;
            }
            if ok {
                w.acked.push(i);
            } else {
                w.lost += 1;
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        w
    })
}

/// Registers the first master's Node, renders its etcd as a new cluster and starts it.
pub async fn start_first(w: &ThreeMasters, etcd: &std::path::Path) -> EtcdProcess {
    let first = &w.masters[0];
    register(&w.nodes, first).await;
    agent(first, &w.config, w.kube.clone())
        .pass(Mode::Apply)
        .await
        .unwrap();
    let mut proc = EtcdProcess::spawn_from_manifest(etcd, first.root.path()).unwrap();
    proc.wait_healthy(Duration::from_secs(30)).unwrap();
    proc
}

/// Registers `m`'s Node; its agent adds it as a learner (no manifest before that, then one
/// joining the existing cluster), its etcd starts from that manifest, and passes promote it once
/// it has caught up. Returns its etcd.
pub async fn join_and_promote(w: &ThreeMasters, m: &Master, etcd: &std::path::Path) -> EtcdProcess {
    register(&w.nodes, m).await;
    let mut a = agent(m, &w.config, w.kube.clone());
    // Added as a learner and its manifest written; it cannot be promoted before it runs. Right
    // after a promotion etcd refuses a new member ("unhealthy cluster") until every voter has
    // been connected for a while: the pass fails and is retried, as the daemon's backoff would.
    let mut added = false;
    for _ in 0..100 {
        let err = a.pass(Mode::Apply).await.unwrap_err();
        let text = cpm_core::exit::chain(&err);
        if text.contains(&format!("learner {} not promoted yet", m.name)) {
            added = true;
            break;
        }
        assert!(text.contains("unhealthy cluster"), "{text}");
        assert!(
            !m.root.join("etc/kubernetes/manifests/etcd.yaml").exists(),
            "no manifest before the member is added"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(added, "{} was never added", m.name);
    let manifest = String::from_utf8(m.root.read("etc/kubernetes/manifests/etcd.yaml")).unwrap();
    assert!(
        manifest.contains("--initial-cluster-state=existing"),
        "{manifest}"
    );
    let proc = EtcdProcess::spawn_from_manifest(etcd, m.root.path()).unwrap();
    // Passes retry the promotion until the learner has caught up.
    let mut promoted = false;
    for _ in 0..100 {
        if a.pass(Mode::Apply).await.is_ok() {
            promoted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        promoted,
        "{} was never promoted: {}",
        m.name,
        proc.log_tail()
    );
    proc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_to_three_to_one_masters_while_writes_continue() {
    let Some(etcd) = etcd_binary() else { return };
    let w = three_masters("127.0.2").await;
    let (config, masters, kube, nodes) = (&w.config, &w.masters, w.kube.clone(), &w.nodes);

    // The first master starts a new cluster.
    let mut procs = vec![start_first(&w, &etcd).await];

    // A writer puts keys through member 1 for the whole scale-out.
    let stop = Arc::new(AtomicBool::new(false));
    // A put may be retried across a leader move; one that fails three times means the cluster
    // had no quorum.
    let writer = writer(
        creds(&masters[0], vec!["https://127.0.2.1:2379".into()]),
        stop.clone(),
        3,
        Duration::from_millis(100),
    );

    for m in &masters[1..] {
        procs.push(join_and_promote(&w, m, &etcd).await);
    }

    // All three are voting members.
    let mut all = connect(&creds(&masters[0], vec!["https://127.0.2.1:2379".into()]))
        .await
        .unwrap();
    let mut names: Vec<(String, bool)> = all
        .member_list()
        .await
        .unwrap()
        .members()
        .iter()
        .map(|m| (m.name().to_string(), m.is_learner()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ("master-1".into(), false),
            ("master-2".into(), false),
            ("master-3".into(), false)
        ]
    );
    for m in masters {
        let out = agent(m, config, kube.clone())
            .pass(Mode::Check)
            .await
            .unwrap();
        assert_eq!(
            out.changes(),
            0,
            "second pass of {}: {}",
            m.name,
            out.rendered
        );
    }

    // 3 → 1. First the quorum guard: with master-2's etcd down, master-3's departure must wait,
    // because master-1 alone is not a quorum of the two members that would remain.
    let mut first = agent(&masters[0], config, kube.clone());
    // A departure is not acted on before its grace period.
    nodes
        .delete(&masters[2].name, &Default::default())
        .await
        .unwrap();
    first.pass(Mode::Apply).await.unwrap();
    let mut early = connect(&creds(&masters[0], vec!["https://127.0.2.1:2379".into()]))
        .await
        .unwrap();
    assert_eq!(
        early.member_list().await.unwrap().members().len(),
        3,
        "within the grace period nothing is removed"
    );
    register(nodes, &masters[2]).await;
    first.departed_grace = Duration::ZERO;
    let mut registry = prometheus_client::registry::Registry::default();
    first.metrics = Some(cpm_etcd::metrics::EtcdMetrics::register(&mut registry));
    procs[1].kill();
    nodes
        .delete(&masters[2].name, &Default::default())
        .await
        .unwrap();
    first.pass(Mode::Apply).await.unwrap();
    let member_names = |client: &mut etcd_client::Client| {
        let mut c = client.clone();
        async move {
            let mut n: Vec<String> = c
                .member_list()
                .await
                .unwrap()
                .members()
                .iter()
                .map(|m| m.name().to_string())
                .collect();
            n.sort();
            n
        }
    };
    let mut watcher = connect(&creds(&masters[0], vec!["https://127.0.2.1:2379".into()]))
        .await
        .unwrap();
    assert_eq!(
        member_names(&mut watcher).await,
        ["master-1", "master-2", "master-3"],
        "nothing removed without a healthy quorum"
    );
    // master-2 comes back: master-3 is removed (its etcd then stops by itself).
    procs[1] = EtcdProcess::spawn_from_manifest(&etcd, masters[1].root.path()).unwrap();
    procs[1].wait_healthy(Duration::from_secs(30)).unwrap();
    pass_until_ok(&mut first).await;
    assert_eq!(member_names(&mut watcher).await, ["master-1", "master-2"]);
    let text = cpm_core::metrics::encode(&registry);
    for want in [
        "cpm_etcd_membership_changes_total{op=\"remove\"} 1",
        "cpm_etcd_members{role=\"voter\"} 2",
        "cpm_etcd_quota_backend_bytes 2147483648",
        "cpm_etcd_last_membership_change_timestamp_seconds",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(
        text.contains("cpm_etcd_db_size_bytes ") && !text.contains("cpm_etcd_db_size_bytes 0\n"),
        "{text}"
    );
    // Then master-2 leaves too; leadership is moved off it first if it leads.
    nodes
        .delete(&masters[1].name, &Default::default())
        .await
        .unwrap();
    pass_until_ok(&mut first).await;
    assert_eq!(member_names(&mut watcher).await, ["master-1"]);
    // The last member is never removed, whatever the API says.
    nodes
        .delete(&masters[0].name, &Default::default())
        .await
        .unwrap();
    pass_until_ok(&mut first).await;
    assert_eq!(member_names(&mut watcher).await, ["master-1"]);

    // master-3 comes back with its stale manifest and data dir: the data dir is moved aside and
    // it joins again as a new learner.
    drop(procs.remove(2));
    register(nodes, &masters[0]).await;
    register(nodes, &masters[2]).await;
    let mut third = agent(&masters[2], config, kube.clone());
    let mut added = false;
    for _ in 0..100 {
        let text = cpm_core::exit::chain(&third.pass(Mode::Apply).await.unwrap_err());
        if text.contains("learner master-3 not promoted yet") {
            added = true;
            break;
        }
        assert!(text.contains("unhealthy cluster"), "{text}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(added);
    let entries = masters[2].root.entries();
    assert!(
        entries
            .keys()
            .any(|p| p.starts_with("var/lib/etcd.removed-") && p.ends_with("/member")),
        "old data kept aside: {:?}",
        entries
            .keys()
            .filter(|p| p.starts_with("var/"))
            .collect::<Vec<_>>()
    );
    assert!(!masters[2].root.join("var/lib/etcd/member").exists());
    procs.push(EtcdProcess::spawn_from_manifest(&etcd, masters[2].root.path()).unwrap());
    pass_until_ok(&mut third).await;
    assert_eq!(member_names(&mut watcher).await, ["master-1", "master-3"]);

    stop.store(true, Ordering::SeqCst);
    let Writes {
        acked,
        lost: failed,
        ..
    } = writer.await.unwrap();
    assert!(
        acked.len() > 50,
        "the writer made progress: {}",
        acked.len()
    );
    assert_eq!(
        failed, 0,
        "no write failed while members joined: quorum held throughout"
    );

    // Every acknowledged key is there, and master-1 is the one member left.
    let mut client = connect(&creds(&masters[0], vec!["https://127.0.2.1:2379".into()]))
        .await
        .unwrap();
    let resp = client
        .get(
            "w/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(resp.kvs().len(), acked.len());
    let left: Vec<String> = client
        .member_list()
        .await
        .unwrap()
        .members()
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    let mut left = left;
    left.sort();
    assert_eq!(
        left,
        ["master-1", "master-3"],
        "master-1 stayed; master-3 rejoined"
    );
    drop(procs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_members_or_a_wrong_ca_never_start_a_second_cluster() {
    let Some(etcd) = etcd_binary() else { return };
    let inputs = tempfile::tempdir().unwrap();
    let bundle = ca_bundle(&inputs.path().join("pki"), KeyAlgorithm::EcdsaP256);
    let other = ca_bundle(&inputs.path().join("other"), KeyAlgorithm::EcdsaP256);
    let config = inputs.path().join("config.yaml");
    write_config(&config, "");
    let m1 = Master {
        name: "master-1".into(),
        ip: "127.0.3.1".into(),
        root: FakeRoot::new(),
    };
    let m2 = Master {
        name: "master-2".into(),
        ip: "127.0.3.2".into(),
        root: FakeRoot::new(),
    };
    etcd_pki(m1.root.path(), &bundle, &m1.name, &m1.ip);
    let server = ApiServer::start().await.unwrap();
    let kube = server.admin_client().await.unwrap();
    let nodes: Api<Node> = Api::all(kube.clone());
    register(&nodes, &m1).await;
    register(&nodes, &m2).await;

    // master-1's etcd is not running: master-2 refuses to start a cluster of its own.
    etcd_pki(m2.root.path(), &bundle, &m2.name, &m2.ip);
    let err = agent(&m2, &config, kube.clone())
        .pass(Mode::Apply)
        .await
        .unwrap_err();
    let text = cpm_core::exit::chain(&err);
    assert!(text.contains("other masters (master-1) are known but their etcd is unreachable; not starting a new cluster"), "{text}");
    assert!(
        m2.root
            .entries()
            .keys()
            .all(|p| !p.starts_with("etc/kubernetes/manifests") && !p.starts_with("var/")),
        "nothing written"
    );

    // master-1 runs; master-2's certificates come from another CA: still refused, no member added.
    let mut first = agent(&m1, &config, kube.clone());
    nodes.delete(&m2.name, &Default::default()).await.unwrap();
    first.pass(Mode::Apply).await.unwrap();
    let mut member = EtcdProcess::spawn_from_manifest(&etcd, m1.root.path()).unwrap();
    member.wait_healthy(Duration::from_secs(30)).unwrap();
    register(&nodes, &m2).await;
    etcd_pki(m2.root.path(), &other, &m2.name, &m2.ip);
    let err = agent(&m2, &config, kube.clone())
        .pass(Mode::Apply)
        .await
        .unwrap_err();
    assert!(
        cpm_core::exit::chain(&err).contains("their etcd is unreachable"),
        "{}",
        cpm_core::exit::chain(&err)
    );
    assert!(!m2.root.join("etc/kubernetes/manifests/etcd.yaml").exists());
    let mut c = connect(&creds(&m1, vec![member.client_url.clone()]))
        .await
        .unwrap();
    assert_eq!(
        c.member_list().await.unwrap().members().len(),
        1,
        "no membership change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragmented_database_is_defragmented_once_per_interval() {
    let Some(etcd) = etcd_binary() else { return };
    let inputs = tempfile::tempdir().unwrap();
    let bundle = ca_bundle(&inputs.path().join("pki"), KeyAlgorithm::EcdsaP256);
    let config = inputs.path().join("config.yaml");
    write_config(&config, "");
    let m = Master {
        name: "master-1".into(),
        ip: "127.0.4.1".into(),
        root: FakeRoot::new(),
    };
    etcd_pki(m.root.path(), &bundle, &m.name, &m.ip);
    let server = ApiServer::start().await.unwrap();
    let kube = server.admin_client().await.unwrap();
    register(&Api::all(kube.clone()), &m).await;
    let mut a = agent(&m, &config, kube.clone());
    a.defrag = cpm_etcd::defrag::DefragPolicy {
        min_free_bytes: 1 << 20,
        min_free_percent: 20,
        interval: Duration::from_secs(3600),
    };
    a.pass(Mode::Apply).await.unwrap();
    let mut member = EtcdProcess::spawn_from_manifest(&etcd, m.root.path()).unwrap();
    member.wait_healthy(Duration::from_secs(30)).unwrap();

    // Fragment it: 16 MiB written, deleted and compacted away.
    let mut c = connect(&creds(&m, vec![member.client_url.clone()]))
        .await
        .unwrap();
    let value = vec![b'x'; 8192];
    for i in 0..2048 {
        c.put(format!("big/{i:05}"), value.clone(), None)
            .await
            .unwrap();
    }
    let rev = c
        .delete(
            "big/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    c.compact(
        rev,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await
    .unwrap();
    let before = c.status().await.unwrap().db_size();

    a.pass(Mode::Apply).await.unwrap();
    let after = c.status().await.unwrap().db_size();
    assert!(
        after * 2 < before,
        "defragmented: {before} -> {after} bytes"
    );

    // Fragment again: within the interval nothing happens.
    for i in 0..2048 {
        c.put(format!("big/{i:05}"), value.clone(), None)
            .await
            .unwrap();
    }
    let rev = c
        .delete(
            "big/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    c.compact(
        rev,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await
    .unwrap();
    let fragmented = c.status().await.unwrap().db_size();
    a.pass(Mode::Apply).await.unwrap();
    assert_eq!(
        c.status().await.unwrap().db_size(),
        fragmented,
        "at most once per interval"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_member_on_a_loopback_peer_url_moves_to_the_node_ip_before_anyone_joins() {
    let Some(etcd) = etcd_binary() else { return };
    let inputs = tempfile::tempdir().unwrap();
    let bundle = ca_bundle(&inputs.path().join("pki"), KeyAlgorithm::EcdsaP256);
    let config = inputs.path().join("config.yaml");
    write_config(&config, "");
    let m1 = Master {
        name: "master-1".into(),
        ip: "127.0.7.1".into(),
        root: FakeRoot::new(),
    };
    let m2 = Master {
        name: "master-2".into(),
        ip: "127.0.7.2".into(),
        root: FakeRoot::new(),
    };
    etcd_pki(m1.root.path(), &bundle, &m1.name, &m1.ip);
    etcd_pki(m2.root.path(), &bundle, &m2.name, &m2.ip);
    // A single-node install whose member advertises 127.0.0.1.
    let single = Master {
        name: m1.name.clone(),
        ip: "127.0.0.1".into(),
        root: FakeRoot::new(),
    };
    let cli = cpm_etcd::Cli::try_parse_from([
        "cpm-etcd",
        "--root",
        m1.root.path().to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--node-name",
        &single.name,
        "--node-ip",
        &single.ip,
    ])
    .unwrap();
    EtcdAgent::new(cli.common, None)
        .pass(Mode::Apply)
        .await
        .unwrap();
    let mut first = EtcdProcess::spawn_from_manifest(&etcd, m1.root.path()).unwrap();
    first.wait_healthy(Duration::from_secs(30)).unwrap();

    let server = ApiServer::start().await.unwrap();
    let kube = server.admin_client().await.unwrap();
    let nodes: Api<Node> = Api::all(kube.clone());
    register(&nodes, &m1).await;
    register(&nodes, &m2).await;
    // A new master waits: a member that listens and advertises on 127.0.0.1 cannot be joined
    // (unreachable from the node, or reachable but advertising a loopback peer URL).
    let err = agent(&m2, &config, kube.clone())
        .pass(Mode::Apply)
        .await
        .unwrap_err();
    let text = cpm_core::exit::chain(&err);
    assert!(
        text.contains("not starting a new cluster")
            || text.contains("not joining yet: master-1 advertises a loopback peer URL"),
        "{text}"
    );
    assert!(!m2.root.join("etc/kubernetes/manifests/etcd.yaml").exists());

    // master-1's agent, now with its node IP, moves the peer URL and re-renders its manifest.
    agent(&m1, &config, kube.clone())
        .pass(Mode::Apply)
        .await
        .unwrap();
    let manifest = String::from_utf8(m1.root.read("etc/kubernetes/manifests/etcd.yaml")).unwrap();
    assert!(
        manifest.contains("--listen-peer-urls=https://127.0.7.1:2380")
            && manifest.contains("--advertise-client-urls=https://127.0.7.1:2379"),
        "{manifest}"
    );
    first.kill();
    let mut moved = EtcdProcess::spawn_from_manifest(&etcd, m1.root.path()).unwrap();
    moved.wait_healthy(Duration::from_secs(30)).unwrap();
    let mut c = connect(&creds(&m1, vec![moved.client_url.clone()]))
        .await
        .unwrap();
    let list = c.member_list().await.unwrap();
    assert_eq!(list.members().len(), 1);
    assert_eq!(
        list.members()[0].peer_urls(),
        ["https://127.0.7.1:2380".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_killed_during_scale_out_blocks_changes_until_it_returns() {
    let Some(etcd) = etcd_binary() else { return };
    tokio::time::timeout(Duration::from_secs(180), async {
        let w = three_masters("127.0.8").await;
        let (config, masters, kube, nodes) = (&w.config, &w.masters, w.kube.clone(), &w.nodes);
        register(nodes, &masters[0]).await;
        agent(&masters[0], config, kube.clone())
            .pass(Mode::Apply)
            .await
            .unwrap();
        let mut procs =
            vec![EtcdProcess::spawn_from_manifest(&etcd, masters[0].root.path()).unwrap()];
        procs[0].wait_healthy(Duration::from_secs(30)).unwrap();
        register(nodes, &masters[1]).await;
        let mut second = agent(&masters[1], config, kube.clone());
        let _ = second.pass(Mode::Apply).await;
        procs.push(EtcdProcess::spawn_from_manifest(&etcd, masters[1].root.path()).unwrap());
        pass_until_ok(&mut second).await;
        let voters = |c: etcd_client::Client| async move {
            let mut c = c;
            let list = c.member_list().await.unwrap();
            list.members().iter().filter(|m| !m.is_learner()).count()
        };
        let watcher = connect(&creds(&masters[0], vec!["https://127.0.8.1:2379".into()]))
            .await
            .unwrap();
        assert_eq!(voters(watcher.clone()).await, 2);

        // master-2 dies during the scale-out: master-3's passes change nothing.
        procs[1].kill();
        register(nodes, &masters[2]).await;
        let mut third = agent(&masters[2], config, kube.clone());
        for _ in 0..3 {
            let text = cpm_core::exit::chain(&third.pass(Mode::Apply).await.unwrap_err());
            assert!(
                text.contains("unhealthy cluster") || text.contains("unreachable"),
                "{text}"
            );
            let mut w = watcher.clone();
            assert_eq!(
                w.member_list().await.unwrap().members().len(),
                2,
                "no member added while a voter is down"
            );
            assert!(
                !masters[2]
                    .root
                    .join("etc/kubernetes/manifests/etcd.yaml")
                    .exists()
            );
        }

        // master-2 returns: master-3 joins as a learner, starts, and is promoted.
        procs[1] = EtcdProcess::spawn_from_manifest(&etcd, masters[1].root.path()).unwrap();
        procs[1].wait_healthy(Duration::from_secs(30)).unwrap();
        let mut added = false;
        for _ in 0..80 {
            let text = cpm_core::exit::chain(&third.pass(Mode::Apply).await.unwrap_err());
            if text.contains("not promoted yet") {
                added = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(added, "master-3 was added once master-2 returned");
        procs.push(EtcdProcess::spawn_from_manifest(&etcd, masters[2].root.path()).unwrap());
        pass_until_ok(&mut third).await;
        assert_eq!(voters(watcher.clone()).await, 3, "converged");
    })
    .await
    .expect("the scenario finishes within 3 minutes");
}
