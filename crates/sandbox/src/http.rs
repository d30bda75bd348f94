//! HTTP routing: parses Kubernetes API paths and dispatches to the object lifecycle.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::api::{Core, DeleteOpts, FieldValidation, Propagation, Target, WriteOpts};
use crate::discovery;
use crate::error::{ApiError, ApiResult};
use crate::faults::Injected;
use crate::patch::PatchType;
use crate::render::{Render, render};
use crate::resources::ResourceDef;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::stats::StatKey;
use crate::store::Key;
use crate::tokens;
use crate::watch::{self as watchmod, WatchParams};

#[derive(Clone)]
pub struct AppState {
    pub core: Arc<Core>,
    pub shutdown: watch::Receiver<bool>,
    pub url: Arc<str>,
}

type Query = HashMap<String, String>;

fn parse_query(q: Option<&str>) -> Query {
    form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub fn json_response(code: StatusCode, v: &Value, warnings: &[String]) -> Response {
    let mut resp = (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response();
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(h) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            resp.headers_mut().append(header::WARNING, h);
        }
    }
    resp
}

fn ok(v: &Value) -> Response {
    json_response(StatusCode::OK, v, &[])
}

pub async fn handle(State(st): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, 256 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => return ApiError::bad_request(format!("reading body: {e}")).into_response(),
    };
    let query = parse_query(parts.uri.query());
    // JSON (and YAML for apply) bodies are understood natively; protobuf bodies of built-in
    // kinds are translated to JSON; anything else is a 415.
    let mut bytes = bytes;
    if let Some(ct) = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        && !bytes.is_empty()
        && (ct.contains("protobuf") || ct.contains("cbor"))
    {
        let decoded = if ct.contains("protobuf") {
            crate::protobuf::decode(&bytes)
        } else {
            Err("CBOR is not supported".to_string())
        };
        match decoded {
            Ok(v) => bytes = Bytes::from(v.to_string()),
            Err(why) => {
                return ApiError::unsupported_media(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml ({why})"
                ))
                .into_response();
            }
        }
    }
    match route(
        &st,
        &parts.method,
        parts.uri.path(),
        &query,
        &parts.headers,
        bytes,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The answer to a request hit by an injected fault, shaped as a real API server's.
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
    let mut resp = ApiError::new(code, reason, format!("{message} (injected)")).into_response();
    if code == 429 {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

fn not_found_path() -> ApiError {
    let mut e = ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    );
    e.details = Some(json!({}));
    e
}

async fn route(
    st: &AppState,
    method: &Method,
    path: &str,
    q: &Query,
    headers: &HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let core = &st.core;
    match segs.as_slice() {
        ["version"] => Ok(ok(&discovery::version())),
        ["healthz"] | ["readyz"] | ["livez"] => Ok((StatusCode::OK, "ok").into_response()),
        ["api"] => Ok(ok(&discovery::api_versions(&st.url))),
        ["apis"] => Ok(ok(&discovery::group_list(&core.registry))),
        ["api", "v1"] => Ok(ok(
            &discovery::resource_list(&core.registry, "", "v1").ok_or_else(not_found_path)?
        )),
        ["apis", g] => Ok(ok(
            &discovery::group(&core.registry, g).ok_or_else(not_found_path)?
        )),
        ["apis", g, v] => Ok(ok(
            &discovery::resource_list(&core.registry, g, v).ok_or_else(not_found_path)?
        )),
        ["openapi", "v2"] => {
            let doc = crate::openapi::v2_doc(&core.registry);
            let accept = headers
                .get(header::ACCEPT)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            if accept.contains("protobuf") {
                return Ok((
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, crate::openapi::V2_PROTOBUF)],
                    crate::openapi::v2_protobuf(&doc),
                )
                    .into_response());
            }
            Ok(ok(&doc))
        }
        ["openapi", "v3"] => Ok(ok(&crate::openapi::v3_root(&core.registry))),
        ["openapi", "v3", rest @ ..] => {
            let gv = rest.join("/");
            Ok(ok(
                &crate::openapi::v3_doc(&core.registry, &gv).ok_or_else(not_found_path)?
            ))
        }
        [".well-known", "openid-configuration"] => Ok(ok(&tokens::openid_configuration(&st.url))),
        ["openid", "v1", "jwks"] => Ok(ok(&core.signer.jwks())),
        ["sandbox", "stats"] => Ok(ok(
            &serde_json::to_value(core.stats.snapshot()).unwrap_or_default()
        )),
        ["sandbox", "stats", "reset"] if method == Method::POST => {
            core.stats.reset();
            Ok(ok(&json!({"reset": true})))
        }
        ["sandbox", "faults"] => match *method {
            Method::GET => Ok(ok(
                &serde_json::to_value(core.faults.stats()).unwrap_or_default()
            )),
            Method::POST => {
                let fault = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("not a fault: {e}")))?;
                core.faults.arm(fault);
                Ok(ok(&json!({"armed": true})))
            }
            Method::DELETE => {
                core.faults.clear();
                Ok(ok(&json!({"cleared": true})))
            }
            _ => Err(ApiError::method_not_allowed("GET, POST or DELETE")),
        },
        ["sandbox", "faults", "drop-watches"] if method == Method::POST => {
            core.faults.drop_watches();
            Ok(ok(&json!({"dropped": true})))
        }
        ["api", "v1", rest @ ..] => resource(st, method, "", "v1", rest, q, headers, body).await,
        ["apis", g, v, rest @ ..] => resource(st, method, g, v, rest, q, headers, body).await,
        _ => Err(not_found_path()),
    }
}

