//! Traces compiled into the binary, so nothing at run time depends on files outside it.
//!
//! All four are CC-BY 4.0 data from the Azure Functions Trace 2019 (Shahrad et al., "Serverless
//! in the Wild", USENIX ATC '20); see `traces/data/PROVENANCE.md` for where each came from.
//! - `azure-250` (the default): Dirigent's 250-function InVitro sample, the closest public sample
//!   to the paper's 200-function, ~32.5K-invocation trace (first 30 minutes: 33,232 invocations,
//!   171 active functions);
//! - `azure-100`, `azure-500`: the sibling samples of the same sampler run (nested 100 ⊂ 250 ⊂ 500);
//! - `invitro-example`: InVitro's 4-function CI example (hand-edited counts; for smoke tests).

use crate::error::Result;
use crate::model::Trace;
use crate::reader::{Source, read_sources};
use std::path::Path;

/// Prefix that selects an embedded trace wherever a trace directory is expected.
pub const PREFIX: &str = "embedded:";
/// Name of the default trace.
pub const DEFAULT: &str = "azure-250";

macro_rules! files {
    ($dir:literal) => {
        (
            include_bytes!(concat!("../data/", $dir, "/invocations.csv")).as_slice(),
            include_bytes!(concat!("../data/", $dir, "/durations.csv")).as_slice(),
            include_bytes!(concat!("../data/", $dir, "/memory.csv")).as_slice(),
        )
    };
}

/// Names of the embedded traces.
pub const NAMES: [&str; 4] = ["azure-250", "azure-100", "azure-500", "invitro-example"];

fn bytes(name: &str) -> Option<(&'static [u8], &'static [u8], &'static [u8])> {
    Some(match name {
        "azure-100" => files!("100"),
        "azure-250" => files!("250"),
        "azure-500" => files!("500"),
        "invitro-example" => files!("invitro-example"),
        _ => return None,
    })
}

/// Reads embedded trace `name` (one of [`NAMES`]); `None` if there is no such trace.
pub fn load(name: &str) -> Option<Result<Trace>> {
    let (i, d, m) = bytes(name)?;
    let p = |f: &str| format!("{PREFIX}{name}/{f}");
    let (pi, pd, pm) = (p("invocations.csv"), p("durations.csv"), p("memory.csv"));
    Some(read_sources(
        &format!("{PREFIX}{name}"),
        Source {
            path: Path::new(&pi),
            bytes: i,
        },
        Source {
            path: Path::new(&pd),
            bytes: d,
        },
        Source {
            path: Path::new(&pm),
            bytes: m,
        },
    ))
}

/// The default trace (`azure-250`).
pub fn default_trace() -> Trace {
    load(DEFAULT)
        .expect("default embedded trace exists")
        .expect("embedded trace is valid")
}
