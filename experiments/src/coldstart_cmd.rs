//! `meshsim coldstart`: the cold-start microbenchmark (distinct functions, each invoked once,
//! at fixed cold-start rates): latency p50/p99 and achieved throughput vs rate, as a table
//! (printed, CSV and Parquet) and a figure.

use crate::figures::{Chart, Mark, Series, render};
use crate::output::write_atomic;
use crate::replay::{MeshData, load_config, scenario_config, scenario_name};
use anyhow::{Context, Result, bail};
use clap::Args;
use meshsim_models::mesh::DataPlaneKind;
use meshsim_sim::coldstart::{self, ColdStartPoint};
use meshsim_sim::mesh::{NoMesh, SidecarModel};
use meshsim_sim::meshmodel::MeshModel;
use polars::prelude::*;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct ColdStartArgs {
    /// Offered cold starts per second, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "0.5,1,1.5,2,2.5,3")]
    pub rates: Vec<f64>,
    /// Cold starts per rate (distinct functions, each invoked once). Above the knee the latency
    /// grows with this number.
    #[arg(long, default_value_t = 200)]
    pub count: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Runs per rate, with seeds `seed`, `seed + 1`, ...; each point averages them (see
    /// [`mean_point`]). With a mesh, one run's p50 sits on the 1 s lattice of the sidecar's
    /// startup probe, and which step a pod lands on depends on its node's PLEG phase, drawn
    /// per seed, so one seed says little.
    #[arg(long, default_value_t = 10)]
    pub seeds: u64,
    /// Mesh profile(s) to compare, comma separated (none, istio, linkerd, lightweight, ...).
    #[arg(long, value_delimiter = ',', default_value = "none,istio")]
    pub mesh: Vec<String>,
    /// Simulation config (TOML). Defaults to the paper's cluster.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Output directory.
    #[arg(long, default_value = "results/coldstart")]
    pub out: PathBuf,
}

/// Runs the benchmark at every rate with the mesh selected by `cfg.mesh`, once per seed
/// `seed..seed + seeds` (in parallel; results in rate order), and averages the runs of each
/// rate with [`mean_point`].
pub fn sweep(
    cfg: &meshsim_models::SimConfig,
    data: &MeshData,
    rates: &[f64],
    count: usize,
    seed: u64,
    seeds: u64,
) -> Result<Vec<ColdStartPoint>> {
    let profile = cfg.mesh.resolve()?;
    let runs: Vec<(f64, u64)> = rates
        .iter()
        .flat_map(|&r| (seed..seed + seeds.max(1)).map(move |s| (r, s)))
        .collect();
    let points: Vec<ColdStartPoint> = runs
        .par_iter()
        .map(|&(r, seed)| {
            let mesh: Box<dyn SidecarModel> = if profile.data_plane.kind == DataPlaneKind::None {
                Box::new(NoMesh)
            } else {
                Box::new(MeshModel::new(
                    &profile,
                    cfg,
                    count,
                    data.inputs(false),
                    seed,
                    0,
                )?)
            };
            coldstart::run_with_mesh(cfg, r, count, seed, mesh)
                .with_context(|| format!("cold-start benchmark at {r}/s, seed {seed}"))
        })
        .collect::<Result<_>>()?;
    Ok(points
        .chunks(seeds.max(1) as usize)
        .map(mean_point)
        .collect())
}

/// One point from runs of the same rate: the mean of each statistic (p50, p99, the activator
/// wait, achieved throughput, writes per cold start), the largest maximum, and the sums of the
/// counts (cold starts, completed, failed, events).
pub fn mean_point(runs: &[ColdStartPoint]) -> ColdStartPoint {
    let n = runs.len().max(1) as f64;
    let mean = |f: fn(&ColdStartPoint) -> f64| runs.iter().map(f).sum::<f64>() / n;
    ColdStartPoint {
        rate: runs.first().map_or(0.0, |p| p.rate),
        count: runs.iter().map(|p| p.count).sum(),
        runs: runs.iter().map(|p| p.runs).sum(),
        p50_s: mean(|p| p.p50_s),
        p99_s: mean(|p| p.p99_s),
        max_s: runs.iter().map(|p| p.max_s).fold(0.0, f64::max),
        wait_p50_s: mean(|p| p.wait_p50_s),
        achieved_throughput_per_s: mean(|p| p.achieved_throughput_per_s),
        completed: runs.iter().map(|p| p.completed).sum(),
        failed: runs.iter().map(|p| p.failed).sum(),
        api_writes_per_cold_start: mean(|p| p.api_writes_per_cold_start),
        events: runs.iter().map(|p| p.events).sum(),
    }
}

pub fn run(a: ColdStartArgs) -> Result<()> {
    if a.rates.is_empty() || a.rates.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
        bail!(
            "--rates: expected positive numbers of cold starts per second, found {:?}",
            a.rates
        );
    }
    if a.count == 0 {
        bail!("--count: expected at least 1");
    }
    if a.seeds == 0 {
        bail!("--seeds: expected at least 1");
    }
    let base = load_config(a.config.as_deref())?;
    let data = MeshData::load(None)?;
    let mut curves = Vec::new();
    for profile in &a.mesh {
        let cfg = scenario_config(&base, profile, None)?;
        let points = sweep(&cfg, &data, &a.rates, a.count, a.seed, a.seeds)?;
        let name = scenario_name(profile);
        crate::outln!("{name}:");
        crate::outln!(
            "{:>10} {:>10} {:>10} {:>12} {:>10}",
            "rate /s",
            "p50 s",
            "p99 s",
            "achieved /s",
            "failed"
        );
        for p in &points {
            crate::outln!(
                "{:>10.2} {:>10.3} {:>10.3} {:>12.3} {:>10}",
                p.rate,
                p.p50_s,
                p.p99_s,
                p.achieved_throughput_per_s,
                p.failed
            );
        }
        curves.push((name, points));
    }
    write_table(&a.out, &curves)?;
    figure(&a.out.join("coldstart"), &curves)?;
    crate::outln!("results in {}", a.out.display());
    Ok(())
}

