//! The secretsync operator: reconciles `SecretSync` objects into immutable, version-suffixed
//! Secrets. `docs/architecture.md` walks through the wings below and the path of one sync;
//! `docs/reference/` is the contract each module's docs cite.
//!
//! | wing | concern |
//! |---|---|
//! | [`controller`] | the watches, each declared once, and the reconcile loop they drive |
//! | `reconcile/` | the pipeline of one SecretSync, a file per step |
//! | `cache/` | what the watches keep in memory for the reconciles to read |
//! | [`rollout`] | rolling workloads onto a version |
//! | [`podspec`] | the pod-spec rules: Secret references, the rewrite patch, rollout progress |
//! | `fanout/` | ClusterSecretSyncs: a SecretSync per selected namespace |
//! | `backend/` | connected providers, their health and the stores' Ready checks |
//! | [`process`] | leader election, HTTP endpoints, metrics, logging, supervision |

mod backend;
mod backoff;
mod cache;
mod conditions;
mod context;
mod controller;
mod error;
mod events;
mod fanout;
pub mod hash_key;
mod instant;
pub mod podspec;
pub mod process;
mod reconcile;
pub mod rollout;
mod writes;

pub use context::Config;
pub use controller::{RunOptions, run};
pub use process::supervise::Stopped;
