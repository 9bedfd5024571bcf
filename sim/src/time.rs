//! Simulated time: integer nanoseconds since the start of the run. There is no `f64` clock;
//! seconds appear only in outputs.

use std::fmt;
use std::ops::{Add, Sub};

/// A point in simulated time, ns since the start of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SimTime(pub u64);

/// Nanoseconds per microsecond / millisecond / second.
pub const US: u64 = 1_000;
pub const MS: u64 = 1_000_000;
pub const SEC: u64 = 1_000_000_000;

impl SimTime {
    pub const ZERO: SimTime = SimTime(0);

    pub const fn from_ns(ns: u64) -> Self {
        SimTime(ns)
    }
    pub const fn from_us(us: u64) -> Self {
        SimTime(us * US)
    }
    pub const fn from_ms(ms: u64) -> Self {
        SimTime(ms * MS)
    }
    pub const fn from_secs(s: u64) -> Self {
        SimTime(s * SEC)
    }
    pub const fn as_ns(self) -> u64 {
        self.0
    }
    /// Whole seconds elapsed (floor).
    pub const fn second(self) -> u64 {
        self.0 / SEC
    }
    /// Seconds as a float, for output only.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / SEC as f64
    }
    /// `self - earlier`, or 0 if `earlier` is later.
    pub const fn since(self, earlier: SimTime) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<u64> for SimTime {
    type Output = SimTime;
    fn add(self, ns: u64) -> SimTime {
        SimTime(self.0 + ns)
    }
}

impl Sub for SimTime {
    type Output = u64;
    fn sub(self, other: SimTime) -> u64 {
        self.0 - other.0
    }
}

impl fmt::Display for SimTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:09}s", self.0 / SEC, self.0 % SEC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(SimTime::from_ms(1_500).as_ns(), 1_500_000_000);
        assert_eq!(SimTime::from_ms(1_500).second(), 1);
        assert_eq!(SimTime::from_us(3) + 7, SimTime(3_007));
        assert_eq!(SimTime(5) - SimTime(2), 3);
        assert_eq!(SimTime(2).since(SimTime(5)), 0);
        assert_eq!(SimTime::from_ms(1_500).to_string(), "1.500000000s");
    }
}
