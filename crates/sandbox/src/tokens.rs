//! ServiceAccount tokens (TokenRequest) and their review (TokenReview), ES256-signed with a
//! per-server P-256 key (published at `/openid/v1/jwks`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A self-signed CA certificate (its key was discarded) for clients that insist on a CA
/// even though the sandbox serves plain HTTP, e.g. OpenBao's Kubernetes auth method with
/// `disable_local_ca_jwt=true` requires `kubernetes_ca_cert`.
pub const PLACEHOLDER_CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBjjCCATWgAwIBAgIULArQLsWvR9f7bDyU85oHNor6WdMwCgYIKoZIzj0EAwIw\nHDEaMBgGA1UEAwwRc2FuZGJveC11bnVzZWQtY2EwIBcNMjYxMTIzMDUzMjMxWhgP\nMjEyNjEwMzAwNTMyMzFaMBwxGjAYBgNVBAMMEXNhbmRib3gtdW51c2VkLWNhMFkw\nEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE+U8KqtQwTes6/Dj46/+ktN+uizAHNej3\nejFpjL1wVIjEcSyXJwWU+xiPcEUuvIJtQPh5gS3wZGXuwCib8eW/WqNTMFEwHQYD\nVR0OBBYEFKFSsFh1Gqlyw8qdzS6UjD0Eo242MB8GA1UdIwQYMBaAFKFSsFh1Gqly\nw8qdzS6UjD0Eo242MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIg\nQ0vW287ixhr8nr5DiFE4xGPJeDC7yfrxEFOjN4OybgUCIFMsPB8QYXCaQAqkQGrU\nzpnNBKEpfhQ94n4P11gXSbQo\n-----END CERTIFICATE-----\n";

pub struct Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    kid: String,
}

impl Default for Signer {
    fn default() -> Self {
        Self::new()
    }
}

impl Signer {
    pub fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("P-256 key generation");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("a freshly generated key parses");
        let kid = B64.encode(&Sha256::digest(key.public_key().as_ref())[..16]);
        Self { key, rng, kid }
    }

    pub fn sign(&self, claims: &Value) -> String {
        let header = B64.encode(json!({"alg": "ES256", "typ": "JWT", "kid": self.kid}).to_string());
        let payload = B64.encode(claims.to_string());
        let signing_input = format!("{header}.{payload}");
        let sig = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .expect("ECDSA signing");
        format!("{signing_input}.{}", B64.encode(sig.as_ref()))
    }

    /// The public key as a JWK Set, as kube-apiserver serves at `/openid/v1/jwks`.
    pub fn jwks(&self) -> Value {
        // Uncompressed point: 0x04 || x || y.
        let pk = self.key.public_key().as_ref();
        json!({"keys": [{
            "use": "sig", "kty": "EC", "crv": "P-256", "alg": "ES256", "kid": self.kid,
            "x": B64.encode(&pk[1..33]), "y": B64.encode(&pk[33..65]),
        }]})
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
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref())
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
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

/// `/.well-known/openid-configuration` for the service account issuer.
pub fn openid_configuration(url: &str) -> Value {
    json!({
        "issuer": ISSUER,
        "jwks_uri": format!("{url}/openid/v1/jwks"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    })
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
