//! Kubernetes: the control plane as a throughput-limited FIFO of object writes, the scheduler
//! behind a trait, and the explicit lifecycle of a pod start.
//!
//! # Control plane
//! The API server, etcd, the controllers and the scheduler are one FIFO server that commits
//! `kubernetes.api_writes_per_s` object writes per second ([`ControlPlane`]). Each write costs
//! `kubernetes.api_write_cpu_us` of CPU on the control-plane node, spread over its service
//! interval and reported in the `control_plane` category. A component that waits for a write
//! acts `kubernetes.watch_delay_ms` after the commit (informer watch + work queue).
//!
//! # Writes of one cold start ([`ApiWrite`])
//! A revision scaled from 0 to 1 performs 10 writes, 7 of them on the request's critical path
//! (marked *): the autoscaler's PodAutoscaler update*, the Deployment's replicas*, the
//! ReplicaSet's replicas*, the Pod*, its Binding*, the kubelet's Running status (IP), the
//! kubelet's Ready status*, the EndpointSlice*, the Endpoints, and the ReplicaSet status.
//! Hence the cold-start throughput limit is `api_writes_per_s / 10` (see the fit in
//! `meshsim_models::KubernetesConfig::api_writes_per_s`). Scaling a revision down writes the
//! PodAutoscaler, Deployment and ReplicaSet (3) and per pod: the deletion, the EndpointSlice and
//! the Endpoints (3). A mesh adds writes per injected container (issue 5) through
//! [`crate::mesh::ContainerSpec::api_writes`].
//!
//! # Pod start pipeline ([`PodStep`])
//! create write -> scheduling -> binding write -> kubelet: sandbox create ->
//! containers started one after another (mesh init/sidecar containers first, then the user
//! container and the queue-proxy) -> readiness probing -> Ready status write -> endpoints
//! update -> the activator sees the endpoint and probes the pod -> routable.

use std::collections::VecDeque;
use std::fmt;

/// One Kubernetes object write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ApiWrite {
    PodAutoscalerStatus,
    DeploymentScale,
    ReplicaSetScale,
    PodCreate,
    PodBinding,
    PodStatusRunning,
    PodStatusReady,
    EndpointSlice,
    Endpoints,
    ReplicaSetStatus,
    PodDelete,
    /// A write made for a container the mesh injected (status update, injection webhook).
    MeshContainer,
}

/// Who waits for a write's commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOwner {
    /// A pod's pipeline continues when the write commits.
    Pod(u32),
    /// A revision's scale operation continues.
    Revision(u32),
    /// Nobody waits (status updates, deletions): it only uses capacity.
    Nobody,
}

/// A queued write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteRequest {
    pub write: ApiWrite,
    pub owner: WriteOwner,
}

/// The control plane's write queue.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    /// Service time of one write, ns.
    pub service_ns: u64,
    /// CPU per write, core-ns.
    pub cpu_ns_per_write: u64,
    queue: VecDeque<WriteRequest>,
    busy: bool,
    /// Writes committed so far.
    pub committed: u64,
}

impl ControlPlane {
    pub fn new(writes_per_s: f64, cpu_us_per_write: u64) -> Self {
        Self {
            service_ns: ((1e9 / writes_per_s).round() as u64).max(1),
            cpu_ns_per_write: cpu_us_per_write * 1_000,
            queue: VecDeque::new(),
            busy: false,
            committed: 0,
        }
    }

    /// Queues a write; returns true when the server was idle, i.e. the caller must schedule
    /// its completion `service_ns` from now.
    pub fn submit(&mut self, w: WriteRequest) -> bool {
        self.queue.push_back(w);
        if self.busy {
            false
        } else {
            self.busy = true;
            true
        }
    }

    /// The head write committed: returns it, and whether another write started service.
    pub fn commit(&mut self) -> (WriteRequest, bool) {
        let w = self.queue.pop_front().expect("a write was in service");
        self.committed += 1;
        self.busy = !self.queue.is_empty();
        (w, self.busy)
    }

    /// The write in service (or next), if any.
    pub fn head(&self) -> Option<&WriteRequest> {
        self.queue.front()
    }

    /// Writes waiting or in service.
    pub fn backlog(&self) -> usize {
        self.queue.len()
    }
}

/// Resources a pod requests (placement) .
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodResources {
    pub cpu_millicores: u64,
    pub memory_mib: u64,
}

/// A worker's capacity and what is allocated on it (by requests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeAlloc {
    pub cpu_capacity_millicores: u64,
    pub cpu_allocated_millicores: u64,
    pub memory_capacity_mib: u64,
    pub memory_allocated_mib: u64,
}

impl NodeAlloc {
    pub fn fits(&self, r: &PodResources) -> bool {
        self.cpu_allocated_millicores + r.cpu_millicores <= self.cpu_capacity_millicores
            && self.memory_allocated_mib + r.memory_mib <= self.memory_capacity_mib
    }

    /// Mean free fraction of CPU and memory after placing `r` (kube-scheduler's
    /// `LeastAllocated` score, equal weights).
    pub fn free_score(&self, r: &PodResources) -> f64 {
        let cpu = 1.0
            - (self.cpu_allocated_millicores + r.cpu_millicores) as f64
                / self.cpu_capacity_millicores.max(1) as f64;
        let mem = 1.0
            - (self.memory_allocated_mib + r.memory_mib) as f64
                / self.memory_capacity_mib.max(1) as f64;
        (cpu + mem) / 2.0
    }
}

