//! Replay throughput: the bundled 30-minute trace (33,232 invocations) and the 500-function
//! sample windowed to 30 minutes (171,558 invocations), no mesh, summary path only.
//!
//! `CARGO_TARGET_DIR=... cargo bench -p meshsim-sim --bench replay`

use criterion::{Criterion, criterion_group, criterion_main};
use meshsim_models::SimConfig;
use meshsim_sim::{RunOptions, run};
use std::sync::Arc;
use std::time::Duration;

fn trace(name: &str) -> Arc<meshsim_traces::Trace> {
    let t = meshsim_traces::embedded::load(name)
        .expect("embedded trace exists")
        .expect("embedded trace is valid");
    Arc::new(t.window(30).expect("30 minutes"))
}

fn bench(c: &mut Criterion) {
    let cfg = SimConfig::default();
    let opts = RunOptions {
        seed: 42,
        replication: 0,
        record_invocations: false,
    };
    let mut g = c.benchmark_group("replay");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for name in ["azure-250", "azure-500"] {
        let t = trace(name);
        let events = run(t.clone(), &cfg, &opts, &mut |_, _| {})
            .expect("runs")
            .events;
        g.throughput(criterion::Throughput::Elements(events));
        g.bench_function(format!("{name}/30min/no-mesh"), |b| {
            b.iter(|| run(t.clone(), &cfg, &opts, &mut |_, _| {}).expect("runs"))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
