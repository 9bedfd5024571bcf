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
        if r.cold {
            self.cold += 1;
            if r.failure.is_none() {
                self.cold_start_ns.record(r.cold_start_ns);
            }
        }
    }
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
}
