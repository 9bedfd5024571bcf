//! The service-mesh models of issue 5: one [`MeshModel`] plays any
//! [`meshsim_models::MeshProfile`] through the engine's [`SidecarModel`] hook.
//!
//! # Data plane
//! Per proxy hop the CPU (on the hop's node, under processor sharing, category `sidecar`) and
//! the added latency come from the calibration file's additive cost model
//! ([`meshsim_models::calibration::PolicyCosts`]: pass-through + pipeline activation when any
//! policy is on + per-policy marginal costs), times the profile's scale factors:
//! `cpu = cpu_scale x pass_through + cpu_scale x policy_cpu_scale x (activation + sum marginal)`;
//! latency = `traversals_per_hop x network_hop_us` + `latency_scale x` the reference's added
//! latency beyond its own CPU. With `on_path_latency_us` (a published per-proxy added latency)
//! the pass-through CPU that does not fit in it runs off the request's critical path: charged
//! to the node as sidecar CPU (`SidecarHop::background_cpu_ns`) without delaying the request;
//! policy CPU stays on the path. The function pod's proxy applies the enabled policies; the
//! activator's proxy (when the activator is in the mesh:
//! [`meshsim_models::mesh::MeshProfile::activator_in_mesh`]) is a pass-through plus mTLS
//! origination.
//! Stateful policies are played out:
//! - **global rate limit**: a fixed window per function; the check is an RPC to a rate-limit
//!   service on the control-plane node (or a node-local cache, which answers on the request's
//!   node but keeps the cluster-wide count: taken as coherent) with its own FIFO queue and CPU;
//!   the request waits for the answer; over the limit it fails `rate-limited`;
//! - **mTLS**: a handshake on every new connection to a pod (connections are kept per pod and
//!   grow with its concurrent requests): CPU = the calibration's measured full handshake
//!   (`[mtls_handshake]`, sidecar + client side) x `policy_cpu_scale`, not the per-request
//!   `cpu_scale` since it is crypto-library work (or the profile's
//!   `policy.mtls_handshake_cpu_us` override), and added
//!   latency = `latency_scale x` the measured first-request slowdown beyond that CPU; per-byte
//!   crypto is in the calibrated per-request cost;
//! - **retries**: an attempt answers 5xx with `policy.upstream_5xx_rate` (0 in the trace); the
//!   proxy retries up to `retry_attempts` times, each attempt paying the hop again; then
//!   `retries-exhausted`;
//! - **circuit breaking** (Envoy's thresholds count per upstream cluster, here a revision): once
//!   the revision's pods hold `cb_max_connections` requests (HTTP/1.1, a request per
//!   connection) a new one waits for a connection ([`HopDecision::Pending`]), and with
//!   `cb_max_pending_requests` already waiting it overflows (`circuit-open`); with
//!   `cb_max_requests` held it is refused too; `cb_consecutive_5xx` consecutive 5xx eject a
//!   pod for `cb_ejection_ms`.
//!
//! Memory: resident per proxy (pod sidecars through their container, the activator's, per-node
//! and waypoint proxies at time 0), per connection, and the control plane's.
//!
//! # Control plane (istiod)
//! Kubernetes events (a pod scheduled = a not-ready endpoint, endpoint ready, removed, pod
//! deleted) are debounced (`debounce_quiet_ms` quiet, `debounce_max_ms` at most); a push
//! recomputes the push context when it carries a full push (CPU per Knative service on node 0),
//! then every in-scope proxy gets a per-proxy push through a queue of at most
//! `push_concurrency` pushes; a proxy's pending pushes are coalesced. A push is a sequence of
//! transactions: a response (bytes = resource counts of the proxy's view and scope times the
//! per-resource encoded sizes of `models/xds-sizes.toml`; encode CPU on node 0, cached between
//! proxies for CDS/EDS/RDS but not LDS; transfer at `bandwidth_gbps`; decode CPU and Envoy's
//! per-cluster apply on the proxy's node) and the proxy's ACK. A new sidecar opens its stream
//! (admitted at `stream_admission_per_s`) and asks for the state of the world, one type per
//! round trip (CDS, EDS, LDS, RDS); it is ready once clusters and listeners arrived, at the
//! kubelet's next startup probe. When its pod turns Ready it gets a second full push. The
//! activator's proxy must receive the EDS update of a ready endpoint before the activator's
//! probe can reach the pod. `on-demand` (Linkerd) has no debounce and sends endpoint updates
//! only to the activator's proxy, the one proxy that asked for them; `fused` ships a function's
//! configuration with its sandbox (no xDS for function proxies).

use crate::cpu::CpuCategory;
use crate::hist::LogHistogram;
use crate::kubernetes::ApiWrite;
use crate::mesh::{
    ClusterEvent, ContainerKind, ContainerSpec, HopCtx, HopDecision, HopPoint, MeshAction, MeshCtx,
    ProxyKind, SidecarHop, SidecarModel, SystemPod, XdsTransaction, XdsType,
};
use crate::metrics::{FailureReason, PayloadBytes, XdsSummary};
use crate::time::{MS, SimTime, US};
use meshsim_models::calibration::{CalibrationFile, policy_bit};
use meshsim_models::mesh::{ControlPlaneKind, DataPlaneKind, MeshProfile};
use meshsim_models::xds_sizes::{PolicySet, Scope, View, XdsSizes};
use meshsim_models::{ConfigError, SimConfig};
use rand::Rng as _;
use std::collections::VecDeque;

/// Ports of a revision's private service (MECHANISMS.md: http, https, autometric, usermetric,
/// queueadm, istio): endpoints per pod in the private service's load assignments.
const PRIVATE_PORTS: u64 = 6;

const TOK_DEBOUNCE: u64 = 1;
const TOK_ADMIT: u64 = 2;
const TOK_NET: u64 = 3;
const TOK_JOB_CPU: u64 = 4;
const TOK_RECOMPUTE: u64 = 5;
const TOK_IGNORE: u64 = 6;

fn token(kind: u64, id: u64) -> u64 {
    (kind << 56) | id
}

