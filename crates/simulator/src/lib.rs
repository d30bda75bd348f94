//! A kwok-style workload simulator for clusters that run no real Pods: the sandbox API
//! server, or a bare control plane (etcd + kube-apiserver, with or without
//! kube-controller-manager).
//!
//! - **kubelet layer** (always): Pods are bound to a simulated node `<prefix>-<i>` and
//!   become Running and Ready after a delay, or stay Pending with
//!   `CreateContainerConfigError` while a Secret (or a `secretKeyRef` key) they need is
//!   missing.
//! - **controllers layer** (`Options::controllers`): Deployments → ReplicaSets → Pods with
//!   rolling updates, StatefulSets, DaemonSets, and the status fields `kubectl rollout
//!   status` reads — for control planes without kube-controller-manager.
//!
//! [`engine`] is the simulation over any [`engine::Cluster`]; the sandbox runs it on its
//! own store, [`apiserver::run`] on any API server through a kube client (the
//! `secretsync-sim` binary).

pub mod apiserver;
pub mod engine;
pub mod names;

pub use engine::{
    BAD_SECRETS_ANNOTATION, Cluster, Event, HANG_ANNOTATION, Key, Options, pod_ready,
};
