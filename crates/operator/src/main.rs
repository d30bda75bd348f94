use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use secretsync_operator::hash_key::KeySecret;
use secretsync_operator::process::leader::{Elector, LeaseConfig, default_identity};
use secretsync_operator::process::metrics::Metrics;
use secretsync_operator::process::server::{self, Readiness};
use secretsync_operator::process::supervise::Tasks;
use secretsync_operator::process::telemetry::{self, LogFormat};
use secretsync_operator::{Config, RunOptions};
use tracing::{error, info, warn};

/// secretsync: secrets from Vault/OpenBao, AWS Secrets Manager, … as immutable,
/// version-suffixed Kubernetes Secrets that workloads follow.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Kubeconfig context to use (default: the current one; in a pod, the service account).
    #[arg(long, env = "SECRETSYNC_CONTEXT")]
    context: Option<String>,
    /// Watch only this namespace; repeat for several (default: all namespaces). In the
    /// environment variable, separate namespaces with commas.
    #[arg(long, short = 'n', env = "SECRETSYNC_NAMESPACE", value_delimiter = ',')]
    namespace: Vec<String>,
    /// Reconcile only SecretSyncs matching this label selector (e.g. `shard=a`).
    #[arg(long, env = "SECRETSYNC_SELECTOR")]
    selector: Option<String>,
    /// SecretSyncs reconciled concurrently.
    #[arg(long, env = "SECRETSYNC_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Log format.
    #[arg(long, env = "SECRETSYNC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log level or filter directives (RUST_LOG overrides).
    #[arg(long, env = "SECRETSYNC_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Timeout for each Kubernetes API write, in seconds.
    #[arg(long, env = "SECRETSYNC_WRITE_TIMEOUT", default_value_t = 10)]
    write_timeout_seconds: u64,
    /// Cap on the retry delay of a failing SecretSync or store, in seconds: after a backend
    /// outage, everything has retried within this long of its end.
    #[arg(long, env = "SECRETSYNC_MAX_BACKOFF", default_value_t = 900)]
    max_backoff_seconds: u64,
    /// Reconcile only while holding a coordination.k8s.io/v1 Lease, so replicas can stand by.
    #[arg(long, env = "SECRETSYNC_LEADER_ELECT")]
    leader_elect: bool,
    /// Name of the Lease. Deployments that shard a cluster need one each.
    #[arg(
        long,
        env = "SECRETSYNC_LEASE_NAME",
        default_value = "secretsync-operator"
    )]
    lease_name: String,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else `default`).
    #[arg(long, env = "SECRETSYNC_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// How long the Lease stays ours without renewal, in whole seconds.
    #[arg(long, env = "SECRETSYNC_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
    /// The leader steps down (and exits) if it could not renew for this long, in seconds.
    #[arg(
        long,
        env = "SECRETSYNC_LEASE_RENEW_DEADLINE_SECONDS",
        default_value_t = 10.0
    )]
    lease_renew_deadline_seconds: f64,
    /// Time between renewals and between attempts to take the Lease, in seconds.
    #[arg(
        long,
        env = "SECRETSYNC_LEASE_RETRY_PERIOD_SECONDS",
        default_value_t = 2.0
    )]
    lease_retry_period_seconds: f64,
    /// Where to serve /metrics; empty or `0` turns it off.
    #[arg(long, env = "SECRETSYNC_METRICS_BIND_ADDRESS", default_value = "127.0.0.1:9090", value_parser = optional_address)]
    metrics_bind_address: OptionalAddress,
    /// Where to serve /healthz and /readyz; empty or `0` turns them off.
    #[arg(long, env = "SECRETSYNC_HEALTH_BIND_ADDRESS", default_value = "127.0.0.1:8081", value_parser = optional_address)]
    health_bind_address: OptionalAddress,
    /// The Secret holding the content-hash key, created (32 random bytes) if absent. Every
    /// replica must name the same one.
    #[arg(
        long,
        env = "SECRETSYNC_HASH_KEY_SECRET",
        default_value = "secretsync-hash-key"
    )]
    hash_key_secret: String,
    /// Namespace of the content-hash key Secret (default: $POD_NAMESPACE, else `default`).
    #[arg(long, env = "SECRETSYNC_HASH_KEY_NAMESPACE")]
    hash_key_namespace: Option<String>,
    /// On SIGTERM, how long reconciles in flight may take to finish, in seconds.
    #[arg(long, env = "SECRETSYNC_SHUTDOWN_GRACE_SECONDS", default_value_t = 20)]
    shutdown_grace_seconds: u64,
    /// Where OpenBao's (or Vault's) `socket` audit device writes (e.g. `0.0.0.0:9443`), for
    /// stores with `events.source: OpenBaoAudit`: instant sync. Off when unset. Bound once
    /// leading.
    #[arg(long, env = "SECRETSYNC_OPENBAO_AUDIT_LISTEN")]
    openbao_audit_listen: Option<SocketAddr>,
    /// Where the event listener serves (e.g. `0.0.0.0:9444`): signed webhooks, Pub/Sub
    /// pushes and Event Grid deliveries for stores with `events.source: Webhook`,
    /// `GcpPubSub` or `AzureEventGrid`. Off when unset. Bound once leading.
    #[arg(long, env = "SECRETSYNC_EVENTS_LISTEN")]
    events_listen: Option<SocketAddr>,
}

