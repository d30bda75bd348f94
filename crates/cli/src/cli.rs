//! Command-line arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::EXIT_CODES_HELP;
use crate::wait::DEFAULT_TIMEOUT;

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-secretsync",
    bin_name = "kubectl secretsync",
    version,
    about = "Inspect and operate secretsync's SecretSyncs: rotate, revoke, roll back, unpin",
    after_help = after_help(),
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Examples and the exit codes, after the options in `--help`.
fn after_help() -> String {
    format!(
        "Examples:
  kubectl secretsync list -A
  kubectl secretsync list -n payments -o json
  kubectl secretsync status db -n payments
  kubectl secretsync rotate db -n payments --wait --reason \"quarterly rotation\"
  kubectl secretsync revoke db --version 3 --immediate -n payments --reason \"leaked in a CI log\"
  kubectl secretsync rollback db -n payments --wait --reason \"v5 breaks logins\"
  kubectl secretsync unpin db -n payments
  source <(kubectl-secretsync completion bash)

{EXIT_CODES_HELP}"
    )
}

#[derive(Debug, Args)]
pub struct Global {
    /// Namespace (default: the kubeconfig context's namespace, else `default`).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Path to the kubeconfig (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
}

#[derive(Debug, Clone, Copy, Args)]
pub struct WaitArgs {
    /// Block until the SecretSync is Ready and the rollout is Complete.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, such as 30s, 5m, 1h (implies --wait).
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
}

impl WaitArgs {
    pub fn timeout(&self) -> Option<Duration> {
        (self.wait || self.timeout.is_some()).then(|| self.timeout.unwrap_or(DEFAULT_TIMEOUT))
    }
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    match secretsync_api::duration::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("the timeout must be more than 0".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// How `list` and `status` print.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Columns for people.
    #[default]
    Table,
    /// The SecretSync objects as the API returns them (`list`: a `kind: List`).
    Json,
    Yaml,
}

#[derive(Debug, Clone, Args)]
pub struct ReasonArg {
    /// Why: recorded on the SecretSync (annotation secretsync.io/reason) and quoted in the
    /// events of the versions and rollouts this causes.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// SecretSyncs with their current and active version, readiness and rollout.
    #[command(visible_alias = "ls")]
    List {
        /// List SecretSyncs in every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
    /// Versions, conditions and rollout targets of one SecretSync.
    Status {
        name: String,
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Make a new version now: raise spec.version by one.
    Rotate {
        name: String,
        /// Roll the new version out at once, even outside the rollout windows (this rotation
        /// only).
        #[arg(long)]
        now: bool,
        #[command(flatten)]
        reason: ReasonArg,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Revoke a version (compromised credentials): its Secret is deleted, targets move off it.
    Revoke {
        name: String,
        /// The version number to revoke.
        #[arg(long = "version", value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
        version: i64,
        /// Delete the revoked Secret at once instead of after the rollout (revokePolicy: Immediate).
        #[arg(long)]
        immediate: bool,
        /// Revoke even though the status does not list that version.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        reason: ReasonArg,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Pin an older version: targets roll back to it (default: the newest retained one
    /// before the active version).
    Rollback {
        name: String,
        /// The version to roll back to.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
        to: Option<i64>,
        #[command(flatten)]
        reason: ReasonArg,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Remove the pin: targets roll forward to the newest version.
    Unpin {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Convert External Secrets Operator manifests (ExternalSecret, ClusterExternalSecret,
    /// SecretStore, ClusterSecretStore) into secretsync's. The manifests go to stdout; a report of every
    /// field and object not carried over, and why, to stderr. Exit 1 when an object could not
    /// be converted at all.
    Import {
        /// Manifest files (`-` for stdin), repeatable; `kind: List` files are read item by item.
        #[arg(
            short = 'f',
            long = "filename",
            value_name = "FILE",
            required_unless_present = "from_cluster"
        )]
        files: Vec<std::path::PathBuf>,
        /// Read the ExternalSecrets and stores from the cluster (the namespace, or every
        /// namespace with -A; ClusterSecretStores always).
        #[arg(long, conflicts_with = "files")]
        from_cluster: bool,
        /// With --from-cluster: every namespace.
        #[arg(short = 'A', long, requires = "from_cluster")]
        all_namespaces: bool,
        /// Deployments, StatefulSets and DaemonSets with Stakater Reloader annotations (in the
        /// files, or in the cluster with --from-cluster) become rollout targets of the
        /// SecretSyncs whose Secret they follow; what cannot be mapped is reported.
        #[arg(long)]
        rollout_from_reloader: bool,
    },
    /// Print a shell completion script: `source <(kubectl-secretsync completion bash)`.
    Completion { shell: clap_complete::Shell },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn timeout_implies_wait_and_rejects_nonsense() {
        let cli = Cli::try_parse_from(["kubectl-secretsync", "rotate", "db", "--timeout", "90s"])
            .unwrap();
        let Command::Rotate { wait, .. } = cli.command else {
            panic!("rotate")
        };
        assert_eq!(wait.timeout(), Some(Duration::from_secs(90)));
        let cli = Cli::try_parse_from(["kubectl-secretsync", "unpin", "db", "--wait"]).unwrap();
        let Command::Unpin { wait, .. } = cli.command else {
            panic!("unpin")
        };
        assert_eq!(wait.timeout(), Some(DEFAULT_TIMEOUT));
        for bad in [
            vec!["kubectl-secretsync", "rotate", "db", "--timeout", "soon"],
            vec!["kubectl-secretsync", "revoke", "db"],
            vec!["kubectl-secretsync", "revoke", "db", "--version", "0"],
            vec!["kubectl-secretsync", "rollback", "db", "--to", "-1"],
        ] {
            let err = Cli::try_parse_from(&bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }
}
