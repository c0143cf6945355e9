//! Reading the generated objects.

use super::*;

#[test]
fn the_generated_files_parse_into_their_objects() {
    let ws = workspace_root();
    let kinds = |p: &str| -> Vec<String> {
        read_documents(&ws.join(p))
            .expect("documents")
            .iter()
            .map(|d| d["kind"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(
        kinds("manifests/cpm-agents.yaml"),
        ["ConfigMap", "DaemonSet"]
    );
    assert_eq!(
        kinds("manifests/control-plane-proxy.yaml"),
        ["DaemonSet", "Service"]
    );
    assert_eq!(kinds("manifests/namespace.yaml"), ["Namespace"]);
    assert!(kinds("manifests/rbac/cpm-agents.yaml").contains(&"RoleBinding".to_string()));
    let pod = api_proxy_static_pod(&ws, "10.200.0.1:6443").expect("template");
    assert!(
        pod.contains("value: 10.200.0.1:6443") && !pod.contains("${"),
        "{pod}"
    );
    let cj = backup_cronjob(&ws, "master-1").expect("template");
    assert_eq!(cj[0]["metadata"]["name"], "etcd-backup-master-1");
}

#[test]
fn documents_split_on_separators_and_skip_comments() {
    let docs =
        documents("# head\n---\na: 1\n---\n# only a comment\n---\nb: 2\n", "t").expect("docs");
    assert_eq!(
        docs,
        [serde_json::json!({"a": 1}), serde_json::json!({"b": 2})]
    );
}
