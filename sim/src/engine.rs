//! The simulation engine: one event loop over the cluster, Kubernetes and Knative models.
//!
//! # Nodes
//! Node 0 is the control plane; workers are nodes `1..=workers`. Each worker runs a
//! processor-sharing CPU ([`crate::cpu`]); the control plane's API work is a FIFO server
//! ([`crate::kubernetes::ControlPlane`]) whose CPU is reported on node 0.
//!
//! # A request's path (no mesh)
//! arrival -> gateway CPU (`gateway_cpu_us`) -> *route*: in proxy mode (or when no pod is
//! routable) a network hop to the activator and its CPU (`activator_cpu_us`) -> *dispatch*: a
//! routable pod is picked (power of two choices on in-flight requests, stream `activator/lb`)
//! or the request is buffered until one becomes routable -> a network hop to the pod ->
//! queue-proxy CPU (`queue_proxy_cpu_us`) -> the function executes (CPU-bound, processor
//! sharing on the pod's node) -> the response travels back over the same hops (latency only;
//! proxies' CPU per request covers both directions). A mesh inserts sidecar hops through
//! [`SidecarModel::hop`]. Every CPU step is a job on its node's processor sharing, so proxy
//! CPU and function executions slow each other down.
//!
//! # The activator and the pods' concurrency
//! With a container concurrency, the activator reaches pods by their IPs and forwards a request
//! only to a pod with a free slot (knative's throttler, `pickPod`), holding the rest. When the
//! activator cannot reach pod IPs (`knative.mesh_compatibility_mode`: `auto` with a mesh whose
//! STRICT mTLS hides them, or `enabled`) it goes through the revision's cluster IP instead: its
//! breaker admits up to `cc x routable pods` requests in flight and the cluster IP's balancer
//! picks the pod (the activator's Envoy: least request of two draws with replacement; else
//! kube-proxy: uniform), so a request can wait in a busy pod's queue-proxy while another pod
//! idles ([`EngineResult::queue_proxy_waits`]). A queue-proxy holds at most 10 x cc waiting
//! requests and fails the next one at once (`queue-full`, knative's 503); Istio's default retry
//! of that 503 on another pod is not modelled (P2C rarely fills a queue:
//! [`EngineResult::queue_proxy_max_waiting`] says how close a run came).
//!
//! Failures: a request still buffered `request_timeout_s` after its arrival fails
//! (`no-capacity` when its revision has unschedulable pods and none ready, `timeout`
//! otherwise), and so does one still waiting in a queue-proxy for a slot then (`timeout`: the
//! queue-proxy's timeout handler covers that wait); a request answered after the timeout is
//! counted as a `timeout` failure.

use crate::cpu::{CpuCategory, JobOwner, NodeCpu};
use crate::knative::{Autoscaler, ConcurrencyWindow, DataPathMode, Kpa, ScaleInput};
use crate::kubernetes::{
    ApiWrite, ControlPlane, NodeAlloc, Placement, PodResources, PodStep, Scheduler, WriteOwner,
    WriteRequest, scheduler_for,
};
use crate::mesh::{
    ClusterEvent, ContainerKind, ContainerSpec, HopCtx, HopDecision, HopPoint, MeshAction, MeshCtx,
    SidecarModel, SystemPod,
};
use crate::metrics::{
    ColdStartSummary, Collector, FailureReason, InvocationRecord, NodeSecond, NodeSeries,
    SLOWDOWN_SCALE, ScenarioSummary, SimStats, SlowdownSummary, p50_p95,
};
use crate::queue::EventQueue;
use crate::time::{MS, SEC, SimTime, US};
use meshsim_models::SimConfig;
use meshsim_traces::Invocation;
use meshsim_traces::rng::{Rng, stream};
use rand::Rng as _;
use std::collections::VecDeque;

/// What the engine needs to know about a function before its first invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionSpec {
    /// Memory request of its user container, MiB (placement).
    pub memory_request_mib: u64,
}

/// Engine options beyond the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SimOptions {
    pub seed: u64,
    pub replication: u32,
    /// Keep one [`InvocationRecord`] per invocation.
    pub record_invocations: bool,
    /// Keep one [`PodRecord`] per pod started.
    pub record_pods: bool,
    /// Keep the autoscaler's decisions that changed something.
    pub record_autoscaler: bool,
    /// Stop at this time; requests not finished by then are "in flight".
    pub horizon: Option<SimTime>,
    /// Stop as soon as every arrival is finished (do not play out scale-downs).
    pub stop_when_drained: bool,
    /// Seconds `[0, window_s)` over which the per-node CPU/memory percentiles are taken
    /// (`None`: every simulated second).
    pub window_s: Option<u64>,
}

/// What balances a revision's cluster IP when the activator sends requests to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClusterIpLb {
    /// The activator's proxy: least request of two random endpoints (Envoy's
    /// `LEAST_REQUEST`, Istio's default since 1.14).
    LeastRequest,
    /// kube-proxy: a uniformly random endpoint.
    Random,
}

/// One pod's life (optional output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PodRecord {
    pub pod: u32,
    pub function: u32,
    pub node: Option<u16>,
    pub created_ns: u64,
    /// When the activator could first route to it.
    pub routable_ns: Option<u64>,
    pub deleted_ns: Option<u64>,
}

/// One autoscaler decision that changed the desired scale or the panic state.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct AutoscalerRecord {
    pub at_ns: u64,
    pub function: u32,
    pub ready_pods: u32,
    pub stable_concurrency: f64,
    pub panic_concurrency: f64,
    /// The autoscaler's decision, before `knative.max_scale` bounds the scale applied.
    pub desired: u32,
    pub panicking: bool,
    pub serve_mode: bool,
}

/// The result of one run (see also [`crate::RunResult`]).
#[derive(Debug, Clone)]
pub struct EngineResult {
    pub summary: ScenarioSummary,
    pub invocations: Option<Vec<InvocationRecord>>,
    pub node_seconds: Vec<NodeSecond>,
    pub events: u64,
    pub digest: u64,
    /// Arrived but neither completed nor failed when the run stopped.
    pub in_flight: u64,
    pub arrived: u64,
    pub pods_started: u64,
    /// Requests that waited in a queue-proxy for a free slot of the container concurrency (the
    /// activator sent them to a busy pod: through a cluster IP, or without the activator on the
    /// path).
    pub queue_proxy_waits: u64,
    /// The longest queue any queue-proxy held (at most 10 x container concurrency: beyond, the
    /// request fails as `queue-full`).
    pub queue_proxy_max_waiting: u64,
    pub api_writes: u64,
    pub end: SimTime,
    pub pods: Option<Vec<PodRecord>>,
    pub autoscaler: Option<Vec<AutoscalerRecord>>,
    /// The mesh's per-transaction xDS records, when it keeps them.
    pub xds_transactions: Option<Vec<crate::mesh::XdsTransaction>>,
}

#[derive(Debug, Clone, Copy)]
enum Ev {
    Step { slot: u32, tag: u32 },
    Cpu { node: u16, epoch: u32 },
    ApiDone,
    Pod { pod: u32 },
    Rev { rev: u32 },
    Tick,
    Timeout { slot: u32, tag: u32 },
    Mesh { token: u64 },
}

#[derive(Debug, Clone, Copy)]
enum MeshCall {
    Event(ClusterEvent),
    Timer(u64),
    CpuDone(u64),
}