/// Inputs of a mesh run besides the profile.
#[derive(Debug, Clone, Copy)]
pub struct MeshInputs<'a> {
    /// Per-policy costs of the reference sidecar.
    pub calibration: &'a CalibrationFile,
    /// xDS resource sizes; required by profiles with an xDS control plane.
    pub xds_sizes: Option<&'a XdsSizes>,
    /// Keep one record per xDS transaction.
    pub record_xds: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct PodState {
    node: u16,
    rev: u32,
    live: bool,
    conns: u32,
    consecutive_5xx: u32,
    ejected_until: u64,
    sidecar_start: Option<u64>,
    /// When the kubelet took the pod (its probe workers start).
    kubelet_at: u64,
    config_at: Option<u64>,
    ready_seq: u64,
    proxy: Option<u32>,
}

#[derive(Debug, Clone)]
struct Proxy {
    kind: ProxyKind,
    node: u16,
    rev: Option<u32>,
    pod: Option<u32>,
    connected: bool,
    view: View,
    scope: Scope,
    /// A per-proxy push is queued or running.
    busy: bool,
    queued: bool,
    pending_revs: Vec<u32>,
    pending_full: bool,
    pending_seq: u64,
    /// Highest push sequence whose EDS this proxy applied.
    synced_seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Encode,
    Send,
    Decode,
}

#[derive(Debug, Clone)]
struct Job {
    proxy: u32,
    types: Vec<XdsType>,
    idx: usize,
    stage: Stage,
    /// Request-driven initial state of the world (one round trip per type).
    initial: bool,
    /// Holds a slot of the push queue.
    slot: bool,
    seq: u64,
    eds_revs: Vec<u32>,
    bytes: u64,
    clusters: u64,
    live: bool,
}

#[derive(Debug, Clone, Default)]
struct Batch {
    revs: Vec<u32>,
    full_proxies: Vec<u32>,
    /// Event sequence number when the push fired (it carries every change up to it).
    seq: u64,
}

/// The mesh model (see the module docs).
#[derive(Debug)]
pub struct MeshModel {
    name: String,
    profile: MeshProfile,
    containers: Vec<ContainerSpec>,
    functions: u64,
    hop_ns: u64,
    watch_ns: u64,
    pod_hop: SidecarHop,
    activator_hop: Option<SidecarHop>,
    handshake_ns: u64,
    handshake_latency_ns: u64,
    rl: bool,
    mtls: bool,
    cb: bool,
    retry_attempts: u32,
    rl_window: Vec<(u64, u64)>,
    /// Per-request sandboxes: the policy module's compilation after an idle release, ns.
    recompile_ns: u64,
    /// How long a node keeps its compiled chain module after its last sandboxed request, ns.
    module_release_ns: u64,
    /// Last sandboxed request on each node (the node's shared chain module).
    module_used: Vec<Option<u64>>,
    rl_busy_until: Vec<u64>,
    rl_service_ns: u64,
    waypoint_cpu_ns: u64,
    rng: meshsim_traces::rng::Rng,
    pods: Vec<PodState>,
    live_pods_of: Vec<u32>,
    live_pods: u64,
    pending: Vec<MeshAction>,
    // control plane
    sizes: Option<XdsSizes>,
    xds_policies: PolicySet,
    encode_ns_per_byte: f64,
    decode_ns_per_byte: f64,
    proxies: Vec<Proxy>,
    activator_proxy: Option<u32>,
    system_placed: bool,
    seq: u64,
    batch: Batch,
    debouncing: bool,
    first_event: u64,
    last_event: u64,
    recomputing: bool,
    fire_after_recompute: bool,
    recompute_batch: Batch,
    queue: VecDeque<u32>,
    active: u32,
    jobs: Vec<Job>,
    free_jobs: Vec<u32>,
    admit_next: u64,
    cache: Vec<((u8, u8, u32), u64)>,
    transactions: u64,
    bytes: u64,
    payload: LogHistogram,
    records: Option<Vec<XdsTransaction>>,
}

