//! Sampler, synthetic generator and writer.

use meshsim_traces::{
    SampleConfig, SynthConfig, TraceStats, read_dir, sample_trace, synthesize, write_dir,
};
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

#[test]
fn sample_500_to_200_round_trips_and_is_deterministic() {
    let t = read_dir(&data("500")).unwrap();
    let cfg = SampleConfig {
        functions: 200,
        candidates: 64,
        seed: 11,
    };
    let a = sample_trace(&t, cfg).unwrap();
    let b = sample_trace(&t, cfg).unwrap();
    assert_eq!(a.indices, b.indices);
    assert_eq!(a.trace, b.trace);
    assert_eq!(a.trace.functions.len(), 200);
    assert!(a.distance.is_finite() && a.distance > 0.0);
    // The winner is the best of the candidates, and strictly better than the worst one.
    assert_eq!(a.distance, a.candidate_range[0]);
    assert!(a.candidate_range[0] < a.candidate_range[2]);
    let c = sample_trace(&t, SampleConfig { seed: 12, ..cfg }).unwrap();
    assert_ne!(a.indices, c.indices);

    let dir = tempfile::tempdir().unwrap();
    write_dir(&a.trace, dir.path()).unwrap();
    let mut back = read_dir(dir.path()).unwrap();
    back.source = a.trace.source.clone();
    assert_eq!(back, a.trace);
    assert!(!dir.path().join("invocations.csv.tmp").exists());
}

#[test]
fn sampler_rejects_impossible_sizes() {
    let t = read_dir(&data("100")).unwrap();
    let e = sample_trace(
        &t,
        SampleConfig {
            functions: 101,
            candidates: 4,
            seed: 1,
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("1..=100"), "{e}");
    assert!(
        sample_trace(
            &t,
            SampleConfig {
                functions: 0,
                candidates: 4,
                seed: 1
            }
        )
        .is_err()
    );
}

#[test]
fn sampled_rate_distribution_is_closer_than_a_random_pick() {
    // Best-of-64 must beat the median candidate (the sampler does its job).
    let t = read_dir(&data("500")).unwrap();
    let r = sample_trace(
        &t,
        SampleConfig {
            functions: 100,
            candidates: 64,
            seed: 5,
        },
    )
    .unwrap();
    assert!(r.distance < r.candidate_range[1]);
}

#[test]
fn synthetic_trace_is_deterministic_any_size_and_round_trips() {
    let cfg = SynthConfig {
        functions: 300,
        minutes: 45,
        seed: 9,
        ..SynthConfig::default()
    };
    let a = synthesize(&cfg).unwrap();
    assert_eq!(a, synthesize(&cfg).unwrap());
    assert_ne!(a, synthesize(&SynthConfig { seed: 10, ..cfg }).unwrap());
    assert_eq!((a.functions.len(), a.minutes), (300, 45));
    // Zipf-like popularity: the top 10 % of functions carry most invocations.
    let mut inv: Vec<u64> = a.functions.iter().map(|f| f.invocations()).collect();
    inv.sort_unstable_by(|x, y| y.cmp(x));
    let top: u64 = inv[..30].iter().sum();
    assert!(
        top * 2 > a.invocations(),
        "top 10% carry {top} of {}",
        a.invocations()
    );
    // The mean rate is as configured (within sampling noise).
    let mean = a.invocations() as f64 / (300.0 * 45.0);
    assert!(
        (mean - cfg.mean_rate_per_function).abs() / cfg.mean_rate_per_function < 0.35,
        "{mean}"
    );
    // Duration: LogNormal(-0.38, 2.36) s has median e^-0.38 = 0.68 s.
    let mut d: Vec<f64> = a.functions.iter().map(|f| f.duration.average_ms).collect();
    d.sort_by(f64::total_cmp);
    assert!(
        (200.0..2000.0).contains(&d[150]),
        "median duration {} ms",
        d[150]
    );
    // Memory: Burr XII median = 107.083 * (2^(1/0.221) - 1)^(1/11.652) = 139 MB.
    let mut m: Vec<f64> = a.functions.iter().map(|f| f.memory.average_mb).collect();
    m.sort_by(f64::total_cmp);
    assert!(
        (110.0..175.0).contains(&m[150]),
        "median memory {} MB",
        m[150]
    );

    let dir = tempfile::tempdir().unwrap();
    write_dir(&a, dir.path()).unwrap();
    let back = read_dir(dir.path()).unwrap();
    assert_eq!(TraceStats::of(&back).invocations, a.invocations());
    assert_eq!(back.functions, a.functions);
}

#[test]
fn synthetic_parameters_are_validated() {
    let e = synthesize(&SynthConfig {
        functions: 0,
        ..SynthConfig::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("functions"), "{e}");
    assert!(
        synthesize(&SynthConfig {
            burstiness_shape: 0.0,
            ..SynthConfig::default()
        })
        .is_err()
    );
}

#[test]
fn scaling_keeps_totals_proportional() {
    let t = read_dir(&data("100")).unwrap().window(30).unwrap();
    let half = t.scaled(0.5);
    for (a, b) in t.functions.iter().zip(&half.functions) {
        let want = a.invocations() as f64 * 0.5;
        assert!(
            (b.invocations() as f64 - want).abs() <= 1.0,
            "{} vs {want}",
            b.invocations()
        );
    }
    assert_eq!(t.scaled(2.0).invocations(), 2 * t.invocations());
    assert_eq!(t.scaled(1.0).functions, t.functions);
}
