//! `meshsim reproduce`: every scenario of the paper on the bundled trace, its figures, and
//! `report.md` with headline numbers (mean and 95 % confidence interval over replications).
//!
//! Runs, all in parallel (rayon) and each deterministic:
//! - the six scenarios `no-mesh`, `istio`, `istio-policies`, `linkerd`, `linkerd-policies`,
//!   `lightweight`, plus `ambient` for the lightweight comparison, times `--replications`
//!   (replication r uses the named streams of (seed, r));
//! - the policy ablation on istio: each policy alone and all-but-one (replication 0);
//! - the cold-start benchmark at 0.5..3 cold starts/s without a mesh and with istio;
//! - the tipping-point study: no-mesh, istio, istio-policies, linkerd and lightweight at six
//!   API-server write capacities around the fitted one, times `--replications`.
//!
//! The base config is InVitro's deployment shape (`models/profiles/invitro-knative.toml`:
//! container concurrency 1, target utilisation 100 %, activator always on the path), because
//! InVitro is the load generator the paper's Knative cluster ran; `--config` replaces it.

use crate::coldstart_cmd;
use crate::figures::{Chart, Mark, Series, cdf_points, render};
use crate::output::write_atomic;
use crate::progress::Progress;
use crate::replay::{
    MeshData, load_config, scenario_config, scenario_json, slowdown_cdf, trace_json,
    write_invocations, write_node_seconds, write_xds,
};
use anyhow::{Context, Result, bail};
use clap::Args;
use meshsim_models::SimConfig;
use meshsim_models::calibration::POLICIES;
use meshsim_sim::mesh::ProxyKind;
use meshsim_sim::{RunOptions, RunResult};
use rayon::prelude::*;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The paper's scenarios (Fig. 1) and the profile each runs.
pub const SCENARIOS: [(&str, &str); 7] = [
    ("no-mesh", "none"),
    ("istio", "istio"),
    ("istio-policies", "istio-policies"),
    ("linkerd", "linkerd"),
    ("linkerd-policies", "linkerd-policies"),
    ("lightweight", "lightweight"),
    ("ambient", "ambient"),
];

#[derive(Debug, Args)]
pub struct ReproduceArgs {
    /// Output directory (figures, tables, report.md).
    #[arg(long, default_value = "results/reproduce")]
    pub out: PathBuf,
    /// Replications per scenario (different seeds) for the confidence intervals.
    #[arg(long, default_value_t = 3)]
    pub replications: u32,
    /// Trace (directory or `embedded:<name>`).
    #[arg(long, default_value = crate::trace_cmd::DEFAULT_TRACE)]
    pub trace: String,
    #[arg(long, default_value_t = 30)]
    pub minutes: u32,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Base simulation config (TOML); the mesh profile is set per scenario. Default: Knative
    /// as InVitro (the paper's load generator) deploys functions,
    /// `models/profiles/invitro-knative.toml`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Calibration file (default: the shipped one).
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Cold starts per rate in the cold-start benchmark.
    #[arg(long, default_value_t = 200)]
    pub coldstart_count: usize,
}

/// The scenarios of the tipping-point study (a subset of [`SCENARIOS`], same profiles).
const TIP_SCENARIOS: [&str; 5] = [
    "no-mesh",
    "istio",
    "istio-policies",
    "linkerd",
    "lightweight",
];

/// API-server write capacities (writes/s) of the tipping-point study, around the fitted 25/s
/// (10 writes per cold start at the paper's 2.5 cold starts/s knee).
const TIP_WRITES: [u32; 6] = [20, 25, 27, 30, 35, 50];

/// The base config of `reproduce`: the given file, or InVitro's deployment shape.
fn reproduce_base(path: Option<&Path>) -> Result<SimConfig> {
    match path {
        Some(_) => load_config(path),
        None => Ok(SimConfig::from_toml_str(
            include_str!("../../models/profiles/invitro-knative.toml"),
            "models/profiles/invitro-knative.toml",
        )?),
    }
}

