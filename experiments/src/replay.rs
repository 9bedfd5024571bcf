//! `meshsim replay`: the main job. Replays a trace through the simulated cluster and writes
//! `summary.json`, Parquet tables, `run.json` and a slowdown-CDF figure.

use crate::figures::{Chart, Mark, Series, cdf_points, render};
use crate::output::{write_atomic, write_json};
use crate::progress::Progress;
use crate::trace_cmd::{DEFAULT_TRACE, load_trace};
use anyhow::{Context, Result};
use clap::Args;
use meshsim_models::SimConfig;
use meshsim_sim::{RunOptions, RunResult};
use meshsim_traces::{Trace, TraceStats};
use polars::prelude::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Trace directory (invocations.csv, durations.csv, memory.csv) or `embedded:<name>`.
    #[arg(long, default_value = DEFAULT_TRACE)]
    pub trace: String,
    /// Minutes to replay, from the first minute column of the trace.
    #[arg(long, default_value_t = 30)]
    pub minutes: u32,
    /// Root seed: same seed and config give the same results, byte for byte.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Simulation config (TOML; see models/ for the fields). Defaults to the paper's cluster.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Output directory.
    #[arg(long, default_value = "results/replay")]
    pub out: PathBuf,
    /// Skip the per-invocation table (memory then stays flat however long the trace).
    #[arg(long)]
    pub no_invocations: bool,
}

/// Reads and validates a config file, or returns the default config.
pub fn load_config(path: Option<&Path>) -> Result<SimConfig> {
    match path {
        None => Ok(SimConfig::default()),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading config {}", p.display()))?;
            Ok(SimConfig::from_toml_str(&text, &p.display().to_string())?)
        }
    }
}

/// FNV-1a of the canonical TOML rendering of a config: the `config_hash` of `run.json`.
pub fn config_hash(cfg: &SimConfig) -> String {
    format!(
        "{:016x}",
        meshsim_traces::rng::fnv1a(cfg.to_toml_string().as_bytes())
    )
}

/// The trace block of `summary.json`.
pub fn trace_json(trace: &Trace) -> Value {
    let s = TraceStats::of(trace);
    json!({
        "source": s.source, "first_minute": s.first_minute, "minutes": s.minutes,
        "functions": s.functions, "active_functions": s.active_functions, "invocations": s.invocations,
    })
}

/// One scenario's summary with the wall-clock fields filled in.
pub fn scenario_json(result: &RunResult, wall_s: f64) -> Result<Value> {
    let mut v = serde_json::to_value(&result.summary)?;
    v["sim"]["wall_s"] = json!(wall_s);
    v["sim"]["events_per_s"] = json!(if wall_s > 0.0 {
        result.events as f64 / wall_s
    } else {
        0.0
    });
    Ok(v)
}

/// Runs one simulation with a progress bar, timing it.
pub fn simulate(
    trace: &Arc<Trace>,
    cfg: &SimConfig,
    opts: &RunOptions,
    label: &str,
) -> Result<(RunResult, f64)> {
    let progress = Progress::new(trace.invocations(), label);
    let start = std::time::Instant::now();
    let result = meshsim_sim::run(trace.clone(), cfg, opts, &mut |done, _| progress.set(done))?;
    let wall = start.elapsed().as_secs_f64();
    progress.finish();
    Ok((result, wall))
}

pub fn run(a: ReplayArgs) -> Result<()> {
    let cfg = load_config(a.config.as_deref())?;
    let full = load_trace(&a.trace)?;
    let trace = Arc::new(full.window(a.minutes)?);
    let opts = RunOptions {
        seed: a.seed,
        replication: 0,
        record_invocations: !a.no_invocations,
    };
    let (result, wall) = simulate(&trace, &cfg, &opts, "replay")?;

    let scenario = "no-mesh";
    let summary = json!({
        "schema": 1,
        "seed": a.seed,
        "trace": trace_json(&trace),
        "scenarios": { scenario: scenario_json(&result, wall)? },
    });
    write_json(&a.out.join("summary.json"), &summary)?;
    write_run_json(
        &a.out,
        &cfg,
        a.seed,
        &trace,
        wall,
        result.digest,
        result.events,
    )?;
    write_node_seconds(&a.out.join("node_seconds.parquet"), scenario, &result)?;
    if let Some(inv) = &result.invocations {
        write_invocations(&a.out.join("invocations.parquet"), scenario, &trace, inv)?;
        let slowdowns: Vec<f64> = inv
            .iter()
            .filter(|r| r.failure.is_none())
            .map(|r| r.slowdown)
            .collect();
        slowdown_cdf(
            &a.out.join("slowdown_cdf"),
            &[(scenario.to_owned(), slowdowns)],
        )?;
    }
    print_summary(&a.out, scenario, &result, wall);
    Ok(())
}