impl Ev {
    fn code(&self) -> (u8, u64, u64) {
        match *self {
            Ev::Step { slot, tag } => (1, slot.into(), tag.into()),
            Ev::Cpu { node, epoch } => (2, node.into(), epoch.into()),
            Ev::ApiDone => (3, 0, 0),
            Ev::Pod { pod } => (4, pod.into(), 0),
            Ev::Rev { rev } => (5, rev.into(), 0),
            Ev::Tick => (6, 0, 0),
            Ev::Timeout { slot, tag } => (7, slot.into(), tag.into()),
            Ev::Mesh { token } => (8, token, 0),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Cpu {
        node: u16,
        work_ns: u64,
        cat: CpuCategory,
    },
    Delay(u64),
    Route,
    Dispatch,
    Exec,
    Finish,
    Fail(FailureReason),
}

const MAX_STEPS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReqState {
    Free,
    Active,
    Buffered,
}

#[derive(Debug, Clone, Copy)]
struct Req {
    tag: u32,
    state: ReqState,
    function: u32,
    arrival: u64,
    exec_ns: u64,
    memory_mb: f32,
    steps: [Step; MAX_STEPS],
    n: u8,
    i: u8,
    pod: u32,
    in_knative: bool,
    cold: bool,
    buffered_at: u64,
    cold_ns: u64,
    queue_ns: u64,
    exec_start: u64,
    /// Reached the user container.
    started: bool,
    qp_wait_start: u64,
    return_ns: u64,
    /// Proxies passed through so far ([`InvocationRecord::proxy_hops`]).
    proxy_hops: u8,
    /// Forwarded by the activator (holds a slot of its breaker until answered).
    via_activator: bool,
    /// An [`Ev::Timeout`] at its deadline is pending.
    timeout_armed: bool,
    /// Waiting in the calling proxy for a connection to its revision's pods
    /// ([`HopDecision::Pending`]) since `qp_wait_start`; it holds its pod (`pod`, counted in the
    /// pod's `in_flight` so the pod stays) but not a connection (not in the revision's
    /// `at_pods`).
    parked: bool,
    /// Holds a connection to its revision's pods (counted in the revision's `at_pods`): sent to
    /// its pod and not refused by the pod's hop.
    conn: bool,
}

const NO_POD: u32 = u32::MAX;

/// Requests a queue-proxy holds waiting per slot of the container concurrency (knative's
/// `buildBreaker`: "queue depth ... equal to the container concurrency * 10 to allow the
/// autoscaler time to react"); it answers 503 beyond.
const QUEUE_DEPTH_PER_SLOT: u64 = 10;

impl Req {
    fn empty() -> Self {
        Self {
            tag: 0,
            state: ReqState::Free,
            function: 0,
            arrival: 0,
            exec_ns: 0,
            memory_mb: 0.0,
            steps: [Step::Finish; MAX_STEPS],
            n: 0,
            i: 0,
            pod: NO_POD,
            in_knative: false,
            cold: false,
            buffered_at: 0,
            cold_ns: 0,
            queue_ns: 0,
            exec_start: 0,
            started: false,
            qp_wait_start: 0,
            return_ns: 0,
            proxy_hops: 0,
            via_activator: false,
            timeout_armed: false,
            parked: false,
            conn: false,
        }
    }

    fn set_steps(&mut self, steps: &[Step]) {
        self.steps[..steps.len()].copy_from_slice(steps);
        self.n = steps.len() as u8;
        self.i = 0;
    }
}

#[derive(Debug, Clone)]
struct Pod {
    rev: u32,
    node: Option<u16>,
    step: PodStep,
    in_flight: u32,
    /// Of those, waiting in the calling proxy for a connection (holding no connection to it).
    parked: u32,
    /// Of those, sent by the activator (what its proxy counts as the endpoint's active requests).
    via_activator: u32,
    /// Requests in the user container (bounded by the container concurrency).
    executing: u32,
    /// Requests queued in the queue-proxy's breaker.
    waiting: VecDeque<u32>,
    res: PodResources,
    /// Resident memory on its node, MiB.
    rss_mib: f64,
    footprint_mib: f64,
    user_started: u64,
    app_ready_at: u64,
    backoff_ns: u64,
    routable_at: Option<u64>,
}

#[derive(Debug, Clone)]
struct Rev {
    active: bool,
    target: u32,
    /// Pods asked for and not terminating.
    live: u32,
    /// Pods with a ready endpoint, not terminating.
    ready: u32,
    unschedulable: u32,
    routable: Vec<u32>,
    buffer: VecDeque<(u32, u32)>,
    buffered_live: u32,
    /// Requests the activator forwarded that are not answered yet.
    via_activator: u32,
    /// Requests sent to one of its pods and not answered yet (what a proxy's circuit breaker
    /// counts for the revision's cluster).
    at_pods: u32,
    /// Requests waiting for a connection to its pods, in order ([`HopDecision::Pending`]).
    parked: VecDeque<u32>,
    window: ConcurrencyWindow,
    mode: DataPathMode,
    /// Step of the revision-level scale writes in progress.
    chain: Option<u8>,
    res: PodResources,
    last_desired: u32,
    last_panicking: bool,
}

#[derive(Debug, Clone)]
struct Node {
    cpu: NodeCpu,
    series: NodeSeries,
    mem_mib: f64,
    mem_last: u64,
    /// Time of the node's outstanding (valid) completion event.
    scheduled: Option<u64>,
    /// Generation of that event; older ones are dropped when popped.
    epoch: u32,
}

const CHAIN: [ApiWrite; 3] = [
    ApiWrite::PodAutoscalerStatus,
    ApiWrite::DeploymentScale,
    ApiWrite::ReplicaSetScale,
];

/// The simulation.
#[derive(Debug)]
pub struct Simulation {
    cfg: SimConfig,
    opts: SimOptions,
    q: EventQueue<Ev>,
    now: u64,
    events: u64,
    digest: u64,
    nodes: Vec<Node>,
    alloc: Vec<NodeAlloc>,
    cp: ControlPlane,
    scheduler: Box<dyn Scheduler>,
    autoscaler: Box<dyn Autoscaler>,
    mesh: Box<dyn SidecarModel>,
    injected: Vec<ContainerSpec>,
    reqs: Vec<Req>,
    free: Vec<u32>,
    pods: Vec<Pod>,
    revs: Vec<Rev>,
    active_revs: Vec<u32>,
    tick_pending: bool,
    gateways: Vec<u16>,
    activators: Vec<u16>,
    rr_gateway: usize,
    rr_activator: usize,
    lb_rng: Rng,
    start_rng: Rng,
    /// Phase of each node's PLEG relists in `[0, period)`, ns (index = node id).
    pleg_phase: Vec<u64>,
    done_buf: Vec<JobOwner>,
    mesh_actions: Vec<MeshAction>,
    collector: Collector,
    records: Option<Vec<InvocationRecord>>,
    pod_log: Option<Vec<PodRecord>>,
    as_log: Option<Vec<AutoscalerRecord>>,
    in_flight: u64,
    pods_started: u64,
    queue_proxy_waits: u64,
    queue_proxy_max_waiting: u64,
    // Parameters in ns.
    hop_ns: u64,
    /// Container concurrency (0: unlimited).
    cc: u32,
    /// How a cluster IP is balanced, when the activator reaches pods through one.
    cluster_ip: Option<ClusterIpLb>,
    watch_ns: u64,
    timeout_ns: u64,
    tick_ns: u64,
}

/// One step of the event-log digest: FNV-1a's xor-multiply over a whole 64-bit word (with a
/// rotation so high bits reach the low ones), cheaper than hashing the word's 8 bytes.
fn fnv(h: u64, x: u64) -> u64 {
    (h.rotate_left(23) ^ x).wrapping_mul(0x0000_0100_0000_01b3)
}

impl Simulation {
    /// Builds a cluster for `functions` (revision `i` serves function `i`). The config must be
    /// valid ([`SimConfig::validate`]).
    pub fn new(
        cfg: &SimConfig,
        functions: &[FunctionSpec],
        mesh: Box<dyn SidecarModel>,
        opts: SimOptions,
    ) -> Self {
        let cl = &cfg.cluster;
        let kn = &cfg.knative;
        let cluster_ip = kn
            .activator_uses_cluster_ip(mesh.pod_ips_hidden())
            .then(|| {
                if mesh.activator_proxy_balances() {
                    ClusterIpLb::LeastRequest
                } else {
                    ClusterIpLb::Random
                }
            });
        let mut nodes = Vec::with_capacity(usize::from(cl.workers) + 1);
        nodes.push(Node {
            cpu: NodeCpu::new(cl.control_plane_cores),
            series: NodeSeries::default(),
            mem_mib: cl.control_plane_base_memory_gib * 1024.0,
            mem_last: 0,
            scheduled: None,
            epoch: 0,
        });
        let alloc = vec![
            NodeAlloc {
                cpu_capacity_millicores: u64::from(cl.cores_per_node) * 1000,
                cpu_allocated_millicores: 0,
                memory_capacity_mib: u64::from(cl.memory_gib) * 1024,
                memory_allocated_mib: 0,
            };
            usize::from(cl.workers)
        ];
        for _ in 0..cl.workers {
            nodes.push(Node {
                cpu: NodeCpu::new(cl.cores_per_node),
                series: NodeSeries::default(),
                mem_mib: cl.node_base_memory_gib * 1024.0,
                mem_last: 0,
                scheduled: None,
                epoch: 0,
            });
        }
        let injected: Vec<ContainerSpec> = mesh.injected_containers().to_vec();
        let mut pod_cpu = u64::from(kn.user_cpu_request_millicores)
            + u64::from(kn.queue_proxy_cpu_request_millicores);
        let mut pod_mem = u64::from(kn.queue_proxy_memory_request_mib);
        for c in &injected {
            pod_cpu += u64::from(c.cpu_request_millicores);
            pod_mem += u64::from(c.memory_request_mib);
        }
        let revs = functions
            .iter()
            .map(|f| Rev {
                active: false,
                target: 0,
                live: 0,
                ready: 0,
                unschedulable: 0,
                routable: Vec::new(),
                buffer: VecDeque::new(),
                buffered_live: 0,
                via_activator: 0,
                at_pods: 0,
                parked: VecDeque::new(),
                window: ConcurrencyWindow::new(kn.stable_window_s),
                mode: DataPathMode::Proxy,
                chain: None,
                res: PodResources {
                    cpu_millicores: pod_cpu,
                    memory_mib: pod_mem + f.memory_request_mib,
                },
                last_desired: 0,
                last_panicking: false,
            })
            .collect();
        let mut sim = Simulation {
            cfg: cfg.clone(),
            opts,
            q: EventQueue::new(),
            now: 0,
            events: 0,
            digest: 0xcbf2_9ce4_8422_2325,
            nodes,
            alloc,
            cp: ControlPlane::new(
                cfg.kubernetes.api_writes_per_s,
                cfg.kubernetes.api_write_cpu_us,
            ),
            scheduler: scheduler_for(cfg.kubernetes.scheduler),
            autoscaler: Box::new(Kpa::new(kn)),
            mesh,
            injected,
            reqs: Vec::new(),
            free: Vec::new(),
            pods: Vec::new(),
            revs,
            active_revs: Vec::new(),
            tick_pending: false,
            gateways: Vec::new(),
            activators: Vec::new(),
            rr_gateway: 0,
            rr_activator: 0,
            lb_rng: stream(opts.seed, opts.replication, "activator/lb"),
            start_rng: stream(opts.seed, opts.replication, "kubelet/pod-start"),
            pleg_phase: {
                let period = cfg.kubernetes.pod_start.pleg_relist_period_ms * MS;
                let mut rng = stream(opts.seed, opts.replication, "kubelet/pleg");
                (0..=usize::from(cl.workers))
                    .map(|_| {
                        if period == 0 {
                            0
                        } else {
                            rng.random_range(0..period)
                        }
                    })
                    .collect()
            },
            done_buf: Vec::new(),
            mesh_actions: Vec::new(),
            collector: Collector::default(),
            records: opts.record_invocations.then(Vec::new),
            pod_log: opts.record_pods.then(Vec::new),
            as_log: opts.record_autoscaler.then(Vec::new),
            in_flight: 0,
            pods_started: 0,
            queue_proxy_waits: 0,
            queue_proxy_max_waiting: 0,
            hop_ns: cl.network_hop_us * US,
            cc: kn.container_concurrency,
            cluster_ip,
            watch_ns: cfg.kubernetes.watch_delay_ms * MS,
            timeout_ns: kn.request_timeout_s * SEC,
            tick_ns: kn.tick_ms * MS,
        };
        // System pods, placed by the scheduler at time 0: gateways first, then activators.
        for (replicas, cpu, mem) in [
            (
                kn.gateway_replicas,
                kn.gateway_cpu_request_millicores,
                kn.gateway_memory_request_mib,
            ),
            (
                kn.activator_replicas,
                kn.activator_cpu_request_millicores,
                kn.activator_memory_request_mib,
            ),
        ] {
            let mut placed = Vec::new();
            for _ in 0..replicas {
                let res = PodResources {
                    cpu_millicores: u64::from(cpu),
                    memory_mib: u64::from(mem),
                };
                let node = match sim.scheduler.place(&res, &sim.alloc) {
                    Placement::Node(i) => i,
                    // Validation keeps system pods far below a node's size; fall back to the
                    // first worker rather than fail.
                    Placement::Unschedulable => 0,
                };
                sim.reserve(node, &res);
                let id = node + 1;
                sim.mem_change(id, f64::from(mem));
                placed.push(id);
            }
            if sim.gateways.is_empty() {
                sim.gateways = placed;
            } else {
                sim.activators = placed;
            }
        }
        let system: Vec<(SystemPod, u16)> = (sim.gateways.iter().map(|&n| (SystemPod::Gateway, n)))
            .chain(sim.activators.iter().map(|&n| (SystemPod::Activator, n)))
            .collect();
        for (kind, node) in system {
            sim.mesh_call(MeshCall::Event(ClusterEvent::SystemPodPlaced {
                kind,
                node,
            }));
        }
        sim
    }

    fn reserve(&mut self, worker: u16, r: &PodResources) {
        let a = &mut self.alloc[usize::from(worker)];
        a.cpu_allocated_millicores += r.cpu_millicores;
        a.memory_allocated_mib += r.memory_mib;
    }

    fn release(&mut self, worker: u16, r: &PodResources) {
        let a = &mut self.alloc[usize::from(worker)];
        a.cpu_allocated_millicores -= r.cpu_millicores;
        a.memory_allocated_mib -= r.memory_mib;
    }

    fn mem_change(&mut self, node: u16, delta_mib: f64) {
        let now = self.now;
        let n = &mut self.nodes[usize::from(node)];
        n.series.add_mem(n.mem_mib / 1024.0, n.mem_last, now);
        n.mem_last = now;
        n.mem_mib += delta_mib;
    }

    fn at(&mut self, delay_ns: u64, ev: Ev) {
        self.q.push(SimTime(self.now + delay_ns), ev);
    }

    fn note(&mut self, kind: u8, a: u64, b: u64) {
        self.events += 1;
        let mut h = fnv(self.digest, self.now);
        h = fnv(h, u64::from(kind));
        h = fnv(h, a);
        self.digest = fnv(h, b);
    }

    /// Runs the arrivals (in time order) to the end and summarises.
    pub fn run(
        mut self,
        arrivals: impl Iterator<Item = Invocation>,
        total: u64,
        progress: &mut dyn FnMut(u64, u64),
    ) -> EngineResult {
        let mut arrivals = arrivals.peekable();
        let horizon = self.opts.horizon.map_or(u64::MAX, |h| h.0);
        let mut reported = 0u64;
        loop {
            let next_arrival = arrivals.peek().map(|a| a.at_ns);
            let next_event = self.q.peek_time().map(|t| t.0);
            match (next_arrival, next_event) {
                (Some(a), e) if e.is_none_or(|e| a <= e) => {
                    if a > horizon {
                        break;
                    }
                    let inv = arrivals.next().expect("peeked");
                    debug_assert!(inv.at_ns >= self.now, "arrivals out of order");
                    self.now = inv.at_ns;
                    self.note(0, u64::from(inv.function), inv.exec_ns);
                    self.arrive(inv);
                }
                (_, Some(e)) => {
                    if e > horizon {
                        break;
                    }
                    let (t, ev) = self.q.pop().expect("peeked");
                    self.now = t.0;
                    self.handle(ev);
                }
                _ => break,
            }
            let done = self.collector.completed + self.collector.failed;
            if done >= reported + 4096 {
                reported = done;
                progress(done, total);
            }
            if self.opts.stop_when_drained && arrivals.peek().is_none() && self.in_flight == 0 {
                break;
            }
        }
        if let Some(h) = self.opts.horizon
            && h.0 > self.now
            && h.0 != u64::MAX
        {
            self.now = h.0;
        }
        progress(self.collector.completed + self.collector.failed, total);
        self.finish_run()
    }

    fn handle(&mut self, ev: Ev) {
        if let Ev::Cpu { node, epoch } = ev
            && self.nodes[usize::from(node)].epoch != epoch
        {
            return; // superseded completion
        }
        let (k, a, b) = ev.code();
        self.note(k, a, b);
        match ev {
            Ev::Step { slot, tag } => {
                if self.reqs[slot as usize].tag == tag {
                    self.advance_req(slot);
                }
            }
            Ev::Cpu { node, .. } => self.cpu_done(node),
            Ev::ApiDone => self.api_done(),
            Ev::Pod { pod } => self.pod_advance(pod),
            Ev::Rev { rev } => self.rev_chain_next(rev),
            Ev::Tick => self.tick(),
            Ev::Timeout { slot, tag } => self.timeout(slot, tag),
            Ev::Mesh { token } => self.mesh_call(MeshCall::Timer(token)),
        }
    }

    // ---------------------------------------------------------------- CPU

    fn account_cpu(&mut self, node: u16) {
        let now = self.now;
        let n = &mut self.nodes[usize::from(node)];
        let series = &mut n.series;
        n.cpu.advance(now, |cat, core_ns, t0, t1| {
            series.add_cpu(cat, core_ns, t0, t1)
        });
    }

    /// Adds a CPU job. The node keeps one completion event outstanding: a new one is pushed
    /// only when the new job makes the next completion earlier; when it makes it later (the
    /// node gets slower), the outstanding event fires early, completes nothing and reschedules.
    fn add_job(&mut self, node: u16, work_ns: u64, owner: JobOwner, cat: CpuCategory) {
        self.account_cpu(node);
        let n = &mut self.nodes[usize::from(node)];
        let t = n.cpu.add(work_ns, owner, cat);
        if n.scheduled.is_none_or(|s| t < s) {
            n.epoch = n.epoch.wrapping_add(1);
            n.scheduled = Some(t);
            let epoch = n.epoch;
            self.q.push(SimTime(t), Ev::Cpu { node, epoch });
        }
    }

    fn cpu_done(&mut self, node: u16) {
        self.account_cpu(node);
        let mut done = std::mem::take(&mut self.done_buf);
        let n = &mut self.nodes[usize::from(node)];
        n.cpu.complete(&mut done);
        n.scheduled = None;
        if let Some(t) = n.cpu.next_completion() {
            n.epoch = n.epoch.wrapping_add(1);
            n.scheduled = Some(t);
            let epoch = n.epoch;
            self.q.push(SimTime(t), Ev::Cpu { node, epoch });
        }
        for owner in done.drain(..) {
            match owner {
                JobOwner::Request { slot, tag } if self.reqs[slot as usize].tag == tag => {
                    self.advance_req(slot);
                }
                JobOwner::Mesh { token } => self.mesh_call(MeshCall::CpuDone(token)),
                _ => {}
            }
        }
        self.done_buf = done;
    }

    // ---------------------------------------------------------------- requests

    fn arrive(&mut self, inv: Invocation) {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.reqs.push(Req::empty());
                (self.reqs.len() - 1) as u32
            }
        };
        self.collector.arrived += 1;
        self.in_flight += 1;
        let gw = self.gateways[self.rr_gateway % self.gateways.len()];
        self.rr_gateway += 1;
        let kn = &self.cfg.knative;
        let mut steps = [Step::Finish; MAX_STEPS];
        let mut n = 0;
        steps[n] = Step::Cpu {
            node: gw,
            work_ns: kn.gateway_cpu_us * US,
            cat: CpuCategory::Gateway,
        };
        n += 1;
        let before = n;
        n = self
            .mesh_hop(HopPoint::GatewayOut, gw, inv.function, None, &mut steps, n)
            .unwrap_or(n);
        let gateway_hops = u8::from(n > before);
        steps[n] = Step::Route;
        n += 1;
        let r = &mut self.reqs[slot as usize];
        let tag = r.tag;
        *r = Req::empty();
        r.tag = tag;
        r.proxy_hops = gateway_hops;
        r.state = ReqState::Active;
        r.function = inv.function;
        r.arrival = inv.at_ns;
        r.exec_ns = inv.exec_ns;
        r.memory_mb = inv.memory_mb;
        r.set_steps(&steps[..n]);
        self.advance_req(slot);
    }

