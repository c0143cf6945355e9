//! kube-scheduler's `KubeSchedulerConfiguration` file (`kubescheduler.config.k8s.io/v1`).

use serde::Serialize;

use super::extenders::Extender;

/// `apiVersion` of the rendered configuration.
pub const SCHEDULER_CONFIG_API_VERSION: &str = "kubescheduler.config.k8s.io/v1";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KubeSchedulerConfiguration<'a> {
    api_version: &'static str,
    kind: &'static str,
    client_connection: ClientConnection<'a>,
    leader_election: LeaderElection,
    #[serde(skip_serializing_if = "<[Extender]>::is_empty")]
    extenders: &'a [Extender],
}

#[derive(Serialize)]
struct ClientConnection<'a> {
    kubeconfig: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LeaderElection {
    leader_elect: bool,
}

/// The whole `KubeSchedulerConfiguration` YAML: the kubeconfig, leader election on, and the
/// extenders (omitted when there are none). The same input always gives the same bytes.
pub fn render_scheduler_config(extenders: &[Extender], kubeconfig_path: &str) -> String {
    let config = KubeSchedulerConfiguration {
        api_version: SCHEDULER_CONFIG_API_VERSION,
        kind: "KubeSchedulerConfiguration",
        client_connection: ClientConnection {
            kubeconfig: kubeconfig_path,
        },
        leader_election: LeaderElection { leader_elect: true },
        extenders,
    };
    // Plain scalars: the base64 CA data stays on one line, as kubectl writes it.
    let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
    // Strings, integers and booleans only: serialising cannot fail.
    serde_saphyr::to_string_with_options(&config, options)
        .expect("invariant: a KubeSchedulerConfiguration serialises to YAML")
}
