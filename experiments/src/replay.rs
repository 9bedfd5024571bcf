//! `meshsim replay`: the main job. Replays a trace through the simulated cluster and writes
//! `summary.json`, Parquet tables, `run.json` and a slowdown-CDF figure.

use crate::figures::{Chart, Mark, Series, cdf_points, render};
use crate::output::{write_atomic, write_json};
use crate::progress::Progress;
use crate::trace_cmd::{DEFAULT_TRACE, load_trace};
use anyhow::{Context, Result, bail};
use clap::Args;
use meshsim_models::{CalibrationFile, SimConfig, XdsSizes};
use meshsim_sim::meshmodel::MeshInputs;
use meshsim_sim::{RunOptions, RunResult};
use meshsim_traces::{Trace, TraceStats};
use polars::prelude::*;
use rayon::prelude::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Trace directory (invocations.csv, durations.csv, memory.csv) or `embedded:<name>`.
    #[arg(long, default_value = DEFAULT_TRACE)]
    pub trace: String,
    /// Minutes to replay, from the first minute column of the trace (after `--skip-minutes`).
    #[arg(long, default_value_t = 30)]
    pub minutes: u32,
    /// Minute columns to skip before the replayed window, to replay another stretch of the
    /// trace (InVitro's loader always starts at the first column, the default).
    #[arg(long, default_value_t = 0)]
    pub skip_minutes: u32,
    /// Root seed: same seed and config give the same results, byte for byte.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Simulation config (TOML; see models/ for the fields). Defaults to the paper's cluster with
    /// Knative's default deployment shape; `models/profiles/invitro-knative.toml` deploys
    /// functions as InVitro, the paper's load generator, does (one request per pod; what
    /// `meshsim reproduce` runs).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Output directory.
    #[arg(long, default_value = "results/replay")]
    pub out: PathBuf,
    /// Skip the per-invocation table (memory then stays flat however long the trace).
    #[arg(long)]
    pub no_invocations: bool,
    /// Mesh profile(s): none, istio, istio-policies, linkerd, linkerd-policies, ambient,
    /// lightweight; comma separated, or `all`. Overrides the config's `[mesh]` profile.
    #[arg(long, value_delimiter = ',')]
    pub mesh: Vec<String>,
    /// Policies to enable (replacing the profile's list), comma separated: jwt, ports, authz,
    /// rate_limit, tracing, access_log, mtls, retry, circuit_breaker (`-` may replace `_`);
    /// `none` for none.
    #[arg(long, value_delimiter = ',')]
    pub policies: Option<Vec<String>>,
    /// Calibration file with the reference sidecar's per-policy costs (default: the shipped
    /// models/calibration/reference-2core.toml).
    #[arg(long)]
    pub calibration: Option<PathBuf>,
}

/// What mesh models read besides the config: per-policy costs and xDS payload sizes.
#[derive(Debug, Clone)]
pub struct MeshData {
    pub calibration: CalibrationFile,
    pub xds_sizes: XdsSizes,
}

/// The shipped xDS size table (models/xds-sizes.toml, measured from real Envoy protos).
const XDS_SIZES: &str = include_str!(concat!(env!("OUT_DIR"), "/xds-sizes.toml"));

impl MeshData {
    /// The shipped files, or the calibration file at `calibration`.
    pub fn load(calibration: Option<&Path>) -> Result<MeshData> {
        let calibration = match calibration {
            None => CalibrationFile::reference(),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading calibration {}", p.display()))?;
                CalibrationFile::from_toml_str(&text, &p.display().to_string())?
            }
        };
        if XDS_SIZES.is_empty() {
            bail!(
                "models/xds-sizes.toml was missing when meshsim was built: run `meshsim calibrate xds` and rebuild"
            );
        }
        let xds_sizes =
            XdsSizes::from_toml_str(XDS_SIZES).context("the shipped models/xds-sizes.toml")?;
        Ok(MeshData {
            calibration,
            xds_sizes,
        })
    }

    pub fn inputs(&self, record_xds: bool) -> MeshInputs<'_> {
        MeshInputs {
            calibration: &self.calibration,
            xds_sizes: Some(&self.xds_sizes),
            record_xds,
        }
    }
}

/// The scenario name of a mesh profile (`none` is the paper's `no-mesh`).
pub fn scenario_name(profile: &str) -> String {
    if profile == "none" {
        "no-mesh".to_owned()
    } else {
        profile.to_owned()
    }
}

