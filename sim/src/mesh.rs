//! The hook through which a service mesh (issue 5) enters the simulation. Without a mesh,
//! [`NoMesh`] is used: no injected containers, no sidecar hops, endpoints visible at once,
//! zero xDS traffic.
//!
//! Where the engine asks the [`SidecarModel`]:
//! - **pod pipeline**: [`SidecarModel::injected_containers`] are started, in order, after the
//!   sandbox and before the user container and the queue-proxy (an init container such as
//!   istio-init; a sidecar such as Envoy), each with its start time, placement requests,
//!   resident memory and extra control-plane writes; a container with `ready_gate` holds the
//!   pod's readiness until [`SidecarModel::container_ready`] says it is ready (a sidecar
//!   waiting for its initial xDS config);
//! - **request path**: before a request enters the activator or the pod (and when it leaves
//!   the gateway), [`SidecarModel::hop`] sees a [`HopCtx`] (point, node, function, target pod
//!   and its in-flight requests) and decides a [`HopDecision`]: pass, a sidecar hop (CPU on
//!   that node in category `sidecar`, under the node's processor sharing, then latency: an
//!   extra network stack traversal plus per-policy latency), or a rejection after the hop's
//!   work (rate limit, circuit breaker, authz: the request fails with that reason);
//!   [`SidecarModel::on_request_finished`] closes the loop (outstanding requests per pod,
//!   outlier detection);
//! - **control plane**: [`SidecarModel::on_cluster_event`] is told where the gateway and
//!   activator replicas run (at time 0) and of every endpoint and pod change (the inputs of
//!   istiod's debounce and pushes). Through [`MeshCtx`] the model asks
//!   the engine for timers ([`MeshAction::Timer`], e.g. the 100 ms debounce) and CPU work on
//!   any node ([`MeshAction::Cpu`], e.g. encoding on the control-plane node, category `xds`, and
//!   decoding on a receiver's node); the engine calls back [`SidecarModel::on_timer`] and
//!   [`SidecarModel::on_cpu_done`] with the model's token. [`SidecarModel::endpoint_visible`]
//!   gates the activator's probe of a new pod (in a mesh the probe goes through the activator's
//!   sidecar, which needs the EDS update first);
//! - **outputs**: [`SidecarModel::xds`] fills the summary's `xds` object.

use crate::cpu::CpuCategory;
use crate::metrics::{FailureReason, XdsSummary};
use crate::time::SimTime;
use std::fmt;

/// Where on the request path a sidecar hop can be inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopPoint {
    /// Leaving the ingress gateway (the gateway's own Envoy: mTLS origination, routing).
    GatewayOut,
    /// Entering the activator (its sidecar).
    Activator,
    /// Entering the function pod (its sidecar, before the queue-proxy).
    Pod,
}

/// The cost of one sidecar hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SidecarHop {
    /// CPU work on the hop's node, ns of one uncontended core.
    pub cpu_ns: u64,
    /// Added latency (network traversals, policy RPCs), ns, for the request and its response
    /// together: the engine adds it once, on the way in.
    pub latency_ns: u64,
    /// CPU work the proxy spends per request off the request's critical path (stats, telemetry,
    /// connection bookkeeping), ns of one uncontended core: charged to the hop's node under its
    /// processor sharing, in category `sidecar`, without delaying the request.
    pub background_cpu_ns: u64,
}

/// What the mesh sees of a request at a hop point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HopCtx {
    pub now: SimTime,
    pub point: HopPoint,
    /// Node of the component the request enters (gateway, activator or pod).
    pub node: u16,
    /// Function (= revision) of the request.
    pub function: u32,
    /// The target pod ([`HopPoint::Pod`] only).
    pub pod: Option<u32>,
    /// Requests the target pod already holds ([`HopPoint::Pod`] only).
    pub pod_in_flight: u32,
    /// Requests the revision's pods already hold, all together: what Envoy's circuit breaker
    /// counts against `max_requests` for the upstream cluster ([`HopPoint::Pod`] only).
    pub rev_in_flight: u32,
    /// Requests waiting for a connection to the revision's pods ([`HopDecision::Pending`]).
    pub rev_pending: u32,
}

