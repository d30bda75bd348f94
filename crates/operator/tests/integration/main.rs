//! The operator against the sandbox API server (and real OpenBao where a test says so).
//! One test binary, so the harness is shared and linked once.

mod actions;
mod apifaults;
mod argo;
mod aws;
mod azure;
mod cluster_sync;
mod common;
mod crash;
mod endpoints;
mod examples;
mod failures;
mod gcp;
mod hash_key;
mod instant_aws;
mod instant_sync;
mod leader;
mod leak;
mod leases;
mod matrix;
mod options;
mod outages;
mod ownership;
mod process;
mod rbac;
mod recovery;
mod rollout;
mod sharding;
mod stores;
mod stress;
mod sync;
mod tenancy;
mod tls;
mod typos;
mod user_actions;
mod vault;