/// The config of one scenario: `base` with the mesh profile (and policy list) selected.
pub fn scenario_config(
    base: &SimConfig,
    profile: &str,
    policies: Option<&[String]>,
) -> Result<SimConfig> {
    let mut cfg = base.clone();
    cfg.mesh.profile = profile.to_owned();
    if let Some(p) = policies {
        cfg.mesh.policies = Some(
            p.iter()
                .filter(|x| x.as_str() != "none")
                .map(|x| x.replace('-', "_"))
                .collect(),
        );
    }
    cfg.mesh
        .resolve()
        .with_context(|| format!("mesh profile '{profile}'"))?;
    Ok(cfg)
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

/// Runs one simulation (the mesh selected by `cfg.mesh`) with a progress bar, timing it.
pub fn simulate(
    trace: &Arc<Trace>,
    cfg: &SimConfig,
    data: &MeshData,
    opts: &RunOptions,
    record_xds: bool,
    label: &str,
) -> Result<(RunResult, f64)> {
    let progress = Progress::new(trace.invocations(), label);
    let start = std::time::Instant::now();
    let result = meshsim_sim::run_configured(
        trace.clone(),
        cfg,
        data.inputs(record_xds),
        opts,
        &mut |done, _| progress.set(done),
    )
    .with_context(|| format!("simulating {label}"))?;
    let wall = start.elapsed().as_secs_f64();
    progress.finish();
    Ok((result, wall))
}

pub fn run(a: ReplayArgs) -> Result<()> {
    let base = load_config(a.config.as_deref())?;
    let data = MeshData::load(a.calibration.as_deref())?;
    let profiles: Vec<String> = match a.mesh.as_slice() {
        [] => vec![base.mesh.profile.clone()],
        [one] if one == "all" => meshsim_models::mesh::BUILTIN_PROFILES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        many => many.to_vec(),
    };
    let configs = profiles
        .iter()
        .map(|p| scenario_config(&base, p, a.policies.as_deref()))
        .collect::<Result<Vec<_>>>()?;
    let full = load_trace(&a.trace)?;
    let trace = Arc::new(full.window_after(a.skip_minutes, a.minutes)?);
    let opts = RunOptions {
        seed: a.seed,
        replication: 0,
        record_invocations: !a.no_invocations,
    };
    let results = configs
        .par_iter()
        .zip(&profiles)
        .map(|(cfg, p)| simulate(&trace, cfg, &data, &opts, true, &scenario_name(p)))
        .collect::<Result<Vec<_>>>()?;

    let mut scenarios = serde_json::Map::new();
    for (p, (r, wall)) in profiles.iter().zip(&results) {
        scenarios.insert(scenario_name(p), scenario_json(r, *wall)?);
    }
    let summary =
        json!({ "schema": 1, "seed": a.seed, "trace": trace_json(&trace), "scenarios": scenarios });
    write_json(&a.out.join("summary.json"), &summary)?;
    let total_wall: f64 = results.iter().map(|r| r.1).sum();
    let digest = results.iter().fold(0u64, |h, (r, _)| {
        meshsim_traces::rng::splitmix64(h ^ r.digest)
    });
    let events = results.iter().map(|(r, _)| r.events).sum();
    write_run_json(
        &a.out,
        &configs,
        &base,
        a.seed,
        &trace,
        total_wall,
        digest,
        events,
        a.calibration.as_deref(),
    )?;
    let named: Vec<(String, &RunResult)> = profiles
        .iter()
        .map(|p| scenario_name(p))
        .zip(results.iter().map(|r| &r.0))
        .collect();
    write_node_seconds(&a.out.join("node_seconds.parquet"), &named)?;
    write_xds(&a.out.join("xds_transactions.parquet"), &named)?;
    if !a.no_invocations {
        write_invocations(&a.out.join("invocations.parquet"), &trace, &named)?;
        let series: Vec<(String, &[meshsim_sim::InvocationRecord])> = named
            .iter()
            .map(|(n, r)| (n.clone(), r.invocations.as_deref().unwrap_or(&[])))
            .collect();
        slowdown_cdf(&a.out.join("slowdown_cdf"), &series)?;
    }
    for ((name, r), (_, wall)) in named.iter().zip(&results) {
        print_summary(name, r, *wall);
    }
    crate::outln!("results in {}", a.out.display());
    Ok(())
}

/// Writes `run.json`: what produced the results.
#[allow(clippy::too_many_arguments)]
pub fn write_run_json(
    out: &Path,
    scenario_configs: &[SimConfig],
    base: &SimConfig,
    seed: u64,
    trace: &Trace,
    wall_s: f64,
    digest: u64,
    events: u64,
    calibration: Option<&Path>,
) -> Result<()> {
    let scenarios: serde_json::Map<String, Value> = scenario_configs
        .iter()
        .map(|c| (scenario_name(&c.mesh.profile), json!({ "config_hash": config_hash(c), "mesh": serde_json::to_value(&c.mesh).unwrap_or(Value::Null) })))
        .collect();
    let run = json!({
        "seed": seed,
        "config": serde_json::to_value(base)?,
        "config_hash": config_hash(base),
        "scenarios": scenarios,
        "calibration": calibration.map_or_else(|| "models/calibration/reference-2core.toml (shipped)".to_owned(), |p| p.display().to_string()),
        "git_revision": env!("MESHSIM_GIT_REV"),
        "meshsim_version": env!("CARGO_PKG_VERSION"),
        "trace": trace.source,
        "first_minute": trace.first_minute,
        "minutes": trace.minutes,
        "command": std::env::args().collect::<Vec<_>>(),
        "event_digest": format!("{digest:016x}"),
        "events": events,
        "wall_s": wall_s,
    });
    write_json(&out.join("run.json"), &run)
}

fn print_summary(scenario: &str, r: &RunResult, wall: f64) {
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
    let f = &s.per_function_slowdown;
    crate::outln!(
        "  per-function slowdown ({} functions) p50 {:.2} p90 {:.2} p95 {:.2} p99 {:.2} max {:.1}",
        f.functions,
        f.p50,
        f.p90,
        f.p95,
        f.p99,
        f.max
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
    if r.queue_proxy_waits > 0 {
        crate::outln!(
            "  {} requests waited in a busy pod's queue-proxy (longest queue {})",
            r.queue_proxy_waits,
            r.queue_proxy_max_waiting
        );
    }
    crate::outln!(
        "  {} events in {:.3} s wall ({:.2} M events/s)",
        r.events,
        wall,
        r.events as f64 / wall.max(1e-9) / 1e6
    );
}

fn write_parquet(path: &Path, mut df: DataFrame) -> Result<()> {
    let mut buf = Vec::new();
    ParquetWriter::new(&mut buf)
        .with_compression(ParquetCompression::Zstd(None))
        .finish(&mut df)
        .map_err(|e| anyhow::anyhow!("encoding {}: {e}", path.display()))?;
    write_atomic(path, &buf)
}

/// The per-invocation table, all scenarios: the fields of
/// [`meshsim_sim::metrics::InvocationRecord`] (times in ms, `proxy_hops` the mesh proxies on the
/// request's path) with the scenario and the function's trace hash.
pub fn write_invocations(path: &Path, trace: &Trace, runs: &[(String, &RunResult)]) -> Result<()> {
    let rows: Vec<(&str, &meshsim_sim::InvocationRecord)> = runs
        .iter()
        .flat_map(|(name, r)| {
            r.invocations
                .iter()
                .flatten()
                .map(move |x| (name.as_str(), x))
        })
        .collect();
    let n = rows.len();
    let ms = |name: &str, f: &dyn Fn(&meshsim_sim::InvocationRecord) -> u64| {
        Column::new(
            name.into(),
            rows.iter()
                .map(|(_, r)| f(r) as f64 / 1e6)
                .collect::<Vec<f64>>(),
        )
    };
    let df = DataFrame::new(
        n,
        vec![
            Column::new(
                "scenario".into(),
                rows.iter().map(|r| r.0).collect::<Vec<&str>>(),
            ),
            Column::new(
                "function".into(),
                rows.iter().map(|(_, r)| r.function).collect::<Vec<u32>>(),
            ),
            Column::new(
                "function_hash".into(),
                rows.iter()
                    .map(|(_, r)| trace.functions[r.function as usize].hash_function.as_str())
                    .collect::<Vec<&str>>(),
            ),
            Column::new(
                "arrival_s".into(),
                rows.iter()
                    .map(|(_, r)| r.arrival_ns as f64 / 1e9)
                    .collect::<Vec<f64>>(),
            ),
            ms("exec_ms", &|r| r.exec_ns),
            ms("end_to_end_ms", &|r| r.end_to_end_ns),
            Column::new(
                "slowdown".into(),
                rows.iter().map(|(_, r)| r.slowdown).collect::<Vec<f64>>(),
            ),
            Column::new(
                "cold".into(),
                rows.iter().map(|(_, r)| r.cold).collect::<Vec<bool>>(),
            ),
            Column::new(
                "node".into(),
                rows.iter()
                    .map(|(_, r)| r.node.map(u32::from))
                    .collect::<Vec<Option<u32>>>(),
            ),
            ms("queue_ms", &|r| r.queue_ns),
            ms("cold_start_ms", &|r| r.cold_start_ns),
            ms("contention_ms", &|r| r.contention_ns),
            ms("overhead_ms", &|r| r.overhead_ns),
            Column::new(
                "proxy_hops".into(),
                rows.iter()
                    .map(|(_, r)| u32::from(r.proxy_hops))
                    .collect::<Vec<u32>>(),
            ),
            Column::new(
                "failure".into(),
                rows.iter()
                    .map(|(_, r)| r.failure.map(|f| f.as_str()))
                    .collect::<Vec<Option<&str>>>(),
            ),
        ],
    )?;
    write_parquet(path, df)
}

/// The per-second, per-node table, all scenarios: CPU cores by category and memory.
pub fn write_node_seconds(path: &Path, runs: &[(String, &RunResult)]) -> Result<()> {
    let rows: Vec<(&str, &meshsim_sim::NodeSecond)> = runs
        .iter()
        .flat_map(|(name, r)| r.node_seconds.iter().map(move |x| (name.as_str(), x)))
        .collect();
    let n = rows.len();
    let col = |name: &str, f: &dyn Fn(&meshsim_sim::NodeSecond) -> f64| {
        Column::new(
            name.into(),
            rows.iter().map(|(_, x)| f(x)).collect::<Vec<f64>>(),
        )
    };
    let df = DataFrame::new(
        n,
        vec![
            Column::new(
                "scenario".into(),
                rows.iter().map(|r| r.0).collect::<Vec<&str>>(),
            ),
            Column::new(
                "second".into(),
                rows.iter().map(|(_, x)| x.second).collect::<Vec<u32>>(),
            ),
            Column::new(
                "node".into(),
                rows.iter()
                    .map(|(_, x)| u32::from(x.node))
                    .collect::<Vec<u32>>(),
            ),
            Column::new(
                "control_plane".into(),
                rows.iter()
                    .map(|(_, x)| x.control_plane)
                    .collect::<Vec<bool>>(),
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

/// The xDS transaction table, all scenarios: time, receiver, type, direction, bytes.
pub fn write_xds(path: &Path, runs: &[(String, &RunResult)]) -> Result<()> {
    let rows: Vec<(&str, &meshsim_sim::mesh::XdsTransaction)> = runs
        .iter()
        .flat_map(|(name, r)| {
            r.xds_transactions
                .iter()
                .flatten()
                .map(move |x| (name.as_str(), x))
        })
        .collect();
    let n = rows.len();
    let df = DataFrame::new(
        n,
        vec![
            Column::new(
                "scenario".into(),
                rows.iter().map(|r| r.0).collect::<Vec<&str>>(),
            ),
            Column::new(
                "time_s".into(),
                rows.iter()
                    .map(|(_, x)| x.time_ns as f64 / 1e9)
                    .collect::<Vec<f64>>(),
            ),
            Column::new(
                "proxy".into(),
                rows.iter().map(|(_, x)| x.proxy).collect::<Vec<u32>>(),
            ),
            Column::new(
                "receiver".into(),
                rows.iter()
                    .map(|(_, x)| format!("{:?}", x.proxy_kind).to_lowercase())
                    .collect::<Vec<String>>(),
            ),
            Column::new(
                "node".into(),
                rows.iter()
                    .map(|(_, x)| u32::from(x.node))
                    .collect::<Vec<u32>>(),
            ),
            Column::new(
                "type".into(),
                rows.iter()
                    .map(|(_, x)| x.xds_type.as_str())
                    .collect::<Vec<&str>>(),
            ),
            Column::new(
                "ack".into(),
                rows.iter().map(|(_, x)| x.ack).collect::<Vec<bool>>(),
            ),
            Column::new(
                "bytes".into(),
                rows.iter().map(|(_, x)| x.bytes).collect::<Vec<u64>>(),
            ),
        ],
    )?;
    write_parquet(path, df)
}

/// Fig. 1 style, log x: per-invocation slowdown CDFs (completed invocations) beside
/// per-function ones (each function's geometric-mean slowdown, the Dirigent/InVitro reading;
/// see `meshsim_sim::metrics::PerFunctionSlowdown`).
pub fn slowdown_cdf(
    stem: &Path,
    scenarios: &[(String, &[meshsim_sim::InvocationRecord])],
) -> Result<[PathBuf; 2]> {
    let mut per_invocation = Chart::new(
        "Per-invocation slowdown",
        "slowdown (end-to-end / execution time, x)",
        "CDF over invocations",
    );
    let mut per_function = Chart::new(
        "Per-function slowdown",
        "geometric mean of a function's slowdowns (x)",
        "CDF over functions",
    );
    for c in [&mut per_invocation, &mut per_function] {
        c.x_log = true;
        c.y_range = Some((0.0, 1.0));
    }
    for (name, recs) in scenarios {
        let completed: Vec<f64> = recs
            .iter()
            .filter(|x| x.failure.is_none())
            .map(|x| x.slowdown)
            .collect();
        per_invocation.series.push(Series {
            name: name.clone(),
            points: cdf_points(&completed, 2000),
            mark: Mark::Line,
        });
        per_function.series.push(Series {
            name: name.clone(),
            points: cdf_points(
                &meshsim_sim::metrics::per_function_slowdowns(recs.iter()),
                2000,
            ),
            mark: Mark::Line,
        });
    }
    render(stem, &[per_invocation, per_function], 2)
}