    /// Runs the request's steps until one has to wait.
    fn advance_req(&mut self, slot: u32) {
        loop {
            let r = &mut self.reqs[slot as usize];
            if r.i >= r.n {
                return;
            }
            let step = r.steps[r.i as usize];
            r.i += 1;
            let tag = r.tag;
            match step {
                Step::Cpu { node, work_ns, cat } => {
                    self.add_job(node, work_ns, JobOwner::Request { slot, tag }, cat);
                    return;
                }
                Step::Delay(0) => {}
                Step::Delay(d) => {
                    self.at(d, Ev::Step { slot, tag });
                    return;
                }
                Step::Route => self.route(slot),
                Step::Dispatch => {
                    if !self.dispatch(slot) {
                        return;
                    }
                }
                Step::Exec => {
                    let pod = self.reqs[slot as usize].pod;
                    let p = &mut self.pods[pod as usize];
                    if self.cc == 0 || p.executing < self.cc {
                        self.start_exec(slot);
                        return;
                    }
                    if p.waiting.len() as u64 >= QUEUE_DEPTH_PER_SLOT * u64::from(self.cc) {
                        // The queue-proxy's breaker is full: 503 at once.
                        self.finish_req(slot, Some(FailureReason::QueueFull));
                        return;
                    }
                    // The queue-proxy's breaker holds it until a slot frees.
                    p.waiting.push_back(slot);
                    self.queue_proxy_waits += 1;
                    self.queue_proxy_max_waiting =
                        self.queue_proxy_max_waiting.max(p.waiting.len() as u64);
                    self.reqs[slot as usize].qp_wait_start = self.now;
                    // The queue-proxy's timeout handler covers the wait for a slot.
                    self.arm_deadline(slot);
                    return;
                }
                Step::Finish => {
                    self.finish_req(slot, None);
                    return;
                }
                Step::Fail(reason) => {
                    self.finish_req(slot, Some(reason));
                    return;
                }
            }
        }
    }