/// Writes `coldstart.csv` and `coldstart.parquet`.
pub fn write_table(out: &Path, curves: &[(String, Vec<ColdStartPoint>)]) -> Result<()> {
    let points: Vec<&ColdStartPoint> = curves.iter().flat_map(|c| c.1.iter()).collect();
    let names: Vec<&str> = curves
        .iter()
        .flat_map(|c| c.1.iter().map(|_| c.0.as_str()))
        .collect();
    let n = points.len();
    let f = |name: &str, g: &dyn Fn(&ColdStartPoint) -> f64| {
        Column::new(
            name.into(),
            points.iter().map(|p| g(p)).collect::<Vec<f64>>(),
        )
    };
    let mut df = DataFrame::new(
        n,
        vec![
            Column::new("scenario".into(), names),
            f("rate_per_s", &|p| p.rate),
            Column::new(
                "count".into(),
                points.iter().map(|p| p.count as u64).collect::<Vec<u64>>(),
            ),
            Column::new(
                "runs".into(),
                points.iter().map(|p| p.runs).collect::<Vec<u32>>(),
            ),
            f("p50_s", &|p| p.p50_s),
            f("p99_s", &|p| p.p99_s),
            f("max_s", &|p| p.max_s),
            f("achieved_throughput_per_s", &|p| {
                p.achieved_throughput_per_s
            }),
            Column::new(
                "completed".into(),
                points.iter().map(|p| p.completed).collect::<Vec<u64>>(),
            ),
            Column::new(
                "failed".into(),
                points.iter().map(|p| p.failed).collect::<Vec<u64>>(),
            ),
            f("api_writes_per_cold_start", &|p| {
                p.api_writes_per_cold_start
            }),
        ],
    )?;
    let mut csv = Vec::new();
    CsvWriter::new(&mut csv)
        .finish(&mut df)
        .map_err(|e| anyhow::anyhow!("encoding CSV: {e}"))?;
    write_atomic(&out.join("coldstart.csv"), &csv)?;
    let mut pq = Vec::new();
    ParquetWriter::new(&mut pq)
        .finish(&mut df)
        .map_err(|e| anyhow::anyhow!("encoding Parquet: {e}"))?;
    write_atomic(&out.join("coldstart.parquet"), &pq)
}

/// Two panels: latency p50/p99 vs offered rate; achieved vs offered throughput.
pub fn figure(stem: &Path, scenarios: &[(String, Vec<ColdStartPoint>)]) -> Result<[PathBuf; 2]> {
    let mut lat = Chart::new(
        "Cold-start latency",
        "offered cold starts per second (1/s)",
        "cold-start latency (s)",
    );
    lat.y_log = true;
    let mut thr = Chart::new(
        "Cold-start throughput",
        "offered cold starts per second (1/s)",
        "achieved cold starts per second (1/s)",
    );
    let max_rate = scenarios
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.rate))
        .fold(0.0, f64::max);
    thr.series.push(Series {
        name: "offered = achieved".into(),
        points: vec![(0.0, 0.0), (max_rate, max_rate)],
        mark: Mark::Line,
    });
    for (name, pts) in scenarios {
        lat.series.push(Series {
            name: format!("{name} p50"),
            points: pts.iter().map(|p| (p.rate, p.p50_s)).collect(),
            mark: Mark::LinePoints,
        });
        lat.series.push(Series {
            name: format!("{name} p99"),
            points: pts.iter().map(|p| (p.rate, p.p99_s)).collect(),
            mark: Mark::LinePoints,
        });
        thr.series.push(Series {
            name: name.clone(),
            points: pts
                .iter()
                .map(|p| (p.rate, p.achieved_throughput_per_s))
                .collect(),
            mark: Mark::LinePoints,
        });
    }
    render(stem, &[lat, thr], 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(p50_s: f64, max_s: f64, failed: u64) -> ColdStartPoint {
        ColdStartPoint {
            rate: 1.0,
            count: 60,
            runs: 1,
            p50_s,
            p99_s: 2.0 * p50_s,
            max_s,
            wait_p50_s: p50_s - 0.5,
            achieved_throughput_per_s: p50_s / 4.0,
            completed: 60 - failed,
            failed,
            api_writes_per_cold_start: 12.0,
            events: 1000,
        }
    }

    #[test]
    fn a_point_of_several_runs_averages_statistics_and_sums_counts() {
        let m = mean_point(&[point(3.38, 4.0, 0), point(4.38, 6.0, 2)]);
        assert_eq!(m.rate, 1.0);
        assert!((m.p50_s - 3.88).abs() < 1e-12, "{}", m.p50_s);
        assert!((m.p99_s - 7.76).abs() < 1e-12);
        assert!((m.wait_p50_s - 3.38).abs() < 1e-12);
        assert!((m.achieved_throughput_per_s - 0.97).abs() < 1e-12);
        assert_eq!(m.max_s, 6.0, "the largest maximum, not a mean");
        assert_eq!(
            (m.count, m.completed, m.failed, m.events),
            (120, 118, 2, 2000)
        );
        assert_eq!(m.runs, 2);
        assert_eq!(m.api_writes_per_cold_start, 12.0);
    }
}
