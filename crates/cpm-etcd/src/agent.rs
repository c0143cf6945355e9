//! The cpm-etcd agent, first stage: renders the etcd static pod for a bootstrapping master and
//! keeps the membership flags of an existing member, refusing any silent change of a member's
//! name, advertise IP or data directory. Membership changes through etcd (learners, promotion,
//! removal) are the next stage.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

use cpm_core::apply::ApplyOptions;
use cpm_core::cli::{CommonArgs, MissingFlag};
use cpm_core::config::{ConfigError, ControlPlaneConfiguration, KubernetesMinor};
use cpm_core::fileset::{DesiredFile, FileSet};
use cpm_core::reconcile::{Agent, Mode, PassError, PassOutcome, converge};
use cpm_core::versions::{EtcdMove, etcd_tag};

use crate::manifest::{
    ClusterState, DATA_DIR, Inputs, MANIFEST, Peer, quota_bytes, referenced_files, render,
};
use crate::membership::{MembershipError, add_learner, cluster, promote};
use crate::record::Record;

/// The agent's name in logs and metrics.
pub const AGENT: &str = "cpm-etcd";

/// Bad operator input.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The config file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A required identity flag.
    #[error(transparent)]
    Identity(#[from] MissingFlag),
    /// The desired manifest would change an existing member's identity.
    #[error(
        "{manifest}: refusing to change {what} of the existing etcd member from {from:?} to {to:?}; remove the member first (or restore --node-name/--node-ip)"
    )]
    IdentityChange {
        /// The current manifest.
        manifest: PathBuf,
        /// `name`, `advertise IP` or `data dir`.
        what: &'static str,
        /// Current value.
        from: String,
        /// Wanted value.
        to: String,
    },
}

/// A runtime failure.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}")]
pub struct ReadError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// The flags of an existing etcd manifest that define the member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Current {
    /// Every `--flag=value`.
    pub flags: BTreeMap<String, String>,
    /// The etcd image tag it runs (`3.6.4-0`).
    pub image_tag: Option<String>,
}

