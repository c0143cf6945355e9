//! Phases and conditions.

use super::*;

fn running() -> State {
    State::Running {
        started_at: "t".into(),
    }
}

fn exited(code: i32) -> State {
    State::Terminated {
        exit_code: code,
        reason: if code == 0 { "Completed" } else { "Error" }.into(),
        message: String::new(),
        started_at: "t".into(),
        finished_at: "t".into(),
        container_id: "runc://x".into(),
    }
}

fn waiting(reason: &str) -> State {
    State::Waiting {
        reason: reason.into(),
        message: String::new(),
    }
}

fn record(policy: &str, states: &[(State, Option<State>, bool)]) -> PodRecord {
    PodRecord {
        restart_policy: policy.into(),
        host_ip: "10.200.0.2".into(),
        pod_ip: "10.200.0.2".into(),
        start_time: "t".into(),
        init: vec![],
        containers: states
            .iter()
            .enumerate()
            .map(|(i, (s, last, ready))| ContainerRecord {
                state: s.clone(),
                last: last.clone(),
                ready: *ready,
                ..ContainerRecord::new(&format!("c{i}"), "img", "ContainerCreating")
            })
            .collect(),
        initialized: true,
        transitions: BTreeMap::new(),
    }
}

fn check(
    policy: &str,
    states: &[(State, Option<State>, bool)],
    expected_phase: &str,
    expected_ready: bool,
) {
    let r = record(policy, states);
    assert_eq!(phase(&r), expected_phase, "{policy} {states:?}");
    let ready = conditions(&r)
        .into_iter()
        .find(|(t, _)| *t == "Ready")
        .map(|(_, s)| s);
    assert_eq!(ready, Some(expected_ready), "{states:?}");
}

#[test]
fn phases_follow_the_kubelet() {
    check(
        "Always",
        &[(waiting("ContainerCreating"), None, false)],
        "Pending",
        false,
    );
    check(
        "Always",
        &[(running(), None, true), (running(), None, false)],
        "Running",
        false,
    );
    check(
        "Always",
        &[(running(), None, true), (running(), None, true)],
        "Running",
        true,
    );
    check(
        "Always",
        &[(waiting("CrashLoopBackOff"), Some(exited(1)), false)],
        "Running",
        false,
    );
    check("Never", &[(exited(0), None, false)], "Succeeded", false);
    check(
        "Never",
        &[(exited(0), None, false), (exited(2), None, false)],
        "Failed",
        false,
    );
    check("OnFailure", &[(exited(0), None, false)], "Succeeded", false);
    check(
        "OnFailure",
        &[(waiting("CrashLoopBackOff"), Some(exited(1)), false)],
        "Running",
        false,
    );
    check(
        "Never",
        &[(running(), None, false), (exited(1), None, false)],
        "Running",
        false,
    );
}

#[test]
fn init_containers_gate_the_pod() {
    let mut r = record("Never", &[(waiting("PodInitializing"), None, false)]);
    r.initialized = false;
    r.init = vec![ContainerRecord {
        state: exited(1),
        ..ContainerRecord::new("init", "img", "PodInitializing")
    }];
    assert_eq!(phase(&r), "Failed");
    r.restart_policy = "Always".into();
    assert_eq!(phase(&r), "Pending");
    let s = status_json(&r);
    assert_eq!(
        s["initContainerStatuses"][0]["state"]["terminated"]["exitCode"],
        1
    );
    assert_eq!(s["conditions"][1]["type"], "Initialized");
    assert_eq!(s["conditions"][1]["status"], "False");
}

#[test]
fn transitions_are_recorded_only_on_change() {
    let mut r = record("Always", &[(running(), None, false)]);
    assert!(note_transitions(&mut r, "t1"));
    assert!(!note_transitions(&mut r, "t2"));
    r.containers[0].ready = true;
    assert!(note_transitions(&mut r, "t3"));
    let s = status_json(&r);
    let ready = s["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Ready")
        .expect("Ready")
        .clone();
    assert_eq!(ready["status"], "True");
    assert_eq!(ready["lastTransitionTime"], "t3");
    assert_eq!(
        s["containerStatuses"][0]["state"]["running"]["startedAt"],
        "t"
    );
    assert_eq!(s["containerStatuses"][0]["lastState"], json!({}));
}
