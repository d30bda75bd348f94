//! External Secrets Operator's own module, the peer we are compared with and migrated from:
//! its documentation snippets (the import corpus) and its CRDs (the migration journey).

use std::path::PathBuf;
use std::process::Command;

/// The ESO release the peers bench builds (`tools/eso/go.mod`: the newest the Go module
/// proxy serves whole).
pub const MODULE: &str = "github.com/external-secrets/external-secrets@v0.16.2";

/// The module's directory, downloaded through the Go module proxy into the project's Go
/// cache (`~/.cache/secretsync/go/mod`, as `scripts/tools.sh` uses) when not there yet.
/// Panics with the reason when `go` is missing or the download fails.
pub fn module() -> PathBuf {
    let home = std::env::var("HOME").expect("HOME is set");
    let output = Command::new("go")
        .args(["mod", "download", "-json", MODULE])
        .env("GOMODCACHE", format!("{home}/.cache/secretsync/go/mod"))
        .env("GOFLAGS", "-mod=mod")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("go is on PATH (the README's set-up needs Go)");
    assert!(
        output.status.success(),
        "go mod download {MODULE}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    PathBuf::from(
        info["Dir"]
            .as_str()
            .expect("go mod download names the directory"),
    )
}

/// The file of ESO's CRD for `plural` (`externalsecrets`, `secretstores`, …).
pub fn crd(plural: &str) -> PathBuf {
    module().join(format!(
        "config/crds/bases/external-secrets.io_{plural}.yaml"
    ))
}
