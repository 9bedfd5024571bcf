//! The fit of `data_plane.policy_cpu_scale` in `istio-policies.toml`: replays the bundled
//! 30-minute trace (default config, seed 42) with `none` and with `istio-policies` at several
//! policy scales, and prints the slowdown ratios p50 and p95 (istio-policies / none). The paper
//! measured p50 7x (the fitted target) and p95 38.3x (an outcome, not fitted).
//!
//! `cargo run --release -p meshsim-sim --example fit_policy_scale [scale...]`
//! (`MESHSIM_FIT=latency` scales `data_plane.latency_scale` instead: a what-if, not a fit.)

include!("common/mesh.rs");

fn main() {
    let mut scales: Vec<f64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if scales.is_empty() {
        scales = vec![1.0, 5.0, 10.0, 20.0, 40.0];
    }
    let trace = std::sync::Arc::new(
        meshsim_traces::load("embedded:azure-250")
            .and_then(|t| t.window(30))
            .unwrap_or_else(|e| {
                eprintln!("{e}");
                std::process::exit(1)
            }),
    );
    let (cal, sizes) = (calibration(), xds_sizes());
    let cfg = match std::env::var("MESHSIM_CONFIG") {
        Ok(path) => {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            meshsim_models::SimConfig::from_toml_str(&text, &path).unwrap_or_else(|e| {
                eprintln!("{e}");
                std::process::exit(1)
            })
        }
        Err(_) => meshsim_models::SimConfig::default(),
    };
    let opts = meshsim_sim::RunOptions {
        seed: 42,
        replication: 0,
        record_invocations: false,
    };
    let run = |p: &meshsim_models::MeshProfile| {
        let inputs = meshsim_sim::meshmodel::MeshInputs {
            calibration: &cal,
            xds_sizes: Some(&sizes),
            record_xds: false,
        };
        meshsim_sim::run_profile(trace.clone(), &cfg, p, inputs, &opts, &mut |_, _| {})
            .unwrap_or_else(|e| {
                eprintln!("{e}");
                std::process::exit(1)
            })
            .summary
    };
    let none = run(
        &meshsim_models::MeshProfile::builtin("none").unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(1)
        }),
    );
    let base = meshsim_models::MeshProfile::builtin("istio-policies").unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    println!("scale  p50_ratio  p95_ratio  p99_ratio  failed");
    let rows: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = scales
            .iter()
            .map(|&k| {
                let mut p = base.clone();
                if std::env::var("MESHSIM_FIT").as_deref() == Ok("latency") {
                    // What-if: scale the non-CPU added latency instead of the policy CPU.
                    p.data_plane.latency_scale = k;
                } else {
                    p.data_plane.policy_cpu_scale = k;
                }
                let run = &run;
                s.spawn(move || (k, run(&p)))
            })
            .collect();
        hs.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    for (k, s) in rows {
        println!(
            "{:5.1}  {:9.2}  {:9.2}  {:9.2}  {}",
            k,
            s.slowdown.p50 / none.slowdown.p50,
            s.slowdown.p95 / none.slowdown.p95,
            s.slowdown.p99 / none.slowdown.p99,
            s.failed
        );
    }
}