fn write_opts(q: &Query, headers: &HeaderMap) -> ApiResult<WriteOpts> {
    let validation = match q.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => FieldValidation::Warn,
        Some("Strict") => FieldValidation::Strict,
        Some("Ignore") => FieldValidation::Ignore,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn or Strict, got {other:?}"
            )));
        }
    };
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("unknown");
    let default_manager = ua.split('/').next().unwrap_or("unknown").to_string();
    Ok(WriteOpts {
        dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
        field_manager: q.get("fieldManager").cloned(),
        default_manager,
        validation,
        force: q.get("force").is_some_and(|f| f == "true"),
    })
}

fn decode_body(body: &[u8]) -> ApiResult<Value> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the body of the request was empty"));
    }
    serde_json::from_slice(body).or_else(|e| {
        serde_yaml::from_slice(body).map_err(|_| {
            ApiError::bad_request(format!("the body of the request could not be decoded: {e}"))
        })
    })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    rv: u64,
    ns: String,
    name: String,
}

#[allow(clippy::too_many_arguments)]
async fn resource(
    st: &AppState,
    method: &Method,
    group: &str,
    version: &str,
    rest: &[&str],
    q: &Query,
    headers: &HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let core = &st.core;
    let (ns, plural, name, sub) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if !(tail.is_empty() && (*plural == "status" || *plural == "finalize")) =>
        {
            (
                ns.to_string(),
                *plural,
                tail.first().copied(),
                tail.get(1).copied(),
            )
        }
        [plural, tail @ ..] => (
            "".to_string(),
            *plural,
            tail.first().copied(),
            tail.get(1).copied(),
        ),
        [] => return Err(not_found_path()),
    };
    if rest.len() > 5 {
        return Err(not_found_path());
    }
    let def = core
        .registry
        .lookup(group, version, plural)
        .ok_or_else(not_found_path)?;
    if def.namespaced == ns.is_empty() && !(def.namespaced && name.is_none()) {
        return Err(not_found_path());
    }
    let sub = sub.unwrap_or("").to_string();
    match sub.as_str() {
        "" => {}
        "status" if def.status_subresource => {}
        "finalize" if def.plural == "namespaces" => {}
        "token" | "scale" if def.has_subresource(&sub) => {}
        _ => return Err(not_found_path()),
    }
    let t = Target {
        def: def.clone(),
        version: version.to_string(),
        namespace: ns,
        name: name.unwrap_or("").to_string(),
        sub: sub.clone(),
    };
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let how = Render::from_accept(accept);
    let verb = match (method.clone(), name.is_some()) {
        (Method::GET, false) if is_true(q.get("watch")) => "watch",
        (Method::GET, false) => "list",
        (Method::GET, true) => "get",
        (Method::POST, _) => "create",
        (Method::PUT, true) => "update",
        (Method::PATCH, true) => "patch",
        (Method::DELETE, true) => "delete",
        (Method::DELETE, false) => "deletecollection",
        _ => {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
    };
    core.stats.record(StatKey {
        verb: verb.into(),
        group: group.into(),
        resource: plural.into(),
        subresource: sub.clone(),
        namespace: t.namespace.clone(),
        user: headers
            .get("impersonate-user")
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .into(),
    });
    match core.faults.hit(verb, plural, &sub) {
        Some(Injected::Status(code)) => return Ok(injected_status(code)),
        Some(Injected::Delay(delay)) => tokio::time::sleep(delay).await,
        None => {}
    }
    if def.is_virtual() && verb != "create" {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    if !def.verbs.contains(&verb) && sub.is_empty() {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    let out = |v: &Value| render(v, &def, version, how);
    match verb {
        "get" | "update" | "patch" if sub == "scale" => {
            let opts = write_opts(q, headers)?;
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            let v = core.scale(&t, verb, ct, &body, &opts)?;
            Ok(ok(&v))
        }
        "get" => {
            let o = core.get(&t)?;
            Ok(ok(&out(&o)))
        }
        "list" => list(core, &t, q, how),
        "watch" => {
            let p = watch_params(q, how, &def)?;
            Ok(watchmod::serve(core.clone(), st.shutdown.clone(), t, p))
        }
        "create" => {
            if def.plural == "tokenreviews" {
                let req = decode_body(&body)?;
                let now = jiff::Timestamp::now().as_second();
                let r = tokens::review(
                    &core.signer,
                    &req,
                    |ns, name| {
                        core.store
                            .get(&Key::new("", "serviceaccounts", ns, name))
                            .and_then(|sa| {
                                sa.pointer("/metadata/uid")
                                    .and_then(Value::as_str)
                                    .map(str::to_string)
                            })
                    },
                    now,
                );
                return Ok(json_response(StatusCode::CREATED, &r, &[]));
            }
            if def.group == "authorization.k8s.io" {
                let mut req = decode_body(&body)?;
                req["apiVersion"] = json!("authorization.k8s.io/v1");
                req["kind"] = json!(def.kind);
                req["status"] =
                    json!({"allowed": true, "reason": "the sandbox authorizes every request"});
                return Ok(json_response(StatusCode::CREATED, &req, &[]));
            }
            if sub == "token" {
                let sa = core.get(&Target {
                    sub: String::new(),
                    ..t.clone()
                })?;
                let req = if body.is_empty() {
                    json!({})
                } else {
                    decode_body(&body)?
                };
                let now = jiff::Timestamp::now().as_second();
                let r = tokens::issue(&core.signer, &sa, &req, now);
                return Ok(json_response(StatusCode::CREATED, &r, &[]));
            }
            if name.is_some() {
                return Err(ApiError::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                ));
            }
            let opts = write_opts(q, headers)?;
            let v = decode_body(&body)?;
            let w = core.create(&t, v, Some(&body), &opts)?;
            Ok(json_response(
                StatusCode::CREATED,
                &out(&w.obj),
                &w.warnings,
            ))
        }
        "update" => {
            let opts = write_opts(q, headers)?;
            let v = decode_body(&body)?;
            let t = if sub == "finalize" {
                Target {
                    sub: String::new(),
                    ..t
                }
            } else {
                t
            };
            let w = core.update(&t, v, Some(&body), &opts)?;
            Ok(json_response(StatusCode::OK, &out(&w.obj), &w.warnings))
        }
        "patch" => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            let ptype = PatchType::from_content_type(ct).ok_or_else(|| {
                ApiError::unsupported_media(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"
                ))
            })?;
            let opts = write_opts(q, headers)?;
            let w = core.patch(&t, ptype, &body, &opts)?;
            let code = if w.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_response(code, &out(&w.obj), &w.warnings))
        }
        "delete" => {
            let opts = delete_opts(&def, q, &body)?;
            let o = core.delete(&t, &opts)?;
            Ok(ok(&out(&o)))
        }
        "deletecollection" => {
            let opts = delete_opts(&def, q, &body)?;
            let labels =
                LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))?;
            let fields = field_selector(&def, q)?;
            let keep = |v: &Value| labels.matches(v) && fields.matches(v);
            let nsf = (!t.namespace.is_empty()).then_some(t.namespace.as_str());
            let (sg, sr) = def.storage();
            let (objs, rv, _) = core.store.list(sg, sr, nsf, None, None, &keep);
            let mut items = Vec::new();
            for o in objs {
                let tt = Target {
                    namespace: o
                        .pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    name: o
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    ..t.clone()
                };
                if let Ok(d) = core.delete(&tt, &opts) {
                    items.push(out(&d));
                }
            }
            Ok(ok(
                &json!({"kind": def.list_kind, "apiVersion": def.api_version(version), "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
            ))
        }
        _ => Err(not_found_path()),
    }
}

