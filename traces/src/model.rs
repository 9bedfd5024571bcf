//! The in-memory trace: functions with their per-minute invocation counts and their duration
//! and memory percentile bands.

use crate::error::{Location, Result, TraceError, TraceErrorKind};
use std::fmt;
use std::str::FromStr;

/// How a function is triggered (Azure Functions 2019 `Trigger` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Http,
    Timer,
    Event,
    Queue,
    Storage,
    Orchestration,
    Others,
}

impl Trigger {
    /// All trigger kinds, in the order reports list them.
    pub const ALL: [Trigger; 7] = [
        Trigger::Http,
        Trigger::Timer,
        Trigger::Event,
        Trigger::Queue,
        Trigger::Storage,
        Trigger::Orchestration,
        Trigger::Others,
    ];

    /// The spelling used in the trace files.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Http => "http",
            Trigger::Timer => "timer",
            Trigger::Event => "event",
            Trigger::Queue => "queue",
            Trigger::Storage => "storage",
            Trigger::Orchestration => "orchestration",
            Trigger::Others => "others",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Trigger {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let s = s.trim();
        Trigger::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
            .ok_or(())
    }
}

/// The percentile points of `durations.csv`, in column order.
pub const DURATION_PERCENTILES: [f64; 7] = [0.0, 1.0, 25.0, 50.0, 75.0, 99.0, 100.0];
/// The percentile points of `memory.csv`, in column order.
pub const MEMORY_PERCENTILES: [f64; 8] = [1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0, 100.0];

/// A function's execution-time distribution (`durations.csv`), in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct DurationBands {
    /// `Average` (ms).
    pub average_ms: f64,
    /// `Count`: executions the statistics were taken over.
    pub count: f64,
    /// `Minimum` (ms).
    pub minimum_ms: f64,
    /// `Maximum` (ms).
    pub maximum_ms: f64,
    /// `percentile_Average_{0,1,25,50,75,99,100}` (ms), non-decreasing.
    pub percentiles_ms: [f64; 7],
}

/// A function's allocated-memory distribution (`memory.csv`), in MB.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryBands {
    /// `SampleCount`.
    pub sample_count: f64,
    /// `AverageAllocatedMb`.
    pub average_mb: f64,
    /// `AverageAllocatedMb_pct{1,5,25,50,75,95,99,100}` (MB), non-decreasing.
    pub percentiles_mb: [f64; 8],
}

/// One function of the trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    pub hash_owner: String,
    pub hash_app: String,
    pub hash_function: String,
    pub trigger: Trigger,
    /// Invocations per minute, one entry per minute column (first column = `Trace::first_minute`).
    pub per_minute: Vec<u32>,
    pub duration: DurationBands,
    pub memory: MemoryBands,
}

impl Function {
    /// Invocations over the whole trace.
    pub fn invocations(&self) -> u64 {
        self.per_minute.iter().map(|&c| u64::from(c)).sum()
    }
}

/// A whole trace: functions in `invocations.csv` row order, all sharing the same minute columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Where the trace came from (a directory path or `embedded:<name>`).
    pub source: String,
    /// The name of the first minute column (`1` for a whole day, `480` for the Dirigent samples).
    pub first_minute: u32,
    /// Number of minute columns.
    pub minutes: u32,
    pub functions: Vec<Function>,
}

impl Trace {
    /// Total invocations over all minutes.
    pub fn invocations(&self) -> u64 {
        self.functions.iter().map(Function::invocations).sum()
    }

    /// Functions with at least one invocation.
    pub fn active_functions(&self) -> usize {
        self.functions
            .iter()
            .filter(|f| f.invocations() > 0)
            .count()
    }

    /// The first `minutes` minute columns (InVitro's loader reads the first N columns present).
    ///
    /// Errors when `minutes` is 0 or more than the trace holds, or when the window holds no
    /// invocation at all.
    pub fn window(&self, minutes: u32) -> Result<Trace> {
        self.window_after(0, minutes)
    }

    /// `minutes` minute columns after the first `skip` ones: another stretch of the same
    /// functions (a sensitivity study over the trace's hours; InVitro itself always replays
    /// from the first column). `first_minute` of the result names its first column.
    ///
    /// Errors when `skip` leaves no column, when `minutes` is 0 or more than the columns left,
    /// or when the window holds no invocation at all.
    pub fn window_after(&self, skip: u32, minutes: u32) -> Result<Trace> {
        let here = || Location::file(format!("{}/invocations.csv", self.source));
        if skip >= self.minutes {
            return Err(TraceError::new(
                here(),
                TraceErrorKind::BadSkip {
                    skip,
                    available: self.minutes,
                },
            ));
        }
        let left = self.minutes - skip;
        if minutes == 0 || minutes > left {
            return Err(TraceError::new(
                here(),
                TraceErrorKind::BadWindow {
                    requested: minutes,
                    available: left,
                },
            ));
        }
        let (from, to) = (skip as usize, (skip + minutes) as usize);
        let functions: Vec<Function> = self
            .functions
            .iter()
            .map(|f| Function {
                per_minute: f.per_minute[from..to].to_vec(),
                ..f.clone()
            })
            .collect();
        let t = Trace {
            source: self.source.clone(),
            first_minute: self.first_minute + skip,
            minutes,
            functions,
        };
        if t.invocations() == 0 {
            return Err(TraceError::new(
                here(),
                TraceErrorKind::EmptyWindow { skip, minutes },
            ));
        }
        Ok(t)
    }

    /// Scales every per-minute count by `factor` (a load multiplier for sweeps). Rounding carries
    /// the fractional remainder from minute to minute within each function, so a function's total
    /// is its original total times `factor`, rounded, and no randomness is involved.
    pub fn scaled(&self, factor: f64) -> Trace {
        let functions = self
            .functions
            .iter()
            .map(|f| {
                let mut carry = 0.0;
                let per_minute = f
                    .per_minute
                    .iter()
                    .map(|&c| {
                        let want = f64::from(c) * factor + carry;
                        let n = want.round().max(0.0);
                        carry = want - n;
                        n.min(f64::from(u32::MAX)) as u32
                    })
                    .collect();
                Function {
                    per_minute,
                    ..f.clone()
                }
            })
            .collect();
        Trace {
            source: format!("{} x{factor}", self.source),
            functions,
            ..self.clone()
        }
    }

    /// Keeps only the functions at the given indices (in the given order).
    pub fn subset(&self, indices: &[usize]) -> Trace {
        Trace {
            source: self.source.clone(),
            first_minute: self.first_minute,
            minutes: self.minutes,
            functions: indices.iter().map(|&i| self.functions[i].clone()).collect(),
        }
    }
}