struct Job {
    scenario: String,
    cfg: SimConfig,
    replication: u32,
    detail: bool,
}

/// Mean and half-width of the 95 % confidence interval (Student t) of `v`.
pub fn mean_ci95(v: &[f64]) -> (f64, Option<f64>) {
    let n = v.len();
    let mean = v.iter().sum::<f64>() / n.max(1) as f64;
    if n < 2 {
        return (mean, None);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    // Two-sided 97.5 % quantiles of Student's t for 1..=30 degrees of freedom, then normal.
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    let t = T.get(n - 2).copied().unwrap_or(1.96);
    (mean, Some(t * (var / n as f64).sqrt()))
}

fn metric(v: &Value, path: &str) -> f64 {
    path.split('.')
        .fold(v, |v, k| &v[k])
        .as_f64()
        .unwrap_or(f64::NAN)
}

pub fn run(a: ReproduceArgs) -> Result<()> {
    if a.replications == 0 {
        bail!("--replications: expected at least 1");
    }
    let wall = std::time::Instant::now();
    let base = reproduce_base(a.config.as_deref())?;
    let data = MeshData::load(a.calibration.as_deref())?;
    let trace = Arc::new(crate::trace_cmd::load_trace(&a.trace)?.window(a.minutes)?);

    let mut jobs = Vec::new();
    for (name, profile) in SCENARIOS {
        let cfg = scenario_config(&base, profile, None)?;
        for r in 0..a.replications {
            jobs.push(Job {
                scenario: name.to_owned(),
                cfg: cfg.clone(),
                replication: r,
                detail: r == 0,
            });
        }
    }
    let all: Vec<String> = POLICIES.iter().map(|s| s.to_string()).collect();
    for p in POLICIES {
        let alone = vec![p.to_owned()];
        let but: Vec<String> = all.iter().filter(|x| x.as_str() != p).cloned().collect();
        jobs.push(Job {
            scenario: format!("only:{p}"),
            cfg: scenario_config(&base, "istio", Some(&alone))?,
            replication: 0,
            detail: false,
        });
        jobs.push(Job {
            scenario: format!("all-but:{p}"),
            cfg: scenario_config(&base, "istio", Some(&but))?,
            replication: 0,
            detail: false,
        });
    }
    let fitted = base.kubernetes.api_writes_per_s;
    for w in TIP_WRITES {
        // At the base capacity the study's runs are the scenarios above (same config and seeds).
        if f64::from(w) == fitted {
            continue;
        }
        let mut b = base.clone();
        b.kubernetes.api_writes_per_s = f64::from(w);
        for (name, profile) in SCENARIOS.iter().filter(|s| TIP_SCENARIOS.contains(&s.0)) {
            let cfg = scenario_config(&b, profile, None)?;
            for r in 0..a.replications {
                jobs.push(Job {
                    scenario: tip_name(name, w, fitted),
                    cfg: cfg.clone(),
                    replication: r,
                    detail: false,
                });
            }
        }
    }

    let progress = Progress::new(jobs.len() as u64, "reproduce");
    let results: Vec<(RunResult, f64)> = jobs
        .par_iter()
        .map(|j| {
            let opts = RunOptions {
                seed: a.seed,
                replication: j.replication,
                record_invocations: j.detail,
            };
            let start = std::time::Instant::now();
            let r = meshsim_sim::run_configured(
                trace.clone(),
                &j.cfg,
                data.inputs(j.detail),
                &opts,
                &mut |_, _| {},
            )
            .with_context(|| format!("scenario {} replication {}", j.scenario, j.replication));
            progress.inc(1);
            r.map(|r| (r, start.elapsed().as_secs_f64()))
        })
        .collect::<Result<_>>()?;
    progress.finish();

    let rates = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0];
    let cs_none = coldstart_cmd::sweep(
        &scenario_config(&base, "none", None)?,
        &data,
        &rates,
        a.coldstart_count,
        a.seed,
    )?;
    let cs_istio = coldstart_cmd::sweep(
        &scenario_config(&base, "istio", None)?,
        &data,
        &rates,
        a.coldstart_count,
        a.seed,
    )?;

    let out = &a.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // Replication 0 of each scenario: the detailed tables and the figures.
    let detail: Vec<(String, &RunResult)> = jobs
        .iter()
        .zip(&results)
        .filter(|(j, _)| j.detail)
        .map(|(j, r)| (j.scenario.clone(), &r.0))
        .collect();
    write_invocations(&out.join("invocations.parquet"), &trace, &detail)?;
    write_node_seconds(&out.join("node_seconds.parquet"), &detail)?;
    write_xds(&out.join("xds_transactions.parquet"), &detail)?;

    let mut figures = Vec::new();
    let fig1: Vec<(String, Vec<f64>)> = detail
        .iter()
        .filter(|(n, _)| n != "ambient")
        .map(|(n, r)| {
            (
                n.clone(),
                r.invocations
                    .iter()
                    .flatten()
                    .filter(|x| x.failure.is_none())
                    .map(|x| x.slowdown)
                    .collect(),
            )
        })
        .collect();
    slowdown_cdf(&out.join("fig1_slowdown_cdf"), &fig1)?;
    figures.push((
        "fig1_slowdown_cdf",
        "Fig. 1: per-invocation slowdown CDF per scenario (log x).",
    ));
    fig3(&out.join("fig3_node_utilisation"), &detail, &base)?;
    figures.push(("fig3_node_utilisation", "Fig. 3: CDFs over (node, second) samples of CPU and memory, workers and the control-plane node."));
    fig4(&out.join("fig4_xds_over_time"), &detail)?;
    figures.push(("fig4_xds_over_time", "Fig. 4: xDS transactions per second over time, with cold starts per second (istio, istio-policies)."));
    fig5(&out.join("fig5_xds_payload_cdf"), &detail)?;
    figures.push(("fig5_xds_payload_cdf", "Fig. 5: CDF of xDS payload sizes (responses), by receiver: sidecars vs the ingress gateway (istio-policies)."));
    coldstart_cmd::figure(
        &out.join("coldstart"),
        &[
            ("no-mesh".to_owned(), cs_none.clone()),
            ("istio".to_owned(), cs_istio.clone()),
        ],
    )?;
    figures.push(("coldstart", "Cold-start latency (p50, p99) and achieved throughput vs offered cold-start rate, without a mesh and with istio sidecars."));

    // Summaries per (scenario, replication).
    let summaries: Vec<(String, u32, Value)> = jobs
        .iter()
        .zip(&results)
        .map(|(j, (r, w))| Ok((j.scenario.clone(), j.replication, scenario_json(r, *w)?)))
        .collect::<Result<_>>()?;
    let mean_worker_cpu: Vec<(String, f64)> = jobs
        .iter()
        .zip(&results)
        .filter(|(j, _)| j.replication == 0)
        .map(|(j, (r, _))| (j.scenario.clone(), mean_worker_cores(r)))
        .collect();
    ablation(&out.join("policy_ablation"), &summaries, &mean_worker_cpu)?;
    figures.push(("policy_ablation", "Policy ablation on istio: slowdown p95 and mean CPU in use on all workers, with each policy alone and with all but one."));
    lightweight(&out.join("lightweight_comparison"), &summaries)?;
    figures.push(("lightweight_comparison", "The lightweight sidecar against no mesh, istio, linkerd and ambient: slowdown, CPU, memory, cold start, control-plane load (mean over replications)."));
    let tipping = tipping_table(&summaries, fitted);
    write_atomic(
        &out.join("tipping_point.csv"),
        tipping_csv(&tipping).as_bytes(),
    )?;
    tipping_figure(&out.join("tipping_point"), &tipping, fitted)?;
    figures.push(("tipping_point", "Tipping point: slowdown p50 and p95 of each mesh relative to no-mesh (same seed and replication) against the API server's write capacity; geometric mean over replications; the vertical line marks the base config's capacity."));

    let summary = json!({
        "schema": 1, "seed": a.seed, "trace": trace_json(&trace),
        "scenarios": summaries.iter().filter(|s| s.1 == 0).map(|s| (s.0.clone(), s.2.clone())).collect::<serde_json::Map<_, _>>(),
    });
    crate::output::write_json(&out.join("summary.json"), &summary)?;
    let report = report_md(
        &a,
        &summaries,
        &figures,
        (&cs_none, &cs_istio),
        (&tipping, fitted),
        wall.elapsed().as_secs_f64(),
    );
    write_atomic(&out.join("report.md"), report.as_bytes())?;
    crate::outln!(
        "{} runs + 2 cold-start curves in {:.1} s; report in {}",
        jobs.len(),
        wall.elapsed().as_secs_f64(),
        out.join("report.md").display()
    );
    Ok(())
}

