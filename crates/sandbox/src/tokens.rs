//! ServiceAccount tokens (TokenRequest) and their review (TokenReview), HS256-signed.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use rand::Rng;
use serde_json::{Value, json};
use sha2::Sha256;

pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

pub struct Signer {
    key: [u8; 32],
}

impl Default for Signer {
    fn default() -> Self {
        Self::new()
    }
}

impl Signer {
    pub fn new() -> Self {
        Self {
            key: rand::rng().random(),
        }
    }

    fn mac(&self, data: &[u8]) -> Vec<u8> {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts any key length");
        m.update(data);
        m.finalize().into_bytes().to_vec()
    }

    pub fn sign(&self, claims: &Value) -> String {
        let header = B64.encode(json!({"alg": "HS256", "typ": "JWT"}).to_string());
        let payload = B64.encode(claims.to_string());
        let sig = B64.encode(self.mac(format!("{header}.{payload}").as_bytes()));
        format!("{header}.{payload}.{sig}")
    }

    /// The claims of a token this signer issued, if the signature holds and it is in date.
    pub fn verify(&self, token: &str, now: i64) -> Result<Value, String> {
        let parts: Vec<&str> = token.split('.').collect();
        if parts.len() != 3 {
            return Err("token is malformed".into());
        }
        let sig = B64
            .decode(parts[2])
            .map_err(|_| "token signature is malformed")?;
        let mut m = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts any key length");
        m.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        m.verify_slice(&sig)
            .map_err(|_| "invalid bearer token, token signature is invalid")?;
        let claims: Value = serde_json::from_slice(
            &B64.decode(parts[1])
                .map_err(|_| "token payload is malformed")?,
        )
        .map_err(|_| "token payload is malformed")?;
        if claims
            .get("exp")
            .and_then(Value::as_i64)
            .is_some_and(|e| e < now)
        {
            return Err("invalid bearer token, token has expired".into());
        }
        if claims
            .get("nbf")
            .and_then(Value::as_i64)
            .is_some_and(|n| n > now + 60)
        {
            return Err("invalid bearer token, token not yet valid".into());
        }
        Ok(claims)
    }
}

/// The TokenRequest response for a service account.
pub fn issue(signer: &Signer, sa: &Value, request: &Value, now: i64) -> Value {
    let ns = sa
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = sa
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let uid = sa
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let audiences: Vec<Value> = request
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .cloned()
        .unwrap_or_else(|| vec![json!(ISSUER)]);
    let ttl = request
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600)
        .max(600);
    let exp = now + ttl;
    let claims = json!({
        "iss": ISSUER,
        "sub": format!("system:serviceaccount:{ns}:{name}"),
        "aud": audiences,
        "exp": exp,
        "iat": now,
        "nbf": now,
        "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": name, "uid": uid}},
    });
    let token = signer.sign(&claims);
    let expiry = jiff::Timestamp::from_second(exp)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
        "spec": {"audiences": audiences, "expirationSeconds": ttl, "boundObjectRef": request.pointer("/spec/boundObjectRef").cloned()},
        "status": {"token": token, "expirationTimestamp": expiry},
    })
}

/// The TokenReview response for a review request.
pub fn review(
    signer: &Signer,
    request: &Value,
    sa_uid_now: impl Fn(&str, &str) -> Option<String>,
    now: i64,
) -> Value {
    let token = request
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let wanted: Vec<String> = request
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let result = signer.verify(token, now).and_then(|claims| {
        let auds: Vec<String> = match claims.get("aud") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        let granted: Vec<String> = if wanted.is_empty() {
            auds.clone()
        } else {
            wanted
                .iter()
                .filter(|w| auds.contains(w))
                .cloned()
                .collect()
        };
        if granted.is_empty() {
            return Err("token audiences do not match the requested audiences".to_string());
        }
        let ns = claims
            .pointer("/kubernetes.io/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let name = claims
            .pointer("/kubernetes.io/serviceaccount/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let uid = claims
            .pointer("/kubernetes.io/serviceaccount/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        // A token outlives neither its service account nor a recreated one.
        match sa_uid_now(&ns, &name) {
            Some(u) if u == uid => {}
            _ => return Err(format!("service account {ns}/{name} has been deleted")),
        }
        Ok((ns, name, uid, granted))
    });
    let status = match result {
        Ok((ns, name, uid, granted)) => json!({
            "authenticated": true,
            "user": {
                "username": format!("system:serviceaccount:{ns}:{name}"),
                "uid": uid,
                "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
                "extra": {},
            },
            "audiences": granted,
        }),
        Err(e) => json!({"authenticated": false, "user": {}, "error": e}),
    };
    json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": request.get("spec").cloned().unwrap_or(json!({})),
        "status": status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_token_reviews_as_the_service_account() {
        let s = Signer::new();
        let sa = json!({"metadata": {"name": "vault", "namespace": "ns", "uid": "u1"}});
        let tr = issue(&s, &sa, &json!({"spec": {"audiences": ["bao"]}}), 1000);
        let token = tr["status"]["token"].as_str().unwrap();
        let r = review(
            &s,
            &json!({"spec": {"token": token}}),
            |_, _| Some("u1".into()),
            1001,
        );
        assert_eq!(r["status"]["authenticated"], json!(true));
        assert_eq!(
            r["status"]["user"]["username"],
            json!("system:serviceaccount:ns:vault")
        );
        assert_eq!(r["status"]["audiences"], json!(["bao"]));
        let bad = review(
            &s,
            &json!({"spec": {"token": format!("{token}x")}}),
            |_, _| Some("u1".into()),
            1001,
        );
        assert_eq!(bad["status"]["authenticated"], json!(false));
        let wrong_aud = review(
            &s,
            &json!({"spec": {"token": token, "audiences": ["other"]}}),
            |_, _| Some("u1".into()),
            1001,
        );
        assert_eq!(wrong_aud["status"]["authenticated"], json!(false));
    }
}
