//! Summary statistics of a trace (what `meshsim trace stats` prints).

use crate::model::{Trace, Trigger};
use std::fmt;

/// Invocation-weighted percentiles of a per-function quantity.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Per-trigger counts.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TriggerStats {
    pub trigger: Trigger,
    pub functions: usize,
    pub active_functions: usize,
    pub invocations: u64,
}

/// What a trace (or a window of one) holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TraceStats {
    pub source: String,
    pub first_minute: u32,
    pub minutes: u32,
    pub functions: usize,
    pub active_functions: usize,
    pub invocations: u64,
    pub invocations_per_minute_mean: f64,
    pub invocations_per_minute_max: u64,
    pub per_trigger: Vec<TriggerStats>,
    /// Function `Average` execution time (ms), weighted by each function's invocations.
    pub duration_ms: Percentiles,
    /// Function `AverageAllocatedMb` (MB), weighted by each function's invocations.
    pub memory_mb: Percentiles,
}

/// Percentiles of `(value, weight)` pairs: the smallest value whose cumulative weight reaches
/// each quantile. All zeros when the total weight is 0.
pub fn weighted_percentiles(mut pairs: Vec<(f64, u64)>) -> Percentiles {
    pairs.retain(|&(_, w)| w > 0);
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: u64 = pairs.iter().map(|p| p.1).sum();
    let at = |q: f64| -> f64 {
        let target = (q * total as f64).ceil().max(1.0) as u64;
        let mut acc = 0;
        for &(v, w) in &pairs {
            acc += w;
            if acc >= target {
                return v;
            }
        }
        pairs.last().map_or(0.0, |p| p.0)
    };
    Percentiles {
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        max: pairs.last().map_or(0.0, |p| p.0),
    }
}

impl TraceStats {
    pub fn of(trace: &Trace) -> Self {
        let per_minute: Vec<u64> = (0..trace.minutes as usize)
            .map(|m| {
                trace
                    .functions
                    .iter()
                    .map(|f| u64::from(f.per_minute[m]))
                    .sum()
            })
            .collect();
        let per_trigger = Trigger::ALL
            .iter()
            .map(|&t| {
                let fs = trace.functions.iter().filter(|f| f.trigger == t);
                TriggerStats {
                    trigger: t,
                    functions: fs.clone().count(),
                    active_functions: fs.clone().filter(|f| f.invocations() > 0).count(),
                    invocations: fs.map(|f| f.invocations()).sum(),
                }
            })
            .filter(|s| s.functions > 0)
            .collect();
        let invocations = trace.invocations();
        Self {
            source: trace.source.clone(),
            first_minute: trace.first_minute,
            minutes: trace.minutes,
            functions: trace.functions.len(),
            active_functions: trace.active_functions(),
            invocations,
            invocations_per_minute_mean: invocations as f64 / f64::from(trace.minutes.max(1)),
            invocations_per_minute_max: per_minute.iter().copied().max().unwrap_or(0),
            per_trigger,
            duration_ms: weighted_percentiles(
                trace
                    .functions
                    .iter()
                    .map(|f| (f.duration.average_ms, f.invocations()))
                    .collect(),
            ),
            memory_mb: weighted_percentiles(
                trace
                    .functions
                    .iter()
                    .map(|f| (f.memory.average_mb, f.invocations()))
                    .collect(),
            ),
        }
    }
}

impl fmt::Display for TraceStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = self.first_minute + self.minutes.saturating_sub(1);
        writeln!(f, "trace            {}", self.source)?;
        writeln!(
            f,
            "window           minutes {}..={} ({} min)",
            self.first_minute, last, self.minutes
        )?;
        writeln!(f, "functions        {}", self.functions)?;
        writeln!(
            f,
            "active functions {} (at least one invocation in the window)",
            self.active_functions
        )?;
        writeln!(f, "invocations      {}", self.invocations)?;
        writeln!(
            f,
            "per minute       mean {:.1}, max {}",
            self.invocations_per_minute_mean, self.invocations_per_minute_max
        )?;
        writeln!(
            f,
            "by trigger       {:<14} {:>9} {:>7} {:>12}",
            "trigger", "functions", "active", "invocations"
        )?;
        for t in &self.per_trigger {
            writeln!(
                f,
                "                 {:<14} {:>9} {:>7} {:>12}",
                t.trigger.as_str(),
                t.functions,
                t.active_functions,
                t.invocations
            )?;
        }
        writeln!(
            f,
            "(percentiles of the per-function average, weighted by invocations)"
        )?;
        let p = |f: &mut fmt::Formatter<'_>, name: &str, unit: &str, p: &Percentiles| {
            writeln!(
                f,
                "{name:<16} p50 {:.1} {unit}, p90 {:.1} {unit}, p99 {:.1} {unit}, max {:.1} {unit}",
                p.p50, p.p90, p.p99, p.max
            )
        };
        p(f, "duration", "ms", &self.duration_ms)?;
        p(f, "memory", "MB", &self.memory_mb)
    }
}
