//! `kubectl secretsync`: see `kubectl secretsync --help`.

use clap::Parser;

fn main() {
    // Usage errors exit 2 (clap's own exit code); --help and --version exit 0.
    let cli = kubectl_secretsync::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            std::process::exit(kubectl_secretsync::error::EXIT_FAILED);
        }
    };
    let code = runtime.block_on(kubectl_secretsync::main(cli));
    std::process::exit(code);
}
