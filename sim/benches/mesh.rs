//! All mesh profiles on the bundled 30-minute trace (33,232 invocations), one thread per
//! profile, as `meshsim replay --mesh all` runs them: the issue-5 target is under 3 s in
//! release on the 2-core machine. Also each profile alone, for events/s.
//!
//! `CARGO_TARGET_DIR=... cargo bench -p meshsim-sim --bench mesh`

#![allow(clippy::print_stderr)]

include!("../examples/common/mesh.rs");

use criterion::{Criterion, criterion_group, criterion_main};
use meshsim_models::{MeshProfile, SimConfig};
use meshsim_sim::meshmodel::MeshInputs;
use meshsim_sim::{RunOptions, run_profile};
use std::sync::Arc;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let trace = Arc::new(
        meshsim_traces::embedded::load("azure-250")
            .expect("embedded trace exists")
            .expect("embedded trace is valid")
            .window(30)
            .expect("30 minutes"),
    );
    let (cal, sizes) = (calibration(), xds_sizes());
    let cfg = SimConfig::default();
    let opts = RunOptions {
        seed: 42,
        replication: 0,
        record_invocations: false,
    };
    let profiles = MeshProfile::builtins();
    let inputs = MeshInputs {
        calibration: &cal,
        xds_sizes: Some(&sizes),
        record_xds: false,
    };
    let run_one = |p: &MeshProfile| {
        run_profile(trace.clone(), &cfg, p, inputs, &opts, &mut |_, _| {}).expect("runs")
    };
    let mut g = c.benchmark_group("mesh");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("azure-250/30min/all-profiles-parallel", |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                let hs: Vec<_> = profiles
                    .iter()
                    .map(|p| s.spawn(|| run_one(p).events))
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().expect("no panic"))
                    .sum::<u64>()
            })
        })
    });
    for p in &profiles {
        let events = run_one(p).events;
        g.throughput(criterion::Throughput::Elements(events));
        g.bench_function(format!("azure-250/30min/{}", p.name), |b| {
            b.iter(|| run_one(p))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
