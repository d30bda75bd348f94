//! The in-memory caches the watches fill and the reconciles read, so that a steady-state
//! reconcile asks the API server nothing: versions ([`versions`]), SecretSyncs
//! ([`syncs`]), workloads ([`workloads`]) and namespace labels ([`namespaces`]), and one
//! watch over several namespaces ([`multiwatch`]).

pub(crate) mod multiwatch;
pub(crate) mod namespaces;
pub(crate) mod syncs;
pub(crate) mod versions;
pub(crate) mod workloads;
