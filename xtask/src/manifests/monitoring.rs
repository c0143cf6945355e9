//! Monitoring: the alert rules (as a PrometheusRule and as a plain rule file for promtool),
//! and the ServiceMonitors of the control plane, the cpm agents and api-proxy (all scraped
//! through metrics-rbac-proxy, except kube-apiserver which is scraped directly).
//!
//! monitoring.coreos.com kinds have no k8s-openapi types: they are `serde_json::Value`s; the
//! rules themselves are typed ([`RuleFile`]).

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};

use super::common::{NAMESPACE, file, labels, yaml};
use super::workloads::ROUTES;

/// Where the runbooks are.
const RUNBOOKS: &str = "docs/operations.md";

/// A Prometheus rule file (`promtool check rules` reads it; it is also a PrometheusRule's spec).
#[derive(Debug, Clone, Serialize)]
pub struct RuleFile {
    /// The groups.
    pub groups: Vec<RuleGroup>,
}

/// A group of rules evaluated together.
#[derive(Debug, Clone, Serialize)]
pub struct RuleGroup {
    /// Group name.
    pub name: String,
    /// The alerts.
    pub rules: Vec<Alert>,
}

/// One alerting rule.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// Alert name.
    pub alert: String,
    /// PromQL expression.
    pub expr: String,
    /// How long the expression must hold.
    #[serde(rename = "for")]
    pub for_: String,
    /// Labels (always `severity`).
    pub labels: BTreeMap<String, String>,
    /// `summary`, `description`, `runbook_url`.
    pub annotations: BTreeMap<String, String>,
}

fn alert(
    name: &str,
    expr: &str,
    for_: &str,
    severity: &str,
    anchor: &str,
    summary: &str,
    description: &str,
) -> Alert {
    Alert {
        alert: name.to_string(),
        expr: expr.to_string(),
        for_: for_.to_string(),
        labels: BTreeMap::from([("severity".to_string(), severity.to_string())]),
        annotations: BTreeMap::from([
            ("summary".to_string(), summary.to_string()),
            ("description".to_string(), description.to_string()),
            ("runbook_url".to_string(), format!("{RUNBOOKS}#{anchor}")),
        ]),
    }
}

/// A duration for people: whole days from two days up, else hours.
fn human(seconds: u64) -> String {
    if seconds >= 2 * 86400 && seconds.is_multiple_of(86400) {
        format!("{} days", seconds / 86400)
    } else if seconds.is_multiple_of(3600) {
        format!("{} hours", seconds / 3600)
    } else {
        format!("{} minutes", seconds / 60)
    }
}

