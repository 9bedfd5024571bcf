//! Mesh profiles: what a service mesh adds to the cluster, as validated TOML
//! (`models/profiles/mesh/<name>.toml`, embedded). A profile names no per-request costs of its
//! own: the data plane's CPU and latency are the reference sidecar's measured costs
//! ([`crate::calibration`]) times the profile's scale factors, each factor documented in the
//! profile file with the published figure it was fitted to.
//!
//! ```
//! use meshsim_models::mesh::MeshProfile;
//! let p = MeshProfile::builtin("istio-policies").unwrap();
//! assert_eq!(p.policies.len(), 9);
//! assert!(MeshProfile::builtin("nope").is_err());
//! ```

use serde::{Deserialize, Serialize};

use crate::calibration::{POLICIES, policy_bit, policy_index};
use crate::xds_sizes::Scope;
use crate::{Check, ConfigError};

/// The profile schema version.
pub const PROFILE_VERSION: u32 = 1;

/// Names of the built-in profiles, in report order.
pub const BUILTIN_PROFILES: [&str; 7] = [
    "none",
    "istio",
    "istio-policies",
    "linkerd",
    "linkerd-policies",
    "ambient",
    "lightweight",
];

fn builtin_text(name: &str) -> Option<&'static str> {
    Some(match name {
        "none" => include_str!("../profiles/mesh/none.toml"),
        "istio" => include_str!("../profiles/mesh/istio.toml"),
        "istio-policies" => include_str!("../profiles/mesh/istio-policies.toml"),
        "linkerd" => include_str!("../profiles/mesh/linkerd.toml"),
        "linkerd-policies" => include_str!("../profiles/mesh/linkerd-policies.toml"),
        "ambient" => include_str!("../profiles/mesh/ambient.toml"),
        "lightweight" => include_str!("../profiles/mesh/lightweight.toml"),
        _ => return None,
    })
}

/// A mesh profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshProfile {
    /// Schema version ([`PROFILE_VERSION`]).
    pub version: u32,
    /// Profile name (scenario name in results).
    pub name: String,
    /// One line on what it models.
    pub description: String,
    /// Where its parameters come from.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Enabled policies (names of [`POLICIES`]).
    #[serde(default)]
    pub policies: Vec<String>,
    /// Policies this mesh cannot enforce (names of [`POLICIES`]): enabling one, in the file or
    /// with `--policies`, is an error naming it (Linkerd: no global rate limit, no circuit
    /// breaking).
    #[serde(default)]
    pub unsupported_policies: Vec<String>,
    pub data_plane: DataPlane,
    #[serde(default)]
    pub pod: PodInjection,
    pub control_plane: ControlPlane,
    #[serde(default)]
    pub policy: PolicyParams,
}

/// Where the proxies are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataPlaneKind {
    /// No mesh.
    #[default]
    None,
    /// A proxy in every pod (and in the activator's pod).
    Sidecar,
    /// Per-node L4 proxy (ztunnel) plus an L7 waypoint per namespace (Istio ambient).
    Ambient,
    /// A fresh sandbox per request runs the policy chain (the paper's proposal).
    Sandbox,
}

/// The data plane: per-request costs relative to the calibrated reference sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataPlane {
    pub kind: DataPlaneKind,
    /// Calibration entries at the rate closest to this are used, requests/s.
    #[serde(default = "default_rate")]
    pub calibration_rate_rps: u64,
    /// Multiplier on the reference's pass-through CPU per request (ignored when
    /// `anchor_cpu_us` is set).
    #[serde(default = "one")]
    pub cpu_scale: f64,
    /// A published per-proxy CPU per request, µs: `cpu_scale` becomes this over the
    /// calibration's pass-through CPU (fitted at load, so a swapped calibration file refits).
    #[serde(default)]
    pub anchor_cpu_us: Option<f64>,
    /// A published per-proxy added p99 latency, µs: `latency_scale` becomes this over the
    /// calibration's pass-through added p99 latency.
    #[serde(default)]
    pub anchor_latency_p99_us: Option<f64>,
    /// A published per-proxy added latency of a request without policies (both directions,
    /// network traversal included), µs. When set, only the part of the pass-through CPU that
    /// fits in it (after the traversals and the reference's non-CPU latency) is on the
    /// request's critical path; the rest is charged to the node off the path (a proxy's
    /// throughput CPU includes stats, telemetry and bookkeeping that do not delay the
    /// request). Policy CPU stays on the path. Unset: all CPU is on the path.
    #[serde(default)]
    pub on_path_latency_us: Option<f64>,
    /// Multiplier on the reference's policy CPU (pipeline activation + per-policy marginal).
    #[serde(default = "one")]
    pub policy_cpu_scale: f64,
    /// Multiplier on the reference's added latency beyond its CPU time.
    #[serde(default = "one")]
    pub latency_scale: f64,
    /// Extra network stack traversals per proxy hop (iptables redirect through the proxy).
    #[serde(default)]
    pub traversals_per_hop: u32,
    /// The activator's pod always carries a proxy too (its sidecar sees every request it
    /// forwards). When false, a sidecar data plane still injects the activator when the
    /// policies need peer identities on the activator -> pod hop
    /// ([`MeshProfile::activator_in_mesh`]).
    #[serde(default)]
    pub activator_sidecar: bool,
    /// With STRICT mTLS, requests to a pod's IP from the activator fail with a mesh error, so
    /// Knative's `mesh-compatibility-mode: auto` falls back to the revision's cluster IP
    /// ([`MeshProfile::pod_ips_hidden_from_activator`]). True for Istio's sidecars: the
    /// activator's Envoy sends a request for an IP that names no service host through its
    /// passthrough cluster in plain text, which the pod's Envoy then rejects.
    #[serde(default)]
    pub strict_mtls_hides_pod_ips: bool,
    /// Resident memory per proxy, MiB.
    #[serde(default)]
    pub rss_mib: f64,
    /// Memory per upstream connection a proxy holds, KiB.
    #[serde(default)]
    pub rss_kib_per_connection: f64,
    /// Sandbox technology of [`DataPlaneKind::Sandbox`]; sets the boot cost per request.
    #[serde(default)]
    pub sandbox_technology: Option<SandboxTech>,
    /// Sandbox boot per request, µs, overriding the technology's figure.
    #[serde(default)]
    pub sandbox_boot_us: Option<f64>,
    /// With the `wasm` technology, take the boot cost from the calibration file's measured
    /// `[isolation.per_request].sandbox_create_us` when it has one (the reference sidecar's
    /// `--isolation per-request`), instead of the technology's constant.
    #[serde(default)]
    pub sandbox_boot_from_calibration: bool,
    /// With the `wasm` technology and `sandbox_boot_from_calibration`: a node keeps its
    /// compiled policy-chain module (one for all its functions: a function's config is data
    /// written into each instance) for this long after the last sandboxed request there (the
    /// reference sidecar's `sandbox.idle_release_ms`); the first request after a longer gap
    /// (and a node's first) pays the compilation, the calibration file's
    /// `[isolation.per_request].recompile_us`, as CPU on the request's path. Absent: the
    /// module stays compiled, nothing is charged.
    pub module_idle_release_ms: Option<u64>,
    /// Per-node L4 proxy CPU per request ([`DataPlaneKind::Ambient`]), µs.
    #[serde(default)]
    pub l4_cpu_us: f64,
    /// Per-node L4 proxy resident memory, MiB.
    #[serde(default)]
    pub l4_rss_mib: f64,
}