impl MeshModel {
    /// Builds the model of `profile` for a cluster `cfg` serving `functions` Knative services.
    pub fn new(
        profile: &MeshProfile,
        cfg: &SimConfig,
        functions: usize,
        inputs: MeshInputs<'_>,
        seed: u64,
        replication: u32,
    ) -> Result<Self, ConfigError> {
        profile.validate()?;
        let dp = &profile.data_plane;
        // Identity-based authz runs over mTLS even when the mtls policy is off.
        let mask = profile.effective_policy_mask();
        let has = |p: &str| mask & policy_bit(p) != 0;
        let hop_ns = cfg.cluster.network_hop_us * US;
        let active = dp.kind != DataPlaneKind::None;
        let costs = if active {
            Some(inputs.calibration.policy_costs(dp.calibration_rate_rps)?)
        } else {
            None
        };
        let mut pod_hop = SidecarHop::default();
        let mut activator_hop = None;
        let mut waypoint_cpu_ns = 0;
        let rl_bit = policy_bit("rate_limit");
        let mtls_bit = policy_bit("mtls");
        let mtls = active && has("mtls");
        let (mut handshake_ns, mut handshake_latency_ns) = (0, 0);
        let (mut recompile_ns, mut module_release_ns) = (0, 0);
        if let Some(c) = &costs {
            let (cpu_scale, lat_scale) = dp.scales(c);
            let cpu_us = |m: u16| {
                cpu_scale * c.cpu.pass_through
                    + cpu_scale * dp.policy_cpu_scale * (c.cpu.of(m) - c.cpu.pass_through)
            };
            // The rate-limit RPC is played out, so its measured latency is not added again.
            let lat_us = |m: u16| {
                let lm = m & !rl_bit;
                lat_scale * (c.latency_p50.of(lm) - c.cpu.of(lm)).max(0.0)
            };
            let traversals = u64::from(dp.traversals_per_hop) * hop_ns;
            let ns = |us: f64| (us * 1e3).round().max(0.0) as u64;
            if mtls {
                let rsa = profile.policy.mtls_key_algorithm
                    == meshsim_models::mesh::MtlsKeyAlgorithm::Rsa2048;
                let (measured, table) = if rsa {
                    (
                        inputs.calibration.mtls_handshake_rsa2048.as_ref(),
                        "[mtls_handshake_rsa2048]",
                    )
                } else {
                    (
                        inputs.calibration.mtls_handshake.as_ref(),
                        "[mtls_handshake]",
                    )
                };
                let cpu = match (profile.policy.mtls_handshake_cpu_us, measured) {
                    (Some(us), _) => us,
                    // Public-key crypto, not proxy overhead: Envoy's BoringSSL and the
                    // reference's aws-lc (a BoringSSL fork) do the same ECDHE + ECDSA work, so
                    // the measured handshake is not scaled by the per-request `cpu_scale`.
                    (None, Some(h)) => dp.policy_cpu_scale * h.cpu_us(),
                    (None, None) => {
                        return Err(ConfigError::Invalid {
                            file: profile.name.clone(),
                            field: "policy.mtls_handshake_cpu_us".into(),
                            value: format!("absent, and the calibration file has no {table}"),
                            allowed: format!(
                                "a calibration measured with the handshake (`meshsim calibrate handshake --key-algorithm {} --into FILE`) or an explicit value",
                                if rsa { "rsa-2048" } else { "ecdsa-p256" }
                            ),
                        });
                    }
                };
                handshake_ns = ns(cpu);
                handshake_latency_ns = measured.map_or(0, |h| {
                    ns(lat_scale * (h.added_latency_p50_us - h.cpu_us()).max(0.0))
                });
            }
            let boot = ns(dp.boot_us_calibrated(inputs.calibration));
            if let (Some(us), Some(ms)) = (
                dp.recompile_us_calibrated(inputs.calibration),
                dp.module_idle_release_ms,
            ) {
                recompile_ns = ns(us);
                module_release_ns = ms * MS;
            }
            // The pass-through CPU beyond what fits in the published on-path latency runs off
            // the request's critical path (`DataPlane::on_path_latency_us`).
            let off = dp.on_path_latency_us.map_or(0.0, |anchor| {
                let pass = cpu_scale * c.cpu.pass_through;
                let budget = (anchor - traversals as f64 / 1e3 - lat_us(0)).max(0.0);
                (pass - budget).max(0.0)
            });
            let hop_of = |m: u16, extra_cpu_ns: u64| SidecarHop {
                cpu_ns: ns(cpu_us(m) - off) + extra_cpu_ns,
                latency_ns: traversals + ns(lat_us(m)),
                background_cpu_ns: ns(off),
            };
            match dp.kind {
                DataPlaneKind::Sidecar | DataPlaneKind::Sandbox => {
                    pod_hop = hop_of(mask, boot);
                }
                DataPlaneKind::Ambient => {
                    // ztunnel on the pod's node; the L7 waypoint's CPU runs on its own node
                    // and its uncontended time is on the request path.
                    waypoint_cpu_ns = ns(cpu_us(mask));
                    pod_hop = SidecarHop {
                        cpu_ns: ns(dp.l4_cpu_us),
                        latency_ns: traversals + ns(lat_us(mask)) + waypoint_cpu_ns,
                        background_cpu_ns: 0,
                    };
                }
                DataPlaneKind::None => {}
            }
            if profile.activator_in_mesh() {
                activator_hop = Some(hop_of(mask & mtls_bit, 0));
            }
        }
        let pod = &profile.pod;
        let mut containers = Vec::new();
        if pod.init_container_ms > 0 {
            containers.push(ContainerSpec {
                kind: ContainerKind::Init,
                start_ns: pod.init_container_ms * MS,
                api_writes: pod.writes_per_container,
                cpu_request_millicores: pod.init_cpu_request_millicores,
                memory_request_mib: pod.init_memory_request_mib,
                rss_mib: 0,
                ready_gate: false,
            });
        }
        if pod.sidecar_start_ms > 0 {
            containers.push(ContainerSpec {
                kind: ContainerKind::Sidecar,
                start_ns: pod.sidecar_start_ms * MS,
                api_writes: pod.writes_per_container,
                cpu_request_millicores: pod.sidecar_cpu_request_millicores,
                memory_request_mib: pod.sidecar_memory_request_mib,
                rss_mib: dp.rss_mib.round() as u32,
                ready_gate: profile.control_plane.scope != Scope::Fused,
            });
        }
        let cp = &profile.control_plane;
        let sizes = match (cp.kind, inputs.xds_sizes) {
            (ControlPlaneKind::None, _) => None,
            (_, Some(s)) => Some(s.clone()),
            (_, None) => {
                return Err(ConfigError::Invalid {
                    file: profile.name.clone(),
                    field: "control_plane".into(),
                    value: "an xDS control plane".into(),
                    allowed: "an xDS size file (models/xds-sizes.toml) to be given".into(),
                });
            }
        };
        let (enc, dec) = match &sizes {
            Some(s) => (
                cp.encode_ns_per_byte
                    .unwrap_or(s.codec.build_and_encode_ns_per_byte),
                cp.decode_ns_per_byte.unwrap_or(s.codec.decode_ns_per_byte),
            ),
            None => (0.0, 0.0),
        };
        let q = &profile.policy;
        Ok(Self {
            name: profile.name.clone(),
            profile: profile.clone(),
            containers,
            functions: functions as u64,
            hop_ns,
            watch_ns: cfg.kubernetes.watch_delay_ms * MS,
            pod_hop,
            activator_hop,
            handshake_ns,
            handshake_latency_ns,
            rl: active && has("rate_limit"),
            mtls,
            cb: active && has("circuit_breaker"),
            retry_attempts: if active && has("retry") {
                q.retry_attempts
            } else {
                0
            },
            rl_window: vec![(0, 0); functions],
            recompile_ns,
            module_release_ns,
            module_used: vec![None; usize::from(cfg.cluster.workers) + 1],
            rl_busy_until: vec![0; usize::from(cfg.cluster.workers) + 1],
            rl_service_ns: (q.rate_limit_service_cpu_us * 1e3).round() as u64,
            waypoint_cpu_ns,
            rng: meshsim_traces::rng::stream(seed, replication, "mesh/upstream-5xx"),
            pods: Vec::new(),
            live_pods_of: vec![0; functions],
            live_pods: 0,
            pending: Vec::new(),
            sizes,
            xds_policies: if mask == 0 {
                PolicySet::None
            } else {
                PolicySet::All
            },
            encode_ns_per_byte: enc,
            decode_ns_per_byte: dec,
            proxies: Vec::new(),
            activator_proxy: None,
            system_placed: false,
            seq: 0,
            batch: Batch::default(),
            debouncing: false,
            first_event: 0,
            last_event: 0,
            recomputing: false,
            fire_after_recompute: false,
            recompute_batch: Batch::default(),
            queue: VecDeque::new(),
            active: 0,
            jobs: Vec::new(),
            free_jobs: Vec::new(),
            admit_next: 0,
            cache: Vec::new(),
            transactions: 0,
            bytes: 0,
            payload: LogHistogram::new(),
            records: inputs.record_xds.then(Vec::new),
        })
    }

