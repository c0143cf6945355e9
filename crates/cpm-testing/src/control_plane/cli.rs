//! The command line of `cpm-test-apiserver`: `store` with its own flags, and the three
//! control-plane commands with the real components' flag names (Go syntax: `--flag=value`,
//! `--flag value`, booleans as `--flag` or `--flag=false`; a repeated flag overrides).

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::{CommandFactory as _, FromArgMatches as _};

use super::flags;

/// `cpm-test-apiserver`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "cpm-test-apiserver",
    version,
    about = "The test API server and control-plane stand-ins of cpm's simulated cluster",
    long_about = "The test API server and control-plane stand-ins of cpm's simulated cluster.\n\n\
        Run `store` once per cluster; run `kube-apiserver`, `kube-controller-manager` and \
        `kube-scheduler` with the flags of the static pods cpm renders (or invoke the binary \
        through a link with one of those names). Exit codes: 0 after SIGTERM or SIGINT, 1 on a \
        runtime failure, 2 on a usage error (an unknown flag included)."
)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The cluster's state: the in-memory test API server on --listen, behind which the
    /// kube-apiserver fronts forward.
    Store(Box<StoreArgs>),
    /// kube-apiserver: serves health and /version, forwards everything else to the store
    /// (CPM_SIM_STORE_URL, CPM_SIM_STORE_CA).
    #[command(args_override_self = true)]
    KubeApiserver(Box<KubeApiserverArgs>),
    /// kube-controller-manager stand-in: health, /metrics, its leader-election Lease.
    #[command(args_override_self = true)]
    KubeControllerManager(Box<ControllerManagerArgs>),
    /// kube-scheduler stand-in: health, /metrics, its leader-election Lease.
    #[command(args_override_self = true)]
    KubeScheduler(Box<SchedulerArgs>),
}

/// `cpm-test-apiserver store`.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Address to serve HTTPS on (port 0 picks a free one; see --admin-kubeconfig).
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// The cluster CA certificate: it issues the serving certificate and verifies client
    /// certificates.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: PathBuf,
    /// The cluster CA key.
    #[arg(long, value_name = "FILE")]
    pub ca_key: PathBuf,
    /// Extra names or IP addresses for the serving certificate (localhost, 127.0.0.1 and the
    /// listen address are always in it).
    #[arg(long = "tls-san", value_name = "NAME")]
    pub tls_sans: Vec<String>,
    /// CA of the front proxies' client certificates (the front-proxy CA); enables
    /// request-header authentication.
    #[arg(long, value_name = "FILE")]
    pub requestheader_client_ca_file: Option<PathBuf>,
    /// Common names a front proxy's certificate may carry (comma-separated; empty allows any).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub requestheader_allowed_names: Vec<String>,
    /// Headers holding the username.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-User")]
    pub requestheader_username_headers: Vec<String>,
    /// Headers holding groups.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-Group")]
    pub requestheader_group_headers: Vec<String>,
    /// Prefixes of headers holding extra attributes.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-Extra-")]
    pub requestheader_extra_headers_prefix: Vec<String>,
    /// Issuer of service-account tokens (also the audience API requests' tokens must carry).
    #[arg(
        long,
        value_name = "URL",
        default_value = "https://kubernetes.default.svc.cluster.local"
    )]
    pub service_account_issuer: String,
    /// The gitVersion /version reports.
    #[arg(long, value_name = "VERSION", default_value = super::DEFAULT_VERSION)]
    pub kubernetes_version: String,
    /// Watch events retained for resuming; older resourceVersions are 410 Expired.
    #[arg(long, value_name = "EVENTS", default_value_t = 100_000)]
    pub history_window: usize,
    /// Once listening, write a kubeconfig for a system:masters user here (mode 0600).
    #[arg(long, value_name = "FILE")]
    pub admin_kubeconfig: Option<PathBuf>,
    /// Log level (RUST_LOG wins).
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

