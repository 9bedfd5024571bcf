//! Calibration files: what the reference sidecar (the `sidecar` crate) costs per request for
//! each policy set, measured on a real machine by its `bench` subcommand (issue 8's
//! `meshsim calibrate`). This is the one definition of the schema: the sidecar crate re-exports
//! it (`meshsim_sidecar::calibration`) and adds only the harness-side conversions; this module
//! does no I/O (a caller reads the file and passes its text).
//!
//! The shipped file `models/calibration/reference-2core.toml` was made on a 2-core machine
//! with `meshsim calibrate --rates 1000 --duration 5 --repeats 15` (every entry at the rate the
//! built-in mesh profiles read, the `[mtls_handshake]` and `[isolation]` tables) and `meshsim calibrate handshake --key-algorithm rsa-2048 --into ...`
//! (the `[mtls_handshake_rsa2048]` table); the file header records when, where and how.
//! [`CalibrationFile::reference`] embeds it. The handshake tables ([`HandshakeCost`]: CPU of a
//! full mTLS handshake on a new connection, sidecar and client side, and the first request's
//! added latency) are optional: files without them still load, and the simulator's mesh model
//! then needs the profile's `policy.mtls_handshake_cpu_us`.
//!
//! [`PolicyCosts`] turns the measured entries into an additive cost model at one rate: a
//! pass-through cost, a base cost for activating the policy pipeline (paid once when any policy
//! is on) and a marginal cost per policy, identified from the measurements themselves: with
//! `d_p` = (policy `p` alone) - (pass-through) = base + m_p for each of the `n` policies and
//! `D` = (all n) - (pass-through) = base + sum m_p, `base = (sum d_p - D) / (n - 1)`; each
//! difference is clamped at 0 (a policy measured cheaper than the pass-through is noise), so
//! the marginal costs are `max(0, d_p - base)`. For CPU, an entry's `cpu_us_over_pass_through`
//! (the median of its per-round differences to the pass-through, written by calibrations
//! since 2026-11-26) is its `d`, when present.

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Schema version of [`CalibrationFile`].
pub const CALIBRATION_SCHEMA: u32 = 1;

/// The nine policies of the paper's Table 1, by the names the calibration file uses.
pub const POLICIES: [&str; 9] = [
    "jwt",
    "ports",
    "authz",
    "rate_limit",
    "tracing",
    "access_log",
    "mtls",
    "retry",
    "circuit_breaker",
];

/// Entries with more failed requests than this are not used by the cost model.
pub const MAX_ERROR_RATE: f64 = 0.01;

/// The policy set of the proxy without any policy.
pub const PASS_THROUGH: &str = "pass-through";
/// The policy set with all nine policies on.
pub const ALL_NINE: &str = "all-nine";

/// One calibration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Costs of the sidecar's isolation modes (optional, added by issue 9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<IsolationCosts>,
    /// Cost of a full mTLS handshake on a new connection (`[mtls_handshake]`); absent in files
    /// measured before it was (they still load; the simulator then needs the profile's
    /// `policy.mtls_handshake_cpu_us`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls_handshake: Option<HandshakeCost>,
    /// The same handshake with RSA 2048 keys (CA and workloads, `[mtls_handshake_rsa2048]`):
    /// Istio's default workload certificates; `[mtls_handshake]` is ECDSA P-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls_handshake_rsa2048: Option<HandshakeCost>,
}

/// `[isolation]`: what the sidecar's isolation modes cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsolationCosts {
    /// `[isolation.per_request]`: a fresh WebAssembly instance per request.
    #[serde(default)]
    pub per_request: Option<PerRequestCosts>,
}

