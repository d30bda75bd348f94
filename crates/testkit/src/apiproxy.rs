//! An HTTP proxy in front of any Kubernetes API server (the sandbox or a real kube-apiserver)
//! that injects API faults into the requests of the client under test: error statuses (5xx;
//! 429 with `Retry-After`), delays and dropped watches, by verb, resource and subresource
//! ([`crate::faults`]), and counts those requests. It listens on plain HTTP on loopback and
//! forwards through a [`kube::Client`] (so with the upstream's TLS and credentials: a real
//! cluster's admin), streaming responses, so watches stay open until the server or a
//! [`Faults::drop_watches`] ends them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http_body_util::{BodyDataStream, BodyExt, StreamBody};
use tokio::task::JoinHandle;

use crate::faults::{Faults, Injected};

/// A request as the API server authorizes it: verb, API group, resource, subresource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub verb: String,
    pub group: String,
    pub resource: String,
    /// `""` for the main resource.
    pub subresource: String,
}

impl Target {
    /// The target of `method` on `path?query`; `None` for non-resource paths (discovery,
    /// `/version`, OpenAPI).
    pub fn parse(method: &Method, path: &str, query: Option<&str>) -> Option<Target> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, rest) = match parts.as_slice() {
            ["api", _version, rest @ ..] => ("", rest),
            ["apis", group, _version, rest @ ..] => (*group, rest),
            _ => return None,
        };
        // namespaces/NS/RESOURCE[/NAME[/SUB]] is namespaced; anything else (namespaces/NS
        // itself among them) is cluster-scoped RESOURCE[/NAME[/SUB]].
        let rest = match rest {
            ["namespaces", _ns, resource, tail @ ..] => {
                let mut r = vec![*resource];
                r.extend(tail);
                r
            }
            other => other.to_vec(),
        };
        let (resource, named, subresource) = match rest.as_slice() {
            [resource] => (*resource, false, ""),
            [resource, _name] => (*resource, true, ""),
            [resource, _name, sub, ..] => (*resource, true, *sub),
            _ => return None,
        };
        let watch = query.is_some_and(|q| {
            q.split('&')
                .any(|kv| matches!(kv, "watch=true" | "watch=1" | "watch=True"))
        });
        let verb = match (method, named) {
            (&Method::GET, false) if watch => "watch",
            (&Method::GET, false) => "list",
            (&Method::GET, true) => "get",
            (&Method::POST, _) => "create",
            (&Method::PUT, true) => "update",
            (&Method::PATCH, true) => "patch",
            (&Method::DELETE, true) => "delete",
            (&Method::DELETE, false) => "deletecollection",
            _ => return None,
        };
        Some(Target {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
        })
    }
}

/// Requests counted by target, with the questions tests ask of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requests(pub BTreeMap<Target, u64>);

const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

