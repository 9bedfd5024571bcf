//! Writes a trace in the same three-file format the reader reads. Each file is written to a
//! temporary name and renamed into place, so an interrupted write leaves no half-written file.

use crate::error::{Location, Result, TraceError, TraceErrorKind};
use crate::model::Trace;
use crate::reader::{DURATIONS, INVOCATIONS, MEMORY};
use std::fmt::Write as _;
use std::path::Path;

/// Writes `invocations.csv`, `durations.csv` and `memory.csv` into `dir` (created if needed).
pub fn write_dir(trace: &Trace, dir: &Path) -> Result<()> {
    let io = |p: &Path, e: std::io::Error| {
        TraceError::new(Location::file(p), TraceErrorKind::Io(e.to_string()))
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;

    let mut inv = String::from("HashOwner,HashApp,HashFunction,Trigger");
    for m in 0..trace.minutes {
        let _ = write!(inv, ",{}", trace.first_minute + m);
    }
    inv.push('\n');
    let mut dur = String::from(
        "HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum,percentile_Average_0,\
         percentile_Average_1,percentile_Average_25,percentile_Average_50,percentile_Average_75,\
         percentile_Average_99,percentile_Average_100\n",
    );
    let mut mem = String::from(
        "HashOwner,HashApp,HashFunction,SampleCount,AverageAllocatedMb,AverageAllocatedMb_pct1,\
         AverageAllocatedMb_pct5,AverageAllocatedMb_pct25,AverageAllocatedMb_pct50,\
         AverageAllocatedMb_pct75,AverageAllocatedMb_pct95,AverageAllocatedMb_pct99,\
         AverageAllocatedMb_pct100\n",
    );
    for f in &trace.functions {
        let ids = format!("{},{},{}", f.hash_owner, f.hash_app, f.hash_function);
        let _ = write!(inv, "{ids},{}", f.trigger);
        for c in &f.per_minute {
            let _ = write!(inv, ",{c}");
        }
        inv.push('\n');
        let d = &f.duration;
        let _ = write!(
            dur,
            "{ids},{},{},{},{}",
            d.average_ms, d.count, d.minimum_ms, d.maximum_ms
        );
        for p in d.percentiles_ms {
            let _ = write!(dur, ",{p}");
        }
        dur.push('\n');
        let _ = write!(
            mem,
            "{ids},{},{}",
            f.memory.sample_count, f.memory.average_mb
        );
        for p in f.memory.percentiles_mb {
            let _ = write!(mem, ",{p}");
        }
        mem.push('\n');
    }
    for (name, body) in [(INVOCATIONS, inv), (DURATIONS, dur), (MEMORY, mem)] {
        atomic_write(&dir.join(name), body.as_bytes()).map_err(|e| io(&dir.join(name), e))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