/// Per-request isolation (`meshsim-sidecar serve --isolation per-request`): in-process
/// micro-benchmark means (`meshsim-sidecar sandbox-bench`) and loopback points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerRequestCosts {
    /// Creating a fresh instance (pooling allocator) of an empty guest, running it and
    /// dropping it, µs per request (mean): the sandbox boot cost.
    pub sandbox_create_us: f64,
    /// Fresh instance + the header-only policy chain in it + header edits, µs (mean).
    pub chain_us: f64,
    /// The same header-only chain as shared-mode tower checks, µs (mean).
    pub shared_chain_us: f64,
    /// The header-only chain on the first request after an idle release (the module, its
    /// engine and pool compiled again), µs (mean).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recompile_us: Option<f64>,
    /// Anonymous resident memory of the compiled chain module (engine, pool, code) that the
    /// chain sandboxes of a process share, KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_kib: Option<f64>,
    /// Anonymous resident memory each further function adds while the module is held (its
    /// config and layer), KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compiled_kib_per_function: Option<f64>,
    /// The same after the idle release (what an idle function keeps), KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_kib_per_function: Option<f64>,
    /// Loopback measurements of the `header-only` policy set in both modes.
    #[serde(default)]
    pub entries: Vec<IsolationPoint>,
}

/// One loopback rate of the `header-only` set, shared vs per-request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsolationPoint {
    /// Offered load, requests per second.
    pub rate_rps: u64,
    /// Proxy CPU per request, shared mode, µs.
    pub shared_cpu_us_per_request: f64,
    /// Proxy CPU per request, per-request mode, µs.
    pub per_request_cpu_us_per_request: f64,
    /// Anonymous (private) resident memory of the idle proxy, shared mode, KiB.
    pub shared_idle_anon_kib: u64,
    /// Anonymous (private) resident memory of the idle proxy, per-request mode, KiB.
    pub per_request_idle_anon_kib: u64,
}

impl PerRequestCosts {
    fn validate(&self) -> Result<(), (String, String)> {
        for (name, v) in [
            ("sandbox_create_us", self.sandbox_create_us),
            ("chain_us", self.chain_us),
            ("shared_chain_us", self.shared_chain_us),
        ] {
            if !(v.is_finite() && (0.0..=1e6).contains(&v)) {
                return Err((name.to_owned(), v.to_string()));
            }
        }
        if let Some(v) = self.recompile_us
            && !(v.is_finite() && (0.0..=1e7).contains(&v))
        {
            return Err(("recompile_us".to_owned(), v.to_string()));
        }
        for (name, v) in [
            ("module_kib", self.module_kib),
            ("compiled_kib_per_function", self.compiled_kib_per_function),
            ("idle_kib_per_function", self.idle_kib_per_function),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && (-1e6..=1e6).contains(&v))
            {
                return Err((name.to_owned(), v.to_string()));
            }
        }
        for (i, e) in self.entries.iter().enumerate() {
            if e.rate_rps == 0 {
                return Err((format!("entries[{i}].rate_rps"), "0".into()));
            }
            for (name, v) in [
                ("shared_cpu_us_per_request", e.shared_cpu_us_per_request),
                (
                    "per_request_cpu_us_per_request",
                    e.per_request_cpu_us_per_request,
                ),
            ] {
                if !(v.is_finite() && (0.0..=1e6).contains(&v)) {
                    return Err((format!("entries[{i}].{name}"), v.to_string()));
                }
            }
        }
        Ok(())
    }
}

impl CalibrationFile {
    /// The measured sandbox boot per request (`[isolation.per_request].sandbox_create_us`),
    /// when this file has it.
    pub fn sandbox_create_us(&self) -> Option<f64> {
        self.isolation
            .as_ref()?
            .per_request
            .as_ref()
            .map(|p| p.sandbox_create_us)
    }

    /// `[isolation.per_request].recompile_us`, when measured.
    pub fn recompile_us(&self) -> Option<f64> {
        self.isolation.as_ref()?.per_request.as_ref()?.recompile_us
    }
}

/// Measured cost of a full mTLS handshake (TLS 1.3, ECDHE P-256, ECDSA P-256 certificates on
/// both sides, SPIFFE checks, no session resumption) on a new connection to the sidecar: a
/// request on a fresh connection minus a request on a reused keep-alive connection, at the same
/// rate (so the difference also holds the TCP connect/accept/close, tens of µs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandshakeCost {
    /// New connections per second the measurement drove.
    pub rate_cps: u64,
    /// Fresh connections measured.
    pub connections: u64,
    /// Sidecar process CPU per handshake (server side), µs.
    pub server_cpu_us: f64,
    /// Load generator CPU per handshake (client side, the same rustls + aws-lc stack), µs.
    pub client_cpu_us: f64,
    /// Added p50 latency of the first request on a fresh connection vs a reused one, µs.
    pub added_latency_p50_us: f64,
    /// Added p99 latency of the first request on a fresh connection vs a reused one, µs.
    pub added_latency_p99_us: f64,
    /// Fraction of fresh-connection requests that failed.
    pub error_rate: f64,
}

