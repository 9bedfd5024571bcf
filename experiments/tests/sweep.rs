//! `meshsim sweep` / `meshsim merge`: sharded + merged equals unsharded; resume skips finished
//! points; a bad axis is an error naming it.

use std::path::Path;
use std::process::Command;

fn meshsim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_meshsim"))
        .env("CI", "1")
        .args(args)
        .output()
        .expect("run meshsim")
}

fn ok(args: &[&str]) -> String {
    let o = meshsim(args);
    assert!(
        o.status.success(),
        "meshsim {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn grid(dir: &Path, axes: &str) -> String {
    let p = dir.join("grid.toml");
    std::fs::write(
        &p,
        format!("name = \"t\"\ntrace = \"embedded:azure-100\"\nminutes = 4\nseed = 5\nreplications = 2\n[axes]\n{axes}\n"),
    )
    .unwrap();
    p.display().to_string()
}

/// Runs `meshsim sweep` on a copy of `grid` with one text replaced, into `out`; it must fail.
/// Returns its stderr.
fn variant_fails(grid: &str, (from, to): (&str, &str), out: &Path) -> String {
    let variant = Path::new(grid).with_file_name("variant.toml");
    let text = std::fs::read_to_string(grid).unwrap();
    assert!(text.contains(from), "{from} not in {grid}");
    std::fs::write(&variant, text.replace(from, to)).unwrap();
    let o = meshsim(&[
        "sweep",
        "--grid",
        variant.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn frame(path: &Path) -> polars::prelude::DataFrame {
    use polars::prelude::SerReader as _;
    polars::prelude::ParquetReader::new(std::fs::File::open(path).unwrap())
        .finish()
        .unwrap()
}

#[test]
fn sharded_then_merged_equals_unsharded() {
    let d = tempfile::tempdir().unwrap();
    let g = grid(
        d.path(),
        "\"cluster.workers\" = [2, 4, 8]\n\"mesh.profile\" = [\"none\", \"istio\", \"linkerd\"]",
    );
    let whole = d.path().join("whole");
    ok(&["sweep", "--grid", &g, "--out", whole.to_str().unwrap()]);
    let mut shards = Vec::new();
    for i in 0..3 {
        let s = d.path().join(format!("shard{i}"));
        let out = ok(&[
            "sweep",
            "--grid",
            &g,
            "--out",
            s.to_str().unwrap(),
            "--shard",
            &format!("{i}/3"),
        ]);
        assert!(out.contains("6 points in shard"), "{out}");
        shards.push(s.display().to_string());
    }
    let merged = d.path().join("merged.parquet");
    let mut args = vec!["merge", "--out", merged.to_str().unwrap()];
    args.extend(shards.iter().map(String::as_str));
    ok(&args);
    let a = frame(&whole.join("sweep.parquet"));
    let b = frame(&merged);
    assert_eq!(a.height(), b.height());
    assert!(
        a.equals_missing(&b),
        "merged shards differ from the unsharded sweep:\n{a}\n{b}"
    );
    // 3 x 3 x 2 = 18 runs, each with the same metric set.
    let points = a.column("point").unwrap().n_unique().unwrap();
    assert_eq!(points, 18);
    let names: Vec<String> = a.get_column_names().iter().map(|s| s.to_string()).collect();
    for c in [
        "sweep",
        "point",
        "point_id",
        "replication",
        "seed",
        "cluster.workers",
        "mesh.profile",
        "metric",
        "value",
    ] {
        assert!(
            names.iter().any(|n| n == c),
            "missing column {c} in {names:?}"
        );
    }
}

#[test]
fn resume_skips_finished_points_and_bad_axes_are_named() {
    let d = tempfile::tempdir().unwrap();
    let g = grid(d.path(), "load_scale = [0.5, 1.0]");
    let out = d.path().join("o");
    ok(&["sweep", "--grid", &g, "--out", out.to_str().unwrap()]);
    let first = frame(&out.join("sweep.parquet"));
    // Lose one point (as if interrupted before it finished), then resume.
    let points: Vec<_> = std::fs::read_dir(out.join("points"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(points.len(), 4);
    std::fs::remove_file(&points[0]).unwrap();
    let msg = ok(&["sweep", "--grid", &g, "--out", out.to_str().unwrap()]);
    assert!(msg.contains("(3 already done)"), "{msg}");
    assert!(first.equals_missing(&frame(&out.join("sweep.parquet"))));

    // The same folder with another top-level workload is another sweep: refused, naming the
    // field, instead of taking its finished points as this one's.
    let err = variant_fails(&g, ("minutes = 4", "minutes = 4\nskip_minutes = 10"), &out);
    assert!(
        err.contains("another sweep") && err.contains("skip_minutes: 0 there, 10 now"),
        "{err}"
    );
    // A window past the trace's end names the point.
    let err = variant_fails(
        &g,
        ("load_scale = [0.5, 1.0]", "skip_minutes = [0, 478]"),
        &d.path().join("f"),
    );
    assert!(
        err.contains("skip_minutes=478") && err.contains("expected 1..=2"),
        "{err}"
    );

    let bad = grid(d.path(), "\"cluster.wrokers\" = [1]");
    let o = meshsim(&[
        "sweep",
        "--grid",
        &bad,
        "--out",
        d.path().join("b").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("wrokers"), "{err}");
    let bad = grid(d.path(), "\"cluster.workers\" = [0]");
    let o = meshsim(&[
        "sweep",
        "--grid",
        &bad,
        "--out",
        d.path().join("b").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("workers"));
}

#[test]
fn the_slurm_example_runs_as_a_job_array() {
    // Run the shipped batch script the way Slurm would (one process per array task).
    let d = tempfile::tempdir().unwrap();
    let g = grid(d.path(), "\"cluster.workers\" = [3, 6]");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sweep/slurm.sbatch");
    let out = d.path().join("res");
    for task in 0..2 {
        let o = Command::new("bash")
            .arg(&script)
            .args([&g, out.to_str().unwrap()])
            .env("MESHSIM", env!("CARGO_BIN_EXE_meshsim"))
            .env("SLURM_ARRAY_TASK_ID", task.to_string())
            .env("SLURM_ARRAY_TASK_COUNT", "2")
            .env("SLURM_CPUS_PER_TASK", "1")
            .env("CI", "1")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let merged = d.path().join("m.parquet");
    ok(&[
        "merge",
        "--out",
        merged.to_str().unwrap(),
        out.join("shard-0").to_str().unwrap(),
        out.join("shard-1").to_str().unwrap(),
    ]);
    let whole = d.path().join("whole");
    ok(&["sweep", "--grid", &g, "--out", whole.to_str().unwrap()]);
    assert!(frame(&whole.join("sweep.parquet")).equals_missing(&frame(&merged)));
}

#[test]
fn the_shipped_grids_are_valid() {
    // Every grid in examples/sweep/ parses, its base config resolves relative to the grid
    // file, and every point's config validates (what `meshsim sweep` checks before running).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sweep");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let g = meshsim_experiments::sweep::Grid::from_file(&path)
                .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            assert!(!g.points().is_empty(), "{}", path.display());
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "expected grid.toml and tipping.toml, found {checked}"
    );
}

#[test]
fn skip_minutes_replays_a_later_stretch_as_replay_does() {
    // A sweep point with `skip_minutes = 4` runs what `meshsim replay --skip-minutes 4` runs
    // (same trace window, seed and replication 0): the same invocations and slowdowns.
    let d = tempfile::tempdir().unwrap();
    let g = grid(
        d.path(),
        "skip_minutes = [0, 4]\n\"mesh.profile\" = [\"none\"]",
    );
    let out = d.path().join("o");
    ok(&["sweep", "--grid", &g, "--out", out.to_str().unwrap()]);
    let rows = frame(&out.join("sweep.parquet"));
    let metric = |skip: i64, name: &str| -> f64 {
        let (sk, rp, m, v) = (
            rows.column("skip_minutes").unwrap().i64().unwrap(),
            rows.column("replication").unwrap().u32().unwrap(),
            rows.column("metric").unwrap().str().unwrap(),
            rows.column("value").unwrap().f64().unwrap(),
        );
        let hits: Vec<f64> = (0..rows.height())
            .filter(|&i| sk.get(i) == Some(skip) && rp.get(i) == Some(0) && m.get(i) == Some(name))
            .filter_map(|i| v.get(i))
            .collect();
        assert_eq!(hits.len(), 1, "{name} at skip {skip}: {hits:?}");
        hits[0]
    };
    let rep = d.path().join("r");
    ok(&[
        "replay",
        "--trace",
        "embedded:azure-100",
        "--minutes",
        "4",
        "--skip-minutes",
        "4",
        "--seed",
        "5",
        "--mesh",
        "none",
        "--no-invocations",
        "--out",
        rep.to_str().unwrap(),
    ]);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rep.join("summary.json")).unwrap()).unwrap();
    let s = &summary["scenarios"]["no-mesh"];
    assert_eq!(s["invocations"].as_f64().unwrap(), metric(4, "invocations"));
    assert_eq!(
        s["slowdown"]["p95"].as_f64().unwrap(),
        metric(4, "slowdown.p95")
    );
    assert_ne!(metric(0, "invocations"), metric(4, "invocations"));
    assert_eq!(summary["trace"]["first_minute"], 484);
    // Too far: the error names the window and what the trace has left.
    let o = meshsim(&[
        "replay",
        "--trace",
        "embedded:azure-100",
        "--minutes",
        "4",
        "--skip-minutes",
        "478",
        "--out",
        d.path().join("bad").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("expected 1..=2"), "{err}");
}

#[test]
fn the_samples_script_keeps_paper_sized_samples_and_sweeps_them() {
    // Seed 1 draws a 200-function sample with ~21,000 invocations in 30 minutes (kept), seed
    // 22 one holding the 105,000-invocation function (left out).
    let d = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sweep/samples.sh");
    let out = d.path().join("s");
    let o = Command::new("bash")
        .arg(&script)
        .args([out.to_str().unwrap(), "1 22"])
        .env("MESHSIM", env!("CARGO_BIN_EXE_meshsim"))
        .env("CI", "1")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{log}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(log.contains("seed 1: ") && log.contains(", kept"), "{log}");
    assert!(
        log.contains("seed 22: ") && log.contains("left out"),
        "{log}"
    );
    let rows = frame(&out.join("sweep/sweep.parquet"));
    // One trace x {none, istio-policies} x 3 replications.
    assert_eq!(rows.column("point").unwrap().n_unique().unwrap(), 6);
    let traces = rows.column("trace").unwrap().str().unwrap();
    assert!((0..traces.len()).all(|i| traces.get(i).is_some_and(|t| t.ends_with("/s1"))));
}
