//! `secretsync-sim`: simulates kubelets (and, with `--controllers`, the workload
//! controllers) against the cluster in the kubeconfig, until SIGINT/SIGTERM.

use std::time::Duration;

use clap::Parser;
use secretsync_simulator::{Options, apiserver};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(about = "Simulated kubelets and workload controllers for any Kubernetes API server")]
struct Args {
    /// Also run Deployments, ReplicaSets, StatefulSets and DaemonSets (for control planes
    /// without kube-controller-manager).
    #[arg(long, env = "SECRETSYNC_SIM_CONTROLLERS")]
    controllers: bool,
    /// Delay before a startable Pod becomes Ready.
    #[arg(long, default_value_t = 200)]
    ready_delay_ms: u64,
    /// Simulated nodes (Pods per DaemonSet).
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// Nodes are named `<prefix>-<i>`; Pods on other nodes are left alone.
    #[arg(long, default_value = "sim-node")]
    node_prefix: String,
    /// Kubeconfig context (default: the current one).
    #[arg(long)]
    context: Option<String>,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, default_value = "info")]
    log_level: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&args.log_level)?)
        .with_writer(std::io::stderr)
        .init();
    let config = match &args.context {
        None => kube::Config::infer().await?,
        Some(context) => {
            kube::Config::from_kubeconfig(&kube::config::KubeConfigOptions {
                context: Some(context.clone()),
                ..Default::default()
            })
            .await?
        }
    };
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config)?;
    let opts = Options {
        ready_delay: Duration::from_millis(args.ready_delay_ms),
        nodes: args.nodes,
        node_prefix: args.node_prefix,
        controllers: args.controllers,
    };
    tracing::info!(
        nodes = opts.nodes,
        controllers = opts.controllers,
        server,
        "simulating"
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = apiserver::run(client, opts) => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}
