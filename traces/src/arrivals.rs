//! Invocation arrivals: turns per-minute counts into timestamped invocations.
//!
//! Inside each minute a function's `c` invocations are placed by an [`ArrivalProcess`]; the
//! count per minute always equals the trace exactly. Each invocation also gets an execution time
//! and a memory size drawn from the function's percentile bands: a percentile `u` is drawn
//! uniformly, and the value interpolated linearly inside the band `[p_k, p_k+1]` that holds `u`
//! (so a band is picked with probability equal to its width and the value is uniform within it,
//! as InVitro does). Execution times are clamped to [1 ms, 60 s] (InVitro's limits), which also
//! turns an `Average` of 0 ms into 1 ms; below the 1st memory percentile the 1st percentile is
//! used.
//!
//! Randomness: each function has its own stream `arrivals/<HashFunction>` under the run's root
//! seed and replication, so a function's arrivals do not change when other functions are added
//! to or removed from the trace. Arrivals are produced one minute at a time, in `(time,
//! function index)` order, so memory stays bounded by one minute of invocations.

use crate::model::{DURATION_PERCENTILES, MEMORY_PERCENTILES, Trace};
use crate::rng::{Rng, stream};
use rand::Rng as _;
use rand_distr::{Distribution, Exp1};
use std::sync::Arc;

/// Nanoseconds in one minute.
pub const MINUTE_NS: u64 = 60_000_000_000;
/// Lower clamp of execution times (1 ms, InVitro).
pub const MIN_EXEC_NS: u64 = 1_000_000;
/// Upper clamp of execution times (60 s, InVitro).
pub const MAX_EXEC_NS: u64 = 60_000_000_000;

/// How invocations are spread inside a minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArrivalProcess {
    /// Exponential inter-arrival times rescaled to the minute (a Poisson process conditioned on
    /// the minute's count). The default, as in InVitro.
    #[default]
    Exponential,
    /// Uniform inter-arrival times rescaled to the minute (less bursty than exponential).
    Uniform,
    /// Evenly spaced: the i-th of c invocations at (i + 1/2) * 60 s / c.
    Equidistant,
}

impl std::str::FromStr for ArrivalProcess {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "exponential" => Ok(Self::Exponential),
            "uniform" => Ok(Self::Uniform),
            "equidistant" => Ok(Self::Equidistant),
            _ => Err(format!(
                "expected exponential, uniform or equidistant, found '{s}'"
            )),
        }
    }
}

/// One invocation of the replayed trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Invocation {
    /// Arrival time in ns since the start of the window.
    pub at_ns: u64,
    /// Index of the function in `Trace::functions`.
    pub function: u32,
    /// Execution time on an uncontended core, ns, within [1 ms, 60 s].
    pub exec_ns: u64,
    /// Memory the invocation uses, MB.
    pub memory_mb: f32,
}

/// Seeds and shape of the arrivals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ArrivalConfig {
    pub process: ArrivalProcess,
    pub seed: u64,
    pub replication: u32,
}

/// Draws a value from percentile bands: `points` are percentiles (ascending, in 0..=100) and
/// `values` the non-decreasing values at them. Below the first point the first value is used.
pub fn draw_from_bands(rng: &mut Rng, points: &[f64], values: &[f64]) -> f64 {
    let u: f64 = rng.random::<f64>() * 100.0;
    if u <= points[0] {
        return values[0];
    }
    for k in 1..points.len() {
        if u <= points[k] {
            let w = (u - points[k - 1]) / (points[k] - points[k - 1]);
            return values[k - 1] + (values[k] - values[k - 1]) * w;
        }
    }
    values[values.len() - 1]
}

/// A stream of invocations in arrival order over all minutes of a trace (apply
/// [`Trace::window`] first to replay fewer minutes).
#[derive(Debug)]
pub struct ArrivalStream {
    trace: Arc<Trace>,
    cfg: ArrivalConfig,
    rngs: Vec<Rng>,
    minute: u32,
    batch: Vec<Invocation>,
    cursor: usize,
    scratch: Vec<f64>,
}

impl ArrivalStream {
    pub fn new(trace: Arc<Trace>, cfg: ArrivalConfig) -> Self {
        let rngs = trace
            .functions
            .iter()
            .map(|f| {
                stream(
                    cfg.seed,
                    cfg.replication,
                    &format!("arrivals/{}", f.hash_function),
                )
            })
            .collect();
        Self {
            trace,
            cfg,
            rngs,
            minute: 0,
            batch: Vec::new(),
            cursor: 0,
            scratch: Vec::new(),
        }
    }

    /// Total invocations the stream will yield.
    pub fn total(&self) -> u64 {
        self.trace.invocations()
    }

    fn fill_minute(&mut self) {
        self.batch.clear();
        self.cursor = 0;
        let m = self.minute as usize;
        let base = u64::from(self.minute) * MINUTE_NS;
        for (fi, f) in self.trace.functions.iter().enumerate() {
            let c = f.per_minute[m] as usize;
            if c == 0 {
                continue;
            }
            let rng = &mut self.rngs[fi];
            offsets(self.cfg.process, c, rng, &mut self.scratch);
            for &off in &self.scratch {
                let exec_ms =
                    draw_from_bands(rng, &DURATION_PERCENTILES, &f.duration.percentiles_ms);
                let exec_ns = ((exec_ms * 1e6).round() as u64).clamp(MIN_EXEC_NS, MAX_EXEC_NS);
                let memory_mb =
                    draw_from_bands(rng, &MEMORY_PERCENTILES, &f.memory.percentiles_mb) as f32;
                self.batch.push(Invocation {
                    at_ns: base + off as u64,
                    function: fi as u32,
                    exec_ns,
                    memory_mb,
                });
            }
        }
        // Stable: equal (time, function) keep their draw order.
        self.batch.sort_by_key(|i| (i.at_ns, i.function));
        self.minute += 1;
    }
}

/// Offsets (ns, within [0, 60 s)) of `c` arrivals in one minute, ascending.
fn offsets(process: ArrivalProcess, c: usize, rng: &mut Rng, out: &mut Vec<f64>) {
    out.clear();
    let minute = MINUTE_NS as f64;
    match process {
        ArrivalProcess::Equidistant => {
            out.extend((0..c).map(|i| (2 * i + 1) as f64 * minute / (2 * c) as f64));
        }
        ArrivalProcess::Exponential | ArrivalProcess::Uniform => {
            // c + 1 gaps rescaled to the minute: the last arrival stays inside it.
            let mut acc = 0.0;
            for _ in 0..c {
                acc += gap(process, rng);
                out.push(acc);
            }
            let total = acc + gap(process, rng);
            for t in out.iter_mut() {
                *t = (*t / total * minute).min(minute - 1.0);
            }
        }
    }
}

fn gap(process: ArrivalProcess, rng: &mut Rng) -> f64 {
    match process {
        ArrivalProcess::Exponential => Exp1.sample(rng),
        _ => 1.0 - rng.random::<f64>(), // (0, 1]
    }
}

impl Iterator for ArrivalStream {
    type Item = Invocation;

    fn next(&mut self) -> Option<Invocation> {
        while self.cursor >= self.batch.len() {
            if self.minute >= self.trace.minutes {
                return None;
            }
            self.fill_minute();
        }
        let inv = self.batch[self.cursor];
        self.cursor += 1;
        Some(inv)
    }
}
