//! Scale check on 100 workers, summary path only (no per-invocation table). Prints wall time
//! and events/s; measure peak RSS with `/usr/bin/time -v`.
//!
//! - `scale replicate 10`: the 500 sample (30 min) with every function copied 10 times:
//!   1.7 M invocations at 10x the sample's load, i.e. the same load per worker;
//! - `scale [functions] [rate_per_function_minute]`: a synthetic trace (defaults: 3,500
//!   functions, 16.3 invocations per function-minute, about 1.7 M invocations).
//!
//! `cargo run --release -p meshsim-sim --example scale -- replicate 10`

fn main() {
    let mut args = std::env::args().skip(1);
    let first = args.next().unwrap_or_default();
    let trace = if first == "replicate" {
        // The 500 sample's first 30 minutes, each function copied `k` times under new names
        // (so each copy draws its own arrivals): k x 171,558 invocations, the per-function
        // load of the sample.
        let k: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
        let base = match meshsim_traces::embedded::load("azure-500")
            .map(|t| t.and_then(|t| t.window(30)))
        {
            Some(Ok(t)) => t,
            _ => {
                eprintln!("cannot load embedded:azure-500");
                std::process::exit(1);
            }
        };
        let mut t = base.clone();
        t.functions.clear();
        for copy in 0..k {
            for f in &base.functions {
                let mut f = f.clone();
                f.hash_function = format!("{}-{copy}", f.hash_function);
                t.functions.push(f);
            }
        }
        std::sync::Arc::new(t)
    } else {
        let functions: usize = first.parse().unwrap_or(3_500);
        let rate: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(16.3);
        let synth = meshsim_traces::SynthConfig {
            functions,
            minutes: 30,
            seed: 7,
            mean_rate_per_function: rate,
            ..meshsim_traces::SynthConfig::default()
        };
        match meshsim_traces::synthesize(&synth) {
            Ok(t) => std::sync::Arc::new(t),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
    };
    let functions = trace.functions.len();
    let mut cfg = meshsim_models::SimConfig::default();
    cfg.cluster.workers = 100;
    let opts = meshsim_sim::RunOptions {
        seed: 42,
        replication: 0,
        record_invocations: false,
    };
    println!(
        "{} invocations, {} functions",
        trace.invocations(),
        functions
    );
    #[allow(clippy::disallowed_methods)] // an example measures its own wall time
    let t0 = std::time::Instant::now();
    match meshsim_sim::run(trace, &cfg, &opts, &mut |_, _| {}) {
        Ok(r) => {
            let wall = t0.elapsed().as_secs_f64();
            let s = &r.summary;
            println!(
                "completed {} failed {} cold {} slowdown p50 {:.2} p99 {:.2}",
                s.completed, s.failed, s.cold_starts, s.slowdown.p50, s.slowdown.p99
            );
            println!(
                "events {}  wall {:.2} s  {:.2} M events/s",
                r.events,
                wall,
                r.events as f64 / wall / 1e6
            );
        }
        Err(e) => eprintln!("{e}"),
    }
}
