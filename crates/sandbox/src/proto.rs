//! A small decoder for Kubernetes protobuf request bodies, for the kinds kubectl's
//! imperative commands send that way (`kubectl create secret|configmap|namespace|
//! serviceaccount|token`). Bodies are turned into the equivalent JSON; other kinds are
//! refused with 415 by the caller.

use base64::Engine;
use serde_json::{Map, Value, json};

/// `k8s\0`: the envelope magic before a `runtime.Unknown`.
const MAGIC: &[u8] = b"k8s\x00";

#[derive(Clone, Copy)]
enum F {
    Str,
    Int,
    Bool,
    Msg(&'static [(u64, &'static str, F)]),
    RepStr,
    RepMsg(&'static [(u64, &'static str, F)]),
    MapStr,
    MapBytes,
}

const OWNER_REF: &[(u64, &str, F)] = &[
    (1, "kind", F::Str),
    (3, "name", F::Str),
    (4, "uid", F::Str),
    (5, "apiVersion", F::Str),
    (6, "controller", F::Bool),
    (7, "blockOwnerDeletion", F::Bool),
];
const OBJECT_META: &[(u64, &str, F)] = &[
    (1, "name", F::Str),
    (2, "generateName", F::Str),
    (3, "namespace", F::Str),
    (5, "uid", F::Str),
    (6, "resourceVersion", F::Str),
    (11, "labels", F::MapStr),
    (12, "annotations", F::MapStr),
    (13, "ownerReferences", F::RepMsg(OWNER_REF)),
    (14, "finalizers", F::RepStr),
];
const SECRET: &[(u64, &str, F)] = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "data", F::MapBytes),
    (3, "type", F::Str),
    (4, "stringData", F::MapStr),
    (5, "immutable", F::Bool),
];
const CONFIG_MAP: &[(u64, &str, F)] = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "data", F::MapStr),
    (3, "binaryData", F::MapBytes),
    (4, "immutable", F::Bool),
];
const NAMESPACE: &[(u64, &str, F)] = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (2, "spec", F::Msg(&[(1, "finalizers", F::RepStr)])),
];
const LOCAL_REF: &[(u64, &str, F)] = &[(1, "name", F::Str)];
const SERVICE_ACCOUNT: &[(u64, &str, F)] = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (3, "imagePullSecrets", F::RepMsg(LOCAL_REF)),
    (4, "automountServiceAccountToken", F::Bool),
];
const BOUND_REF: &[(u64, &str, F)] = &[
    (1, "kind", F::Str),
    (2, "apiVersion", F::Str),
    (3, "name", F::Str),
    (4, "uid", F::Str),
];
const TOKEN_REQUEST: &[(u64, &str, F)] = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (
        2,
        "spec",
        F::Msg(&[
            (1, "audiences", F::RepStr),
            (3, "boundObjectRef", F::Msg(BOUND_REF)),
            (4, "expirationSeconds", F::Int),
        ]),
    ),
];

const RESOURCE_ATTRIBUTES: &[(u64, &str, F)] = &[
    (1, "namespace", F::Str),
    (2, "verb", F::Str),
    (3, "group", F::Str),
    (4, "version", F::Str),
    (5, "resource", F::Str),
    (6, "subresource", F::Str),
    (7, "name", F::Str),
];
const NON_RESOURCE_ATTRIBUTES: &[(u64, &str, F)] = &[(1, "path", F::Str), (2, "verb", F::Str)];
const SELF_SUBJECT_ACCESS_REVIEW: &[(u64, &str, F)] = &[
    (1, "metadata", F::Msg(OBJECT_META)),
    (
        2,
        "spec",
        F::Msg(&[
            (1, "resourceAttributes", F::Msg(RESOURCE_ATTRIBUTES)),
            (2, "nonResourceAttributes", F::Msg(NON_RESOURCE_ATTRIBUTES)),
        ]),
    ),
];

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    /// (field number, wire type, payload for length-delimited, varint value otherwise)
    fn field(&mut self) -> Option<(u64, Result<&'a [u8], u64>)> {
        let tag = self.varint()?;
        let (num, wt) = (tag >> 3, tag & 7);
        let payload = match wt {
            0 => Err(self.varint()?),
            2 => Ok(self.bytes()?),
            1 => {
                self.pos += 8;
                Err(0)
            }
            5 => {
                self.pos += 4;
                Err(0)
            }
            _ => return None,
        };
        Some((num, payload))
    }

    fn done(&self) -> bool {
        self.pos >= self.b.len()
    }
}