/// Every alert, grouped. `backup_schedule` (the CronJob's) sets the backup age threshold: twice
/// its longest gap between runs ([`super::cron`]), so a weekly schedule waits two weeks, not two
/// days.
pub fn rules(backup_schedule: &str) -> anyhow::Result<RuleFile> {
    let backup_max_age = 2 * super::cron::Schedule::parse(backup_schedule)
        .and_then(|s| s.longest_gap_seconds())
        .context("etcd.backup.schedule")?;
    let etcd = RuleGroup {
        name: "cpm-etcd".to_string(),
        rules: vec![
            alert(
                "CpmEtcdNoLeader",
                r#"etcd_server_has_leader{job="kube-etcd"} == 0"#,
                "1m",
                "critical",
                "etcd-no-leader",
                "etcd member has no leader",
                "etcd member on {{ $labels.node }} has had no leader for 1 minute.",
            ),
            alert(
                "CpmEtcdInsufficientMembers",
                r#"sum by (job) (up{job="kube-etcd"} == bool 1) < ((count by (job) (up{job="kube-etcd"}) + 1) / 2)"#,
                "3m",
                "critical",
                "etcd-insufficient-members",
                "etcd cluster has lost its quorum",
                "Fewer than a quorum of etcd members answer their metrics scrape.",
            ),
            alert(
                "CpmEtcdHighFsyncDurations",
                r#"histogram_quantile(0.99, sum by (job, instance, node, le) (rate(etcd_disk_wal_fsync_duration_seconds_bucket{job="kube-etcd"}[5m]))) > 0.5"#,
                "10m",
                "warning",
                "etcd-high-fsync-durations",
                "etcd WAL fsync is slow",
                "The 99th percentile of WAL fsync durations of etcd on {{ $labels.node }} is above 0.5 s.",
            ),
            alert(
                "CpmEtcdHighFsyncDurations",
                r#"histogram_quantile(0.99, sum by (job, instance, node, le) (rate(etcd_disk_wal_fsync_duration_seconds_bucket{job="kube-etcd"}[5m]))) > 1"#,
                "10m",
                "critical",
                "etcd-high-fsync-durations",
                "etcd WAL fsync is very slow",
                "The 99th percentile of WAL fsync durations of etcd on {{ $labels.node }} is above 1 s.",
            ),
            alert(
                "CpmEtcdDatabaseQuotaLowSpace",
                r#"(etcd_mvcc_db_total_size_in_bytes{job="kube-etcd"} / etcd_server_quota_backend_bytes{job="kube-etcd"}) * 100 > 80"#,
                "10m",
                "warning",
                "etcd-database-quota-low-space",
                "etcd database is close to its quota",
                "The etcd database on {{ $labels.node }} uses more than 80 % of its quota (quota-backend-bytes).",
            ),
            alert(
                "CpmEtcdBackupTooOld",
                &format!(
                    "time() - cpm_etcd_backup_last_success_timestamp_seconds > {backup_max_age}"
                ),
                "15m",
                "warning",
                "etcd-backup-too-old",
                "No recent etcd backup",
                &format!(
                    "The last successful etcd backup on {{{{ $labels.node }}}} is older than {} (twice the longest gap of the backup schedule).",
                    human(backup_max_age)
                ),
            ),
            alert(
                "CpmEtcdBackupFilesIgnored",
                "cpm_etcd_backup_ignored_files > 0",
                "1h",
                "warning",
                "etcd-backup-files-ignored",
                "Files in the etcd backup directory that retention ignores",
                "{{ $value }} file(s) named as etcd backups of {{ $labels.node }} are ignored by retention ({{ $labels.reason }}): neither counted toward the kept backups nor deleted.",
            ),
        ],
    };
    let control_plane = RuleGroup {
        name: "cpm-control-plane".to_string(),
        rules: vec![
            alert(
                "CpmKubeApiserverDown",
                r#"absent(up{job="kube-apiserver"} == 1)"#,
                "5m",
                "critical",
                "kube-apiserver-down",
                "No kube-apiserver is up",
                "Prometheus has not scraped any kube-apiserver successfully for 5 minutes.",
            ),
            alert(
                "CpmKubeControllerManagerDown",
                r#"absent(up{job="kube-controller-manager"} == 1)"#,
                "5m",
                "critical",
                "kube-controller-manager-down",
                "No kube-controller-manager is up",
                "Prometheus has not scraped any kube-controller-manager successfully for 5 minutes.",
            ),
            alert(
                "CpmKubeSchedulerDown",
                r#"absent(up{job="kube-scheduler"} == 1)"#,
                "5m",
                "critical",
                "kube-scheduler-down",
                "No kube-scheduler is up",
                "Prometheus has not scraped any kube-scheduler successfully for 5 minutes.",
            ),
            alert(
                "CpmControlPlaneTargetDown",
                r#"up{job=~"kube-apiserver|kube-controller-manager|kube-scheduler|kube-etcd"} == 0"#,
                "10m",
                "warning",
                "control-plane-target-down",
                "A control-plane component is down",
                "{{ $labels.job }} on {{ $labels.node }} has not answered its metrics scrape for 10 minutes.",
            ),
        ],
    };
    let cpm = RuleGroup {
        name: "cpm".to_string(),
        rules: vec![
            alert(
                "CpmCertificateExpiringSoon",
                r#"({__name__=~"cpm_certificate_expiry_timestamp_seconds|cpm_kubeconfig_expiry_timestamp_seconds"} - time()) < 14 * 86400"#,
                "1h",
                "warning",
                "certificate-expiring",
                "A control-plane certificate expires within 14 days",
                "Certificate {{ $labels.name }}{{ $labels.file }} on {{ $labels.node }} expires within 14 days and was not renewed.",
            ),
            alert(
                "CpmCertificateExpiringCritical",
                r#"({__name__=~"cpm_certificate_expiry_timestamp_seconds|cpm_kubeconfig_expiry_timestamp_seconds"} - time()) < 3 * 86400"#,
                "10m",
                "critical",
                "certificate-expiring",
                "A control-plane certificate expires within 3 days",
                "Certificate {{ $labels.name }}{{ $labels.file }} on {{ $labels.node }} expires within 3 days and was not renewed.",
            ),
            alert(
                "CpmApiProxyNoHealthyUpstream",
                "max without (upstream) (cpm_api_proxy_upstream_healthy) == 0",
                "1m",
                "critical",
                "api-proxy-no-healthy-upstream",
                "api-proxy has no healthy API server",
                "api-proxy on {{ $labels.node }} has no healthy upstream: the node reaches the API only by trying dead servers.",
            ),
            alert(
                "CpmRolloutFailed",
                "cpm_rollout_failed == 1",
                "1m",
                "warning",
                "rollout-failed",
                "A control-plane rollout failed",
                "The last rollout on {{ $labels.node }} failed and was rolled back; the rollout is halted.",
            ),
            alert(
                "CpmRolloutVersionHeld",
                "cpm_rollout_version_held == 1",
                "15m",
                "warning",
                "version-held",
                "A master cannot move to the configured version",
                "cpm-manifests on {{ $labels.node }} keeps the minor it runs although kubernetesVersion asks another: it has no API to move masters one at a time (no --kubeconfig, or the rollout state cannot be read).",
            ),
            alert(
                "CpmEtcdRolloutRecordUnreadable",
                "cpm_etcd_rollout_record_readable == 0",
                "15m",
                "warning",
                "version-held",
                "cpm-etcd cannot read its master's rollout record",
                "cpm-etcd on {{ $labels.node }} has not read its master's ControlPlaneNode for 15 minutes: etcd keeps the release it runs and takes no part in a version rollout.",
            ),
            alert(
                "CpmAgentNotReady",
                r#"up{job="cpm-agents"} == 0 or (time() - cpm_last_success_timestamp_seconds{job="cpm-agents"}) > 900"#,
                "15m",
                "warning",
                "agent-not-ready",
                "A cpm agent is not ready",
                "{{ $labels.component }} on {{ $labels.node }} is down or has had no successful pass for 15 minutes (three resync periods).",
            ),
        ],
    };
    Ok(RuleFile {
        groups: vec![etcd, control_plane, cpm],
    })
}

