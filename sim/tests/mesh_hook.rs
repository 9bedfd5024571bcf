//! The mesh hook works end to end: a toy mesh injects an init container and a gated sidecar,
//! adds sidecar hops, rejects one function's requests, and "pushes config" through timers and
//! CPU work on the control-plane node. Times are exact (pod-start jitter 0); see
//! `scenarios.rs` for the notation.

use meshsim_models::SimConfig;
use meshsim_sim::cpu::CpuCategory;
use meshsim_sim::mesh::{
    ClusterEvent, ContainerKind, ContainerSpec, HopCtx, HopDecision, HopPoint, MeshAction, MeshCtx,
    SidecarHop, SidecarModel, SystemPod,
};
use meshsim_sim::metrics::{FailureReason, PayloadBytes, XdsSummary};
use meshsim_sim::time::{MS, US};
use meshsim_sim::{FunctionSpec, SimOptions, SimTime, Simulation};
use meshsim_traces::Invocation;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

const PUSH_DELAY_NS: u64 = 2_000 * MS;
const RETRY_NS: u64 = 10 * MS;
const ENCODE_NS: u64 = 5 * MS;
const HOP: SidecarHop = SidecarHop {
    cpu_ns: MS,
    latency_ns: 2 * MS,
    background_cpu_ns: 0,
};

#[derive(Debug, Default)]
struct ToyMesh {
    containers: Vec<ContainerSpec>,
    configured: BTreeSet<u32>,
    pushes: u64,
    encoded: u64,
    /// What the test inspects after the run (shared with the test; test code only).
    log: Rc<RefCell<ToyLog>>,
}

#[derive(Debug, Default)]
struct ToyLog {
    system: Vec<(SystemPod, u16)>,
    finished: Vec<(u32, Option<u32>, Option<FailureReason>)>,
    /// (pod, when its sidecar container had started, ns).
    sidecar_started: Vec<(u32, u64)>,
}

impl ToyMesh {
    fn new() -> Self {
        Self {
            containers: vec![
                ContainerSpec {
                    kind: ContainerKind::Init,
                    start_ns: 95 * MS,
                    api_writes: 0,
                    cpu_request_millicores: 100,
                    memory_request_mib: 20,
                    rss_mib: 0,
                    ready_gate: false,
                },
                ContainerSpec {
                    kind: ContainerKind::Sidecar,
                    start_ns: 81 * MS,
                    api_writes: 1,
                    cpu_request_millicores: 100,
                    memory_request_mib: 128,
                    rss_mib: 50,
                    ready_gate: true,
                },
            ],
            ..Self::default()
        }
    }
}

impl SidecarModel for ToyMesh {
    fn name(&self) -> &str {
        "toy"
    }
    fn injected_containers(&self) -> &[ContainerSpec] {
        &self.containers
    }
    fn hop(&mut self, ctx: &HopCtx) -> HopDecision {
        match ctx.point {
            HopPoint::GatewayOut => HopDecision::Pass,
            HopPoint::Pod if ctx.function == 1 => HopDecision::Reject {
                hop: HOP,
                reason: FailureReason::RateLimited,
            },
            _ => HopDecision::Through(HOP),
        }
    }
    fn container_ready(&mut self, _: SimTime, pod: u32) -> Result<(), u64> {
        if self.configured.contains(&pod) {
            Ok(())
        } else {
            Err(RETRY_NS)
        }
    }
    fn on_cluster_event(&mut self, ctx: &mut MeshCtx<'_>, ev: ClusterEvent) {
        if let ClusterEvent::SystemPodPlaced { kind, node } = ev {
            self.log.borrow_mut().system.push((kind, node));
        }
        if let ClusterEvent::SidecarStarted { pod, .. } = ev {
            self.log.borrow_mut().sidecar_started.push((pod, ctx.now.0));
        }
        if let ClusterEvent::PodScheduled { pod, .. } = ev {
            ctx.act(MeshAction::Timer {
                delay_ns: PUSH_DELAY_NS,
                token: u64::from(pod),
            });
        }
    }
    fn on_timer(&mut self, ctx: &mut MeshCtx<'_>, token: u64) {
        self.configured.insert(token as u32);
        self.pushes += 1;
        ctx.act(MeshAction::Memory {
            node: 0,
            delta_mib: 512.0,
        });
        ctx.act(MeshAction::Cpu {
            node: 0,
            work_ns: ENCODE_NS,
            category: CpuCategory::Xds,
            token,
        });
    }
    fn on_cpu_done(&mut self, _: &mut MeshCtx<'_>, _: u64) {
        self.encoded += 1;
    }
    fn on_request_finished(
        &mut self,
        _: SimTime,
        function: u32,
        pod: Option<u32>,
        failure: Option<FailureReason>,
    ) {
        self.log
            .borrow_mut()
            .finished
            .push((function, pod, failure));
    }
    fn endpoint_visible(&mut self, _: SimTime, _: u32) -> bool {
        true
    }
    fn xds(&self) -> XdsSummary {
        XdsSummary {
            transactions: self.pushes,
            bytes: self.encoded * 1000,
            payload_bytes: PayloadBytes {
                p50: 1000,
                p80: 1000,
                p99: 1000,
                max: 1000,
            },
        }
    }
}

