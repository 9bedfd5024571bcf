//! Outputs: the per-scenario summary (DESIGN.md's `summary.json` object), per-invocation
//! records, per-(node, second) CPU and memory, and the fixed-memory accumulators behind them.

use crate::cpu::{CpuCategory, NCAT};
use crate::hist::LogHistogram;
use crate::time::SEC;
use serde::Serialize;
use std::collections::BTreeMap;

/// Why an invocation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FailureReason {
    /// Not answered within the request timeout (waiting for a pod, or too slow).
    Timeout,
    /// Timed out while its revision's pods could not be placed on any node.
    NoCapacity,
    /// Rejected by a (global or local) rate limit (mesh models).
    RateLimited,
    /// Rejected by an open circuit breaker (mesh models).
    CircuitOpen,
    /// Failed after the retry budget was spent (mesh models).
    RetriesExhausted,
    /// Refused by a policy (authn/authz) (mesh models).
    Denied,
    /// Turned away by a full queue-proxy: its breaker holds the container concurrency plus
    /// 10 x that many waiting requests and answers 503 beyond (knative `buildBreaker`).
    QueueFull,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Timeout => "timeout",
            FailureReason::NoCapacity => "no-capacity",
            FailureReason::RateLimited => "rate-limited",
            FailureReason::CircuitOpen => "circuit-open",
            FailureReason::RetriesExhausted => "retries-exhausted",
            FailureReason::Denied => "denied",
            FailureReason::QueueFull => "queue-full",
        }
    }
}

/// One invocation's fate (the optional per-invocation table).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InvocationRecord {
    /// Function index in the trace.
    pub function: u32,
    pub arrival_ns: u64,
    /// Execution time on an uncontended core.
    pub exec_ns: u64,
    /// Arrival to response (to failure, for failed invocations).
    pub end_to_end_ns: u64,
    /// `end_to_end_ns / exec_ns` (0 for failed invocations).
    pub slowdown: f64,
    /// Waited for a pod to start.
    pub cold: bool,
    /// Worker that executed it.
    pub node: Option<u16>,
    /// Time buffered at the activator while the revision had ready pods (none routable).
    pub queue_ns: u64,
    /// Time buffered at the activator waiting for the revision's first routable pod.
    pub cold_start_ns: u64,
    /// Execution stretch from CPU contention: actual execution time minus `exec_ns`.
    pub contention_ns: u64,
    /// Everything else: network hops and proxy CPU (gateway, activator, queue-proxy, sidecars).
    pub overhead_ns: u64,
    /// Proxied hop points the request passed through on its way to the user container: the
    /// pod's (its sidecar; with ambient, ztunnel and the waypoint together), the activator's
    /// when it is in the mesh and on the path, a gateway-side one; a retried attempt through
    /// the same hop counts once.
    pub proxy_hops: u8,
    pub failure: Option<FailureReason>,
}

/// CPU cores used per category in one (node, second).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CpuByCategory {
    pub function: f64,
    pub queue_proxy: f64,
    pub activator: f64,
    pub gateway: f64,
    pub control_plane: f64,
    pub sidecar: f64,
    pub xds: f64,
    pub system: f64,
}

impl CpuByCategory {
    pub fn total(&self) -> f64 {
        self.function
            + self.queue_proxy
            + self.activator
            + self.gateway
            + self.control_plane
            + self.sidecar
            + self.xds
            + self.system
    }

    fn from_core_ns(a: &[f64; NCAT]) -> Self {
        let c = |cat: CpuCategory| a[cat as usize] / SEC as f64;
        Self {
            function: c(CpuCategory::Function),
            queue_proxy: c(CpuCategory::QueueProxy),
            activator: c(CpuCategory::Activator),
            gateway: c(CpuCategory::Gateway),
            control_plane: c(CpuCategory::ControlPlane),
            sidecar: c(CpuCategory::Sidecar),
            xds: c(CpuCategory::Xds),
            system: c(CpuCategory::System),
        }
    }
}

/// CPU and memory of one node over one second of simulated time (time averages).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeSecond {
    pub second: u32,
    pub node: u16,
    pub control_plane: bool,
    pub cpu_cores: CpuByCategory,
    pub memory_gib: f64,
}