/// Writes `run.json`: what produced the results.
pub fn write_run_json(
    out: &Path,
    cfg: &SimConfig,
    seed: u64,
    trace: &Trace,
    wall_s: f64,
    digest: u64,
    events: u64,
) -> Result<()> {
    let run = json!({
        "seed": seed,
        "config": serde_json::to_value(cfg)?,
        "config_hash": config_hash(cfg),
        "git_revision": env!("MESHSIM_GIT_REV"),
        "meshsim_version": env!("CARGO_PKG_VERSION"),
        "trace": trace.source,
        "minutes": trace.minutes,
        "command": std::env::args().collect::<Vec<_>>(),
        "event_digest": format!("{digest:016x}"),
        "events": events,
        "wall_s": wall_s,
    });
    write_json(&out.join("run.json"), &run)
}

fn print_summary(out: &Path, scenario: &str, r: &RunResult, wall: f64) {
    let s = &r.summary;
    crate::outln!(
        "{scenario}: {} invocations, {} completed, {} failed, {} cold starts",
        s.invocations,
        s.completed,
        s.failed,
        s.cold_starts
    );
    crate::outln!(
        "  slowdown p50 {:.2} p90 {:.2} p95 {:.2} p99 {:.2} max {:.1}",
        s.slowdown.p50,
        s.slowdown.p90,
        s.slowdown.p95,
        s.slowdown.p99,
        s.slowdown.max
    );
    crate::outln!(
        "  cold start p50 {:.3} s p99 {:.3} s",
        s.cold_start_s.p50,
        s.cold_start_s.p99
    );
    crate::outln!(
        "  worker CPU p50 {:.2} p95 {:.2} cores; control plane p50 {:.3} p95 {:.3} cores",
        s.worker_cpu_cores.p50,
        s.worker_cpu_cores.p95,
        s.cp_cpu_cores.p50,
        s.cp_cpu_cores.p95
    );
    crate::outln!(
        "  {} events in {:.3} s wall ({:.2} M events/s)",
        r.events,
        wall,
        r.events as f64 / wall.max(1e-9) / 1e6
    );
    crate::outln!("results in {}", out.display());
}

fn write_parquet(path: &Path, mut df: DataFrame) -> Result<()> {
    let mut buf = Vec::new();
    ParquetWriter::new(&mut buf)
        .with_compression(ParquetCompression::Zstd(None))
        .finish(&mut df)
        .map_err(|e| anyhow::anyhow!("encoding {}: {e}", path.display()))?;
    write_atomic(path, &buf)
}