    /// The per-hop cost of the function pod's proxy (before stateful policies).
    pub fn pod_hop(&self) -> SidecarHop {
        self.pod_hop
    }

    /// CPU and added latency of one mTLS handshake (0 without the mTLS policy), ns.
    pub fn handshake(&self) -> (u64, u64) {
        (self.handshake_ns, self.handshake_latency_ns)
    }

    /// The per-hop cost of the activator's proxy, if it has one.
    pub fn activator_hop(&self) -> Option<SidecarHop> {
        self.activator_hop
    }

    fn pod(&mut self, pod: u32) -> &mut PodState {
        let i = pod as usize;
        if self.pods.len() <= i {
            self.pods.resize(i + 1, PodState::default());
        }
        &mut self.pods[i]
    }

    fn kind(&self) -> DataPlaneKind {
        self.profile.data_plane.kind
    }

    fn cp_kind(&self) -> ControlPlaneKind {
        self.profile.control_plane.kind
    }

    // ------------------------------------------------------------ data plane

    fn pod_decision(&mut self, ctx: &HopCtx) -> HopDecision {
        let Some(pod) = ctx.pod else {
            return HopDecision::Through(self.pod_hop);
        };
        if self.cb {
            // The calling proxy's connection pool for the revision's cluster (HTTP/1.1: one
            // request per connection): with every connection busy the request waits for one,
            // unless the pending queue is full too, and then it overflows (503 at once).
            let q = &self.profile.policy;
            if ctx.rev_in_flight >= q.cb_max_connections {
                if ctx.rev_pending >= q.cb_max_pending_requests {
                    return HopDecision::Reject {
                        hop: self.pod_hop,
                        reason: FailureReason::CircuitOpen,
                    };
                }
                return HopDecision::Pending;
            }
        }
        let now = ctx.now.0;
        let q = self.profile.policy.clone();
        let mut hop = self.pod_hop;
        if self.recompile_ns > 0 {
            // The node compiles the policy-chain module (shared by its functions: a function's
            // config is data) on its first sandboxed request and again after an idle release:
            // CPU on the request's path.
            let last = self
                .module_used
                .get_mut(usize::from(ctx.node))
                .and_then(|t| t.replace(now));
            if last.is_none_or(|t| now.saturating_sub(t) > self.module_release_ns) {
                hop.cpu_ns += self.recompile_ns;
            }
        }
        if self.waypoint_cpu_ns > 0 {
            let wp_node = self.waypoint_node(self.pods.get(pod as usize).map_or(0, |p| p.rev));
            self.pending.push(MeshAction::Cpu {
                node: wp_node,
                work_ns: self.waypoint_cpu_ns,
                category: CpuCategory::Sidecar,
                token: token(TOK_IGNORE, 0),
            });
        }
        // Connections to the pod grow with its concurrent requests.
        let per_conn = self.profile.data_plane.rss_kib_per_connection;
        let st = *self.pod(pod);
        if ctx.pod_in_flight + 1 > st.conns {
            self.pod(pod).conns += 1;
            if self.mtls {
                hop.cpu_ns += self.handshake_ns;
                hop.latency_ns += self.handshake_latency_ns;
            }
            if per_conn > 0.0 {
                self.pending.push(MeshAction::Memory {
                    node: ctx.node,
                    delta_mib: per_conn / 1024.0,
                });
            }
        }
        if self.cb && (st.ejected_until > now || ctx.rev_in_flight >= q.cb_max_requests) {
            return HopDecision::Reject {
                hop,
                reason: FailureReason::CircuitOpen,
            };
        }
        if self.rl {
            let f = ctx.function as usize;
            let window = q.rate_limit_window_ms * MS;
            let start = now / window * window;
            let w = &mut self.rl_window[f];
            if w.0 != start {
                *w = (start, 0);
            }
            w.1 += 1;
            let over = w.1 > q.rate_limit_requests;
            // The RPC: to the control-plane node's rate-limit service (or a node-local cache).
            let (node, rtt) = if q.rate_limit_node_local {
                (ctx.node, 0)
            } else {
                (0, 2 * self.hop_ns)
            };
            let busy = &mut self.rl_busy_until[usize::from(node)];
            let begin = (*busy).max(now + rtt / 2);
            *busy = begin + self.rl_service_ns;
            hop.latency_ns += (*busy - now - rtt / 2) + rtt;
            if self.rl_service_ns > 0 {
                self.pending.push(MeshAction::Cpu {
                    node,
                    work_ns: self.rl_service_ns,
                    category: CpuCategory::Sidecar,
                    token: token(TOK_IGNORE, 0),
                });
            }
            if over {
                return HopDecision::Reject {
                    hop,
                    reason: FailureReason::RateLimited,
                };
            }
        }
        if q.upstream_5xx_rate > 0.0 {
            let base = self.pod_hop;
            for attempt in 0..=self.retry_attempts {
                if attempt > 0 {
                    hop.cpu_ns += base.cpu_ns;
                    hop.latency_ns += base.latency_ns;
                    hop.background_cpu_ns += base.background_cpu_ns;
                }
                let failed = self.rng.random::<f64>() < q.upstream_5xx_rate;
                let cb = self.cb;
                let p = self.pod(pod);
                if !failed {
                    p.consecutive_5xx = 0;
                    return HopDecision::Through(hop);
                }
                p.consecutive_5xx += 1;
                if cb && p.consecutive_5xx >= q.cb_consecutive_5xx {
                    p.ejected_until = now + q.cb_ejection_ms * MS;
                    p.consecutive_5xx = 0;
                    return HopDecision::Reject {
                        hop,
                        reason: FailureReason::CircuitOpen,
                    };
                }
            }
            return HopDecision::Reject {
                hop,
                reason: FailureReason::RetriesExhausted,
            };
        }
        HopDecision::Through(hop)
    }

    fn namespace_of(&self, rev: u32) -> u64 {
        let per = self
            .sizes
            .as_ref()
            .map_or(10, |s| s.assumptions.services_per_namespace.max(1));
        u64::from(rev) / per
    }