/// Binds a listener the flags ask for; a port that cannot be bound stops the start.
async fn bind(
    addr: Option<SocketAddr>,
    what: &str,
) -> Result<Option<tokio::net::TcpListener>, String> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("{what}: cannot listen on {addr}: {e}"))?;
    info!(%addr, "{what} listening");
    Ok(Some(listener))
}

#[derive(Clone, Copy, Debug)]
struct OptionalAddress(Option<SocketAddr>);

fn optional_address(text: &str) -> Result<OptionalAddress, String> {
    match text.trim() {
        "" | "0" => Ok(OptionalAddress(None)),
        addr => addr
            .parse()
            .map(|a| OptionalAddress(Some(a)))
            .map_err(|e| format!("{addr:?}: {e}")),
    }
}

type Signal = Shared<BoxFuture<'static, ()>>;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    telemetry::init(args.log_format, &args.log_level);
    match operate(args).await {
        Ok(()) => {
            info!("stopped");
            ExitCode::SUCCESS
        }
        Err(why) => {
            error!(error = %why, "exiting");
            ExitCode::FAILURE
        }
    }
}

async fn operate(args: Args) -> Result<(), String> {
    let lease_config = args.leader_elect.then(|| lease_config(&args)).transpose()?;
    let client = kube_client(args.context.as_deref()).await?;
    let shutdown: Signal = shutdown_signal()?.boxed().shared();
    let metrics = Arc::new(Metrics::new());
    let caches_synced = Arc::new(AtomicBool::new(false));
    let leading = lease_config
        .as_ref()
        .map(|_| Arc::new(AtomicBool::new(false)));

    // Endpoints first, so probes answer while we wait for the Lease or the caches.
    let mut servers = Tasks::default();
    let readiness = Readiness {
        caches_synced: caches_synced.clone(),
        leading: leading.clone(),
    };
    let endpoints = [
        (
            "metrics server",
            args.metrics_bind_address.0,
            server::metrics_routes(metrics.clone()),
        ),
        (
            "health server",
            args.health_bind_address.0,
            server::health_routes(readiness),
        ),
    ];
    for (name, addr, routes) in endpoints {
        let Some(addr) = addr else { continue };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("{name}: cannot listen on {addr}: {e}"))?;
        info!(%addr, "{name} listening");
        servers.spawn(name, async move {
            if let Err(e) = server::serve(listener, routes).await {
                error!(error = %e, "{name}");
            }
        });
    }

    let elector = lease_config.map(|c| Elector::new(client.clone(), c));
    let held = match &elector {
        None => None,
        Some(elector) => tokio::select! {
            lease = elector.acquire() => Some(lease),
            () = shutdown.clone() => return Ok(()),
            stopped = servers.first_exit() => return Err(stopped.to_string()),
        },
    };
    if let Some(leading) = &leading {
        leading.store(true, Ordering::Release);
    }
    metrics.set_leader(true);
    // Only the leader listens: a standby would take the audit device's entries and drop them.
    let openbao_audit = bind(args.openbao_audit_listen, "OpenBao audit listener").await?;
    let events_listen = bind(args.events_listen, "event listener").await?;

    let config = Config {
        instance: std::env::var("POD_NAME").ok(),
        write_timeout: Duration::from_secs(args.write_timeout_seconds),
        max_backoff: Duration::from_secs(args.max_backoff_seconds.max(1)),
        hash_key: KeySecret {
            namespace: own_namespace(args.hash_key_namespace.clone()),
            name: args.hash_key_secret.clone(),
        },
        ..Config::default()
    };
    let options = RunOptions {
        namespaces: args.namespace,
        selector: args.selector,
        concurrency: args.concurrency,
        caches_synced,
        openbao_audit,
        events_listen,
    };
    info!(namespaces = ?options.namespaces, selector = ?options.selector, concurrency = options.concurrency, "secretsync operator starting");
    let run = secretsync_operator::run(client, config, options, metrics.clone(), shutdown.clone());
    let lost = async {
        match (&elector, held) {
            (Some(elector), Some(lease)) => elector.hold(lease).await,
            _ => std::future::pending().await,
        }
    };
    let grace = Duration::from_secs(args.shutdown_grace_seconds);
    let overdue = shutdown.clone().then(|()| tokio::time::sleep(grace));
    // The Lease keeps being renewed while reconciles in flight finish.
    let outcome = tokio::select! {
        result = run => result.map_err(|e| e.to_string()),
        lost = lost => {
            // Stop writing at once: someone else may be leading already.
            metrics.set_leader(false);
            return Err(format!("lost leadership: {lost}"));
        }
        () = overdue => Err(format!("reconciles still running {grace:?} after SIGTERM")),
        stopped = servers.first_exit() => Err(stopped.to_string()),
    };
    metrics.set_leader(false);
    if let Some(elector) = &elector {
        // The controller has stopped either way: let a standby take over now rather than
        // after the lease duration.
        let deadline = elector.config().renew_deadline;
        match tokio::time::timeout(deadline, elector.release()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "could not release the Lease; it will expire"),
            Err(_) => warn!("releasing the Lease timed out; it will expire"),
        }
    }
    outcome
}

