//! Cold-start latency and throughput with a mesh profile (the paper's cold-start experiment):
//! the tool behind the Istio fits of `pod.injection_webhook_ms` (knee) and
//! `pod.proxy_bootstrap_ms` (latency at 1 cold start/s).
//!
//! `cargo run --release -p meshsim-sim --example mesh_coldstart [profile] [count] [seeds]
//! [proxy_bootstrap_ms]` (seeds 1..=10 by default; each seed's p50 sits on the 1 s lattice of
//! the sidecar's startup probe, and which step a pod lands on depends on its node's PLEG phase,
//! so the mean over seeds is what the fit reads; the last argument overrides the profile's
//! `pod.proxy_bootstrap_ms`, for the fit)

include!("common/mesh.rs");

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "istio".into());
    let count: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);
    let seeds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let mut profile = meshsim_models::MeshProfile::builtin(&name).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    if let Some(ms) = args.next().and_then(|a| a.parse().ok()) {
        profile.pod.proxy_bootstrap_ms = ms;
    }
    let (cal, sizes) = (calibration(), xds_sizes());
    let cfg = meshsim_models::SimConfig::default();
    println!(
        "profile {name}, {count} cold starts, mean over {seeds} seeds, proxy bootstrap {} ms",
        profile.pod.proxy_bootstrap_ms
    );
    println!("rate  p50_s  p99_s  achieved/s  writes/cs  failed");
    for rate in [0.5, 1.0, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0] {
        let (mut p50, mut p99, mut thr, mut w, mut failed) = (0.0, 0.0, 0.0, 0.0, 0);
        for seed in 1..=seeds {
            let inputs = meshsim_sim::meshmodel::MeshInputs {
                calibration: &cal,
                xds_sizes: Some(&sizes),
                record_xds: false,
            };
            let mesh: Box<dyn meshsim_sim::mesh::SidecarModel> = if profile.data_plane.kind
                == meshsim_models::mesh::DataPlaneKind::None
            {
                Box::new(meshsim_sim::mesh::NoMesh)
            } else {
                Box::new(
                    meshsim_sim::meshmodel::MeshModel::new(&profile, &cfg, count, inputs, seed, 0)
                        .unwrap_or_else(|e| {
                            eprintln!("{e}");
                            std::process::exit(1)
                        }),
                )
            };
            match meshsim_sim::coldstart::run_with_mesh(&cfg, rate, count, seed, mesh) {
                Ok(p) => {
                    p50 += p.p50_s;
                    p99 += p.p99_s;
                    thr += p.achieved_throughput_per_s;
                    w += p.api_writes_per_cold_start;
                    failed += p.failed;
                }
                Err(e) => eprintln!("rate {rate}: {e}"),
            }
        }
        let n = seeds as f64;
        println!(
            "{:4.2}  {:5.3}  {:5.3}  {:10.3}  {:9.2}  {}",
            rate,
            p50 / n,
            p99 / n,
            thr / n,
            w / n,
            failed
        );
    }
}