    fn waypoint_node(&self, rev: u32) -> u16 {
        let workers = self.rl_busy_until.len() as u64 - 1;
        (1 + self.namespace_of(rev) % workers.max(1)) as u16
    }

    // ------------------------------------------------------------ control plane

    fn add_proxy(&mut self, ctx: &mut MeshCtx<'_>, p: Proxy) -> u32 {
        let id = self.proxies.len() as u32;
        self.proxies.push(p);
        let kib = self.profile.control_plane.rss_kib_per_proxy;
        if kib > 0.0 {
            ctx.act(MeshAction::Memory {
                node: 0,
                delta_mib: kib / 1024.0,
            });
        }
        id
    }

    fn new_proxy(kind: ProxyKind, node: u16, view: View, scope: Scope) -> Proxy {
        Proxy {
            kind,
            node,
            rev: None,
            pod: None,
            connected: false,
            view,
            scope,
            busy: false,
            queued: false,
            pending_revs: Vec::new(),
            pending_full: false,
            pending_seq: 0,
            synced_seq: 0,
        }
    }

    fn place_system(&mut self, ctx: &mut MeshCtx<'_>, kind: SystemPod, node: u16) {
        let dp = self.profile.data_plane.clone();
        if !self.system_placed {
            self.system_placed = true;
            if self.profile.control_plane.rss_mib > 0.0 {
                ctx.act(MeshAction::Memory {
                    node: 0,
                    delta_mib: self.profile.control_plane.rss_mib,
                });
            }
            if dp.kind == DataPlaneKind::Ambient {
                for n in 1..=ctx.workers {
                    if dp.l4_rss_mib > 0.0 {
                        ctx.act(MeshAction::Memory {
                            node: n,
                            delta_mib: dp.l4_rss_mib,
                        });
                    }
                    let id = self.add_proxy(
                        ctx,
                        Self::new_proxy(ProxyKind::NodeProxy, n, View::Sidecar, Scope::AllToAll),
                    );
                    self.connect(ctx, id);
                }
                let per = self
                    .sizes
                    .as_ref()
                    .map_or(10, |s| s.assumptions.services_per_namespace.max(1));
                let namespaces = self.functions.div_ceil(per);
                for ns in 0..namespaces {
                    let rev = (ns * per) as u32;
                    let n = self.waypoint_node(rev);
                    ctx.act(MeshAction::Memory {
                        node: n,
                        delta_mib: dp.rss_mib,
                    });
                    let mut p =
                        Self::new_proxy(ProxyKind::Waypoint, n, View::Sidecar, Scope::Scoped);
                    p.rev = Some(rev);
                    let id = self.add_proxy(ctx, p);
                    self.connect(ctx, id);
                }
            }
        }
        match kind {
            SystemPod::Gateway => {
                if self.cp_kind() == ControlPlaneKind::Istiod {
                    let scope = self.profile.control_plane.scope;
                    let id = self.add_proxy(
                        ctx,
                        Self::new_proxy(ProxyKind::Gateway, node, View::Gateway, scope),
                    );
                    self.connect(ctx, id);
                }
            }
            SystemPod::Activator => {
                if self.profile.activator_in_mesh() {
                    ctx.act(MeshAction::Memory {
                        node,
                        delta_mib: dp.rss_mib,
                    });
                    let id = self.add_proxy(
                        ctx,
                        Self::new_proxy(ProxyKind::Activator, node, View::Sidecar, Scope::AllToAll),
                    );
                    if self.activator_proxy.is_none() {
                        self.activator_proxy = Some(id);
                    }
                    self.connect(ctx, id);
                }
            }
        }
    }

    /// A proxy's stream is admitted: it asks for its state of the world.
    fn connect(&mut self, ctx: &mut MeshCtx<'_>, id: u32) {
        self.proxies[id as usize].connected = true;
        let p = &self.proxies[id as usize];
        let types = if p.kind == ProxyKind::NodeProxy {
            vec![XdsType::Eds]
        } else {
            XdsType::ALL.to_vec()
        };
        let job = Job {
            proxy: id,
            types,
            idx: 0,
            stage: Stage::Encode,
            initial: true,
            slot: false,
            seq: self.seq,
            eds_revs: Vec::new(),
            bytes: 0,
            clusters: 0,
            live: true,
        };
        self.start_job(ctx, job);
    }

    fn change(&mut self, ctx: &mut MeshCtx<'_>, rev: Option<u32>, full_proxy: Option<u32>) {
        if self.sizes.is_none() {
            return;
        }
        self.seq += 1;
        if let Some(r) = rev {
            self.batch.revs.push(r);
        }
        if let Some(p) = full_proxy {
            self.batch.full_proxies.push(p);
        }
        let now = ctx.now.0;
        let quiet = self.profile.control_plane.debounce_quiet_ms * MS;
        if quiet == 0 {
            self.fire(ctx);
            return;
        }
        self.last_event = now;
        if !self.debouncing {
            self.debouncing = true;
            self.first_event = now;
            ctx.act(MeshAction::Timer {
                delay_ns: quiet,
                token: token(TOK_DEBOUNCE, 0),
            });
        }
    }

    fn debounce_timer(&mut self, ctx: &mut MeshCtx<'_>) {
        let now = ctx.now.0;
        let cp = &self.profile.control_plane;
        let (quiet, max) = (cp.debounce_quiet_ms * MS, cp.debounce_max_ms * MS);
        if now >= self.last_event + quiet || now >= self.first_event + max {
            self.debouncing = false;
            if self.recomputing {
                self.fire_after_recompute = true;
            } else {
                self.fire(ctx);
            }
        } else {
            let at = (self.last_event + quiet).min(self.first_event + max);
            ctx.act(MeshAction::Timer {
                delay_ns: at - now,
                token: token(TOK_DEBOUNCE, 0),
            });
        }
    }

    fn fire(&mut self, ctx: &mut MeshCtx<'_>) {
        let mut b = std::mem::take(&mut self.batch);
        b.seq = self.seq;
        b.revs.sort_unstable();
        b.revs.dedup();
        b.full_proxies.sort_unstable();
        b.full_proxies.dedup();
        let per_service = self.profile.control_plane.push_context_us_per_service;
        if !b.full_proxies.is_empty() && per_service > 0.0 {
            self.recomputing = true;
            self.recompute_batch = b;
            ctx.act(MeshAction::Cpu {
                node: 0,
                work_ns: (per_service * 1e3 * self.functions as f64).round() as u64,
                category: CpuCategory::Xds,
                token: token(TOK_RECOMPUTE, 0),
            });
        } else {
            self.dispatch(ctx, b);
        }
    }

