//! # meshsim-models
//!
//! Typed, validated parameters of the meshsim simulator. [`SimConfig::default()`] is the
//! paper's setup (Cvetković & Klimovic, SoCC '25: 1 control-plane node + 10 workers, 10 cores
//! and 64 GiB each, Knative 1.13 on Kubernetes 1.29, no mesh). Every field says where its value
//! comes from:
//!
//! - **paper**: a measurement or setup fact from the paper (DESIGN.md's calibration table);
//! - **knative** / **kubernetes**: a default of Knative 1.13 / Kubernetes 1.29 (MECHANISMS.md);
//! - **anchored**: derived from a published figure named in the field's doc;
//! - **assumed**: no source measured it; a plausible value, named as such so a sweep can vary it;
//! - **fitted**: chosen so that the simulator, playing out its mechanisms, reaches a given
//!   paper measurement; the doc says which measurement and how.
//!
//! Besides [`SimConfig`]: [`mesh`] (the mesh profiles, `profiles/mesh/*.toml`, embedded, and
//! the `[mesh]` selection inside the config), [`calibration`] (the reference sidecar's measured
//! per-policy costs; shipped file `calibration/reference-2core.toml`) and [`xds_sizes`] (the
//! schema of `xds-sizes.toml`, encoded Envoy resource sizes).
//!
//! Units live in the field names (`_ms`, `_us`, `_ns`, `_s`, `_gib`, `_mib`, `_millicores`).
//!
//! ```
//! use meshsim_models::SimConfig;
//! let cfg = SimConfig::from_toml_str("version = 1\n[cluster]\nworkers = 4\n", "example.toml").unwrap();
//! assert_eq!(cfg.cluster.workers, 4);
//! assert_eq!(cfg.knative.stable_window_s, 60);
//! assert!(SimConfig::from_toml_str("version = 1\n[cluster]\nworkerz = 4\n", "bad.toml").is_err());
//! ```

use serde::{Deserialize, Serialize};
use std::fmt;

pub mod calibration;
pub mod mesh;
pub mod xds_sizes;

pub use calibration::{CalibrationFile, HandshakeCost, PolicyCosts};
pub use mesh::{MeshProfile, MeshSelection};
pub use xds_sizes::XdsSizes;

/// The config schema version this crate reads and writes.
pub const CONFIG_VERSION: u32 = 1;

/// An invalid or unreadable configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The text is not valid TOML for the schema (unknown field, wrong type, ...).
    #[error("{file}:{line}:{column}: {message}")]
    Parse {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// The `version` field names a schema this build does not know.
    #[error("{file}: unsupported config version {found} (this build reads version {expected})")]
    Version {
        file: String,
        found: u32,
        expected: u32,
    },
    /// A field holds a value outside its allowed range.
    #[error("{file}: `{field}` = {value} is out of range: allowed {allowed}")]
    OutOfRange {
        file: String,
        field: &'static str,
        value: String,
        allowed: String,
    },
    /// A field holds an invalid value (a name not in a list, an inconsistent entry, ...).
    #[error("{file}: `{field}` = {value} is invalid: allowed {allowed}")]
    Invalid {
        file: String,
        field: String,
        value: String,
        allowed: String,
    },
}

/// A TOML parse error as a [`ConfigError::Parse`] with line and column.
pub(crate) fn parse_error(text: &str, file: &str, e: &toml::de::Error) -> ConfigError {
    let at = e.span().map(|s| s.start);
    let (line, column) = at.map(|a| line_col(text, a)).unwrap_or((1, 1));
    let mut message = e.message().to_owned();
    // A bad value (wrong variant, wrong type) is reported at the value: name its key too.
    if let Some(key) = at.and_then(|a| key_at(text, a))
        && !message.contains(&key)
    {
        message = format!("field `{key}`: {message}");
    }
    ConfigError::Parse {
        file: file.to_owned(),
        line,
        column,
        message,
    }
}

/// The dotted key whose value sits at byte `at`: the last `key =` of that line before `at`
/// (inside an inline table, prefixed by the line's first key), under the last `[table]` or
/// `[[array]]` header before the line. `None` when the line assigns nothing before `at` (a
/// continuation line of a multi-line array, say): a best-effort label, never a panic.
fn key_at(text: &str, at: usize) -> Option<String> {
    let before = text.get(..at.min(text.len()))?;
    let start = before.rfind('\n').map_or(0, |p| p + 1);
    let head = &before[start..];
    let bare = |k: &str| {
        let k = k.trim();
        (!k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.\" ".contains(c)))
        .then(|| k.to_owned())
    };
    // The key of the value at `at`: what precedes the last `=` before it, back to a `{` or `,`.
    let eq = head.rfind('=')?;
    let inner = bare(&head[head[..eq].rfind(['{', ',']).map_or(0, |p| p + 1)..eq])?;
    let key = match head[..eq].find('{') {
        Some(brace) => format!("{}.{inner}", bare(head[..brace].split('=').next()?)?),
        None => inner,
    };
    let table = text[..start].lines().rev().find_map(|l| {
        let l = l.split('#').next().unwrap_or("").trim();
        let name = l.strip_prefix('[')?.strip_suffix(']')?;
        let name = name.strip_prefix('[').unwrap_or(name);
        let name = name.strip_suffix(']').unwrap_or(name);
        bare(name)
    });
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key,
    })
}

