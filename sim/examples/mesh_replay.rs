//! Replays a trace under mesh profiles (all built-ins by default, one thread each) and prints
//! each scenario's key figures and its slowdown ratios to `none`: the tool behind the fit of
//! `data_plane.policy_cpu_scale` (istio-policies vs none, slowdown p50).
//!
//! `cargo run --release -p meshsim-sim --example mesh_replay [trace] [minutes] [profile...]`

include!("common/mesh.rs");

fn main() {
    let mut args = std::env::args().skip(1);
    let spec = args.next().unwrap_or_else(|| "embedded:azure-250".into());
    let minutes: u32 = args.next().and_then(|m| m.parse().ok()).unwrap_or(30);
    let mut names: Vec<String> = args.collect();
    if names.is_empty() {
        names = meshsim_models::mesh::BUILTIN_PROFILES
            .iter()
            .map(|s| s.to_string())
            .collect();
    }
    let trace = match meshsim_traces::load(&spec).and_then(|t| t.window(minutes)) {
        Ok(t) => std::sync::Arc::new(t),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1)
        }
    };
    let (cal, sizes) = (calibration(), xds_sizes());
    let cfg = meshsim_models::SimConfig::default();
    let opts = meshsim_sim::RunOptions {
        seed: 42,
        replication: 0,
        record_invocations: true,
    };
    #[allow(clippy::disallowed_methods)] // an example measures its own wall time
    let t0 = std::time::Instant::now();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .map(|n| {
                let (trace, cal, sizes, cfg) = (trace.clone(), &cal, &sizes, &cfg);
                s.spawn(move || {
                    let p = meshsim_models::MeshProfile::builtin(n).map_err(|e| e.to_string())?;
                    let inputs = meshsim_sim::meshmodel::MeshInputs {
                        calibration: cal,
                        xds_sizes: Some(sizes),
                        record_xds: false,
                    };
                    meshsim_sim::run_profile(trace, cfg, &p, inputs, &opts, &mut |_, _| {})
                        .map_err(|e| e.to_string())
                        .map(|r| (n.clone(), r))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    let wall = t0.elapsed().as_secs_f64();
    let mut base = None;
    println!(
        "{:17} {:>7} {:>6} {:>8} {:>8} {:>8} {:>7} {:>7} {:>6} {:>6} {:>6} {:>9} {:>10} {:>8}",
        "profile",
        "failed",
        "cold",
        "sd_p50",
        "sd_p95",
        "sd_p99",
        "r_p50",
        "r_p95",
        "cs_p50",
        "cpcpu",
        "wcpu95",
        "xds_tx",
        "xds_MB",
        "xds_p50"
    );
    for r in results {
        let (name, r) = match r {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                eprintln!("{e}");
                continue;
            }
            Err(_) => continue,
        };
        let s = &r.summary;
        if name == "none" {
            base = Some(s.slowdown);
        }
        let (r50, r95) = base.map_or((f64::NAN, f64::NAN), |b| {
            (s.slowdown.p50 / b.p50, s.slowdown.p95 / b.p95)
        });
        println!(
            "{:17} {:>7} {:>6} {:>8.3} {:>8.3} {:>8.2} {:>7.2} {:>7.2} {:>6.2} {:>6.2} {:>6.2} {:>9} {:>10.1} {:>8}",
            name,
            s.failed,
            s.cold_starts,
            s.slowdown.p50,
            s.slowdown.p95,
            s.slowdown.p99,
            r50,
            r95,
            s.cold_start_s.p50,
            s.cp_cpu_cores.p95,
            s.worker_cpu_cores.p95,
            s.xds.transactions,
            s.xds.bytes as f64 / 1e6,
            s.xds.payload_bytes.p50
        );
        if let Some(inv) = &r.invocations {
            let mut o: Vec<u64> = inv
                .iter()
                .filter(|i| i.failure.is_none() && !i.cold)
                .map(|i| i.overhead_ns)
                .collect();
            o.sort_unstable();
            if !o.is_empty() {
                println!(
                    "    warm-invocation overhead (hops + proxy CPU) p50 {:.1} us",
                    o[o.len() / 2] as f64 / 1e3
                );
            }
        }
        if !s.failures_by_reason.is_empty() {
            println!("    failures {:?}", s.failures_by_reason);
        }
    }
    println!("wall {wall:.2} s for {} profiles", names.len());
}