/// The kube-apiserver flags the front honours (the others it accepts are in `flags.rs`).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Honoured")]
pub struct KubeApiserverArgs {
    /// The address advertised to the cluster (the `kubernetes` endpoints); default: the bind
    /// address.
    #[arg(long, value_name = "IP")]
    pub advertise_address: Option<IpAddr>,
    /// The address to serve on.
    #[arg(long, value_name = "IP", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// The port to serve on.
    #[arg(long, value_name = "PORT", default_value_t = 6443)]
    pub secure_port: u16,
    /// The serving certificate (PEM, leaf first); reloaded when the file changes. A self-signed
    /// one when absent.
    #[arg(long, value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// The serving key.
    #[arg(long, value_name = "FILE")]
    pub tls_private_key_file: Option<PathBuf>,
    /// VersionTLS12 or VersionTLS13 (VersionTLS10 and 11 serve TLS 1.2 at least).
    #[arg(long, value_name = "VERSION")]
    pub tls_min_version: Option<String>,
    /// TLS 1.2 cipher suites by their Go names (TLS 1.3 suites are not configurable).
    #[arg(long, value_delimiter = ',', value_name = "SUITES")]
    pub tls_cipher_suites: Vec<String>,
    /// CA of x509 client certificates (CN → user, O → groups).
    #[arg(long, value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// The front's client certificate towards the store (the identity it forwards is trusted
    /// because of it).
    #[arg(long, value_name = "FILE")]
    pub proxy_client_cert_file: Option<PathBuf>,
    /// Its key.
    #[arg(long, value_name = "FILE")]
    pub proxy_client_key_file: Option<PathBuf>,
    /// CA of front proxies allowed to assert identities in headers.
    #[arg(long, value_name = "FILE")]
    pub requestheader_client_ca_file: Option<PathBuf>,
    /// Common names such a proxy's certificate may carry (empty allows any).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub requestheader_allowed_names: Vec<String>,
    /// Headers holding the username.
    #[arg(long, value_delimiter = ',', value_name = "HEADERS")]
    pub requestheader_username_headers: Vec<String>,
    /// Headers holding groups.
    #[arg(long, value_delimiter = ',', value_name = "HEADERS")]
    pub requestheader_group_headers: Vec<String>,
    /// Prefixes of headers holding extra attributes.
    #[arg(long, value_delimiter = ',', value_name = "PREFIXES")]
    pub requestheader_extra_headers_prefix: Vec<String>,
    /// The Service IP range: its first address is the `kubernetes` Service's ClusterIP.
    #[arg(long, value_name = "CIDR")]
    pub service_cluster_ip_range: Option<String>,
    /// Serve requests without credentials as system:anonymous where a cluster allows them
    /// (health and /version); false refuses them with 401.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = super::parse_go_bool, value_name = "BOOL")]
    pub anonymous_auth: Option<bool>,
}

