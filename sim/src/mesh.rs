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
//!   the gateway), [`SidecarModel::hop`] may add a sidecar hop: CPU on that node (category
//!   `sidecar`, under the node's processor sharing) and latency (an extra network stack
//!   traversal plus per-policy latency);
//! - **control plane**: [`SidecarModel::on_cluster_event`] is told of every endpoint and pod
//!   change (the inputs of istiod's debounce and pushes); [`SidecarModel::endpoint_visible`]
//!   gates the activator's probe of a new pod (in a mesh the probe goes through the activator's
//!   sidecar, which needs the EDS update first);
//! - **outputs**: [`SidecarModel::xds`] fills the summary's `xds` object.

use crate::metrics::XdsSummary;
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
    /// Added latency (network traversal, policy RPCs), ns.
    pub latency_ns: u64,
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
    /// The pod is not ready until [`SidecarModel::container_ready`] returns true for it.
    pub ready_gate: bool,
}

/// Kubernetes changes a mesh control plane watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterEvent {
    /// A function pod was bound to a worker (its endpoint appears, not ready).
    PodScheduled { pod: u32, revision: u32, node: u16 },
    /// The pod's endpoint became ready.
    EndpointReady { pod: u32, revision: u32 },
    /// The pod's endpoint was removed (scale-down).
    EndpointRemoved { pod: u32, revision: u32 },
    /// The pod was deleted.
    PodDeleted { pod: u32, revision: u32 },
}

/// The mesh decision point (see the module docs).
pub trait SidecarModel: fmt::Debug {
    /// Profile name (`none`, `istio`, ...).
    fn name(&self) -> &str;
    /// Containers injected into every function pod, in start order.
    fn injected_containers(&self) -> &[ContainerSpec];
    /// A sidecar hop at `point` on `node`, or `None`.
    fn hop(&mut self, point: HopPoint, node: u16) -> Option<SidecarHop>;
    /// Whether the gated container of `pod` is ready at `now`; when not, the engine re-checks
    /// after `retry_ns` (returned in `Err`).
    fn container_ready(&mut self, now: SimTime, pod: u32) -> Result<(), u64>;
    /// A Kubernetes change happened.
    fn on_cluster_event(&mut self, now: SimTime, ev: ClusterEvent);
    /// Whether the activator can reach `pod` (probe through its sidecar) at `now`.
    fn endpoint_visible(&mut self, now: SimTime, pod: u32) -> bool;
    /// xDS traffic so far.
    fn xds(&self) -> XdsSummary;
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
    fn hop(&mut self, _: HopPoint, _: u16) -> Option<SidecarHop> {
        None
    }
    fn container_ready(&mut self, _: SimTime, _: u32) -> Result<(), u64> {
        Ok(())
    }
    fn on_cluster_event(&mut self, _: SimTime, _: ClusterEvent) {}
    fn endpoint_visible(&mut self, _: SimTime, _: u32) -> bool {
        true
    }
    fn xds(&self) -> XdsSummary {
        XdsSummary::default()
    }
}
