//! Tests of the cpm-certs agent against a temporary root: idempotence, injected clock, crash
//! safety, backups and metrics.

use std::sync::Mutex;

use cpm_core::config::KeyAlgorithm;
use cpm_core::reconcile::{Agent, Mode};
use cpm_testing::fixtures::{ca_bundle, write_config};
use cpm_testing::root::FakeRoot;
use prometheus_client::registry::Registry;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::*;
use crate::metrics::CertMetrics;

struct Node {
    root: FakeRoot,
    _inputs: tempfile::TempDir,
    args: CommonArgs,
    now: Arc<Mutex<OffsetDateTime>>,
}

fn node(extra_config: &str) -> Node {
    let inputs = tempfile::tempdir().unwrap();
    let pki = ca_bundle(&inputs.path().join("pki"), KeyAlgorithm::EcdsaP256);
    let config = inputs.path().join("config.yaml");
    write_config(&config, extra_config);
    let root = FakeRoot::new();
    let args = <crate::Cli as clap::Parser>::try_parse_from([
        "cpm-certs",
        "--root",
        root.path().to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--pki-dir",
        pki.to_str().unwrap(),
        "--node-name",
        "master-1",
        "--node-ip",
        "127.0.0.1",
    ])
    .unwrap()
    .common;
    Node {
        root,
        _inputs: inputs,
        args,
        now: Arc::new(Mutex::new(datetime!(2026-01-01 00:00 UTC))),
    }
}

impl Node {
    fn agent(&self, metrics: Option<CertMetrics>) -> CertsAgent {
        let now = self.now.clone();
        CertsAgent::new(
            self.args.clone(),
            Arc::new(move || *now.lock().unwrap()),
            metrics,
        )
    }
    fn advance(&self, days: i64) {
        *self.now.lock().unwrap() += Duration::days(days);
    }
}

#[tokio::test]
async fn second_pass_changes_nothing_not_even_mtimes() {
    let n = node("");
    let mut agent = n.agent(None);
    let first = agent.pass(Mode::Apply).await.unwrap();
    assert_eq!(
        first.changes(),
        2 + 8 + 14,
        "2 dirs, 8 CA bundle files, 7 leaves × 2 files"
    );
    let before = n.root.entries();
    let second = agent.pass(Mode::Apply).await.unwrap();
    assert_eq!(second.changes(), 0, "{}", second.rendered);
    assert_eq!(
        n.root.entries(),
        before,
        "same bytes, modes, mtimes and inodes"
    );
    for (path, e) in &before {
        let want = if path.ends_with("ca.crt") || path.ends_with("front-proxy-ca.crt") {
            0o644
        } else if e.digest == "dir" {
            0o755
        } else {
            0o600
        };
        assert_eq!(e.mode, want, "{path}");
    }
}

#[tokio::test]
async fn injected_clock_renews_only_inside_the_window_and_backs_up() {
    let n = node("certificates: {validityDays: 365, renewBeforeDays: 30}\n");
    let mut registry = Registry::default();
    let metrics = CertMetrics::register(&mut registry);
    let mut agent = n.agent(Some(metrics));
    agent.pass(Mode::Apply).await.unwrap();
    let issued = n.root.entries();

    n.advance(365 - 30 - 31);
    assert_eq!(agent.pass(Mode::Apply).await.unwrap().changes(), 0);
    assert_eq!(n.root.entries(), issued);

    n.advance(32);
    let renewed = agent.pass(Mode::Apply).await.unwrap();
    assert_eq!(
        renewed
            .summary
            .iter()
            .find(|(k, _)| *k == "replace")
            .unwrap()
            .1,
        14
    );
    let after = n.root.entries();
    assert_ne!(
        after["etc/kubernetes/pki/apiserver.crt"].digest,
        issued["etc/kubernetes/pki/apiserver.crt"].digest
    );
    assert_eq!(
        after["etc/kubernetes/pki/ca.crt"], issued["etc/kubernetes/pki/ca.crt"],
        "CAs are never touched"
    );
    // The replaced files were kept in a bounded backup generation.
    let backups: Vec<_> = after
        .keys()
        .filter(|p| p.starts_with(BACKUP_DIR) && p.ends_with("apiserver.crt"))
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(
        after[backups[0]].digest,
        issued["etc/kubernetes/pki/apiserver.crt"].digest
    );

    let text = cpm_core::metrics::encode(&registry);
    assert!(
        text.contains("cpm_certificate_renewals_total{name=\"apiserver\",reason=\"expiring\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("cpm_certificate_renewals_total{name=\"etcd-peer\",reason=\"missing\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("cpm_certificate_expiry_timestamp_seconds{name=\"ca\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn a_crash_between_write_and_rename_leaves_old_files_and_no_temp() {
    let n = node("");
    let mut agent = n.agent(None);
    agent.pass(Mode::Apply).await.unwrap();
    let before = n.root.entries();
    agent.forced = vec!["apiserver".into()];
    agent.before_rename = Some(Box::new(|tmp: &std::path::Path| {
        if tmp.to_string_lossy().contains("apiserver.crt") {
            Err(std::io::Error::other("injected crash"))
        } else {
            Ok(())
        }
    }));
    let err = agent.pass(Mode::Apply).await.unwrap_err();
    assert!(
        cpm_core::exit::chain(&err).contains("apiserver.crt"),
        "{err}"
    );
    let after = n.root.entries();
    assert_eq!(
        after["etc/kubernetes/pki/apiserver.crt"], before["etc/kubernetes/pki/apiserver.crt"],
        "old certificate intact"
    );
    assert!(
        after.keys().all(|p| !p.contains(".cpm-tmp-")),
        "no temp file left: {:?}",
        after.keys()
    );
    // The key was written before the crash and no longer matches the old certificate: the next
    // pass detects that and converges.
    agent.before_rename = None;
    agent.forced.clear();
    let healed = agent.pass(Mode::Apply).await.unwrap();
    assert!(healed.changes() > 0);
    assert_eq!(agent.pass(Mode::Apply).await.unwrap().changes(), 0);
}

#[tokio::test]
async fn dry_run_and_check_write_nothing() {
    let n = node("");
    let mut agent = n.agent(None);
    let plan = agent.pass(Mode::DryRun).await.unwrap();
    assert!(n.root.entries().is_empty(), "dry run wrote files");
    assert!(
        plan.rendered
            .contains("create etc/kubernetes/pki/apiserver.key (mode 0600)"),
        "{}",
        plan.rendered
    );
    assert!(
        !plan.rendered.contains("PRIVATE KEY"),
        "secrets leaked into the plan"
    );
    agent.pass(Mode::Apply).await.unwrap();
    let before = n.root.entries();
    assert_eq!(agent.pass(Mode::Check).await.unwrap().changes(), 0);
    assert_eq!(n.root.entries(), before);
}