impl Current {
    /// Parses the `--flag=value` lines of a rendered manifest.
    pub fn parse(manifest: &str) -> Self {
        let flags = manifest
            .lines()
            .filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix("--"))
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        let image_tag = manifest
            .lines()
            .find_map(|l| l.trim().strip_prefix("image: "))
            .and_then(|i| i.trim_matches(['"', '\'']).rsplit_once(':'))
            .map(|(_, t)| t.to_string());
        Self { flags, image_tag }
    }

    /// The members of `--initial-cluster`.
    pub fn members(&self) -> Vec<Peer> {
        self.flags
            .get("initial-cluster")
            .map(|v| {
                v.split(',')
                    .filter_map(|m| {
                        let (name, u) = m.split_once('=')?;
                        let ip = u
                            .strip_prefix("https://")?
                            .rsplit_once(':')?
                            .0
                            .trim_matches(['[', ']'])
                            .parse()
                            .ok()?;
                        Some(Peer {
                            name: name.to_string(),
                            ip,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The cpm-etcd agent.
pub struct EtcdAgent {
    args: CommonArgs,
    kube: Option<kube::Client>,
    /// How long a new learner may take to catch up within one pass before promotion is retried
    /// on the next pass.
    pub promote_patience: std::time::Duration,
    /// How long a master must be gone before its member is removed.
    pub departed_grace: std::time::Duration,
    /// How long a learner may stay unstarted before it is removed.
    pub learner_timeout: std::time::Duration,
    /// When a member's database is defragmented.
    pub defrag: crate::defrag::DefragPolicy,
    defragged: std::collections::BTreeMap<u64, std::time::Instant>,
    departures: crate::departures::Departures,
    lease: Option<cpm_core::lease::LeaseLock>,
    /// Where the membership metrics go.
    pub metrics: Option<crate::metrics::EtcdMetrics>,
}

impl EtcdAgent {
    /// An agent for `args`.
    pub fn new(args: CommonArgs, kube: Option<kube::Client>) -> Self {
        Self {
            args,
            kube,
            promote_patience: std::time::Duration::from_secs(30),
            departed_grace: std::time::Duration::from_secs(300),
            learner_timeout: std::time::Duration::from_secs(600),
            defrag: crate::defrag::DefragPolicy::standard(),
            defragged: std::collections::BTreeMap::new(),
            departures: crate::departures::Departures::default(),
            lease: None,
            metrics: None,
        }
    }

    /// Init: loads and validates the inputs (exit 2 on failure).
    pub fn load_inputs(&self) -> Result<(ControlPlaneConfiguration, Peer), InputError> {
        let config = ControlPlaneConfiguration::load(&self.args.config)?;
        let this = Peer {
            name: self.args.node_name()?,
            ip: self.args.node_ip()?,
        };
        Ok((config, this))
    }

    /// Paths whose change should trigger a pass.
    pub fn inputs(&self) -> Vec<PathBuf> {
        let root = self.args.node_root();
        let mut paths = vec![self.args.config.clone()];
        paths.extend(
            ["etc/kubernetes/pki/etcd", "etc/kubernetes/manifests"]
                .iter()
                .filter_map(|p| root.join(p).ok()),
        );
        paths
    }
}

/// Whether a URL host is the localhost address a single-node install advertises (`localhost`,
/// `127.0.0.1`, `::1`). Other 127/8 addresses are ordinary node addresses here (the tests' simulated
/// masters live on them).
pub fn is_loopback_host(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "::1")
}

/// The host of a member's peer URL.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    Some(
        rest.rsplit_once(':')?
            .0
            .trim_matches(['[', ']'])
            .to_string(),
    )
}

/// Refuses a manifest that would silently change an existing member.
pub fn check_identity(
    current: &Current,
    this: &Peer,
    manifest: &std::path::Path,
) -> Result<(), InputError> {
    let wrong = |what, from: &str, to: String| InputError::IdentityChange {
        manifest: manifest.to_path_buf(),
        what,
        from: from.to_string(),
        to,
    };
    if let Some(name) = current.flags.get("name").filter(|n| **n != this.name) {
        return Err(wrong("the name", name, this.name.clone()));
    }
    let advertise = current
        .flags
        .get("initial-advertise-peer-urls")
        .and_then(|u| {
            u.strip_prefix("https://")?
                .rsplit_once(':')
                .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
        });
    // A loopback peer URL (a single-node install) may move to the node IP: see `move_off_loopback`.
    let loopback = advertise.as_deref().is_some_and(is_loopback_host);
    if let Some(ip) = advertise.filter(|ip| !loopback && ip.parse::<IpAddr>().ok() != Some(this.ip))
    {
        return Err(wrong("the advertise IP", &ip, this.ip.to_string()));
    }
    if let Some(dir) = current.flags.get("data-dir").filter(|d| *d != DATA_DIR) {
        return Err(wrong("the data dir", dir, DATA_DIR.to_string()));
    }
    Ok(())
}

/// The etcd CA and a client certificate for membership requests: the apiserver's etcd client
/// certificate when present, else the healthcheck client's. `None` before cpm-certs ran.
fn etcd_credentials(
    root: &cpm_core::node::NodeRoot,
) -> Result<Option<cpm_core::etcd::EtcdOptions>, ReadError> {
    let read = |rel: &str| -> Result<Option<Vec<u8>>, ReadError> {
        let path = root.join(rel).map_err(|e| ReadError {
            path: rel.into(),
            source: io::Error::other(e),
        })?;
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ReadError { path, source }),
        }
    };
    let Some(ca) = read("etc/kubernetes/pki/etcd/ca.crt")? else {
        return Ok(None);
    };
    let pair = match (
        read("etc/kubernetes/pki/apiserver-etcd-client.crt")?,
        read("etc/kubernetes/pki/apiserver-etcd-client.key")?,
    ) {
        (Some(c), Some(k)) => Some((c, k)),
        _ => match (
            read("etc/kubernetes/pki/etcd/healthcheck-client.crt")?,
            read("etc/kubernetes/pki/etcd/healthcheck-client.key")?,
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            _ => None,
        },
    };
    Ok(pair.map(|(cert, key)| cpm_core::etcd::EtcdOptions {
        endpoints: Vec::new(),
        ca,
        cert,
        key,
        connect_timeout: std::time::Duration::from_secs(3),
        request_timeout: std::time::Duration::from_secs(10),
    }))
}

/// A data directory left by an earlier (removed) member is moved aside, never deleted, so the
/// node joins fresh: `var/lib/etcd` → `var/lib/etcd.removed-<unix time>`.
fn move_stale_data_dir(root: &cpm_core::node::NodeRoot) -> Result<(), ReadError> {
    let data = root.join("var/lib/etcd").map_err(|e| ReadError {
        path: "var/lib/etcd".into(),
        source: io::Error::other(e),
    })?;
    if !data.join("member").exists() {
        return Ok(());
    }
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let aside = data.with_file_name(format!("etcd.removed-{stamp}"));
    std::fs::rename(&data, &aside).map_err(|source| ReadError {
        path: data.clone(),
        source,
    })?;
    tracing::warn!(from = %data.display(), to = %aside.display(), reason = "joining fresh", "moved an old etcd data dir aside");
    Ok(())
}

impl Agent for EtcdAgent {
    fn name(&self) -> &'static str {
        AGENT
    }

    async fn pass(&mut self, mode: Mode) -> Result<PassOutcome, PassError> {
        let (mut config, this) = self.load_inputs().map_err(PassError::input)?;
        let root = self.args.node_root();
        let read = |host: &str| -> Result<Option<Vec<u8>>, PassError> {
            let path = root.host(host).map_err(PassError::input)?;
            match std::fs::read(&path) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(PassError::runtime(ReadError { path, source })),
            }
        };
        let current = read(MANIFEST)?.map(|b| Current::parse(&String::from_utf8_lossy(&b)));
        // The minor this master is at, or moving to, per its rollout record (cpm-manifests
        // serialises version changes across masters): etcd moves only inside that step.
        let record = Record::read(self.kube.as_ref(), &this.name).await;
        let running = current.as_ref().and_then(|c| c.image_tag.as_deref());
        self.report_record(&this.name, &record, config.kubernetes_version, running);
        let (minor, how) = crate::record::choose(&record, config.kubernetes_version, running);
        config.kubernetes_version = minor;
        let manifest_path = root.host(MANIFEST).map_err(PassError::input)?;
        let creds = etcd_credentials(&root).map_err(PassError::runtime)?;
        // The control-plane Nodes, listed once per pass: `None` without a client.
        let view = match &self.kube {
            Some(k) => Some(crate::membership::masters_with_memory(k).await),
            None => None,
        };
        let known: Option<&[Peer]> = view
            .as_ref()
            .and_then(|r| r.as_ref().ok())
            .map(|(m, _)| m.as_slice());
        let (members, state) = match &current {
            Some(c) => {
                check_identity(c, &this, &manifest_path).map_err(PassError::input)?;
                let state = if c.flags.get("initial-cluster-state").map(String::as_str)
                    == Some("existing")
                {
                    ClusterState::Existing
                } else {
                    ClusterState::New
                };
                if let Some(peers) = self
                    .move_off_loopback(c, &this, creds.as_ref(), mode)
                    .await
                    .map_err(PassError::runtime)?
                {
                    (peers, state)
                } else if let Some(peers) = self
                    .removed_member_rejoins(&this, creds.as_ref(), known, mode)
                    .await
                    .map_err(PassError::runtime)?
                {
                    (peers, ClusterState::Existing)
                } else {
                    (c.members(), state)
                }
            }
            None => {
                let known: &[Peer] = match &view {
                    None => &[],
                    Some(Ok((m, _))) => m,
                    // Without the list, "no other master" cannot be told apart from "the API is
                    // down": never start a new cluster on that.
                    Some(Err(e)) => {
                        return Err(PassError::runtime(MembershipError::Refused(format!(
                            "cannot list the control-plane Nodes ({e}); not starting a new cluster"
                        ))));
                    }
                };
                let others: Vec<IpAddr> = known
                    .iter()
                    .filter(|m| m.name != this.name)
                    .map(|m| m.ip)
                    .collect();
                if others.is_empty() {
                    (vec![this.clone()], ClusterState::New)
                } else {
                    let names: Vec<&str> = known
                        .iter()
                        .filter(|m| m.name != this.name)
                        .map(|m| m.name.as_str())
                        .collect();
                    let creds = creds.as_ref().ok_or_else(|| {
                        PassError::runtime(MembershipError::Unreachable(names.join(",")))
                    })?;
                    let mut client = cluster(&others, creds).await.map_err(|_| {
                        PassError::runtime(MembershipError::Unreachable(names.join(",")))
                    })?;
                    // A member still on a loopback peer URL that is not its master's IP cannot
                    // be reached by a new member: its own agent moves it first.
                    let current = crate::membership::members(&mut client)
                        .await
                        .map_err(PassError::runtime)?;
                    let known_ips: Vec<IpAddr> = known.iter().map(|m| m.ip).collect();
                    if let Some(m) = current.iter().find(|m| {
                        m.peer_urls.iter().filter_map(|u| url_host(u)).any(|h| {
                            is_loopback_host(&h)
                                && !h.parse::<IpAddr>().is_ok_and(|ip| known_ips.contains(&ip))
                        })
                    }) {
                        return Err(PassError::runtime(MembershipError::Refused(format!(
                            "not joining yet: {} advertises a loopback peer URL; its master moves it to its node IP first",
                            m.name
                        ))));
                    }
                    if mode == Mode::Apply {
                        move_stale_data_dir(&root).map_err(PassError::runtime)?;
                    }
                    let (peers, added) = add_learner(&mut client, &this, mode != Mode::Apply)
                        .await
                        .map_err(PassError::runtime)?;
                    if added {
                        self.changed("add_learner");
                    }
                    (peers, ClusterState::Existing)
                }
            }
        };
        let current_quota = current
            .as_ref()
            .and_then(|c| c.flags.get("quota-backend-bytes")?.parse().ok());
        let mut pki_files = BTreeMap::new();
        for f in referenced_files() {
            let content = read(&f)?;
            pki_files.insert(f, content);
        }
        let smallest_memory = view
            .as_ref()
            .and_then(|r| r.as_ref().ok())
            .and_then(|(_, m)| *m);
        let rendered_quota = quota_bytes(&config, smallest_memory, current_quota);
        let inputs = Inputs {
            config: &config,
            this: this.clone(),
            members: &members,
            state,
            quota_bytes: rendered_quota,
            pki_files: &pki_files,
            running_tag: current.as_ref().and_then(|c| c.image_tag.as_deref()),
            etcd_move: how,
        };
        let rendered = render(&inputs).ok_or_else(|| {
            PassError::input(std::io::Error::other(
                "kubernetesVersion is not in the version map",
            ))
        })?;
        let mut set = FileSet::new();
        set.dir("etc/kubernetes/manifests", 0o700)
            .map_err(PassError::runtime)?;
        set.file(
            DesiredFile::new("etc/kubernetes/manifests/etcd.yaml", rendered.bytes, 0o600)
                .note(format!("etcd: checksum {}", &rendered.checksum[..12])),
        )
        .map_err(PassError::runtime)?;
        let outcome = converge(&root, &set, mode, &ApplyOptions::default())?;
        if mode == Mode::Apply && state == ClusterState::Existing {
            // A learner is promoted once it has started and caught up (retried next pass).
            if let Some(creds) = &creds {
                let ips: Vec<IpAddr> = members.iter().map(|m| m.ip).collect();
                let mut client = cluster(&ips, creds).await.map_err(PassError::runtime)?;
                if promote(&mut client, &this, self.promote_patience)
                    .await
                    .map_err(PassError::runtime)?
                {
                    self.changed("promote");
                }
            }
        }
        if mode == Mode::Apply && current.is_some() {
            self.remove_departed(&this, creds.as_ref(), known)
                .await
                .map_err(PassError::runtime)?;
        }
        if mode == Mode::Apply {
            self.observe(&this, creds.as_ref(), &rendered_quota).await;
        }
        Ok(outcome)
    }
}