/// How invocations are spread inside a trace minute (mirrors `meshsim_traces::ArrivalProcess`,
/// which this leaf crate does not depend on).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArrivalProcess {
    /// Exponential inter-arrival times rescaled to the minute (InVitro's default).
    #[default]
    Exponential,
    /// Uniform inter-arrival times rescaled to the minute.
    Uniform,
    /// Evenly spaced inside the minute.
    Equidistant,
}

impl ArrivalProcess {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exponential => "exponential",
            Self::Uniform => "uniform",
            Self::Equidistant => "equidistant",
        }
    }
}

impl fmt::Display for ArrivalProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The whole simulator configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Schema version; must be [`CONFIG_VERSION`].
    pub version: u32,
    #[serde(default)]
    pub cluster: ClusterConfig,
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
    #[serde(default)]
    pub knative: KnativeConfig,
    /// Arrival process inside each trace minute (InVitro default: exponential).
    #[serde(default)]
    pub arrivals: ArrivalProcess,
    /// The service mesh (`[mesh]`: a built-in profile and overrides; default `none`).
    #[serde(default)]
    pub mesh: MeshSelection,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            version: CONFIG_VERSION,
            cluster: ClusterConfig::default(),
            kubernetes: KubernetesConfig::default(),
            knative: KnativeConfig::default(),
            arrivals: ArrivalProcess::default(),
            mesh: MeshSelection::default(),
        }
    }
}

/// Nodes, their capacity and the network between them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Worker nodes (paper: 10).
    pub workers: u16,
    /// Cores per worker (paper: 10).
    pub cores_per_node: u32,
    /// Memory per worker, GiB (paper: 64).
    pub memory_gib: u32,
    /// Cores of the control-plane node (paper: same machine type as the workers, 10).
    pub control_plane_cores: u32,
    /// Memory of the control-plane node, GiB (paper: 64).
    pub control_plane_memory_gib: u32,
    /// One-way latency of one network stack traversal between two pods, µs (assumed: a
    /// same-rack LAN round trip of ~100 µs, halved). The mesh adds traversals of this cost.
    pub network_hop_us: u64,
    /// Memory used on every worker by the OS, kubelet and container runtime, GiB (assumed).
    pub node_base_memory_gib: f64,
    /// Memory used on the control-plane node by the OS, etcd, the API server, the controllers
    /// and Knative's control plane (autoscaler, controller, webhook), GiB (assumed).
    pub control_plane_base_memory_gib: f64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            workers: 10,
            cores_per_node: 10,
            memory_gib: 64,
            control_plane_cores: 10,
            control_plane_memory_gib: 64,
            network_hop_us: 50,
            node_base_memory_gib: 1.0,
            control_plane_base_memory_gib: 4.0,
        }
    }
}

/// Which node a new pod goes to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SchedulerKind {
    /// kube-scheduler's default `NodeResourcesFit` scoring: the node with the most free
    /// (requested) CPU and memory, averaged (kubernetes default).
    #[default]
    LeastAllocated,
    /// Bin packing: the feasible node with the least free CPU and memory.
    MostAllocated,
}

/// How the activator reaches a revision's pods (knative `config-network`
/// `mesh-compatibility-mode`, Knative >= 0.26; `pkg/activator/net/revision_backends.go`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MeshCompatibilityMode {
    /// Knative's default: probe the pods' IPs and, when every probe fails with an error a mesh
    /// could have caused, fall back to the revision's private cluster IP. In the model the
    /// fallback happens when the mesh profile hides pod IPs from the activator
    /// (`meshsim_models::mesh::MeshProfile::pod_ips_hidden_from_activator`).
    #[default]
    Auto,
    /// Always the cluster IP.
    Enabled,
    /// Always the pods' IPs (with a mesh that hides them, as if net-istio's
    /// `enable-mesh-pod-addressability` made them reachable).
    Disabled,
}

