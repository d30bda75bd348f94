//! A TLS HTTP/1 server on 127.0.0.1 for test doubles: a throwaway CA from [`crate::pki`]
//! signs its certificate (a store's `caBundle` is [`TlsServer::ca_bundle`]), every request
//! goes to one synchronous handler with its body read, and it can go down (the listener
//! and every open connection close, so connections are refused) and come back on the same
//! port.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::pki::TestPki;
use crate::serving::Serving;

/// What a double answers a request with.
pub type Handler = Arc<dyn Fn(Request<Bytes>) -> Response<Full<Bytes>> + Send + Sync>;

/// A running server, stopped when dropped.
pub struct TlsServer {
    serving: Serving,
    acceptor: TlsAcceptor,
    handler: Handler,
    pki: TestPki,
}

impl TlsServer {
    /// Serves `handler` on a free port. `None` when `openssl` (for the throwaway CA) is
    /// missing and SECRETSYNC_SKIP_TOOLS is set.
    pub async fn start(handler: Handler) -> Option<TlsServer> {
        let pki = TestPki::generate()?;
        let (serving, listener) = Serving::bind().await;
        let server = TlsServer {
            serving,
            acceptor: acceptor(&pki),
            handler,
            pki,
        };
        server.serve(listener);
        Some(server)
    }

    fn serve(&self, listener: TcpListener) {
        let acceptor = self.acceptor.clone();
        let handler = self.handler.clone();
        self.serving.run(async move {
            // Connections live in this task's set: aborting it closes them all.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let handler = handler.clone();
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let handler = handler.clone();
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            Ok::<_, std::convert::Infallible>(handler(Request::from_parts(
                                parts, body,
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.serving.addr())
    }

    /// The CA that signed the server's certificate, base64 PEM (a store's `caBundle`).
    pub fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.pki.ca_pem())
    }

    /// A CA that did not sign it, base64 PEM.
    pub fn wrong_ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.pki.wrong_ca_pem())
    }

    /// Goes down: connections are refused until [`TlsServer::come_back`].
    pub fn go_down(&self) {
        self.serving.go_down();
    }

    /// Comes back on the same port.
    pub async fn come_back(&self) {
        self.serve(self.serving.rebind().await);
    }
}

/// What a REST double keeps between requests: its state, and the counts tests read.
pub(crate) struct Counted<S> {
    pub(crate) state: Mutex<S>,
    /// Values served (a batch counts each value).
    pub(crate) reads: AtomicU64,
    /// Successful logins.
    pub(crate) logins: AtomicU64,
}

/// A REST double on a [`TlsServer`]: its state (`S`), what every double offers tests, and
/// each double's own controls in an `impl Double<its State>`.
pub struct Double<S> {
    shared: Arc<Counted<S>>,
    server: TlsServer,
}

impl<S: Send + 'static> Double<S> {
    /// Serves `handle` over `state`. `None` when the throwaway CA cannot be made (no
    /// `openssl` and SECRETSYNC_SKIP_TOOLS set).
    pub(crate) async fn serve(
        state: S,
        handle: fn(&Counted<S>, Request<Bytes>) -> Response<Full<Bytes>>,
    ) -> Option<Self> {
        let shared = Arc::new(Counted {
            state: Mutex::new(state),
            reads: AtomicU64::new(0),
            logins: AtomicU64::new(0),
        });
        let handler_shared = shared.clone();
        let handler: Handler = Arc::new(move |request| handle(&handler_shared, request));
        let server = TlsServer::start(handler).await?;
        Some(Double { shared, server })
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, S> {
        self.shared.state.lock().unwrap()
    }

    /// `https://127.0.0.1:PORT`: the store's URL.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The store's `caBundle`.
    pub fn ca_bundle(&self) -> String {
        self.server.ca_bundle()
    }

    /// A CA bundle that did not sign the server's certificate.
    pub fn wrong_ca_bundle(&self) -> String {
        self.server.wrong_ca_bundle()
    }

    /// Connections refused until [`Double::come_back`], with the state kept.
    pub fn go_down(&self) {
        self.server.go_down();
    }

    pub async fn come_back(&self) {
        self.server.come_back().await;
    }

    /// Values served so far.
    pub fn reads(&self) -> u64 {
        self.shared.reads.load(Ordering::SeqCst)
    }

    /// Successful logins so far.
    pub fn logins(&self) -> u64 {
        self.shared.logins.load(Ordering::SeqCst)
    }
}

/// A TLS acceptor presenting the certificate `pki` issued for 127.0.0.1.
pub(crate) fn acceptor(pki: &TestPki) -> TlsAcceptor {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.path("server.pem"))
        .expect("read server.pem")
        .collect::<Result<_, _>>()
        .expect("parse server.pem");
    let key = PrivateKeyDer::from_pem_file(pki.path("server.key")).expect("read server.key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server certificate");
    TlsAcceptor::from(Arc::new(config))
}

/// A response with `status`, `content_type` and `body`.
pub fn respond(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .expect("response")
}
