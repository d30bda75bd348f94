//! `secretsync-sandbox`: runs the sandbox API server until SIGINT/SIGTERM.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "In-memory Kubernetes API server for tests")]
struct Args {
    /// Port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Where to write a kubeconfig for this server.
    #[arg(long)]
    kubeconfig_out: PathBuf,
    /// Delay before simulated Pods become Ready.
    #[arg(long, default_value_t = 200)]
    ready_delay_ms: u64,
    /// Simulated nodes (Pods per DaemonSet).
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// Start without the built-in workload simulator (Pods stay Pending, workloads get no
    /// Pods), for the standalone `secretsync-sim` or a test of a bare control plane.
    #[arg(long)]
    no_simulator: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut builder = secretsync_sandbox::Sandbox::builder()
        .port(args.port)
        .kubeconfig_out(&args.kubeconfig_out)
        .ready_delay(Duration::from_millis(args.ready_delay_ms))
        .nodes(args.nodes);
    if args.no_simulator {
        builder = builder.without_simulator();
    }
    let sandbox = builder.start().await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", sandbox.url())?;
    writeln!(
        out,
        "kubeconfig written to {}",
        args.kubeconfig_out.display()
    )?;
    out.flush()?;
    drop(out);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    sandbox.shutdown().await;
    Ok(())
}