/// The Kubernetes control plane and the pod start pipeline.
///
/// The control plane (API server + etcd + controllers + scheduler) is modelled as one FIFO
/// server that commits `api_writes_per_s` object writes per second; every step of a pod start
/// that writes an object waits in that queue. This is what bounds cold-start throughput.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// Object writes the control plane commits per second, end to end (API server, etcd and the
    /// controllers' client-side rate limits together).
    ///
    /// **Fitted** to the paper's maximum cold-start throughput of 2.5/s without a mesh: a cold
    /// start performs 10 writes on its critical path (see `meshsim_sim::kubernetes::ApiWrite`),
    /// so the queue saturates at `api_writes_per_s / 10` cold starts per second; 25 writes/s puts
    /// the knee at 2.5/s. `meshsim coldstart` reproduces the knee from this value.
    pub api_writes_per_s: f64,
    /// Control-plane CPU per committed write, µs (assumed: API server admission + etcd commit +
    /// watch fan-out + controller reconcile, a few ms of CPU per object change). Reported as the
    /// control-plane node's CPU.
    pub api_write_cpu_us: u64,
    /// Delay between an object write and the watching component acting on it (informer watch
    /// event + work-queue hand-off), ms (assumed).
    pub watch_delay_ms: u64,
    /// The scheduler's placement policy (kubernetes default: least allocated).
    pub scheduler: SchedulerKind,
    /// Back-off of an unschedulable pod before the next attempt: starts at 1 s and doubles up to
    /// this maximum, ms (kubernetes default `podMaxBackoffSeconds` = 10).
    pub unschedulable_max_backoff_ms: u64,
    /// Pod start pipeline timings.
    pub pod_start: PodStartConfig,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            api_writes_per_s: 25.0,
            api_write_cpu_us: 4_000,
            watch_delay_ms: 10,
            scheduler: SchedulerKind::LeastAllocated,
            unschedulable_max_backoff_ms: 10_000,
            pod_start: PodStartConfig::default(),
        }
    }
}

/// Node-side steps of a pod start (the control-plane writes between them are modelled in
/// `meshsim_sim::kubernetes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PodStartConfig {
    /// Pod sandbox creation (pause container, network namespace, CNI IP assignment), ms.
    ///
    /// **Fitted**: the residual that makes a cold start at 1 cold start/s take the paper's
    /// 1.2 s without a mesh, given every other step of the pipeline (API writes at the fitted
    /// throughput and their queueing, watch delays, two container starts, app init, readiness
    /// probing, activator probe, request hops). It therefore also absorbs whatever a real pod
    /// start spends that no other step models (CNI, cgroups, image checks). Fitted with
    /// `cargo run --release -p meshsim-sim --example fit_sandbox`: p50 of 60 cold starts at
    /// 1/s, mean over seeds 1..=5, for 400..=760 ms in 20 ms steps; 500 ms gives 1.196 s
    /// (480 ms: 1.172 s, 520 ms: 1.222 s).
    pub sandbox_create_ms: u64,
    /// Create + start of one container, ms. **Anchored**: the paper measured 95 ms for the
    /// init container and 81 ms for the Envoy sidecar; a plain container (user container,
    /// queue-proxy) is taken as their mean, 88 ms.
    pub container_start_ms: u64,
    /// Time from the user container's start until its server answers, ms (assumed: a small
    /// HTTP server such as the paper's SQRTSD function).
    pub app_init_ms: u64,
    /// Period at which the queue-proxy re-probes the user container until it answers, ms
    /// (assumed: Knative's "aggressive" readiness probing when no `periodSeconds` is set, tens
    /// of ms).
    pub readiness_probe_period_ms: u64,
    /// CPU the worker's kubelet and container runtime spend on one pod start (sandbox, network
    /// set-up, container creation), ms of one core (assumed). It runs under the worker's
    /// processor sharing in the `system` category, beside the functions, while the sandbox is
    /// created; it does not change the pipeline's timings.
    pub node_cpu_ms_per_start: u64,
    /// Spread of the node-side step times (sandbox create, container starts, app init): each
    /// is multiplied by a factor drawn uniformly from `[1 - j, 1 + j]`, `j` = this / 100
    /// (assumed: real pod starts vary by tens of ms; without spread, equidistant cold starts
    /// would hit the control-plane queue in a fixed phase). 0 makes the pipeline exact.
    pub jitter_pct: u32,
    /// Period of the kubelet's pod lifecycle event generator (PLEG) relist, ms. The kubelet
    /// learns that a container exited only at its next relist, so a pod with an init container
    /// (the mesh's `istio-init` / `linkerd-init`) starts its other containers at the first relist
    /// of its node after the init container finished: the kubelet's `SyncPod` starts the init
    /// container and returns (`computePodActions` starts the regular containers only once every
    /// init container has completed), and the next `SyncPod` comes from the PLEG's
    /// `ContainerDied` event. **Anchored**: `genericPlegRelistPeriod = 1 s` in
    /// `pkg/kubelet/kubelet.go` (Kubernetes 1.29, the paper's version; the evented PLEG is alpha
    /// and off there). Each node's relists run in their own phase (stream `kubelet/pleg`).
    /// 0 = the kubelet notices the exit at once. Pods without init containers never wait for it.
    pub pleg_relist_period_ms: u64,
}