impl EtcdAgent {
    /// Makes the record's state visible: the `cpm_etcd_rollout_record_readable` gauge, and a
    /// warning whenever etcd is kept although the record cannot be read, or although the
    /// configuration asks another release and no record says to move.
    fn report_record(
        &self,
        node: &str,
        record: &Record,
        configured: KubernetesMinor,
        running: Option<&str>,
    ) {
        if let Some(m) = &self.metrics {
            m.record_readable(record.readable());
        }
        let Some(tag) = running else {
            if let Record::Unreadable(why) = record {
                tracing::info!(node, reason = %why, %configured, "cannot read this master's ControlPlaneNode record: etcd starts at the configured minor (no etcd manifest yet)");
            }
            return;
        };
        // Whether the configuration alone would move etcd.
        let held = cpm_core::versions::lookup(configured)
            .is_some_and(|v| etcd_tag(v.etcd, Some(tag), EtcdMove::Forward) != tag);
        match record {
            Record::Says { .. } => {}
            Record::Unreadable(why) => {
                tracing::warn!(node, reason = %why, running = %tag, %configured, "cannot read this master's ControlPlaneNode record: etcd keeps the tag it runs");
            }
            Record::Absent if held => {
                tracing::warn!(node, running = %tag, %configured, "no ControlPlaneNode record for this master yet (cpm-manifests creates it): etcd keeps the tag it runs");
            }
            Record::NoApi if held => {
                tracing::warn!(node, running = %tag, %configured, "no --kubeconfig: etcd keeps the tag it runs, as a version change needs this master's rollout record");
            }
            Record::Absent | Record::NoApi => {}
        }
    }