fn fig3(stem: &Path, detail: &[(String, &RunResult)], cfg: &SimConfig) -> Result<()> {
    let mut charts = [
        Chart::new(
            "Worker CPU",
            "CPU used per worker (cores)",
            "CDF over (worker, second)",
        ),
        Chart::new(
            "Worker memory",
            "memory used per worker (GiB)",
            "CDF over (worker, second)",
        ),
        Chart::new(
            "Control-plane CPU",
            "CPU used on the control-plane node (cores)",
            "CDF over seconds",
        ),
        Chart::new(
            "Control-plane memory",
            "memory used on the control-plane node (GiB)",
            "CDF over seconds",
        ),
    ];
    let _ = cfg;
    for (name, r) in detail.iter().filter(|(n, _)| n != "ambient") {
        let pick = |cp: bool, f: &dyn Fn(&meshsim_sim::NodeSecond) -> f64| -> Vec<f64> {
            r.node_seconds
                .iter()
                .filter(|x| x.control_plane == cp)
                .map(f)
                .collect()
        };
        let vals = [
            pick(false, &|x| x.cpu_cores.total()),
            pick(false, &|x| x.memory_gib),
            pick(true, &|x| x.cpu_cores.total()),
            pick(true, &|x| x.memory_gib),
        ];
        for (c, v) in charts.iter_mut().zip(vals) {
            c.series.push(Series {
                name: name.clone(),
                points: cdf_points(&v, 1000),
                mark: Mark::Line,
            });
        }
    }
    for c in &mut charts {
        c.y_range = Some((0.0, 1.0));
    }
    render(stem, &charts, 2)?;
    Ok(())
}