/// Sandbox technology of the per-request sandbox (DESIGN.md, the lightweight sidecar).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SandboxTech {
    /// Hyperlight-like micro-VM: ~2 ms per sandbox.
    Hyperlight,
    /// Dandelion-like: < 1 ms per sandbox (taken at its 1 ms bound).
    Dandelion,
    /// A WebAssembly instance from a pooling allocator: ~6 µs.
    Wasm,
}

impl SandboxTech {
    /// Boot cost per request, µs (DESIGN.md's figures).
    pub fn boot_us(self) -> f64 {
        match self {
            SandboxTech::Hyperlight => 2000.0,
            SandboxTech::Dandelion => 1000.0,
            SandboxTech::Wasm => 6.0,
        }
    }
}

impl DataPlane {
    /// Sandbox boot per request, µs: the override, else the technology's figure, else 0.
    pub fn boot_us(&self) -> f64 {
        self.sandbox_boot_us
            .or(self.sandbox_technology.map(SandboxTech::boot_us))
            .unwrap_or(0.0)
    }

    /// Sandbox boot per request, µs, given a calibration file: the explicit override; else,
    /// for the `wasm` technology with `sandbox_boot_from_calibration`, the file's measured
    /// sandbox creation (when present); else [`DataPlane::boot_us`].
    pub fn boot_us_calibrated(&self, calibration: &crate::calibration::CalibrationFile) -> f64 {
        if self.sandbox_boot_us.is_none()
            && self.sandbox_boot_from_calibration
            && self.sandbox_technology == Some(SandboxTech::Wasm)
            && let Some(us) = calibration.sandbox_create_us()
        {
            return us;
        }
        self.boot_us()
    }

    /// Compilation of the policy module on a node's first request after an idle release,
    /// µs, when [`DataPlane::module_idle_release_ms`] applies and the calibration measured it.
    pub fn recompile_us_calibrated(
        &self,
        calibration: &crate::calibration::CalibrationFile,
    ) -> Option<f64> {
        if self.kind != DataPlaneKind::Sandbox
            || self.module_idle_release_ms.is_none()
            || !self.sandbox_boot_from_calibration
            || self.sandbox_technology != Some(SandboxTech::Wasm)
        {
            return None;
        }
        calibration.recompile_us()
    }

    /// `(cpu_scale, latency_scale)` against a calibration's costs: the anchors over the
    /// reference's pass-through figures when set, else the plain factors.
    pub fn scales(&self, costs: &crate::calibration::PolicyCosts) -> (f64, f64) {
        let fit = |anchor: Option<f64>, reference: f64, plain: f64| match anchor {
            Some(a) if reference > 0.0 => a / reference,
            _ => plain,
        };
        (
            fit(self.anchor_cpu_us, costs.cpu.pass_through, self.cpu_scale),
            fit(
                self.anchor_latency_p99_us,
                costs.latency_p99.pass_through,
                self.latency_scale,
            ),
        )
    }
}