/// What happens to a request at a hop point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopDecision {
    /// No sidecar here.
    Pass,
    /// Through a sidecar: its CPU, then its latency.
    Through(SidecarHop),
    /// The sidecar does its work, then refuses the request.
    Reject {
        hop: SidecarHop,
        reason: FailureReason,
    },
    /// [`HopPoint::Pod`] only: the calling proxy has no free connection to the revision's pods
    /// (its circuit breaker's connection limit). The request waits, in order, until one of the
    /// revision's requests is answered, and the hop is then decided again. Elsewhere it counts
    /// as [`HopDecision::Pass`].
    Pending,
}

/// What kind of container the mesh injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    /// Runs to completion before the next container starts (e.g. istio-init).
    Init,
    /// Keeps running beside the user container (e.g. Envoy, linkerd-proxy).
    Sidecar,
}

/// A container the mesh adds to every function pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerSpec {
    pub kind: ContainerKind,
    /// Create + start time, ns (paper: init 95 ms, Envoy 81 ms).
    pub start_ns: u64,
    /// Extra control-plane writes it causes (status updates), queued asynchronously.
    pub api_writes: u32,
    pub cpu_request_millicores: u32,
    pub memory_request_mib: u32,
    /// Resident memory while the pod lives (0 for init containers).
    pub rss_mib: u32,
    /// The pod is not ready until [`SidecarModel::container_ready`] returns `Ok` for it.
    pub ready_gate: bool,
}

/// Knative's data-plane components (they carry sidecars or are proxies themselves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemPod {
    Gateway,
    Activator,
}

/// Kubernetes changes a mesh control plane watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterEvent {
    /// A gateway or activator replica was placed on `node` (at time 0, before any request).
    SystemPodPlaced { kind: SystemPod, node: u16 },
    /// A function pod was bound to a worker (its endpoint appears, not ready).
    PodScheduled { pod: u32, revision: u32, node: u16 },
    /// The pod's endpoint became ready.
    EndpointReady { pod: u32, revision: u32 },
    /// The pod's endpoint was removed (scale-down).
    EndpointRemoved { pod: u32, revision: u32 },
    /// The pod was deleted.
    PodDeleted { pod: u32, revision: u32 },
    /// An injected sidecar container of the pod has started (its proxy opens its xDS stream).
    SidecarStarted { pod: u32, revision: u32, node: u16 },
}

/// The xDS resource type of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdsType {
    Cds,
    Eds,
    Lds,
    Rds,
}

impl XdsType {
    pub const ALL: [XdsType; 4] = [XdsType::Cds, XdsType::Eds, XdsType::Lds, XdsType::Rds];

    pub fn as_str(self) -> &'static str {
        match self {
            XdsType::Cds => "cds",
            XdsType::Eds => "eds",
            XdsType::Lds => "lds",
            XdsType::Rds => "rds",
        }
    }
}

/// What kind of proxy received (or acknowledged) an xDS transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyKind {
    /// The ingress gateway.
    Gateway,
    /// The activator's sidecar.
    Activator,
    /// A function pod's sidecar.
    Sidecar,
    /// A per-node L4 proxy (ambient ztunnel).
    NodeProxy,
    /// A per-namespace L7 waypoint (ambient).
    Waypoint,
}

/// One xDS transaction: a response from the control plane or a proxy's ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct XdsTransaction {
    /// Simulated time it was sent, ns.
    pub time_ns: u64,
    /// Receiving (for an ACK: sending) proxy's id, unique within the run.
    pub proxy: u32,
    pub proxy_kind: ProxyKind,
    /// Node of that proxy.
    pub node: u16,
    pub xds_type: XdsType,
    /// `false` for a response (control plane -> proxy), `true` for an ACK.
    pub ack: bool,
    /// Encoded bytes on the wire.
    pub bytes: u64,
}

/// Work the mesh model asks the engine to do for it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MeshAction {
    /// Call [`SidecarModel::on_timer`] with `token` after `delay_ns`.
    Timer { delay_ns: u64, token: u64 },
    /// Run `work_ns` of CPU on `node` (0: the control-plane node) under its processor sharing,
    /// reported in `category`; then call [`SidecarModel::on_cpu_done`] with `token`.
    Cpu {
        node: u16,
        work_ns: u64,
        category: CpuCategory,
        token: u64,
    },
    /// Change the memory in use on `node` by `delta_mib` (per-connection buffers, per-node
    /// proxies, istiod's push context, ...).
    Memory { node: u16, delta_mib: f64 },
}