    fn sees(&self, p: &Proxy, rev: u32) -> bool {
        if !p.connected {
            return false;
        }
        if self.cp_kind() == ControlPlaneKind::OnDemand {
            return p.kind == ProxyKind::Activator;
        }
        match p.kind {
            ProxyKind::Activator | ProxyKind::NodeProxy => true,
            ProxyKind::Gateway => p.scope == Scope::AllToAll || p.scope == Scope::Scoped,
            ProxyKind::Waypoint => p
                .rev
                .is_some_and(|r| self.namespace_of(r) == self.namespace_of(rev)),
            ProxyKind::Sidecar => match p.scope {
                Scope::AllToAll => true,
                Scope::Scoped => p
                    .rev
                    .is_some_and(|r| self.namespace_of(r) == self.namespace_of(rev)),
                Scope::Minimal => p.rev == Some(rev),
                Scope::Fused => false,
            },
        }
    }

    fn dispatch(&mut self, ctx: &mut MeshCtx<'_>, b: Batch) {
        let seq = b.seq;
        for id in 0..self.proxies.len() as u32 {
            let revs: Vec<u32> = {
                let p = &self.proxies[id as usize];
                if !p.connected {
                    continue;
                }
                b.revs
                    .iter()
                    .copied()
                    .filter(|&r| self.sees(p, r))
                    .collect()
            };
            let full = b.full_proxies.binary_search(&id).is_ok();
            if revs.is_empty() && !full {
                continue;
            }
            let p = &mut self.proxies[id as usize];
            p.pending_revs.extend(revs);
            p.pending_full |= full;
            p.pending_seq = p.pending_seq.max(seq);
            if !p.busy && !p.queued {
                p.queued = true;
                self.queue.push_back(id);
            }
        }
        self.pump(ctx);
    }

    fn pump(&mut self, ctx: &mut MeshCtx<'_>) {
        let limit = self.profile.control_plane.push_concurrency;
        while self.active < limit {
            let Some(id) = self.queue.pop_front() else {
                break;
            };
            let p = &mut self.proxies[id as usize];
            p.queued = false;
            if !p.connected {
                p.pending_revs.clear();
                p.pending_full = false;
                continue;
            }
            let mut revs = std::mem::take(&mut p.pending_revs);
            revs.sort_unstable();
            revs.dedup();
            let full = std::mem::take(&mut p.pending_full);
            p.busy = true;
            let types = if full {
                XdsType::ALL.to_vec()
            } else {
                vec![XdsType::Eds]
            };
            self.active += 1;
            let job = Job {
                proxy: id,
                types,
                idx: 0,
                stage: Stage::Encode,
                initial: false,
                slot: true,
                seq: p.pending_seq,
                eds_revs: if full { Vec::new() } else { revs },
                bytes: 0,
                clusters: 0,
                live: true,
            };
            self.start_job(ctx, job);
        }
    }

    fn alloc_job(&mut self, job: Job) -> u32 {
        match self.free_jobs.pop() {
            Some(i) => {
                self.jobs[i as usize] = job;
                i
            }
            None => {
                self.jobs.push(job);
                (self.jobs.len() - 1) as u32
            }
        }
    }

    fn start_job(&mut self, ctx: &mut MeshCtx<'_>, job: Job) {
        let id = self.alloc_job(job);
        self.job_encode(ctx, id);
    }

    /// Size of the current response of a job, and its clusters (CDS).
    fn response(&self, job: &Job) -> (u64, u64) {
        let Some(sizes) = &self.sizes else {
            return (0, 0);
        };
        let p = &self.proxies[job.proxy as usize];
        let t = job.types[job.idx];
        let scope = if self.cp_kind() == ControlPlaneKind::OnDemand {
            Scope::Minimal
        } else {
            p.scope
        };
        if t == XdsType::Eds && !job.eds_revs.is_empty() {
            // Incremental: only the changed services' load assignments.
            let Some(sc) = sizes.scope_counts(scope, p.view, self.xds_policies) else {
                return (0, 0);
            };
            let Some(pr) = sizes.per_resource(p.view, self.xds_policies) else {
                return (0, 0);
            };
            let mut b = 0.0;
            for &r in &job.eds_revs {
                let pods = u64::from(self.live_pods_of.get(r as usize).copied().unwrap_or(0));
                let eps =
                    sc.endpoints.per_service.saturating_sub(PRIVATE_PORTS) + PRIVATE_PORTS * pods;
                b += pr.load_assignment.bytes * sc.load_assignments.per_service as f64
                    + pr.endpoint.bytes * eps as f64;
            }
            return (b.round() as u64, 0);
        }
        let k = self.functions.max(1);
        let extra = PRIVATE_PORTS as i64
            * (self.live_pods as i64 - (k * sizes.assumptions.revision_pods) as i64);
        let visible = sizes
            .scope_counts(scope, p.view, self.xds_policies)
            .map_or(k, |s| s.visible_services(k));
        let extra = extra * visible as i64 / k as i64;
        let Some(all) = sizes.sotw_bytes(scope, p.view, self.xds_policies, k, extra) else {
            return (0, 0);
        };
        let clusters = sizes
            .scope_counts(scope, p.view, self.xds_policies)
            .map_or(0, |s| s.clusters.fixed + s.clusters.per_service * visible);
        let i = XdsType::ALL.iter().position(|&x| x == t).unwrap_or(0);
        (all[i], if t == XdsType::Cds { clusters } else { 0 })
    }

