//! Workload simulator (filled in later).

use std::sync::Arc;

use crate::api::Core;

pub async fn run(core: Arc<Core>) {
    let _ = core;
}