/// The per-invocation table.
pub fn write_invocations(
    path: &Path,
    scenario: &str,
    trace: &Trace,
    inv: &[meshsim_sim::InvocationRecord],
) -> Result<()> {
    let n = inv.len();
    let s = |v: f64| v;
    let df = DataFrame::new(
        n,
        vec![
            Column::new("scenario".into(), vec![scenario; n]),
            Column::new(
                "function".into(),
                inv.iter().map(|r| r.function).collect::<Vec<u32>>(),
            ),
            Column::new(
                "function_hash".into(),
                inv.iter()
                    .map(|r| trace.functions[r.function as usize].hash_function.as_str())
                    .collect::<Vec<&str>>(),
            ),
            Column::new(
                "arrival_s".into(),
                inv.iter()
                    .map(|r| s(r.arrival_ns as f64 / 1e9))
                    .collect::<Vec<f64>>(),
            ),
            Column::new(
                "exec_ms".into(),
                inv.iter()
                    .map(|r| r.exec_ns as f64 / 1e6)
                    .collect::<Vec<f64>>(),
            ),
            Column::new(
                "end_to_end_ms".into(),
                inv.iter()
                    .map(|r| r.end_to_end_ns as f64 / 1e6)
                    .collect::<Vec<f64>>(),
            ),
            Column::new(
                "slowdown".into(),
                inv.iter().map(|r| r.slowdown).collect::<Vec<f64>>(),
            ),
            Column::new(
                "cold".into(),
                inv.iter().map(|r| r.cold).collect::<Vec<bool>>(),
            ),
            Column::new(
                "node".into(),
                inv.iter()
                    .map(|r| r.node.map(u32::from))
                    .collect::<Vec<Option<u32>>>(),
            ),
            Column::new(
                "queue_ms".into(),
                inv.iter()
                    .map(|r| r.queue_ns as f64 / 1e6)
                    .collect::<Vec<f64>>(),
            ),
            Column::new(
                "cold_start_ms".into(),
                inv.iter()
                    .map(|r| r.cold_start_ns as f64 / 1e6)
                    .collect::<Vec<f64>>(),
            ),
            Column::new(
                "contention_ms".into(),
                inv.iter()
                    .map(|r| r.contention_ns as f64 / 1e6)
                    .collect::<Vec<f64>>(),
            ),
            Column::new(
                "overhead_ms".into(),
                inv.iter()
                    .map(|r| r.overhead_ns as f64 / 1e6)
                    .collect::<Vec<f64>>(),
            ),
            Column::new(
                "failure".into(),
                inv.iter()
                    .map(|r| r.failure.map(|f| f.as_str()))
                    .collect::<Vec<Option<&str>>>(),
            ),
        ],
    )?;
    write_parquet(path, df)
}

/// The per-second, per-node table: CPU cores by category and memory.
pub fn write_node_seconds(path: &Path, scenario: &str, r: &RunResult) -> Result<()> {
    let ns = &r.node_seconds;
    let n = ns.len();
    let col = |name: &str, f: &dyn Fn(&meshsim_sim::NodeSecond) -> f64| {
        Column::new(name.into(), ns.iter().map(f).collect::<Vec<f64>>())
    };
    let df = DataFrame::new(
        n,
        vec![
            Column::new("scenario".into(), vec![scenario; n]),
            Column::new(
                "second".into(),
                ns.iter().map(|x| x.second).collect::<Vec<u32>>(),
            ),
            Column::new(
                "node".into(),
                ns.iter().map(|x| u32::from(x.node)).collect::<Vec<u32>>(),
            ),
            Column::new(
                "control_plane".into(),
                ns.iter().map(|x| x.control_plane).collect::<Vec<bool>>(),
            ),
            col("cpu_function_cores", &|x| x.cpu_cores.function),
            col("cpu_queue_proxy_cores", &|x| x.cpu_cores.queue_proxy),
            col("cpu_activator_cores", &|x| x.cpu_cores.activator),
            col("cpu_gateway_cores", &|x| x.cpu_cores.gateway),
            col("cpu_control_plane_cores", &|x| x.cpu_cores.control_plane),
            col("cpu_sidecar_cores", &|x| x.cpu_cores.sidecar),
            col("cpu_xds_cores", &|x| x.cpu_cores.xds),
            col("cpu_system_cores", &|x| x.cpu_cores.system),
            col("cpu_total_cores", &|x| x.cpu_cores.total()),
            col("memory_gib", &|x| x.memory_gib),
        ],
    )?;
    write_parquet(path, df)
}

/// Fig. 1 style: per-invocation slowdown CDFs, log x.
pub fn slowdown_cdf(stem: &Path, series: &[(String, Vec<f64>)]) -> Result<[PathBuf; 2]> {
    let mut c = Chart::new(
        "Per-invocation slowdown",
        "slowdown (end-to-end / execution time, x)",
        "CDF",
    );
    c.x_log = true;
    c.y_range = Some((0.0, 1.0));
    for (name, v) in series {
        c.series.push(Series {
            name: name.clone(),
            points: cdf_points(v, 2000),
            mark: Mark::Line,
        });
    }
    render(stem, &[c], 1)
}
