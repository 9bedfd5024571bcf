//! Hand-computed scenarios with exact integer-time expectations.
//!
//! Notation (all from the config, in ns): `G` gateway CPU, `H` network hop, `A` activator CPU,
//! `Q` queue-proxy CPU, `S` control-plane service time of one write, `W` watch delay, `SB`
//! sandbox creation, `C` container start, `E` execution time. The pod-start jitter is set to 0.
//!
//! A cold request waits at the activator from `G + H + A` on; the pod becomes routable after
//! 7 writes on the critical path, each followed by a watch delay (PodAutoscaler, Deployment,
//! ReplicaSet, Pod, Binding, Ready status, EndpointSlice), the sandbox, two containers (user,
//! queue-proxy; the app initialises faster than the queue-proxy starts, so the first readiness
//! probe passes) and the activator's probe round trip `2H`:
//! `cold = 7 (S + W) + SB + 2C + 2H`. The request then crosses one hop and the queue-proxy,
//! executes, and the response returns over the two hops: `e2e = G + H + A + cold + H + Q + E + 2H`.

use meshsim_models::SimConfig;
use meshsim_sim::engine::EngineResult;
use meshsim_sim::mesh::NoMesh;
use meshsim_sim::time::{MS, SEC, US};
use meshsim_sim::{FunctionSpec, SimOptions, Simulation};
use meshsim_traces::Invocation;

fn exact_cfg() -> SimConfig {
    let mut cfg = SimConfig::default();
    cfg.kubernetes.pod_start.jitter_pct = 0;
    cfg
}

fn inv(at_ns: u64, function: u32, exec_ns: u64) -> Invocation {
    Invocation {
        at_ns,
        function,
        exec_ns,
        memory_mb: 100.0,
    }
}

fn simulate(cfg: &SimConfig, functions: usize, invs: Vec<Invocation>) -> EngineResult {
    cfg.validate().expect("valid config");
    let specs = vec![
        FunctionSpec {
            memory_request_mib: 128
        };
        functions
    ];
    let opts = SimOptions {
        seed: 7,
        record_invocations: true,
        record_pods: true,
        record_autoscaler: true,
        ..SimOptions::default()
    };
    let n = invs.len() as u64;
    Simulation::new(cfg, &specs, Box::new(NoMesh), opts).run(invs.into_iter(), n, &mut |_, _| {})
}

struct Params {
    g: u64,
    h: u64,
    a: u64,
    q: u64,
    s: u64,
    w: u64,
    sb: u64,
    c: u64,
}

fn params(cfg: &SimConfig) -> Params {
    Params {
        g: cfg.knative.gateway_cpu_us * US,
        h: cfg.cluster.network_hop_us * US,
        a: cfg.knative.activator_cpu_us * US,
        q: cfg.knative.queue_proxy_cpu_us * US,
        s: (1e9 / cfg.kubernetes.api_writes_per_s).round() as u64,
        w: cfg.kubernetes.watch_delay_ms * MS,
        sb: cfg.kubernetes.pod_start.sandbox_create_ms * MS,
        c: cfg.kubernetes.pod_start.container_start_ms * MS,
    }
}

fn cold_wait(p: &Params) -> u64 {
    7 * (p.s + p.w) + p.sb + 2 * p.c + 2 * p.h
}

