//! A pod's observed state and the `PodStatus` the kubelet posts from it: phase, conditions and
//! container statuses. Pure.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// A container's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not running: `ContainerCreating`, `CrashLoopBackOff`, `CreateContainerConfigError`,
    /// `ErrImagePull`, `PodInitializing`, …
    Waiting {
        /// The reason.
        reason: String,
        /// Details.
        message: String,
    },
    /// Running since.
    Running {
        /// RFC 3339.
        started_at: String,
    },
    /// Exited.
    Terminated {
        /// The exit code.
        exit_code: i32,
        /// `Completed`, `Error`.
        reason: String,
        /// The termination message.
        message: String,
        /// RFC 3339.
        started_at: String,
        /// RFC 3339.
        finished_at: String,
        /// The runc id.
        container_id: String,
    },
}

impl State {
    fn json(&self) -> Value {
        match self {
            Self::Waiting { reason, message } => {
                let mut w = json!({"reason": reason});
                if !message.is_empty() {
                    w["message"] = json!(message);
                }
                json!({"waiting": w})
            }
            Self::Running { started_at } => json!({"running": {"startedAt": started_at}}),
            Self::Terminated {
                exit_code,
                reason,
                message,
                started_at,
                finished_at,
                container_id,
            } => {
                let mut t = json!({
                    "exitCode": exit_code,
                    "reason": reason,
                    "startedAt": started_at,
                    "finishedAt": finished_at,
                    "containerID": container_id,
                });
                if !message.is_empty() {
                    t["message"] = json!(message);
                }
                json!({"terminated": t})
            }
        }
    }
}

/// One container as the kubelet sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRecord {
    /// The container name.
    pub name: String,
    /// The image as written in the pod.
    pub image: String,
    /// The image id the simulator reports.
    pub image_id: String,
    /// `runc://<id>` of the current or last run.
    pub container_id: Option<String>,
    /// The current state.
    pub state: State,
    /// The previous run's termination.
    pub last: Option<State>,
    /// Readiness (readiness probe, or running without one).
    pub ready: bool,
    /// Startup probe passed (or none and running).
    pub started: bool,
    /// Restarts so far.
    pub restart_count: i32,
}

impl ContainerRecord {
    /// A container waiting to be created.
    pub fn new(name: &str, image: &str, reason: &str) -> Self {
        Self {
            name: name.to_string(),
            image: image.to_string(),
            image_id: String::new(),
            container_id: None,
            state: State::Waiting {
                reason: reason.to_string(),
                message: String::new(),
            },
            last: None,
            ready: false,
            started: false,
            restart_count: 0,
        }
    }

    fn json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state.json(),
            "lastState": self.last.as_ref().map_or(json!({}), State::json),
        });
        if let Some(id) = &self.container_id {
            v["containerID"] = json!(id);
        }
        v
    }
}

/// A pod as the kubelet sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRecord {
    /// `Always`, `OnFailure`, `Never`.
    pub restart_policy: String,
    /// The node's address.
    pub host_ip: String,
    /// The pod's address (the node's with hostNetwork).
    pub pod_ip: String,
    /// When the kubelet took the pod (RFC 3339).
    pub start_time: String,
    /// Init containers, in order.
    pub init: Vec<ContainerRecord>,
    /// App containers.
    pub containers: Vec<ContainerRecord>,
    /// Every init container succeeded.
    pub initialized: bool,
    /// When each condition last changed (type → (status, RFC 3339)).
    pub transitions: BTreeMap<String, (bool, String)>,
}

/// The pod phase, as the kubelet computes it.
pub fn phase(p: &PodRecord) -> &'static str {
    if !p.initialized {
        let failed = p
            .init
            .iter()
            .any(|c| matches!(c.state, State::Terminated { exit_code, .. } if exit_code != 0));
        return if failed && p.restart_policy == "Never" {
            "Failed"
        } else {
            "Pending"
        };
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in &p.containers {
        match &c.state {
            State::Running { .. } => running += 1,
            State::Terminated { exit_code, .. } => {
                stopped += 1;
                if *exit_code == 0 {
                    succeeded += 1;
                }
            }
            State::Waiting { .. } if c.last.is_some() => stopped += 1,
            State::Waiting { .. } => waiting += 1,
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped == 0 {
        return "Pending";
    }
    match p.restart_policy.as_str() {
        "Always" => "Running",
        _ if stopped == succeeded => "Succeeded",
        "OnFailure" => "Running",
        _ => "Failed",
    }
}

/// The conditions now (type, status).
pub fn conditions(p: &PodRecord) -> Vec<(&'static str, bool)> {
    let ready = !p.containers.is_empty() && p.containers.iter().all(|c| c.ready);
    vec![
        ("PodScheduled", true),
        ("Initialized", p.initialized),
        ("ContainersReady", ready),
        ("Ready", ready),
    ]
}

/// Records condition transitions at `now`; true when any changed.
pub fn note_transitions(p: &mut PodRecord, now: &str) -> bool {
    let mut changed = false;
    for (t, s) in conditions(p) {
        let entry = p.transitions.get(t);
        if entry.map(|(old, _)| *old) != Some(s) {
            p.transitions.insert(t.to_string(), (s, now.to_string()));
            changed = true;
        }
    }
    changed
}

/// The `status` the kubelet posts.
pub fn status_json(p: &PodRecord) -> Value {
    let conds: Vec<Value> = conditions(p)
        .into_iter()
        .map(|(t, s)| {
            let since = p
                .transitions
                .get(t)
                .map(|(_, at)| at.clone())
                .unwrap_or_default();
            json!({
                "type": t,
                "status": if s { "True" } else { "False" },
                "lastTransitionTime": since,
            })
        })
        .collect();
    let mut status = json!({
        "phase": phase(p),
        "conditions": conds,
        "hostIP": p.host_ip,
        "hostIPs": [{"ip": p.host_ip}],
        "podIP": p.pod_ip,
        "podIPs": [{"ip": p.pod_ip}],
        "startTime": p.start_time,
        "containerStatuses": p.containers.iter().map(ContainerRecord::json).collect::<Vec<_>>(),
        "qosClass": "Burstable",
    });
    if !p.init.is_empty() {
        status["initContainerStatuses"] = p.init.iter().map(ContainerRecord::json).collect();
    }
    status
}

#[cfg(test)]
mod tests;
