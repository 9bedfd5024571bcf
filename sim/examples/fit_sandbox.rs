//! The fit of `kubernetes.pod_start.sandbox_create_ms`: prints the p50 cold-start latency at
//! 1 cold start/s (60 cold starts, mean over seeds 1..=5) for a range of sandbox times. The
//! default is the value whose p50 is closest to the paper's 1.2 s.
//!
//! `cargo run --release -p meshsim-sim --example fit_sandbox`

fn main() {
    let mut cfg = meshsim_models::SimConfig::default();
    println!("sandbox_create_ms  p50_s(mean of 5 seeds)");
    for ms in (400..=760).step_by(20) {
        cfg.kubernetes.pod_start.sandbox_create_ms = ms;
        let mut sum = 0.0;
        for seed in 1..=5 {
            match meshsim_sim::coldstart::run(&cfg, 1.0, 60, seed) {
                Ok(p) => sum += p.p50_s,
                Err(e) => {
                    eprintln!("{e}");
                    return;
                }
            }
        }
        println!("{ms:17}  {:.4}", sum / 5.0);
    }
}