    fn changed(&self, op: &str) {
        if let Some(m) = &self.metrics {
            m.changed(op);
        }
    }

    /// Exports the cluster as this node's member sees it (best effort: metrics only).
    async fn observe(&self, this: &Peer, creds: Option<&cpm_core::etcd::EtcdOptions>, quota: &u64) {
        let (Some(metrics), Some(creds)) = (&self.metrics, creds) else {
            return;
        };
        let Ok(mut c) = cluster(&[this.ip], creds).await else {
            return;
        };
        let (Ok(status), Ok(list)) = (c.status().await, c.member_list().await) else {
            return;
        };
        let learners = list.members().iter().filter(|m| m.is_learner()).count();
        let voters = list.members().len() - learners;
        let is_leader = status
            .header()
            .is_some_and(|h| h.member_id() == status.leader());
        metrics.observe(voters, learners, is_leader, status.db_size(), *quota);
    }

    /// A single member advertising a loopback peer URL (a single-node install) cannot grow: its
    /// peer URL moves to the node IP (member update, then the manifest listens there) before any
    /// other master joins. Refused when the cluster has more than one member.
    async fn move_off_loopback(
        &self,
        current: &Current,
        this: &Peer,
        creds: Option<&cpm_core::etcd::EtcdOptions>,
        mode: Mode,
    ) -> Result<Option<Vec<Peer>>, MembershipError> {
        let advertised = current
            .flags
            .get("initial-advertise-peer-urls")
            .and_then(|u| url_host(u));
        let moved_ip = advertised.as_deref().and_then(|h| h.parse::<IpAddr>().ok());
        if !advertised.as_deref().is_some_and(is_loopback_host) || moved_ip == Some(this.ip) {
            return Ok(None);
        }
        let Some(creds) = creds else { return Ok(None) };
        let local: Vec<IpAddr> = current
            .flags
            .get("advertise-client-urls")
            .and_then(|u| url_host(u))
            .and_then(|h| {
                if h == "localhost" {
                    Some(IpAddr::from([127, 0, 0, 1]))
                } else {
                    h.parse().ok()
                }
            })
            .into_iter()
            .collect();
        let mut client = cluster(&local, creds).await?;
        let members = crate::membership::members(&mut client).await?;
        let [me] = members.as_slice() else {
            return Err(MembershipError::Refused(format!(
                "{} advertises a loopback peer URL in a cluster of {} members; move it by hand",
                this.name,
                members.len()
            )));
        };
        if mode == Mode::Apply {
            let url = crate::membership::peer_url(this.ip);
            client
                .member_update(me.id, vec![url.clone()])
                .await
                .map_err(|source| MembershipError::Request {
                    op: "member update",
                    source,
                })?;
            tracing::info!(member = %this.name, peer = %url, reason = "loopback peer URL cannot grow", "moved the etcd peer URL to the node IP");
            if let Some(m) = &self.metrics {
                m.changed("update_peer_url");
            }
        }
        Ok(Some(vec![this.clone()]))
    }