#[test]
fn single_cold_invocation_takes_the_pipeline_time() {
    let cfg = exact_cfg();
    assert!(cfg.kubernetes.pod_start.app_init_ms < cfg.kubernetes.pod_start.container_start_ms);
    let p = params(&cfg);
    let e = 100 * MS;
    let r = simulate(&cfg, 1, vec![inv(0, 0, e)]);
    let rec = &r.invocations.as_ref().unwrap()[0];
    let cold = cold_wait(&p);
    assert_eq!(rec.cold_start_ns, cold);
    assert!(rec.cold);
    assert_eq!(rec.failure, None);
    assert_eq!(
        rec.end_to_end_ns,
        p.g + p.h + p.a + cold + p.h + p.q + e + 2 * p.h
    );
    // With the defaults: 7 x 50 ms + 500 ms + 2 x 88 ms + 0.1 ms = 1026.1 ms of waiting.
    assert_eq!(cold, 1_026_100_000);
    let pod = r.pods.as_ref().unwrap()[0];
    assert_eq!(pod.routable_ns, Some(p.g + p.h + p.a + cold));
    // Gateway on worker 1, activator on worker 2 (least allocated), the pod on worker 3.
    assert_eq!(rec.node, Some(3));
    assert_eq!(r.summary.cold_starts, 1);
    // 10 writes for the start; the run plays out the scale-down too (3 + 3 writes).
    assert_eq!(r.api_writes, 16);
    assert_eq!(r.in_flight, 0);
}

#[test]
fn two_invocations_share_one_core() {
    let mut cfg = exact_cfg();
    cfg.cluster.workers = 1;
    cfg.cluster.cores_per_node = 1;
    cfg.knative.gateway_cpu_us = 0;
    cfg.knative.activator_cpu_us = 0;
    cfg.knative.queue_proxy_cpu_us = 0;
    let p = params(&cfg);
    // A is cold: it starts executing one hop after the pod became routable, at X.
    let routable = p.h + cold_wait(&p);
    let x = routable + p.h;
    // B is warm and reaches the function 2 hops after its arrival: at X + 50 ms.
    let b_arrival = x + 50 * MS - 2 * p.h;
    let r = simulate(
        &cfg,
        1,
        vec![inv(0, 0, 100 * MS), inv(b_arrival, 0, 100 * MS)],
    );
    let recs = r.invocations.unwrap();
    let (a, b) = (&recs[0], &recs[1]);
    assert_eq!(a.arrival_ns, 0);
    // A alone for 50 ms (50 left), then both at half speed: A done at X + 150 ms.
    assert_eq!(a.end_to_end_ns, x + 150 * MS + 2 * p.h);
    assert_eq!(a.contention_ns, 50 * MS);
    // B did 50 ms of work by then; 50 left alone: done at X + 200 ms.
    assert_eq!(b.arrival_ns + b.end_to_end_ns, x + 200 * MS + 2 * p.h);
    assert_eq!(b.end_to_end_ns, 2 * p.h + 150 * MS + 2 * p.h);
    assert_eq!(b.contention_ns, 50 * MS);
    assert!(!b.cold);
    assert_eq!(r.summary.completed, 2);
}

#[test]
fn scale_to_zero_after_stable_window_plus_grace() {
    let cfg = exact_cfg();
    let p = params(&cfg);
    let e = 100 * MS;
    let r = simulate(&cfg, 1, vec![inv(0, 0, e)]);
    // Concurrency ends when the execution ends (the response hops are after it).
    let end = p.g + p.h + p.a + cold_wait(&p) + p.h + p.q + e;
    let tick = cfg.knative.tick_ms * MS;
    let window = u64::from(cfg.knative.stable_window_s) * SEC;
    // First tick whose whole-second stable window holds no concurrency...
    let idle_tick = (end.div_ceil(SEC) * SEC + window).div_ceil(tick) * tick;
    // ...then the grace period.
    let zero_at = idle_tick + u64::from(cfg.knative.scale_to_zero_grace_s) * SEC;
    assert_eq!(zero_at, 92 * SEC, "2 s + 60 s = 62 s, + 30 s");
    let pod = r.pods.as_ref().unwrap()[0];
    assert_eq!(pod.deleted_ns, Some(zero_at));
    let log = r.autoscaler.unwrap();
    assert_eq!(log.last().map(|d| (d.at_ns, d.desired)), Some((zero_at, 0)));
}

