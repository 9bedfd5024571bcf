//! Synthetic traces for scale studies: any number of functions and minutes, with the shapes the
//! Azure 2019 characterisation reports (Shahrad et al., ATC '20) and InVitro's generator uses.
//!
//! - Popularity: Zipf-like. The function of rank r (1-based) gets a mean rate proportional to
//!   r^-s (`zipf_exponent`, default 1.0), scaled so the trace averages `mean_rate_per_function`
//!   invocations per function per minute.
//! - Burstiness: each minute's count is Poisson with the function's rate times a Gamma(k, 1/k)
//!   factor of mean 1 (`burstiness_shape` k, default 0.5: smaller is burstier; a negative-binomial
//!   count per minute).
//! - Durations: each function's `Average` ~ LogNormal(mu = -0.38, sigma = 2.36) seconds; its
//!   percentile bands follow a log-normal spread around it (sigma 0.5).
//! - Memory: each function's `AverageAllocatedMb` ~ Burr XII (c = 11.652, d = 0.221,
//!   scale = 107.083) MB, drawn by inverse transform; bands with a log-normal spread (sigma 0.15).
//! - Triggers: drawn with the proportions of the 500-function sample (timer 247, http 139,
//!   queue 69, orchestration 25, event 14, storage 5, others 1).

use crate::error::{Location, Result, TraceError, TraceErrorKind};
use crate::model::{DurationBands, Function, MemoryBands, Trace, Trigger};
use crate::rng::{splitmix64, stream};
use rand::Rng as _;
use rand_distr::{Distribution, Gamma, LogNormal, Poisson};

/// Parameters of [`synthesize`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SynthConfig {
    pub functions: usize,
    pub minutes: u32,
    pub seed: u64,
    /// Mean invocations per function per minute (the whole trace averages this).
    pub mean_rate_per_function: f64,
    /// Zipf exponent s of popularity (rate of rank r proportional to r^-s).
    pub zipf_exponent: f64,
    /// Gamma shape k of the per-minute rate factor (smaller = burstier).
    pub burstiness_shape: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            functions: 200,
            minutes: 30,
            seed: 42,
            mean_rate_per_function: 5.0,
            zipf_exponent: 1.0,
            burstiness_shape: 0.5,
        }
    }
}

/// Standard-normal quantiles of the duration percentile points (0 and 100 taken at 0.1 % / 99.9 %).
const Z_DURATION: [f64; 7] = [-3.090, -2.326, -0.674, 0.0, 0.674, 2.326, 3.090];
/// Standard-normal quantiles of the memory percentile points.
const Z_MEMORY: [f64; 8] = [-2.326, -1.645, -0.674, 0.0, 0.674, 1.645, 2.326, 3.090];
const TRIGGER_WEIGHTS: [(Trigger, u32); 7] = [
    (Trigger::Timer, 247),
    (Trigger::Http, 139),
    (Trigger::Queue, 69),
    (Trigger::Orchestration, 25),
    (Trigger::Event, 14),
    (Trigger::Storage, 5),
    (Trigger::Others, 1),
];

fn hex64(x: u64) -> String {
    (0..4)
        .map(|k| format!("{:016x}", splitmix64(x.wrapping_add(k))))
        .collect()
}

/// Burr XII inverse CDF.
fn burr12(u: f64, c: f64, d: f64, scale: f64) -> f64 {
    scale * ((1.0 - u).powf(-1.0 / d) - 1.0).powf(1.0 / c)
}

/// Generates a synthetic trace.
pub fn synthesize(cfg: &SynthConfig) -> Result<Trace> {
    let bad = |name, expected: &str| {
        TraceError::new(
            Location::file("synthetic"),
            TraceErrorKind::InvalidParameter {
                name,
                expected: expected.to_owned(),
            },
        )
    };
    if cfg.functions == 0 {
        return Err(bad("functions", "at least 1"));
    }
    if cfg.minutes == 0 {
        return Err(bad("minutes", "at least 1"));
    }
    if !(cfg.mean_rate_per_function.is_finite() && cfg.mean_rate_per_function > 0.0) {
        return Err(bad("mean_rate_per_function", "a positive number"));
    }
    if !(cfg.zipf_exponent.is_finite() && cfg.zipf_exponent >= 0.0) {
        return Err(bad("zipf_exponent", "a non-negative number"));
    }
    if !(cfg.burstiness_shape.is_finite() && cfg.burstiness_shape > 0.0) {
        return Err(bad("burstiness_shape", "a positive number"));
    }
    let weights: Vec<f64> = (1..=cfg.functions)
        .map(|r| (r as f64).powf(-cfg.zipf_exponent))
        .collect();
    let wsum: f64 = weights.iter().sum();
    let total_rate = cfg.mean_rate_per_function * cfg.functions as f64;
    let duration_s = LogNormal::new(-0.38, 2.36).expect("valid log-normal");
    let burst =
        Gamma::new(cfg.burstiness_shape, 1.0 / cfg.burstiness_shape).expect("validated shape");
    let tw_total: u32 = TRIGGER_WEIGHTS.iter().map(|t| t.1).sum();

    let mut functions = Vec::with_capacity(cfg.functions);
    for (i, w) in weights.iter().enumerate() {
        let mut rng = stream(cfg.seed, 0, &format!("synth/{i}"));
        let rate = total_rate * w / wsum;
        let per_minute = (0..cfg.minutes)
            .map(|_| {
                let lambda = rate * burst.sample(&mut rng);
                if lambda <= 0.0 {
                    return 0;
                }
                Poisson::new(lambda)
                    .map_or(0, |p| p.sample(&mut rng).min(f64::from(u32::MAX)) as u32)
            })
            .collect::<Vec<u32>>();
        let mut pick = rng.random_range(0..tw_total);
        let trigger = TRIGGER_WEIGHTS
            .iter()
            .find(|(_, w)| {
                let hit = pick < *w;
                pick = pick.saturating_sub(*w);
                hit
            })
            .map_or(Trigger::Others, |t| t.0);

        let avg_ms: f64 =
            (Distribution::<f64>::sample(&duration_s, &mut rng) * 1e3).clamp(1.0, 600_000.0);
        let median_ms = avg_ms * (-0.5f64 * 0.5 * 0.5).exp();
        let pd = Z_DURATION.map(|z| median_ms * (0.5 * z).exp());
        let u: f64 = rng.random::<f64>().min(0.999_999);
        let avg_mb = burr12(u, 11.652, 0.221, 107.083).clamp(1.0, 16_384.0);
        let median_mb = avg_mb * (-0.5f64 * 0.15 * 0.15).exp();
        let pm = Z_MEMORY.map(|z| median_mb * (0.15 * z).exp());
        let count = per_minute
            .iter()
            .map(|&c| f64::from(c))
            .sum::<f64>()
            .max(1.0);
        let id = splitmix64(cfg.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        functions.push(Function {
            hash_owner: hex64(id ^ 1),
            hash_app: hex64(id ^ 2),
            hash_function: hex64(id),
            trigger,
            per_minute,
            duration: DurationBands {
                average_ms: avg_ms,
                count,
                minimum_ms: pd[0],
                maximum_ms: pd[6],
                percentiles_ms: pd,
            },
            memory: MemoryBands {
                sample_count: count,
                average_mb: avg_mb,
                percentiles_mb: pm,
            },
        });
    }
    Ok(Trace {
        source: format!(
            "synthetic({} functions, {} min, seed {})",
            cfg.functions, cfg.minutes, cfg.seed
        ),
        first_minute: 1,
        minutes: cfg.minutes,
        functions,
    })
}
