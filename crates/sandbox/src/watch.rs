//! Watch streams: newline-delimited JSON events, fed by the store's change feed.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};

use crate::api::{Core, Target};
use crate::error::ApiError;
use crate::render::{Render, render};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{Change, ChangeKind, WatchStart};

pub struct WatchParams {
    /// `None` = start from the current state (synthetic ADDED events).
    pub since: Option<u64>,
    pub timeout: Option<Duration>,
    pub bookmarks: bool,
    pub send_initial_events: bool,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub render: Render,
    pub bookmark_every: Duration,
}

fn matches(p: &WatchParams, v: &Value) -> bool {
    p.labels.matches(v) && p.fields.matches(v)
}

fn line(kind: &str, obj: Value) -> Bytes {
    let mut s = json!({"type": kind, "object": obj}).to_string();
    s.push('\n');
    Bytes::from(s)
}

/// The event a watcher with these selectors sees for a change, if any.
fn classify<'a>(p: &WatchParams, c: &'a Change) -> Option<(&'static str, &'a Value)> {
    let now = matches(p, &c.object);
    let before = c.prev.as_ref().map(|o| matches(p, o));
    match c.kind {
        ChangeKind::Added => now.then_some(("ADDED", &*c.object)),
        ChangeKind::Modified => match (before.unwrap_or(false), now) {
            (true, true) => Some(("MODIFIED", &*c.object)),
            (false, true) => Some(("ADDED", &*c.object)),
            (true, false) => Some(("DELETED", &*c.object)),
            (false, false) => None,
        },
        ChangeKind::Deleted => (before.unwrap_or(now)).then_some(("DELETED", &*c.object)),
    }
}

fn expired_line(msg: String) -> Bytes {
    line("ERROR", ApiError::expired(msg).to_status())
}

pub fn serve(
    core: Arc<Core>,
    mut shutdown: watch::Receiver<bool>,
    t: Target,
    p: WatchParams,
) -> Response {
    let ns = (!t.namespace.is_empty()).then(|| t.namespace.clone());
    let keep = |v: &Value| matches(&p, v);
    let started = core.store.watch_from(
        t.def.storage().0,
        t.def.storage().1,
        ns.as_deref(),
        p.since,
        &keep,
    );
    let mut dropped = core.faults.dropped();
    dropped.mark_unchanged();
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let body_stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let def = t.def.clone();
    let version = t.version.clone();
    tokio::spawn(async move {
        let (start, start_rv, mut feed) = match started {
            Ok(s) => s,
            Err(oldest) => {
                let _ = tx
                    .send(expired_line(format!(
                        "too old resource version: {} ({})",
                        p.since.unwrap_or(0),
                        oldest.saturating_sub(1)
                    )))
                    .await;
                return;
            }
        };
        let out = |v: &Value| render(v, &def, &version, p.render);
        let api_version = def.api_version(&version);
        let mut last_rv = start_rv;
        match start {
            WatchStart::Snapshot(objs) => {
                for o in objs {
                    if tx.send(line("ADDED", out(&o))).await.is_err() {
                        return;
                    }
                }
                if p.send_initial_events {
                    let bm = bookmark(&def, &version, last_rv, true);
                    if tx.send(line("BOOKMARK", bm)).await.is_err() {
                        return;
                    }
                }
            }
            WatchStart::Replay(events) => {
                for c in events {
                    if let Some((kind, obj)) = classify(&p, &c)
                        && tx.send(line(kind, out(obj))).await.is_err()
                    {
                        return;
                    }
                }
            }
        }
        let deadline = p.timeout.map(|d| tokio::time::Instant::now() + d);
        let mut ticker = tokio::time::interval(p.bookmark_every);
        ticker.reset();
        loop {
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tx.closed() => return,
                _ = shutdown.changed() => return,
                _ = dropped.changed() => return,
                _ = sleep => return,
                _ = ticker.tick(), if p.bookmarks => {
                    if tx.send(line("BOOKMARK", bookmark(&def, &version, last_rv, false))).await.is_err() {
                        return;
                    }
                }
                r = feed.recv() => match r {
                    Ok(c) => {
                        if c.rv <= last_rv {
                            continue;
                        }
                        last_rv = c.rv;
                        if (c.key.group.as_str(), c.key.resource.as_str()) != def.storage() {
                            continue;
                        }
                        if let Some(ns) = &ns && c.key.namespace != *ns {
                            continue;
                        }
                        if let Some((kind, obj)) = classify(&p, &c) {
                            ticker.reset();
                            let as_stored = p.render == Render::Full
                                && obj.get("apiVersion").and_then(Value::as_str) == Some(api_version.as_str());
                            let bytes = if as_stored {
                                let j = c.json.get_or_init(|| c.object.to_string());
                                Bytes::from(format!("{{\"type\":\"{kind}\",\"object\":{j}}}\n"))
                            } else {
                                line(kind, out(obj))
                            };
                            if tx.send(bytes).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // A watcher that fell behind the fan-out buffer must relist.
                        let _ = tx.send(expired_line(format!(
                            "too old resource version: {last_rv} (watcher fell behind)"
                        ))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache, private"),
        ],
        Body::from_stream(body_stream),
    )
        .into_response()
}

fn bookmark(
    def: &crate::resources::ResourceDef,
    version: &str,
    rv: u64,
    initial_end: bool,
) -> Value {
    let mut m = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        m["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": def.kind, "apiVersion": def.api_version(version), "metadata": m})
}