fn per_second(times_s: impl Iterator<Item = f64>, horizon: usize) -> Vec<(f64, f64)> {
    let mut buckets = vec![0u64; horizon.max(1)];
    for t in times_s {
        let i = (t.max(0.0) as usize).min(buckets.len() - 1);
        buckets[i] += 1;
    }
    buckets
        .iter()
        .enumerate()
        .map(|(i, &c)| (i as f64, c as f64))
        .collect()
}

fn fig4(stem: &Path, detail: &[(String, &RunResult)]) -> Result<()> {
    let mut xds = Chart::new(
        "xDS transactions over time",
        "time (s)",
        "xDS transactions per second",
    );
    let mut cold = Chart::new(
        "Cold starts over time",
        "time (s)",
        "cold starts per second",
    );
    for (name, r) in detail
        .iter()
        .filter(|(n, _)| n == "istio" || n == "istio-policies")
    {
        let horizon = r
            .node_seconds
            .iter()
            .map(|x| x.second as usize + 1)
            .max()
            .unwrap_or(1);
        let tx = r
            .xds_transactions
            .iter()
            .flatten()
            .map(|x| x.time_ns as f64 / 1e9);
        xds.series.push(Series {
            name: name.clone(),
            points: per_second(tx, horizon),
            mark: Mark::Line,
        });
        let cs = r
            .invocations
            .iter()
            .flatten()
            .filter(|x| x.cold)
            .map(|x| x.arrival_ns as f64 / 1e9);
        cold.series.push(Series {
            name: name.clone(),
            points: per_second(cs, horizon),
            mark: Mark::Line,
        });
    }
    render(stem, &[xds, cold], 1)?;
    Ok(())
}

