use std::time::Duration;

use clap::Parser;
use secretsync_operator::telemetry::{self, LogFormat};
use secretsync_operator::{Config, RunOptions};

/// secretsync: secrets from Vault/OpenBao, AWS Secrets Manager, … as immutable,
/// version-suffixed Kubernetes Secrets that workloads follow.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Kubeconfig context to use (default: the current one; in a pod, the service account).
    #[arg(long, env = "SECRETSYNC_CONTEXT")]
    context: Option<String>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, short = 'n', env = "SECRETSYNC_NAMESPACE")]
    namespace: Option<String>,
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
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    telemetry::init(args.log_format, &args.log_level);

    let kube_config = match &args.context {
        Some(context) => {
            let options = kube::config::KubeConfigOptions {
                context: Some(context.clone()),
                ..Default::default()
            };
            kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| e.to_string())
        }
        None => kube::Config::infer().await.map_err(|e| e.to_string()),
    };
    let client =
        match kube_config.and_then(|c| kube::Client::try_from(c).map_err(|e| e.to_string())) {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "cannot configure a Kubernetes client");
                return std::process::ExitCode::FAILURE;
            }
        };
    let config = Config {
        instance: std::env::var("POD_NAME").ok(),
        write_timeout: Duration::from_secs(args.write_timeout_seconds),
        ..Config::default()
    };
    let options = RunOptions {
        namespace: args.namespace,
        concurrency: args.concurrency,
    };
    tracing::info!(namespace = ?options.namespace, concurrency = options.concurrency, "secretsync operator starting");
    let metrics = std::sync::Arc::new(secretsync_operator::metrics::Metrics::default());
    match secretsync_operator::run(client, config, options, metrics, shutdown_signal()).await {
        Ok(()) => {
            tracing::info!("stopped");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            // Exit so that Kubernetes restarts the pod with fresh watches.
            tracing::error!(error = %e, "stopping");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