/// What the mesh injects into every function pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PodInjection {
    /// Init container create + start (0: none), ms.
    pub init_container_ms: u64,
    /// Sidecar container create + start (0: no sidecar container), ms.
    pub sidecar_start_ms: u64,
    /// Control-plane writes per injected container (its status updates).
    pub writes_per_container: u32,
    /// Extra API-server time of a pod create for the injection webhook, ms.
    pub injection_webhook_ms: u64,
    pub sidecar_cpu_request_millicores: u32,
    pub sidecar_memory_request_mib: u32,
    pub init_cpu_request_millicores: u32,
    pub init_memory_request_mib: u32,
    /// From the sidecar container's start until its proxy asks for configuration (agent
    /// start, workload certificate, proxy bootstrap), ms.
    pub proxy_bootstrap_ms: u64,
    /// The kubelet's sidecar probe: first probe this long after the kubelet took the pod
    /// (its probe worker starts with the pod; probes before the container runs fail), ms.
    pub probe_initial_delay_ms: u64,
    /// Period of the kubelet's sidecar probe, ms.
    pub probe_period_ms: u64,
}

impl Default for PodInjection {
    fn default() -> Self {
        Self {
            init_container_ms: 0,
            sidecar_start_ms: 0,
            writes_per_container: 0,
            injection_webhook_ms: 0,
            sidecar_cpu_request_millicores: 0,
            sidecar_memory_request_mib: 0,
            init_cpu_request_millicores: 0,
            init_memory_request_mib: 0,
            proxy_bootstrap_ms: 0,
            probe_initial_delay_ms: 0,
            probe_period_ms: 1000,
        }
    }
}

/// How proxies get their configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControlPlaneKind {
    /// No control plane.
    #[default]
    None,
    /// istiod: debounced state-of-the-world pushes to every in-scope proxy.
    Istiod,
    /// Linkerd's destination service: a proxy receives endpoint updates only for the
    /// destinations it has asked for; no debounce, no mesh-wide pushes.
    OnDemand,
}

/// The mesh control plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlane {
    pub kind: ControlPlaneKind,
    /// Config scope of the function proxies.
    #[serde(default = "default_scope")]
    pub scope: Scope,
    /// Debounce: push once this long passed without a new event, ms (istio `PILOT_DEBOUNCE_AFTER`).
    #[serde(default = "d100")]
    pub debounce_quiet_ms: u64,
    /// Debounce: push at the latest this long after the first event, ms (`PILOT_DEBOUNCE_MAX`).
    #[serde(default = "d10000")]
    pub debounce_max_ms: u64,
    /// Proxy pushes in flight at once (`PILOT_PUSH_THROTTLE`).
    #[serde(default = "d100")]
    pub push_concurrency: u32,
    /// New xDS streams admitted per second (`PILOT_MAX_REQUESTS_PER_SECOND`).
    #[serde(default = "d25f")]
    pub stream_admission_per_s: f64,
    /// Push-context recompute on a full push, µs of control-plane CPU per Knative service.
    #[serde(default)]
    pub push_context_us_per_service: f64,
    /// Envoy's main-thread work to apply one received cluster (warming), µs.
    #[serde(default)]
    pub apply_us_per_cluster: f64,
    /// Encode cost override, ns per byte (absent: the xDS size file's codec measurement).
    #[serde(default)]
    pub encode_ns_per_byte: Option<f64>,
    /// Decode cost override, ns per byte (absent: the xDS size file's codec measurement).
    #[serde(default)]
    pub decode_ns_per_byte: Option<f64>,
    /// Network bandwidth between the control plane and a proxy, Gbit/s.
    #[serde(default = "d10f")]
    pub bandwidth_gbps: f64,
    /// Bytes of an ACK (a DiscoveryRequest with version and nonce).
    #[serde(default)]
    pub ack_bytes: u64,
    /// The whole pod turning Ready triggers a second full push to its proxy (istio 1.20).
    #[serde(default)]
    pub full_push_on_ready: bool,
    /// Control-plane resident memory, MiB, plus per connected proxy, KiB.
    #[serde(default)]
    pub rss_mib: f64,
    #[serde(default)]
    pub rss_kib_per_proxy: f64,
}

/// Parameters of the stateful policies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyParams {
    /// Global rate limit: requests per function per window.
    pub rate_limit_requests: u64,
    /// Global rate limit: fixed window length, ms.
    pub rate_limit_window_ms: u64,
    /// CPU of the rate-limit service (and its Redis) per check, µs.
    pub rate_limit_service_cpu_us: f64,
    /// The limit's shared state is a node-local cache (no RPC to the control-plane node).
    pub rate_limit_node_local: bool,
    /// Circuit breaking: maximum concurrent requests to a revision's pods together (Envoy's
    /// `max_requests`, per upstream cluster).
    pub cb_max_requests: u32,
    /// Circuit breaking: connections the calling proxy opens to a revision's pods together
    /// (Envoy's `max_connections`, Istio's `tcp.maxConnections`). With HTTP/1.1 a connection
    /// carries one request at a time, so once the revision's pods hold this many requests a new
    /// one waits for a connection in the proxy's pending queue.
    pub cb_max_connections: u32,
    /// Circuit breaking: requests that may wait for a connection to a revision's pods
    /// (Envoy's `max_pending_requests`, Istio's `http1MaxPendingRequests`); beyond, the proxy
    /// answers 503 at once (`circuit-open`).
    pub cb_max_pending_requests: u32,
    /// Outlier detection: consecutive 5xx that eject a pod.
    pub cb_consecutive_5xx: u32,
    /// Outlier detection: ejection time, ms.
    pub cb_ejection_ms: u64,
    /// Retries of a 5xx answer.
    pub retry_attempts: u32,
    /// Probability that one attempt answers 5xx (the trace has none: 0 unless swept).
    pub upstream_5xx_rate: f64,
    /// Override of the mTLS handshake CPU per new connection, both sides together, µs.
    /// Absent (the built-in profiles): the calibration file's measured `[mtls_handshake]`
    /// (sidecar + client CPU) times the data plane's `policy_cpu_scale` (not its per-request
    /// `cpu_scale`: the handshake is public-key crypto, the same work in Envoy's BoringSSL as in
    /// the reference's aws-lc).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtls_handshake_cpu_us: Option<f64>,
    /// Key algorithm of the mesh's workload certificates, which picks the measured handshake:
    /// `ecdsa-p256` (`[mtls_handshake]`) or `rsa-2048` (`[mtls_handshake_rsa2048]`).
    #[serde(default)]
    pub mtls_key_algorithm: MtlsKeyAlgorithm,
    /// The authorization rules match the caller's identity (Istio `AuthorizationPolicy`
    /// `source.principals` / `namespaces`, "mTLS-only fields" per ISTIO-SECURITY-2021-004;
    /// Linkerd `MeshTLSAuthentication`). Only a verified mTLS peer certificate carries that
    /// identity, so with `authz` on, the proxies speak mTLS
    /// (handshake per new connection, per-request TLS cost) even when the `mtls` policy itself
    /// (strict peer authentication) is off. See [`MeshProfile::effective_policy_mask`].
    #[serde(default)]
    pub authz_needs_peer_identity: bool,
}

