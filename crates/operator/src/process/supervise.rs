//! Background tasks that must outlive the controller. A watch task ends only if its stream
//! does, which kube's watchers never do on their own: if one ends, the operator is working
//! from a cache that no longer updates, and must stop (and be restarted) rather than run blind.

use std::collections::HashMap;
use std::future::Future;

use tokio::sync::watch;
use tokio::task::JoinSet;

/// Why [`crate::run`] stopped without being asked to.
#[derive(Debug, thiserror::Error)]
pub enum Stopped {
    #[error("the {0} task ended")]
    TaskEnded(&'static str),
    #[error("the {0} task panicked")]
    TaskPanicked(&'static str),
    #[error("the {0} watch ended")]
    WatchEnded(&'static str),
    #[error("the controller stream ended")]
    ControllerEnded,
    #[error(transparent)]
    HashKey(#[from] crate::hash_key::KeyError),
    #[error("API discovery failed: {0}")]
    Discovery(#[source] kube::Error),
}

/// Named tasks; aborted when dropped.
#[derive(Default)]
pub struct Tasks {
    set: JoinSet<()>,
    names: HashMap<tokio::task::Id, &'static str>,
}

impl Tasks {
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let handle = self.set.spawn(task);
        self.names.insert(handle.id(), name);
    }

    /// Waits for the first task to end; pending forever while they all run (or if there
    /// are none).
    pub async fn first_exit(&mut self) -> Stopped {
        match self.set.join_next_with_id().await {
            Some(Ok((id, ()))) => Stopped::TaskEnded(self.name(id)),
            Some(Err(e)) => Stopped::TaskPanicked(self.name(e.id())),
            None => std::future::pending().await,
        }
    }

    fn name(&self, id: tokio::task::Id) -> &'static str {
        self.names.get(&id).copied().unwrap_or("background")
    }
}

/// Whether the operator was asked to stop, for every part that must wind down.
pub(crate) struct Stopping(watch::Receiver<bool>);

impl Stopping {
    pub(crate) fn on(shutdown: impl Future<Output = ()> + Send + 'static) -> Self {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            tx.send_replace(true);
        });
        Self(rx)
    }

    pub(crate) fn is_stopping(&self) -> bool {
        *self.0.borrow()
    }

    pub(crate) fn wait(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }
}
