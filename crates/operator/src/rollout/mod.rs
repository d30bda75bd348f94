//! Rolling workloads onto a version, step 5 of the pipeline: [`plan`] judges each target,
//! [`decide`] adds `onFailure: Rollback`, rollout windows ([`gate`]) and revoked versions
//! in use, [`apply`] sends the patches through the per-workload [`batch`]er. The pod-spec
//! rules, which the workload cache reads too, are in [`crate::podspec`]; Argo Rollouts as a
//! target kind in [`argo`].

mod apply;
pub mod argo;
pub(crate) mod batch;
mod decide;
#[cfg(test)]
mod fixtures;
mod gate;
mod patch;
mod plan;
mod target;

pub(crate) use apply::{RolloutHandles, roll_out};
pub(crate) use target::{Outcome, RolloutState};