    /// A node whose member was removed (its manifest and data dir are stale) joins again as a new
    /// learner, with the old data dir moved aside. `None` when this node is still a member, or
    /// when the cluster cannot tell (unreachable: nothing is changed then).
    async fn removed_member_rejoins(
        &self,
        this: &Peer,
        creds: Option<&cpm_core::etcd::EtcdOptions>,
        known: Option<&[Peer]>,
        mode: Mode,
    ) -> Result<Option<Vec<Peer>>, MembershipError> {
        let (Some(known), Some(creds)) = (known, creds) else {
            return Ok(None);
        };
        let others: Vec<IpAddr> = known
            .iter()
            .filter(|m| m.name != this.name)
            .map(|m| m.ip)
            .collect();
        if others.is_empty() {
            return Ok(None);
        }
        let Ok(mut client) = cluster(&others, creds).await else {
            return Ok(None);
        };
        let url = crate::membership::peer_url(this.ip);
        let current = crate::membership::members(&mut client).await?;
        if current.iter().any(|m| m.peer_urls.contains(&url)) {
            return Ok(None);
        }
        tracing::warn!(member = %this.name, reason = "removed from the cluster", "rejoining etcd as a new member");
        if mode == Mode::Apply {
            move_stale_data_dir(&self.args.node_root())
                .map_err(|e| MembershipError::Unreachable(e.to_string()))?;
        }
        let (peers, added) = add_learner(&mut client, this, mode != Mode::Apply).await?;
        if added {
            self.changed("add_learner");
        }
        Ok(Some(peers))
    }
}