impl Default for PodStartConfig {
    fn default() -> Self {
        Self {
            sandbox_create_ms: 500,
            container_start_ms: 88,
            app_init_ms: 50,
            readiness_probe_period_ms: 50,
            node_cpu_ms_per_start: 150,
            jitter_pct: 10,
            pleg_relist_period_ms: 1000,
        }
    }
}

/// Knative Serving: KPA, activator, queue-proxy, ingress gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnativeConfig {
    /// Target concurrent requests per pod (knative `container-concurrency-target-default`: 100).
    pub target_concurrency: u32,
    /// Fraction of the target the KPA aims for, % (knative
    /// `container-concurrency-target-percentage`: 70).
    pub target_utilization_pct: u32,
    /// Stable window of the KPA, s (knative default 60).
    pub stable_window_s: u32,
    /// Panic window of the KPA, s (knative default 10 % of the stable window: 6).
    pub panic_window_s: u32,
    /// Panic threshold: panic when the panic-window concurrency per ready pod exceeds this
    /// percentage of the (utilisation-adjusted) target (knative default 200).
    pub panic_threshold_pct: u32,
    /// Autoscaler tick, ms (knative default 2 s).
    pub tick_ms: u64,
    /// Scale-to-zero grace period after the stable window went idle, s (knative default 30).
    pub scale_to_zero_grace_s: u32,
    /// Largest scale-up factor per decision (knative `max-scale-up-rate`: 1000).
    pub max_scale_up_rate: f64,
    /// Largest scale-down divisor per decision (knative `max-scale-down-rate`: 2).
    pub max_scale_down_rate: f64,
    /// Upper bound on a revision's pods, applied to the autoscaler's decision before the
    /// deployment is scaled (knative `autoscaling.knative.dev/max-scale`; 0 = unbounded, the
    /// default of config-autoscaler's `max-scale`). InVitro deploys its trace functions with
    /// 200.
    pub max_scale: u32,
    /// Target burst capacity (knative default 211): the activator stays on the request path
    /// while `ready pods x per-pod target - panic concurrency < tbc` (proxy mode); -1 keeps it
    /// on the path always (as InVitro deploys functions).
    pub target_burst_capacity: i32,
    /// Hard limit of concurrent requests in one pod, enforced by the queue-proxy (excess
    /// requests queue in it) and respected by the activator when it picks a pod (excess
    /// requests wait in the activator). 0 = unlimited (knative default
    /// `container-concurrency: 0`). InVitro, the paper's load generator, deploys its trace
    /// functions with 1 (and `target_burst_capacity = -1`; `models/profiles/invitro-knative.toml`).
    pub container_concurrency: u32,
    /// Period of the activator's readiness probes of a new pod, ms (knative: 200).
    pub activator_probe_period_ms: u64,
    /// Timeout of one activator probe, ms (knative: 300).
    pub activator_probe_timeout_ms: u64,
    /// Request timeout: a request not answered after this long fails, s (knative revision
    /// `timeoutSeconds` default 300).
    pub request_timeout_s: u64,
    /// Activator replicas (knative default minimum 1).
    pub activator_replicas: u16,
    /// How the activator reaches the pods: by pod IP, where its throttler sends each request
    /// to a pod with a free slot, or by the revision's cluster IP, where its breaker only caps
    /// the requests in flight at `container_concurrency x ready pods` and the pod is chosen
    /// by whatever balances the cluster IP: the activator's proxy (Envoy's least request, two
    /// random choices, Istio's default since 1.14) or kube-proxy (uniform random); a request
    /// sent to a busy pod waits in its queue-proxy. Knative's default `auto`.
    pub mesh_compatibility_mode: MeshCompatibilityMode,
    /// Ingress gateway replicas (1 in the paper's setup).
    pub gateway_replicas: u16,
    /// Gateway CPU per request, µs. **Anchored**: the ingress gateway is an Envoy; Istio 1.20's
    /// performance page gives 0.5 vCPU per 1000 rps per proxy = 500 µs per request.
    pub gateway_cpu_us: u64,
    /// Activator CPU per request it proxies, µs (assumed: a Go reverse proxy with request
    /// accounting, lighter than Envoy).
    pub activator_cpu_us: u64,
    /// Queue-proxy CPU per request, µs (assumed: a Go reverse proxy with a breaker and metrics).
    pub queue_proxy_cpu_us: u64,
    /// CPU request of the user container for placement, millicores (assumed; InVitro-style
    /// deployments set a small request).
    pub user_cpu_request_millicores: u32,
    /// CPU request of the queue-proxy, millicores (knative default `queue-sidecar-cpu-request`:
    /// 25m).
    pub queue_proxy_cpu_request_millicores: u32,
    /// Memory request of the queue-proxy for placement, MiB (knative default: none).
    pub queue_proxy_memory_request_mib: u32,
    /// Resident memory of a queue-proxy, MiB (assumed: a small Go binary).
    pub queue_proxy_rss_mib: u32,
    /// Resident memory of the user container's runtime before any invocation, MiB (assumed).
    pub user_runtime_rss_mib: u32,
    /// CPU request of an activator replica, millicores (knative `serving-core.yaml`: 300m).
    pub activator_cpu_request_millicores: u32,
    /// Memory request (and modelled resident memory) of an activator replica, MiB (knative
    /// `serving-core.yaml`: 60Mi).
    pub activator_memory_request_mib: u32,
    /// CPU request of an ingress gateway replica, millicores (istio `istio-ingressgateway`
    /// default: 100m).
    pub gateway_cpu_request_millicores: u32,
    /// Memory request (and modelled resident memory) of an ingress gateway replica, MiB (istio
    /// default: 128Mi).
    pub gateway_memory_request_mib: u32,
}

