//! Conservation (arrived = completed + failed + in flight at the cut-off) on random small
//! traces, and determinism (same seed and config: identical summary JSON and digest; another
//! seed: different).
//!
//! A failing proptest prints its minimal input; replay it with
//! `cargo test -p meshsim-sim --test properties` (proptest keeps the regression seed).

use meshsim_models::SimConfig;
use meshsim_sim::mesh::NoMesh;
use meshsim_sim::time::{MS, SEC};
use meshsim_sim::{FunctionSpec, RunOptions, SimOptions, SimTime, Simulation, run};
use meshsim_traces::Invocation;
use proptest::prelude::*;
use std::sync::Arc;

fn small_cfg(workers: u16, cores: u32, memory_gib: u32, timeout_s: u64) -> SimConfig {
    let mut cfg = SimConfig::default();
    cfg.cluster.workers = workers;
    cfg.cluster.cores_per_node = cores;
    cfg.cluster.memory_gib = memory_gib;
    cfg.knative.request_timeout_s = timeout_s;
    cfg
}

fn arb_invocations() -> impl Strategy<Value = (usize, Vec<Invocation>)> {
    (1usize..5).prop_flat_map(|functions| {
        let one = (
            0u64..120_000,
            0..functions as u32,
            1u64..8_000,
            10.0f32..900.0,
        );
        (
            Just(functions),
            prop::collection::vec(one, 1..60).prop_map(|mut v| {
                v.sort_by_key(|x| x.0);
                v.into_iter()
                    .map(|(at_ms, function, exec_ms, mem)| Invocation {
                        at_ns: at_ms * MS,
                        function,
                        exec_ns: exec_ms * MS,
                        memory_mb: mem,
                    })
                    .collect()
            }),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arrived_equals_completed_failed_in_flight(
        (functions, invs) in arb_invocations(),
        workers in 1u16..3,
        cores in 1u32..4,
        memory_gib in 1u32..4,
        timeout_s in 5u64..60,
        horizon_s in prop::option::of(1u64..200),
        seed in any::<u64>(),
        mem_req in prop::collection::vec(64u64..3_000, 4),
        container_concurrency in 0u32..3,
        mesh_compat in 0u8..3,
        knobs in (6u32..30, 1u32..6, 1u64..5, 0u32..20, -1i32..300, 0u32..40, any::<bool>()),
    ) {
        let (stable_s, panic_s, tick_s, grace_s, tbc, jitter, bin_pack) = knobs;
        let mut cfg = small_cfg(workers, cores, memory_gib, timeout_s);
        cfg.knative.container_concurrency = container_concurrency;
        cfg.knative.mesh_compatibility_mode = match mesh_compat {
            0 => meshsim_models::MeshCompatibilityMode::Auto,
            1 => meshsim_models::MeshCompatibilityMode::Enabled,
            _ => meshsim_models::MeshCompatibilityMode::Disabled,
        };
        cfg.knative.stable_window_s = stable_s;
        cfg.knative.panic_window_s = panic_s;
        cfg.knative.tick_ms = tick_s * 1000;
        cfg.knative.scale_to_zero_grace_s = grace_s;
        cfg.knative.target_burst_capacity = tbc;
        cfg.kubernetes.pod_start.jitter_pct = jitter;
        if bin_pack {
            cfg.kubernetes.scheduler = meshsim_models::SchedulerKind::MostAllocated;
        }
        prop_assume!(cfg.validate().is_ok());
        let specs: Vec<FunctionSpec> = (0..functions)
            .map(|i| FunctionSpec { memory_request_mib: mem_req[i] })
            .collect();
        let opts = SimOptions {
            seed,
            record_invocations: true,
            horizon: horizon_s.map(|s| SimTime(s * SEC)),
            ..SimOptions::default()
        };
        let n = invs.len() as u64;
        let r = Simulation::new(&cfg, &specs, Box::new(NoMesh), opts)
            .run(invs.clone().into_iter(), n, &mut |_, _| {});
        let s = &r.summary;
        prop_assert_eq!(r.arrived, s.invocations);
        prop_assert_eq!(s.invocations, s.completed + s.failed + r.in_flight);
        prop_assert_eq!(s.failures_by_reason.values().sum::<u64>(), s.failed);
        let recs = r.invocations.as_ref().unwrap();
        prop_assert_eq!(recs.len() as u64, s.completed + s.failed);
        match horizon_s {
            None => {
                prop_assert_eq!(r.in_flight, 0);
                prop_assert_eq!(s.invocations, n);
            }
            Some(h) => {
                let before = invs.iter().filter(|i| i.at_ns <= h * SEC).count() as u64;
                prop_assert_eq!(s.invocations, before);
            }
        }
        for rec in recs {
            if rec.failure.is_none() {
                // Nothing finishes faster than its execution on an idle core.
                prop_assert!(rec.end_to_end_ns >= rec.exec_ns);
                prop_assert!(rec.slowdown >= 1.0);
            }
        }
    }
}

fn default_trace(minutes: u32) -> Arc<meshsim_traces::Trace> {
    Arc::new(
        meshsim_traces::embedded::default_trace()
            .window(minutes)
            .expect("window"),
    )
}

#[test]
fn same_seed_same_summary_and_digest_other_seed_differs() {
    let trace = default_trace(5);
    let cfg = SimConfig::default();
    let opts = |seed| RunOptions {
        seed,
        replication: 0,
        record_invocations: false,
    };
    let a = run(trace.clone(), &cfg, &opts(11), &mut |_, _| {}).unwrap();
    let b = run(trace.clone(), &cfg, &opts(11), &mut |_, _| {}).unwrap();
    let c = run(trace, &cfg, &opts(12), &mut |_, _| {}).unwrap();
    let ja = serde_json::to_string(&a.summary).unwrap();
    let jb = serde_json::to_string(&b.summary).unwrap();
    let jc = serde_json::to_string(&c.summary).unwrap();
    assert_eq!(ja, jb);
    assert_eq!(a.digest, b.digest);
    assert_eq!(a.events, b.events);
    assert_eq!(a.node_seconds, b.node_seconds);
    assert_ne!(a.digest, c.digest);
    assert_ne!(ja, jc);
    // Recording the per-invocation table does not perturb the run.
    let d = run(
        default_trace(5),
        &cfg,
        &RunOptions {
            record_invocations: true,
            ..opts(11)
        },
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(d.digest, a.digest);
    assert_eq!(serde_json::to_string(&d.summary).unwrap(), ja);
    assert_eq!(
        d.invocations.map(|v| v.len() as u64),
        Some(a.summary.invocations)
    );
}

#[test]
fn replay_drains_and_conserves_on_the_bundled_trace() {
    let trace = default_trace(10);
    let total = trace.invocations();
    let cfg = SimConfig::default();
    let opts = RunOptions {
        seed: 3,
        replication: 0,
        record_invocations: false,
    };
    let mut last = (0, 0);
    let r = run(trace, &cfg, &opts, &mut |d, t| last = (d, t)).unwrap();
    let s = &r.summary;
    assert_eq!(s.invocations, total);
    assert_eq!(s.completed + s.failed, total);
    assert_eq!(r.in_flight, 0);
    assert_eq!(last, (total, total));
    assert!(r.invocations.is_none());
    assert!(s.cold_starts > 0 && s.cold_start_s.p50 > 0.5);
    // Every worker second and every control-plane second of the run has a row.
    let nodes = 1 + usize::from(cfg.cluster.workers);
    assert_eq!(r.node_seconds.len() % nodes, 0);
    assert!(r.node_seconds.len() / nodes >= 600);
    assert_eq!(s.xds.transactions, 0);
    assert!(s.cp_cpu_cores.p95 > 0.0);
}

#[test]
fn coldstart_curve_has_the_paper_knee() {
    let cfg = SimConfig::default();
    let slow = meshsim_sim::coldstart::run(&cfg, 1.0, 60, 1).unwrap();
    let knee = meshsim_sim::coldstart::run(&cfg, 2.0, 120, 1).unwrap();
    let over = meshsim_sim::coldstart::run(&cfg, 3.0, 180, 1).unwrap();
    let over_long = meshsim_sim::coldstart::run(&cfg, 3.0, 270, 1).unwrap();
    assert_eq!(slow.failed, 0);
    // Below the knee, the benchmark keeps up with the offered rate.
    assert!((slow.achieved_throughput_per_s - 1.0).abs() < 0.02);
    assert!((knee.achieved_throughput_per_s - 2.0).abs() < 0.05);
    // Above it, throughput is capped near 2.5/s and latency grows with the run length.
    assert!(over.achieved_throughput_per_s < 2.7);
    assert!(over.p99_s > 2.0 * slow.p99_s);
    assert!(over_long.p99_s > over.p99_s + 2.0);
    // Isolated points do not depend on the run length below the knee...
    let knee_long = meshsim_sim::coldstart::run(&cfg, 2.0, 300, 1).unwrap();
    assert!((knee_long.p99_s - knee.p99_s).abs() < 0.2);
    // ...but when earlier pods scale down during the run, their deletions compete for the
    // control plane: 2/s x 16 writes > 25 writes/s.
    let sustained = meshsim_sim::coldstart::run_sustained(&cfg, 2.0, 300, 1).unwrap();
    assert!(sustained.p99_s > knee_long.p99_s + 2.0);
    assert!(sustained.api_writes_per_cold_start > 12.0);
}
