//! Writing results: every file goes to a temporary name in its directory and is renamed into
//! place, so an interrupted run never leaves a half-written file.

use anyhow::{Context, Result};
use std::path::Path;

/// Writes `bytes` to `path` atomically (temp file + rename), creating parent directories.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    meshsim_traces::writer::atomic_write(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// Serialises `value` as pretty JSON (with a final newline) and writes it atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("serialising JSON")?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}
