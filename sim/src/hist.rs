//! A fixed-memory, HDR-style log-bucketed histogram of `u64` values.
//!
//! Values below 2^`SUB_BITS` are counted exactly; above, each power-of-two range is split into
//! 2^(`SUB_BITS`-1) equal buckets, so a reported quantile is within 1/2^(`SUB_BITS`-1) (0.8 %)
//! of the true value. The whole `u64` range takes 7,424 counters (58 KiB) no matter how many
//! values are recorded. The exact minimum, maximum and count are kept on the side.

const SUB_BITS: u32 = 8;
const HALF: usize = 1 << (SUB_BITS - 1);
const BUCKETS: usize = (64 - SUB_BITS as usize + 2) * HALF;

/// Log-bucketed histogram.
#[derive(Debug, Clone)]
pub struct LogHistogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
}

impl Default for LogHistogram {
    fn default() -> Self {
        Self::new()
    }
}

fn index(v: u64) -> usize {
    if v < (1 << SUB_BITS) {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - (SUB_BITS - 1);
    let mantissa = (v >> shift) as usize; // in [HALF, 2 * HALF)
    shift as usize * HALF + mantissa
}

/// Smallest and largest value of bucket `i`.
fn bounds(i: usize) -> (u64, u64) {
    if i < (1 << SUB_BITS) {
        return (i as u64, i as u64);
    }
    let shift = (i / HALF - 1) as u32;
    let mantissa = (i - shift as usize * HALF) as u64;
    let lo = mantissa << shift;
    (lo, lo + ((1u64 << shift) - 1))
}

impl LogHistogram {
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        if self.total == 0 { 0 } else { self.max }
    }

    /// The `q`-quantile (`q` in [0, 1]; nearest rank), as the midpoint of its bucket clamped to
    /// the observed range; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, hi) = bounds(i);
                return (lo + (hi - lo) / 2).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous() {
        let mut prev_hi = None;
        for i in 0..BUCKETS - 1 {
            let (lo, hi) = bounds(i);
            assert!(lo <= hi);
            if let Some(p) = prev_hi {
                assert_eq!(lo, p + 1, "bucket {i}");
            }
            assert_eq!(index(lo), i);
            assert_eq!(index(hi), i);
            prev_hi = Some(hi);
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_within_precision() {
        let mut h = LogHistogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        for q in [0.5, 0.9, 0.99] {
            let exact = q * 100_000_000.0;
            let got = h.quantile(q) as f64;
            assert!((got - exact).abs() / exact < 0.01, "q={q} got={got}");
        }
        assert_eq!(h.max(), 100_000_000);
        assert_eq!(LogHistogram::new().quantile(0.5), 0);
        let mut small = LogHistogram::new();
        small.record(3);
        assert_eq!(small.quantile(0.99), 3);
    }
}