    /// Counts a proxy the request in `slot` passed through (`mesh_hop` added its steps).
    fn count_proxy_hop(&mut self, slot: u32, traversed: bool) {
        let r = &mut self.reqs[slot as usize];
        r.proxy_hops = r.proxy_hops.saturating_add(u8::from(traversed));
    }

    /// Appends the mesh's steps at a hop point; returns the new step count, or `None` when the
    /// request must wait for a connection ([`HopDecision::Pending`], pod hops only).
    fn mesh_hop(
        &mut self,
        point: HopPoint,
        node: u16,
        function: u32,
        pod: Option<u32>,
        steps: &mut [Step; MAX_STEPS],
        mut n: usize,
    ) -> Option<usize> {
        let ctx = HopCtx {
            now: SimTime(self.now),
            point,
            node,
            function,
            pod,
            pod_in_flight: pod.map_or(0, |p| {
                let p = &self.pods[p as usize];
                p.in_flight - p.parked
            }),
            rev_in_flight: self.revs[function as usize].at_pods,
            rev_pending: self.revs[function as usize].parked.len() as u32,
        };
        let decision = self.mesh.hop(&ctx);
        self.drain_mesh_actions();
        let (hop, fail) = match decision {
            HopDecision::Pending if point == HopPoint::Pod => return None,
            HopDecision::Pass | HopDecision::Pending => return Some(n),
            HopDecision::Through(h) => (h, None),
            HopDecision::Reject { hop, reason } => (hop, Some(reason)),
        };
        if hop.background_cpu_ns > 0 {
            self.add_job(
                node,
                hop.background_cpu_ns,
                JobOwner::Background,
                CpuCategory::Sidecar,
            );
        }
        steps[n] = Step::Cpu {
            node,
            work_ns: hop.cpu_ns,
            cat: CpuCategory::Sidecar,
        };
        steps[n + 1] = Step::Delay(hop.latency_ns);
        n += 2;
        if let Some(reason) = fail {
            steps[n] = Step::Fail(reason);
            n += 1;
        }
        Some(n)
    }

    /// Lets the mesh model react to a cluster change, a timer or finished CPU work, and
    /// carries out what it asks for.
    fn mesh_call(&mut self, call: MeshCall) {
        let mut actions = std::mem::take(&mut self.mesh_actions);
        let workers = self.cfg.cluster.workers;
        {
            let mut ctx = MeshCtx::new(SimTime(self.now), workers, &mut actions);
            match call {
                MeshCall::Event(ev) => self.mesh.on_cluster_event(&mut ctx, ev),
                MeshCall::Timer(token) => self.mesh.on_timer(&mut ctx, token),
                MeshCall::CpuDone(token) => self.mesh.on_cpu_done(&mut ctx, token),
            }
        }
        self.mesh_actions = actions;
        self.run_mesh_actions();
    }

    /// Carries out actions the model queued outside a callback.
    fn drain_mesh_actions(&mut self) {
        let mut actions = std::mem::take(&mut self.mesh_actions);
        self.mesh.take_actions(&mut actions);
        self.mesh_actions = actions;
        if !self.mesh_actions.is_empty() {
            self.run_mesh_actions();
        }
    }

    fn run_mesh_actions(&mut self) {
        let workers = self.cfg.cluster.workers;
        let mut actions = std::mem::take(&mut self.mesh_actions);
        for a in actions.drain(..) {
            match a {
                MeshAction::Timer { delay_ns, token } => self.at(delay_ns, Ev::Mesh { token }),
                MeshAction::Cpu {
                    node,
                    work_ns,
                    category,
                    token,
                } => {
                    let node = node.min(workers);
                    self.add_job(node, work_ns, JobOwner::Mesh { token }, category);
                }
                MeshAction::Memory { node, delta_mib } => {
                    self.mem_change(node.min(workers), delta_mib);
                }
            }
        }
        self.mesh_actions = actions;
    }

    fn start_exec(&mut self, slot: u32) {
        let r = &mut self.reqs[slot as usize];
        r.exec_start = self.now;
        r.started = true;
        let (work, pod, tag) = (r.exec_ns, r.pod, r.tag);
        let p = &mut self.pods[pod as usize];
        p.executing += 1;
        let node = p.node.expect("routable pod has a node");
        self.add_job(
            node,
            work,
            JobOwner::Request { slot, tag },
            CpuCategory::Function,
        );
    }

    fn activate(&mut self, rev: u32) {
        let now = self.now;
        let rv = &mut self.revs[rev as usize];
        if !rv.active {
            rv.active = true;
            rv.window.reset(now);
            self.active_revs.push(rev);
            if !self.tick_pending {
                self.tick_pending = true;
                let next = (now / self.tick_ns + 1) * self.tick_ns;
                self.q.push(SimTime(next), Ev::Tick);
            }
        }
    }

    /// At the gateway: to the pod directly (serve mode) or through the activator.
    fn route(&mut self, slot: u32) {
        let rev = self.reqs[slot as usize].function;
        self.activate(rev);
        let now = self.now;
        self.revs[rev as usize].window.change(now, 1);
        self.reqs[slot as usize].in_knative = true;
        let rv = &self.revs[rev as usize];
        if rv.mode == DataPathMode::Serve && !rv.routable.is_empty() {
            // The gateway balances without knowing pod capacity; the queue-proxy enforces it.
            let pod = self.pick_pod(rev);
            self.forward_to_pod(slot, pod);
            return;
        }
        let act = self.activators[self.rr_activator % self.activators.len()];
        self.rr_activator += 1;
        let mut steps = [Step::Finish; MAX_STEPS];
        let mut n = 0;
        steps[n] = Step::Delay(self.hop_ns);
        n += 1;
        let before = n;
        n = self
            .mesh_hop(HopPoint::Activator, act, rev, None, &mut steps, n)
            .unwrap_or(n);
        self.count_proxy_hop(slot, n > before);
        steps[n] = Step::Cpu {
            node: act,
            work_ns: self.cfg.knative.activator_cpu_us * US,
            cat: CpuCategory::Activator,
        };
        steps[n + 1] = Step::Dispatch;
        n += 2;
        let r = &mut self.reqs[slot as usize];
        r.return_ns += self.hop_ns;
        r.set_steps(&steps[..n]);
    }