fn fig5(stem: &Path, detail: &[(String, &RunResult)]) -> Result<()> {
    let mut c = Chart::new(
        "xDS payload sizes",
        "payload (bytes)",
        "CDF over xDS responses",
    );
    c.x_log = true;
    c.y_range = Some((0.0, 1.0));
    if let Some((_, r)) = detail.iter().find(|(n, _)| n == "istio-policies") {
        let sizes = |gw: bool| -> Vec<f64> {
            r.xds_transactions
                .iter()
                .flatten()
                .filter(|x| !x.ack && (x.proxy_kind == ProxyKind::Gateway) == gw)
                .map(|x| x.bytes as f64)
                .collect()
        };
        c.series.push(Series {
            name: "sidecars".into(),
            points: cdf_points(&sizes(false), 2000),
            mark: Mark::Line,
        });
        c.series.push(Series {
            name: "ingress gateway".into(),
            points: cdf_points(&sizes(true), 2000),
            mark: Mark::Line,
        });
    }
    render(stem, &[c], 1)?;
    Ok(())
}

/// Mean CPU cores in use on all workers together over the run.
fn mean_worker_cores(r: &RunResult) -> f64 {
    let w: Vec<&meshsim_sim::NodeSecond> =
        r.node_seconds.iter().filter(|x| !x.control_plane).collect();
    let seconds = w.iter().map(|x| x.second).max().map_or(1, |s| s + 1);
    w.iter().map(|x| x.cpu_cores.total()).sum::<f64>() / f64::from(seconds)
}

fn ablation(stem: &Path, summaries: &[(String, u32, Value)], cpu: &[(String, f64)]) -> Result<()> {
    let cpu_of = |name: &str| cpu.iter().find(|c| c.0 == name).map(|c| c.1);
    let rep0 = |name: &str| {
        summaries
            .iter()
            .find(|s| s.0 == name && s.1 == 0)
            .map(|s| &s.2)
    };
    let cats: Vec<String> = POLICIES.iter().map(|s| s.to_string()).collect();
    let mut slow = Chart::new(
        "Policy ablation: slowdown p95",
        "policy",
        "slowdown p95 (x)",
    );
    let mut cpu = Chart::new(
        "Policy ablation: CPU on all workers",
        "policy",
        "mean CPU in use, all workers (cores)",
    );
    slow.x_categories = Some(cats.clone());
    cpu.x_categories = Some(cats);
    for (label, prefix) in [
        ("this policy alone", "only:"),
        ("all but this policy", "all-but:"),
    ] {
        let pts = |m: &str| -> Vec<(f64, f64)> {
            POLICIES
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    rep0(&format!("{prefix}{p}")).map(|v| (i as f64, metric(v, m)))
                })
                .collect()
        };
        slow.series.push(Series {
            name: label.into(),
            points: pts("slowdown.p95"),
            mark: Mark::Points,
        });
        let cpu_pts: Vec<(f64, f64)> = POLICIES
            .iter()
            .enumerate()
            .filter_map(|(i, p)| cpu_of(&format!("{prefix}{p}")).map(|v| (i as f64, v)))
            .collect();
        cpu.series.push(Series {
            name: label.into(),
            points: cpu_pts,
            mark: Mark::Points,
        });
    }
    for (name, scen) in [
        ("no policies (istio)", "istio"),
        ("all nine (istio-policies)", "istio-policies"),
    ] {
        if let Some(v) = rep0(scen) {
            let n = POLICIES.len() as f64;
            slow.series.push(Series {
                name: name.into(),
                points: vec![
                    (-0.4, metric(v, "slowdown.p95")),
                    (n - 0.6, metric(v, "slowdown.p95")),
                ],
                mark: Mark::Line,
            });
            if let Some(c) = cpu_of(scen) {
                cpu.series.push(Series {
                    name: name.into(),
                    points: vec![(-0.4, c), (n - 0.6, c)],
                    mark: Mark::Line,
                });
            }
        }
    }
    render(stem, &[slow, cpu], 1)?;
    Ok(())
}