#[test]
fn kpa_panic_entry_and_exit() {
    let mut cfg = exact_cfg();
    cfg.knative.gateway_cpu_us = 0;
    cfg.knative.activator_cpu_us = 0;
    cfg.knative.queue_proxy_cpu_us = 0;
    cfg.cluster.network_hop_us = 0;
    // 150 requests at t = 0, concurrency 150 until they finish together (1 s of work each on
    // 10 cores: 15 s after the pod became routable).
    let invs: Vec<Invocation> = (0..150).map(|_| inv(0, 0, SEC)).collect();
    let r = simulate(&cfg, 1, invs);
    let log = r.autoscaler.unwrap();
    // Panic window average at tick T (T <= 6 s): 150 x T / 6; over the threshold when
    // >= 2 x 70 x max(ready, 1) = 140 (one pod): first at T = 6 s (150).
    let entry = log.iter().find(|d| d.panicking).expect("panics");
    assert_eq!(entry.at_ns, 6 * SEC);
    assert_eq!(entry.ready_pods, 1);
    assert_eq!(entry.desired, 3, "ceil(150 / 70)");
    // At 8 s the three pods are ready: 150 / 70 / 3 < 2, so 6 s was the last panicking tick;
    // panic ends at the first tick more than a stable window later: 68 s.
    let exit = log
        .iter()
        .find(|d| d.at_ns > entry.at_ns && !d.panicking)
        .expect("calms down");
    assert_eq!(exit.at_ns, 68 * SEC);
    // No scale-down while panicking.
    assert!(
        log.iter()
            .filter(|d| d.at_ns > entry.at_ns && d.at_ns < exit.at_ns)
            .all(|d| d.desired >= 3)
    );
    assert_eq!(r.summary.completed, 150);
    assert_eq!(r.summary.cold_starts, 150);
}

#[test]
fn max_scale_bounds_the_pods_but_not_the_decision() {
    // The burst of kpa_panic_entry_and_exit wants 3 pods; with max-scale 2 the deployment gets
    // 2 (Knative clamps the scale it applies, `applyBounds`), while the autoscaler's own
    // decision, which the log records, still says 3. Without a bound (0) it gets 3.
    let mut cfg = exact_cfg();
    cfg.knative.gateway_cpu_us = 0;
    cfg.knative.activator_cpu_us = 0;
    cfg.knative.queue_proxy_cpu_us = 0;
    let invs = || (0..150).map(|_| inv(0, 0, SEC)).collect::<Vec<_>>();
    let unbounded = simulate(&cfg, 1, invs());
    assert_eq!(unbounded.pods_started, 3);
    cfg.knative.max_scale = 2;
    let r = simulate(&cfg, 1, invs());
    assert_eq!(r.pods_started, 2);
    let log = r.autoscaler.unwrap();
    assert_eq!(log.iter().map(|d| d.desired).max(), Some(3));
    assert_eq!(r.summary.completed, 150);
}

#[test]
fn no_capacity_is_counted_not_dropped() {
    let mut cfg = exact_cfg();
    cfg.cluster.workers = 1;
    cfg.cluster.memory_gib = 1;
    cfg.knative.request_timeout_s = 30;
    // Function 1 needs more memory than the node has: its pod never schedules.
    cfg.validate().unwrap();
    let specs = [
        FunctionSpec {
            memory_request_mib: 128,
        },
        FunctionSpec {
            memory_request_mib: 4096,
        },
    ];
    let opts = SimOptions {
        record_invocations: true,
        ..SimOptions::default()
    };
    let invs = vec![inv(0, 0, MS), inv(0, 1, MS)];
    let r = Simulation::new(&cfg, &specs, Box::new(NoMesh), opts).run(
        invs.into_iter(),
        2,
        &mut |_, _| {},
    );
    assert_eq!(r.summary.completed, 1);
    assert_eq!(r.summary.failed, 1);
    assert_eq!(r.summary.failures_by_reason.get("no-capacity"), Some(&1));
    let failed = &r.invocations.unwrap()[1];
    assert_eq!(failed.end_to_end_ns, 30 * SEC);
    assert_eq!(r.in_flight, 0);
}

