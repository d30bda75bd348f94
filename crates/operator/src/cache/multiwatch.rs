//! One watch over several namespaces (`--namespace a --namespace b`), as a single event
//! stream that reflectors and the version index can consume as if it came from one watcher.
//!
//! Merging the raw watcher streams is not enough: each namespace's watcher relists on its
//! own (`Init`, `InitApply`…, `InitDone`), and a reflector treats every `InitDone` as "this
//! is the whole world", so one namespace's relist would wipe the others' objects. The
//! [`Merger`] keeps the objects of every namespace and turns each completed relist into a
//! relist of the union; it emits nothing until every namespace has listed once, so a
//! store's readiness still means "everything listed". The price is a second copy of the
//! watched objects, paid only when more than one namespace is watched.

use std::collections::HashMap;
use std::fmt::Debug;

use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

pub type EventStream<K> = BoxStream<'static, Result<Event<K>, watcher::Error>>;

/// Watches `K` in `namespaces`, or in all namespaces when the list is empty, with kube's
/// default backoff on errors.
pub fn watch_namespaces<K>(
    client: &Client,
    namespaces: &[String],
    config: watcher::Config,
) -> EventStream<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + 'static,
    K::DynamicType: Default,
{
    let watch = |api: Api<K>| watcher(api, config.clone()).default_backoff().boxed();
    match namespaces {
        [] => watch(Api::all(client.clone())),
        [namespace] => watch(Api::namespaced(client.clone(), namespace)),
        many => merge(
            many.iter()
                .map(|ns| watch(Api::namespaced(client.clone(), ns)))
                .collect(),
        ),
    }
}

/// Watches every `K` of a cluster-scoped kind (or every namespace's, for metadata), with
/// kube's default backoff on errors.
pub fn watch_cluster<K>(client: &Client) -> EventStream<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    watcher(Api::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .boxed()
}

fn merge<K: Resource + Clone + Send + 'static>(sources: Vec<EventStream<K>>) -> EventStream<K> {
    let mut merger = Merger::new(sources.len());
    let tagged = stream::select_all(
        sources
            .into_iter()
            .enumerate()
            .map(|(i, events)| events.map_ok(move |e| (i, e))),
    );
    tagged
        .flat_map(move |item| {
            let out: Vec<Result<Event<K>, watcher::Error>> = match item {
                Ok((source, event)) => merger.push(source, event).into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            stream::iter(out)
        })
        .boxed()
}

struct Source<K> {
    /// Objects as of the last completed list plus the changes since, by name.
    objects: HashMap<String, K>,
    /// A list in progress.
    relist: Option<HashMap<String, K>>,
    listed: bool,
}

/// See the module docs. Pure: events in, events out.
pub(crate) struct Merger<K> {
    sources: Vec<Source<K>>,
    /// Every source has listed once and the union was emitted.
    started: bool,
}

impl<K: Resource + Clone> Merger<K> {
    pub(crate) fn new(sources: usize) -> Self {
        Self {
            sources: (0..sources)
                .map(|_| Source {
                    objects: HashMap::new(),
                    relist: None,
                    listed: false,
                })
                .collect(),
            started: false,
        }
    }

    pub(crate) fn push(&mut self, source: usize, event: Event<K>) -> Vec<Event<K>> {
        let src = &mut self.sources[source];
        match event {
            Event::Init => {
                src.relist = Some(HashMap::new());
                Vec::new()
            }
            Event::InitApply(obj) => {
                src.relist
                    .get_or_insert_default()
                    .insert(obj.name_any(), obj);
                Vec::new()
            }
            Event::InitDone => {
                src.objects = src.relist.take().unwrap_or_default();
                src.listed = true;
                if self.started || self.sources.iter().all(|s| s.listed) {
                    self.started = true;
                    self.union_relist()
                } else {
                    Vec::new()
                }
            }
            Event::Apply(obj) => {
                src.objects.insert(obj.name_any(), obj.clone());
                if self.started {
                    vec![Event::Apply(obj)]
                } else {
                    Vec::new()
                }
            }
            Event::Delete(obj) => {
                src.objects.remove(&obj.name_any());
                if self.started {
                    vec![Event::Delete(obj)]
                } else {
                    Vec::new()
                }
            }
        }
    }

