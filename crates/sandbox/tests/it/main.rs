//! Integration tests: each test starts its own sandbox on a free port and talks to it
//! through kube-rs or real kubectl.

mod binary;
mod common;
mod controller;
mod crds;
mod crud;
mod deploy_kinds;
mod kubectl;
mod lifecycle;
mod openapi;
mod patches;
mod sim;
mod tokens;
mod watches;
