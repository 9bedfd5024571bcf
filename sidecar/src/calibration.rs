//! Calibration-file schema filled from bench measurements: what one policy set costs per
//! request on this machine. Issue 8's `meshsim calibrate` writes these under `models/`; the
//! schema lives here until the lead moves it into the `models` crate.

use serde::{Deserialize, Serialize};

use crate::bench::Measurement;

/// Schema version of [`CalibrationFile`].
pub const CALIBRATION_SCHEMA: u32 = 1;

/// One calibration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationFile {
    /// [`CALIBRATION_SCHEMA`].
    pub schema: u32,
    /// When it was measured (RFC 3339, UTC).
    pub measured_at: String,
    /// Where it was measured.
    pub machine: MachineInfo,
    /// How it was measured (load generator, durations), free text.
    pub method: String,
    /// Reference proxy, e.g. `nginx 1.22.1` (ratios are relative to it).
    pub reference: Option<String>,
    /// One entry per (policy set, rate).
    pub entries: Vec<PolicyCost>,
    /// Costs of the isolation modes (`[isolation.per_request]`); the type lives in
    /// `meshsim-models`, the schema's home.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<meshsim_models::calibration::IsolationCosts>,
}

/// Machine description.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineInfo {
    /// Logical CPUs.
    pub cores: usize,
    /// CPU model name from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
}

impl MachineInfo {
    /// Describe the current machine (best effort; unknown fields are empty).
    pub fn current() -> MachineInfo {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default();
        MachineInfo {
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu_model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
        }
    }
}

/// Measured cost of one policy set at one rate, per request and per hop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyCost {
    /// `pass-through`, a policy name (`mtls`, `jwt`, ...), `all-nine`, or `nginx`.
    pub policy_set: String,
    /// Offered load, requests per second.
    pub rate_rps: u64,
    /// Proxy CPU time per request, microseconds.
    pub cpu_us_per_request: f64,
    /// Added p50 latency vs a direct call, microseconds.
    pub added_latency_p50_us: f64,
    /// Added p99 latency vs a direct call, microseconds.
    pub added_latency_p99_us: f64,
    /// Proxy resident memory, KiB.
    pub rss_kib: u64,
    /// Process start to first served request, milliseconds.
    pub startup_ms: f64,
    /// Fraction of requests that failed during the measurement.
    pub error_rate: f64,
}

impl PolicyCost {
    /// From a proxy measurement (None for the direct baseline, which has no proxy cost).
    pub fn from_measurement(m: &Measurement) -> Option<PolicyCost> {
        Some(PolicyCost {
            policy_set: m.target.clone(),
            rate_rps: m.rate_rps,
            cpu_us_per_request: m.cpu_us_per_request?,
            added_latency_p50_us: m.added_p50_us.unwrap_or(0) as f64,
            added_latency_p99_us: m.added_p99_us.unwrap_or(0) as f64,
            rss_kib: m.rss_kib.unwrap_or(0),
            startup_ms: m.startup_ms.unwrap_or(0.0),
            error_rate: if m.sent == 0 {
                0.0
            } else {
                m.errors as f64 / m.sent as f64
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_file_round_trips_and_rejects_unknown_fields() {
        let f = CalibrationFile {
            schema: CALIBRATION_SCHEMA,
            measured_at: "2026-11-25T00:00:00.000Z".into(),
            machine: MachineInfo::current(),
            method: "open loop".into(),
            reference: Some("nginx".into()),
            entries: vec![PolicyCost {
                policy_set: "jwt".into(),
                rate_rps: 1000,
                cpu_us_per_request: 42.5,
                added_latency_p50_us: 80.0,
                added_latency_p99_us: 300.0,
                rss_kib: 9000,
                startup_ms: 3.0,
                error_rate: 0.0,
            }],
            isolation: None,
        };
        let text = toml::to_string(&f).expect("serialise");
        let back: CalibrationFile = toml::from_str(&text).expect("parse");
        assert_eq!(back.entries, f.entries);
        let bad = text.replace("schema = 1", "schema = 1\nbogus = 2");
        assert!(toml::from_str::<CalibrationFile>(&bad).is_err());
    }
}
