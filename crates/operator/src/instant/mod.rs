//! Instant sync: a store's change event becomes a refresh of the SecretSyncs that read the
//! key it names. A source says which key of which store changed: OpenBao's audit device
//! ([`openbao`]), signed webhooks, Pub/Sub and Event Grid pushes ([`listener`]), an SQS
//! queue ([`sqs`]). [`Wakers::changed`] forgets the key's shared reads, marks each SecretSync
//! that reads it as asked (`Memory::asked`), and wakes it; the pass then reads the backend
//! even though its refresh slot is not due. An event never carries a value: the backend
//! read stays the source of truth, so a forged or replayed event can cost a read but never
//! change a value. Whether a store's events arrive is its `EventsReady` condition
//! ([`readiness`]).

pub mod coalesce;
pub mod listener;
pub mod openbao;
pub mod readiness;
pub mod sources;
pub mod sqs;
pub mod wakers;

pub use sources::{Sources, StoreAt};
pub use wakers::Wakers;

use std::future::Future;

use tokio::net::TcpListener;

/// Starts instant sync: the store controllers set up each store's source with `wakers`;
/// OpenBao's audit device and the HTTP event listener (`listeners`) are served where the
/// operator listens, until `stopped()` resolves.
pub fn start<F>(
    sources: &Sources,
    wakers: Wakers,
    (audit, events): (Option<TcpListener>, Option<TcpListener>),
    stopped: impl Fn() -> F,
) where
    F: Future<Output = ()> + Send + Sync + 'static,
{
    sources.started(wakers.clone());
    if let Some(listener) = audit {
        tokio::spawn(openbao::serve_openbao_audit(
            listener,
            wakers.clone(),
            stopped(),
        ));
    }
    if let Some(listener) = events {
        tokio::spawn(listener::serve(listener, wakers, stopped()));
    }
}