fn map_entry(b: &[u8], bytes_value: bool) -> Option<(String, Value)> {
    let mut r = Reader { b, pos: 0 };
    let (mut k, mut v) = (String::new(), Value::String(String::new()));
    while !r.done() {
        match r.field()? {
            (1, Ok(x)) => k = String::from_utf8(x.to_vec()).ok()?,
            (2, Ok(x)) if bytes_value => {
                v = json!(base64::engine::general_purpose::STANDARD.encode(x))
            }
            (2, Ok(x)) => v = json!(String::from_utf8(x.to_vec()).ok()?),
            _ => {}
        }
    }
    Some((k, v))
}

fn message(b: &[u8], schema: &[(u64, &str, F)]) -> Option<Value> {
    let mut out = Map::new();
    let mut r = Reader { b, pos: 0 };
    while !r.done() {
        let (num, payload) = r.field()?;
        let Some((_, name, kind)) = schema.iter().find(|(n, _, _)| *n == num) else {
            continue;
        };
        let name = name.to_string();
        match (kind, payload) {
            (F::Str, Ok(x)) => {
                out.insert(name, json!(String::from_utf8(x.to_vec()).ok()?));
            }
            (F::Int, Err(v)) => {
                out.insert(name, json!(v as i64));
            }
            (F::Bool, Err(v)) => {
                out.insert(name, json!(v != 0));
            }
            (F::Msg(s), Ok(x)) => {
                out.insert(name, message(x, s)?);
            }
            (F::RepStr, Ok(x)) => {
                let e = out.entry(name).or_insert_with(|| json!([]));
                e.as_array_mut()?
                    .push(json!(String::from_utf8(x.to_vec()).ok()?));
            }
            (F::RepMsg(s), Ok(x)) => {
                let item = message(x, s)?;
                let e = out.entry(name).or_insert_with(|| json!([]));
                e.as_array_mut()?.push(item);
            }
            (F::MapStr | F::MapBytes, Ok(x)) => {
                let (k, v) = map_entry(x, matches!(kind, F::MapBytes))?;
                let e = out.entry(name).or_insert_with(|| json!({}));
                e.as_object_mut()?.insert(k, v);
            }
            _ => return None,
        }
    }
    Some(Value::Object(out))
}

/// The JSON form of a protobuf-encoded object, or `Err` naming what is unsupported.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let unknown = body
        .strip_prefix(MAGIC)
        .ok_or("not a Kubernetes protobuf envelope")?;
    let mut r = Reader { b: unknown, pos: 0 };
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    while !r.done() {
        match r.field().ok_or("malformed protobuf envelope")? {
            (1, Ok(tm)) => {
                let m = message(tm, &[(1, "apiVersion", F::Str), (2, "kind", F::Str)])
                    .ok_or("malformed type meta")?;
                api_version = m["apiVersion"].as_str().unwrap_or_default().to_string();
                kind = m["kind"].as_str().unwrap_or_default().to_string();
            }
            (2, Ok(x)) => raw = x,
            _ => {}
        }
    }
    let schema = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Secret") => SECRET,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        ("authentication.k8s.io/v1", "TokenRequest") => TOKEN_REQUEST,
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => SELF_SUBJECT_ACCESS_REVIEW,
        _ => {
            return Err(format!(
                "protobuf bodies of {api_version} {kind} are not supported"
            ));
        }
    };
    let mut v = message(raw, schema).ok_or_else(|| format!("malformed protobuf {kind}"))?;
    v["apiVersion"] = json!(api_version);
    v["kind"] = json!(kind);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![((num << 3) | 2) as u8, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_a_secret_envelope() {
        let meta = [
            field(1, b"s1"),
            field(11, &[field(1, b"app"), field(2, b"web")].concat()),
        ]
        .concat();
        let secret = [
            field(1, &meta),
            field(2, &[field(1, b"k"), field(2, b"\x00\x01")].concat()),
            field(3, b"Opaque"),
        ]
        .concat();
        let tm = [field(1, b"v1"), field(2, b"Secret")].concat();
        let body = [MAGIC.to_vec(), field(1, &tm), field(2, &secret)].concat();
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                   "metadata": {"name": "s1", "labels": {"app": "web"}}, "data": {"k": "AAE="}})
        );
    }
}
