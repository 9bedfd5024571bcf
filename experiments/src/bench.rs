//! `meshsim bench`: wall time and event rate of the simulator on the reference workloads,
//! printed as a table (a measurement, not a pass/fail test; timings on shared machines are noisy,
//! so each small case reports the best of several runs).

use crate::replay::{MeshData, scenario_config, simulate};
use anyhow::Result;
use clap::Args;
use meshsim_models::SimConfig;
use meshsim_sim::RunOptions;
use meshsim_traces::{SynthConfig, Trace, embedded, synthesize};
use rayon::prelude::*;
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Runs per case (the best is reported).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Also run the large synthetic case (10x the 500 sample on 100 workers) and report peak RSS.
    #[arg(long)]
    pub large: bool,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Peak resident set size of this process so far, MiB (Linux `VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn case(
    name: &str,
    trace: Trace,
    cfg: &SimConfig,
    data: &MeshData,
    repeat: usize,
    seed: u64,
) -> Result<()> {
    let trace = Arc::new(trace);
    let opts = RunOptions {
        seed,
        replication: 0,
        record_invocations: false,
    };
    let mut best = f64::INFINITY;
    let mut events = 0;
    for _ in 0..repeat.max(1) {
        let (r, wall) = simulate(&trace, cfg, data, &opts, false, name)?;
        best = best.min(wall);
        events = r.events;
    }
    crate::outln!(
        "{name:<34} {:>9} {:>12} {:>10.3} {:>10.2} {:>12}",
        trace.invocations(),
        events,
        best,
        events as f64 / best / 1e6,
        peak_rss_mib().map_or("-".to_owned(), |m| format!("{m:.0}")),
    );
    Ok(())
}

pub fn run(a: BenchArgs) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    crate::outln!(
        "meshsim bench: {threads} hardware threads; best of {} runs; no mesh; per-invocation table off",
        a.repeat
    );
    crate::outln!(
        "{:<34} {:>9} {:>12} {:>10} {:>10} {:>12}",
        "case",
        "invocs",
        "events",
        "wall s",
        "M ev/s",
        "peak RSS MiB"
    );
    let cfg = SimConfig::default();
    let data = MeshData::load(None)?;
    let t250 = embedded::default_trace().window(30)?;
    case(
        "azure-250, 30 min, 10 workers",
        t250.clone(),
        &cfg,
        &data,
        a.repeat,
        a.seed,
    )?;
    let t500 = embedded::load("azure-500")
        .expect("embedded 500 sample")?
        .window(30)?;
    case(
        "azure-500, 30 min, 10 workers",
        t500,
        &cfg,
        &data,
        a.repeat,
        a.seed,
    )?;
    // Every mesh profile on the bundled trace, in parallel across profiles (`replay --mesh all`).
    let trace = Arc::new(t250);
    let opts = RunOptions {
        seed: a.seed,
        replication: 0,
        record_invocations: false,
    };
    let mut best = f64::INFINITY;
    let mut events = 0;
    for _ in 0..a.repeat.max(1) {
        let start = std::time::Instant::now();
        let runs = meshsim_models::mesh::BUILTIN_PROFILES
            .par_iter()
            .map(|p| {
                let c = scenario_config(&cfg, p, None)?;
                simulate(&trace, &c, &data, &opts, false, p).map(|r| r.0.events)
            })
            .collect::<Result<Vec<u64>>>()?;
        best = best.min(start.elapsed().as_secs_f64());
        events = runs.iter().sum();
    }
    crate::outln!(
        "{:<34} {:>9} {:>12} {:>10.3} {:>10.2} {:>12}",
        "all 7 mesh profiles, azure-250",
        trace.invocations() * 7,
        events,
        best,
        events as f64 / best / 1e6,
        peak_rss_mib().map_or("-".to_owned(), |m| format!("{m:.0}")),
    );
    if a.large {
        // 10x the 500 sample's 171,558 invocations in 30 minutes.
        let big = synthesize(&SynthConfig {
            functions: 5000,
            minutes: 30,
            seed: a.seed,
            mean_rate_per_function: 11.4,
            ..SynthConfig::default()
        })?;
        let mut cfg100 = cfg.clone();
        cfg100.cluster.workers = 100;
        case(
            "synthetic 10x, 30 min, 100 workers",
            big,
            &cfg100,
            &data,
            1,
            a.seed,
        )?;
    }
    Ok(())
}
