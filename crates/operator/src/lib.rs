//! The secretsync operator: reconciles `SecretSync` objects into immutable, version-suffixed
//! Secrets. See `docs/api.md` for the guarantees; each module's docs say which it serves, and
//! `reconcile/mod.rs` maps the pipeline's steps to their files.

pub mod argo;
pub mod backoff;
pub mod batch;
pub mod conditions;
pub mod connections;
pub mod context;
pub mod controller;
pub mod error;
pub mod events;
pub mod hash_key;
pub mod health;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod multiwatch;
pub mod namespaces;
pub mod podspec;
pub mod ratelimit;
pub mod reconcile;
pub mod server;
pub mod store_checks;
pub mod supervise;
pub mod sync_index;
pub mod telemetry;
pub mod workloads;

pub use context::Config;
pub use controller::{RunOptions, run};
pub use supervise::Stopped;