/// Key algorithm of a mesh's workload certificates (`policy.mtls_key_algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MtlsKeyAlgorithm {
    /// ECDSA P-256 (Linkerd's identity, the reference sidecar's generated certificates).
    #[default]
    EcdsaP256,
    /// RSA 2048 (Istio's default CA and workload keys).
    #[serde(rename = "rsa-2048")]
    Rsa2048,
}

impl Default for PolicyParams {
    fn default() -> Self {
        Self {
            rate_limit_requests: 1000,
            rate_limit_window_ms: 1000,
            rate_limit_service_cpu_us: 0.0,
            rate_limit_node_local: false,
            cb_max_requests: 1024,
            cb_max_connections: 1024,
            cb_max_pending_requests: 1024,
            cb_consecutive_5xx: 5,
            cb_ejection_ms: 30_000,
            retry_attempts: 2,
            upstream_5xx_rate: 0.0,
            mtls_handshake_cpu_us: None,
            mtls_key_algorithm: MtlsKeyAlgorithm::EcdsaP256,
            authz_needs_peer_identity: false,
        }
    }
}

fn default_rate() -> u64 {
    1000
}
fn one() -> f64 {
    1.0
}
fn default_scope() -> Scope {
    Scope::AllToAll
}
fn d100<T: From<u8>>() -> T {
    T::from(100)
}
fn d10000() -> u64 {
    10_000
}
fn d25f() -> f64 {
    25.0
}
fn d10f() -> f64 {
    10.0
}

impl MeshProfile {
    /// A built-in profile by name ([`BUILTIN_PROFILES`]).
    pub fn builtin(name: &str) -> Result<Self, ConfigError> {
        let text = builtin_text(name).ok_or_else(|| ConfigError::Invalid {
            file: "<mesh profile>".into(),
            field: "mesh.profile".into(),
            value: name.to_owned(),
            allowed: BUILTIN_PROFILES.join(", "),
        })?;
        Self::from_toml_str(text, &format!("models/profiles/mesh/{name}.toml"))
    }

    /// All built-in profiles, in [`BUILTIN_PROFILES`] order.
    pub fn builtins() -> Vec<Self> {
        BUILTIN_PROFILES
            .iter()
            .map(|n| Self::builtin(n).expect("built-in profiles are valid (tested)"))
            .collect()
    }

    /// Parses and validates a profile; `file` names it in errors.
    pub fn from_toml_str(text: &str, file: &str) -> Result<Self, ConfigError> {
        let p: MeshProfile =
            toml::from_str(text).map_err(|e| crate::parse_error(text, file, &e))?;
        p.validate_in(file)?;
        Ok(p)
    }

    /// Serialises to TOML.
    pub fn to_toml_string(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# not serialisable: {e}"))
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_in("<mesh profile>")
    }

    /// The enabled policies as a bit mask over [`POLICIES`].
    pub fn policy_mask(&self) -> u16 {
        self.policies.iter().fold(0, |m, p| m | policy_bit(p))
    }

    /// The policies the data plane runs, as a bit mask over [`POLICIES`]: the enabled ones
    /// ([`MeshProfile::policy_mask`]) plus `mtls` when `authz` is on and its rules match the
    /// caller's identity (`policy.authz_needs_peer_identity`), which only mTLS provides.
    pub fn effective_policy_mask(&self) -> u16 {
        let mask = self.policy_mask();
        if self.policy.authz_needs_peer_identity && mask & policy_bit("authz") != 0 {
            mask | policy_bit("mtls")
        } else {
            mask
        }
    }

