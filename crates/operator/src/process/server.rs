//! The operator's HTTP endpoints: `/metrics` (Prometheus) and `/healthz` + `/readyz`
//! (kubelet probes), each on its own address so metrics can stay off the probe port.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::process::metrics::Metrics;

/// What `/readyz` answers from.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    /// Set by [`crate::run`] once every cache has listed.
    pub caches_synced: Arc<AtomicBool>,
    /// With leader election: whether this process leads. A standby runs no caches and is
    /// ready as long as it stands by; a leader is ready once its caches are synced.
    pub leading: Option<Arc<AtomicBool>>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        let synced = self.caches_synced.load(Ordering::Acquire);
        match &self.leading {
            None => synced,
            Some(leading) => !leading.load(Ordering::Acquire) || synced,
        }
    }
}

pub fn metrics_routes(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .with_state(metrics)
}

pub fn health_routes(readiness: Readiness) -> Router {
    Router::new()
        // The process answers: the runtime is alive. Anything fatal makes it exit instead.
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(readiness)
}

async fn serve_metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

async fn ready(State(readiness): State<Readiness>) -> (StatusCode, &'static str) {
    if readiness.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}

/// Serves `routes` on `listener` for as long as the process runs: probes and metrics keep
/// answering while a graceful shutdown lets reconciles finish.
pub async fn serve(listener: tokio::net::TcpListener, routes: Router) -> std::io::Result<()> {
    axum::serve(listener, routes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness() {
        let r = Readiness::default();
        assert!(!r.is_ready());
        r.caches_synced.store(true, Ordering::Release);
        assert!(r.is_ready());

        let leading = Arc::new(AtomicBool::new(false));
        let r = Readiness {
            caches_synced: Arc::default(),
            leading: Some(leading.clone()),
        };
        assert!(r.is_ready(), "a standby is ready");
        leading.store(true, Ordering::Release);
        assert!(!r.is_ready(), "a new leader waits for its caches");
        r.caches_synced.store(true, Ordering::Release);
        assert!(r.is_ready());
    }
}