/// The engine's side of a mesh callback.
#[derive(Debug)]
pub struct MeshCtx<'a> {
    pub now: SimTime,
    /// Workers are nodes `1..=workers`; node 0 is the control plane.
    pub workers: u16,
    actions: &'a mut Vec<MeshAction>,
}

impl<'a> MeshCtx<'a> {
    pub fn new(now: SimTime, workers: u16, actions: &'a mut Vec<MeshAction>) -> Self {
        Self {
            now,
            workers,
            actions,
        }
    }

    /// Asks the engine for a timer or for CPU work.
    pub fn act(&mut self, a: MeshAction) {
        self.actions.push(a);
    }
}

/// The mesh decision point (see the module docs).
pub trait SidecarModel: fmt::Debug {
    /// Profile name (`none`, `istio`, ...).
    fn name(&self) -> &str;
    /// Containers injected into every function pod, in start order.
    fn injected_containers(&self) -> &[ContainerSpec];
    /// What happens to a request at a hop point.
    fn hop(&mut self, ctx: &HopCtx) -> HopDecision;
    /// A request finished (answered or failed); `pod` is where it was sent, if anywhere.
    fn on_request_finished(
        &mut self,
        _now: SimTime,
        _function: u32,
        _pod: Option<u32>,
        _failure: Option<FailureReason>,
    ) {
    }
    /// Whether the gated container of `pod` is ready at `now`; when not, the engine re-checks
    /// after the returned `Err(retry_ns)`.
    fn container_ready(&mut self, now: SimTime, pod: u32) -> Result<(), u64>;
    /// A Kubernetes change happened.
    fn on_cluster_event(&mut self, ctx: &mut MeshCtx<'_>, ev: ClusterEvent);
    /// A timer asked for with [`MeshAction::Timer`] fired.
    fn on_timer(&mut self, ctx: &mut MeshCtx<'_>, token: u64);
    /// CPU work asked for with [`MeshAction::Cpu`] completed.
    fn on_cpu_done(&mut self, ctx: &mut MeshCtx<'_>, token: u64);
    /// Whether the activator can reach `pod` (probe through its sidecar) at `now`.
    fn endpoint_visible(&mut self, now: SimTime, pod: u32) -> bool;
    /// Whether the activator cannot reach pods by their IPs (so Knative's `auto` mesh
    /// compatibility mode balances through the cluster IP).
    fn pod_ips_hidden(&self) -> bool {
        false
    }
    /// Whether the activator's own proxy balances what it sends to a cluster IP (least request,
    /// two random choices); otherwise kube-proxy does (uniform random).
    fn activator_proxy_balances(&self) -> bool {
        false
    }
    /// xDS traffic so far.
    fn xds(&self) -> XdsSummary;
    /// Actions the model queued outside a [`MeshCtx`] callback (during [`SidecarModel::hop`] or
    /// [`SidecarModel::on_request_finished`]); the engine drains them right after those calls.
    fn take_actions(&mut self, _out: &mut Vec<MeshAction>) {}
    /// Extra control-plane service time of one API write (e.g. an admission webhook on pod
    /// creation), ns.
    fn api_write_extra_ns(&self, _write: crate::kubernetes::ApiWrite) -> u64 {
        0
    }
    /// The per-transaction xDS records, when the model keeps them (called once, at the end).
    fn take_xds_transactions(&mut self) -> Option<Vec<XdsTransaction>> {
        None
    }
}

/// No mesh.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMesh;

impl SidecarModel for NoMesh {
    fn name(&self) -> &str {
        "none"
    }
    fn injected_containers(&self) -> &[ContainerSpec] {
        &[]
    }
    fn hop(&mut self, _: &HopCtx) -> HopDecision {
        HopDecision::Pass
    }
    fn container_ready(&mut self, _: SimTime, _: u32) -> Result<(), u64> {
        Ok(())
    }
    fn on_cluster_event(&mut self, _: &mut MeshCtx<'_>, _: ClusterEvent) {}
    fn on_timer(&mut self, _: &mut MeshCtx<'_>, _: u64) {}
    fn on_cpu_done(&mut self, _: &mut MeshCtx<'_>, _: u64) {}
    fn endpoint_visible(&mut self, _: SimTime, _: u32) -> bool {
        true
    }
    fn xds(&self) -> XdsSummary {
        XdsSummary::default()
    }
}