impl Default for KnativeConfig {
    fn default() -> Self {
        Self {
            target_concurrency: 100,
            target_utilization_pct: 70,
            stable_window_s: 60,
            panic_window_s: 6,
            panic_threshold_pct: 200,
            tick_ms: 2_000,
            scale_to_zero_grace_s: 30,
            max_scale_up_rate: 1000.0,
            max_scale_down_rate: 2.0,
            max_scale: 0,
            target_burst_capacity: 211,
            container_concurrency: 0,
            activator_probe_period_ms: 200,
            activator_probe_timeout_ms: 300,
            request_timeout_s: 300,
            activator_replicas: 1,
            mesh_compatibility_mode: MeshCompatibilityMode::Auto,
            gateway_replicas: 1,
            gateway_cpu_us: 500,
            activator_cpu_us: 300,
            queue_proxy_cpu_us: 200,
            user_cpu_request_millicores: 100,
            queue_proxy_cpu_request_millicores: 25,
            queue_proxy_memory_request_mib: 0,
            queue_proxy_rss_mib: 30,
            user_runtime_rss_mib: 20,
            activator_cpu_request_millicores: 300,
            activator_memory_request_mib: 60,
            gateway_cpu_request_millicores: 100,
            gateway_memory_request_mib: 128,
        }
    }
}

impl KnativeConfig {
    /// Whether the activator reaches a revision's pods through its cluster IP rather than by
    /// pod IP, given whether the mesh hides pod IPs from it: only with a container concurrency
    /// (without one there is no slot to respect and both route alike), and then as
    /// `mesh_compatibility_mode` says (`auto`: exactly when the pod IPs are hidden).
    pub fn activator_uses_cluster_ip(&self, pod_ips_hidden: bool) -> bool {
        self.container_concurrency > 0
            && match self.mesh_compatibility_mode {
                MeshCompatibilityMode::Auto => pod_ips_hidden,
                MeshCompatibilityMode::Enabled => true,
                MeshCompatibilityMode::Disabled => false,
            }
    }

    /// The per-pod concurrency target before utilisation: the container concurrency when one
    /// is set and lower than the target (knative), else the target (100 by default).
    pub fn pod_target(&self) -> f64 {
        match self.container_concurrency {
            0 => f64::from(self.target_concurrency),
            cc => f64::from(cc.min(self.target_concurrency)),
        }
    }

    /// Concurrency one pod is expected to carry: `target x utilisation` (70 by default).
    pub fn pod_capacity(&self) -> f64 {
        self.pod_target() * f64::from(self.target_utilization_pct) / 100.0
    }
}

/// Collects range checks with the file name for the messages.
pub(crate) struct Check<'a> {
    pub(crate) file: &'a str,
}