#[test]
fn container_concurrency_one_holds_the_second_request_at_the_activator() {
    let mut cfg = exact_cfg();
    cfg.knative.container_concurrency = 1;
    let p = params(&cfg);
    let e = 200 * MS;
    let r = simulate(&cfg, 1, vec![inv(0, 0, e), inv(0, 0, e)]);
    let recs = r.invocations.unwrap();
    let routable = p.g + p.h + p.a + cold_wait(&p);
    // A runs as the single cold invocation does.
    let a_exec_end = routable + p.h + p.q + e;
    assert_eq!(recs[0].end_to_end_ns, a_exec_end + 2 * p.h);
    // B waits at the activator until A's slot frees, then crosses the hop and the
    // queue-proxy and executes. (The second request arrives while the pod is cold, so its
    // whole wait counts as cold-start wait.)
    let b = &recs[1];
    assert_eq!(b.end_to_end_ns, a_exec_end + p.h + p.q + e + 2 * p.h);
    assert_eq!(b.cold_start_ns, a_exec_end - (p.g + p.h + p.a));
    assert_eq!(b.contention_ns, 0);
    // One pod: 2 requests / 60 s / 0.7 stays below 1 pod in the stable window, no panic.
    assert_eq!(r.pods_started, 1);
}

#[test]
fn scale_down_deletes_pods_still_starting_before_ready_ones() {
    // Kubernetes' `ActivePodsWithRanks`: a ReplicaSet scaling down deletes unassigned and
    // not-ready pods first. A burst of 40 one-per-pod requests asks for 58 pods (40 / 0.7 target
    // utilisation) on an API server that makes 2 writes/s; the first pods to become ready serve
    // the burst, demand falls back, and the pods still queued or starting are deleted rather
    // than started and then deleted. (Before this rule every pod started, became routable and
    // only then could be chosen for deletion.)
    let mut cfg = exact_cfg();
    cfg.knative.container_concurrency = 1;
    cfg.kubernetes.api_writes_per_s = 2.0;
    let invs: Vec<Invocation> = (0..40).map(|_| inv(0, 0, 10 * MS)).collect();
    let r = simulate(&cfg, 1, invs);
    assert_eq!(r.summary.completed, 40, "every request is served");
    let pods = r.pods.expect("pod records");
    let never_ready: Vec<_> = pods.iter().filter(|p| p.routable_ns.is_none()).collect();
    assert!(
        never_ready.len() >= 10,
        "a third of the burst's pods are deleted while starting: {} of {}",
        never_ready.len(),
        pods.len()
    );
    for p in &never_ready {
        assert!(
            p.deleted_ns.is_some(),
            "pod {} neither served nor deleted",
            p.pod
        );
    }
    // A pod that served was deleted only after it became routable.
    for p in pods.iter().filter(|p| p.routable_ns.is_some()) {
        if let (Some(ready), Some(gone)) = (p.routable_ns, p.deleted_ns) {
            assert!(ready <= gone, "pod {} routable after its deletion", p.pod);
        }
    }
}

#[test]
fn through_a_cluster_ip_the_activator_caps_in_flight_but_kube_proxy_picks_the_pod() {
    // No mesh, `mesh_compatibility_mode = enabled`: the activator's breaker admits up to
    // cc x ready pods, kube-proxy picks a pod uniformly at random, and a request sent to a
    // busy pod waits in its queue-proxy. `auto` without a mesh stays on pod IPs: no request
    // ever waits in a queue-proxy with the activator on the path.
    use meshsim_models::MeshCompatibilityMode;
    let run = |mode: MeshCompatibilityMode| {
        let mut cfg = exact_cfg();
        cfg.knative.container_concurrency = 1;
        cfg.knative.target_burst_capacity = -1;
        cfg.knative.mesh_compatibility_mode = mode;
        let invs: Vec<Invocation> = (0..600).map(|i| inv(i * 50 * MS, 0, 200 * MS)).collect();
        simulate(&cfg, 1, invs)
    };
    let pod_ip = run(MeshCompatibilityMode::Auto);
    assert_eq!(pod_ip.summary.completed, 600);
    assert_eq!(pod_ip.queue_proxy_waits, 0);
    let cluster_ip = run(MeshCompatibilityMode::Enabled);
    assert_eq!(cluster_ip.summary.completed, 600);
    assert!(
        cluster_ip.queue_proxy_waits > 10,
        "{} requests waited in a queue-proxy",
        cluster_ip.queue_proxy_waits
    );
    assert!(cluster_ip.summary.slowdown.p95 > pod_ip.summary.slowdown.p95);
}