impl HandshakeCost {
    /// CPU of one handshake, both sides together, µs.
    pub fn cpu_us(&self) -> f64 {
        self.server_cpu_us + self.client_cpu_us
    }
}

/// Machine description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineInfo {
    /// Logical CPUs.
    pub cores: usize,
    /// CPU model name from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
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
    /// CPU per request over the pass-through's, paired by round: the median over rounds of
    /// (this set's CPU per request - the pass-through's in the same round), microseconds.
    /// Steadier than the difference of the two `cpu_us_per_request` medians, and what the
    /// cost model takes as the set's difference when present. Absent for nginx and the
    /// pass-through, and in files written before it existed (the cost model then takes the
    /// difference of the medians).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_us_over_pass_through: Option<f64>,
}

impl PolicyCost {
    /// CPU per request over the pass-through's (`pass_through_cpu_us`, measured at the same
    /// rate), unclamped: the paired `cpu_us_over_pass_through` where the file has it, else the
    /// difference of the two medians.
    pub fn cpu_over_pass_through(&self, pass_through_cpu_us: f64) -> f64 {
        self.cpu_us_over_pass_through
            .unwrap_or(self.cpu_us_per_request - pass_through_cpu_us)
    }
}

impl CalibrationFile {
    /// The shipped reference file (`models/calibration/reference-2core.toml`).
    pub fn reference() -> Self {
        Self::from_toml_str(
            include_str!("../calibration/reference-2core.toml"),
            "models/calibration/reference-2core.toml",
        )
        .expect("the shipped calibration file is valid (tested)")
    }

    /// Parses and validates a file's text; `file` names it in errors.
    pub fn from_toml_str(text: &str, file: &str) -> Result<Self, ConfigError> {
        let f: CalibrationFile =
            toml::from_str(text).map_err(|e| crate::parse_error(text, file, &e))?;
        f.validate_in(file)?;
        Ok(f)
    }

    /// Serialises to TOML.
    pub fn to_toml_string(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# not serialisable: {e}"))
    }

