//! Reading the 500-function sample and generating its 30-minute arrivals (171,558 invocations).
//! Issue target: under 1 s in release on a 2-core machine.

use criterion::{Criterion, criterion_group, criterion_main};
use meshsim_traces::{ArrivalConfig, ArrivalStream, read_dir};
use std::path::Path;
use std::sync::Arc;

fn bench(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/500");
    let mut g = c.benchmark_group("trace-500");
    g.sample_size(10);
    g.bench_function("read", |b| b.iter(|| read_dir(&dir).unwrap()));
    g.bench_function("read+arrivals-30min", |b| {
        b.iter(|| {
            let t = Arc::new(read_dir(&dir).unwrap().window(30).unwrap());
            let n = ArrivalStream::new(
                t,
                ArrivalConfig {
                    seed: 1,
                    ..Default::default()
                },
            )
            .count();
            assert_eq!(n, 171_558);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