impl Requests {
    fn sum(&self, matches: impl Fn(&Target) -> bool) -> u64 {
        self.0
            .iter()
            .filter(|(t, _)| matches(t))
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests of `verb` on `group`/`resource`, any subresource.
    pub fn count(&self, verb: &str, group: &str, resource: &str) -> u64 {
        self.sum(|t| t.verb == verb && t.group == group && t.resource == resource)
    }

    /// Requests of `verb` on one subresource (`""` for the main resource).
    pub fn count_sub(&self, verb: &str, group: &str, resource: &str, subresource: &str) -> u64 {
        self.sum(|t| {
            t.verb == verb
                && t.group == group
                && t.resource == resource
                && t.subresource == subresource
        })
    }

    /// Writes (create, update, patch, delete, deletecollection) to `resource`, any group.
    pub fn writes_to(&self, resource: &str) -> u64 {
        self.sum(|t| t.resource == resource && WRITE_VERBS.contains(&t.verb.as_str()))
    }

    /// Requests of any of `verbs`, on anything.
    pub fn of_verbs(&self, verbs: &[&str]) -> u64 {
        self.sum(|t| verbs.contains(&t.verb.as_str()))
    }

    /// Every request counted.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

struct Shared {
    upstream: kube::Client,
    faults: Faults,
    requests: Mutex<BTreeMap<Target, u64>>,
}

/// The proxy; it stops when dropped.
pub struct ApiProxy {
    url: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl ApiProxy {
    /// Listens on a free loopback port and forwards every request through `upstream`.
    pub async fn start(upstream: kube::Client) -> ApiProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the API proxy");
        let url = format!(
            "http://{}",
            listener.local_addr().expect("the proxy's address")
        );
        let shared = Arc::new(Shared {
            upstream,
            faults: Faults::default(),
            requests: Mutex::default(),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ApiProxy { url, shared, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A client whose requests go through the proxy (with the upstream's credentials).
    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(self.url.parse().expect("the proxy URL is a valid URI"));
        config.default_namespace = "default".into();
        kube::Client::try_from(config).expect("a client for a plain-HTTP URL always builds")
    }

    /// The faults armed on the proxied requests.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Requests forwarded (or answered with a fault) so far, by target.
    pub fn requests(&self) -> Requests {
        Requests(self.shared.requests.lock().unwrap().clone())
    }

    /// Forgets the requests counted so far.
    pub fn reset_requests(&self) {
        self.shared.requests.lock().unwrap().clear();
    }
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let target = Target::parse(&parts.method, parts.uri.path(), parts.uri.query());
    if let Some(t) = &target {
        *shared
            .requests
            .lock()
            .unwrap()
            .entry(t.clone())
            .or_default() += 1;
        match shared.faults.hit(&t.verb, &t.resource, &t.subresource) {
            Some(Injected::Status(code)) => return injected_status(code),
            Some(Injected::Delay(delay)) => tokio::time::sleep(delay).await,
            None => {}
        }
    }
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return proxy_error(format!("reading the request body: {e}")),
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut upstream_request = axum::http::Request::builder()
        .method(parts.method)
        .uri(path);
    for (name, value) in &parts.headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            upstream_request = upstream_request.header(name, value);
        }
    }
    let upstream_request = match upstream_request.body(kube::client::Body::from(body.to_vec())) {
        Ok(r) => r,
        Err(e) => return proxy_error(format!("building the upstream request: {e}")),
    };
    let response = match shared.upstream.send(upstream_request).await {
        Ok(r) => r,
        Err(e) => return proxy_error(format!("the upstream API server: {e}")),
    };
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::TRANSFER_ENCODING);
    // A watch (or any response) still streaming when the watches are dropped ends there, as
    // when a load balancer cuts the connection.
    let mut dropped = shared.faults.dropped();
    let stream = BodyDataStream::new(body)
        .take_until(async move {
            let _ = dropped.changed().await;
        })
        .map(|chunk| chunk.map(http_body::Frame::data));
    Response::from_parts(parts, Body::new(StreamBody::new(stream)))
}

/// What a real API server answers with `code` (a `Status`), 429 with `Retry-After: 1`.
fn injected_status(code: u16) -> Response {
    let (reason, message) = match code {
        429 => (
            "TooManyRequests",
            "too many requests, please try again later",
        ),
        503 => (
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ),
        504 => (
            "Timeout",
            "the server was unable to return a response in the time allotted",
        ),
        _ => (
            "InternalError",
            "an error on the server has prevented the request from succeeding",
        ),
    };
    let status = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("{message} (injected by the test proxy)"), "reason": reason, "code": code,
    });
    let mut response = (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        status.to_string(),
    )
        .into_response();
    if code == 429 {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn proxy_error(message: String) -> Response {
    (StatusCode::BAD_GATEWAY, format!("api proxy: {message}")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(method: Method, path: &str, query: Option<&str>) -> Option<(String, String, String)> {
        Target::parse(&method, path, query).map(|t| (t.verb, t.resource, t.subresource))
    }

    fn t(verb: &str, resource: &str, sub: &str) -> Option<(String, String, String)> {
        Some((verb.into(), resource.into(), sub.into()))
    }

    #[test]
    fn requests_are_named_as_the_api_server_authorizes_them() {
        use Method as M;
        assert_eq!(
            target(
                M::GET,
                "/api/v1/namespaces/p/secrets",
                Some("watch=true&rv=1")
            ),
            t("watch", "secrets", "")
        );
        assert_eq!(
            target(M::GET, "/api/v1/namespaces/p/secrets", None),
            t("list", "secrets", "")
        );
        assert_eq!(
            target(
                M::PATCH,
                "/apis/secretsync.io/v1alpha1/namespaces/p/secretsyncs/db/status",
                None
            ),
            t("patch", "secretsyncs", "status")
        );
        assert_eq!(
            target(M::GET, "/api/v1/namespaces/p", None),
            t("get", "namespaces", "")
        );
        assert_eq!(
            target(M::POST, "/apis/apps/v1/namespaces/p/deployments", None),
            t("create", "deployments", "")
        );
        assert_eq!(
            target(
                M::DELETE,
                "/apis/secretsync.io/v1alpha1/clustersecretstores/s",
                None
            ),
            t("delete", "clustersecretstores", "")
        );
        assert_eq!(target(M::GET, "/version", None), None);
        assert_eq!(target(M::GET, "/apis/apps/v1", None), None);
    }
}
