//! Rolling workloads onto a version: step 5 of the pipeline ([`plan`]), the pod-spec rules
//! it applies ([`podspec`]), the per-workload batching of template changes ([`batch`]) and
//! Argo Rollouts as a target kind ([`argo`]).

pub mod argo;
pub(crate) mod batch;
mod plan;
pub mod podspec;

pub(crate) use plan::*;