    fn job_encode(&mut self, ctx: &mut MeshCtx<'_>, id: u32) {
        let job = &self.jobs[id as usize];
        let (bytes, clusters) = self.response(job);
        let p = &self.proxies[job.proxy as usize];
        let t = job.types[job.idx];
        let key = (
            t as u8,
            p.view as u8,
            match p.scope {
                Scope::Scoped => p.rev.map_or(u32::MAX, |r| self.namespace_of(r) as u32),
                Scope::Minimal | Scope::Fused => p.rev.unwrap_or(u32::MAX),
                Scope::AllToAll => u32::MAX,
            },
        );
        let version = if job.eds_revs.is_empty() {
            job.seq
        } else {
            // An incremental EDS is cached per push and changed set: approximate by the push.
            job.seq | (1 << 62)
        };
        let cached = t != XdsType::Lds && self.cache.iter().any(|&(k, v)| k == key && v == version);
        if !cached && t != XdsType::Lds {
            match self.cache.iter_mut().find(|(k, _)| *k == key) {
                Some(e) => e.1 = version,
                None => self.cache.push((key, version)),
            }
        }
        let job = &mut self.jobs[id as usize];
        job.bytes = bytes;
        job.clusters = clusters;
        job.stage = Stage::Encode;
        let work = if cached {
            0
        } else {
            (bytes as f64 * self.encode_ns_per_byte).round() as u64
        };
        if work == 0 {
            self.job_sent_start(ctx, id);
        } else {
            ctx.act(MeshAction::Cpu {
                node: 0,
                work_ns: work,
                category: CpuCategory::Xds,
                token: token(TOK_JOB_CPU, u64::from(id)),
            });
        }
    }

    fn record(&mut self, now: u64, proxy: u32, t: XdsType, ack: bool, bytes: u64) {
        self.transactions += 1;
        self.bytes += bytes;
        if !ack {
            self.payload.record(bytes);
        }
        if let Some(v) = &mut self.records {
            let p = &self.proxies[proxy as usize];
            v.push(XdsTransaction {
                time_ns: now,
                proxy,
                proxy_kind: p.kind,
                node: p.node,
                xds_type: t,
                ack,
                bytes,
            });
        }
    }

    fn job_sent_start(&mut self, ctx: &mut MeshCtx<'_>, id: u32) {
        let now = ctx.now.0;
        let job = &self.jobs[id as usize];
        let (proxy, t, bytes) = (job.proxy, job.types[job.idx], job.bytes);
        self.record(now, proxy, t, false, bytes);
        let gbps = self.profile.control_plane.bandwidth_gbps;
        let wire = (bytes as f64 * 8.0 / gbps).round() as u64;
        self.jobs[id as usize].stage = Stage::Send;
        ctx.act(MeshAction::Timer {
            delay_ns: self.hop_ns + wire,
            token: token(TOK_NET, u64::from(id)),
        });
    }

    fn job_net(&mut self, ctx: &mut MeshCtx<'_>, id: u32) {
        let job = &self.jobs[id as usize];
        match job.stage {
            Stage::Send => {
                // Arrived at the proxy: decode and apply.
                let last = job.idx + 1 == job.types.len();
                if job.slot && last {
                    self.jobs[id as usize].slot = false;
                    self.active -= 1;
                    self.pump(ctx);
                }
                let job = &self.jobs[id as usize];
                let node = self.proxies[job.proxy as usize].node;
                let work = (job.bytes as f64 * self.decode_ns_per_byte
                    + job.clusters as f64 * self.profile.control_plane.apply_us_per_cluster * 1e3)
                    .round() as u64;
                self.jobs[id as usize].stage = Stage::Decode;
                ctx.act(MeshAction::Cpu {
                    node,
                    work_ns: work.max(1),
                    category: CpuCategory::Xds,
                    token: token(TOK_JOB_CPU, u64::from(id)),
                });
            }
            // The next request of an initial state of the world reached the control plane.
            Stage::Decode => self.job_encode(ctx, id),
            Stage::Encode => {}
        }
    }

    fn job_decoded(&mut self, ctx: &mut MeshCtx<'_>, id: u32) {
        let now = ctx.now.0;
        let (proxy, t, initial, seq) = {
            let j = &self.jobs[id as usize];
            (j.proxy, j.types[j.idx], j.initial, j.seq)
        };
        let ack = self.profile.control_plane.ack_bytes;
        if self.proxies[proxy as usize].connected {
            self.record(now, proxy, t, true, ack);
        }
        let p = &mut self.proxies[proxy as usize];
        if t == XdsType::Eds {
            p.synced_seq = p.synced_seq.max(seq);
        }
        if initial
            && t == XdsType::Lds
            && let Some(pod) = p.pod
        {
            self.pod(pod).config_at = Some(now);
        }
        let job = &mut self.jobs[id as usize];
        job.idx += 1;
        if job.idx < job.types.len() {
            if initial {
                // The ACK carries the next type's request: one network hop to istiod.
                job.stage = Stage::Decode;
                ctx.act(MeshAction::Timer {
                    delay_ns: self.hop_ns,
                    token: token(TOK_NET, u64::from(id)),
                });
            } else {
                self.job_encode(ctx, id);
            }
            return;
        }
        // Done.
        let slot = job.slot;
        job.live = false;
        self.free_jobs.push(id);
        if slot {
            self.active -= 1;
        }
        let p = &mut self.proxies[proxy as usize];
        if !initial {
            p.busy = false;
            if p.connected && (!p.pending_revs.is_empty() || p.pending_full) && !p.queued {
                p.queued = true;
                self.queue.push_back(proxy);
            }
        }
        self.pump(ctx);
    }

    fn job_cpu_done(&mut self, ctx: &mut MeshCtx<'_>, id: u32) {
        match self.jobs[id as usize].stage {
            Stage::Encode => self.job_sent_start(ctx, id),
            Stage::Decode => self.job_decoded(ctx, id),
            Stage::Send => {}
        }
    }
}