    /// Least in-flight of two routable pods drawn at random (all of them when at most two).
    fn pick_pod(&mut self, rev: u32) -> u32 {
        let rv = &self.revs[rev as usize];
        let k = rv.routable.len();
        let better = |a: u32, b: u32, pods: &[Pod]| {
            if pods[b as usize].in_flight < pods[a as usize].in_flight {
                b
            } else {
                a
            }
        };
        match k {
            1 => rv.routable[0],
            2 => better(rv.routable[0], rv.routable[1], &self.pods),
            _ => {
                let i = self.lb_rng.random_range(0..k);
                let mut j = self.lb_rng.random_range(0..k - 1);
                if j >= i {
                    j += 1;
                }
                let (a, b) = (rv.routable[i.min(j)], rv.routable[i.max(j)]);
                better(a, b, &self.pods)
            }
        }
    }

    /// A pod the activator may forward to: with a container concurrency, the least loaded
    /// routable pod below it (lowest id among equals), or none; without, [`Self::pick_pod`].
    ///
    /// Through a cluster IP (knative's throttler with a cluster-IP tracker) the activator only
    /// knows the number of ready pods: its breaker admits a request while fewer than
    /// `cc x routable pods` (split over the activator replicas, at least 1 each, as
    /// `calculateCapacity` does) are in flight, and the cluster IP's balancer picks the pod,
    /// busy or not; the queue-proxy holds what exceeds the pod's concurrency.
    fn pick_with_capacity(&mut self, rev: u32) -> Option<u32> {
        let rv = &self.revs[rev as usize];
        if rv.routable.is_empty() {
            return None;
        }
        if self.cc == 0 {
            return Some(self.pick_pod(rev));
        }
        if let Some(lb) = self.cluster_ip {
            let replicas = self.activators.len().max(1) as u32;
            let per_replica = (self.cc * rv.routable.len() as u32 / replicas).max(1);
            if rv.via_activator >= per_replica * replicas {
                return None;
            }
            let k = rv.routable.len();
            let first = rv.routable[self.lb_rng.random_range(0..k)];
            return Some(match lb {
                ClusterIpLb::Random => first,
                ClusterIpLb::LeastRequest => {
                    // Envoy's `unweightedHostPick`: two draws with replacement, the second
                    // replaces the first only with strictly fewer active requests.
                    let second = rv.routable[self.lb_rng.random_range(0..k)];
                    let active = |p: u32| self.pods[p as usize].via_activator;
                    if active(second) < active(first) {
                        second
                    } else {
                        first
                    }
                }
            });
        }
        rv.routable
            .iter()
            .copied()
            .filter(|&p| self.pods[p as usize].in_flight < self.cc)
            .min_by_key(|&p| (self.pods[p as usize].in_flight, p))
    }

    /// At the activator: forward to a routable pod with capacity, or buffer (behind what is
    /// already buffered). Returns whether the request continues now.
    fn dispatch(&mut self, slot: u32) -> bool {
        let rev = self.reqs[slot as usize].function;
        if self.revs[rev as usize].buffered_live == 0
            && let Some(pod) = self.pick_with_capacity(rev)
        {
            self.forward_from_activator(slot, pod);
            return true;
        }
        let now = self.now;
        let rv = &mut self.revs[rev as usize];
        let cold = rv.ready == 0;
        rv.buffer.push_back((slot, self.reqs[slot as usize].tag));
        rv.buffered_live += 1;
        let r = &mut self.reqs[slot as usize];
        r.state = ReqState::Buffered;
        r.buffered_at = now;
        r.cold = cold;
        r.timeout_armed = true;
        let (tag, deadline) = (r.tag, r.arrival + self.timeout_ns);
        self.q
            .push(SimTime(deadline.max(now)), Ev::Timeout { slot, tag });
        // The activator's stat reaches the autoscaler at once: scale from zero.
        if self.revs[rev as usize].target == 0 {
            self.apply_target(rev, 1);
        }
        false
    }

    /// [`Self::forward_to_pod`] from the activator, which counts the request against its
    /// breaker until it is answered.
    fn forward_from_activator(&mut self, slot: u32, pod: u32) {
        let r = &mut self.reqs[slot as usize];
        r.via_activator = true;
        self.revs[r.function as usize].via_activator += 1;
        self.pods[pod as usize].via_activator += 1;
        self.forward_to_pod(slot, pod);
    }

    fn forward_to_pod(&mut self, slot: u32, pod: u32) {
        let node = self.pods[pod as usize]
            .node
            .expect("routable pod has a node");
        let mut steps = [Step::Finish; MAX_STEPS];
        let mut n = 0;
        steps[n] = Step::Delay(self.hop_ns);
        n += 1;
        let before = n;
        let function = self.reqs[slot as usize].function;
        let Some(after) = self.mesh_hop(HopPoint::Pod, node, function, Some(pod), &mut steps, n)
        else {
            self.park(slot, pod);
            return;
        };
        n = after;
        self.count_proxy_hop(slot, n > before);
        let refused = n > before && matches!(steps[n - 1], Step::Fail(_));
        steps[n] = Step::Cpu {
            node,
            work_ns: self.cfg.knative.queue_proxy_cpu_us * US,
            cat: CpuCategory::QueueProxy,
        };
        steps[n + 1] = Step::Exec;
        steps[n + 2] = Step::Finish;
        n += 3;
        let r = &mut self.reqs[slot as usize];
        r.return_ns += self.hop_ns;
        r.pod = pod;
        r.state = ReqState::Active;
        r.set_steps(&steps[..n]);
        let mem = f64::from(r.memory_mb);
        r.conn = !refused;
        let p = &mut self.pods[pod as usize];
        p.in_flight += 1;
        if !refused {
            self.revs[function as usize].at_pods += 1;
        }
        if mem > p.footprint_mib {
            let delta = mem - p.footprint_mib;
            p.footprint_mib = mem;
            p.rss_mib += delta;
            self.mem_change(node, delta);
        }
    }

    /// Schedules the request's [`Ev::Timeout`] at its deadline, once.
    fn arm_deadline(&mut self, slot: u32) {
        let now = self.now;
        let r = &mut self.reqs[slot as usize];
        if !r.timeout_armed {
            r.timeout_armed = true;
            let (tag, deadline) = (r.tag, r.arrival + self.timeout_ns);
            self.q
                .push(SimTime(deadline.max(now)), Ev::Timeout { slot, tag });
        }
    }

    /// The calling proxy has no free connection to the revision's pods: the request waits in
    /// its pending queue, holding its pod, until a request of the revision is answered
    /// ([`Self::finish_req`] wakes the first), or until its deadline.
    fn park(&mut self, slot: u32, pod: u32) {
        let now = self.now;
        let r = &mut self.reqs[slot as usize];
        r.pod = pod;
        r.state = ReqState::Active;
        r.parked = true;
        r.qp_wait_start = now;
        // Nothing to run until a connection frees.
        r.set_steps(&[]);
        let function = r.function;
        self.arm_deadline(slot);
        let p = &mut self.pods[pod as usize];
        p.in_flight += 1;
        p.parked += 1;
        self.revs[function as usize].parked.push_back(slot);
    }

    /// A connection to the revision's pods freed: the first request waiting for one goes on to
    /// its pod (the mesh decides its hop again). One refused there (rate limit, an ejected pod)
    /// takes no connection, so the next waiting one is tried, until one takes it.
    fn wake_parked(&mut self, rev: u32) {
        while let Some(slot) = self.revs[rev as usize].parked.pop_front() {
            let now = self.now;
            let r = &mut self.reqs[slot as usize];
            r.parked = false;
            r.queue_ns += now - r.qp_wait_start;
            let pod = r.pod;
            let p = &mut self.pods[pod as usize];
            p.in_flight -= 1;
            p.parked -= 1;
            self.forward_to_pod(slot, pod);
            let r = &self.reqs[slot as usize];
            let took = r.conn || r.parked;
            self.advance_req(slot);
            if took {
                break;
            }
        }
    }

