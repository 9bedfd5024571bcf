//! Command-line definition and dispatch.

use crate::bench::{self, BenchArgs};
use crate::calibrate_cmd::{self, CalibrateArgs};
use crate::coldstart_cmd::{self, ColdStartArgs};
use crate::replay::{self, ReplayArgs};
use crate::reproduce::{self, ReproduceArgs};
use crate::sweep::{self, MergeArgs, SweepArgs};
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
    /// Replay a trace through the simulated cluster (the main job). With no arguments: the
    /// bundled 250-function Azure sample, first 30 minutes, seed 42, results in results/replay/.
    Replay(ReplayArgs),
    /// The cold-start microbenchmark: distinct functions each invoked once at fixed cold-start
    /// rates; latency p50/p99 and achieved throughput vs rate (table + figure).
    Coldstart(ColdStartArgs),
    /// Regenerate the paper's figures: all scenarios x replications, policy ablation, cold-start
    /// curves, lightweight comparison; figures (PNG + SVG), tables and report.md.
    Reproduce(ReproduceArgs),
    /// Measure the reference sidecar live (per-policy CPU, latency, RSS, start-up) into a
    /// calibration file; `calibrate xds` regenerates the xDS payload sizes from Envoy protos.
    Calibrate(CalibrateArgs),
    /// Run a grid of replays (any config field, trace, minutes, load scale, x replications) in
    /// parallel into one tidy Parquet table; resumable; --shard i/n for job arrays.
    Sweep(SweepArgs),
    /// Join the outputs of sharded sweeps into one table.
    Merge(MergeArgs),
    /// Measure the simulator's speed: wall time and events/s on the bundled traces (and with
    /// --large a 1.7M-invocation synthetic trace on 100 workers, with peak RSS).
    Bench(BenchArgs),
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
        Command::Replay(a) => replay::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Calibrate(a) => calibrate_cmd::run(a),
        Command::Reproduce(a) => reproduce::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Merge(a) => sweep::merge(a),
        Command::Coldstart(a) => coldstart_cmd::run(a),
        Command::Trace(cmd) => trace_cmd::run(cmd),
    }
}
