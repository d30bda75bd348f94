//! Installing the CRDs into a test cluster (the sandbox, or a real one) and waiting until
//! they are Established. I/O, so it lives here rather than in the pure `secretsync-api`.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum InstallError {
    #[error("applying CRD {name}: {source}")]
    Apply {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("waiting for CRD {name} to be established: {source}")]
    Wait {
        name: String,
        #[source]
        source: kube::runtime::wait::Error,
    },
    #[error("CRD {name} was not established within {timeout:?}")]
    Timeout { name: String, timeout: Duration },
}

/// Applies the three CRDs (server-side apply, field manager `secretsync`, forced) and waits,
/// by watching, until the API server reports each one Established.
pub async fn install_crds(client: &Client, timeout: Duration) -> Result<(), InstallError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(secretsync_api::labels::FIELD_MANAGER).force();
    for crd in secretsync_api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .map_err(|source| InstallError::Apply {
                name: name.clone(),
                source,
            })?;
    }
    for crd in secretsync_api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        match tokio::time::timeout(timeout, established).await {
            Ok(Ok(_)) => {}
            Ok(Err(source)) => return Err(InstallError::Wait { name, source }),
            Err(_) => return Err(InstallError::Timeout { name, timeout }),
        }
    }
    Ok(())
}