    /// Checks the schema version and every entry's ranges; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_in("<calibration>")
    }

    fn validate_in(&self, file: &str) -> Result<(), ConfigError> {
        let bad = |field: String, value: String, allowed: &str| ConfigError::Invalid {
            file: file.to_owned(),
            field,
            value,
            allowed: allowed.to_owned(),
        };
        if self.schema != CALIBRATION_SCHEMA {
            return Err(ConfigError::Version {
                file: file.to_owned(),
                found: self.schema,
                expected: CALIBRATION_SCHEMA,
            });
        }
        if self.entries.is_empty() {
            return Err(bad("entries".into(), "[]".into(), "at least one entry"));
        }
        for (i, e) in self.entries.iter().enumerate() {
            let f = |name: &str| format!("entries[{i}].{name}");
            if e.policy_set.trim().is_empty() {
                return Err(bad(f("policy_set"), "\"\"".into(), "a policy set name"));
            }
            if e.rate_rps == 0 {
                return Err(bad(f("rate_rps"), "0".into(), ">= 1"));
            }
            // Added latencies are differences of two measured percentiles and may be negative
            // within the noise; the cost model clamps them.
            for (name, v) in [
                ("added_latency_p50_us", e.added_latency_p50_us),
                ("added_latency_p99_us", e.added_latency_p99_us),
            ] {
                if !v.is_finite() {
                    return Err(bad(f(name), v.to_string(), "a finite number"));
                }
            }
            for (name, v) in [
                ("cpu_us_per_request", e.cpu_us_per_request),
                ("startup_ms", e.startup_ms),
            ] {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(bad(f(name), v.to_string(), "a finite number >= 0"));
                }
            }
            // A difference of two measurements: negative within the noise, clamped by the
            // cost model.
            if let Some(v) = e.cpu_us_over_pass_through
                && !v.is_finite()
            {
                return Err(bad(
                    f("cpu_us_over_pass_through"),
                    v.to_string(),
                    "a finite number",
                ));
            }
            if !(e.error_rate.is_finite() && (0.0..=1.0).contains(&e.error_rate)) {
                return Err(bad(f("error_rate"), e.error_rate.to_string(), "0 ..= 1"));
            }
        }
        if let Some(p) = self.isolation.as_ref().and_then(|i| i.per_request.as_ref())
            && let Err((field, value)) = p.validate()
        {
            return Err(bad(
                format!("isolation.per_request.{field}"),
                value,
                "a finite number in 0 ..= 1e6 (rates >= 1)",
            ));
        }
        for (table, h) in [
            ("mtls_handshake", &self.mtls_handshake),
            ("mtls_handshake_rsa2048", &self.mtls_handshake_rsa2048),
        ] {
            let Some(h) = h else { continue };
            let f = |name: &str| format!("{table}.{name}");
            if h.rate_cps == 0 {
                return Err(bad(f("rate_cps"), "0".into(), ">= 1"));
            }
            if h.connections == 0 {
                return Err(bad(f("connections"), "0".into(), ">= 1"));
            }
            for (name, v) in [
                ("server_cpu_us", h.server_cpu_us),
                ("client_cpu_us", h.client_cpu_us),
            ] {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(bad(f(name), v.to_string(), "a finite number >= 0"));
                }
            }
            for (name, v) in [
                ("added_latency_p50_us", h.added_latency_p50_us),
                ("added_latency_p99_us", h.added_latency_p99_us),
            ] {
                if !v.is_finite() {
                    return Err(bad(f(name), v.to_string(), "a finite number"));
                }
            }
            if !(h.error_rate.is_finite() && (0.0..=MAX_ERROR_RATE).contains(&h.error_rate)) {
                return Err(bad(
                    f("error_rate"),
                    h.error_rate.to_string(),
                    &format!("0 ..= {MAX_ERROR_RATE} (an overloaded run measures the overload)"),
                ));
            }
        }
        Ok(())
    }

    /// The entry of `policy_set` measured at the rate closest to `rate_rps` (ties: the lower
    /// rate), among entries whose error rate is at most [`MAX_ERROR_RATE`] (an overloaded
    /// point measures the overload, not the policy).
    pub fn entry(&self, policy_set: &str, rate_rps: u64) -> Option<&PolicyCost> {
        self.entries
            .iter()
            .filter(|e| e.policy_set == policy_set && e.error_rate <= MAX_ERROR_RATE)
            .min_by_key(|e| (e.rate_rps.abs_diff(rate_rps), e.rate_rps))
    }

    /// The additive per-policy cost model at `rate_rps` (see the module docs). Needs the
    /// `pass-through` and `all-nine` entries and one entry per policy of [`POLICIES`].
    pub fn policy_costs(&self, rate_rps: u64) -> Result<PolicyCosts, ConfigError> {
        let need = |set: &str| {
            self.entry(set, rate_rps)
                .ok_or_else(|| ConfigError::Invalid {
                    file: "<calibration>".into(),
                    field: "entries".into(),
                    value: format!("no `{set}` entry"),
                    allowed: "entries for pass-through, all-nine and each of the nine policies"
                        .into(),
                })
        };
        let pt = need(PASS_THROUGH)?;
        let all = need(ALL_NINE)?;
        let mut alone = Vec::with_capacity(POLICIES.len());
        for p in POLICIES {
            alone.push(need(p)?);
        }
        // `over(e)`: the set's difference to the pass-through, whose value is `base_v`.
        let split = |base_v: f64, over: &dyn Fn(&PolicyCost) -> f64| -> (f64, f64, [f64; 9]) {
            let d: Vec<f64> = alone.iter().map(|e| over(e).max(0.0)).collect();
            let d_all = over(all).max(0.0);
            let sum: f64 = d.iter().sum();
            let act = ((sum - d_all) / (POLICIES.len() as f64 - 1.0)).max(0.0);
            let mut m = [0.0; 9];
            for (slot, di) in m.iter_mut().zip(&d) {
                *slot = (di - act).max(0.0);
            }
            (base_v, act, m)
        };
        let (cpu_pt, cpu_base, cpu_m) = split(pt.cpu_us_per_request, &|e| {
            e.cpu_over_pass_through(pt.cpu_us_per_request)
        });
        let (lat_pt, lat_base, lat_m) = split(pt.added_latency_p50_us, &|e| {
            e.added_latency_p50_us - pt.added_latency_p50_us
        });
        let (p99_pt, p99_base, p99_m) = split(pt.added_latency_p99_us, &|e| {
            e.added_latency_p99_us - pt.added_latency_p99_us
        });
        Ok(PolicyCosts {
            rate_rps: pt.rate_rps,
            cpu: CostSplit {
                pass_through: cpu_pt,
                activation: cpu_base,
                marginal: cpu_m,
            },
            latency_p50: CostSplit {
                pass_through: lat_pt,
                activation: lat_base,
                marginal: lat_m,
            },
            latency_p99: CostSplit {
                pass_through: p99_pt,
                activation: p99_base,
                marginal: p99_m,
            },
            rss_kib: pt.rss_kib,
            startup_ms: pt.startup_ms,
        })
    }
}