    fn union_relist(&self) -> Vec<Event<K>> {
        let objects = self.sources.iter().flat_map(|s| s.objects.values());
        std::iter::once(Event::Init)
            .chain(objects.cloned().map(Event::InitApply))
            .chain(std::iter::once(Event::InitDone))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector::store::Writer;

    fn cm(ns: &str, name: &str) -> ConfigMap {
        ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Feeds events through the merger into a reflector store; returns the store's
    /// contents (sorted "ns/name") and whether it became ready.
    fn run(events: Vec<(usize, Event<ConfigMap>)>) -> (Vec<String>, bool) {
        let mut merger = Merger::new(2);
        let mut writer = Writer::<ConfigMap>::default();
        let reader = writer.as_reader();
        for (source, event) in events {
            for out in merger.push(source, event) {
                writer.apply_watcher_event(&out);
            }
        }
        let mut names: Vec<String> = reader
            .state()
            .iter()
            .map(|c| format!("{}/{}", c.namespace().unwrap(), c.name_any()))
            .collect();
        names.sort();
        let ready = futures::FutureExt::now_or_never(reader.wait_until_ready()).is_some();
        (names, ready)
    }

    fn list(source: usize, ns: &str, names: &[&str]) -> Vec<(usize, Event<ConfigMap>)> {
        let mut events = vec![(source, Event::Init)];
        events.extend(names.iter().map(|n| (source, Event::InitApply(cm(ns, n)))));
        events.push((source, Event::InitDone));
        events
    }

    #[test]
    fn nothing_is_ready_until_every_namespace_listed() {
        let (names, ready) = run(list(0, "a", &["x"]));
        assert!(names.is_empty());
        assert!(!ready);
    }

    #[test]
    fn the_union_of_interleaved_lists_with_changes_in_between() {
        let mut events = vec![(0, Event::Init), (1, Event::Init)];
        events.push((0, Event::InitApply(cm("a", "x"))));
        events.push((1, Event::InitApply(cm("b", "y"))));
        events.push((0, Event::InitApply(cm("a", "gone"))));
        events.push((0, Event::InitDone));
        // Namespace a watches while b still lists.
        events.push((0, Event::Delete(cm("a", "gone"))));
        events.push((0, Event::Apply(cm("a", "new"))));
        events.push((1, Event::InitDone));
        let (names, ready) = run(events);
        assert!(ready);
        assert_eq!(names, ["a/new", "a/x", "b/y"]);
    }

    #[test]
    fn one_namespace_relisting_keeps_the_others() {
        let mut events = list(0, "a", &["x"]);
        events.extend(list(1, "b", &["y", "z"]));
        events.push((0, Event::Apply(cm("a", "w"))));
        // b's watch expired; z was deleted meanwhile.
        events.extend(list(1, "b", &["y"]));
        let (names, ready) = run(events);
        assert!(ready);
        assert_eq!(names, ["a/w", "a/x", "b/y"]);
    }

    #[test]
    fn changes_after_start_pass_through() {
        let mut merger = Merger::new(2);
        for (s, e) in list(0, "a", &[]).into_iter().chain(list(1, "b", &[])) {
            merger.push(s, e);
        }
        let out = merger.push(1, Event::Apply(cm("b", "y")));
        assert!(matches!(&out[..], [Event::Apply(c)] if c.name_any() == "y"));
        let out = merger.push(1, Event::Delete(cm("b", "y")));
        assert!(matches!(&out[..], [Event::Delete(c)] if c.name_any() == "y"));
    }
}
