//! Writes the CRDs to `crds/` and to the Helm chart's `charts/secretsync/crds/` (default),
//! or checks that the committed files in both match.
//!
//! ```text
//! cargo run -p secretsync-api --bin crdgen            # regenerate both
//! cargo run -p secretsync-api --bin crdgen -- --check # exit 1 when either drifted
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut check = false;
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    // The chart ships its own copy: Helm installs CRDs only from the chart's crds/.
    let mut dirs = vec![root.join("crds"), root.join("charts/secretsync/crds")];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--check" => check = true,
            "--out" => match args.next() {
                Some(d) => dirs = vec![PathBuf::from(d)],
                None => return usage(),
            },
            _ => return usage(),
        }
    }

    let mut drifted = Vec::new();
    for dir in &dirs {
        for crd in secretsync_api::crds() {
            let path = dir.join(secretsync_api::crd_file_name(&crd));
            let want = secretsync_api::crd_yaml(&crd);
            if check {
                if std::fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
                    drifted.push(path);
                }
            } else if let Err(e) = std::fs::write(&path, want) {
                eprintln!("crdgen: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            } else {
                println!("wrote {}", path.display());
            }
        }
    }
    if drifted.is_empty() {
        if check {
            println!("crds/ and charts/secretsync/crds/ are up to date");
        }
        ExitCode::SUCCESS
    } else {
        for path in drifted {
            eprintln!(
                "crdgen: {} differs from the Rust types; run `cargo run -p secretsync-api --bin crdgen` and commit",
                path.display()
            );
        }
        ExitCode::FAILURE
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: crdgen [--check] [--out DIR]");
    ExitCode::from(2)
}