#[test]
fn a_request_waiting_in_a_queue_proxy_times_out_at_its_deadline() {
    // Serve mode (target burst capacity 0, pods to spare after a warm-up burst): the gateway
    // sends a burst of 11 six-second requests straight to the pods, more than there are, so
    // some wait in a busy pod's queue-proxy. The queue-proxy's timeout handler (5 s) covers
    // that wait: a request still waiting at its deadline fails then, and gives its place up,
    // instead of running after the request ahead of it. (The ones that ran are answered after
    // the deadline and count as timeouts too.)
    let mut cfg = exact_cfg();
    cfg.knative.container_concurrency = 1;
    cfg.knative.target_burst_capacity = 0;
    cfg.knative.request_timeout_s = 5;
    let mut invs: Vec<Invocation> = (0..3).map(|_| inv(0, 0, 100 * MS)).collect();
    invs.extend((0..11).map(|_| inv(10 * SEC, 0, 6 * SEC)));
    let r = simulate(&cfg, 1, invs);
    assert!(
        r.queue_proxy_waits > 0,
        "no request waited in a queue-proxy"
    );
    let burst: Vec<_> = r
        .invocations
        .unwrap()
        .into_iter()
        .filter(|x| x.arrival_ns == 10 * SEC)
        .collect();
    assert_eq!(burst.len(), 11);
    let at_deadline = burst.iter().filter(|x| x.end_to_end_ns == 5 * SEC).count() as u64;
    assert_eq!(
        at_deadline, r.queue_proxy_waits,
        "every waiting request fails at 5 s"
    );
    for x in &burst {
        assert_eq!(x.failure, Some(meshsim_sim::FailureReason::Timeout));
        // The rest ran at once, on a pod of their own.
        assert!(
            x.end_to_end_ns == 5 * SEC || x.end_to_end_ns < 7 * SEC,
            "{}",
            x.end_to_end_ns
        );
    }
}

#[test]
fn a_full_queue_proxy_turns_requests_away() {
    // The same serve-mode burst, 15 short requests on what is by then a single pod: one runs,
    // the queue-proxy's breaker holds 10 x container concurrency waiting, and the rest get its
    // 503 at once (`queue-full`).
    let mut cfg = exact_cfg();
    cfg.knative.container_concurrency = 1;
    cfg.knative.target_burst_capacity = 0;
    let mut invs: Vec<Invocation> = (0..3).map(|_| inv(0, 0, 100 * MS)).collect();
    invs.extend((0..15).map(|_| inv(10 * SEC, 0, 100 * MS)));
    let r = simulate(&cfg, 1, invs);
    assert_eq!(r.queue_proxy_max_waiting, 10);
    let full = r.summary.failures_by_reason.get("queue-full").copied();
    assert_eq!(full, Some(4), "{:?}", r.summary.failures_by_reason);
    assert_eq!(r.summary.failed, 4);
    let recs = r.invocations.unwrap();
    for x in recs.iter().filter(|x| x.failure.is_some()) {
        assert!(
            x.end_to_end_ns < 10 * MS,
            "turned away at once: {}",
            x.end_to_end_ns
        );
    }
}