/// Per-second, per-node accumulators (memory grows with simulated seconds, not invocations).
#[derive(Debug, Clone, Default)]
pub struct NodeSeries {
    /// Core-ns per category per second.
    cpu: Vec<[f64; NCAT]>,
    /// GiB-ns per second.
    mem: Vec<f64>,
}

impl NodeSeries {
    fn ensure(&mut self, sec: usize) {
        if self.cpu.len() <= sec {
            self.cpu.resize(sec + 1, [0.0; NCAT]);
            self.mem.resize(sec + 1, 0.0);
        }
    }

    /// Spreads `core_ns` of category `cat`, used uniformly over `[t0, t1)`, over the seconds.
    pub fn add_cpu(&mut self, cat: CpuCategory, core_ns: f64, t0: u64, t1: u64) {
        if t1 <= t0 {
            return;
        }
        let (s0, s1) = (t0 / SEC, (t1 - 1) / SEC);
        self.ensure(s1 as usize);
        if s0 == s1 {
            self.cpu[s0 as usize][cat as usize] += core_ns;
            return;
        }
        let per_ns = core_ns / (t1 - t0) as f64;
        for s in s0..=s1 {
            let a = t0.max(s * SEC);
            let b = t1.min((s + 1) * SEC);
            self.cpu[s as usize][cat as usize] += per_ns * (b - a) as f64;
        }
    }

    /// Adds `gib` of memory held over `[t0, t1)`.
    pub fn add_mem(&mut self, gib: f64, t0: u64, t1: u64) {
        if t1 <= t0 || gib == 0.0 {
            return;
        }
        let (s0, s1) = (t0 / SEC, (t1 - 1) / SEC);
        self.ensure(s1 as usize);
        for s in s0..=s1 {
            let a = t0.max(s * SEC);
            let b = t1.min((s + 1) * SEC);
            self.mem[s as usize] += gib * (b - a) as f64;
        }
    }

    pub fn seconds(&self) -> usize {
        self.cpu.len()
    }

    pub fn row(&self, sec: usize, node: u16, control_plane: bool) -> NodeSecond {
        let (cpu, mem) = if sec < self.cpu.len() {
            (self.cpu[sec], self.mem[sec])
        } else {
            ([0.0; NCAT], 0.0)
        };
        NodeSecond {
            second: sec as u32,
            node,
            control_plane,
            cpu_cores: CpuByCategory::from_core_ns(&cpu),
            memory_gib: mem / SEC as f64,
        }
    }
}

/// `{p50, p90, p95, p99, max}` of slowdowns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SlowdownSummary {
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// Per-function slowdown, the way the Dirigent and InVitro authors (the paper's group) read a
/// trace replay: each function's slowdown is the geometric mean of its invocations'
/// slowdowns, and the quantiles are over functions, each counted once however often it is
/// invoked (`eth-easl/dirigent`, `artifact_evaluation/plot_azure_500.py`: `responseTime /
/// requestedDuration`, `groupby(function).slowdown.apply(stats.gmean)`, CDF over functions).
/// A failed invocation counts with its time to failure over its execution time, as InVitro
/// records it (`responseTime` is the time to the error), a lower bound of what it would have
/// waited; as in that script, a slowdown below 1 (a request turned away at once, e.g. by a rate
/// limit) is left out. (The script lumps failed invocations, which name no instance, into one
/// nameless group; here they stay with their function, so a function whose every invocation
/// timed out counts as the worst-served function it is rather than vanishing.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PerFunctionSlowdown {
    /// Functions with at least one counted invocation.
    pub functions: u64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// `{p50, p99}` of cold-start waits, seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ColdStartSummary {
    pub p50: f64,
    pub p99: f64,
}

/// `{p50, p95}` over (node, second) samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct P50P95 {
    pub p50: f64,
    pub p95: f64,
}

/// xDS payload size quantiles, bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PayloadBytes {
    pub p50: u64,
    pub p80: u64,
    pub p99: u64,
    pub max: u64,
}

/// Mesh control-plane traffic (all zero without a mesh).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct XdsSummary {
    pub transactions: u64,
    pub bytes: u64,
    pub payload_bytes: PayloadBytes,
}