    fn finish_req(&mut self, slot: u32, failure: Option<FailureReason>) {
        let now = self.now;
        let r = self.reqs[slot as usize];
        if r.in_knative {
            self.revs[r.function as usize].window.change(now, -1);
        }
        let mut failure = failure;
        let (end_to_end, node, contention) = if failure.is_none() {
            let e2e = now + r.return_ns - r.arrival;
            if e2e > self.timeout_ns {
                failure = Some(FailureReason::Timeout);
            }
            let node = self.pods[r.pod as usize].node;
            (e2e, node, (now - r.exec_start).saturating_sub(r.exec_ns))
        } else {
            let node = if r.pod == NO_POD {
                None
            } else {
                self.pods[r.pod as usize].node
            };
            (now - r.arrival, node, 0)
        };
        let mut next = None;
        // Its connection to the revision's pods frees (one parked request takes it, below).
        let freed = r.conn;
        if freed {
            self.revs[r.function as usize].at_pods -= 1;
        }
        if r.pod != NO_POD {
            let p = &mut self.pods[r.pod as usize];
            p.in_flight -= 1;
            if r.via_activator {
                p.via_activator -= 1;
            }
            if r.started {
                p.executing -= 1;
                next = p.waiting.pop_front();
            }
            if p.step == PodStep::Terminating && p.in_flight == 0 {
                self.delete_pod(r.pod);
            }
        }
        let (cold_ns, queue_ns) = (r.cold_ns, r.queue_ns);
        let rec = InvocationRecord {
            function: r.function,
            arrival_ns: r.arrival,
            exec_ns: r.exec_ns,
            end_to_end_ns: end_to_end,
            slowdown: if failure.is_none() {
                end_to_end as f64 / r.exec_ns.max(1) as f64
            } else {
                0.0
            },
            cold: r.cold,
            node,
            queue_ns,
            cold_start_ns: cold_ns,
            contention_ns: contention,
            overhead_ns: if failure.is_none() {
                end_to_end.saturating_sub(r.exec_ns + cold_ns + queue_ns + contention)
            } else {
                0
            },
            proxy_hops: r.proxy_hops,
            failure,
        };
        self.mesh.on_request_finished(
            SimTime(now),
            rec.function,
            (r.pod != NO_POD).then_some(r.pod),
            rec.failure,
        );
        self.drain_mesh_actions();
        self.collector.record(&rec);
        if let Some(v) = &mut self.records {
            v.push(rec);
        }
        let (pod, rev, via_activator) = (r.pod, r.function, r.via_activator);
        if via_activator {
            self.revs[rev as usize].via_activator -= 1;
        }
        let r = &mut self.reqs[slot as usize];
        r.state = ReqState::Free;
        r.tag = r.tag.wrapping_add(1);
        self.free.push(slot);
        self.in_flight -= 1;
        if let Some(n) = next {
            let w = &mut self.reqs[n as usize];
            w.queue_ns += now - w.qp_wait_start;
            self.start_exec(n);
        }
        if freed {
            self.wake_parked(rev);
        }
        // A slot freed: the activator forwards what it holds for lack of capacity (through a
        // cluster IP, any answered request it forwarded frees a slot of its breaker).
        let slot_freed = if self.cluster_ip.is_some() {
            via_activator
        } else {
            pod != NO_POD && self.pods[pod as usize].step == PodStep::Routable
        };
        if self.cc > 0 && slot_freed && self.revs[rev as usize].buffered_live > 0 {
            self.flush_buffer(rev);
        }
    }

    fn timeout(&mut self, slot: u32, tag: u32) {
        let r = &self.reqs[slot as usize];
        if r.tag != tag {
            return;
        }
        if r.parked {
            // Waiting in the calling proxy for a connection: its request timeout answers 504.
            let (rev, pod, waited) = (r.function as usize, r.pod, self.now - r.qp_wait_start);
            self.revs[rev].parked.retain(|&s| s != slot);
            self.pods[pod as usize].parked -= 1;
            self.reqs[slot as usize].queue_ns += waited;
            self.finish_req(slot, Some(FailureReason::Timeout));
            return;
        }
        if r.state == ReqState::Active && !r.started && r.pod != NO_POD {
            // Waiting in a busy pod's queue-proxy: its timeout handler answers 504 and the
            // request gives up its place (and its activator breaker slot).
            let (pod, waited) = (r.pod as usize, self.now - r.qp_wait_start);
            let Some(i) = self.pods[pod].waiting.iter().position(|&w| w == slot) else {
                return;
            };
            self.pods[pod].waiting.remove(i);
            self.reqs[slot as usize].queue_ns += waited;
            self.finish_req(slot, Some(FailureReason::Timeout));
            return;
        }
        if r.state != ReqState::Buffered {
            return;
        }
        let rev = r.function as usize;
        let rv = &mut self.revs[rev];
        rv.buffered_live -= 1;
        let reason = if rv.unschedulable > 0 && rv.ready == 0 {
            FailureReason::NoCapacity
        } else {
            FailureReason::Timeout
        };
        let wait = self.now - self.reqs[slot as usize].buffered_at;
        let r = &mut self.reqs[slot as usize];
        if r.cold {
            r.cold_ns = wait;
        } else {
            r.queue_ns = wait;
        }
        self.finish_req(slot, Some(reason));
    }

    /// A pod became routable or a slot freed: the activator forwards what it buffered, in
    /// order, while a pod has capacity.
    fn flush_buffer(&mut self, rev: u32) {
        let now = self.now;
        while let Some(&(slot, tag)) = self.revs[rev as usize].buffer.front() {
            let r = &self.reqs[slot as usize];
            if r.tag != tag || r.state != ReqState::Buffered {
                self.revs[rev as usize].buffer.pop_front();
                continue;
            }
            let Some(pod) = self.pick_with_capacity(rev) else {
                break;
            };
            self.revs[rev as usize].buffer.pop_front();
            let r = &mut self.reqs[slot as usize];
            let wait = now - r.buffered_at;
            if r.cold {
                r.cold_ns += wait;
            } else {
                r.queue_ns += wait;
            }
            self.revs[rev as usize].buffered_live -= 1;
            self.forward_from_activator(slot, pod);
            self.advance_req(slot);
        }
    }

    // ---------------------------------------------------------------- control plane

    fn submit(&mut self, write: ApiWrite, owner: WriteOwner) {
        if self.cp.submit(WriteRequest { write, owner }) {
            self.start_write();
        }
    }

    fn start_write(&mut self) {
        let extra = self
            .cp
            .head()
            .map_or(0, |w| self.mesh.api_write_extra_ns(w.write));
        let (s, cpu) = (self.cp.service_ns + extra, self.cp.cpu_ns_per_write);
        let now = self.now;
        self.nodes[0]
            .series
            .add_cpu(CpuCategory::ControlPlane, cpu as f64, now, now + s);
        self.at(s, Ev::ApiDone);
    }

    fn api_done(&mut self) {
        let (w, more) = self.cp.commit();
        if more {
            self.start_write();
        }
        match w.owner {
            WriteOwner::Pod(p) => self.pod_advance(p),
            WriteOwner::Revision(r) => self.at(self.watch_ns, Ev::Rev { rev: r }),
            WriteOwner::Nobody => {}
        }
    }

    // ---------------------------------------------------------------- scaling

    fn apply_target(&mut self, rev: u32, desired: u32) {
        let rv = &mut self.revs[rev as usize];
        rv.target = desired;
        if desired > rv.live {
            if rv.chain.is_none() {
                rv.chain = Some(0);
                self.submit(CHAIN[0], WriteOwner::Revision(rev));
            }
        } else if desired < rv.live {
            let mut excess = rv.live - desired;
            // The ReplicaSet deletes unscheduled pods first (kubernetes `getPodsToDelete`
            // ranks unassigned pods lowest); they hold no resources yet.
            if rv.unschedulable > 0 {
                for id in 0..self.pods.len() {
                    if excess == 0 {
                        break;
                    }
                    let p = &mut self.pods[id];
                    if p.rev == rev && p.step == PodStep::Unschedulable {
                        p.step = PodStep::Gone;
                        let rv = &mut self.revs[rev as usize];
                        rv.unschedulable -= 1;
                        rv.live -= 1;
                        excess -= 1;
                        self.submit(ApiWrite::PodDelete, WriteOwner::Nobody);
                        if let Some(log) = &mut self.pod_log {
                            log[id].deleted_ns = Some(self.now);
                        }
                    }
                }
            }
            // Then pods that are not Ready yet (created, scheduled or starting): Kubernetes'
            // `ActivePodsWithRanks` puts unassigned before assigned and not-ready before ready
            // pods, so a ReplicaSet scaling down removes a pod still being started before one
            // that serves. Its remaining start-up writes are never made (a pod whose create is
            // still queued is deleted once the create lands: the write is spent, nothing after it).
            let starting = self.not_ready_pods(rev, excess);
            excess -= starting.len() as u32;
            let mut victims = Vec::new();
            for _ in 0..excess {
                // Least in flight first, newest among equals.
                let rv = &self.revs[rev as usize];
                let Some(&v) = rv
                    .routable
                    .iter()
                    .filter(|p| !victims.contains(*p))
                    .min_by_key(|&&p| (self.pods[p as usize].in_flight, u32::MAX - p))
                else {
                    break;
                };
                victims.push(v);
            }
            if victims.is_empty() && starting.is_empty() {
                return;
            }
            for w in CHAIN {
                self.submit(w, WriteOwner::Nobody);
            }
            for pod in starting {
                self.revs[rev as usize].live -= 1;
                self.submit(ApiWrite::PodDelete, WriteOwner::Nobody);
                self.delete_pod(pod);
            }
            for v in victims {
                self.terminate_pod(v);
            }
        }
    }

