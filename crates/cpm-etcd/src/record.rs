//! This master's rollout record (its `ControlPlaneNode`, written by cpm-manifests) as cpm-etcd
//! reads it, and the etcd it renders from it. etcd changes only inside its master's rollout
//! step: a record that names a minor decides; without one — absent, or unreadable (no
//! `--kubeconfig`, an API error, the CRD missing, a status naming no supported minor) — a node
//! that runs etcd keeps the tag it runs, and a node with no etcd manifest yet (a first bootstrap)
//! starts at the configured minor.

use cpm_core::config::KubernetesMinor;
use cpm_core::controlplanenode::{self as cpn, ControlPlaneNodeStatus, Phase};
use cpm_core::versions::{self, EtcdMove};
use kube::api::{DynamicObject, ListParams};

/// What this master's record says, as read this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The record names the minor this master runs or moves to.
    Says {
        /// `status.rollout.to` during a step, else `status.version`.
        minor: KubernetesMinor,
        /// How etcd may move (see [`etcd_move`]).
        how: EtcdMove,
    },
    /// The API answered and this master has no record: no rollout ever ran here
    /// (cpm-manifests creates the record on its first pass with the API).
    Absent,
    /// Without `--kubeconfig` there is no record to read.
    NoApi,
    /// The record could not be read or names no supported minor: why.
    Unreadable(String),
}

impl Record {
    /// Reads the record of `node` (a list by name, so a missing CRD is an error, not "no
    /// record").
    pub async fn read(client: Option<&kube::Client>, node: &str) -> Self {
        let Some(client) = client else {
            return Self::NoApi;
        };
        let params = ListParams::default().fields(&format!("metadata.name={node}"));
        match cpn::api(client.clone()).list(&params).await {
            Ok(list) => list
                .items
                .iter()
                .find(|o| o.metadata.name.as_deref() == Some(node))
                .map_or(Self::Absent, |o| Self::from_object(node, o)),
            Err(e) => Self::Unreadable(format!(
                "cannot read ControlPlaneNode {node}: {}",
                cpm_core::exit::chain(&e)
            )),
        }
    }

    /// The record in `obj`, the object of `node`.
    pub fn from_object(node: &str, obj: &DynamicObject) -> Self {
        let Some(status) = obj.data.get("status") else {
            return Self::Unreadable(format!("ControlPlaneNode {node} has no status"));
        };
        match serde_json::from_value::<ControlPlaneNodeStatus>(status.clone()) {
            Ok(s) => Self::from_status(node, &s),
            Err(e) => Self::Unreadable(format!("ControlPlaneNode {node}: status: {e}")),
        }
    }

    /// The record a status makes: `Says` when the minor it names is in the version map.
    pub fn from_status(node: &str, s: &ControlPlaneNodeStatus) -> Self {
        let (field, value) = if s.rollout.phase == Phase::InProgress {
            ("status.rollout.to", &s.rollout.to)
        } else {
            ("status.version", &s.version)
        };
        match value
            .parse::<KubernetesMinor>()
            .ok()
            .filter(|m| versions::lookup(*m).is_some())
        {
            Some(minor) => Self::Says {
                minor,
                how: etcd_move(s),
            },
            None => Self::Unreadable(format!(
                "ControlPlaneNode {node}: {field} {value:?} is not a minor of the version map ({})",
                versions::supported_range()
            )),
        }
    }

    /// Whether the record could be read (present or absent).
    pub fn readable(&self) -> bool {
        matches!(self, Self::Says { .. } | Self::Absent)
    }
}

/// How etcd may move under a record: back a patch release only to undo this master's failed
/// upgrade step (its record says `Failed` moving up); otherwise only forward, so a Kubernetes
/// downgrade keeps the etcd it has.
pub fn etcd_move(s: &ControlPlaneNodeStatus) -> EtcdMove {
    let r = &s.rollout;
    let minor = |s: &str| s.parse::<KubernetesMinor>().ok();
    match (r.phase, minor(&r.from), minor(&r.to)) {
        (Phase::Failed, Some(from), Some(to)) if to > from => EtcdMove::UndoUpgrade,
        _ => EtcdMove::Forward,
    }
}

/// The minor etcd is rendered for and how it may move from `running` (the tag of the etcd
/// manifest on the node, if any): what the record says; else, with etcd running, exactly the
/// tag it runs ([`EtcdMove::Keep`]); else (a first bootstrap) the configured minor.
pub fn choose(
    record: &Record,
    configured: KubernetesMinor,
    running: Option<&str>,
) -> (KubernetesMinor, EtcdMove) {
    match record {
        Record::Says { minor, how } => (*minor, *how),
        Record::Absent | Record::NoApi | Record::Unreadable(_) if running.is_some() => {
            (configured, EtcdMove::Keep)
        }
        Record::Absent | Record::NoApi | Record::Unreadable(_) => (configured, EtcdMove::Forward),
    }
}

#[cfg(test)]
mod tests;
