//! Scale check: a synthetic trace 10x the 500 sample (about 1.7 M invocations in 30 minutes,
//! 3,500 functions) on 100 workers, summary path only (no per-invocation table). Prints wall
//! time and events/s; measure peak RSS with `/usr/bin/time -v`.
//!
//! `cargo run --release -p meshsim-sim --example scale [functions] [rate_per_function_minute]`

fn main() {
    let mut args = std::env::args().skip(1);
    let functions: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3_500);
    let rate: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(16.3);
    let synth = meshsim_traces::SynthConfig {
        functions,
        minutes: 30,
        seed: 7,
        mean_rate_per_function: rate,
        ..meshsim_traces::SynthConfig::default()
    };
    let trace = match meshsim_traces::synthesize(&synth) {
        Ok(t) => std::sync::Arc::new(t),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
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
