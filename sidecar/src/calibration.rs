//! The calibration file the bench measurements fill: the schema is
//! [`meshsim_models::calibration`] (re-exported here, one definition for the sidecar, the
//! simulator and `meshsim calibrate`); this module only adds what needs the harness or the
//! machine: the machine description, and the conversion of bench measurements into entries.
//!
//! The dependency points one way: `meshsim-sidecar -> meshsim-models` (a leaf with serde, toml
//! and thiserror only); `models` never depends on this crate.

pub use meshsim_models::calibration::*;

use crate::bench::Measurement;

/// Describes the current machine (best effort; unknown fields are empty).
pub fn current_machine() -> MachineInfo {
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

/// The calibration entry of a proxy measurement (`None` for the direct baseline, which has no
/// proxy cost).
pub fn policy_cost(m: &Measurement) -> Option<PolicyCost> {
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
        cpu_us_over_pass_through: m.over_pass_through_paired.map(|p| p.median),
    })
}

/// A calibration file from a bench run: `ms` as returned by [`crate::bench::run_suite`] and
/// the handshake from [`crate::bench::measure_handshake_median`], measured now on this machine.
pub fn file_from(
    ms: &[Measurement],
    mtls_handshake: Option<HandshakeCost>,
    method: String,
    reference: Option<String>,
) -> CalibrationFile {
    CalibrationFile {
        schema: CALIBRATION_SCHEMA,
        measured_at: crate::policy::access_log::rfc3339_ms(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        ),
        machine: current_machine(),
        method,
        reference,
        entries: ms.iter().filter_map(policy_cost).collect(),
        isolation: None,
        mtls_handshake,
        mtls_handshake_rsa2048: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_measured_file_validates_with_the_models_schema() {
        let m = Measurement {
            target: "jwt".into(),
            rate_rps: 1000,
            duration_s: 1.0,
            sent: 1000,
            ok: 999,
            errors: 1,
            failures: Default::default(),
            cpu_us_per_request: Some(42.5),
            latency_p50_us: 300,
            latency_p99_us: 900,
            added_p50_us: Some(80),
            added_p99_us: Some(-3),
            rss_kib: Some(9000),
            startup_ms: Some(3.0),
            idle_rss_kib: None,
            idle_anon_kib: None,
            x_nginx_paired: None,
            over_pass_through_paired: crate::bench::Paired::of(vec![9.0, 4.0, 6.5]),
        };
        let direct = Measurement {
            target: "direct".into(),
            cpu_us_per_request: None,
            ..m.clone()
        };
        let hs = HandshakeCost {
            rate_cps: 200,
            connections: 200,
            server_cpu_us: 300.0,
            client_cpu_us: 280.0,
            added_latency_p50_us: 650.0,
            added_latency_p99_us: 2000.0,
            error_rate: 0.0,
        };
        let f = file_from(
            &[direct, m],
            Some(hs),
            "open loop".into(),
            Some("nginx".into()),
        );
        assert_eq!(f.entries.len(), 1, "the direct baseline is not an entry");
        assert!((f.entries[0].error_rate - 0.001).abs() < 1e-12);
        assert_eq!(
            f.entries[0].cpu_us_over_pass_through,
            Some(6.5),
            "the rounds' median"
        );
        let text = f.to_toml_string();
        let back = CalibrationFile::from_toml_str(&text, "measured.toml").expect("valid");
        assert_eq!(back, f);
        assert!(current_machine().cores >= 1);
    }
}
