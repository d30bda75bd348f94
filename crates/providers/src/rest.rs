//! The HTTP client of the backends spoken to over plain REST with reqwest (Conjur): one
//! client per store on rustls with ring (kube's provider), `caBundle` replacing the system
//! roots, short timeouts (the operator has its own backoff, and a dead server must turn into
//! `Unavailable` within seconds), and the mapping of transport failures and HTTP statuses
//! onto [`ProviderError`].

use std::time::Duration;

use secrecy::ExposeSecret as _;

use crate::error::{ProviderError, Result, cut, is_tls_trust_failure};

/// Time to open a TCP (and TLS) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for one request, answer included.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A client for `url` (`http://` or `https://`), trusting exactly `ca_bundle` (base64 PEM)
/// when given.
pub(crate) fn client(url: &str, ca_bundle: Option<&str>) -> Result<reqwest::Client> {
    crate::tls::install_crypto_provider();
    let https = url.starts_with("https://");
    if !https && !url.starts_with("http://") {
        return Err(ProviderError::InvalidConfig(format!(
            "url {url:?} must start with http:// or https://"
        )));
    }
    let mut http = reqwest::Client::builder()
        .tls_backend_rustls()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT);
    let roots = ca_bundle.map(crate::tls::parse_ca_bundle).transpose()?;
    http = match (https, roots) {
        (true, Some(roots)) => http.tls_certs_only(roots),
        (true, None) => http,
        (false, _) => http.tls_certs_only(Vec::new()),
    };
    http.build().map_err(|e| {
        ProviderError::InvalidConfig(format!("cannot set up TLS for {url} (caBundle?): {e}"))
    })
}

/// The error for a request that got no answer while `doing` something at `server`.
pub(crate) fn transport(error: &reqwest::Error, server: &str, doing: &str) -> ProviderError {
    if error.is_timeout() {
        return ProviderError::Unavailable(format!(
            "{server} did not answer {doing} within {}s",
            REQUEST_TIMEOUT.as_secs()
        ));
    }
    let mut cause = error.to_string();
    let mut next = std::error::Error::source(error);
    while let Some(e) = next {
        cause = e.to_string();
        next = e.source();
    }
    let cause = cut(&cause);
    if is_tls_trust_failure(&cause) {
        ProviderError::TlsFailed(format!(
            "{server} {doing}: {cause}; set caBundle to the PEM of the CA that signed the \
             server's certificate"
        ))
    } else {
        ProviderError::Unavailable(format!("cannot reach {server} {doing}: {cause}"))
    }
}

/// The error for an answer with the failing `status` while `doing` something; `key` names
/// the remote key a 404 is about. The body is never quoted: a backend may echo what it was
/// sent.
pub(crate) fn status(status: u16, server: &str, doing: &str, key: &str) -> ProviderError {
    match status {
        401 => ProviderError::AuthFailed(format!("{server} refused the login {doing} (401)")),
        403 => ProviderError::PermissionDenied(format!(
            "{server} denied {doing} (403): the identity lacks the privilege"
        )),
        404 => ProviderError::NotFound {
            key: key.to_owned(),
        },
        408 | 429 | 500..=599 => {
            ProviderError::Unavailable(format!("{server} failed {doing} ({status})"))
        }
        _ => ProviderError::InvalidConfig(format!("{server} refused {doing} ({status})")),
    }
}

/// An access token kept between requests: the backend's login is asked again once the
/// token is `reuse` old, or when a request says it is no longer good.
pub(crate) struct KeptToken {
    token: tokio::sync::Mutex<Option<(crate::value::SecretString, std::time::Instant)>>,
    reuse: Duration,
}

impl KeptToken {
    pub(crate) fn new(reuse: Duration) -> Self {
        Self {
            token: tokio::sync::Mutex::new(None),
            reuse,
        }
    }

    /// The kept token, or a new one from `log_in` (also when the kept one is `refused`).
    /// Concurrent callers wait for one login, and callers refused the same token share one
    /// new login: a token another caller already replaced is not replaced again.
    pub(crate) async fn get<F>(
        &self,
        refused: Option<&crate::value::SecretString>,
        log_in: F,
    ) -> Result<crate::value::SecretString>
    where
        F: std::future::Future<Output = Result<crate::value::SecretString>>,
    {
        let mut kept = self.token.lock().await;
        if let Some((token, at)) = kept.as_ref()
            && at.elapsed() < self.reuse
            && refused.is_none_or(|r| r.expose_secret() != token.expose_secret())
        {
            return Ok(token.clone());
        }
        let started = std::time::Instant::now();
        let token = log_in.await?;
        *kept = Some((token.clone(), started));
        Ok(token)
    }
}
