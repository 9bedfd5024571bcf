//! The cold-start microbenchmark (the paper's cold-start latency/throughput experiment):
//! `count` distinct functions, each invoked exactly once, at a fixed rate (equidistant
//! arrivals `i / rate`), so every invocation is a cold start and the control plane sees a
//! steady stream of pod starts. The run stops when the last invocation is answered.
//!
//! [`run`] measures cold starts alone: it keeps every pod for the benchmark's duration (the
//! scale-to-zero grace is raised to 1 h), so no scale-down writes compete with the pod starts
//! and a point does not depend on `count` below the knee. [`run_sustained`] keeps the config's
//! grace: in runs longer than stable window + grace (90 s), each earlier pod's deletion (6
//! writes) competes with the starts, and the control plane sustains only
//! `api_writes_per_s / 16` cold starts per second.
//!
//! Each function executes for `EXEC_NS` (1 ms, a trivial function as in the paper's
//! microbenchmark) and requests `MEMORY_MIB` (128 MiB).
//!
//! Reported: the cold-start latency (arrival to response of the cold invocation, what a client
//! measures) p50/p99, and the achieved throughput: cold starts answered per second between the
//! first and the last answer. Below the knee it equals the offered rate; above it, the control
//! plane's capacity, while the latency grows with `count`.

use crate::SimError;
use crate::engine::{FunctionSpec, SimOptions, Simulation};
use crate::mesh::{NoMesh, SidecarModel};
use crate::metrics::quantile_sorted;
use crate::time::SEC;
use meshsim_models::SimConfig;
use meshsim_traces::Invocation;

/// Execution time of the benchmark's function, ns.
pub const EXEC_NS: u64 = 1_000_000;
/// Memory request of the benchmark's function, MiB.
pub const MEMORY_MIB: u64 = 128;

/// One point of the cold-start curve.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ColdStartPoint {
    /// Offered cold starts per second.
    pub rate: f64,
    /// Cold starts measured (over all runs of the point).
    pub count: usize,
    /// Seeded runs the point stands for (1 for one benchmark run; see the `meshsim coldstart`
    /// command, which averages several).
    pub runs: u32,
    /// Cold-start latency (arrival to response), s.
    pub p50_s: f64,
    pub p99_s: f64,
    pub max_s: f64,
    /// Time buffered at the activator waiting for the pod, p50, s.
    pub wait_p50_s: f64,
    /// Cold starts answered per second between the first and the last answer.
    pub achieved_throughput_per_s: f64,
    pub completed: u64,
    pub failed: u64,
    /// Control-plane writes per cold start (committed writes / count).
    pub api_writes_per_cold_start: f64,
    pub events: u64,
}

/// Grace period the isolated benchmark uses so that no pod scales down during it, s.
pub const HOLD_GRACE_S: u32 = 3_600;

/// Runs the microbenchmark without a mesh, cold starts alone (pods kept).
pub fn run(
    cfg: &SimConfig,
    rate_per_s: f64,
    count: usize,
    seed: u64,
) -> Result<ColdStartPoint, SimError> {
    run_with_mesh(cfg, rate_per_s, count, seed, Box::new(NoMesh))
}

/// Runs the microbenchmark with a mesh model, cold starts alone (pods kept).
pub fn run_with_mesh(
    cfg: &SimConfig,
    rate_per_s: f64,
    count: usize,
    seed: u64,
    mesh: Box<dyn SidecarModel>,
) -> Result<ColdStartPoint, SimError> {
    let mut held = cfg.clone();
    held.knative.scale_to_zero_grace_s = held.knative.scale_to_zero_grace_s.max(HOLD_GRACE_S);
    run_sustained_with_mesh(&held, rate_per_s, count, seed, mesh)
}

/// Runs the microbenchmark without a mesh with the config's scale-to-zero behaviour: earlier
/// pods scale down while later ones start.
pub fn run_sustained(
    cfg: &SimConfig,
    rate_per_s: f64,
    count: usize,
    seed: u64,
) -> Result<ColdStartPoint, SimError> {
    run_sustained_with_mesh(cfg, rate_per_s, count, seed, Box::new(NoMesh))
}

/// [`run_sustained`] with a mesh model.
pub fn run_sustained_with_mesh(
    cfg: &SimConfig,
    rate_per_s: f64,
    count: usize,
    seed: u64,
    mesh: Box<dyn SidecarModel>,
) -> Result<ColdStartPoint, SimError> {
    cfg.validate()?;
    if !(rate_per_s.is_finite() && rate_per_s > 0.0) || count == 0 {
        return Err(SimError::Trace {
            trace: "coldstart".into(),
            message: format!(
                "rate must be a positive number and count at least 1 (got {rate_per_s}, {count})"
            ),
        });
    }
    let specs = vec![
        FunctionSpec {
            memory_request_mib: MEMORY_MIB,
        };
        count
    ];
    let interval = SEC as f64 / rate_per_s;
    let arrivals = (0..count).map(|i| Invocation {
        at_ns: (i as f64 * interval).round() as u64,
        function: i as u32,
        exec_ns: EXEC_NS,
        memory_mb: MEMORY_MIB as f32,
    });
    let opts = SimOptions {
        seed,
        record_invocations: true,
        stop_when_drained: true,
        ..SimOptions::default()
    };
    let r = Simulation::new(cfg, &specs, mesh, opts).run(arrivals, count as u64, &mut |_, _| {});
    let recs = r.invocations.unwrap_or_default();
    let mut lat: Vec<f64> = Vec::with_capacity(count);
    let mut wait: Vec<f64> = Vec::with_capacity(count);
    let mut ends: Vec<u64> = Vec::with_capacity(count);
    for rec in recs.iter().filter(|r| r.failure.is_none()) {
        lat.push(rec.end_to_end_ns as f64 / SEC as f64);
        wait.push(rec.cold_start_ns as f64 / SEC as f64);
        ends.push(rec.arrival_ns + rec.end_to_end_ns);
    }
    lat.sort_by(f64::total_cmp);
    wait.sort_by(f64::total_cmp);
    ends.sort_unstable();
    let achieved = match (ends.first(), ends.last()) {
        (Some(&a), Some(&b)) if ends.len() > 1 && b > a => {
            (ends.len() - 1) as f64 / ((b - a) as f64 / SEC as f64)
        }
        _ => rate_per_s.min(ends.len() as f64),
    };
    Ok(ColdStartPoint {
        rate: rate_per_s,
        count,
        runs: 1,
        p50_s: quantile_sorted(&lat, 0.5),
        p99_s: quantile_sorted(&lat, 0.99),
        max_s: lat.last().copied().unwrap_or(0.0),
        wait_p50_s: quantile_sorted(&wait, 0.5),
        achieved_throughput_per_s: achieved,
        completed: r.summary.completed,
        failed: r.summary.failed,
        api_writes_per_cold_start: r.api_writes as f64 / count as f64,
        events: r.events,
    })
}
