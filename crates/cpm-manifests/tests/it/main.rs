//! cpm-manifests' suite: golden manifests per (version × config case) validated offline against
//! the Kubernetes OpenAPI schemas, checksums over every input, and the agent on a fake root.

mod agent;
mod cluster;
mod golden;
mod rollout;
mod scheduler;

/// `cpm-manifests crd | head`: the reader going away is not a panic, and the exit is quiet.
#[test]
fn crd_into_a_closed_pipe_exits_quietly() {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cpm-manifests"));
    cmd.arg("crd");
    let out = cpm_testing::process::output_into_closed_pipe(&mut cmd);
    let err = cpm_testing::process::stderr(&out);
    assert_eq!(cpm_testing::process::code(&out), 0, "{err}");
    assert!(err.is_empty(), "{err}");
}

/// `crd` prints two CRDs; the node's flags mean nothing to it and are refused.
#[test]
fn crd_refuses_the_node_flags() {
    for flag in [
        &["--once"][..],
        &["--root", "/tmp"],
        &["--kubeconfig", "/k"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cpm-manifests"))
            .arg("crd")
            .args(flag)
            .output()
            .unwrap();
        let err = cpm_testing::process::stderr(&out);
        assert_eq!(cpm_testing::process::code(&out), 2, "{flag:?}: {err}");
        assert!(
            err.contains("is not honoured by `cpm-manifests crd`"),
            "{err}"
        );
    }
}
