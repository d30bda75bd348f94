//! The secretsync operator: reconciles `SecretSync` objects into immutable, version-suffixed
//! Secrets. See `docs/api.md` for the guarantees; each module's docs say which it serves.

pub mod context;
pub mod controller;
pub mod desired;
pub mod error;
pub mod index;
pub mod lease;
pub mod metrics;
pub mod multiwatch;
pub mod ratelimit;
pub mod reconcile;
pub mod rollout;
pub mod server;
pub mod status;
pub mod supervise;
pub mod telemetry;
pub mod workloads;

pub use context::Config;
pub use controller::{RunOptions, run};