/// The Lease that lets one master at a time change etcd membership.
pub const MEMBERSHIP_LEASE: &str = "cpm-etcd-membership";

impl EtcdAgent {
    /// Removes (at most) one departed member, when this agent holds the membership Lease.
    async fn remove_departed(
        &mut self,
        this: &Peer,
        creds: Option<&cpm_core::etcd::EtcdOptions>,
        known: Option<&[Peer]>,
    ) -> Result<(), MembershipError> {
        let (Some(kube), Some(creds), Some(known)) = (self.kube.clone(), creds, known) else {
            return Ok(());
        };
        let mut ips = vec![this.ip];
        ips.extend(known.iter().filter(|m| m.ip != this.ip).map(|m| m.ip));
        let Ok(current) = crate::departures::current(&ips, creds).await else {
            return Ok(());
        };
        let now = std::time::Instant::now();
        let mut eligible: Vec<_> = self
            .departures
            .eligible(&current, known, self.departed_grace, now)
            .into_iter()
            .filter(|m| m.name != this.name)
            .collect();
        eligible.extend(
            self.departures
                .unstarted_learners(&current, self.learner_timeout, now),
        );
        let departed = eligible.first().cloned();
        let defrag = if departed.is_none() {
            crate::defrag::due(&current, creds, &self.defrag, now, &self.defragged).await
        } else {
            None
        };
        if departed.is_none() && defrag.is_none() {
            return Ok(());
        }
        if self.lease.is_none() {
            let cfg = cpm_core::lease::LeaseConfig {
                namespace: "kube-system".into(),
                name: MEMBERSHIP_LEASE.into(),
                identity: this.name.clone(),
                lease_duration: std::time::Duration::from_secs(15),
                renew_deadline: std::time::Duration::from_secs(10),
                retry_period: std::time::Duration::from_secs(2),
            };
            self.lease = cpm_core::lease::LeaseLock::new(kube, cfg).ok();
        }
        let Some(lease) = self.lease.as_mut() else {
            return Ok(());
        };
        match lease.try_acquire_or_renew().await {
            Ok(cpm_core::lease::Step::Held { .. }) => {}
            Ok(other) => {
                tracing::debug!(?other, "another master holds the membership Lease");
                return Ok(());
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot take the membership Lease");
                return Ok(());
            }
        }
        let result = match (&departed, defrag) {
            (Some(departed), _) => {
                let metrics = self.metrics.clone();
                let changed = |op: &'static str| {
                    if let Some(m) = &metrics {
                        m.changed(op);
                    }
                };
                crate::departures::remove(departed, &current, creds, &changed)
                    .await
                    .map(|_| ())
            }
            (None, Some(member)) => {
                let r = crate::defrag::run(&member, creds).await;
                if r.is_ok() {
                    self.defragged.insert(member.id, now);
                }
                r
            }
            (None, None) => Ok(()),
        };
        let _ = lease.release().await;
        result
    }
}
