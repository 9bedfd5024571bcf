//! Same seed and config give the same bytes out; another seed gives other results.
//! Reproduce a failure with: cargo run --release -p meshsim-experiments -- replay --seed <S> --out <DIR>

use meshsim_experiments::replay::{self, ReplayArgs};
use meshsim_tests::summary_without_wall_time;
use std::path::Path;

fn replay_into(out: &Path, seed: u64, minutes: u32) {
    replay::run(ReplayArgs {
        trace: "embedded:azure-250".to_owned(),
        minutes,
        skip_minutes: 0,
        seed,
        config: None,
        out: out.to_path_buf(),
        no_invocations: false,
        mesh: vec!["all".to_owned()],
        policies: None,
        calibration: None,
    })
    .unwrap_or_else(|e| panic!("replay --seed {seed} --minutes {minutes} failed: {e:#}"));
}

fn digest(dir: &Path) -> String {
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("run.json")).unwrap()).unwrap();
    run["event_digest"].as_str().unwrap().to_owned()
}

#[test]
fn same_seed_same_bytes_other_seed_other_results() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    replay_into(a.path(), 7, 10);
    replay_into(b.path(), 7, 10);
    replay_into(c.path(), 8, 10);

    let sa = summary_without_wall_time(&a.path().join("summary.json"));
    let sb = summary_without_wall_time(&b.path().join("summary.json"));
    let sc = summary_without_wall_time(&c.path().join("summary.json"));
    assert_eq!(
        serde_json::to_string(&sa).unwrap(),
        serde_json::to_string(&sb).unwrap()
    );
    assert_eq!(digest(a.path()), digest(b.path()));
    for f in [
        "invocations.parquet",
        "node_seconds.parquet",
        "slowdown_cdf.png",
        "slowdown_cdf.svg",
    ] {
        assert_eq!(
            std::fs::read(a.path().join(f)).unwrap(),
            std::fs::read(b.path().join(f)).unwrap(),
            "{f} differs between two runs with seed 7"
        );
    }
    assert_ne!(
        digest(a.path()),
        digest(c.path()),
        "seed 8 must give another event log"
    );
    assert_ne!(
        sa["scenarios"], sc["scenarios"],
        "seed 8 must give other results"
    );
    assert_eq!(sa["trace"], sc["trace"]);
}
