//! # meshsim-traces
//!
//! The workload layer of meshsim: the Azure Functions 2019 / InVitro trace format (reader,
//! validation, writer), invocation arrivals inside each minute, a distribution-preserving
//! sampler, a synthetic generator for scale studies, and the traces embedded in the binary.
//!
//! ```
//! use meshsim_traces::{embedded, ArrivalConfig, ArrivalStream, TraceStats};
//! use std::sync::Arc;
//!
//! let trace = embedded::default_trace().window(30).unwrap();
//! assert_eq!(TraceStats::of(&trace).invocations, 33_232);
//! let arrivals = ArrivalStream::new(Arc::new(trace), ArrivalConfig { seed: 1, ..Default::default() });
//! assert_eq!(arrivals.count(), 33_232);
//! ```
//!
//! Determinism: no wall clock, no global RNG, no hash-map iteration; every random draw comes
//! from a named stream of [`rng`].

pub mod arrivals;
pub mod embedded;
pub mod error;
pub mod model;
pub mod reader;
pub mod rng;
pub mod sample;
pub mod stats;
pub mod synth;
pub mod writer;

pub use arrivals::{ArrivalConfig, ArrivalProcess, ArrivalStream, Invocation};
pub use error::{Location, Result, TraceError, TraceErrorKind};
pub use model::{DurationBands, Function, MemoryBands, Trace, Trigger};
pub use reader::read_dir;
pub use sample::{SampleConfig, SampleResult, sample_trace};
pub use stats::TraceStats;
pub use synth::{SynthConfig, synthesize};
pub use writer::write_dir;

/// Loads a trace named on the command line: `embedded:<name>` or a directory path.
pub fn load(spec: &str) -> Result<Trace> {
    if let Some(name) = spec.strip_prefix(embedded::PREFIX) {
        return embedded::load(name).unwrap_or_else(|| {
            Err(TraceError::new(
                Location::file(spec),
                TraceErrorKind::InvalidParameter {
                    name: "trace",
                    expected: format!(
                        "one of {}",
                        embedded::NAMES.map(|n| format!("embedded:{n}")).join(", ")
                    ),
                },
            ))
        });
    }
    read_dir(std::path::Path::new(spec))
}