    /// Up to `n` pods of `rev` that Kubernetes would delete before any Ready one: not yet
    /// Ready (the kubelet's Ready status not written), in `ActivePodsWithRanks` order
    /// (kubernetes `pkg/controller/controller_utils.go`): unassigned before assigned, phase
    /// Pending before Running (the kubelet writes Running once the sandbox exists), then the
    /// newest first.
    fn not_ready_pods(&self, rev: u32, n: u32) -> Vec<u32> {
        // Every live pod routable or unschedulable (the usual scale-down): none is starting,
        // so skip the scan over every pod the run has made.
        let rv = &self.revs[rev as usize];
        if n == 0 || rv.live as usize <= rv.routable.len() + rv.unschedulable as usize {
            return Vec::new();
        }
        let mut starting: Vec<(bool, bool, u32)> = self
            .pods
            .iter()
            .enumerate()
            .filter(|(_, p)| p.rev == rev && p.step.before_ready())
            .map(|(id, p)| {
                let running = matches!(
                    p.step,
                    PodStep::Container(_) | PodStep::Probing | PodStep::ReadyWrite
                );
                (p.node.is_some(), running, id as u32)
            })
            .collect();
        starting.sort_by_key(|&(assigned, running, id)| (assigned, running, u32::MAX - id));
        starting
            .into_iter()
            .take(n as usize)
            .map(|(_, _, id)| id)
            .collect()
    }

    fn rev_chain_next(&mut self, rev: u32) {
        let rv = &mut self.revs[rev as usize];
        let step = rv.chain.map_or(0, |s| s + 1);
        if (step as usize) < CHAIN.len() {
            rv.chain = Some(step);
            self.submit(CHAIN[step as usize], WriteOwner::Revision(rev));
            return;
        }
        rv.chain = None;
        let missing = rv.target.saturating_sub(rv.live);
        for _ in 0..missing {
            self.spawn_pod(rev);
        }
    }

    fn spawn_pod(&mut self, rev: u32) {
        let id = self.pods.len() as u32;
        let rv = &mut self.revs[rev as usize];
        rv.live += 1;
        self.pods.push(Pod {
            rev,
            node: None,
            step: PodStep::CreateWrite,
            in_flight: 0,
            parked: 0,
            via_activator: 0,
            executing: 0,
            waiting: VecDeque::new(),
            res: rv.res,
            rss_mib: 0.0,
            footprint_mib: 0.0,
            user_started: 0,
            app_ready_at: 0,
            backoff_ns: SEC,
            routable_at: None,
        });
        self.pods_started += 1;
        if let Some(log) = &mut self.pod_log {
            log.push(PodRecord {
                pod: id,
                function: rev,
                node: None,
                created_ns: self.now,
                routable_ns: None,
                deleted_ns: None,
            });
        }
        self.submit(ApiWrite::PodCreate, WriteOwner::Pod(id));
    }

    fn terminate_pod(&mut self, pod: u32) {
        let p = &mut self.pods[pod as usize];
        let rev = p.rev;
        p.step = PodStep::Terminating;
        let idle = p.in_flight == 0;
        let rv = &mut self.revs[rev as usize];
        rv.routable.retain(|&x| x != pod);
        rv.ready -= 1;
        rv.live -= 1;
        self.mesh_call(MeshCall::Event(ClusterEvent::EndpointRemoved {
            pod,
            revision: rev,
        }));
        for w in [
            ApiWrite::PodDelete,
            ApiWrite::EndpointSlice,
            ApiWrite::Endpoints,
        ] {
            self.submit(w, WriteOwner::Nobody);
        }
        if idle {
            self.delete_pod(pod);
        }
    }

    fn delete_pod(&mut self, pod: u32) {
        let now = self.now;
        let p = &mut self.pods[pod as usize];
        p.step = PodStep::Gone;
        let (rev, node, res, rss) = (p.rev, p.node, p.res, p.rss_mib);
        if let Some(n) = node {
            self.release(n - 1, &res);
            self.mem_change(n, -rss);
        }
        self.mesh_call(MeshCall::Event(ClusterEvent::PodDeleted {
            pod,
            revision: rev,
        }));
        if let Some(log) = &mut self.pod_log
            && let Some(r) = log.get_mut(pod as usize)
        {
            r.deleted_ns = Some(now);
        }
    }

    // ---------------------------------------------------------------- pod pipeline

    fn containers(&self) -> usize {
        self.injected.len() + 2
    }

    /// Start time of container `i`: injected ones, then the user container, then the
    /// queue-proxy (Knative's order).
    fn container_start_ns(&self, i: usize) -> u64 {
        match self.injected.get(i) {
            Some(c) => c.start_ns,
            None => self.cfg.kubernetes.pod_start.container_start_ms * MS,
        }
    }

    /// Time from now until `node`'s next PLEG relist (0 when the period is 0).
    fn until_pleg_relist(&self, node: u16) -> u64 {
        let period = self.cfg.kubernetes.pod_start.pleg_relist_period_ms * MS;
        if period == 0 {
            return 0;
        }
        // Relists at phase + k * period (phase < period).
        let since = (self.now + period - self.pleg_phase[usize::from(node)]) % period;
        (period - since) % period
    }

    /// A node-side step time with the configured spread (stream `kubelet/pod-start`).
    fn jitter(&mut self, ns: u64) -> u64 {
        let j = f64::from(self.cfg.kubernetes.pod_start.jitter_pct) / 100.0;
        if j == 0.0 || ns == 0 {
            return ns;
        }
        let f = 1.0 - j + 2.0 * j * self.start_rng.random::<f64>();
        (ns as f64 * f).round() as u64
    }

    fn pod_advance(&mut self, pod: u32) {
        let now = self.now;
        let step = self.pods[pod as usize].step;
        let rev = self.pods[pod as usize].rev;
        match step {
            PodStep::CreateWrite => {
                self.pods[pod as usize].step = PodStep::WatchSchedule;
                self.at(self.watch_ns, Ev::Pod { pod });
            }
            PodStep::WatchSchedule | PodStep::Unschedulable => {
                if step == PodStep::Unschedulable {
                    self.revs[rev as usize].unschedulable -= 1;
                }
                let res = self.pods[pod as usize].res;
                match self.scheduler.place(&res, &self.alloc) {
                    Placement::Node(w) => {
                        self.reserve(w, &res);
                        let p = &mut self.pods[pod as usize];
                        p.node = Some(w + 1);
                        p.step = PodStep::BindingWrite;
                        if let Some(log) = &mut self.pod_log {
                            log[pod as usize].node = Some(w + 1);
                        }
                        self.submit(ApiWrite::PodBinding, WriteOwner::Pod(pod));
                    }
                    Placement::Unschedulable => {
                        let max = self.cfg.kubernetes.unschedulable_max_backoff_ms * MS;
                        let p = &mut self.pods[pod as usize];
                        p.step = PodStep::Unschedulable;
                        let wait = p.backoff_ns;
                        p.backoff_ns = (p.backoff_ns * 2).min(max);
                        self.revs[rev as usize].unschedulable += 1;
                        self.at(wait, Ev::Pod { pod });
                    }
                }
            }
            PodStep::BindingWrite => {
                self.pods[pod as usize].step = PodStep::WatchKubelet;
                let node = self.pods[pod as usize].node.unwrap_or(0);
                self.mesh_call(MeshCall::Event(ClusterEvent::PodScheduled {
                    pod,
                    revision: rev,
                    node,
                }));
                self.at(self.watch_ns, Ev::Pod { pod });
            }
            PodStep::WatchKubelet => {
                self.pods[pod as usize].step = PodStep::Sandbox;
                let cpu = self.cfg.kubernetes.pod_start.node_cpu_ms_per_start * MS;
                if cpu > 0
                    && let Some(node) = self.pods[pod as usize].node
                {
                    self.add_job(node, cpu, JobOwner::Background, CpuCategory::System);
                }
                let d = self.jitter(self.cfg.kubernetes.pod_start.sandbox_create_ms * MS);
                self.at(d, Ev::Pod { pod });
            }
            PodStep::Sandbox => {
                // The kubelet reports the IP asynchronously; containers start meanwhile.
                self.submit(ApiWrite::PodStatusRunning, WriteOwner::Nobody);
                self.pods[pod as usize].step = PodStep::Container(0);
                let d = self.jitter(self.container_start_ns(0));
                self.at(d, Ev::Pod { pod });
            }
            PodStep::Container(i) => {
                let i = usize::from(i);
                let node = self.pods[pod as usize].node.expect("scheduled");
                let (user_rss, qp_rss) = (
                    self.cfg.knative.user_runtime_rss_mib,
                    self.cfg.knative.queue_proxy_rss_mib,
                );
                let rss = match self.injected.get(i).copied() {
                    Some(c) => {
                        for _ in 0..c.api_writes {
                            self.submit(ApiWrite::MeshContainer, WriteOwner::Nobody);
                        }
                        if c.kind == ContainerKind::Sidecar {
                            self.mesh_call(MeshCall::Event(ClusterEvent::SidecarStarted {
                                pod,
                                revision: rev,
                                node,
                            }));
                            f64::from(c.rss_mib)
                        } else {
                            0.0
                        }
                    }
                    None if i == self.injected.len() => {
                        let init = self.jitter(self.cfg.kubernetes.pod_start.app_init_ms * MS);
                        self.pods[pod as usize].user_started = now;
                        self.pods[pod as usize].app_ready_at = now + init;
                        f64::from(user_rss)
                    }
                    None => f64::from(qp_rss),
                };
                self.pods[pod as usize].rss_mib += rss;
                self.mem_change(node, rss);
                if i + 1 < self.containers() {
                    self.pods[pod as usize].step = PodStep::Container((i + 1) as u8);
                    // An init container has run to completion; the kubelet starts the next
                    // container once its PLEG relist has seen the exit.
                    let init = self
                        .injected
                        .get(i)
                        .is_some_and(|c| c.kind == ContainerKind::Init);
                    let pleg = if init {
                        self.until_pleg_relist(node)
                    } else {
                        0
                    };
                    let d = pleg + self.jitter(self.container_start_ns(i + 1));
                    self.at(d, Ev::Pod { pod });
                } else {
                    // The queue-proxy probes the user container every probe period from now
                    // on; the first success comes once the app has initialised.
                    let ps = &self.cfg.kubernetes.pod_start;
                    let ready_at = self.pods[pod as usize].app_ready_at;
                    let period = ps.readiness_probe_period_ms * MS;
                    let wait = ready_at.saturating_sub(now).div_ceil(period) * period;
                    self.pods[pod as usize].step = PodStep::Probing;
                    self.at(wait, Ev::Pod { pod });
                }
            }
            PodStep::Probing => {
                let gated = self.injected.iter().any(|c| c.ready_gate);
                if gated && let Err(retry) = self.mesh.container_ready(SimTime(now), pod) {
                    self.at(retry.max(1), Ev::Pod { pod });
                    return;
                }
                self.pods[pod as usize].step = PodStep::ReadyWrite;
                self.submit(ApiWrite::PodStatusReady, WriteOwner::Pod(pod));
            }
            PodStep::ReadyWrite => {
                self.pods[pod as usize].step = PodStep::WatchEndpoints;
                self.at(self.watch_ns, Ev::Pod { pod });
            }
            PodStep::WatchEndpoints => {
                self.pods[pod as usize].step = PodStep::EndpointsWrite;
                self.submit(ApiWrite::EndpointSlice, WriteOwner::Pod(pod));
            }
            PodStep::EndpointsWrite => {
                self.submit(ApiWrite::Endpoints, WriteOwner::Nobody);
                self.submit(ApiWrite::ReplicaSetStatus, WriteOwner::Nobody);
                self.revs[rev as usize].ready += 1;
                self.mesh_call(MeshCall::Event(ClusterEvent::EndpointReady {
                    pod,
                    revision: rev,
                }));
                self.pods[pod as usize].step = PodStep::WatchActivator;
                self.at(self.watch_ns, Ev::Pod { pod });
            }
            PodStep::WatchActivator => {
                // The activator probes the new pod: one round trip.
                self.pods[pod as usize].step = PodStep::ActivatorProbe;
                self.at(2 * self.hop_ns, Ev::Pod { pod });
            }
            PodStep::ActivatorProbe => {
                if !self.mesh.endpoint_visible(SimTime(now), pod) {
                    let d = self.cfg.knative.activator_probe_period_ms * MS;
                    self.at(d, Ev::Pod { pod });
                    return;
                }
                let p = &mut self.pods[pod as usize];
                p.step = PodStep::Routable;
                p.routable_at = Some(now);
                if let Some(log) = &mut self.pod_log {
                    log[pod as usize].routable_ns = Some(now);
                }
                self.revs[rev as usize].routable.push(pod);
                self.flush_buffer(rev);
            }
            PodStep::Routable | PodStep::Terminating | PodStep::Gone => {}
        }
    }