    /// Whether the activator's pod carries a proxy: always with
    /// `data_plane.activator_sidecar`, and otherwise in a sidecar data plane whose effective
    /// policies include mTLS ([`MeshProfile::effective_policy_mask`]). Knative's "mTLS in
    /// Knative" guide: because the activator can be on the request path, it must have a
    /// sidecar when mTLS is on (label the knative-serving namespace for injection); without
    /// one, STRICT mTLS rejects its requests and identity-based authorization cannot match them.
    /// Nothing else requires the injection, so a mesh without such policies leaves the
    /// activator out: one proxy (the pod's) on a warm invocation's path, the paper's "one
    /// extra network stack traversal".
    pub fn activator_in_mesh(&self) -> bool {
        self.data_plane.activator_sidecar
            || (self.data_plane.kind == DataPlaneKind::Sidecar
                && self.effective_policy_mask() & policy_bit("mtls") != 0)
    }

    /// Whether the activator cannot reach pods by their IPs: `data_plane.strict_mtls_hides_pod_ips`
    /// and mTLS among the effective policies. Knative's activator then balances through the
    /// revision's cluster IP (`knative.mesh_compatibility_mode` `auto`, the default): its
    /// `revisionWatcher::checkDests` probes the pod IPs, sees only errors a mesh could have
    /// caused and switches to the cluster IP, and its throttler stops picking pods
    /// (`acquireDest` returns the cluster-IP tracker). Knative's v0.26 release notes: direct
    /// pod IP is "most efficient, but not compatible with mesh being enabled", the cluster IP
    /// "less efficient, but needed if mesh is enabled".
    pub fn pod_ips_hidden_from_activator(&self) -> bool {
        self.data_plane.strict_mtls_hides_pod_ips
            && self.effective_policy_mask() & policy_bit("mtls") != 0
    }

    /// Whether policy `name` is on.
    pub fn has(&self, name: &str) -> bool {
        self.policies.iter().any(|p| p == name)
    }

    /// Replaces the policy list (validated).
    pub fn with_policies(mut self, policies: &[String]) -> Result<Self, ConfigError> {
        self.policies = policies.to_vec();
        self.validate()?;
        Ok(self)
    }

