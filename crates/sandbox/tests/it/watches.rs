//! Watches: resume, selectors, bookmarks, expiry, metadata watches, kube-runtime watcher.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use secretsync_sandbox::Sandbox;

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
    )
    .unwrap()
}

async fn next_event<S>(s: &mut S) -> WatchEvent<ConfigMap>
where
    S: futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .expect("an event within 5s")
        .expect("stream open")
        .expect("event decodes")
}

fn name_of(e: &WatchEvent<ConfigMap>) -> (String, String) {
    match e {
        WatchEvent::Added(o) => ("ADDED".into(), o.metadata.name.clone().unwrap()),
        WatchEvent::Modified(o) => ("MODIFIED".into(), o.metadata.name.clone().unwrap()),
        WatchEvent::Deleted(o) => ("DELETED".into(), o.metadata.name.clone().unwrap()),
        WatchEvent::Bookmark(_) => ("BOOKMARK".into(), String::new()),
        WatchEvent::Error(e) => ("ERROR".into(), e.message.clone()),
    }
}

#[tokio::test]
async fn watch_resumes_from_resource_version_and_reports_changes_in_order() {
    let sb = Sandbox::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(sb.client(), "default");
    api.create(&PostParams::default(), &cm("before", json!({})))
        .await
        .unwrap();
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    api.create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let mut s = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    assert_eq!(
        name_of(&next_event(&mut s).await),
        ("ADDED".into(), "a".into())
    );
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "w"}})),
    )
    .await
    .unwrap();
    assert_eq!(
        name_of(&next_event(&mut s).await),
        ("MODIFIED".into(), "a".into())
    );
    api.delete("a", &Default::default()).await.unwrap();
    assert_eq!(
        name_of(&next_event(&mut s).await),
        ("DELETED".into(), "a".into())
    );

    // "0" starts with the current state.
    let mut s0 = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    assert_eq!(
        name_of(&next_event(&mut s0).await),
        ("ADDED".into(), "before".into())
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn label_selected_watch_sees_objects_enter_and_leave_the_selection() {
    let sb = Sandbox::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(sb.client(), "default");
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut s = api
        .watch(&WatchParams::default().labels("app=web"), &rv)
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &cm("x", json!({"app": "db"})))
        .await
        .unwrap();
    api.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
    )
    .await
    .unwrap();
    assert_eq!(
        name_of(&next_event(&mut s).await),
        ("ADDED".into(), "x".into())
    );
    api.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}})),
    )
    .await
    .unwrap();
    assert_eq!(
        name_of(&next_event(&mut s).await),
        ("DELETED".into(), "x".into())
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn bookmarks_arrive_and_timeout_ends_the_stream() {
    let sb = Sandbox::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(sb.client(), "default");
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut s = api
        .watch(
            &WatchParams {
                bookmarks: true,
                ..WatchParams::default()
            }
            .timeout(4),
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    let e = next_event(&mut s).await;
    match e {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("expected a bookmark, got {other:?}"),
    }
    let end = tokio::time::timeout(Duration::from_secs(8), async {
        while s.next().await.is_some() {}
    })
    .await;
    assert!(end.is_ok(), "stream ends after timeoutSeconds");
    sb.shutdown().await;
}

#[tokio::test]
async fn too_old_resource_version_yields_410_expired() {
    let sb = Sandbox::builder().watch_history(16).start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(sb.client(), "default");
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    for i in 0..40 {
        api.create(&PostParams::default(), &cm(&format!("c{i}"), json!({})))
            .await
            .unwrap();
    }
    let mut s = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match next_event(&mut s).await {
        WatchEvent::Error(e) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("expected 410, got {other:?}"),
    }
    sb.shutdown().await;
}

#[tokio::test]
async fn runtime_watchers_see_full_and_metadata_objects() {
    let sb = Sandbox::start().await.unwrap();
    let client = sb.client();
    let api: Api<Secret> = Api::namespaced(client.clone(), "default");
    let s: Secret =
        serde_json::from_value(json!({"metadata": {"name": "w"}, "stringData": {"k": "v"}}))
            .unwrap();
    api.create(&PostParams::default(), &s).await.unwrap();
    let mut full = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let meta_api: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), "default");
    let mut meta = watcher(meta_api, watcher::Config::default())
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(5), full.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.data.is_some());
    let m = tokio::time::timeout(Duration::from_secs(5), meta.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m.metadata.name.as_deref(), Some("w"));
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
    )
    .await
    .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), meta.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m.metadata.labels.unwrap()["x"], "1");
    sb.shutdown().await;
}

#[tokio::test]
async fn hundreds_of_watchers_all_receive_an_event() {
    let sb = Sandbox::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(sb.client(), "default");
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut streams = Vec::new();
    for _ in 0..200 {
        streams.push(
            api.watch(&WatchParams::default(), &rv)
                .await
                .unwrap()
                .boxed(),
        );
    }
    api.create(&PostParams::default(), &cm("fan", json!({})))
        .await
        .unwrap();
    for s in &mut streams {
        assert_eq!(
            name_of(&next_event(s).await),
            ("ADDED".into(), "fan".into())
        );
    }
    sb.shutdown().await;
}

#[tokio::test]
async fn streaming_list_watchers_get_initial_events_then_changes() {
    let sb = Sandbox::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(sb.client(), "default");
    api.create(&PostParams::default(), &cm("pre", json!({})))
        .await
        .unwrap();
    let mut s = watcher(api.clone(), watcher::Config::default().streaming_lists())
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(5), s.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("pre"));
    api.create(&PostParams::default(), &cm("post", json!({})))
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), s.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.metadata.name.as_deref(), Some("post"));
    sb.shutdown().await;
}