#[test]
fn toy_mesh_changes_pipeline_path_failures_and_xds() {
    let mut cfg = SimConfig::default();
    cfg.kubernetes.pod_start.jitter_pct = 0;
    // The kubelet notices the init container's exit at once (the PLEG wait has its own test).
    cfg.kubernetes.pod_start.pleg_relist_period_ms = 0;
    cfg.validate().unwrap();
    let (h, q) = (
        cfg.cluster.network_hop_us * US,
        cfg.knative.queue_proxy_cpu_us * US,
    );
    let (s, w) = (WRITE_NS, cfg.kubernetes.watch_delay_ms * MS);
    let sb = cfg.kubernetes.pod_start.sandbox_create_ms * MS;
    let c = cfg.kubernetes.pod_start.container_start_ms * MS;
    let e = 100 * MS;
    let specs = [FunctionSpec {
        memory_request_mib: 128,
    }; 2];
    let opts = SimOptions {
        record_invocations: true,
        record_pods: true,
        ..SimOptions::default()
    };
    let invs = vec![
        Invocation {
            at_ns: 0,
            function: 0,
            exec_ns: e,
            memory_mb: 10.0,
        },
        Invocation {
            at_ns: 10_000 * MS,
            function: 1,
            exec_ns: e,
            memory_mb: 10.0,
        },
    ];
    let mesh = ToyMesh::new();
    let log = mesh.log.clone();
    let r = Simulation::new(&cfg, &specs, Box::new(mesh), opts).run(
        invs.into_iter(),
        2,
        &mut |_, _| {},
    );
    let recs = r.invocations.unwrap();
    // The containers (init, sidecar, user, queue-proxy) are up 862 ms after the watch +
    // sandbox; the sidecar's config arrives 2 s after the binding, so readiness waits for the
    // first 10 ms retry after it.
    let (t_buf, binding) = buffered_and_bound(&cfg);
    let all_started = binding + w + sb + (95 + 81) * MS + 2 * c;
    let config = binding + PUSH_DELAY_NS;
    let ready = all_started + (config - all_started).div_ceil(RETRY_NS) * RETRY_NS;
    // Two more writes (Ready, EndpointSlice) with their watch delays, then the probe.
    let routable = ready + 2 * (s + w) + 2 * h;
    let ok = recs.iter().find(|r| r.function == 0).unwrap();
    assert_eq!(ok.failure, None);
    assert_eq!(ok.cold_start_ns, routable - t_buf);
    assert_eq!(
        ok.end_to_end_ns,
        routable + h + HOP.cpu_ns + HOP.latency_ns + q + e + 2 * h
    );
    // Function 1's pod starts the same way, later, but its requests are refused by the pod's
    // sidecar after the sidecar's work and latency.
    let bad = recs.iter().find(|r| r.function == 1).unwrap();
    assert_eq!(bad.failure, Some(FailureReason::RateLimited));
    assert!(bad.cold);
    assert_eq!(
        bad.end_to_end_ns,
        routable + h + HOP.cpu_ns + HOP.latency_ns,
        "same pipeline, then one hop and the sidecar"
    );
    assert_eq!(r.summary.failures_by_reason.get("rate-limited"), Some(&1));
    // Two pushes (one per pod), each 5 ms of xDS CPU on the control-plane node.
    assert_eq!(r.summary.xds.transactions, 2);
    assert_eq!(r.summary.xds.bytes, 2000);
    let xds_core_s: f64 = r
        .node_seconds
        .iter()
        .filter(|n| n.control_plane)
        .map(|n| n.cpu_cores.xds)
        .sum();
    assert!((xds_core_s - 0.010).abs() < 1e-9, "{xds_core_s}");
    let sidecar_core_s: f64 = r.node_seconds.iter().map(|n| n.cpu_cores.sidecar).sum();
    // Activator sidecar for both requests, pod sidecar for both (one rejected after its work).
    assert!((sidecar_core_s - 0.004).abs() < 1e-9, "{sidecar_core_s}");
    // The control plane's memory: its base plus 512 MiB per push, at the end of the run.
    let last_cp = r.node_seconds.iter().rfind(|n| n.control_plane).unwrap();
    let want = cfg.cluster.control_plane_base_memory_gib + 1.0;
    assert!(
        (last_cp.memory_gib - want).abs() < 1e-9,
        "{}",
        last_cp.memory_gib
    );
    assert_eq!(r.in_flight, 0);
    // The mesh was told where the gateway and the activator run, and of both outcomes.
    let log = log.borrow();
    assert_eq!(
        log.system,
        vec![(SystemPod::Gateway, 1), (SystemPod::Activator, 2)]
    );
    assert_eq!(
        log.finished,
        vec![
            (0, Some(0), None),
            (1, Some(1), Some(FailureReason::RateLimited))
        ]
    );
}

