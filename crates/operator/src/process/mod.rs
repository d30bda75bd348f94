//! The operator as a process: leader election ([`leader`]), the HTTP endpoints
//! ([`server`]), the Prometheus series they serve ([`metrics`]), logging ([`telemetry`]) and
//! the supervision of background tasks ([`supervise`]).

pub mod leader;
pub mod metrics;
pub mod server;
pub mod supervise;
pub mod telemetry;