const COMPARED: [&str; 5] = ["no-mesh", "istio", "linkerd", "ambient", "lightweight"];
const COMPARED_METRICS: [(&str, &str); 6] = [
    ("slowdown.p50", "slowdown p50 (x)"),
    ("slowdown.p95", "slowdown p95 (x)"),
    ("worker_cpu_cores.p95", "worker CPU p95 (cores)"),
    ("worker_mem_gib.p95", "worker memory p95 (GiB)"),
    ("cold_start_s.p50", "cold start p50 (s)"),
    ("cp_cpu_cores.p95", "control-plane CPU p95 (cores)"),
];

fn lightweight(stem: &Path, summaries: &[(String, u32, Value)]) -> Result<()> {
    let cats: Vec<String> = COMPARED.iter().map(|s| s.to_string()).collect();
    let charts: Vec<Chart> = COMPARED_METRICS
        .iter()
        .map(|(m, label)| {
            let mut c = Chart::new(label, "mesh", label);
            c.x_categories = Some(cats.clone());
            let mean: Vec<(f64, f64)> = COMPARED
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let v: Vec<f64> = summaries
                        .iter()
                        .filter(|x| x.0 == *s)
                        .map(|x| metric(&x.2, m))
                        .collect();
                    (i as f64, mean_ci95(&v).0)
                })
                .collect();
            c.series.push(Series {
                name: String::new(),
                points: mean,
                mark: Mark::Points,
            });
            c
        })
        .collect();
    render(stem, &charts, 3)?;
    Ok(())
}

/// The run name of a tipping-point cell: the main scenario itself at the base capacity.
fn tip_name(scenario: &str, writes: u32, base_writes: f64) -> String {
    if f64::from(writes) == base_writes {
        scenario.to_owned()
    } else {
        format!("tip:{scenario}:{writes}")
    }
}

/// One cell of the tipping-point study: a mesh at one API-server capacity, with the per-
/// replication ratios of its slowdown percentiles to no-mesh's (same seed and replication).
struct TipCell {
    scenario: &'static str,
    writes: u32,
    p50: Vec<f64>,
    p95: Vec<f64>,
    failure_rate: Vec<f64>,
}

fn tipping_table(summaries: &[(String, u32, Value)], base_writes: f64) -> Vec<TipCell> {
    let find = |name: &str, r: u32| summaries.iter().find(|s| s.0 == name && s.1 == r);
    let mut cells = Vec::new();
    for w in TIP_WRITES {
        for name in TIP_SCENARIOS {
            let mut c = TipCell {
                scenario: name,
                writes: w,
                p50: Vec::new(),
                p95: Vec::new(),
                failure_rate: Vec::new(),
            };
            let run = tip_name(name, w, base_writes);
            let reference = tip_name("no-mesh", w, base_writes);
            for s in summaries.iter().filter(|s| s.0 == run) {
                let Some(base) = find(&reference, s.1) else {
                    continue;
                };
                c.p50
                    .push(metric(&s.2, "slowdown.p50") / metric(&base.2, "slowdown.p50"));
                c.p95
                    .push(metric(&s.2, "slowdown.p95") / metric(&base.2, "slowdown.p95"));
                c.failure_rate.push(metric(&s.2, "failure_rate"));
            }
            cells.push(c);
        }
    }
    cells
}

/// Geometric mean (ratios), NaN when empty.
fn geo_mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp()
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

fn tipping_csv(cells: &[TipCell]) -> String {
    let mut s = String::from(
        "scenario,api_writes_per_s,replication,slowdown_p50_ratio,slowdown_p95_ratio,failure_rate\n",
    );
    for c in cells {
        for (r, ((p50, p95), f)) in c.p50.iter().zip(&c.p95).zip(&c.failure_rate).enumerate() {
            let _ = writeln!(s, "{},{},{r},{p50},{p95},{f}", c.scenario, c.writes);
        }
    }
    s
}

