//! The mesh models of issue 5: one tiny scenario per stateful policy, the sidecar's readiness
//! gate, xDS payload scaling per config scope, and determinism + conservation for every
//! built-in profile.

use meshsim_models::calibration::CalibrationFile;
use meshsim_models::mesh::{BUILTIN_PROFILES, MeshProfile};
use meshsim_models::xds_sizes::{PolicySet, Scope, View};
use meshsim_models::{SimConfig, XdsSizes};
use meshsim_sim::mesh::{
    ClusterEvent, HopCtx, HopDecision, HopPoint, MeshCtx, ProxyKind, SidecarModel, XdsType,
};
use meshsim_sim::meshmodel::{MeshInputs, MeshModel};
use meshsim_sim::metrics::FailureReason;
use meshsim_sim::time::{MS, SEC};
use meshsim_sim::{FunctionSpec, RunOptions, SimOptions, SimTime, Simulation};
use meshsim_traces::Invocation;
use std::sync::{Arc, OnceLock};

fn sizes() -> &'static XdsSizes {
    static S: OnceLock<XdsSizes> = OnceLock::new();
    S.get_or_init(|| {
        XdsSizes::from_toml_str(include_str!("data/xds-sizes-fixture.toml")).expect("fixture")
    })
}

fn calibration() -> &'static CalibrationFile {
    static C: OnceLock<CalibrationFile> = OnceLock::new();
    C.get_or_init(CalibrationFile::reference)
}

fn inputs(record_xds: bool) -> MeshInputs<'static> {
    MeshInputs {
        calibration: calibration(),
        xds_sizes: Some(sizes()),
        record_xds,
    }
}