impl Check<'_> {
    pub(crate) fn range<T: PartialOrd + fmt::Display + Copy>(
        &self,
        field: &'static str,
        value: T,
        lo: T,
        hi: T,
    ) -> Result<(), ConfigError> {
        if value >= lo && value <= hi {
            Ok(())
        } else {
            Err(ConfigError::OutOfRange {
                file: self.file.to_owned(),
                field,
                value: value.to_string(),
                allowed: format!("{lo} ..= {hi}"),
            })
        }
    }

    pub(crate) fn finite(
        &self,
        field: &'static str,
        value: f64,
        lo: f64,
        hi: f64,
    ) -> Result<(), ConfigError> {
        if value.is_finite() {
            self.range(field, value, lo, hi)
        } else {
            Err(ConfigError::OutOfRange {
                file: self.file.to_owned(),
                field,
                value: value.to_string(),
                allowed: format!("a finite number in {lo} ..= {hi}"),
            })
        }
    }
}

impl SimConfig {
    /// Parses TOML text (`file_name` is used in error messages) and validates the result.
    pub fn from_toml_str(text: &str, file_name: &str) -> Result<Self, ConfigError> {
        let cfg: SimConfig = toml::from_str(text).map_err(|e| parse_error(text, file_name, &e))?;
        cfg.validate_in(file_name)?;
        Ok(cfg)
    }

    /// Serialises to TOML (every field, so a result embeds the full config it came from).
    pub fn to_toml_string(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# config not serialisable: {e}"))
    }