fn tipping_figure(stem: &Path, cells: &[TipCell], fitted: f64) -> Result<()> {
    let charts: Vec<Chart> = [
        ("p50", "slowdown p50 vs no-mesh (x)"),
        ("p95", "slowdown p95 vs no-mesh (x)"),
    ]
    .iter()
    .map(|(which, label)| {
        let mut c = Chart::new(
            &format!("Slowdown {which} relative to no-mesh"),
            "API server write capacity (writes/s)",
            label,
        );
        c.y_log = true;
        for name in TIP_SCENARIOS.iter().skip(1) {
            let points = cells
                .iter()
                .filter(|x| x.scenario == *name)
                .map(|x| {
                    let v = if *which == "p50" { &x.p50 } else { &x.p95 };
                    (f64::from(x.writes), geo_mean(v))
                })
                .filter(|p| p.1.is_finite() && p.1 > 0.0)
                .collect();
            c.series.push(Series {
                name: (*name).to_owned(),
                points,
                mark: Mark::LinePoints,
            });
        }
        let ys: Vec<f64> = c
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .collect();
        let (lo, hi) = min_max(&ys);
        if lo.is_finite() && hi.is_finite() {
            c.series.push(Series {
                name: "fitted capacity".to_owned(),
                points: vec![(fitted, lo.min(1.0)), (fitted, hi.max(1.0))],
                mark: Mark::Line,
            });
        }
        c
    })
    .collect();
    render(stem, &charts, 2)?;
    Ok(())
}