/// Where a pod goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Index into the workers slice.
    Node(u16),
    /// No worker has room; retry after a back-off.
    Unschedulable,
}

/// The scheduler's decision point.
pub trait Scheduler: fmt::Debug {
    fn place(&mut self, pod: &PodResources, workers: &[NodeAlloc]) -> Placement;
}

/// kube-scheduler's default: the feasible worker with the highest free score; ties go to the
/// lowest index.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeastAllocated;

impl Scheduler for LeastAllocated {
    fn place(&mut self, pod: &PodResources, workers: &[NodeAlloc]) -> Placement {
        best(pod, workers, |s| s)
    }
}

/// Bin packing: the feasible worker with the lowest free score; ties go to the lowest index.
#[derive(Debug, Clone, Copy, Default)]
pub struct MostAllocated;

impl Scheduler for MostAllocated {
    fn place(&mut self, pod: &PodResources, workers: &[NodeAlloc]) -> Placement {
        best(pod, workers, |s| -s)
    }
}

fn best(pod: &PodResources, workers: &[NodeAlloc], key: impl Fn(f64) -> f64) -> Placement {
    let mut found: Option<(u16, f64)> = None;
    for (i, n) in workers.iter().enumerate() {
        if !n.fits(pod) {
            continue;
        }
        let s = key(n.free_score(pod));
        if found.is_none_or(|(_, b)| s > b) {
            found = Some((i as u16, s));
        }
    }
    found.map_or(Placement::Unschedulable, |(i, _)| Placement::Node(i))
}

/// The scheduler selected by the config.
pub fn scheduler_for(kind: meshsim_models::SchedulerKind) -> Box<dyn Scheduler> {
    match kind {
        meshsim_models::SchedulerKind::LeastAllocated => Box::new(LeastAllocated),
        meshsim_models::SchedulerKind::MostAllocated => Box::new(MostAllocated),
    }
}

/// Where a pod is in its life. Steps named `*Write` wait for a control-plane commit, `Watch*`
/// for the watch delay of the component that acts next, the others for a node-side timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodStep {
    /// The ReplicaSet controller's Pod create is queued.
    CreateWrite,
    /// The scheduler is about to see the pod.
    WatchSchedule,
    /// No worker had room; waiting for the back-off.
    Unschedulable,
    /// The Binding is queued.
    BindingWrite,
    /// The kubelet is about to see its new pod.
    WatchKubelet,
    /// The sandbox (pause container, network namespace, IP) is being created.
    Sandbox,
    /// Container `i` of the pod's container list is being created and started (after an init
    /// container, first waiting for the node's next PLEG relist to see it exit:
    /// `kubernetes.pod_start.pleg_relist_period_ms`).
    Container(u8),
    /// Every container runs; the readiness probe waits for the user container.
    Probing,
    /// The kubelet's Ready status is queued.
    ReadyWrite,
    /// The endpoints controllers are about to see the Ready pod.
    WatchEndpoints,
    /// The EndpointSlice update is queued.
    EndpointsWrite,
    /// The activator's informer is about to see the endpoint.
    WatchActivator,
    /// The activator probes the pod (retrying every probe period until it answers).
    ActivatorProbe,
    /// Receives requests.
    Routable,
    /// Removed from the endpoints; draining in-flight requests.
    Terminating,
    /// Deleted; resources released.
    Gone,
}

impl PodStep {
    /// Created but not Ready yet: the steps up to the kubelet's Ready status write, the ones a
    /// ReplicaSet deletes before Ready pods (`Unschedulable` is handled on its own).
    pub fn before_ready(self) -> bool {
        matches!(
            self,
            PodStep::CreateWrite
                | PodStep::WatchSchedule
                | PodStep::BindingWrite
                | PodStep::WatchKubelet
                | PodStep::Sandbox
                | PodStep::Container(_)
                | PodStep::Probing
                | PodStep::ReadyWrite
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(cpu: u64, mem: u64) -> NodeAlloc {
        NodeAlloc {
            cpu_capacity_millicores: 1000,
            cpu_allocated_millicores: cpu,
            memory_capacity_mib: 1000,
            memory_allocated_mib: mem,
        }
    }

    #[test]
    fn least_and_most_allocated() {
        let ws = [node(500, 500), node(100, 100), node(900, 900)];
        let pod = PodResources {
            cpu_millicores: 100,
            memory_mib: 100,
        };
        assert_eq!(LeastAllocated.place(&pod, &ws), Placement::Node(1));
        // Node 2 has exactly room for it: 1000/1000 after placement.
        assert_eq!(MostAllocated.place(&pod, &ws), Placement::Node(2));
        let big = PodResources {
            cpu_millicores: 950,
            memory_mib: 10,
        };
        assert_eq!(LeastAllocated.place(&big, &ws), Placement::Unschedulable);
    }

    #[test]
    fn fifo_control_plane() {
        let mut cp = ControlPlane::new(25.0, 4_000);
        assert_eq!(cp.service_ns, 40_000_000);
        let w = |o| WriteRequest {
            write: ApiWrite::PodCreate,
            owner: o,
        };
        assert!(cp.submit(w(WriteOwner::Pod(1))));
        assert!(!cp.submit(w(WriteOwner::Pod(2))));
        assert_eq!(cp.commit(), (w(WriteOwner::Pod(1)), true));
        assert_eq!(cp.commit(), (w(WriteOwner::Pod(2)), false));
        assert_eq!(cp.committed, 2);
    }
}