    // ---------------------------------------------------------------- autoscaler

    fn tick(&mut self) {
        let now = self.now;
        let kn = &self.cfg.knative;
        let (stable_s, panic_s) = (kn.stable_window_s, kn.panic_window_s);
        let end_s = now / SEC;
        let revs = std::mem::take(&mut self.active_revs);
        let mut keep = Vec::with_capacity(revs.len());
        for rev in revs {
            let rv = &mut self.revs[rev as usize];
            rv.window.advance(now);
            let input = ScaleInput {
                now: SimTime(now),
                ready_pods: rv.ready,
                current_pods: rv.live,
                stable_concurrency: rv.window.average(end_s, stable_s),
                panic_concurrency: rv.window.average(end_s, panic_s),
            };
            let d = self.autoscaler.decide(rev, &input);
            let rv = &mut self.revs[rev as usize];
            rv.mode = d.mode;
            if (d.desired, d.panicking) != (rv.last_desired, rv.last_panicking) {
                rv.last_desired = d.desired;
                rv.last_panicking = d.panicking;
                if let Some(log) = &mut self.as_log {
                    log.push(AutoscalerRecord {
                        at_ns: now,
                        function: rev,
                        ready_pods: input.ready_pods,
                        stable_concurrency: input.stable_concurrency,
                        panic_concurrency: input.panic_concurrency,
                        desired: d.desired,
                        panicking: d.panicking,
                        serve_mode: d.mode == DataPathMode::Serve,
                    });
                }
            }
            let max_scale = self.cfg.knative.max_scale;
            let applied = if max_scale > 0 {
                d.desired.min(max_scale)
            } else {
                d.desired
            };
            self.apply_target(rev, applied);
            let rv = &mut self.revs[rev as usize];
            let idle = rv.live == 0
                && rv.target == 0
                && rv.chain.is_none()
                && rv.window.concurrency() == 0
                && rv.buffered_live == 0;
            if idle {
                rv.active = false;
                rv.last_desired = 0;
                rv.last_panicking = false;
                self.autoscaler.forget(rev);
            } else {
                keep.push(rev);
            }
        }
        // Revisions activated during this tick were pushed onto the (taken) list's
        // replacement; keep them too.
        keep.append(&mut self.active_revs);
        self.active_revs = keep;
        if self.active_revs.is_empty() {
            self.tick_pending = false;
        } else {
            self.at(self.tick_ns, Ev::Tick);
        }
    }

    // ---------------------------------------------------------------- results

    fn finish_run(mut self) -> EngineResult {
        let end = self.now;
        for i in 0..self.nodes.len() {
            self.account_cpu(i as u16);
        }
        // Memory stays as it is until the end of the last (partial) second, so that second's
        // average is not diluted.
        self.now = end.div_ceil(SEC) * SEC;
        for i in 0..self.nodes.len() {
            self.mem_change(i as u16, 0.0);
        }
        self.now = end;
        let seconds = self
            .nodes
            .iter()
            .map(|n| n.series.seconds())
            .max()
            .unwrap_or(0)
            .max(end.div_ceil(SEC) as usize);
        let window = self.opts.window_s.map_or(seconds, |w| w as usize);
        let mut node_seconds = Vec::with_capacity(seconds * self.nodes.len());
        let (mut wcpu, mut wmem, mut cpcpu) = (Vec::new(), Vec::new(), Vec::new());
        for s in 0..seconds {
            for (i, n) in self.nodes.iter().enumerate() {
                let row = n.series.row(s, i as u16, i == 0);
                if s < window {
                    if i == 0 {
                        cpcpu.push(row.cpu_cores.total());
                    } else {
                        wcpu.push(row.cpu_cores.total());
                        wmem.push(row.memory_gib);
                    }
                }
                node_seconds.push(row);
            }
        }
        let c = &self.collector;
        let sd = |q: f64| c.slowdown.quantile(q) as f64 / SLOWDOWN_SCALE;
        let finished = c.completed + c.failed;
        let summary = ScenarioSummary {
            invocations: c.arrived,
            completed: c.completed,
            failed: c.failed,
            failure_rate: if finished == 0 {
                0.0
            } else {
                c.failed as f64 / finished as f64
            },
            failures_by_reason: c
                .by_reason
                .iter()
                .map(|(r, n)| (r.as_str().to_owned(), *n))
                .collect(),
            cold_starts: c.cold,
            slowdown: SlowdownSummary {
                p50: sd(0.5),
                p90: sd(0.9),
                p95: sd(0.95),
                p99: sd(0.99),
                max: c.slowdown.max() as f64 / SLOWDOWN_SCALE,
            },
            per_function_slowdown: c.per_function_slowdown(),
            cold_start_s: ColdStartSummary {
                p50: c.cold_start_ns.quantile(0.5) as f64 / SEC as f64,
                p99: c.cold_start_ns.quantile(0.99) as f64 / SEC as f64,
            },
            worker_cpu_cores: p50_p95(&mut wcpu),
            worker_mem_gib: p50_p95(&mut wmem),
            cp_cpu_cores: p50_p95(&mut cpcpu),
            xds: self.mesh.xds(),
            sim: SimStats {
                events: self.events,
                wall_s: 0.0,
                events_per_s: 0.0,
            },
        };
        EngineResult {
            summary,
            invocations: self.records,
            node_seconds,
            events: self.events,
            digest: self.digest,
            in_flight: self.in_flight,
            arrived: self.collector.arrived,
            pods_started: self.pods_started,
            queue_proxy_waits: self.queue_proxy_waits,
            queue_proxy_max_waiting: self.queue_proxy_max_waiting,
            api_writes: self.cp.committed,
            end: SimTime(end),
            pods: self.pod_log,
            autoscaler: self.as_log,
            xds_transactions: self.mesh.take_xds_transactions(),
        }
    }
}