fn is_true(v: Option<&String>) -> bool {
    v.is_some_and(|s| s == "true" || s == "1")
}

fn delete_opts(
    def: &crate::resources::ResourceDef,
    q: &Query,
    body: &[u8],
) -> ApiResult<DeleteOpts> {
    let b: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    let policy = q.get("propagationPolicy").cloned().or_else(|| {
        b.get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let orphan = q
        .get("orphanDependents")
        .map(|s| s == "true")
        .or_else(|| b.get("orphanDependents").and_then(Value::as_bool));
    let propagation = match (policy.as_deref(), orphan) {
        (Some("Background"), _) => Some(Propagation::Background),
        (Some("Foreground"), _) => Some(Propagation::Foreground),
        (Some("Orphan"), _) | (None, Some(true)) => Some(Propagation::Orphan),
        (Some(other), _) => {
            return Err(ApiError::bad_request(format!(
                "invalid propagationPolicy {other:?}"
            )));
        }
        (None, _) if def.group == "batch" && def.kind == "Job" => Some(Propagation::Orphan),
        (None, _) => None,
    };
    let dry_run = q.get("dryRun").is_some_and(|d| d == "All")
        || b.get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == "All"));
    Ok(DeleteOpts {
        propagation,
        uid: b
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        resource_version: b
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
        dry_run,
    })
}