/// One quantity split into pass-through, pipeline activation and per-policy marginal parts,
/// microseconds (indexed like [`POLICIES`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostSplit {
    pub pass_through: f64,
    pub activation: f64,
    pub marginal: [f64; 9],
}

impl CostSplit {
    /// Cost of a policy set given as a bit mask over [`POLICIES`] (bit i = `POLICIES[i]`).
    pub fn of(&self, mask: u16) -> f64 {
        if mask == 0 {
            return self.pass_through;
        }
        let m: f64 = (0..9)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| self.marginal[i])
            .sum();
        self.pass_through + self.activation + m
    }
}

/// The additive cost model of the reference sidecar at one measured rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyCosts {
    /// The rate the entries were measured at.
    pub rate_rps: u64,
    /// CPU per request, µs.
    pub cpu: CostSplit,
    /// Added p50 latency, µs (includes the proxy's own CPU time on an idle machine).
    pub latency_p50: CostSplit,
    /// Added p99 latency, µs.
    pub latency_p99: CostSplit,
    /// Pass-through resident memory, KiB.
    pub rss_kib: u64,
    /// Pass-through start-up time, ms.
    pub startup_ms: f64,
}

/// Index of a policy name in [`POLICIES`].
pub fn policy_index(name: &str) -> Option<usize> {
    POLICIES.iter().position(|p| *p == name)
}

