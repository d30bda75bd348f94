//! One template change for several SecretSyncs that roll the same workload at about the same
//! time (one rotation touching a database password and an API key): each rollout's rewrite
//! waits a short settle delay in a per-workload batch, and the first of them sends every
//! rewrite of the batch as one patch — one new ReplicaSet instead of one per SecretSync. A
//! rewrite that arrives after its batch was taken starts the next batch, so none is lost.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use secretsync_api::WorkloadKind;
use tokio::sync::oneshot;

/// A workload: kind, namespace, name.
pub type WorkloadKey = (WorkloadKind, String, String);

/// Point every reference to another version of any of `bases` at `active_name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewrite {
    pub bases: Vec<String>,
    pub active_name: String,
}

/// What became of a batch, told to every rewrite in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sent {
    Patched,
    /// Nothing differed (or the workload is gone): nothing was sent.
    Unchanged,
    /// The workload changed meanwhile: look again on the next pass.
    Conflict,
    /// Any other failure, as text (every rewrite of the batch gets a copy).
    Failed(String),
}

type Waiting = Vec<(Rewrite, oneshot::Sender<Sent>)>;

#[derive(Default)]
pub struct Batcher {
    pending: Mutex<HashMap<WorkloadKey, Waiting>>,
}

impl Batcher {
    /// Adds `rewrite` to the workload's open batch. The rewrite that opens a batch waits
    /// `settle`, takes the batch and calls `send` with all of its rewrites; every rewrite
    /// then gets the batch's result.
    pub async fn submit<F, Fut>(
        &self,
        key: WorkloadKey,
        rewrite: Rewrite,
        settle: Duration,
        send: F,
    ) -> Sent
    where
        F: FnOnce(Vec<Rewrite>) -> Fut,
        Fut: Future<Output = Sent>,
    {
        let (tx, rx) = oneshot::channel();
        let opens = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let batch = pending.entry(key.clone()).or_default();
            batch.push((rewrite, tx));
            batch.len() == 1
        };
        if opens {
            tokio::time::sleep(settle).await;
            let batch = self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key)
                .unwrap_or_default();
            let (rewrites, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let sent = send(rewrites).await;
            for waiter in waiters {
                let _ = waiter.send(sent.clone());
            }
        }
        // The sender is dropped only if the batch's opener was cancelled (shutdown): retry.
        rx.await.unwrap_or(Sent::Conflict)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn rewrite(base: &str, v: i64) -> Rewrite {
        Rewrite {
            bases: vec![base.into()],
            active_name: format!("{base}-v{v}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn rewrites_within_the_settle_delay_go_out_together_and_later_ones_are_not_lost() {
        let batcher = Arc::new(Batcher::default());
        let sends = Arc::new(Mutex::new(Vec::new()));
        let key: WorkloadKey = (WorkloadKind::Deployment, "payments".into(), "api".into());
        let submit = |r: Rewrite| {
            let (batcher, sends, key) = (batcher.clone(), sends.clone(), key.clone());
            tokio::spawn(async move {
                batcher
                    .submit(key, r, Duration::from_secs(1), |rs| async move {
                        sends.lock().unwrap().push(rs);
                        Sent::Patched
                    })
                    .await
            })
        };
        let db = submit(rewrite("db", 2));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let key_rw = submit(rewrite("key", 5));
        assert_eq!(db.await.unwrap(), Sent::Patched);
        assert_eq!(key_rw.await.unwrap(), Sent::Patched);
        // After the batch went out: a new batch, sent on its own.
        let late = submit(rewrite("db", 3));
        assert_eq!(late.await.unwrap(), Sent::Patched);
        assert_eq!(
            *sends.lock().unwrap(),
            vec![
                vec![rewrite("db", 2), rewrite("key", 5)],
                vec![rewrite("db", 3)]
            ]
        );
    }
}