impl SidecarModel for MeshModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn injected_containers(&self) -> &[ContainerSpec] {
        &self.containers
    }

    fn pod_ips_hidden(&self) -> bool {
        self.profile.pod_ips_hidden_from_activator()
    }

    fn activator_proxy_balances(&self) -> bool {
        self.activator_hop.is_some()
    }

    fn hop(&mut self, ctx: &HopCtx) -> HopDecision {
        match (self.kind(), ctx.point) {
            (DataPlaneKind::None, _) | (_, HopPoint::GatewayOut) => HopDecision::Pass,
            (_, HopPoint::Activator) => match self.activator_hop {
                Some(h) => HopDecision::Through(h),
                None => HopDecision::Pass,
            },
            (_, HopPoint::Pod) => self.pod_decision(ctx),
        }
    }

    fn container_ready(&mut self, now: SimTime, pod: u32) -> Result<(), u64> {
        let (delay, period) = (
            self.profile.pod.probe_initial_delay_ms * MS,
            self.profile.pod.probe_period_ms * MS,
        );
        let now = now.0;
        let st = *self.pod(pod);
        let start = st.kubelet_at + delay;
        // First probe instant at or after `t`.
        let probe_at = |t: u64| start + t.saturating_sub(start).div_ceil(period) * period;
        match st.config_at {
            Some(c) => {
                let ready = probe_at(c);
                if now >= ready {
                    Ok(())
                } else {
                    Err(ready - now)
                }
            }
            None => Err((probe_at(now + 1) - now).max(1)),
        }
    }

    fn on_cluster_event(&mut self, ctx: &mut MeshCtx<'_>, ev: ClusterEvent) {
        if self.kind() == DataPlaneKind::None {
            return;
        }
        match ev {
            ClusterEvent::SystemPodPlaced { kind, node } => self.place_system(ctx, kind, node),
            ClusterEvent::PodScheduled {
                pod,
                revision,
                node,
            } => {
                let kubelet_at = ctx.now.0 + self.watch_ns;
                let st = self.pod(pod);
                st.kubelet_at = kubelet_at;
                st.node = node;
                st.rev = revision;
                st.live = true;
                if let Some(n) = self.live_pods_of.get_mut(revision as usize) {
                    *n += 1;
                }
                self.live_pods += 1;
                self.change(ctx, Some(revision), None);
            }
            ClusterEvent::SidecarStarted {
                pod,
                revision,
                node,
            } => {
                let now = ctx.now.0;
                self.pod(pod).sidecar_start = Some(now);
                if self.profile.control_plane.scope == Scope::Fused || self.sizes.is_none() {
                    self.pod(pod).config_at = Some(now);
                    return;
                }
                let scope = self.profile.control_plane.scope;
                let mut p = Self::new_proxy(ProxyKind::Sidecar, node, View::Sidecar, scope);
                p.rev = Some(revision);
                p.pod = Some(pod);
                let id = self.add_proxy(ctx, p);
                self.pod(pod).proxy = Some(id);
                let gap = (1e9 / self.profile.control_plane.stream_admission_per_s).round() as u64;
                let at = self
                    .admit_next
                    .max(now + self.profile.pod.proxy_bootstrap_ms * MS);
                self.admit_next = at + gap;
                ctx.act(MeshAction::Timer {
                    delay_ns: at - now,
                    token: token(TOK_ADMIT, u64::from(id)),
                });
            }
            ClusterEvent::EndpointReady { pod, revision } => {
                let seq = self.seq + 1;
                self.pod(pod).ready_seq = seq;
                let full = if self.profile.control_plane.full_push_on_ready {
                    self.pods[pod as usize].proxy
                } else {
                    None
                };
                self.change(ctx, Some(revision), full);
            }
            ClusterEvent::EndpointRemoved { revision, .. } => {
                self.change(ctx, Some(revision), None);
            }
            ClusterEvent::PodDeleted { pod, revision } => {
                let st = *self.pod(pod);
                if st.live {
                    self.pod(pod).live = false;
                    if let Some(n) = self.live_pods_of.get_mut(revision as usize) {
                        *n = n.saturating_sub(1);
                    }
                    self.live_pods = self.live_pods.saturating_sub(1);
                }
                let per_conn = self.profile.data_plane.rss_kib_per_connection;
                if st.conns > 0 && per_conn > 0.0 {
                    ctx.act(MeshAction::Memory {
                        node: st.node,
                        delta_mib: -(f64::from(st.conns) * per_conn / 1024.0),
                    });
                }
                if let Some(id) = st.proxy {
                    self.proxies[id as usize].connected = false;
                    let kib = self.profile.control_plane.rss_kib_per_proxy;
                    if kib > 0.0 {
                        ctx.act(MeshAction::Memory {
                            node: 0,
                            delta_mib: -kib / 1024.0,
                        });
                    }
                }
                self.change(ctx, Some(revision), None);
            }
        }
    }

    fn on_timer(&mut self, ctx: &mut MeshCtx<'_>, tok: u64) {
        let (kind, id) = (tok >> 56, tok & ((1 << 56) - 1));
        match kind {
            TOK_DEBOUNCE => self.debounce_timer(ctx),
            TOK_ADMIT => {
                let id = id as u32;
                let pod = self.proxies[id as usize].pod;
                if pod.is_some_and(|p| self.pods[p as usize].live) {
                    self.connect(ctx, id);
                }
            }
            TOK_NET => self.job_net(ctx, id as u32),
            _ => {}
        }
    }

    fn on_cpu_done(&mut self, ctx: &mut MeshCtx<'_>, tok: u64) {
        let (kind, id) = (tok >> 56, tok & ((1 << 56) - 1));
        match kind {
            TOK_JOB_CPU => self.job_cpu_done(ctx, id as u32),
            TOK_RECOMPUTE => {
                self.recomputing = false;
                let b = std::mem::take(&mut self.recompute_batch);
                self.dispatch(ctx, b);
                if self.fire_after_recompute {
                    self.fire_after_recompute = false;
                    self.fire(ctx);
                }
            }
            _ => {}
        }
    }

    fn endpoint_visible(&mut self, _now: SimTime, pod: u32) -> bool {
        match self.activator_proxy {
            Some(a) if self.sizes.is_some() => {
                let ready = self.pods.get(pod as usize).map_or(0, |p| p.ready_seq);
                self.proxies[a as usize].synced_seq >= ready
            }
            _ => true,
        }
    }

    fn xds(&self) -> XdsSummary {
        let h = &self.payload;
        XdsSummary {
            transactions: self.transactions,
            bytes: self.bytes,
            payload_bytes: if h.count() == 0 {
                PayloadBytes::default()
            } else {
                PayloadBytes {
                    p50: h.quantile(0.5),
                    p80: h.quantile(0.8),
                    p99: h.quantile(0.99),
                    max: h.max(),
                }
            },
        }
    }

    fn take_actions(&mut self, out: &mut Vec<MeshAction>) {
        out.append(&mut self.pending);
    }

    fn api_write_extra_ns(&self, write: ApiWrite) -> u64 {
        if write == ApiWrite::PodCreate {
            self.profile.pod.injection_webhook_ms * MS
        } else {
            0
        }
    }

    fn take_xds_transactions(&mut self) -> Option<Vec<XdsTransaction>> {
        self.records.take()
    }
}
