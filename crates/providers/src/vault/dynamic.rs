//! Credentials a Vault/OpenBao secrets engine issues at any path (`database/creds/<role>`,
//! `aws/creds/<role>`, `rabbitmq/creds/<role>`), static roles read like keys
//! (`database/static-creds/<role>`), and the lease calls around them: renew, list under a
//! prefix, look one up.

use std::time::Duration;

use secretsync_api::{DynamicMethod, DynamicSecret};

use super::{Failure, Inner};
use crate::error::{ProviderError, Result};
use crate::value::{Issued, Lease, Renewed, SecretBytes, SecretData, StaticRead};

/// The parts of a secrets engine's answer we keep. The data goes straight into redacting
/// types; this struct has no `Debug`.
#[derive(serde::Deserialize)]
struct Answer {
    #[serde(default)]
    lease_id: String,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
    data: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The TTL field of a static role's answer, in seconds.
const STATIC_TTL: &str = "ttl";

impl Inner {
    /// One request to the engine at `dynamic.path`, its answer parsed.
    async fn ask(&self, dynamic: &DynamicSecret, doing: &str) -> Result<Answer> {
        let path = dynamic.path();
        let (method, body) = match dynamic.method() {
            DynamicMethod::Get => (reqwest::Method::GET, None),
            DynamicMethod::Post => {
                let fields: serde_json::Map<String, serde_json::Value> = dynamic
                    .parameters
                    .iter()
                    .flat_map(|p| p.iter())
                    .map(|(k, v)| (k.to_owned(), v.into()))
                    .collect();
                (
                    reqwest::Method::POST,
                    Some(serde_json::Value::Object(fields).to_string()),
                )
            }
        };
        let (method, body) = (&method, body.as_deref());
        let raw = self
            .authorized(|token| async move { self.call(&token, method.clone(), path, body).await })
            .await
            .map_err(|f| match f {
                Failure::Status { code: 404, .. } => ProviderError::InvalidConfig(format!(
                    "Vault at {} has nothing at {path}: check dynamic.path (the engine's \
                     mount and role)",
                    self.server
                )),
                f => self.describe(f, doing),
            })?;
        // Parse errors from serde_json name a position, never the input.
        serde_json::from_slice(raw.expose()).map_err(|_| self.describe(Failure::Malformed, doing))
    }

    pub(super) async fn issue_dynamic(&self, dynamic: &DynamicSecret) -> Result<Issued> {
        let doing = format!("issuing a credential at {}", dynamic.path());
        let answer = self.ask(dynamic, &doing).await?;
        let Some(fields) = answer.data else {
            return Err(self.describe(Failure::Empty, &doing));
        };
        let lease = (!answer.lease_id.is_empty()).then(|| Lease {
            id: answer.lease_id,
            duration: Duration::from_secs(answer.lease_duration),
            renewable: answer.renewable,
        });
        Ok(Issued {
            data: secret_data(fields),
            lease,
            serial: None,
        })
    }

    pub(super) async fn read_static(&self, dynamic: &DynamicSecret) -> Result<StaticRead> {
        let doing = format!("reading the static role at {}", dynamic.path());
        let answer = self.ask(dynamic, &doing).await?;
        let Some(mut fields) = answer.data else {
            return Err(self.describe(Failure::Empty, &doing));
        };
        let rotates_in = fields
            .remove(STATIC_TTL)
            .and_then(|ttl| ttl.as_u64())
            .map(Duration::from_secs);
        Ok(StaticRead {
            data: secret_data(fields),
            rotates_in,
        })
    }

    pub(super) async fn renew_lease(&self, lease_id: &str, increment: Duration) -> Result<Renewed> {
        let body = serde_json::json!({
            "lease_id": lease_id,
            "increment": increment.as_secs().max(1),
        });
        let doing = "renewing a lease (sys/leases/renew)";
        let raw = self
            .put_lease("sys/leases/renew", body)
            .await
            .map_err(|f| self.describe(f, doing))?;
        let answer: Answer = serde_json::from_slice(raw.expose())
            .map_err(|_| self.describe(Failure::Malformed, doing))?;
        Ok(Renewed {
            duration: Duration::from_secs(answer.lease_duration),
            renewable: answer.renewable,
        })
    }