/// One API write at the default 25 writes/s, ns.
const WRITE_NS: u64 = 40 * MS;

/// When the first request is buffered at the activator (after the gateway, a hop, the
/// activator's sidecar and the activator) and when its pod's Binding commits (5 writes and
/// their watch delays later), ns.
fn buffered_and_bound(cfg: &SimConfig) -> (u64, u64) {
    let t_buf = cfg.knative.gateway_cpu_us * US
        + cfg.cluster.network_hop_us * US
        + HOP.cpu_ns
        + HOP.latency_ns
        + cfg.knative.activator_cpu_us * US;
    let w = cfg.kubernetes.watch_delay_ms * MS;
    (t_buf, t_buf + 5 * (WRITE_NS + w) - w)
}

/// When the toy mesh's sidecar of the first pod started, for a config and seed; and the time
/// it would start if the kubelet noticed the init container's exit at once.
fn sidecar_start(cfg: &SimConfig, seed: u64, init: bool) -> (u64, u64) {
    let mut mesh = ToyMesh::new();
    if !init {
        mesh.containers.remove(0);
    }
    let log = mesh.log.clone();
    let specs = [FunctionSpec {
        memory_request_mib: 128,
    }];
    let opts = SimOptions {
        seed,
        ..SimOptions::default()
    };
    let inv = Invocation {
        at_ns: 0,
        function: 0,
        exec_ns: 100 * MS,
        memory_mb: 10.0,
    };
    Simulation::new(cfg, &specs, Box::new(mesh), opts).run(std::iter::once(inv), 1, &mut |_, _| {});
    let (_, binding) = buffered_and_bound(cfg);
    let w = cfg.kubernetes.watch_delay_ms * MS;
    let containers = if init { (95 + 81) * MS } else { 81 * MS };
    let at_once = binding + w + cfg.kubernetes.pod_start.sandbox_create_ms * MS + containers;
    let started = log.borrow().sidecar_started[0];
    assert_eq!(started.0, 0);
    (started.1, at_once)
}

#[test]
fn after_an_init_container_the_next_container_waits_for_the_nodes_pleg_relist() {
    let mut cfg = SimConfig::default();
    cfg.kubernetes.pod_start.jitter_pct = 0;
    let period = cfg.kubernetes.pod_start.pleg_relist_period_ms * MS;
    assert_eq!(period, 1_000 * MS, "Kubernetes' genericPlegRelistPeriod");
    let mut waits = BTreeSet::new();
    for seed in 1..=8 {
        let (started, at_once) = sidecar_start(&cfg, seed, true);
        assert!(started >= at_once, "seed {seed}: {started} < {at_once}");
        let wait = started - at_once;
        assert!(wait < period, "seed {seed}: waited {wait} ns for a relist");
        waits.insert(wait);
        // Without an init container nothing waits for a relist.
        let (started, at_once) = sidecar_start(&cfg, seed, false);
        assert_eq!(started, at_once, "seed {seed}: no init container");
    }
    assert!(
        waits.len() > 4,
        "each node relists in its own phase, drawn per seed: {waits:?}"
    );
    cfg.kubernetes.pod_start.pleg_relist_period_ms = 0;
    for seed in 1..=3 {
        let (started, at_once) = sidecar_start(&cfg, seed, true);
        assert_eq!(
            started, at_once,
            "seed {seed}: period 0 notices the exit at once"
        );
    }
}
