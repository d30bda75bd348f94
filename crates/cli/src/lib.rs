//! `kubectl secretsync`: the kubectl plugin of the secretsync operator.
//!
//! It reads and patches `SecretSync` objects (and, for `import --from-cluster`, reads External
//! Secrets Operator's objects); it never reads Secret data, so it cannot print a secret value.
//! Output goes to stdout, progress and errors to stderr; exit codes are in [`error`]
//! (`EXIT_*`) and in `--help`.

pub mod cli;
pub mod client;
pub mod error;
pub mod import;
pub mod ops;
pub mod reloader;
pub mod render;
pub mod wait;

use std::io::Write;
use std::time::Duration;

use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use secretsync_api::SecretSync;

use crate::cli::{Cli, Command, Output, WaitArgs};
use crate::error::{EXIT_FAILED, Error, Result};
use crate::ops::{Outcome, Syncs, WaitFor};

/// How often `--wait` polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Runs the command line against the cluster and returns the exit code.
pub async fn main(cli: Cli) -> i32 {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    if let Command::Completion { shell } = cli.command {
        completion(shell, &mut out);
        return 0;
    }
    if let Command::Import {
        files,
        from_cluster: false,
        rollout_from_reloader,
        ..
    } = &cli.command
    {
        return import_files(files, *rollout_from_reloader, &mut out, &mut err);
    }
    let fallback_ns = cli
        .global
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let (client, namespace) = match client::connect(
        cli.global.kubeconfig.as_deref(),
        cli.global.context.as_deref(),
        cli.global.namespace.as_deref(),
    )
    .await
    {
        Ok(connected) => connected,
        Err(e) => {
            report(&mut err, &e, &fallback_ns);
            return EXIT_FAILED;
        }
    };
    match execute(client, &namespace, cli.command, &mut out, &mut err).await {
        Ok(()) => 0,
        Err(e) => {
            report(&mut err, &e, &namespace);
            e.exit_code()
        }
    }
}

/// `import -f`: no cluster needed.
fn import_files(
    files: &[std::path::PathBuf],
    reloader: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let mut docs = Vec::new();
    for file in files {
        let text = if file.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())
        } else {
            std::fs::read_to_string(file)
        };
        let parsed = text
            .map_err(|e| e.to_string())
            .and_then(|text| import::documents(&text).map_err(|e| e.to_string()));
        match parsed {
            Ok(parsed) => docs.extend(parsed),
            Err(e) => {
                let _ = writeln!(err, "error: {}: {e}", file.display());
                return EXIT_FAILED;
            }
        }
    }
    print_imported(convert(docs, reloader), out, err)
}

/// The import, with the Reloader mapping when asked for.
fn convert(docs: Vec<serde_json::Value>, reloader: bool) -> import::Imported {
    if !reloader {
        return import::import(docs);
    }
    let mut imported = import::import(docs.clone());
    reloader::add_targets(&docs, &mut imported);
    imported
}

/// Our manifests on `out` as one YAML stream, the report on `err`.
fn print_imported(imported: import::Imported, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    for object in &imported.objects {
        if let Ok(text) = serde_yaml::to_string(object) {
            let _ = write!(out, "---\n{text}");
        }
    }
    let _ = write!(err, "{}", import::report(&imported));
    if imported.failed.is_empty() {
        0
    } else {
        EXIT_FAILED
    }
}

/// The completion script of `shell` for the `kubectl-secretsync` binary.
pub fn completion(shell: clap_complete::Shell, out: &mut dyn Write) {
    use clap::CommandFactory;
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "kubectl-secretsync", out);
}

/// `-o json|yaml`: the objects as the API returns them.
fn print_objects(out: &mut dyn Write, format: Output, value: &serde_json::Value) {
    let text = match format {
        Output::Json => serde_json::to_string_pretty(value).map(|s| s + "\n").ok(),
        Output::Yaml => serde_yaml::to_string(value).ok(),
        Output::Table => None,
    };
    if let Some(text) = text {
        let _ = write!(out, "{text}");
    }
}

/// `error: …` and `hint: …` on stderr.
pub fn report(err: &mut dyn Write, error: &Error, namespace: &str) {
    let _ = writeln!(err, "error: {error}");
    if let Some(hint) = error.hint(namespace) {
        let _ = writeln!(err, "hint: {hint}");
    }
}