    /// Checks every field against its allowed range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_in("<config>")
    }

    fn validate_in(&self, file: &str) -> Result<(), ConfigError> {
        let c = Check { file };
        if self.version != CONFIG_VERSION {
            return Err(ConfigError::Version {
                file: file.to_owned(),
                found: self.version,
                expected: CONFIG_VERSION,
            });
        }
        let cl = &self.cluster;
        c.range("cluster.workers", cl.workers, 1, 10_000)?;
        c.range("cluster.cores_per_node", cl.cores_per_node, 1, 1024)?;
        c.range("cluster.memory_gib", cl.memory_gib, 1, 65_536)?;
        c.range(
            "cluster.control_plane_cores",
            cl.control_plane_cores,
            1,
            1024,
        )?;
        c.range(
            "cluster.control_plane_memory_gib",
            cl.control_plane_memory_gib,
            1,
            65_536,
        )?;
        c.range("cluster.network_hop_us", cl.network_hop_us, 0, 1_000_000)?;
        c.finite(
            "cluster.node_base_memory_gib",
            cl.node_base_memory_gib,
            0.0,
            f64::from(cl.memory_gib),
        )?;
        c.finite(
            "cluster.control_plane_base_memory_gib",
            cl.control_plane_base_memory_gib,
            0.0,
            f64::from(cl.control_plane_memory_gib),
        )?;
        let k = &self.kubernetes;
        c.finite("kubernetes.api_writes_per_s", k.api_writes_per_s, 0.01, 1e6)?;
        c.range(
            "kubernetes.api_write_cpu_us",
            k.api_write_cpu_us,
            0,
            10_000_000,
        )?;
        c.range("kubernetes.watch_delay_ms", k.watch_delay_ms, 0, 60_000)?;
        c.range(
            "kubernetes.unschedulable_max_backoff_ms",
            k.unschedulable_max_backoff_ms,
            1_000,
            600_000,
        )?;
        let p = &k.pod_start;
        c.range(
            "kubernetes.pod_start.sandbox_create_ms",
            p.sandbox_create_ms,
            0,
            600_000,
        )?;
        c.range(
            "kubernetes.pod_start.container_start_ms",
            p.container_start_ms,
            0,
            600_000,
        )?;
        c.range(
            "kubernetes.pod_start.app_init_ms",
            p.app_init_ms,
            0,
            600_000,
        )?;
        c.range(
            "kubernetes.pod_start.readiness_probe_period_ms",
            p.readiness_probe_period_ms,
            1,
            600_000,
        )?;
        c.range("kubernetes.pod_start.jitter_pct", p.jitter_pct, 0, 90)?;
        c.range(
            "kubernetes.pod_start.pleg_relist_period_ms",
            p.pleg_relist_period_ms,
            0,
            600_000,
        )?;
        c.range(
            "kubernetes.pod_start.node_cpu_ms_per_start",
            p.node_cpu_ms_per_start,
            0,
            600_000,
        )?;
        let n = &self.knative;
        c.range(
            "knative.target_concurrency",
            n.target_concurrency,
            1,
            100_000,
        )?;
        c.range(
            "knative.target_utilization_pct",
            n.target_utilization_pct,
            1,
            100,
        )?;
        c.range("knative.stable_window_s", n.stable_window_s, 6, 3_600)?;
        c.range(
            "knative.panic_window_s",
            n.panic_window_s,
            1,
            n.stable_window_s,
        )?;
        c.range(
            "knative.panic_threshold_pct",
            n.panic_threshold_pct,
            101,
            100_000,
        )?;
        c.range("knative.tick_ms", n.tick_ms, 100, 60_000)?;
        if !n.tick_ms.is_multiple_of(100) {
            return Err(ConfigError::OutOfRange {
                file: file.to_owned(),
                field: "knative.tick_ms",
                value: n.tick_ms.to_string(),
                allowed: "a multiple of 100 in 100 ..= 60000".into(),
            });
        }
        c.range(
            "knative.scale_to_zero_grace_s",
            n.scale_to_zero_grace_s,
            0,
            3_600,
        )?;
        c.finite("knative.max_scale_up_rate", n.max_scale_up_rate, 1.0, 1e6)?;
        c.finite(
            "knative.max_scale_down_rate",
            n.max_scale_down_rate,
            1.0,
            1e6,
        )?;
        c.range("knative.max_scale", n.max_scale, 0, 100_000)?;
        c.range(
            "knative.target_burst_capacity",
            n.target_burst_capacity,
            -1,
            1_000_000,
        )?;
        c.range(
            "knative.container_concurrency",
            n.container_concurrency,
            0,
            1_000,
        )?;
        c.range(
            "knative.activator_probe_period_ms",
            n.activator_probe_period_ms,
            1,
            60_000,
        )?;
        c.range(
            "knative.activator_probe_timeout_ms",
            n.activator_probe_timeout_ms,
            1,
            60_000,
        )?;
        c.range("knative.request_timeout_s", n.request_timeout_s, 1, 86_400)?;
        c.range("knative.activator_replicas", n.activator_replicas, 1, 100)?;
        c.range("knative.gateway_replicas", n.gateway_replicas, 1, 100)?;
        c.range("knative.gateway_cpu_us", n.gateway_cpu_us, 0, 1_000_000)?;
        c.range("knative.activator_cpu_us", n.activator_cpu_us, 0, 1_000_000)?;
        c.range(
            "knative.queue_proxy_cpu_us",
            n.queue_proxy_cpu_us,
            0,
            1_000_000,
        )?;
        let node_millicores = cl.cores_per_node.saturating_mul(1000);
        c.range(
            "knative.user_cpu_request_millicores",
            n.user_cpu_request_millicores,
            0,
            node_millicores,
        )?;
        c.range(
            "knative.queue_proxy_cpu_request_millicores",
            n.queue_proxy_cpu_request_millicores,
            0,
            node_millicores,
        )?;
        c.range(
            "knative.queue_proxy_memory_request_mib",
            n.queue_proxy_memory_request_mib,
            0,
            cl.memory_gib.saturating_mul(1024),
        )?;
        c.range(
            "knative.queue_proxy_rss_mib",
            n.queue_proxy_rss_mib,
            0,
            65_536,
        )?;
        c.range(
            "knative.user_runtime_rss_mib",
            n.user_runtime_rss_mib,
            0,
            65_536,
        )?;
        self.mesh.resolve().map_err(|e| match e {
            ConfigError::Invalid {
                field,
                value,
                allowed,
                ..
            } => ConfigError::Invalid {
                file: file.to_owned(),
                field: format!("mesh ({field})"),
                value,
                allowed,
            },
            other => other,
        })?;
        Ok(())
    }
}

