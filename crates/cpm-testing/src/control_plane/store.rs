//! `cpm-test-apiserver store`: the test API server as the cluster's state, until SIGTERM.

use tracing::info;

use super::cli::StoreArgs;
use super::{ControlPlaneError, read, terminated};
use crate::apiserver::{
    ApiServer, ApiServerOptions, CertAndKey, Identity, Limits, RequestHeader, UserInfo,
};

/// The user of `--admin-kubeconfig`.
pub(crate) const ADMIN: &str = "cpm-test-admin";

/// The server's options from the flags.
fn options(args: &StoreArgs) -> Result<ApiServerOptions, ControlPlaneError> {
    let request_header = match &args.requestheader_client_ca_file {
        Some(path) => Some(RequestHeader {
            client_ca_pem: read(path)?,
            allowed_names: args
                .requestheader_allowed_names
                .iter()
                .filter(|n| !n.is_empty())
                .cloned()
                .collect(),
            username_headers: args.requestheader_username_headers.clone(),
            group_headers: args.requestheader_group_headers.clone(),
            extra_headers_prefixes: args.requestheader_extra_headers_prefix.clone(),
        }),
        None => None,
    };
    Ok(ApiServerOptions {
        history_window: args.history_window,
        ca: Some(CertAndKey {
            cert_pem: read(&args.ca_cert)?,
            key_pem: read(&args.ca_key)?,
        }),
        listen: args.listen,
        serving_sans: args.tls_sans.clone(),
        request_header,
        service_account_issuer: args.service_account_issuer.clone(),
        git_version: args.kubernetes_version.clone(),
        system_namespaces: true,
        limits: Limits::standard(),
        ..ApiServerOptions::standard()
    })
}

/// Serves until SIGTERM or SIGINT.
pub(crate) async fn run(args: StoreArgs) -> Result<(), ControlPlaneError> {
    let server = ApiServer::start_with(options(&args)?)
        .await
        .map_err(ControlPlaneError::ApiServer)?;
    if let Some(path) = &args.admin_kubeconfig {
        let yaml = server
            .kubeconfig_yaml(&Identity::Cert(UserInfo::new(ADMIN, &["system:masters"])))
            .map_err(ControlPlaneError::ApiServer)?;
        cpm_core::apply::write_atomic(path, yaml.as_bytes(), 0o600, None, None).map_err(
            |source| ControlPlaneError::Write {
                path: path.clone(),
                source,
            },
        )?;
    }
    info!(url = %server.url(), "store serving");
    terminated().await?;
    info!("store stopping");
    Ok(())
}
