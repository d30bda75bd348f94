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
    apply_and_wait(client, &secretsync_api::crds(), timeout).await
}

/// A stand-in for Argo Rollouts' `Rollout` CRD (argoproj.io/v1alpha1) with only what the
/// operator reads typed: `status.phase` and `status.message`. The pod template and the rest
/// of spec and status are kept as given, so a test writes any Rollout it likes and drives its
/// status itself (there is no Argo controller). `status` is a subresource, as in Argo's CRD,
/// so the operator's template rewrite bumps `metadata.generation`.
pub fn argo_rollout_crd() -> CustomResourceDefinition {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "rollouts.argoproj.io"},
        "spec": {
            "group": "argoproj.io",
            "names": {"kind": "Rollout", "listKind": "RolloutList", "plural": "rollouts", "singular": "rollout", "shortNames": ["ro"]},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "status": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": true,
                            "properties": {
                                "phase": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        },
                    },
                }},
            }],
        },
    }))
    .expect("the Rollout CRD is a valid CustomResourceDefinition")
}

/// Installs [`argo_rollout_crd`] and waits until it is Established.
pub async fn install_argo_rollout_crd(
    client: &Client,
    timeout: Duration,
) -> Result<(), InstallError> {
    apply_and_wait(client, &[argo_rollout_crd()], timeout).await
}

async fn apply_and_wait(
    client: &Client,
    crds: &[CustomResourceDefinition],
    timeout: Duration,
) -> Result<(), InstallError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(secretsync_api::labels::FIELD_MANAGER).force();
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(crd))
            .await
            .map_err(|source| InstallError::Apply {
                name: name.clone(),
                source,
            })?;
    }
    for crd in crds {
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
