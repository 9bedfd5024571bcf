//! One-policy-at-a-time ablation on Istio: replays the bundled 30-minute trace (default
//! config, seed 42) with `istio` plus each single policy, and prints each policy's per-hop CPU,
//! slowdown p50/p95 and worker CPU against `istio` without policies.
//!
//! `cargo run --release -p meshsim-sim --example mesh_ablation`

include!("common/mesh.rs");

fn main() {
    let trace = std::sync::Arc::new(
        meshsim_traces::load("embedded:azure-250")
            .and_then(|t| t.window(30))
            .unwrap_or_else(|e| {
                eprintln!("{e}");
                std::process::exit(1)
            }),
    );
    let (cal, sizes) = (calibration(), xds_sizes());
    let cfg = meshsim_models::SimConfig::default();
    let opts = meshsim_sim::RunOptions {
        seed: 42,
        replication: 0,
        record_invocations: false,
    };
    let base = meshsim_models::MeshProfile::builtin("istio").unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let mut sets: Vec<Vec<String>> = vec![vec![]];
    sets.extend(
        meshsim_models::calibration::POLICIES
            .iter()
            .map(|p| vec![p.to_string()]),
    );
    let rows: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = sets
            .iter()
            .map(|set| {
                let p = base.clone().with_policies(set).unwrap_or_else(|e| {
                    eprintln!("{e}");
                    std::process::exit(1)
                });
                let (trace, cal, sizes, cfg) = (trace.clone(), &cal, &sizes, &cfg);
                s.spawn(move || {
                    let inputs = meshsim_sim::meshmodel::MeshInputs {
                        calibration: cal,
                        xds_sizes: Some(sizes),
                        record_xds: false,
                    };
                    let m = meshsim_sim::meshmodel::MeshModel::new(
                        &p,
                        cfg,
                        trace.functions.len(),
                        inputs,
                        42,
                        0,
                    )
                    .ok()
                    .map(|m| m.pod_hop());
                    let r = meshsim_sim::run_profile(trace, cfg, &p, inputs, &opts, &mut |_, _| {});
                    (
                        set.first().cloned().unwrap_or_else(|| "(none)".into()),
                        m,
                        r.map(|r| r.summary),
                    )
                })
            })
            .collect();
        hs.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    println!("policy           hop_cpu_us  hop_lat_us  sd_p50  sd_p95  wcpu_p50  failed");
    for (name, hop, r) in rows {
        let Ok(s) = r else { continue };
        let (c, l) = hop.map_or((0.0, 0.0), |h| {
            (h.cpu_ns as f64 / 1e3, h.latency_ns as f64 / 1e3)
        });
        println!(
            "{:16} {:10.1}  {:10.1}  {:6.3}  {:6.3}  {:8.2}  {}",
            name, c, l, s.slowdown.p50, s.slowdown.p95, s.worker_cpu_cores.p50, s.failed
        );
    }
}
