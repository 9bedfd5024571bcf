//! Workspace-level integration tests live in `tests/tests/`: determinism of whole runs, the CLI
//! end to end, and the shape of the paper's results. This library only holds shared helpers.

use std::path::{Path, PathBuf};

/// Path of a vendored trace directory (`traces/data/<name>`).
pub fn trace_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../traces/data")
        .join(name)
}

/// Parses `summary.json` and removes the fields that depend on the wall clock.
pub fn summary_without_wall_time(path: &Path) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("summary.json exists"))
            .expect("valid JSON");
    if let Some(scenarios) = v["scenarios"].as_object_mut() {
        for s in scenarios.values_mut() {
            if let Some(sim) = s["sim"].as_object_mut() {
                sim.remove("wall_s");
                sim.remove("events_per_s");
            }
        }
    }
    v
}
