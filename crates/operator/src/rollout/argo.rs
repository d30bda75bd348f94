//! Argo Rollouts' `Rollout` (argoproj.io/v1alpha1) as a rollout target. Its pod template
//! sits where a Deployment's does, so the rewrite, the batcher and the reference scan treat
//! it like one; its CRD may be absent, so the operator asks discovery once at start whether
//! the API server serves it and watches Rollouts only then.

use std::borrow::Cow;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Client, Resource};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const GROUP_VERSION: &str = "argoproj.io/v1alpha1";
pub const PLURAL: &str = "rollouts";

/// A Rollout with only the parts the operator reads kept typed; spec and status stay JSON,
/// as the rollout helpers read them (and Argo's schema is not ours to pin).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Rollout {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

impl Resource for Rollout {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Rollout".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "argoproj.io".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1alpha1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        PLURAL.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Whether the API server serves Argo Rollouts. A group that is not there (404) means no;
/// any other error is returned, so a flaky start is retried by a restart instead of leaving
/// Rollout targets unwatched for the life of the process.
pub async fn served(client: &Client) -> kube::Result<bool> {
    match client.list_api_group_resources(GROUP_VERSION).await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == PLURAL)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// What a Rollout target that is not in the cache is told, when the CRD is missing.
pub const NOT_INSTALLED: &str =
    "the Argo Rollouts CRD (rollouts.argoproj.io/v1alpha1) is not installed";