fn metadata(name: &str, extra: &[(&str, &str)]) -> Value {
    let mut l = labels("cpm-monitoring");
    for (k, v) in extra {
        l.insert((*k).to_string(), (*v).to_string());
    }
    json!({"name": name, "namespace": NAMESPACE, "labels": l})
}

/// The PrometheusRule.
pub fn prometheus_rule(rules: &RuleFile) -> anyhow::Result<Value> {
    Ok(json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": metadata("cpm", &[("prometheus", "k8s"), ("role", "alert-rules")]),
        "spec": serde_json::to_value(rules)?,
    }))
}

/// The job label of each metrics-rbac-proxy route, and its `component` when it is a cpm agent.
fn route_job(route: &str) -> (&'static str, Option<&str>) {
    match route {
        "controller-manager" => ("kube-controller-manager", None),
        "scheduler" => ("kube-scheduler", None),
        "etcd" => ("kube-etcd", None),
        "api-proxy" => ("api-proxy", None),
        "proxy-reloader" => ("proxy-reloader", None),
        agent => ("cpm-agents", Some(agent)),
    }
}

const SA_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The ServiceMonitor of metrics-rbac-proxy's paths (control plane, etcd, cpm agents,
/// api-proxy and proxy-reloader on masters).
pub fn control_plane_monitor() -> Value {
    let endpoints: Vec<Value> = ROUTES
        .iter()
        .map(|(route, _)| {
            let (job, component) = route_job(route);
            let mut relabelings = vec![
                json!({"action": "replace", "targetLabel": "job", "replacement": job}),
                json!({"action": "replace", "sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}),
            ];
            // The operator's per-target labels mean nothing for node-level components.
            relabelings.push(json!({"action": "labeldrop", "regex": "endpoint|namespace|pod|service|container"}));
            if let Some(c) = component {
                relabelings.push(
                    json!({"action": "replace", "targetLabel": "component", "replacement": c}),
                );
            }
            json!({
                // cpm's own metrics carry their own `node` label where they have one.
                "honorLabels": component.is_some(),
                "port": "https-metrics",
                "path": format!("/{route}/metrics"),
                "scheme": "https",
                "interval": "30s",
                // The Prometheus ServiceAccount's token; the proxy checks it with a TokenReview.
                "bearerTokenFile": SA_TOKEN,
                // The proxy's serving certificate is self-signed unless --tls-cert-file is set.
                "tlsConfig": {"insecureSkipVerify": true},
                "relabelings": relabelings,
            })
        })
        .collect();
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata("control-plane-proxy", &[]),
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "control-plane-proxy"}},
            "namespaceSelector": {"matchNames": [NAMESPACE]},
            "endpoints": endpoints,
        },
    })
}