    fn validate_in(&self, file: &str) -> Result<(), ConfigError> {
        let c = Check { file };
        let bad = |field: String, value: String, allowed: String| ConfigError::Invalid {
            file: file.to_owned(),
            field,
            value,
            allowed,
        };
        if self.version != PROFILE_VERSION {
            return Err(ConfigError::Version {
                file: file.to_owned(),
                found: self.version,
                expected: PROFILE_VERSION,
            });
        }
        if self.name.trim().is_empty() {
            return Err(bad("name".into(), "\"\"".into(), "a profile name".into()));
        }
        for (i, p) in self.policies.iter().enumerate() {
            if policy_index(p).is_none() {
                return Err(bad(
                    format!("policies[{i}]"),
                    p.clone(),
                    POLICIES.join(", "),
                ));
            }
        }
        for (i, p) in self.unsupported_policies.iter().enumerate() {
            if policy_index(p).is_none() {
                return Err(bad(
                    format!("unsupported_policies[{i}]"),
                    p.clone(),
                    POLICIES.join(", "),
                ));
            }
        }
        for (i, p) in self.policies.iter().enumerate() {
            if self.unsupported_policies.contains(p) {
                let supported: Vec<&str> = POLICIES
                    .iter()
                    .copied()
                    .filter(|q| !self.unsupported_policies.iter().any(|u| u == q))
                    .collect();
                return Err(bad(
                    format!("policies[{i}]"),
                    p.clone(),
                    format!("a policy {} supports: {}", self.name, supported.join(", ")),
                ));
            }
        }
        if self.data_plane.kind == DataPlaneKind::None && !self.policies.is_empty() {
            return Err(bad(
                "policies".into(),
                format!("{:?}", self.policies),
                "empty without a data plane".into(),
            ));
        }
        let d = &self.data_plane;
        c.range(
            "data_plane.calibration_rate_rps",
            d.calibration_rate_rps,
            1,
            10_000_000,
        )?;
        c.finite("data_plane.cpu_scale", d.cpu_scale, 0.0, 1e4)?;
        c.finite("data_plane.policy_cpu_scale", d.policy_cpu_scale, 0.0, 1e4)?;
        c.finite("data_plane.latency_scale", d.latency_scale, 0.0, 1e4)?;
        if let Some(v) = d.anchor_cpu_us {
            c.finite("data_plane.anchor_cpu_us", v, 0.0, 1e6)?;
        }
        if let Some(v) = d.on_path_latency_us {
            c.finite("data_plane.on_path_latency_us", v, 0.0, 1e7)?;
        }
        if let Some(v) = d.anchor_latency_p99_us {
            c.finite("data_plane.anchor_latency_p99_us", v, 0.0, 1e7)?;
        }
        c.range("data_plane.traversals_per_hop", d.traversals_per_hop, 0, 16)?;
        c.finite("data_plane.rss_mib", d.rss_mib, 0.0, 65_536.0)?;
        c.finite(
            "data_plane.rss_kib_per_connection",
            d.rss_kib_per_connection,
            0.0,
            1e6,
        )?;
        if let Some(v) = d.sandbox_boot_us {
            c.finite("data_plane.sandbox_boot_us", v, 0.0, 1e7)?;
        }
        if let Some(v) = d.module_idle_release_ms {
            c.range("data_plane.module_idle_release_ms", v, 1, 86_400_000)?;
        }
        c.finite("data_plane.l4_cpu_us", d.l4_cpu_us, 0.0, 1e6)?;
        c.finite("data_plane.l4_rss_mib", d.l4_rss_mib, 0.0, 65_536.0)?;
        let p = &self.pod;
        c.range("pod.init_container_ms", p.init_container_ms, 0, 600_000)?;
        c.range("pod.sidecar_start_ms", p.sidecar_start_ms, 0, 600_000)?;
        c.range("pod.writes_per_container", p.writes_per_container, 0, 100)?;
        c.range(
            "pod.injection_webhook_ms",
            p.injection_webhook_ms,
            0,
            60_000,
        )?;
        c.range("pod.proxy_bootstrap_ms", p.proxy_bootstrap_ms, 0, 600_000)?;
        c.range(
            "pod.probe_initial_delay_ms",
            p.probe_initial_delay_ms,
            0,
            600_000,
        )?;
        c.range("pod.probe_period_ms", p.probe_period_ms, 1, 600_000)?;
        let cp = &self.control_plane;
        if cp.kind == ControlPlaneKind::None && self.data_plane.kind != DataPlaneKind::None {
            return Err(bad(
                "control_plane.kind".into(),
                "none".into(),
                "istiod or on-demand when there is a data plane".into(),
            ));
        }
        c.range(
            "control_plane.debounce_quiet_ms",
            cp.debounce_quiet_ms,
            0,
            600_000,
        )?;
        c.range(
            "control_plane.debounce_max_ms",
            cp.debounce_max_ms,
            cp.debounce_quiet_ms,
            3_600_000,
        )?;
        c.range(
            "control_plane.push_concurrency",
            cp.push_concurrency,
            1,
            100_000,
        )?;
        c.finite(
            "control_plane.stream_admission_per_s",
            cp.stream_admission_per_s,
            0.01,
            1e6,
        )?;
        c.finite(
            "control_plane.push_context_us_per_service",
            cp.push_context_us_per_service,
            0.0,
            1e6,
        )?;
        c.finite(
            "control_plane.apply_us_per_cluster",
            cp.apply_us_per_cluster,
            0.0,
            1e6,
        )?;
        if let Some(v) = cp.encode_ns_per_byte {
            c.finite("control_plane.encode_ns_per_byte", v, 0.0, 1e4)?;
        }
        if let Some(v) = cp.decode_ns_per_byte {
            c.finite("control_plane.decode_ns_per_byte", v, 0.0, 1e4)?;
        }
        c.finite(
            "control_plane.bandwidth_gbps",
            cp.bandwidth_gbps,
            0.001,
            1e4,
        )?;
        c.range("control_plane.ack_bytes", cp.ack_bytes, 0, 1 << 20)?;
        c.finite("control_plane.rss_mib", cp.rss_mib, 0.0, 65_536.0)?;
        c.finite(
            "control_plane.rss_kib_per_proxy",
            cp.rss_kib_per_proxy,
            0.0,
            1e7,
        )?;
        let q = &self.policy;
        c.range(
            "policy.rate_limit_requests",
            q.rate_limit_requests,
            1,
            u64::MAX,
        )?;
        c.range(
            "policy.rate_limit_window_ms",
            q.rate_limit_window_ms,
            1,
            3_600_000,
        )?;
        c.finite(
            "policy.rate_limit_service_cpu_us",
            q.rate_limit_service_cpu_us,
            0.0,
            1e6,
        )?;
        c.range("policy.cb_max_requests", q.cb_max_requests, 1, u32::MAX)?;
        c.range(
            "policy.cb_max_connections",
            q.cb_max_connections,
            1,
            u32::MAX,
        )?;
        c.range(
            "policy.cb_max_pending_requests",
            q.cb_max_pending_requests,
            0,
            u32::MAX,
        )?;
        c.range(
            "policy.cb_consecutive_5xx",
            q.cb_consecutive_5xx,
            1,
            1_000_000,
        )?;
        c.range("policy.cb_ejection_ms", q.cb_ejection_ms, 1, 3_600_000)?;
        c.range("policy.retry_attempts", q.retry_attempts, 0, 10)?;
        c.finite("policy.upstream_5xx_rate", q.upstream_5xx_rate, 0.0, 1.0)?;
        if let Some(us) = q.mtls_handshake_cpu_us {
            c.finite("policy.mtls_handshake_cpu_us", us, 0.0, 1e6)?;
        }
        Ok(())
    }
}

/// The mesh selection inside [`crate::SimConfig`] (`[mesh]`): which built-in profile runs and
/// what a sweep may override.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeshSelection {
    /// A built-in profile name ([`BUILTIN_PROFILES`]).
    pub profile: String,
    /// Replaces the profile's policy list when set (ignored by `none`, which has no proxy).
    pub policies: Option<Vec<String>>,
    /// Replaces the profile's config scope when set.
    pub scope: Option<Scope>,
    /// Replaces the sandbox technology (per-request sandbox profiles) when set.
    pub sandbox: Option<SandboxTech>,
    /// Replaces [`DataPlane::module_idle_release_ms`] of a data plane that has one (the
    /// lightweight profile; ignored by the others) when set: how long a node keeps its compiled
    /// policy module after its last sandboxed request, ms; 0 keeps it compiled for good (no
    /// recompile is ever charged). A sweep axis: `"mesh.module_idle_release_ms" = [0, 1000]`.
    pub module_idle_release_ms: Option<u64>,
}

impl Default for MeshSelection {
    fn default() -> Self {
        Self {
            profile: "none".into(),
            policies: None,
            scope: None,
            sandbox: None,
            module_idle_release_ms: None,
        }
    }
}

