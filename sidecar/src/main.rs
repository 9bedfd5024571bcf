//! `meshsim-sidecar`: run the reference sidecar, check a config, or run the bench.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "meshsim-sidecar", version, about = "meshsim reference sidecar")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the proxy with a per-function TOML config until SIGTERM/SIGINT (then drain).
    Serve {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a config file and print it normalised.
    Check {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve { config } => serve(config),
        Cmd::Check { config } => {
            let c = meshsim_sidecar::config::Config::load(&config)?;
            print!("{}", c.to_toml());
            Ok(())
        }
    }
}

fn serve(path: PathBuf) -> anyhow::Result<()> {
    let config = meshsim_sidecar::config::Config::load(&path)?;
    let rt = if config.runtime.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.runtime.worker_threads)
            .enable_all()
            .build()
    }
    .context("building the tokio runtime")?;
    rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let sidecar = meshsim_sidecar::Sidecar::start(config)
            .await
            .with_context(|| format!("starting with {}", path.display()))?;
        let line = serde_json::json!({
            "event": "listening",
            "inbound": sidecar.inbound.to_string(),
            "outbound": sidecar.outbound.map(|a| a.to_string()),
            "admin": sidecar.admin.map(|a| a.to_string()),
            "pid": std::process::id(),
        });
        eprintln!("{line}");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        meshsim_sidecar::diag::event("info", "draining", "signal received");
        let clean = sidecar.shutdown().await;
        meshsim_sidecar::diag::event(
            "info",
            "stopped",
            if clean {
                "all connections drained"
            } else {
                "drain timeout; connections closed"
            },
        );
        Ok(())
    })
}