    /// The ids of every lease under `prefix` (such as `database/creds/app`), by LIST on
    /// `sys/leases/lookup/<prefix>/`, not descending into deeper prefixes.
    pub(super) async fn leases_under(&self, prefix: &str) -> Result<Vec<String>> {
        let prefix = prefix.trim_matches('/');
        let path = format!("sys/leases/lookup/{prefix}/");
        let path = &path;
        let doing = format!("listing the leases under {prefix} (sys/leases/lookup)");
        let listed = self
            .authorized(|token| async move {
                let list = reqwest::Method::from_bytes(b"LIST").expect("LIST is a method token");
                self.call(&token, list, path, None).await
            })
            .await;
        let raw = match listed {
            Ok(raw) => raw,
            // Nothing under it: Vault answers 404.
            Err(Failure::Status { code: 404, .. }) => return Ok(Vec::new()),
            Err(f) => return Err(self.describe(f, &doing)),
        };
        #[derive(serde::Deserialize)]
        struct Listed {
            data: Option<Keys>,
        }
        #[derive(serde::Deserialize)]
        struct Keys {
            #[serde(default)]
            keys: Vec<String>,
        }
        let listed: Listed = serde_json::from_slice(raw.expose())
            .map_err(|_| self.describe(Failure::Malformed, &doing))?;
        Ok(listed
            .data
            .map(|d| d.keys)
            .unwrap_or_default()
            .into_iter()
            .filter(|key| !key.ends_with('/'))
            .map(|key| format!("{prefix}/{key}"))
            .collect())
    }

    /// When the lease was issued (RFC 3339, as Vault says it), `None` for a lease Vault no
    /// longer knows.
    pub(super) async fn lease_issue_time(&self, lease_id: &str) -> Result<Option<String>> {
        let looked = self
            .put_lease(
                "sys/leases/lookup",
                serde_json::json!({ "lease_id": lease_id }),
            )
            .await;
        let doing = "looking up a lease (sys/leases/lookup)";
        let raw = match looked {
            Ok(raw) => raw,
            Err(Failure::Status { code: 400, errors })
                if errors.iter().any(|e| e.contains("invalid lease")) =>
            {
                return Ok(None);
            }
            Err(f) => return Err(self.describe(f, doing)),
        };
        #[derive(serde::Deserialize)]
        struct Looked {
            data: Option<Issue>,
        }
        #[derive(serde::Deserialize)]
        struct Issue {
            #[serde(default)]
            issue_time: String,
        }
        let looked: Looked = serde_json::from_slice(raw.expose())
            .map_err(|_| self.describe(Failure::Malformed, doing))?;
        Ok(looked.data.map(|d| d.issue_time))
    }
}

/// An engine's answer as Secret data: each field a key, strings as they are and other
/// values (numbers, lists) as JSON.
fn secret_data(fields: serde_json::Map<String, serde_json::Value>) -> SecretData {
    fields
        .into_iter()
        .map(|(key, value)| {
            let bytes = match value {
                serde_json::Value::String(s) => SecretBytes::from(s),
                other => SecretBytes::from(other.to_string()),
            };
            (key, bytes)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_becomes_one_key_per_field_strings_unquoted() {
        let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            r#"{"username": "v-app-1", "password": "p@ss", "port": 5432, "hosts": ["a", "b"]}"#,
        )
        .unwrap();
        let data = secret_data(fields);
        let text = |k: &str| String::from_utf8(data[k].expose().to_vec()).unwrap();
        assert_eq!(text("username"), "v-app-1");
        assert_eq!(text("password"), "p@ss");
        assert_eq!(text("port"), "5432");
        assert_eq!(text("hosts"), r#"["a","b"]"#);
    }
}