fn report_md(
    a: &ReproduceArgs,
    summaries: &[(String, u32, Value)],
    figures: &[(&str, &str)],
    (cs_none, cs_istio): (
        &[meshsim_sim::coldstart::ColdStartPoint],
        &[meshsim_sim::coldstart::ColdStartPoint],
    ),
    (tipping, fitted_writes): (&[TipCell], f64),
    wall_s: f64,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# meshsim reproduce\n");
    let _ = writeln!(
        s,
        "Trace `{}`, first {} minutes; seed {}; {} replication(s) per scenario (replication r uses the \
         named random streams of (seed, r)); shipped calibration unless `--calibration` was given. \
         Produced by `meshsim reproduce` (git {}) in {:.1} s wall.\n",
        a.trace,
        a.minutes,
        a.seed,
        a.replications,
        env!("MESHSIM_GIT_REV"),
        wall_s
    );
    let _ = writeln!(
        s,
        "## Headline numbers\n\nMean ± half-width of the 95 % confidence interval (Student t) over replications.\n"
    );
    let cols = [
        ("slowdown.p50", "slowdown p50"),
        ("slowdown.p95", "slowdown p95"),
        ("slowdown.p99", "slowdown p99"),
        ("cold_start_s.p50", "cold start p50 (s)"),
        ("failure_rate", "failure rate"),
        ("worker_cpu_cores.p95", "worker CPU p95 (cores)"),
        ("worker_mem_gib.p95", "worker mem p95 (GiB)"),
        ("cp_cpu_cores.p95", "CP CPU p95 (cores)"),
        ("xds.transactions", "xDS transactions"),
    ];
    let _ = writeln!(
        s,
        "| scenario | {} |",
        cols.iter().map(|c| c.1).collect::<Vec<_>>().join(" | ")
    );
    let _ = writeln!(s, "|---|{}", "---|".repeat(cols.len()));
    for (name, _) in SCENARIOS {
        let cells: Vec<String> = cols
            .iter()
            .map(|(m, _)| {
                let v: Vec<f64> = summaries
                    .iter()
                    .filter(|x| x.0 == name)
                    .map(|x| metric(&x.2, m))
                    .collect();
                match mean_ci95(&v) {
                    (mean, Some(h)) => format!("{} ± {}", fmt(mean), fmt(h)),
                    (mean, None) => fmt(mean),
                }
            })
            .collect();
        let _ = writeln!(s, "| {name} | {} |", cells.join(" | "));
    }
    let ratio = |scen: &str, m: &str| {
        let v = |n: &str| {
            mean_ci95(
                &summaries
                    .iter()
                    .filter(|x| x.0 == n)
                    .map(|x| metric(&x.2, m))
                    .collect::<Vec<_>>(),
            )
            .0
        };
        v(scen) / v("no-mesh")
    };
    let _ = writeln!(
        s,
        "\nistio-policies vs no-mesh: slowdown p50 {:.2}x, p95 {:.2}x (the paper measured 7x and 38.3x on its cluster).\n",
        ratio("istio-policies", "slowdown.p50"),
        ratio("istio-policies", "slowdown.p95")
    );
    let _ = writeln!(
        s,
        "## Cold starts\n\n| rate (1/s) | no-mesh p50 (s) | no-mesh achieved (1/s) | istio p50 (s) | istio achieved (1/s) |\n|---|---|---|---|---|"
    );
    for (n, i) in cs_none.iter().zip(cs_istio) {
        let _ = writeln!(
            s,
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            n.rate, n.p50_s, n.achieved_throughput_per_s, i.p50_s, i.achieved_throughput_per_s
        );
    }
    let _ = writeln!(
        s,
        "\n## Tipping point\n\nThe same scenarios at other API-server write capacities (the fitted \
         value is {:.0} writes/s). Each cell: geometric mean of the per-replication ratio to \
         no-mesh (same seed and replication), with the range over replications; failure rate in \
         brackets. Near the tip the outcome depends on the seed: a burst that outlasts the \
         control plane's spare capacity makes cold starts wait, waiting requests ask for more \
         pods (one request per pod), and those pods' writes lengthen the wait.\n",
        fitted_writes
    );
    let _ = writeln!(
        s,
        "| scenario | {} |\n|---|{}",
        TIP_WRITES
            .iter()
            .map(|w| format!("{w}/s: p50 | {w}/s: p95"))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(2 * TIP_WRITES.len())
    );
    for name in TIP_SCENARIOS.iter().skip(1) {
        let cells: Vec<String> = TIP_WRITES
            .iter()
            .filter_map(|w| {
                tipping
                    .iter()
                    .find(|c| c.scenario == *name && c.writes == *w)
            })
            .map(|c| {
                let one = |v: &[f64]| {
                    let (lo, hi) = min_max(v);
                    format!("{} ({}-{})", fmt(geo_mean(v)), fmt(lo), fmt(hi))
                };
                let fail = c.failure_rate.iter().sum::<f64>() / c.failure_rate.len().max(1) as f64;
                format!("{} | {} [{:.1} %]", one(&c.p50), one(&c.p95), 100.0 * fail)
            })
            .collect();
        let _ = writeln!(s, "| {name} | {} |", cells.join(" | "));
    }
    let _ = writeln!(s, "\n## Figures\n");
    for (stem, caption) in figures {
        let _ = writeln!(
            s,
            "### {stem}\n\n{caption} ([SVG]({stem}.svg))\n\n![{stem}]({stem}.png)\n"
        );
    }
    let _ = writeln!(
        s,
        "## Tables\n\n`summary.json` (replication 0 of every run, DESIGN's schema), `invocations.parquet`, \
         `node_seconds.parquet`, `xds_transactions.parquet` (replication 0 of each scenario), \
         `tipping_point.csv` (every replication of the tipping-point study)."
    );
    s
}

fn fmt(x: f64) -> String {
    if !x.is_finite() {
        "-".to_owned()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::mean_ci95;

    #[test]
    fn confidence_interval_of_known_samples() {
        let (m, h) = mean_ci95(&[1.0, 2.0, 3.0]);
        assert_eq!(m, 2.0);
        // s = 1, n = 3, t(2) = 4.303: 4.303 / sqrt(3)
        assert!((h.unwrap() - 4.303 / 3f64.sqrt()).abs() < 1e-9);
        assert_eq!(mean_ci95(&[5.0]), (5.0, None));
    }
}