fn lease_config(args: &Args) -> Result<LeaseConfig, String> {
    let seconds = |s: f64, what: &str| {
        Duration::try_from_secs_f64(s).map_err(|e| format!("--lease-{what}-seconds: {e}"))
    };
    let config = LeaseConfig {
        name: args.lease_name.clone(),
        namespace: own_namespace(args.lease_namespace.clone()),
        identity: default_identity(),
        lease_duration: Duration::from_secs(args.lease_duration_seconds),
        renew_deadline: seconds(args.lease_renew_deadline_seconds, "renew-deadline")?,
        retry_period: seconds(args.lease_retry_period_seconds, "retry-period")?,
    };
    config.validate()?;
    info!(lease = %config.name, namespace = %config.namespace, identity = %config.identity, "leader election on");
    Ok(config)
}

/// `flag`, else the pod's namespace, else `default`.
fn own_namespace(flag: Option<String>) -> String {
    flag.or_else(|| std::env::var("POD_NAMESPACE").ok())
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

async fn kube_client(context: Option<&str>) -> Result<kube::Client, String> {
    let config = match context {
        Some(context) => {
            let options = kube::config::KubeConfigOptions {
                context: Some(context.to_owned()),
                ..Default::default()
            };
            kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| e.to_string())
        }
        None => kube::Config::infer().await.map_err(|e| e.to_string()),
    };
    config
        .and_then(|c| kube::Client::try_from(c).map_err(|e| e.to_string()))
        .map_err(|e| format!("cannot configure a Kubernetes client: {e}"))
}

/// Resolves on SIGTERM (what the kubelet sends) or Ctrl-C. The handlers are installed
/// here, before anything runs, so an early SIGTERM is not lost to the default action.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()> + Send, String> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot install a SIGTERM handler: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        info!("shutting down");
    })
}
