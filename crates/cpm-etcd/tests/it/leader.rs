//! A departing master whose etcd member leads: with real etcd, three voters, leadership moved to
//! master-3 by `etcdctl move-leader`, and master-3's Node deleted. After the grace period the
//! Lease holder moves leadership to a remaining member (etcd accepts MoveLeader only on the
//! leader) and then removes master-3, while a writer keeps putting keys through master-1.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cpm_core::etcd::connect;
use cpm_core::reconcile::{Agent, Mode};
use cpm_testing::etcd::{EtcdProcess, etcd_binary, etcdctl_binary};

use crate::scale::{
    ThreeMasters, Writes, agent, creds, join_and_promote, pass_until_ok, start_first,
    three_masters, writer,
};

/// Starts master-1 as a new cluster and joins master-2 and master-3 as learners, each promoted
/// once it has caught up; returns the three etcd processes.
async fn three_voters(w: &ThreeMasters, etcd: &Path) -> Vec<EtcdProcess> {
    let mut procs = vec![start_first(w, etcd).await];
    for m in &w.masters[1..] {
        procs.push(join_and_promote(w, m, etcd).await);
    }
    procs
}

/// The leader id as the member at `url` sees it.
async fn leader_seen_by(w: &ThreeMasters, url: &str) -> u64 {
    let mut c = connect(&creds(&w.masters[0], vec![url.to_string()]))
        .await
        .unwrap();
    c.status().await.unwrap().leader()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_departing_leader_hands_leadership_over_before_it_is_removed() {
    let (Some(etcd), Some(ctl)) = (etcd_binary(), etcdctl_binary()) else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(300), async {
        let w = three_masters("127.0.16").await;
        let masters = &w.masters;
        let procs = three_voters(&w, &etcd).await;
        let urls: Vec<String> = procs.iter().map(|p| p.client_url.clone()).collect();
        let mut watcher = connect(&creds(&masters[0], vec![urls[0].clone()]))
            .await
            .unwrap();
        let ids: Vec<(String, u64)> = watcher
            .member_list()
            .await
            .unwrap()
            .members()
            .iter()
            .map(|m| (m.name().to_string(), m.id()))
            .collect();
        let id = |name: &str| ids.iter().find(|(n, _)| n == name).unwrap().1;
        let third = id("master-3");

        // A writer puts keys through master-1 for the whole scale-in. A put is retried across a
        // leader change; one that fails every try means the cluster had no quorum.
        let stop = Arc::new(AtomicBool::new(false));
        let writer = writer(
            creds(&masters[0], vec![urls[0].clone()]),
            stop.clone(),
            5,
            Duration::from_millis(200),
        );

        // master-3 leads (etcdctl finds the leader among the endpoints and asks it).
        let pki = masters[0].root.join("etc/kubernetes/pki/etcd");
        let (ok, text) = crate::etcdctl(
            &ctl,
            &urls.join(","),
            &pki,
            &["move-leader", &format!("{third:x}")],
        );
        assert!(ok, "{text}");
        let mut leads = false;
        for _ in 0..100 {
            if leader_seen_by(&w, &urls[0]).await == third {
                leads = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(leads, "master-3 never became the leader");

        // master-3's Node goes; within the grace period nothing changes.
        w.nodes
            .delete(&masters[2].name, &Default::default())
            .await
            .unwrap();
        let mut first = agent(&masters[0], &w.config, w.kube.clone());
        first.departed_grace = Duration::from_secs(1);
        let mut registry = prometheus_client::registry::Registry::default();
        first.metrics = Some(cpm_etcd::metrics::EtcdMetrics::register(&mut registry));
        first.pass(Mode::Apply).await.unwrap();
        assert_eq!(
            watcher.member_list().await.unwrap().members().len(),
            3,
            "nothing removed within the grace period"
        );
        assert_eq!(
            leader_seen_by(&w, &urls[0]).await,
            third,
            "master-3 still leads when its removal comes due"
        );

        // After the grace period master-3 is removed, leadership first moved off it.
        let mut removed = false;
        let mut last = String::new();
        for _ in 0..120 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            match first.pass(Mode::Apply).await {
                Ok(_) => {}
                Err(e) => last = cpm_core::exit::chain(&e),
            }
            if watcher.member_list().await.unwrap().members().len() == 2 {
                removed = true;
                break;
            }
        }
        assert!(removed, "master-3 was never removed; last error: {last}");
        let mut names: Vec<String> = watcher
            .member_list()
            .await
            .unwrap()
            .members()
            .iter()
            .map(|m| m.name().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["master-1", "master-2"]);
        let leader = leader_seen_by(&w, &urls[0]).await;
        assert!(
            leader == id("master-1") || leader == id("master-2"),
            "a remaining member leads: {leader:x}"
        );
        let text = cpm_core::metrics::encode(&registry);
        for want in [
            "cpm_etcd_membership_changes_total{op=\"move_leader\"} 1",
            "cpm_etcd_membership_changes_total{op=\"remove\"} 1",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        // The remaining two keep a quorum: a later pass changes nothing.
        pass_until_ok(&mut first).await;
        assert_eq!(watcher.member_list().await.unwrap().members().len(), 2);

        stop.store(true, Ordering::SeqCst);
        let Writes {
            acked,
            lost,
            failed_tries: errors,
        } = writer.await.unwrap();
        assert!(
            acked.len() > 50,
            "the writer made progress: {}",
            acked.len()
        );
        assert_eq!(
            lost, 0,
            "no write failed all its tries: quorum held throughout ({errors} failed tries)"
        );
        assert!(
            errors <= 25,
            "failed tries stay within an election blip: {errors}"
        );
        let resp = watcher
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
        assert_eq!(
            resp.kvs().len(),
            acked.len(),
            "every acknowledged key is there"
        );
        drop(procs);
    })
    .await
    .expect("the scenario finishes within 5 minutes");
}