/// The ServiceMonitor of kube-apiserver (Service `default/kubernetes`), scraped directly.
pub fn apiserver_monitor() -> Value {
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata("kube-apiserver", &[]),
        "spec": {
            "selector": {"matchLabels": {"component": "apiserver", "provider": "kubernetes"}},
            "namespaceSelector": {"matchNames": ["default"]},
            "endpoints": [{
                "port": "https",
                "path": "/metrics",
                "scheme": "https",
                "interval": "30s",
                "bearerTokenFile": SA_TOKEN,
                "tlsConfig": {
                    "caFile": "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
                    "serverName": "kubernetes",
                },
                "relabelings": [
                    {"action": "replace", "targetLabel": "job", "replacement": "kube-apiserver"},
                    {"action": "replace", "sourceLabels": ["__meta_kubernetes_endpoint_node_name"], "targetLabel": "node"},
                ],
                // The request-duration histogram is the bulk of the apiserver's series.
                "metricRelabelings": [
                    {"action": "drop", "sourceLabels": ["__name__"], "regex": "apiserver_request_duration_seconds_bucket|etcd_request_duration_seconds_bucket|apiserver_response_sizes_bucket"},
                ],
            }],
        },
    })
}

/// `monitoring/cpm-rules.yaml`: the plain rule file (promtool).
pub fn render_rule_file(rules: &RuleFile) -> anyhow::Result<String> {
    Ok(file(
        "The cpm alert rules as a plain Prometheus rule file (the PrometheusRule's spec):\n\
         promtool check rules manifests/monitoring/cpm-rules.yaml",
        &[yaml(rules)?],
    ))
}

/// `monitoring/prometheusrule.yaml`.
pub fn render_prometheus_rule(rules: &RuleFile) -> anyhow::Result<String> {
    Ok(file(
        "The cpm alert rules for the Prometheus operator. Runbooks: docs/operations.md.",
        &[yaml(&prometheus_rule(rules)?)?],
    ))
}

/// `monitoring/servicemonitors.yaml`.
pub fn render_monitors() -> anyhow::Result<String> {
    Ok(file(
        "Scrape configuration for the Prometheus operator. Everything on masters goes through\n\
         metrics-rbac-proxy (<node IP>:4209) with the Prometheus ServiceAccount's token\n\
         (rbac/prometheus.yaml grants the paths); kube-apiserver is scraped directly.\n\
         The admin ports of the agents stay on 127.0.0.1.",
        &[yaml(&control_plane_monitor())?, yaml(&apiserver_monitor())?],
    ))
}