impl MeshSelection {
    /// The selected profile with the overrides applied.
    pub fn resolve(&self) -> Result<MeshProfile, ConfigError> {
        let mut p = MeshProfile::builtin(&self.profile)?;
        // A policy list applies to profiles with a data plane (`--mesh all --policies ...`
        // leaves `none` as it is).
        if let Some(pol) = &self.policies
            && p.data_plane.kind != DataPlaneKind::None
        {
            p = p.with_policies(pol)?;
        }
        if let Some(s) = self.scope {
            p.control_plane.scope = s;
        }
        if let Some(t) = self.sandbox {
            p.data_plane.sandbox_technology = Some(t);
            p.data_plane.sandbox_boot_us = None;
        }
        if let Some(ms) = self.module_idle_release_ms
            && p.data_plane.module_idle_release_ms.is_some()
        {
            p.data_plane.module_idle_release_ms = (ms > 0).then_some(ms);
        }
        p.validate()?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse_and_round_trip() {
        for p in MeshProfile::builtins() {
            let back = MeshProfile::from_toml_str(&p.to_toml_string(), "rt.toml").unwrap();
            assert_eq!(back, p, "{}", p.name);
            assert!(BUILTIN_PROFILES.contains(&p.name.as_str()));
        }
    }

    #[test]
    fn the_shipped_calibration_measured_every_builtin_profiles_rate() {
        // `entry` falls back to the closest measured rate; the built-in profiles must not
        // need the fallback: every policy set they read is measured at their own rate.
        let cal = crate::calibration::CalibrationFile::reference();
        for p in MeshProfile::builtins() {
            let rate = p.data_plane.calibration_rate_rps;
            for set in crate::calibration::POLICIES.iter().chain(&[
                crate::calibration::PASS_THROUGH,
                crate::calibration::ALL_NINE,
            ]) {
                let e = cal.entry(set, rate);
                assert_eq!(e.map(|e| e.rate_rps), Some(rate), "{} reads {set}", p.name);
            }
        }
    }

    #[test]
    fn linkerd_lacks_rate_limit_and_circuit_breaking() {
        let l = MeshProfile::builtin("linkerd-policies").unwrap();
        assert!(!l.has("rate_limit") && !l.has("circuit_breaker"));
        assert_eq!(l.policies.len(), 7);
        let lw = MeshProfile::builtin("lightweight").unwrap();
        assert_eq!(lw.pod.init_container_ms, 0);
        assert_eq!(lw.data_plane.rss_mib, 0.0);
        assert_eq!(lw.control_plane.scope, Scope::Fused);
        assert_eq!(lw.data_plane.boot_us(), 6.0);
        // The lightweight profile reads the measured sandbox creation when the calibration
        // file has one, and falls back to the constant otherwise.
        assert!(lw.data_plane.sandbox_boot_from_calibration);
        let mut cal = crate::calibration::CalibrationFile::reference();
        cal.isolation = None;
        assert_eq!(lw.data_plane.boot_us_calibrated(&cal), 6.0);
        cal.isolation = Some(crate::calibration::IsolationCosts {
            per_request: Some(crate::calibration::PerRequestCosts {
                sandbox_create_us: 4.25,
                chain_us: 7.0,
                shared_chain_us: 1.5,
                recompile_us: None,
                module_kib: None,
                compiled_kib_per_function: None,
                idle_kib_per_function: None,
                entries: Vec::new(),
            }),
        });
        assert_eq!(lw.data_plane.boot_us_calibrated(&cal), 4.25);
        let mut explicit = lw.clone();
        explicit.data_plane.sandbox_boot_us = Some(9.0);
        assert_eq!(explicit.data_plane.boot_us_calibrated(&cal), 9.0);
        let hl = MeshSelection {
            profile: "lightweight".into(),
            sandbox: Some(SandboxTech::Hyperlight),
            ..MeshSelection::default()
        };
        assert_eq!(hl.resolve().unwrap().data_plane.boot_us(), 2000.0);
    }

    #[test]
    fn linkerd_refuses_the_policies_it_lacks() {
        let l = MeshProfile::builtin("linkerd").unwrap();
        for p in ["rate_limit", "circuit_breaker"] {
            let err = l
                .clone()
                .with_policies(&["mtls".into(), p.into()])
                .unwrap_err()
                .to_string();
            assert!(err.contains("policies[1]") && err.contains(p), "{err}");
            assert!(err.contains("linkerd supports: jwt, ports, authz"), "{err}");
        }
        assert!(
            l.clone()
                .with_policies(&["mtls".into(), "retry".into()])
                .is_ok()
        );
        // Istio enforces all nine; a misspelt unsupported policy is named too.
        let all: Vec<String> = POLICIES.iter().map(|s| s.to_string()).collect();
        assert!(
            MeshProfile::builtin("istio")
                .unwrap()
                .with_policies(&all)
                .is_ok()
        );
        let mut bad = l;
        bad.unsupported_policies.push("ratelimit".into());
        let err = bad.with_policies(&[]).unwrap_err().to_string();
        assert!(err.contains("unsupported_policies[2]"), "{err}");
    }

    #[test]
    fn bad_policy_and_unknown_field_are_named() {
        let p = MeshProfile::builtin("istio").unwrap();
        let err = p.clone().with_policies(&["jwtt".into()]).unwrap_err();
        assert!(err.to_string().contains("policies[0]"), "{err}");
        let text = p
            .to_toml_string()
            .replace("[data_plane]", "[data_plane]\nbogus = 1");
        assert!(MeshProfile::from_toml_str(&text, "b.toml").is_err());
    }

    #[test]
    fn identity_based_authz_brings_mtls_with_it() {
        let authz = |profile: &str| {
            MeshSelection {
                profile: profile.into(),
                policies: Some(vec!["authz".into()]),
                ..MeshSelection::default()
            }
            .resolve()
            .unwrap()
        };
        let bit = policy_bit;
        // Istio's rules match source principals: the mTLS identity comes along.
        let istio = authz("istio");
        assert!(istio.policy.authz_needs_peer_identity);
        assert_eq!(istio.policy_mask(), bit("authz"));
        assert_eq!(istio.effective_policy_mask(), bit("authz") | bit("mtls"));
        // Without identity-based rules (the lightweight profile's defaults) nothing is added.
        let light = authz("lightweight");
        assert!(!light.policy.authz_needs_peer_identity);
        assert_eq!(light.effective_policy_mask(), bit("authz"));
        // No authz, no mTLS implied.
        let mut none = istio.clone();
        none.policies.clear();
        assert_eq!(none.effective_policy_mask(), 0);
    }

    #[test]
    fn the_activator_joins_the_mesh_when_mtls_is_needed() {
        let with = |profile: &str, policies: &[&str]| {
            MeshProfile::builtin(profile)
                .unwrap()
                .with_policies(&policies.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap()
                .activator_in_mesh()
        };
        // Istio without policies (or with policies that need no peer identity): not injected.
        assert!(!with("istio", &[]));
        assert!(!with("istio", &["jwt", "rate_limit", "tracing"]));
        // mTLS, or authz by identity (which brings mTLS), puts the activator in the mesh.
        assert!(with("istio", &["mtls"]));
        assert!(with("istio", &["authz"]));
        assert!(!with("istio-policies", &[]));
        // authz whose rules need no identity brings no mTLS, so no injection either.
        let mut plain_authz = MeshProfile::builtin("istio").unwrap();
        plain_authz.policy.authz_needs_peer_identity = false;
        let plain_authz = plain_authz.with_policies(&["authz".into()]).unwrap();
        assert!(!plain_authz.activator_in_mesh());
        assert!(
            MeshProfile::builtin("istio-policies")
                .unwrap()
                .activator_in_mesh()
        );
        // Not a sidecar data plane: ztunnel carries the activator's mTLS, no injection.
        assert!(!with("ambient", &["mtls"]));
        assert!(
            !MeshProfile::builtin("lightweight")
                .unwrap()
                .activator_in_mesh()
        );
        // The profile can always inject it (Linkerd's profiles do).
        assert!(MeshProfile::builtin("linkerd").unwrap().activator_in_mesh());
    }

    #[test]
    fn strict_mtls_hides_pod_ips_from_the_activator_in_istio_only() {
        let hidden = |profile: &str, policies: Option<&[&str]>| {
            let p = MeshProfile::builtin(profile).unwrap();
            let p = match policies {
                Some(l) => p
                    .with_policies(&l.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                    .unwrap(),
                None => p,
            };
            p.pod_ips_hidden_from_activator()
        };
        // Istio's sidecars: only where mTLS is on (STRICT), by policy or for authz by identity.
        assert!(hidden("istio-policies", None));
        assert!(!hidden("istio", None));
        assert!(hidden("istio", Some(&["mtls"])));
        assert!(hidden("istio", Some(&["authz"])));
        assert!(!hidden("istio", Some(&["jwt", "rate_limit", "retry"])));
        // Linkerd's proxy and ztunnel carry mTLS to pod IPs themselves.
        assert!(!hidden("none", None));
        for name in ["linkerd", "linkerd-policies", "ambient", "lightweight"] {
            assert!(!hidden(name, None), "{name}");
            assert!(!hidden(name, Some(&["mtls"])), "{name}");
        }
    }

    #[test]
    fn selection_overrides() {
        let s = MeshSelection {
            profile: "istio".into(),
            policies: Some(vec!["mtls".into()]),
            scope: Some(Scope::Minimal),
            ..MeshSelection::default()
        };
        let p = s.resolve().unwrap();
        assert_eq!(p.policy_mask(), 1 << 6);
        assert_eq!(p.effective_policy_mask(), 1 << 6);
        assert_eq!(p.control_plane.scope, Scope::Minimal);
        let none = MeshSelection {
            profile: "none".into(),
            policies: Some(vec!["mtls".into()]),
            ..MeshSelection::default()
        };
        assert!(none.resolve().unwrap().policies.is_empty());
        // The lightweight module's idle release: replaced, 0 = never released; profiles
        // without one are left alone.
        let release = |profile: &str, ms: u64| {
            MeshSelection {
                profile: profile.into(),
                module_idle_release_ms: Some(ms),
                ..MeshSelection::default()
            }
            .resolve()
            .unwrap()
            .data_plane
            .module_idle_release_ms
        };
        let shipped = MeshProfile::builtin("lightweight").unwrap();
        assert!(shipped.data_plane.module_idle_release_ms.is_some());
        assert_eq!(release("lightweight", 10_000), Some(10_000));
        assert_eq!(release("lightweight", 0), None);
        assert_eq!(release("istio", 10_000), None);
    }
}
