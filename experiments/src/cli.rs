//! Command-line definition and dispatch.

use crate::trace_cmd::{self, TraceCommand};
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// meshsim: what does a sidecar-based service mesh cost a serverless platform, and what would a
/// lightweight sidecar save?
///
/// Replays Azure Functions traces through a deterministic simulator of a Knative-on-Kubernetes
/// cluster with and without a service mesh. Start with `meshsim trace stats` to see the bundled
/// trace.
#[derive(Debug, Parser)]
#[command(name = "meshsim", version, about, long_about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect, sample or generate workload traces (Azure Functions 2019 / InVitro format).
    #[command(subcommand)]
    Trace(TraceCommand),
}

/// Parses the arguments, runs the command and turns errors into a message and exit code 2.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Trace(cmd) => trace_cmd::run(cmd),
    }
}
