//! The operator against the sandbox API server (and real OpenBao where a test says so).
//! One test binary, so the harness is shared and linked once.

mod common;
mod examples;
mod failures;
mod leak;
mod rbac;
mod rollout;
mod sync;
mod vault;