/// The request's field selector, in stored terms (events.k8s.io/v1 field names map to the
/// stored core/v1 Event fields).
fn field_selector(def: &ResourceDef, q: &Query) -> ApiResult<FieldSelector> {
    let raw = q.get("fieldSelector").map(String::as_str).unwrap_or("");
    let mut fs = FieldSelector::parse(raw)?;
    if def.is_events_v1() {
        fs = fs.map_paths(crate::events::core_field_path);
    }
    Ok(fs)
}

fn watch_params(q: &Query, how: Render, def: &ResourceDef) -> ApiResult<WatchParams> {
    let since = match q.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))?,
        ),
    };
    let send_initial_events = is_true(q.get("sendInitialEvents"));
    Ok(WatchParams {
        since: if send_initial_events { None } else { since },
        timeout: q
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .filter(|t| *t > 0)
            .map(Duration::from_secs),
        bookmarks: is_true(q.get("allowWatchBookmarks")),
        send_initial_events,
        labels: LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))?,
        fields: field_selector(def, q)?,
        render: how,
        bookmark_every: Duration::from_secs(2),
    })
}

fn list(core: &Core, t: &Target, q: &Query, how: Render) -> ApiResult<Response> {
    let def = &t.def;
    let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))?;
    let fields = field_selector(&t.def, q)?;
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let cont: Option<Continue> = match q.get("continue").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(
            B64.decode(c)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(|| {
                    ApiError::bad_request("continue key is not valid: illegal base64 data")
                })?,
        ),
    };
    let keep = |v: &Value| labels.matches(v) && fields.matches(v);
    let nsf = (!t.namespace.is_empty()).then_some(t.namespace.as_str());
    let after = cont.as_ref().map(|c| (c.ns.clone(), c.name.clone()));
    let (sg, sr) = def.storage();
    let (objs, rv, more) = core.store.list(sg, sr, nsf, after.as_ref(), limit, &keep);
    let rv = cont.as_ref().map(|c| c.rv).unwrap_or(rv);
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if more && let Some(last) = objs.last() {
        let c = Continue {
            rv,
            ns: last
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            name: last
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        };
        meta["continue"] = json!(B64.encode(serde_json::to_vec(&c).unwrap_or_default()));
    }
    if how == Render::Table {
        let refs: Vec<&Value> = objs.iter().map(|o| o.as_ref()).collect();
        let mut tbl = crate::table::table(def, &t.version, &refs, &rv.to_string());
        tbl["metadata"] = meta;
        return Ok(ok(&tbl));
    }
    let (kind, api_version) = match how {
        Render::Table => unreachable!("answered above"),
        Render::Metadata => (
            "PartialObjectMetadataList".to_string(),
            "meta.k8s.io/v1".to_string(),
        ),
        Render::Full => (def.list_kind.clone(), def.api_version(&t.version)),
    };
    // Serialize straight from the stored objects so a 100k-item list is not copied first.
    let mut s = format!(
        "{{\"kind\":{},\"apiVersion\":{},\"metadata\":{},\"items\":[",
        json!(kind),
        json!(api_version),
        meta
    );
    let item_api_version = def.api_version(&t.version);
    for (i, o) in objs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let as_stored = how == Render::Full
            && o.get("apiVersion").and_then(Value::as_str) == Some(item_api_version.as_str());
        if as_stored {
            s.push_str(&o.to_string());
        } else {
            s.push_str(&render(o, def, &t.version, how).to_string());
        }
    }
    s.push_str("]}");
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(s),
    )
        .into_response())
}
