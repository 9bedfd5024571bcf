//! `meshsim trace {stats,sample,synth}`.

use crate::output::write_json;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use meshsim_traces::{SampleConfig, SynthConfig, TraceStats, sample_trace, synthesize, write_dir};
use std::path::PathBuf;

/// The default trace spec: the embedded 250-function Azure sample.
pub const DEFAULT_TRACE: &str = "embedded:azure-250";

#[derive(Debug, Subcommand)]
pub enum TraceCommand {
    /// Print what a trace holds: functions, active functions, invocations, triggers,
    /// duration and memory percentiles, over the first N minutes.
    Stats(StatsArgs),
    /// Shrink a trace to N functions, keeping its rate, duration and memory distributions
    /// (best of K random subsets by Wasserstein distance), and write it in the same format.
    Sample(SampleArgs),
    /// Generate a synthetic trace of any size (Zipf popularity, log-normal durations, Burr
    /// memory, bursty minutes) in the same three-file format.
    Synth(SynthArgs),
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Trace directory (with invocations.csv, durations.csv, memory.csv) or
    /// `embedded:<name>` (azure-250, azure-100, azure-500, invitro-example).
    #[arg(long, default_value = DEFAULT_TRACE)]
    pub trace: String,
    /// Minutes to look at, from the first minute column of the trace (after `--skip-minutes`;
    /// 0 = all).
    #[arg(long, default_value_t = 30)]
    pub minutes: u32,
    /// Minute columns to skip first (0: from the first, as `meshsim replay` by default).
    #[arg(long, default_value_t = 0)]
    pub skip_minutes: u32,
    /// Also write the statistics as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SampleArgs {
    /// Trace to sample from (directory or `embedded:<name>`).
    #[arg(long, default_value = DEFAULT_TRACE)]
    pub trace: String,
    /// Number of functions to keep.
    #[arg(long)]
    pub functions: usize,
    /// Random candidate subsets to score; the closest one wins.
    #[arg(long, default_value_t = 100)]
    pub candidates: usize,
    /// Seed of the candidate draws (same seed, same sample).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output directory for invocations.csv, durations.csv and memory.csv.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Number of functions.
    #[arg(long, default_value_t = 200)]
    pub functions: usize,
    /// Number of minutes.
    #[arg(long, default_value_t = 30)]
    pub minutes: u32,
    /// Seed (same seed, same trace).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Mean invocations per function per minute.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// Zipf exponent of function popularity (rate of rank r proportional to r^-s).
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// Gamma shape of per-minute burstiness (smaller is burstier).
    #[arg(long, default_value_t = 0.5)]
    pub burstiness: f64,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// Loads a trace spec with a readable error.
pub fn load_trace(spec: &str) -> Result<meshsim_traces::Trace> {
    meshsim_traces::load(spec).with_context(|| format!("loading trace '{spec}'"))
}

pub fn run(cmd: TraceCommand) -> Result<()> {
    match cmd {
        TraceCommand::Stats(a) => {
            let trace = load_trace(&a.trace)?;
            let trace = match (a.skip_minutes, a.minutes) {
                (0, 0) => trace,
                // All columns after the skipped ones (a skip past the end is window_after's
                // error).
                (skip, 0) => trace.window_after(skip, trace.minutes.saturating_sub(skip).max(1))?,
                (skip, minutes) => trace.window_after(skip, minutes)?,
            };
            let stats = TraceStats::of(&trace);
            crate::outln!("{}", stats.to_string().trim_end());
            if let Some(path) = a.json {
                write_json(&path, &stats)?;
            }
        }
        TraceCommand::Sample(a) => {
            let trace = load_trace(&a.trace)?;
            let r = sample_trace(
                &trace,
                SampleConfig {
                    functions: a.functions,
                    candidates: a.candidates,
                    seed: a.seed,
                },
            )?;
            write_dir(&r.trace, &a.out)?;
            let [rate, dur, mem] = r.distance_terms;
            crate::outln!(
                "sampled {} of {} functions from {} into {}",
                a.functions,
                trace.functions.len(),
                trace.source,
                a.out.display()
            );
            crate::outln!(
                "distance {:.4} (rate {rate:.4}, duration {dur:.4}, memory {mem:.4}; Wasserstein-1 on log10(1+x))",
                r.distance
            );
            crate::outln!(
                "candidates: best {:.4}, median {:.4}, worst {:.4} over {}",
                r.candidate_range[0],
                r.candidate_range[1],
                r.candidate_range[2],
                a.candidates
            );
            crate::outln!(
                "invocations {} of {}",
                r.trace.invocations(),
                trace.invocations()
            );
        }
        TraceCommand::Synth(a) => {
            let trace = synthesize(&SynthConfig {
                functions: a.functions,
                minutes: a.minutes,
                seed: a.seed,
                mean_rate_per_function: a.rate,
                zipf_exponent: a.zipf,
                burstiness_shape: a.burstiness,
            })?;
            write_dir(&trace, &a.out)?;
            crate::outln!(
                "wrote {} functions x {} minutes ({} invocations) to {}",
                a.functions,
                a.minutes,
                trace.invocations(),
                a.out.display()
            );
        }
    }
    Ok(())
}
