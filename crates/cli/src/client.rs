//! A client from the kubeconfig, the way kubectl picks one: `--kubeconfig`, else `KUBECONFIG`
//! (a list of files, merged), else `~/.kube/config`; `--context`, else the current context.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::error::{Error, Result};

/// A client and the namespace to work in: `-n`, else the context's namespace, else `default`.
pub async fn connect(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    namespace: Option<&str>,
) -> Result<(Client, String)> {
    let config = load_config(kubeconfig, context).await?;
    let namespace = namespace
        .map(str::to_owned)
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    Ok((client, namespace))
}

async fn load_config(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Config> {
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..Default::default()
    };
    let file = match kubeconfig {
        Some(path) => Kubeconfig::read_from(path)
            .map_err(|e| Error::Kubeconfig(format!("{}: {e}", path.display())))?,
        None => match Kubeconfig::read() {
            Ok(file) => file,
            // No kubeconfig at all: inside a Pod, use the service account like kubectl does.
            Err(read_error) if context.is_none() => {
                return Config::incluster().map_err(|_| Error::Kubeconfig(read_error.to_string()));
            }
            Err(e) => return Err(Error::Kubeconfig(e.to_string())),
        },
    };
    Config::from_custom_kubeconfig(file, &options)
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))
}