/// Simulator effort. `wall_s` and `events_per_s` stay 0 here (the simulator has no wall
/// clock); the experiments crate fills them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SimStats {
    pub events: u64,
    pub wall_s: f64,
    pub events_per_s: f64,
}

/// One scenario of `summary.json`, field for field as DESIGN.md specifies.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ScenarioSummary {
    /// Invocations that arrived.
    pub invocations: u64,
    /// Answered within the request timeout.
    pub completed: u64,
    /// Failed for one of [`FailureReason`]'s reasons.
    pub failed: u64,
    /// `failed / (completed + failed)`.
    pub failure_rate: f64,
    /// Failures per [`FailureReason::as_str`].
    pub failures_by_reason: BTreeMap<String, u64>,
    /// Invocations that waited for a pod to start (arrived while their revision had no ready
    /// pod).
    pub cold_starts: u64,
    /// End-to-end / uncontended execution time of completed invocations (log-bucketed
    /// histogram, 0.8 % precision; `max` exact).
    pub slowdown: SlowdownSummary,
    /// Slowdown per function (geometric mean over its invocations, failed ones with their time
    /// to failure), quantiles over functions: the Dirigent/InVitro reading of a replay (an
    /// addition to DESIGN.md's schema).
    pub per_function_slowdown: PerFunctionSlowdown,
    /// The cold invocations' wait for their pod, s.
    pub cold_start_s: ColdStartSummary,
    /// Over (worker, second) samples of the replay window: CPU cores in use, all categories.
    pub worker_cpu_cores: P50P95,
    /// Over (worker, second) samples: memory in use, GiB.
    pub worker_mem_gib: P50P95,
    /// Over the control-plane node's seconds: CPU cores in use.
    pub cp_cpu_cores: P50P95,
    pub xds: XdsSummary,
    pub sim: SimStats,
}

/// Fixed-point scale of slowdowns in their histogram (1e-4 resolution).
pub const SLOWDOWN_SCALE: f64 = 10_000.0;

/// Streaming accumulators for the summary.
#[derive(Debug, Clone, Default)]
pub struct Collector {
    pub arrived: u64,
    pub completed: u64,
    pub failed: u64,
    pub by_reason: BTreeMap<FailureReason, u64>,
    pub cold: u64,
    pub slowdown: LogHistogram,
    pub cold_start_ns: LogHistogram,
    /// Per function index: sum of ln(slowdown) and count of its counted invocations (see
    /// [`PerFunctionSlowdown`]).
    pub per_function: BTreeMap<u32, (f64, u64)>,
}

impl Collector {
    pub fn record(&mut self, r: &InvocationRecord) {
        match r.failure {
            Some(reason) => {
                self.failed += 1;
                *self.by_reason.entry(reason).or_insert(0) += 1;
            }
            None => {
                self.completed += 1;
                self.slowdown
                    .record((r.slowdown * SLOWDOWN_SCALE).round() as u64);
            }
        }
        self.record_per_function(r);
        if r.cold {
            self.cold += 1;
            if r.failure.is_none() {
                self.cold_start_ns.record(r.cold_start_ns);
            }
        }
    }

    /// Adds `r` to its function's running log-sum (see [`PerFunctionSlowdown`]: a failed
    /// invocation with its time to failure, nothing below 1x).
    fn record_per_function(&mut self, r: &InvocationRecord) {
        let slowdown = match r.failure {
            Some(_) => r.end_to_end_ns as f64 / r.exec_ns.max(1) as f64,
            None => r.slowdown,
        };
        if slowdown >= 1.0 {
            let e = self.per_function.entry(r.function).or_insert((0.0, 0));
            e.0 += slowdown.ln();
            e.1 += 1;
        }
    }

    /// Each function's geometric-mean slowdown, sorted (see [`PerFunctionSlowdown`]).
    pub fn per_function_values(&self) -> Vec<f64> {
        let mut g: Vec<f64> = self
            .per_function
            .values()
            .map(|&(ln_sum, n)| (ln_sum / n as f64).exp())
            .collect();
        g.sort_by(f64::total_cmp);
        g
    }

