//! `dataFrom.find`: the criteria every provider applies the same way, and the cap that
//! keeps one SecretSync from pulling a whole backend into memory.

/// At most this many remote secrets may match one `find`; more is refused with an error
/// asking to narrow it, instead of holding every value in memory.
pub const MAX_FOUND: usize = 500;

/// `find`'s answer where the backend lists names and reads each: every name once, in name
/// order, with its latest value. One failed read fails the whole `find`.
#[cfg(any(feature = "azure", feature = "gcp", feature = "akeyless"))]
pub(crate) async fn read_each<F, Fut>(
    mut names: Vec<String>,
    read: F,
) -> crate::error::Result<Vec<(String, crate::value::RemoteValue)>>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = crate::error::Result<crate::value::RemoteValue>>,
{
    names.sort();
    names.dedup();
    let mut found = Vec::with_capacity(names.len());
    for name in names {
        let value = read(name.clone()).await?;
        found.push((name, value));
    }
    Ok(found)
}

/// The helpers below serve the backends; with none built in they have no caller.
#[cfg(any(
    feature = "vault",
    feature = "aws",
    feature = "azure",
    feature = "gcp",
    feature = "conjur",
    feature = "akeyless",
    feature = "fake"
))]
pub(crate) use matching::{Matcher, too_many};

#[cfg(any(
    feature = "vault",
    feature = "aws",
    feature = "azure",
    feature = "gcp",
    feature = "conjur",
    feature = "akeyless",
    feature = "fake"
))]
mod matching {
    #[cfg(any(
        feature = "aws",
        feature = "azure",
        feature = "gcp",
        feature = "conjur",
        feature = "akeyless"
    ))]
    use std::collections::BTreeMap;

    use regex::Regex;
    use secretsync_api::Find;

    use super::MAX_FOUND;
    use crate::error::{ProviderError, Result};

    /// A compiled `find`: the name pattern and the exact tags to match.
    pub(crate) struct Matcher<'a> {
        name: Option<Regex>,
        /// Only AWS and Azure secrets have tags (GCP's labels and Conjur's annotations play
        /// their part).
        #[cfg(any(
            feature = "aws",
            feature = "azure",
            feature = "gcp",
            feature = "conjur",
            feature = "akeyless"
        ))]
        pub(crate) tags: Option<&'a BTreeMap<String, String>>,
        /// The folder (no leading or trailing '/') for backends with paths.
        #[cfg(any(
            feature = "vault",
            feature = "fake",
            feature = "conjur",
            feature = "akeyless"
        ))]
        pub(crate) path: Option<&'a str>,
    }

    impl<'a> Matcher<'a> {
        /// Compiles `find` for a provider that supports the criteria `supports` names
        /// (`"tags"`, `"path"`); using any other one is a configuration error, not silently
        /// ignored.
        pub(crate) fn new(find: &'a Find, provider: &str, supports: &[&str]) -> Result<Self> {
            for (criterion, set) in [("tags", find.tags.is_some()), ("path", find.path.is_some())] {
                if set && !supports.contains(&criterion) {
                    return Err(ProviderError::InvalidConfig(format!(
                        "dataFrom.find.{criterion} is not supported by the {provider} provider"
                    )));
                }
            }
            let name = find
                .name
                .as_ref()
                .map(|n| {
                    Regex::new(&n.regexp).map_err(|e| {
                        ProviderError::InvalidConfig(format!(
                            "dataFrom.find.name.regexp is not a valid regular expression: {e}"
                        ))
                    })
                })
                .transpose()?;
            Ok(Self {
                name,
                #[cfg(any(
                    feature = "aws",
                    feature = "azure",
                    feature = "gcp",
                    feature = "conjur",
                    feature = "akeyless"
                ))]
                tags: find.tags.as_ref(),
                #[cfg(any(
                    feature = "vault",
                    feature = "fake",
                    feature = "conjur",
                    feature = "akeyless"
                ))]
                path: find
                    .path
                    .as_deref()
                    .map(|p| p.trim_matches('/'))
                    .filter(|p| !p.is_empty()),
            })
        }

        pub(crate) fn name_matches(&self, name: &str) -> bool {
            self.name.as_ref().is_none_or(|re| re.is_match(name))
        }

        #[cfg(any(
            feature = "aws",
            feature = "azure",
            feature = "gcp",
            feature = "conjur",
            feature = "akeyless"
        ))]
        /// Whether `tags` (the secret's own, key and value) hold every wanted tag with its value.
        pub(crate) fn tags_match(&self, tags: &[(&str, &str)]) -> bool {
            self.tags.is_none_or(|wanted| {
                wanted
                    .iter()
                    .all(|(k, v)| tags.iter().any(|(tk, tv)| tk == k && tv == v))
            })
        }

        #[cfg(any(feature = "fake", feature = "conjur", feature = "akeyless"))]
        /// Whether `name` lies under the `path` (itself or below it).
        pub(crate) fn under_path(&self, name: &str) -> bool {
            self.path.is_none_or(|path| {
                name.strip_prefix(path)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
        }
    }

    /// The error for a `find` that matched more than [`MAX_FOUND`] secrets.
    pub(crate) fn too_many() -> ProviderError {
        ProviderError::InvalidConfig(format!(
            "dataFrom.find matched more than {MAX_FOUND} remote secrets; narrow it with a more \
         specific name, tags or path"
        ))
    }
}