/// The flags both stand-ins honour (the real components share them).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Honoured")]
pub struct StandInArgs {
    /// The address to serve on.
    #[arg(long, value_name = "IP", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// The port to serve on (10257 for the controller manager, 10259 for the scheduler).
    #[arg(long, value_name = "PORT")]
    pub secure_port: Option<u16>,
    /// The serving certificate; a self-signed one when absent, as the real components make.
    #[arg(long, value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// The serving key.
    #[arg(long, value_name = "FILE")]
    pub tls_private_key_file: Option<PathBuf>,
    /// VersionTLS12 or VersionTLS13.
    #[arg(long, value_name = "VERSION")]
    pub tls_min_version: Option<String>,
    /// TLS 1.2 cipher suites by their Go names.
    #[arg(long, value_delimiter = ',', value_name = "SUITES")]
    pub tls_cipher_suites: Vec<String>,
    /// CA of client certificates for /metrics; also read from
    /// kube-system/extension-apiserver-authentication through --authentication-kubeconfig.
    #[arg(long, value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// CA of front proxies asserting identities in headers (also read from the ConfigMap).
    #[arg(long, value_name = "FILE")]
    pub requestheader_client_ca_file: Option<PathBuf>,
    /// Common names such a proxy's certificate may carry (empty allows any).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub requestheader_allowed_names: Vec<String>,
    /// Headers holding the username.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "HEADERS",
        default_value = "x-remote-user"
    )]
    pub requestheader_username_headers: Vec<String>,
    /// Headers holding groups.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "HEADERS",
        default_value = "x-remote-group"
    )]
    pub requestheader_group_headers: Vec<String>,
    /// Prefixes of headers holding extra attributes.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "PREFIXES",
        default_value = "x-remote-extra-"
    )]
    pub requestheader_extra_headers_prefix: Vec<String>,
    /// Kubeconfig for TokenReview (bearer tokens on /metrics) and the client CA ConfigMap.
    #[arg(long, value_name = "FILE")]
    pub authentication_kubeconfig: Option<PathBuf>,
    /// Kubeconfig for SubjectAccessReview (who may read /metrics); without it only
    /// system:masters may.
    #[arg(long, value_name = "FILE")]
    pub authorization_kubeconfig: Option<PathBuf>,
    /// Kubeconfig for the API (leader election).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Hold the component's leader-election Lease in kube-system.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = super::parse_go_bool, value_name = "BOOL")]
    pub leader_elect: Option<bool>,
    /// Lease duration (Go duration; 15s).
    #[arg(long, value_name = "DURATION", value_parser = super::parse_go_duration)]
    pub leader_elect_lease_duration: Option<std::time::Duration>,
    /// Renew deadline (10s).
    #[arg(long, value_name = "DURATION", value_parser = super::parse_go_duration)]
    pub leader_elect_renew_deadline: Option<std::time::Duration>,
    /// Retry period (2s).
    #[arg(long, value_name = "DURATION", value_parser = super::parse_go_duration)]
    pub leader_elect_retry_period: Option<std::time::Duration>,
    /// The Lease's name (the component's name).
    #[arg(long, value_name = "NAME")]
    pub leader_elect_resource_name: Option<String>,
    /// The Lease's namespace (kube-system).
    #[arg(long, value_name = "NAMESPACE")]
    pub leader_elect_resource_namespace: Option<String>,
}

/// `kube-controller-manager`.
#[derive(Debug, Clone, clap::Args)]
pub struct ControllerManagerArgs {
    /// The honoured flags.
    #[command(flatten)]
    pub common: StandInArgs,
    /// The CA published as `kube-root-ca.crt` in every namespace (by the leader).
    #[arg(long, value_name = "FILE", help_heading = "Honoured")]
    pub root_ca_file: Option<PathBuf>,
}

/// `kube-scheduler`.
#[derive(Debug, Clone, clap::Args)]
pub struct SchedulerArgs {
    /// The honoured flags.
    #[command(flatten)]
    pub common: StandInArgs,
    /// KubeSchedulerConfiguration: its clientConnection.kubeconfig and leaderElection are
    /// honoured, the rest accepted.
    #[arg(long, value_name = "FILE", help_heading = "Honoured")]
    pub config: Option<PathBuf>,
}

/// The names the binary answers to besides its own: invoked as one of them, it runs that
/// command.
pub const COMPONENTS: [&str; 3] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// The arguments with the command inserted when the binary was invoked through a link named
/// after a component (`kube-apiserver --secure-port=6443` → `cpm-test-apiserver kube-apiserver
/// --secure-port=6443`).
pub fn args<I: IntoIterator<Item = OsString>>(args: I) -> Vec<OsString> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    let invoked = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .map(str::to_string);
    if let Some(name) = invoked.filter(|n| COMPONENTS.contains(&n.as_str())) {
        args[0] = "cpm-test-apiserver".into();
        args.insert(1, name.into());
    }
    args
}

/// The clap command: the derived one plus the accepted, unmodelled flags of each component.
pub fn command() -> clap::Command {
    Cli::command()
        .mut_subcommand("kube-apiserver", |c| flags::accept(c, flags::APISERVER))
        .mut_subcommand("kube-controller-manager", |c| {
            flags::accept(c, flags::CONTROLLER_MANAGER)
        })
        .mut_subcommand("kube-scheduler", |c| flags::accept(c, flags::SCHEDULER))
}

/// Parses `args` (after [`args`]); errors exit 2 through `clap::Error::exit`.
pub fn try_parse_from<I: IntoIterator<Item = OsString>>(args: I) -> Result<Cli, clap::Error> {
    let mut cmd = command();
    let matches = cmd.try_get_matches_from_mut(self::args(args))?;
    Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))
}