    /// Quantiles over functions of each function's geometric-mean slowdown.
    pub fn per_function_slowdown(&self) -> PerFunctionSlowdown {
        let g = self.per_function_values();
        PerFunctionSlowdown {
            functions: g.len() as u64,
            p50: quantile_sorted(&g, 0.5),
            p90: quantile_sorted(&g, 0.9),
            p95: quantile_sorted(&g, 0.95),
            p99: quantile_sorted(&g, 0.99),
            max: g.last().copied().unwrap_or(0.0),
        }
    }
}

/// Each function's geometric-mean slowdown over `records`, sorted, as
/// [`ScenarioSummary::per_function_slowdown`] counts them (for figures of the per-invocation
/// table).
pub fn per_function_slowdowns<'a>(
    records: impl IntoIterator<Item = &'a InvocationRecord>,
) -> Vec<f64> {
    let mut c = Collector::default();
    for r in records {
        c.record_per_function(r);
    }
    c.per_function_values()
}

/// Nearest-rank quantile of a sorted slice.
pub fn quantile_sorted(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// p50/p95 of a sample (sorted in place).
pub fn p50_p95(v: &mut [f64]) -> P50P95 {
    v.sort_by(f64::total_cmp);
    P50P95 {
        p50: quantile_sorted(v, 0.5),
        p95: quantile_sorted(v, 0.95),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_spreads_over_seconds() {
        let mut s = NodeSeries::default();
        // One core busy from 0.5 s to 2.5 s.
        s.add_cpu(
            CpuCategory::Function,
            2.0 * SEC as f64,
            SEC / 2,
            5 * SEC / 2,
        );
        s.add_mem(2.0, 0, 2 * SEC);
        assert_eq!(s.row(0, 0, false).cpu_cores.function, 0.5);
        assert_eq!(s.row(1, 0, false).cpu_cores.function, 1.0);
        assert_eq!(s.row(2, 0, false).cpu_cores.function, 0.5);
        assert_eq!(s.row(1, 0, false).memory_gib, 2.0);
        assert_eq!(s.row(2, 0, false).memory_gib, 0.0);
        assert_eq!(quantile_sorted(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.0);
    }

    fn rec(function: u32, e2e: u64, failure: Option<FailureReason>) -> InvocationRecord {
        InvocationRecord {
            function,
            arrival_ns: 0,
            exec_ns: 10,
            end_to_end_ns: e2e,
            slowdown: if failure.is_some() {
                0.0
            } else {
                e2e as f64 / 10.0
            },
            cold: false,
            node: None,
            queue_ns: 0,
            cold_start_ns: 0,
            contention_ns: 0,
            overhead_ns: 0,
            proxy_hops: 0,
            failure,
        }
    }

    #[test]
    fn per_function_slowdown_is_a_geometric_mean_per_function_and_counts_each_once() {
        let mut c = Collector::default();
        // Function 0: a thousand invocations at 1x; function 1: 2x and 8x (geometric mean 4)
        // plus one turned away at once (below 1x: left out); function 2: 9x; function 3 only
        // failed, after 30x its execution time; function 4 was only turned away.
        for _ in 0..1000 {
            c.record(&rec(0, 10, None));
        }
        c.record(&rec(1, 20, None));
        c.record(&rec(1, 80, None));
        c.record(&rec(1, 1, Some(FailureReason::RateLimited)));
        c.record(&rec(2, 90, None));
        c.record(&rec(3, 300, Some(FailureReason::Timeout)));
        c.record(&rec(4, 2, Some(FailureReason::RateLimited)));
        let p = c.per_function_slowdown();
        assert_eq!(p.functions, 4);
        // Sorted [1, 4, 9, 30]: the median function is function 1, not the busy function 0.
        assert!((p.p50 - 4.0).abs() < 1e-12, "{p:?}");
        assert!((p.p90 - 30.0).abs() < 1e-12 && (p.max - 30.0).abs() < 1e-12);
        // Per invocation, the median is 1x (within the histogram's bucket).
        assert!((c.slowdown.quantile(0.5) as f64 / SLOWDOWN_SCALE - 1.0).abs() < 0.01);
        assert_eq!(Collector::default().per_function_slowdown().functions, 0);
        let recs = [rec(1, 20, None), rec(1, 80, None), rec(0, 10, None)];
        assert_eq!(per_function_slowdowns(&recs), vec![1.0, 4.0]);
    }
}