/// One command against `namespace`; output to `out`, progress to `err`.
pub async fn execute(
    client: Client,
    namespace: &str,
    command: Command,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<()> {
    let syncs = Syncs::new(client.clone(), namespace);
    let now = jiff::Timestamp::now();
    match command {
        Command::Completion { shell } => completion(shell, out),
        Command::Import {
            all_namespaces,
            rollout_from_reloader,
            ..
        } => {
            let mut docs = import::from_cluster(&client, namespace, all_namespaces).await?;
            if rollout_from_reloader {
                docs.extend(
                    import::workloads_from_cluster(&client, namespace, all_namespaces).await?,
                );
            }
            if print_imported(convert(docs, rollout_from_reloader), out, err) != 0 {
                return Err(Error::Refused {
                    message: "some objects could not be converted (listed above)".into(),
                    hint: "convert those by hand, or leave them with External Secrets Operator"
                        .into(),
                });
            }
        }
        Command::List {
            all_namespaces,
            output,
        } => {
            let api: Api<SecretSync> = if all_namespaces {
                Api::all(client)
            } else {
                syncs.api.clone()
            };
            let mut items = api.list(&ListParams::default()).await?.items;
            items.sort_by_key(|s| (s.namespace(), s.name_any()));
            if output != Output::Table {
                let list = serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "List",
                    "metadata": {"resourceVersion": ""},
                    "items": items,
                });
                print_objects(out, output, &list);
            } else if items.is_empty() {
                let place = if all_namespaces {
                    "any namespace".to_owned()
                } else {
                    format!("namespace {namespace:?}")
                };
                let _ = writeln!(err, "No SecretSyncs found in {place}.");
            } else {
                let _ = write!(out, "{}", render::list(&items, all_namespaces, now));
            }
        }
        Command::Status { name, output, wait } => {
            let mut sync = syncs.get(&name).await?;
            if let Some(timeout) = wait.timeout() {
                let want = WaitFor {
                    generation: sync.metadata.generation.unwrap_or(0),
                    ..Default::default()
                };
                sync = wait_for(&syncs, &name, &want, timeout, err).await?.0;
            }
            if output == Output::Table {
                let _ = write!(out, "{}", render::status(&sync, jiff::Timestamp::now()));
            } else {
                print_objects(
                    out,
                    output,
                    &serde_json::to_value(&sync).unwrap_or_default(),
                );
            }
        }
        Command::Rotate {
            name,
            now,
            reason,
            wait,
        } => {
            let outcome = ops::rotate(&syncs, &name, now, reason.reason.as_deref()).await?;
            finish(&syncs, &name, outcome, wait, out, err).await?;
        }
        Command::Revoke {
            name,
            version,
            immediate,
            force,
            reason,
            wait,
        } => {
            let why = reason.reason.as_deref();
            let outcome = ops::revoke(&syncs, &name, version, immediate, force, why).await?;
            finish(&syncs, &name, outcome, wait, out, err).await?;
        }
        Command::Rollback {
            name,
            to,
            reason,
            wait,
        } => {
            let outcome = ops::rollback(&syncs, &name, to, reason.reason.as_deref()).await?;
            finish(&syncs, &name, outcome, wait, out, err).await?;
        }
        Command::Unpin { name, wait } => {
            let outcome = ops::unpin(&syncs, &name).await?;
            finish(&syncs, &name, outcome, wait, out, err).await?;
        }
    }
    Ok(())
}

async fn finish(
    syncs: &Syncs,
    name: &str,
    outcome: Outcome,
    wait: WaitArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<()> {
    let _ = writeln!(out, "{}", outcome.message);
    if let Some(timeout) = wait.timeout() {
        let (_, summary) = wait_for(syncs, name, &outcome.wait, timeout, err).await?;
        let _ = writeln!(out, "done: {summary}");
    }
    Ok(())
}

async fn wait_for(
    syncs: &Syncs,
    name: &str,
    want: &WaitFor,
    timeout: Duration,
    err: &mut dyn Write,
) -> Result<(SecretSync, String)> {
    let mut progress = |why: &str| {
        let _ = writeln!(err, "waiting: {why}");
    };
    wait::wait(syncs, name, want, timeout, POLL_INTERVAL, &mut progress).await
}
