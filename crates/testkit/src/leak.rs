//! Leak checks (guarantee 8, docs/reference/guarantees.md): plant canary values, then scan everything a person or a
//! tool can read for them — logs, Events, statuses, `/metrics`, error messages — and fail
//! on a hit. One helper, so every place is searched the same way.
//!
//! ```no_run
//! # async fn example(client: kube::Client, logs: String) {
//! use secretsync_testkit::leak::LeakScan;
//!
//! let mut scan = LeakScan::new(["CANARY-1f2e"]);
//! scan.text("operator debug log", &logs);
//! scan.cluster(&client).await;
//! let report = scan.assert_clean(); // panics naming each hit
//! eprintln!("{report}");
//! # }
//! ```

use std::fmt;

use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use secretsync_api::{ClusterSecretStore, SecretStore, SecretSync};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Canaries, and what was searched: each place with how many items and bytes.
#[derive(Debug)]
pub struct LeakScan {
    canaries: Vec<String>,
    places: Vec<Place>,
    hits: Vec<String>,
}

#[derive(Debug)]
struct Place {
    name: String,
    items: usize,
    bytes: usize,
}

impl LeakScan {
    /// Canaries shorter than 8 characters are refused: they would match by chance.
    pub fn new<S: Into<String>>(canaries: impl IntoIterator<Item = S>) -> Self {
        let canaries: Vec<String> = canaries.into_iter().map(Into::into).collect();
        assert!(!canaries.is_empty(), "a leak scan needs canaries");
        for c in &canaries {
            assert!(c.len() >= 8, "canary {c:?} is too short to search for");
        }
        Self {
            canaries,
            places: Vec::new(),
            hits: Vec::new(),
        }
    }

    /// Searches `text` as one item of `place`.
    pub fn text(&mut self, place: &str, text: &str) -> &mut Self {
        self.items(place, [text])
    }

    /// Searches each item of `place`.
    pub fn items<T: AsRef<str>>(
        &mut self,
        place: &str,
        items: impl IntoIterator<Item = T>,
    ) -> &mut Self {
        let mut counted = Place {
            name: place.to_owned(),
            items: 0,
            bytes: 0,
        };
        for item in items {
            let item = item.as_ref();
            counted.items += 1;
            counted.bytes += item.len();
            for canary in &self.canaries {
                if let Some(at) = item.find(canary.as_str()) {
                    let excerpt = excerpt(item, at, canary.len());
                    self.hits.push(format!("{place}: …{excerpt}…"));
                }
            }
        }
        match self.places.iter_mut().find(|p| p.name == place) {
            Some(p) => {
                p.items += counted.items;
                p.bytes += counted.bytes;
            }
            None => self.places.push(counted),
        }
        self
    }

    /// Searches every object of these kinds in every namespace: Events of both APIs and
    /// SecretSyncs whole (metadata, spec, status with its condition messages), and the
    /// metadata and status of SecretStores and ClusterSecretStores (their spec is the
    /// user's input: the `fake` provider holds values there by design).
    pub async fn cluster(&mut self, client: &kube::Client) -> &mut Self {
        self.kind::<Event>(client, "Events (events.k8s.io/v1)", true)
            .await;
        self.kind::<CoreEvent>(client, "Events (v1)", true).await;
        self.kind::<SecretSync>(client, "SecretSyncs (whole, status and conditions)", true)
            .await;
        self.kind::<SecretStore>(client, "SecretStores (metadata, status)", false)
            .await;
        self.kind::<ClusterSecretStore>(client, "ClusterSecretStores (metadata, status)", false)
            .await;
        let mut messages = Vec::new();
        let syncs = Api::<SecretSync>::all(client.clone())
            .list(&ListParams::default())
            .await
            .expect("list SecretSyncs");
        for sync in syncs {
            for c in sync.status.map(|s| s.conditions).unwrap_or_default() {
                messages.push(c.message);
            }
        }
        self.items("condition messages (error messages users see)", messages)
    }

    async fn kind<K>(&mut self, client: &kube::Client, place: &str, with_spec: bool)
    where
        K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + fmt::Debug,
    {
        let list = Api::<K>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("list {place}: {e}"));
        let texts: Vec<String> = list
            .items
            .iter()
            .map(|o| {
                let mut value = serde_json::to_value(o).expect("objects serialize");
                if !with_spec && let Some(object) = value.as_object_mut() {
                    object.remove("spec");
                }
                value.to_string()
            })
            .collect();
        self.items(place, texts);
    }

    /// Panics listing every hit; otherwise returns the report of where it looked.
    pub fn assert_clean(&self) -> String {
        let report = self.to_string();
        assert!(
            self.hits.is_empty(),
            "canary values leaked:\n{}\n{report}",
            self.hits.join("\n")
        );
        report
    }

    /// Places searched that held nothing: a scan of nothing proves nothing.
    pub fn empty_places(&self) -> Vec<&str> {
        self.places
            .iter()
            .filter(|p| p.items == 0)
            .map(|p| p.name.as_str())
            .collect()
    }

    pub fn hits(&self) -> &[String] {
        &self.hits
    }
}

/// Up to 120 bytes either side of `item[at..at + len]`, on character boundaries.
fn excerpt(item: &str, at: usize, len: usize) -> &str {
    let mut start = at.saturating_sub(120);
    while !item.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (at + len + 120).min(item.len());
    while !item.is_char_boundary(end) {
        end += 1;
    }
    &item[start..end]
}

impl fmt::Display for LeakScan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "leak scan: {} canaries, {} hits",
            self.canaries.len(),
            self.hits.len()
        )?;
        for p in &self.places {
            writeln!(f, "  {:>6} items {:>9} bytes  {}", p.items, p.bytes, p.name)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_canaries_and_counts_where_it_looked() {
        let mut scan = LeakScan::new(["CANARY-abc123"]);
        scan.text("log", "all fine")
            .items("events", ["one", "two CANARY-abc123 three"]);
        assert_eq!(scan.hits().len(), 1);
        assert!(scan.hits()[0].starts_with("events: …two CANARY-abc123"));
        let report = scan.to_string();
        assert!(report.contains("1 hits"), "{report}");
        assert!(report.contains("2 items"), "{report}");
        let panicked = std::panic::catch_unwind(|| scan.assert_clean());
        assert!(panicked.is_err());

        let mut clean = LeakScan::new(["CANARY-abc123"]);
        clean.items("nothing", Vec::<String>::new());
        assert_eq!(clean.empty_places(), ["nothing"]);
        clean.assert_clean();
    }
}
