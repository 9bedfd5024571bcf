//! Shrinks a trace to N functions while preserving its distributions (InVitro's sampler method).
//!
//! K candidate subsets of N functions are drawn uniformly at random; each is scored by the sum of
//! three 1-Wasserstein distances between the subset's and the original's per-function
//! distributions of (a) invocation rate (invocations per minute over the whole trace), (b)
//! `Average` duration and (c) `AverageAllocatedMb`. The quantities span orders of magnitude, so
//! the distances are taken on `log10(1 + x)`, which makes the three terms comparable and keeps one
//! hot function from dominating. The best-scoring subset wins; its functions keep their original
//! row order.

use crate::error::{Location, Result, TraceError, TraceErrorKind};
use crate::model::Trace;
use crate::rng::stream;
use rand::seq::index::sample;

/// Parameters of [`sample_trace`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleConfig {
    /// Functions to keep.
    pub functions: usize,
    /// Candidate subsets to score (K).
    pub candidates: usize,
    pub seed: u64,
}

/// The chosen subset and how close it is to the original.
#[derive(Debug, Clone)]
pub struct SampleResult {
    pub trace: Trace,
    /// Indices of the kept functions in the original trace.
    pub indices: Vec<usize>,
    /// Total distance of the winner (sum of the three terms).
    pub distance: f64,
    /// The three terms: rate, duration, memory.
    pub distance_terms: [f64; 3],
    /// Best, median and worst total distance over the candidates.
    pub candidate_range: [f64; 3],
}

/// 1-Wasserstein distance between two empirical distributions (sorted in place).
pub fn wasserstein1(a: &mut [f64], b: &mut [f64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    // Integrate |F_a(x) - F_b(x)| over the merged support.
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0, 0);
    let mut x = a[0].min(b[0]);
    let mut dist = 0.0;
    while i < a.len() || j < b.len() {
        let next = match (a.get(i), b.get(j)) {
            (Some(&u), Some(&v)) => u.min(v),
            (Some(&u), None) => u,
            (None, Some(&v)) => v,
            (None, None) => break,
        };
        dist += (i as f64 / na - j as f64 / nb).abs() * (next - x);
        x = next;
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
    }
    dist
}

fn features(trace: &Trace) -> [Vec<f64>; 3] {
    let minutes = f64::from(trace.minutes.max(1));
    let lg = |x: f64| (1.0 + x).log10();
    [
        trace
            .functions
            .iter()
            .map(|f| lg(f.invocations() as f64 / minutes))
            .collect(),
        trace
            .functions
            .iter()
            .map(|f| lg(f.duration.average_ms))
            .collect(),
        trace
            .functions
            .iter()
            .map(|f| lg(f.memory.average_mb))
            .collect(),
    ]
}

/// Picks the best of `cfg.candidates` random subsets of `cfg.functions` functions.
pub fn sample_trace(trace: &Trace, cfg: SampleConfig) -> Result<SampleResult> {
    let n = trace.functions.len();
    let bad = |name, expected: String| {
        TraceError::new(
            Location::file(format!("{}/invocations.csv", trace.source)),
            TraceErrorKind::InvalidParameter { name, expected },
        )
    };
    if cfg.functions == 0 || cfg.functions > n {
        return Err(bad(
            "functions",
            format!("1..={n} (the trace has {n} functions)"),
        ));
    }
    if cfg.candidates == 0 {
        return Err(bad("candidates", "at least 1".to_owned()));
    }
    let original = features(trace);
    let mut rng = stream(cfg.seed, 0, "sampler");
    let mut best: Option<(f64, [f64; 3], Vec<usize>)> = None;
    let mut scores = Vec::with_capacity(cfg.candidates);
    for _ in 0..cfg.candidates {
        let mut idx = sample(&mut rng, n, cfg.functions).into_vec();
        idx.sort_unstable();
        let mut terms = [0.0; 3];
        for (k, feat) in original.iter().enumerate() {
            let mut a: Vec<f64> = idx.iter().map(|&i| feat[i]).collect();
            let mut b = feat.clone();
            terms[k] = wasserstein1(&mut a, &mut b);
        }
        let total: f64 = terms.iter().sum();
        scores.push(total);
        if best.as_ref().is_none_or(|b| total < b.0) {
            best = Some((total, terms, idx));
        }
    }
    let (distance, distance_terms, indices) = best.expect("at least one candidate");
    scores.sort_by(f64::total_cmp);
    let mut out = trace.subset(&indices);
    out.source = format!(
        "sample of {} ({} functions, seed {})",
        trace.source, cfg.functions, cfg.seed
    );
    Ok(SampleResult {
        trace: out,
        indices,
        distance,
        distance_terms,
        candidate_range: [
            scores[0],
            scores[scores.len() / 2],
            scores[scores.len() - 1],
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;

    #[test]
    fn wasserstein_of_shifted_samples_is_the_shift() {
        let mut a = vec![0.0, 1.0, 2.0];
        let mut b = vec![0.5, 1.5, 2.5];
        assert_abs_diff_eq!(wasserstein1(&mut a, &mut b), 0.5, epsilon = 1e-12);
    }

    #[test]
    fn wasserstein_of_different_sizes() {
        // Point mass at 0 vs two points {0, 1}: half the mass moves by 1.
        let mut a = vec![0.0];
        let mut b = vec![0.0, 1.0];
        assert_abs_diff_eq!(wasserstein1(&mut a, &mut b), 0.5, epsilon = 1e-12);
        let mut c = vec![3.0, 1.0, 2.0];
        let mut d = c.clone();
        assert_abs_diff_eq!(wasserstein1(&mut c, &mut d), 0.0, epsilon = 1e-12);
    }
}