/// The bit of policy `name` in a mask over [`POLICIES`] (0 for an unknown name).
pub fn policy_bit(name: &str) -> u16 {
    policy_index(name).map_or(0, |i| 1 << i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(set: &str, cpu: f64, lat: f64) -> PolicyCost {
        PolicyCost {
            policy_set: set.into(),
            rate_rps: 1000,
            cpu_us_per_request: cpu,
            added_latency_p50_us: lat,
            added_latency_p99_us: 2.0 * lat,
            rss_kib: 9000,
            startup_ms: 3.0,
            error_rate: 0.0,
            cpu_us_over_pass_through: None,
        }
    }

    fn file(entries: Vec<PolicyCost>) -> CalibrationFile {
        CalibrationFile {
            schema: CALIBRATION_SCHEMA,
            measured_at: "2026-11-25T00:00:00Z".into(),
            machine: MachineInfo {
                cores: 2,
                cpu_model: "test".into(),
                kernel: "6".into(),
            },
            method: "synthetic".into(),
            reference: None,
            entries,
            isolation: None,
            mtls_handshake: None,
            mtls_handshake_rsa2048: None,
        }
    }

    fn handshake() -> HandshakeCost {
        HandshakeCost {
            rate_cps: 200,
            connections: 400,
            server_cpu_us: 310.5,
            client_cpu_us: 290.0,
            added_latency_p50_us: 700.0,
            added_latency_p99_us: 2500.0,
            error_rate: 0.0,
        }
    }

    #[test]
    fn handshake_table_round_trips_and_is_optional() {
        let mut f = file(vec![entry("mtls", 42.5, 80.0)]);
        let old = f.to_toml_string();
        assert!(
            !old.contains("mtls_handshake"),
            "absent stays absent:\n{old}"
        );
        assert_eq!(CalibrationFile::from_toml_str(&old, "old.toml").unwrap(), f);
        f.mtls_handshake = Some(handshake());
        let text = f.to_toml_string();
        assert!(text.contains("[mtls_handshake]"), "{text}");
        let back = CalibrationFile::from_toml_str(&text, "new.toml").unwrap();
        assert_eq!(back, f);
        assert!((back.mtls_handshake.unwrap().cpu_us() - 600.5).abs() < 1e-9);
        let bad = text.replace("rate_cps = 200", "rate_cps = 200\nbogus = 1");
        assert!(CalibrationFile::from_toml_str(&bad, "bad.toml").is_err());
    }

    #[test]
    fn invalid_handshake_names_the_field() {
        let mut f = file(vec![entry("mtls", 42.5, 80.0)]);
        let mut h = handshake();
        h.server_cpu_us = -1.0;
        f.mtls_handshake = Some(h);
        let err = CalibrationFile::from_toml_str(&f.to_toml_string(), "x.toml").unwrap_err();
        assert!(
            err.to_string().contains("mtls_handshake.server_cpu_us"),
            "{err}"
        );
        let mut h = handshake();
        h.error_rate = 0.5;
        f.mtls_handshake = Some(h);
        let err = CalibrationFile::from_toml_str(&f.to_toml_string(), "x.toml").unwrap_err();
        assert!(
            err.to_string().contains("mtls_handshake.error_rate"),
            "{err}"
        );
        let text = f
            .to_toml_string()
            .replace("client_cpu_us = 290.0", "client_cpu_us = \"fast\"");
        // A type error is a parse error at the field's line.
        let want = 1 + text
            .lines()
            .position(|l| l.starts_with("client_cpu_us"))
            .unwrap();
        match CalibrationFile::from_toml_str(&text, "x.toml").unwrap_err() {
            ConfigError::Parse { line, .. } => assert_eq!(line, want),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn round_trips_and_rejects_unknown_fields() {
        let f = file(vec![entry("jwt", 42.5, 80.0)]);
        let text = f.to_toml_string();
        let back = CalibrationFile::from_toml_str(&text, "rt.toml").unwrap();
        assert_eq!(back, f);
        let bad = text.replace("schema = 1", "schema = 1\nbogus = 2");
        let err = CalibrationFile::from_toml_str(&bad, "bad.toml").unwrap_err();
        assert!(err.to_string().contains("bad.toml"), "{err}");
    }

    #[test]
    fn invalid_entry_names_the_field() {
        let mut f = file(vec![entry("jwt", -1.0, 80.0)]);
        let err = CalibrationFile::from_toml_str(&f.to_toml_string(), "x.toml").unwrap_err();
        assert!(
            err.to_string().contains("entries[0].cpu_us_per_request"),
            "{err}"
        );
        f.entries[0].cpu_us_per_request = 1.0;
        f.entries[0].error_rate = 2.0;
        let err = CalibrationFile::from_toml_str(&f.to_toml_string(), "x.toml").unwrap_err();
        assert!(err.to_string().contains("entries[0].error_rate"), "{err}");
    }

    #[test]
    fn activation_cost_is_identified_from_alone_and_all() {
        // pass-through 10; each policy alone 10 + 5 (activation) + (i + 1); all nine
        // 10 + 5 + sum(i + 1) = 60.
        let mut es = vec![entry(PASS_THROUGH, 10.0, 100.0)];
        for (i, p) in POLICIES.iter().enumerate() {
            es.push(entry(p, 15.0 + i as f64 + 1.0, 100.0));
        }
        es.push(entry(ALL_NINE, 60.0, 100.0));
        let c = file(es).policy_costs(1000).unwrap();
        assert!((c.cpu.activation - 5.0).abs() < 1e-9);
        assert!((c.cpu.marginal[0] - 1.0).abs() < 1e-9);
        assert!((c.cpu.of(0) - 10.0).abs() < 1e-9);
        assert!((c.cpu.of(0x1ff) - 60.0).abs() < 1e-9);
        assert!((c.cpu.of(1 << 6) - 22.0).abs() < 1e-9);
        assert_eq!(policy_index("mtls"), Some(6));
    }

    #[test]
    fn paired_differences_replace_the_difference_of_medians_where_present() {
        // Pass-through 10; the medians say jwt costs 30 over it and every other policy 5, its
        // rounds say 20; all nine's medians say 70 over it, its rounds 60. No activation cost
        // either way ((30 + 8 x 5 - 70) / 8 = (20 + 40 - 60) / 8 = 0). Without the paired
        // values the model reads the medians' differences (as for files written before them).
        let mut es = vec![entry(PASS_THROUGH, 10.0, 100.0)];
        for p in POLICIES {
            es.push(entry(p, 15.0, 100.0));
        }
        es[1].cpu_us_per_request = 40.0;
        es.push(entry(ALL_NINE, 80.0, 100.0));
        let old = file(es.clone()).policy_costs(1000).unwrap();
        assert!((old.cpu.of(1) - 40.0).abs() < 1e-9, "{:?}", old.cpu);
        assert!((old.cpu.of(0x1ff) - 80.0).abs() < 1e-9, "{:?}", old.cpu);
        es[1].cpu_us_over_pass_through = Some(20.0);
        es.last_mut().unwrap().cpu_us_over_pass_through = Some(60.0);
        let f = file(es);
        let back = CalibrationFile::from_toml_str(&f.to_toml_string(), "paired.toml").unwrap();
        assert_eq!(back, f);
        let c = back.policy_costs(1000).unwrap();
        assert!((c.cpu.of(1) - 30.0).abs() < 1e-9, "{:?}", c.cpu);
        assert!((c.cpu.of(0x1ff) - 70.0).abs() < 1e-9, "{:?}", c.cpu);
        assert_eq!(c.cpu.activation, 0.0);
        // Latency has no paired value and still reads the entries.
        assert!((c.latency_p50.of(1) - 100.0).abs() < 1e-9);
        // A paired difference below zero is noise, clamped like any other.
        let mut neg = f.clone();
        neg.entries[2].cpu_us_over_pass_through = Some(-3.0);
        assert_eq!(neg.policy_costs(1000).unwrap().cpu.marginal[1], 0.0);
        neg.entries[2].cpu_us_over_pass_through = Some(f64::NAN);
        let err = neg.validate().unwrap_err().to_string();
        assert!(err.contains("entries[2].cpu_us_over_pass_through"), "{err}");
    }

    #[test]
    fn shipped_reference_is_complete() {
        let f = CalibrationFile::reference();
        for rate in [500, 1000, 2000] {
            f.policy_costs(rate).unwrap();
        }
    }

    #[test]
    fn isolation_table_is_optional_validated_and_round_trips() {
        let mut f = CalibrationFile::reference();
        let base = f.clone();
        f.isolation = None;
        let text = f.to_toml_string();
        assert!(!text.contains("isolation"), "absent table not written");
        let back = CalibrationFile::from_toml_str(&text, "t.toml").expect("no table is fine");
        assert_eq!(back.sandbox_create_us(), None);
        let with = format!(
            "{text}\n[isolation.per_request]\nsandbox_create_us = 4.25\nchain_us = 7.5\nshared_chain_us = 1.5\n[[isolation.per_request.entries]]\nrate_rps = 1000\nshared_cpu_us_per_request = 50.0\nper_request_cpu_us_per_request = 60.0\nshared_idle_anon_kib = 1400\nper_request_idle_anon_kib = 2800\n"
        );
        let parsed = CalibrationFile::from_toml_str(&with, "t.toml").expect("valid table");
        assert_eq!(parsed.sandbox_create_us(), Some(4.25));
        let again =
            CalibrationFile::from_toml_str(&parsed.to_toml_string(), "t.toml").expect("round trip");
        assert_eq!(again, parsed);
        let err = CalibrationFile::from_toml_str(
            &with.replace("sandbox_create_us = 4.25", "sandbox_create_us = -1.0"),
            "t.toml",
        )
        .expect_err("negative");
        assert!(
            err.to_string()
                .contains("isolation.per_request.sandbox_create_us"),
            "{err}"
        );
        let err = CalibrationFile::from_toml_str(
            &with.replace("chain_us = 7.5", "chain_us = 7.5\nbogus = 1"),
            "t.toml",
        )
        .expect_err("unknown field");
        assert!(err.to_string().contains("bogus"), "{err}");
        // The shipped reference keeps validating whatever it carries.
        assert!(base.validate().is_ok());
    }
}
