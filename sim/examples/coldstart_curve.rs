//! Prints the cold-start curve (latency and achieved throughput vs offered rate) of the
//! default config: the tool used to fit `sandbox_create_ms` and check the knee.
//!
//! `cargo run --release -p meshsim-sim --example coldstart_curve [count]`

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(120);
    let cfg = meshsim_models::SimConfig::default();
    println!("rate  p50_s  p99_s  max_s  achieved/s  writes/cs  failed");
    for rate in [0.5, 1.0, 1.5, 2.0, 2.25, 2.5, 2.75, 3.0, 4.0] {
        match meshsim_sim::coldstart::run(&cfg, rate, count, 1) {
            Ok(p) => println!(
                "{:4.2}  {:5.3}  {:5.3}  {:6.2}  {:10.3}  {:9.2}  {}",
                p.rate,
                p.p50_s,
                p.p99_s,
                p.max_s,
                p.achieved_throughput_per_s,
                p.api_writes_per_cold_start,
                p.failed
            ),
            Err(e) => eprintln!("rate {rate}: {e}"),
        }
    }
}
