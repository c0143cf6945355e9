//! The `default/kubernetes` Service and its EndpointSlice, as kube-apiserver's endpoint
//! reconciler keeps them: one endpoint per API server (here the store's address), port `https`.
//! proxy-reloader reads it.

use std::net::SocketAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

/// Publishes `servers` (ready) as the endpoints of Service `default/kubernetes`.
pub async fn publish(
    client: &kube::Client,
    service_ip: &str,
    servers: &[SocketAddr],
) -> Result<(), kube::Error> {
    let pp = PatchParams::apply("kube-apiserver").force();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": service_ip, "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}], "type": "ClusterIP"},
    });
    services
        .patch("kubernetes", &pp, &Patch::Apply(svc))
        .await?;
    let port = servers.first().map_or(6443, SocketAddr::port);
    let endpoints: Vec<serde_json::Value> = servers
        .iter()
        .map(|s| json!({"addresses": [s.ip().to_string()], "conditions": {"ready": true}}))
        .collect();
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    });
    slices
        .patch("kubernetes", &pp, &Patch::Apply(slice))
        .await?;
    Ok(())
}
