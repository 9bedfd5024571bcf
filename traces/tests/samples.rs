//! The vendored samples read as documented in traces/data/PROVENANCE.md.

use meshsim_traces::{
    ArrivalConfig, ArrivalProcess, ArrivalStream, Trace, TraceStats, Trigger, embedded, read_dir,
};
use std::path::PathBuf;
use std::sync::Arc;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

fn stats30(trace: &Trace) -> TraceStats {
    TraceStats::of(&trace.window(30).expect("30-minute window"))
}

#[test]
fn bundled_default_first_30_minutes() {
    let t = embedded::default_trace();
    assert_eq!(t.functions.len(), 250);
    assert_eq!(t.first_minute, 480);
    assert_eq!(t.minutes, 480);
    let s = stats30(&t);
    assert_eq!(s.invocations, 33_232);
    assert_eq!(s.active_functions, 171);
    assert_eq!(s.functions, 250);
    // Function counts per trigger (SOURCES.md).
    let f = |k| {
        s.per_trigger
            .iter()
            .find(|p| p.trigger == k)
            .map_or(0, |p| p.functions)
    };
    assert_eq!(f(Trigger::Timer), 126);
    assert_eq!(f(Trigger::Http), 70);
    assert_eq!(f(Trigger::Queue), 36);
    assert_eq!(f(Trigger::Orchestration), 13);
    assert_eq!(f(Trigger::Storage), 3);
    assert_eq!(f(Trigger::Event), 2);
    let per_trigger_sum: u64 = s.per_trigger.iter().map(|p| p.invocations).sum();
    assert_eq!(per_trigger_sum, s.invocations);
}

#[test]
fn sample_100_and_500_first_30_minutes() {
    let s100 = stats30(&read_dir(&data("100")).unwrap());
    assert_eq!(
        (s100.invocations, s100.active_functions, s100.functions),
        (19_058, 72, 100)
    );
    let s500 = stats30(&read_dir(&data("500")).unwrap());
    assert_eq!(
        (s500.invocations, s500.active_functions, s500.functions),
        (171_558, 359, 500)
    );
}

#[test]
fn whole_samples_match_provenance_totals() {
    assert_eq!(read_dir(&data("100")).unwrap().invocations(), 339_657);
    assert_eq!(read_dir(&data("250")).unwrap().invocations(), 567_403);
    assert_eq!(read_dir(&data("500")).unwrap().invocations(), 3_037_902);
}

#[test]
fn embedded_equals_files_on_disk() {
    let mut a = embedded::load("azure-250").unwrap().unwrap();
    let mut b = read_dir(&data("250")).unwrap();
    a.source.clear();
    b.source.clear();
    assert_eq!(a, b);
}

#[test]
fn invitro_example_minutes_start_at_one() {
    let t = read_dir(&data("invitro-example")).unwrap();
    assert_eq!((t.first_minute, t.minutes, t.functions.len()), (1, 1440, 4));
    assert_eq!(
        t.functions
            .iter()
            .map(|f| f.invocations())
            .collect::<Vec<_>>(),
        [1150, 1125, 1125, 1125]
    );
}

fn arrivals(
    trace: &Arc<Trace>,
    seed: u64,
    process: ArrivalProcess,
) -> Vec<meshsim_traces::Invocation> {
    ArrivalStream::new(
        trace.clone(),
        ArrivalConfig {
            process,
            seed,
            replication: 0,
        },
    )
    .collect()
}

#[test]
fn arrivals_are_seeded_ordered_and_match_counts() {
    let t = Arc::new(embedded::default_trace().window(30).unwrap());
    for process in [
        ArrivalProcess::Exponential,
        ArrivalProcess::Uniform,
        ArrivalProcess::Equidistant,
    ] {
        let a = arrivals(&t, 7, process);
        let b = arrivals(&t, 7, process);
        assert_eq!(a, b, "{process:?}: same seed must give identical arrivals");
        assert_eq!(a.len() as u64, t.invocations());
        assert!(
            a.windows(2)
                .all(|w| (w[0].at_ns, w[0].function) <= (w[1].at_ns, w[1].function))
        );
        // Per-minute, per-function counts equal the trace.
        let mut counts = vec![vec![0u32; t.minutes as usize]; t.functions.len()];
        for inv in &a {
            counts[inv.function as usize]
                [(inv.at_ns / meshsim_traces::arrivals::MINUTE_NS) as usize] += 1;
            assert!((1_000_000..=60_000_000_000).contains(&inv.exec_ns));
            assert!(inv.memory_mb.is_finite() && inv.memory_mb >= 0.0);
        }
        for (f, c) in t.functions.iter().zip(&counts) {
            assert_eq!(&f.per_minute, c);
        }
        if process != ArrivalProcess::Equidistant {
            let c = arrivals(&t, 8, process);
            assert_ne!(a, c, "{process:?}: another seed must give other arrivals");
        }
    }
}

#[test]
fn a_function_arrivals_do_not_depend_on_other_functions() {
    let full = Arc::new(embedded::default_trace().window(5).unwrap());
    let hot = (0..full.functions.len())
        .max_by_key(|&i| full.functions[i].invocations())
        .unwrap();
    let alone = Arc::new(full.subset(&[hot]));
    let a: Vec<_> = arrivals(&full, 3, ArrivalProcess::Exponential)
        .into_iter()
        .filter(|i| i.function == hot as u32)
        .map(|i| (i.at_ns, i.exec_ns))
        .collect();
    let b: Vec<_> = arrivals(&alone, 3, ArrivalProcess::Exponential)
        .into_iter()
        .map(|i| (i.at_ns, i.exec_ns))
        .collect();
    assert_eq!(a, b);
}

#[test]
fn execution_times_follow_the_bands() {
    // InVitro example: function 2 has all duration percentiles in [499, 501] ms.
    let t = Arc::new(
        read_dir(&data("invitro-example"))
            .unwrap()
            .window(60)
            .unwrap(),
    );
    let a = arrivals(&t, 1, ArrivalProcess::Exponential);
    let idx = t
        .functions
        .iter()
        .position(|f| f.duration.average_ms == 500.0)
        .unwrap() as u32;
    let f1: Vec<u64> = a
        .iter()
        .filter(|i| i.function == idx)
        .map(|i| i.exec_ns)
        .collect();
    assert_eq!(f1.len() as u64, t.functions[idx as usize].invocations());
    assert!(f1.len() > 200);
    assert!(f1.iter().all(|&e| (499_000_000..=501_000_000).contains(&e)));
}