/// Two minutes of the InVitro example trace through `p` with calibration `cal` (default
/// config): (sidecar core-seconds, slowdown p50, slowdown p99).
fn short_run(p: &MeshProfile, cal: &CalibrationFile) -> (f64, f64, f64) {
    let trace = meshsim_traces::embedded::load("invitro-example")
        .unwrap()
        .unwrap();
    let trace = Arc::new(trace.window(2).unwrap());
    let inputs = MeshInputs {
        calibration: cal,
        xds_sizes: Some(sizes()),
        record_xds: false,
    };
    let r = meshsim_sim::run_profile(
        trace,
        &SimConfig::default(),
        p,
        inputs,
        &RunOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
    let sidecar: f64 = r.node_seconds.iter().map(|n| n.cpu_cores.sidecar).sum();
    (sidecar, r.summary.slowdown.p50, r.summary.slowdown.p99)
}

fn exact_cfg() -> SimConfig {
    let mut cfg = SimConfig::default();
    cfg.kubernetes.pod_start.jitter_pct = 0;
    cfg
}

fn model(p: &MeshProfile, functions: usize, record_xds: bool) -> MeshModel {
    MeshModel::new(p, &exact_cfg(), functions, inputs(record_xds), 1, 0).expect("model")
}

fn profile(name: &str, policies: &[&str]) -> MeshProfile {
    let p = MeshProfile::builtin(name).unwrap();
    let pol: Vec<String> = policies.iter().map(|s| s.to_string()).collect();
    p.with_policies(&pol).unwrap()
}

fn inv(at_ms: u64, function: u32, exec_ms: u64) -> Invocation {
    Invocation {
        at_ns: at_ms * MS,
        function,
        exec_ns: exec_ms * MS,
        memory_mb: 10.0,
    }
}

fn simulate(
    mesh: MeshModel,
    functions: usize,
    invs: Vec<Invocation>,
) -> meshsim_sim::engine::EngineResult {
    simulate_with(&exact_cfg(), Box::new(mesh), functions, invs)
}

/// [`simulate`] with another config and any mesh hook.
fn simulate_with(
    cfg: &SimConfig,
    mesh: Box<dyn SidecarModel>,
    functions: usize,
    invs: Vec<Invocation>,
) -> meshsim_sim::engine::EngineResult {
    let specs = vec![
        FunctionSpec {
            memory_request_mib: 128
        };
        functions
    ];
    let opts = SimOptions {
        record_invocations: true,
        record_pods: true,
        ..SimOptions::default()
    };
    let n = invs.len() as u64;
    Simulation::new(cfg, &specs, mesh, opts).run(invs.into_iter(), n, &mut |_, _| {})
}

/// A request for `pod`, the revision's only busy pod, which holds `in_flight` requests.
fn pod_ctx(now: u64, pod: u32, in_flight: u32) -> HopCtx {
    HopCtx {
        now: SimTime(now),
        point: HopPoint::Pod,
        node: 1,
        function: 0,
        pod: Some(pod),
        pod_in_flight: in_flight,
        rev_in_flight: in_flight,
        rev_pending: 0,
    }
}

fn schedule(m: &mut MeshModel, pod: u32) {
    let mut actions = Vec::new();
    let mut ctx = MeshCtx::new(SimTime(0), 10, &mut actions);
    m.on_cluster_event(
        &mut ctx,
        ClusterEvent::PodScheduled {
            pod,
            revision: 0,
            node: 1,
        },
    );
}

#[test]
fn rate_limit_rejects_the_request_after_the_limit_in_a_window() {
    let mut p = profile("istio", &["rate_limit"]);
    p.policy.rate_limit_requests = 2;
    p.policy.rate_limit_window_ms = 1000;
    let mut m = model(&p, 1, false);
    schedule(&mut m, 0);
    let d: Vec<_> = (0..3).map(|i| m.hop(&pod_ctx(i * MS, 0, 0))).collect();
    assert!(matches!(d[0], HopDecision::Through(_)));
    assert!(matches!(d[1], HopDecision::Through(_)));
    assert!(matches!(
        d[2],
        HopDecision::Reject {
            reason: FailureReason::RateLimited,
            ..
        }
    ));
    // A new window admits again.
    assert!(matches!(
        m.hop(&pod_ctx(SEC, 0, 0)),
        HopDecision::Through(_)
    ));
    // The RPC to the rate-limit service on the control-plane node: a round trip plus its
    // service time, queued behind the previous checks in a burst.
    let base = m.pod_hop().latency_ns;
    let HopDecision::Through(h) = m.hop(&pod_ctx(SEC + 1, 0, 0)) else {
        panic!()
    };
    let rtt = 2 * exact_cfg().cluster.network_hop_us * 1000;
    let service = (p.policy.rate_limit_service_cpu_us * 1e3) as u64;
    assert_eq!(h.latency_ns, base + rtt + service + (service - 1));

    // End to end: three buffered requests flushed into one pod in the same window.
    let r = simulate(
        model(&p, 1, false),
        1,
        vec![inv(0, 0, 10), inv(1, 0, 10), inv(2, 0, 10)],
    );
    assert_eq!(r.summary.failures_by_reason.get("rate-limited"), Some(&1));
    assert_eq!(r.summary.completed, 2);
}

#[test]
fn circuit_breaker_queues_beyond_its_connections_and_overflows_beyond_pending() {
    // The decision: with one connection and one pending place per revision, a request finds a
    // connection, waits for one, or overflows.
    let mut p = profile("istio", &["circuit_breaker"]);
    p.policy.cb_max_connections = 1;
    p.policy.cb_max_pending_requests = 1;
    let mut m = model(&p, 1, false);
    schedule(&mut m, 0);
    let at = |held: u32, waiting: u32| HopCtx {
        rev_pending: waiting,
        ..pod_ctx(0, 0, held)
    };
    assert!(matches!(m.hop(&at(0, 0)), HopDecision::Through(_)));
    assert!(matches!(m.hop(&at(1, 0)), HopDecision::Pending));
    assert!(matches!(
        m.hop(&at(1, 1)),
        HopDecision::Reject {
            reason: FailureReason::CircuitOpen,
            ..
        }
    ));

    // Played out: three requests reach the one pod together. The first runs, the second waits
    // in the calling proxy for the first's connection and then runs, the third overflows.
    let r = simulate(model(&p, 1, false), 1, vec![inv(0, 0, 100); 3]);
    assert_eq!(r.summary.completed, 2);
    assert_eq!(r.summary.failures_by_reason.get("circuit-open"), Some(&1));
    assert_eq!(r.pods_started, 1);
    let recs = r.invocations.unwrap();
    let done: Vec<_> = recs.iter().filter(|x| x.failure.is_none()).collect();
    let (first, second) = (done[0], done[1]);
    assert_eq!(first.queue_ns, 0);
    // The wait is the first one's time at its pod: its execution and what comes with it.
    assert!(
        second.queue_ns >= 100 * MS && second.queue_ns < 110 * MS,
        "waited {} ns",
        second.queue_ns
    );
    assert!(second.end_to_end_ns >= first.end_to_end_ns + 100 * MS);

    // A woken request the pod's hop refuses (here: over the rate limit) takes no connection,
    // so the next waiting one is woken at once instead of waiting for its deadline.
    let mut p = profile("istio", &["circuit_breaker", "rate_limit"]);
    p.policy.cb_max_connections = 1;
    p.policy.cb_max_pending_requests = 10;
    p.policy.rate_limit_requests = 1;
    p.policy.rate_limit_window_ms = 60_000;
    let r = simulate(model(&p, 1, false), 1, vec![inv(0, 0, 100); 4]);
    assert_eq!(r.summary.completed, 1);
    assert_eq!(r.summary.failures_by_reason.get("rate-limited"), Some(&3));
    assert_eq!(r.summary.failures_by_reason.get("timeout"), None);

    // Defaults (1024 of each) never hold anything back here.
    let p = profile("istio", &["circuit_breaker"]);
    let r = simulate(model(&p, 1, false), 1, vec![inv(0, 0, 100); 3]);
    assert_eq!(r.summary.completed, 3);
    assert!(r.invocations.unwrap().iter().all(|x| x.queue_ns == 0));
}

#[test]
fn circuit_breaker_opens_at_its_limit_and_recovers() {
    let mut p = profile("istio", &["circuit_breaker"]);
    p.policy.cb_max_requests = 2;
    let mut m = model(&p, 1, false);
    schedule(&mut m, 0);
    assert!(matches!(m.hop(&pod_ctx(0, 0, 1)), HopDecision::Through(_)));
    assert!(matches!(
        m.hop(&pod_ctx(0, 0, 2)),
        HopDecision::Reject {
            reason: FailureReason::CircuitOpen,
            ..
        }
    ));
    assert!(matches!(m.hop(&pod_ctx(MS, 0, 1)), HopDecision::Through(_)));
    // Envoy counts max_requests per upstream cluster (the revision), not per host: an idle pod
    // is refused too when the revision's other pods hold the limit.
    schedule(&mut m, 1);
    let idle_pod = HopCtx {
        pod: Some(1),
        pod_in_flight: 0,
        rev_in_flight: 2,
        ..pod_ctx(2 * MS, 1, 0)
    };
    assert!(matches!(
        m.hop(&idle_pod),
        HopDecision::Reject {
            reason: FailureReason::CircuitOpen,
            ..
        }
    ));

    // Outlier detection: 5 consecutive 5xx eject the pod for 30 s, then it serves again.
    let mut p = profile("istio", &["circuit_breaker"]);
    p.policy.upstream_5xx_rate = 1.0;
    p.policy.cb_consecutive_5xx = 3;
    p.policy.cb_ejection_ms = 30_000;
    let mut m = model(&p, 1, false);
    schedule(&mut m, 0);
    for _ in 0..2 {
        assert!(matches!(
            m.hop(&pod_ctx(0, 0, 0)),
            HopDecision::Reject {
                reason: FailureReason::RetriesExhausted,
                ..
            }
        ));
    }
    assert!(matches!(
        m.hop(&pod_ctx(0, 0, 0)),
        HopDecision::Reject {
            reason: FailureReason::CircuitOpen,
            ..
        }
    ));
    // Ejected: refused without an attempt until the ejection ends.
    assert!(matches!(
        m.hop(&pod_ctx(29_999 * MS, 0, 0)),
        HopDecision::Reject {
            reason: FailureReason::CircuitOpen,
            ..
        }
    ));
    assert!(matches!(
        m.hop(&pod_ctx(30_000 * MS, 0, 0)),
        HopDecision::Reject {
            reason: FailureReason::RetriesExhausted,
            ..
        }
    ));
}

#[test]
fn a_5xx_is_retried_at_most_twice() {
    let mut p = profile("istio", &["retry"]);
    p.policy.upstream_5xx_rate = 1.0;
    let mut m = model(&p, 1, false);
    schedule(&mut m, 0);
    let base = m.pod_hop();
    let HopDecision::Reject { hop, reason } = m.hop(&pod_ctx(0, 0, 0)) else {
        panic!("a 5xx every time must fail")
    };
    assert_eq!(reason, FailureReason::RetriesExhausted);
    // The first attempt and two retries, each through the proxy.
    assert_eq!(hop.cpu_ns, 3 * base.cpu_ns);
    assert_eq!(hop.latency_ns, 3 * base.latency_ns);
    assert_eq!(hop.background_cpu_ns, 3 * base.background_cpu_ns);
    // Without the retry policy: one attempt.
    let mut p = profile("istio", &["ports"]);
    p.policy.upstream_5xx_rate = 1.0;
    let mut m = model(&p, 1, false);
    schedule(&mut m, 0);
    let HopDecision::Reject { hop, .. } = m.hop(&pod_ctx(0, 0, 0)) else {
        panic!()
    };
    assert_eq!(hop.cpu_ns, m.pod_hop().cpu_ns);
}

#[test]
fn mtls_handshakes_on_new_connections_only() {
    let p = profile("istio", &["mtls"]);
    let mut m = model(&p, 1, false);
    schedule(&mut m, 0);
    let base = m.pod_hop().cpu_ns;
    let (hs, _) = m.handshake();
    // The calibrated handshake (both sides; RSA 2048, Istio's default keys) times
    // policy_cpu_scale; not Istio's per-request cpu_scale (the crypto is the same class of
    // library in Envoy and in the reference).
    let cal = calibration().mtls_handshake_rsa2048.as_ref().unwrap();
    let want = p.data_plane.policy_cpu_scale * cal.cpu_us() * 1e3;
    assert!(hs > 0 && (hs as f64 - want).abs() <= 1.0, "{hs} vs {want}");
    let cpu = |d: HopDecision| match d {
        HopDecision::Through(h) => h.cpu_ns,
        other => panic!("{other:?}"),
    };
    assert_eq!(cpu(m.hop(&pod_ctx(0, 0, 0))), base + hs);
    assert_eq!(cpu(m.hop(&pod_ctx(MS, 0, 0))), base, "connection reused");
    assert_eq!(
        cpu(m.hop(&pod_ctx(MS, 0, 1))),
        base + hs,
        "a second connection"
    );
}

#[test]
fn identity_based_authz_pays_for_the_mtls_it_needs() {
    // Istio's authz rules match source principals, so authz alone runs over mTLS: the same
    // handshake as the mtls policy, and the per-request cost of both policies.
    let authz = model(&profile("istio", &["authz"]), 1, false);
    let mtls = model(&profile("istio", &["mtls"]), 1, false);
    let both = model(&profile("istio", &["authz", "mtls"]), 1, false);
    assert!(authz.handshake().0 > 0);
    assert_eq!(authz.handshake(), mtls.handshake());
    assert_eq!(authz.pod_hop(), both.pod_hop());
    // (authz's own marginal cost in the reference is next to nothing, so at least mtls's.)
    assert!(authz.pod_hop().cpu_ns >= mtls.pod_hop().cpu_ns);
    // Control: without identity-based rules authz brings no handshake.
    let mut plain = profile("istio", &["authz"]);
    plain.policy.authz_needs_peer_identity = false;
    let plain = model(&plain, 1, false);
    assert_eq!(plain.handshake().0, 0);
    assert!(plain.pod_hop().cpu_ns < authz.pod_hop().cpu_ns);
}

#[test]
fn a_new_sidecar_serves_nothing_before_its_config_arrives() {
    let p = profile("istio", &[]);
    let r = {
        let mut m = model(&p, 1, true);
        // Unit: scheduled and started, no config yet -> not ready at any probe.
        let mut actions = Vec::new();
        let mut ctx = MeshCtx::new(SimTime(0), 10, &mut actions);
        m.on_cluster_event(
            &mut ctx,
            ClusterEvent::PodScheduled {
                pod: 0,
                revision: 0,
                node: 1,
            },
        );
        let mut ctx = MeshCtx::new(SimTime(SEC), 10, &mut actions);
        m.on_cluster_event(
            &mut ctx,
            ClusterEvent::SidecarStarted {
                pod: 0,
                revision: 0,
                node: 1,
            },
        );
        for t in [SEC, 5 * SEC, 60 * SEC] {
            assert!(m.container_ready(SimTime(t), 0).is_err());
        }
        simulate(model(&p, 1, true), 1, vec![inv(0, 0, 10)])
    };
    let pods = r.pods.unwrap();
    let routable = pods[0].routable_ns.unwrap();
    let tx = r.xds_transactions.unwrap();
    let sidecar_lds_ack = tx
        .iter()
        .filter(|t| t.proxy_kind == ProxyKind::Sidecar && t.xds_type == XdsType::Lds && t.ack)
        .map(|t| t.time_ns)
        .min()
        .expect("the sidecar got its listeners");
    assert!(sidecar_lds_ack < routable, "{sidecar_lds_ack} {routable}");
    // The sidecar's state of the world: CDS, EDS, LDS, RDS, in that order.
    let first: Vec<XdsType> = tx
        .iter()
        .filter(|t| t.proxy_kind == ProxyKind::Sidecar && !t.ack)
        .take(4)
        .map(|t| t.xds_type)
        .collect();
    assert_eq!(first, XdsType::ALL.to_vec());
    // The invocation started after the pod became routable.
    let rec = &r.invocations.unwrap()[0];
    assert_eq!(rec.failure, None);
    assert!(rec.cold && rec.arrival_ns + rec.end_to_end_ns >= routable + rec.exec_ns);
    assert!(r.summary.xds.transactions > 0 && r.summary.xds.bytes > 0);
}

#[test]
fn payload_grows_with_services_for_all_to_all_and_stays_flat_for_minimal() {
    let s = sizes();
    for scope in [Scope::AllToAll, Scope::Minimal] {
        let a = s
            .sotw_bytes(scope, View::Sidecar, PolicySet::None, 10, 0)
            .unwrap();
        let b = s
            .sotw_bytes(scope, View::Sidecar, PolicySet::None, 200, 0)
            .unwrap();
        let (ta, tb): (u64, u64) = (a.iter().sum(), b.iter().sum());
        match scope {
            Scope::AllToAll => assert!(tb > 5 * ta, "{ta} {tb}"),
            _ => assert_eq!(ta, tb),
        }
    }
    // Through the model: the new sidecar's CDS response for 10 vs 200 Knative services.
    let cds = |scope: Scope, functions: usize| {
        let mut p = profile("istio", &[]);
        p.control_plane.scope = scope;
        let r = simulate(model(&p, functions, true), functions, vec![inv(0, 0, 10)]);
        r.xds_transactions
            .unwrap()
            .iter()
            .find(|t| t.proxy_kind == ProxyKind::Sidecar && t.xds_type == XdsType::Cds && !t.ack)
            .map(|t| t.bytes)
            .unwrap()
    };
    assert!(cds(Scope::AllToAll, 200) > 5 * cds(Scope::AllToAll, 10));
    assert_eq!(cds(Scope::Minimal, 200), cds(Scope::Minimal, 10));
    // The ingress gateway receives every route: its RDS grows with the services.
    let gateway_rds = |functions: usize| {
        let r = simulate(
            model(&profile("istio", &[]), functions, true),
            functions,
            vec![inv(0, 0, 10)],
        );
        r.xds_transactions
            .unwrap()
            .iter()
            .find(|t| t.proxy_kind == ProxyKind::Gateway && t.xds_type == XdsType::Rds && !t.ack)
            .map(|t| t.bytes)
            .unwrap()
    };
    assert!(gateway_rds(200) > 5 * gateway_rds(10));
}

#[test]
fn every_profile_is_deterministic_and_conserves_invocations() {
    let trace = meshsim_traces::embedded::load("invitro-example")
        .unwrap()
        .unwrap();
    let small = Arc::new(trace.window(2).unwrap());
    // Also InVitro's shape (one request per pod, the activator always on the path), where
    // istio-policies' activator balances through the cluster IP, on 3 busy minutes.
    let mut invitro = SimConfig::default();
    invitro.knative.container_concurrency = 1;
    invitro.knative.target_burst_capacity = -1;
    let busy = Arc::new(meshsim_traces::embedded::default_trace().window(3).unwrap());
    let opts = RunOptions {
        seed: 7,
        replication: 0,
        record_invocations: false,
    };
    let setups = [(SimConfig::default(), small), (invitro, busy)];
    for (cfg, trace, name) in setups
        .iter()
        .flat_map(|(c, t)| BUILTIN_PROFILES.iter().map(move |n| (c, t, *n)))
    {
        let p = MeshProfile::builtin(name).unwrap();
        let run = || {
            meshsim_sim::run_profile(trace.clone(), cfg, &p, inputs(false), &opts, &mut |_, _| {})
                .unwrap()
        };
        let (a, b) = (run(), run());
        assert_eq!(a.digest, b.digest, "{name}: replay with seed 7 differs");
        assert_eq!(a.summary, b.summary, "{name}");
        let s = &a.summary;
        assert_eq!(
            s.invocations,
            s.completed + s.failed + a.in_flight,
            "{name}"
        );
        assert_eq!(a.in_flight, 0, "{name}");
        // By pod IP the activator never sends a request to a busy pod; through the cluster IP
        // it does.
        let cluster_ip = cfg.knative.container_concurrency > 0 && p.pod_ips_hidden_from_activator();
        assert_eq!(
            a.queue_proxy_waits > 0,
            cluster_ip,
            "{name}: {}",
            a.queue_proxy_waits
        );
        let failed: u64 = s.failures_by_reason.values().sum();
        assert_eq!(failed, s.failed, "{name}");
        if name == "none" {
            assert_eq!(s.xds.transactions, 0);
        }
        if name.starts_with("istio") {
            assert!(s.xds.transactions > 0, "{name}");
            let xds_cpu: f64 = a
                .node_seconds
                .iter()
                .filter(|n| n.control_plane)
                .map(|n| n.cpu_cores.xds)
                .sum();
            assert!(xds_cpu > 0.0, "{name}");
        }
    }
}

#[test]
fn selection_through_the_config_runs_the_profile() {
    let trace = meshsim_traces::embedded::load("invitro-example")
        .unwrap()
        .unwrap();
    let trace = Arc::new(trace.window(1).unwrap());
    let cfg = SimConfig::from_toml_str(
        "version = 1\n[mesh]\nprofile = \"istio\"\npolicies = [\"mtls\"]\nscope = \"minimal\"\n",
        "sel.toml",
    )
    .unwrap();
    let opts = RunOptions::default();
    let r = meshsim_sim::run_configured(trace, &cfg, inputs(false), &opts, &mut |_, _| {}).unwrap();
    assert!(r.summary.xds.transactions > 0);
    assert!(
        SimConfig::from_toml_str("version = 1\n[mesh]\nprofile = \"istioo\"\n", "x.toml").is_err()
    );
}

#[test]
fn raising_a_policy_cost_in_the_calibration_raises_cpu_and_slowdown() {
    let p = profile("istio", &["jwt"]);
    let run = |cal: &CalibrationFile| short_run(&p, cal);
    let base = calibration().clone();
    let mut dear = base.clone();
    for e in dear.entries.iter_mut().filter(|e| e.policy_set == "jwt") {
        e.cpu_us_per_request *= 20.0;
        // The cost model prefers the paired difference; without it, it reads this entry.
        e.cpu_us_over_pass_through = None;
    }
    let mut cheap = base.clone();
    for e in cheap.entries.iter_mut().filter(|e| e.policy_set == "jwt") {
        e.cpu_us_per_request = e.cpu_us_per_request.min(1.0);
        e.cpu_us_over_pass_through = None;
    }
    let (b, d, c) = (run(&base), run(&dear), run(&cheap));
    assert!(d.0 > b.0 && b.0 >= c.0, "{c:?} {b:?} {d:?}");
    assert!(d.1 >= b.1 && d.2 > b.2, "{b:?} {d:?}");
    assert!(c.1 <= b.1 && c.2 <= b.2, "{c:?} {b:?}");
}

/// The paper's "Istio without policies: one extra network stack traversal per invocation":
/// with the activator on every request's path (InVitro's target burst capacity -1), a warm
/// invocation passes through the pod's proxy only; mTLS (or authz by identity, which needs it)
/// brings the activator's proxy too: on the path, in memory and in the xDS pushes.
#[test]
fn istio_without_policies_puts_one_proxy_on_the_path_and_mtls_two() {
    struct Run {
        hops: u8,
        activator_xds: bool,
        memory_at_start_gib: f64,
    }
    let run = |p: Option<MeshProfile>| {
        let mut cfg = exact_cfg();
        cfg.knative.target_burst_capacity = -1;
        let mesh: Box<dyn SidecarModel> = match p {
            Some(p) => Box::new(MeshModel::new(&p, &cfg, 1, inputs(true), 1, 0).expect("model")),
            None => Box::new(meshsim_sim::mesh::NoMesh),
        };
        let r = simulate_with(
            &cfg,
            mesh,
            1,
            (0..40).map(|i| inv(i * 200, 0, 50)).collect(),
        );
        let warm: Vec<u8> = r
            .invocations
            .unwrap()
            .iter()
            .filter(|x| !x.cold && x.failure.is_none())
            .map(|x| x.proxy_hops)
            .collect();
        assert!(warm.len() >= 10, "{} warm invocations", warm.len());
        assert!(warm.iter().all(|&h| h == warm[0]), "{warm:?}");
        Run {
            hops: warm[0],
            activator_xds: r
                .xds_transactions
                .unwrap_or_default()
                .iter()
                .any(|t| t.proxy_kind == ProxyKind::Activator),
            // Second 0: no function pod exists yet, only the system pods and their proxies.
            memory_at_start_gib: r
                .node_seconds
                .iter()
                .filter(|s| s.second == 0)
                .map(|s| s.memory_gib)
                .sum(),
        }
    };
    assert_eq!(run(None).hops, 0);
    let istio = run(Some(profile("istio", &[])));
    assert_eq!(istio.hops, 1);
    assert!(!istio.activator_xds);
    assert_eq!(run(Some(profile("istio", &["jwt"]))).hops, 1);
    for meshed in [
        profile("istio", &["mtls"]),
        profile("istio", &["authz"]),
        MeshProfile::builtin("istio-policies").unwrap(),
        MeshProfile::builtin("linkerd").unwrap(),
    ] {
        let name = format!("{} {:?}", meshed.name, meshed.policies);
        // The activator's proxy, and istiod's state for one more connected proxy (time
        // averages over second 0: within 1 %).
        let rss_gib =
            (meshed.data_plane.rss_mib + meshed.control_plane.rss_kib_per_proxy / 1024.0) / 1024.0;
        let r = run(Some(meshed));
        assert_eq!(r.hops, 2, "{name}");
        assert!(
            r.activator_xds,
            "{name}: the activator's proxy gets its config"
        );
        if name.starts_with("istio") {
            let extra = r.memory_at_start_gib - istio.memory_at_start_gib;
            assert!(
                (extra - rss_gib).abs() < 0.01 * rss_gib,
                "{name}: {extra} GiB more at start"
            );
        }
    }
}

#[test]
fn istio_cpu_anchor_is_split_between_the_critical_path_and_the_node() {
    let cfg = exact_cfg();
    let traversal_ns = cfg.cluster.network_hop_us * 1000;
    let plain = profile("istio", &[]);
    let dp = &plain.data_plane;
    let anchor_cpu_ns = (dp.anchor_cpu_us.unwrap() * 1e3).round() as u64;
    let on_path_ns = (dp.on_path_latency_us.unwrap() * 1e3).round() as u64;
    let m = model(&plain, 1, false);
    let hop = m.pod_hop();
    // All of the anchored CPU is spent on the node ...
    assert!(
        (hop.cpu_ns + hop.background_cpu_ns).abs_diff(anchor_cpu_ns) <= 1,
        "{hop:?}"
    );
    assert!(hop.background_cpu_ns > hop.cpu_ns, "{hop:?}");
    // ... but an uncontended request is delayed only by the published on-path latency.
    assert!(
        (hop.cpu_ns + hop.latency_ns).abs_diff(on_path_ns) <= 1,
        "{hop:?}"
    );
    assert!(hop.latency_ns >= traversal_ns);
    // Policy filters run before the request is forwarded: their CPU is on the path, and the
    // off-path part does not change.
    let with_jwt = model(&profile("istio", &["jwt"]), 1, false).pod_hop();
    assert!(with_jwt.cpu_ns > hop.cpu_ns, "{with_jwt:?} vs {hop:?}");
    assert_eq!(with_jwt.background_cpu_ns, hop.background_cpu_ns);

    // End to end: the off-path CPU is charged to the node as sidecar CPU without delaying
    // the request: the same requests cost the same sidecar core-seconds either way.
    let run = |p: &MeshProfile| {
        let r = simulate(
            model(p, 1, false),
            1,
            (0..40).map(|i| inv(i * 200, 0, 50)).collect(),
        );
        let sidecar: f64 = r.node_seconds.iter().map(|n| n.cpu_cores.sidecar).sum();
        let e2e: f64 = r
            .invocations
            .as_ref()
            .unwrap()
            .iter()
            .filter(|x| !x.cold)
            .map(|x| x.end_to_end_ns as f64 / 1e6)
            .sum();
        (sidecar, e2e)
    };
    let mut all_on_path = plain.clone();
    all_on_path.data_plane.on_path_latency_us = None;
    let (split_cpu, split_e2e) = run(&plain);
    let (path_cpu, path_e2e) = run(&all_on_path);
    assert!(
        split_e2e > 0.0,
        "some invocations after the cold start are warm"
    );
    assert!(
        (split_cpu - path_cpu).abs() < 1e-3 * path_cpu,
        "{split_cpu} vs {path_cpu} core-seconds"
    );
    assert!(split_e2e < path_e2e, "{split_e2e} vs {path_e2e} ms");
}

#[test]
fn the_lightweight_profile_reads_the_measured_sandbox_creation() {
    use meshsim_models::calibration::{IsolationCosts, PerRequestCosts};
    let p = MeshProfile::builtin("lightweight").unwrap();
    let run = |cal: &CalibrationFile| short_run(&p, cal).0;
    let with_create = |us: f64| {
        let mut c = calibration().clone();
        c.isolation = Some(IsolationCosts {
            per_request: Some(PerRequestCosts {
                sandbox_create_us: us,
                chain_us: us + 3.0,
                shared_chain_us: 1.5,
                recompile_us: None,
                module_kib: None,
                compiled_kib_per_function: None,
                idle_kib_per_function: None,
                entries: Vec::new(),
            }),
        });
        c
    };
    let mut without = calibration().clone();
    without.isolation = None;
    // Without the table the constant (6 us) applies, the same as a measured 6 us.
    let (none, six, dear) = (
        run(&without),
        run(&with_create(6.0)),
        run(&with_create(600.0)),
    );
    assert!((none - six).abs() <= 1e-9 * none.max(1.0), "{none} {six}");
    assert!(dear > six, "{six} {dear}");
}

#[test]
fn the_lightweight_profile_charges_the_recompile_after_an_idle_gap() {
    use meshsim_models::calibration::{IsolationCosts, PerRequestCosts};
    let with_recompile = |us: Option<f64>| {
        let mut c = calibration().clone();
        c.isolation = Some(IsolationCosts {
            per_request: Some(PerRequestCosts {
                sandbox_create_us: 5.0,
                chain_us: 8.0,
                shared_chain_us: 1.5,
                recompile_us: us,
                module_kib: None,
                compiled_kib_per_function: None,
                idle_kib_per_function: None,
                entries: Vec::new(),
            }),
        });
        c
    };
    let lw = MeshProfile::builtin("lightweight").unwrap();
    assert_eq!(lw.data_plane.module_idle_release_ms, Some(1000));
    let mut kept = lw.clone();
    kept.data_plane.module_idle_release_ms = Some(86_400_000);
    let (unmeasured, released, compiled_once) = (
        short_run(&lw, &with_recompile(None)).0,
        short_run(&lw, &with_recompile(Some(5000.0))).0,
        short_run(&kept, &with_recompile(Some(5000.0))).0,
    );
    // No measurement: nothing charged. A day-long release compiles once per node; a 1 s
    // release compiles again after every gap of more than a second on a node.
    assert!(
        unmeasured < compiled_once && compiled_once < released,
        "{unmeasured} {compiled_once} {released}"
    );
}

#[test]
fn istio_uses_the_measured_rsa_handshake_and_says_which_table_is_missing() {
    use meshsim_models::mesh::MtlsKeyAlgorithm;
    let istio = profile("istio", &["mtls"]);
    assert_eq!(istio.policy.mtls_key_algorithm, MtlsKeyAlgorithm::Rsa2048);
    let linkerd = profile("linkerd", &["mtls"]);
    assert_eq!(
        linkerd.policy.mtls_key_algorithm,
        MtlsKeyAlgorithm::EcdsaP256
    );
    let cal = calibration();
    let (rsa, ecdsa) = (
        cal.mtls_handshake_rsa2048
            .as_ref()
            .expect("shipped RSA table"),
        cal.mtls_handshake.as_ref().expect("shipped ECDSA table"),
    );
    let build = |p: &MeshProfile, c: &CalibrationFile| {
        let inputs = MeshInputs {
            calibration: c,
            xds_sizes: Some(sizes()),
            record_xds: false,
        };
        MeshModel::new(p, &exact_cfg(), 1, inputs, 1, 0)
    };
    let ns = |us: f64| (us * 1e3).round() as u64;
    assert_eq!(build(&istio, cal).unwrap().handshake().0, ns(rsa.cpu_us()));
    let mut ecdsa_istio = istio.clone();
    ecdsa_istio.policy.mtls_key_algorithm = MtlsKeyAlgorithm::EcdsaP256;
    assert_eq!(
        build(&ecdsa_istio, cal).unwrap().handshake().0,
        ns(ecdsa.cpu_us())
    );
    let mut no_rsa = cal.clone();
    no_rsa.mtls_handshake_rsa2048 = None;
    let err = build(&istio, &no_rsa).unwrap_err().to_string();
    assert!(
        err.contains("[mtls_handshake_rsa2048]") && err.contains("--key-algorithm rsa-2048"),
        "{err}"
    );
}

#[test]
fn handshake_needs_a_measurement_or_an_override() {
    let p = profile("istio", &["mtls"]);
    let mut old = calibration().clone();
    old.mtls_handshake = None;
    old.mtls_handshake_rsa2048 = None;
    let inputs = MeshInputs {
        calibration: &old,
        xds_sizes: Some(sizes()),
        record_xds: false,
    };
    let err = MeshModel::new(&p, &exact_cfg(), 1, inputs, 1, 0).unwrap_err();
    assert!(
        err.to_string().contains("policy.mtls_handshake_cpu_us"),
        "{err}"
    );
    let mut q = p.clone();
    q.policy.mtls_handshake_cpu_us = Some(600.0);
    let inputs = MeshInputs {
        calibration: &old,
        xds_sizes: Some(sizes()),
        record_xds: false,
    };
    let m = MeshModel::new(&q, &exact_cfg(), 1, inputs, 1, 0).unwrap();
    assert_eq!(m.handshake(), (600_000, 0));
    // Without the mTLS policy the old file is fine.
    let inputs = MeshInputs {
        calibration: &old,
        xds_sizes: Some(sizes()),
        record_xds: false,
    };
    let none = profile("istio", &["jwt"]);
    let m = MeshModel::new(&none, &exact_cfg(), 1, inputs, 1, 0).unwrap();
    assert_eq!(m.handshake(), (0, 0));
}

#[test]
fn strict_mtls_sends_the_activator_through_the_cluster_ip() {
    // InVitro's shape: one request per pod, the activator always on the path. A steady load of
    // ~4 concurrent requests keeps several pods busy. By pod IP the activator forwards only to
    // a pod with a free slot, so no request ever waits in a queue-proxy; through the cluster IP
    // (Istio with STRICT mTLS, Knative's `auto` mesh compatibility mode) its breaker only caps
    // the requests in flight and the activator's Envoy picks the pod, so some land on a busy
    // pod and wait there while another pod is idle.
    use meshsim_models::MeshCompatibilityMode;
    let run = |p: MeshProfile, mode: MeshCompatibilityMode| {
        let mut cfg = exact_cfg();
        cfg.knative.container_concurrency = 1;
        cfg.knative.target_burst_capacity = -1;
        cfg.knative.mesh_compatibility_mode = mode;
        let mesh = MeshModel::new(&p, &cfg, 1, inputs(false), 1, 0).expect("model");
        let r = simulate_with(
            &cfg,
            Box::new(mesh),
            1,
            (0..600).map(|i| inv(i * 50, 0, 200)).collect(),
        );
        assert_eq!(r.summary.completed + r.summary.failed, 600);
        r
    };
    let auto = MeshCompatibilityMode::Auto;
    assert!(profile("istio-policies", &["mtls"]).pod_ips_hidden_from_activator());
    let strict = run(profile("istio-policies", &["mtls"]), auto);
    assert!(
        strict.queue_proxy_waits > 10,
        "{} requests waited in a queue-proxy",
        strict.queue_proxy_waits
    );
    // Without STRICT mTLS the pods stay addressable.
    let permissive = run(profile("istio", &[]), auto);
    assert_eq!(permissive.queue_proxy_waits, 0);
    // Linkerd's proxy originates mTLS to pod IPs itself.
    let linkerd = run(profile("linkerd-policies", &["mtls"]), auto);
    assert_eq!(linkerd.queue_proxy_waits, 0);
    // `disabled` keeps pod IPs (net-istio's pod addressability); `enabled` forces the cluster
    // IP even where pods are reachable.
    let disabled = run(
        profile("istio-policies", &["mtls"]),
        MeshCompatibilityMode::Disabled,
    );
    assert_eq!(disabled.queue_proxy_waits, 0);
    let forced = run(profile("istio", &[]), MeshCompatibilityMode::Enabled);
    assert!(
        forced.queue_proxy_waits > 10,
        "{}",
        forced.queue_proxy_waits
    );
    // The wait shows in the slowdown: mean end-to-end time of the warm invocations.
    let mean_warm = |r: &meshsim_sim::engine::EngineResult| {
        let v: Vec<u64> = r
            .invocations
            .as_ref()
            .unwrap()
            .iter()
            .filter(|x| !x.cold && x.failure.is_none())
            .map(|x| x.end_to_end_ns)
            .collect();
        v.iter().sum::<u64>() as f64 / v.len() as f64
    };
    assert!(
        mean_warm(&strict) > 1.05 * mean_warm(&disabled),
        "{} vs {}",
        mean_warm(&strict),
        mean_warm(&disabled)
    );
}
