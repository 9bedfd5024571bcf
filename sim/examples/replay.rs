//! Replays a trace without a mesh and prints the summary JSON, events, events/s and wall time.
//!
//! `[MESHSIM_CONFIG=file.toml] cargo run --release -p meshsim-sim --example replay [embedded:azure-250|DIR] [minutes]`

fn main() {
    let mut args = std::env::args().skip(1);
    let spec = args.next().unwrap_or_else(|| "embedded:azure-250".into());
    let minutes: u32 = args.next().and_then(|m| m.parse().ok()).unwrap_or(30);
    let trace = match meshsim_traces::load(&spec).and_then(|t| t.window(minutes)) {
        Ok(t) => std::sync::Arc::new(t),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let cfg = match std::env::var("MESHSIM_CONFIG") {
        Ok(path) => {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            match meshsim_models::SimConfig::from_toml_str(&text, &path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            }
        }
        Err(_) => meshsim_models::SimConfig::default(),
    };
    let opts = meshsim_sim::RunOptions {
        seed: 42,
        replication: 0,
        record_invocations: false,
    };
    #[allow(clippy::disallowed_methods)] // an example measures its own wall time
    let t0 = std::time::Instant::now();
    let r = match meshsim_sim::run(trace, &cfg, &opts, &mut |_, _| {}) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let wall = t0.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::to_string_pretty(&r.summary).unwrap_or_default()
    );
    println!(
        "events {} wall {:.3} s  {:.2} M events/s  pods started {}  api writes {}  digest {:016x}",
        r.events,
        wall,
        r.events as f64 / wall / 1e6,
        r.pods_started,
        r.api_writes,
        r.digest
    );
}
