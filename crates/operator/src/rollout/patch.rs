//! The rollout's I/O on workloads: the JSON patch that moves a workload onto a version, and
//! what the kubelet says about its Pods while it rolls.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use secretsync_api::{WorkloadKind, labels, selector};
use serde_json::Value;

use crate::cache::workloads::SCAN_PAGE;
use crate::rollout::argo::Rollout;

/// What the kubelet says keeps a workload's Pods from starting: for each Pod waiting in
/// `CreateContainerConfigError`, its message (`secret "db-v2" not found`, `couldn't find
/// key token in Secret payments/db-v2`), one per Pod. Read with the workload's selector,
/// only while its rollout has not completed.
pub async fn pod_config_errors(
    client: &Client,
    namespace: &str,
    workload: &Value,
) -> kube::Result<Vec<String>> {
    let Some(selector) = workload
        .pointer("/spec/selector")
        .and_then(|s| serde_json::from_value::<LabelSelector>(s.clone()).ok())
        .map(|s| selector::to_query(&s))
        .filter(|q| !q.is_empty())
    else {
        return Ok(Vec::new());
    };
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&selector).limit(SCAN_PAGE))
        .await?;
    Ok(pods
        .items
        .iter()
        .filter_map(|pod| {
            let status = pod.status.as_ref()?;
            status
                .init_container_statuses
                .iter()
                .flatten()
                .chain(status.container_statuses.iter().flatten())
                .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
                .find(|w| w.reason.as_deref() == Some("CreateContainerConfigError"))
                .and_then(|w| w.message.clone())
        })
        .collect())
}

/// Applies a JSON patch (from [`crate::podspec::rewrite_patch`]) to a workload, under the
/// operator's field manager, so GitOps tools can be told to ignore exactly these changes.
pub async fn patch_workload(
    client: &Client,
    kind: WorkloadKind,
    namespace: &str,
    name: &str,
    patch: Value,
) -> kube::Result<()> {
    let patch: json_patch::Patch =
        serde_json::from_value(patch).expect("rewrite_patch builds valid JSON patches");
    let params = PatchParams {
        field_manager: Some(labels::FIELD_MANAGER.into()),
        ..Default::default()
    };
    let patch = Patch::<()>::Json(patch);
    match kind {
        WorkloadKind::Deployment => {
            Api::<Deployment>::namespaced(client.clone(), namespace)
                .patch(name, &params, &patch)
                .await?;
        }
        WorkloadKind::StatefulSet => {
            Api::<StatefulSet>::namespaced(client.clone(), namespace)
                .patch(name, &params, &patch)
                .await?;
        }
        WorkloadKind::DaemonSet => {
            Api::<DaemonSet>::namespaced(client.clone(), namespace)
                .patch(name, &params, &patch)
                .await?;
        }
        WorkloadKind::Rollout => {
            Api::<Rollout>::namespaced(client.clone(), namespace)
                .patch(name, &params, &patch)
                .await?;
        }
    }
    Ok(())
}