/// 1-based line and column of byte offset `at` in `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(at, |p| at - p - 1) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_round_trips() {
        let cfg = SimConfig::default();
        cfg.validate().unwrap();
        let text = cfg.to_toml_string();
        let back = SimConfig::from_toml_str(&text, "rt.toml").unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn paper_setup_defaults() {
        let cfg = SimConfig::default();
        assert_eq!(cfg.cluster.workers, 10);
        assert_eq!(cfg.cluster.cores_per_node, 10);
        assert_eq!(cfg.cluster.memory_gib, 64);
        assert_eq!(cfg.knative.target_concurrency, 100);
        assert_eq!(cfg.knative.target_utilization_pct, 70);
        assert_eq!(cfg.knative.panic_window_s, 6);
        assert_eq!(cfg.knative.scale_to_zero_grace_s, 30);
        assert_eq!(cfg.knative.pod_capacity(), 70.0);
    }

    #[test]
    fn unknown_field_names_line_and_column() {
        let err = SimConfig::from_toml_str("version = 1\n[knative]\n  tik_ms = 5\n", "x.toml")
            .unwrap_err();
        match err {
            ConfigError::Parse {
                file, line, column, ..
            } => {
                assert_eq!(file, "x.toml");
                assert_eq!(line, 3);
                assert_eq!(column, 3);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn missing_version_is_an_error() {
        assert!(matches!(
            SimConfig::from_toml_str("[cluster]\nworkers = 3\n", "v.toml"),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            SimConfig::from_toml_str("version = 7\n", "v.toml"),
            Err(ConfigError::Version { found: 7, .. })
        ));
    }

    #[test]
    fn out_of_range_names_field_and_range() {
        let err = SimConfig::from_toml_str("version = 1\n[cluster]\nworkers = 0\n", "r.toml")
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("cluster.workers"), "{msg}");
        assert!(msg.contains("1 ..= 10000"), "{msg}");
        let err = SimConfig::from_toml_str(
            "version = 1\n[kubernetes]\napi_writes_per_s = nan\n",
            "r.toml",
        )
        .unwrap_err();
        assert!(err.to_string().contains("kubernetes.api_writes_per_s"));
    }

    #[test]
    fn shipped_profiles_parse() {
        let cfg = SimConfig::from_toml_str(
            include_str!("../profiles/invitro-knative.toml"),
            "invitro-knative.toml",
        )
        .unwrap();
        assert_eq!(cfg.knative.container_concurrency, 1);
        assert_eq!(cfg.knative.target_burst_capacity, -1);
        // Knative's 70 % of the container concurrency (the templates set no utilisation).
        assert!((cfg.knative.pod_capacity() - 0.7).abs() < 1e-12);
    }

    #[test]
    fn pod_start_ranges_are_checked() {
        let err = SimConfig::from_toml_str(
            "version = 1\n[kubernetes.pod_start]\njitter_pct = 95\n",
            "j.toml",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("kubernetes.pod_start.jitter_pct"),
            "{err}"
        );
    }

    #[test]
    fn tagged_scheduler_and_arrivals() {
        let cfg = SimConfig::from_toml_str(
            "version = 1\narrivals = \"equidistant\"\n[kubernetes.scheduler]\nkind = \"most-allocated\"\n",
            "s.toml",
        )
        .unwrap();
        assert_eq!(cfg.kubernetes.scheduler, SchedulerKind::MostAllocated);
        assert_eq!(cfg.arrivals, ArrivalProcess::Equidistant);
    }

    #[test]
    fn a_bad_value_is_labelled_with_its_key() {
        let key = |text: &str, needle: &str| key_at(text, text.find(needle).unwrap());
        let t = "version = 1\n[knative] # comment\nmesh_compatibility_mode = \"x\"\n";
        assert_eq!(
            key(t, "\"x\"").as_deref(),
            Some("knative.mesh_compatibility_mode")
        );
        // Array tables, inline tables, continuation lines of a multi-line array.
        let t = "[machine]\ncores = 2\n[[entries]]\nname = \"jwt\"\nrate_rps = \"x\"\n";
        assert_eq!(key(t, "\"x\"").as_deref(), Some("entries.rate_rps"));
        let t = "knative = { tick_ms = 1, mesh_compatibility_mode = \"x\" }\n";
        assert_eq!(
            key(t, "\"x\"").as_deref(),
            Some("knative.mesh_compatibility_mode")
        );
        let t = "[a]\nb = [\n  [1, 2],\n  \"x\",\n]\n";
        assert_eq!(key(t, "\"x\""), None);
        // Never a panic: any offset, any text.
        let t = "é = \"ü\"\n[[t]]\nk = { a = 1 }\n";
        for at in 0..=t.len() + 2 {
            let _ = key_at(t, at);
        }
        assert_eq!(key_at("", 0), None);
    }

    #[test]
    fn mesh_compatibility_mode_parses_and_names_the_field_when_wrong() {
        assert_eq!(
            SimConfig::default().knative.mesh_compatibility_mode,
            MeshCompatibilityMode::Auto
        );
        for (text, mode) in [
            ("auto", MeshCompatibilityMode::Auto),
            ("enabled", MeshCompatibilityMode::Enabled),
            ("disabled", MeshCompatibilityMode::Disabled),
        ] {
            let cfg = SimConfig::from_toml_str(
                &format!("version = 1\n[knative]\nmesh_compatibility_mode = \"{text}\"\n"),
                "m.toml",
            )
            .unwrap();
            assert_eq!(cfg.knative.mesh_compatibility_mode, mode);
        }
        let err = SimConfig::from_toml_str(
            "version = 1\n[knative]\nmesh_compatibility_mode = \"sometimes\"\n",
            "m.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("m.toml"), "{err}");
        assert!(err.contains("mesh_compatibility_mode"), "{err}");
        assert!(err.contains("enabled"), "{err}");
    }
}
