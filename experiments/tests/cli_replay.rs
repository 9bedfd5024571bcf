//! `meshsim replay` end to end through the real binary: every output file, the summary schema,
//! and clear errors for bad config.

use std::process::Command;

fn meshsim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_meshsim"))
        .env("CI", "1")
        .args(args)
        .output()
        .expect("run meshsim")
}

#[test]
fn replay_writes_summary_tables_run_and_figure() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let o = meshsim(&[
        "replay",
        "--trace",
        "embedded:azure-100",
        "--minutes",
        "5",
        "--seed",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in [
        "summary.json",
        "run.json",
        "invocations.parquet",
        "node_seconds.parquet",
        "slowdown_cdf.png",
        "slowdown_cdf.svg",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["schema"], 1);
    assert_eq!(s["seed"], 3);
    let sc = &s["scenarios"]["no-mesh"];
    for key in [
        "invocations",
        "completed",
        "failed",
        "failure_rate",
        "failures_by_reason",
        "cold_starts",
        "slowdown",
        "per_function_slowdown",
        "cold_start_s",
        "worker_cpu_cores",
        "worker_mem_gib",
        "cp_cpu_cores",
        "xds",
        "sim",
    ] {
        assert!(!sc[key].is_null(), "summary lacks {key}: {sc}");
    }
    let inv = sc["invocations"].as_u64().unwrap();
    assert_eq!(inv, s["trace"]["invocations"].as_u64().unwrap());
    assert!(sc["completed"].as_u64().unwrap() + sc["failed"].as_u64().unwrap() <= inv);
    assert!(sc["slowdown"]["p50"].as_f64().unwrap() >= 1.0);
    // Per function: one geometric mean per invoked function, each at least 1x.
    let pf = &sc["per_function_slowdown"];
    let functions = pf["functions"].as_u64().unwrap();
    assert!(functions > 0 && functions <= s["trace"]["functions"].as_u64().unwrap_or(u64::MAX));
    assert!(pf["p50"].as_f64().unwrap() >= 1.0);
    assert!(pf["p50"].as_f64().unwrap() <= pf["p95"].as_f64().unwrap());
    assert!(pf["p95"].as_f64().unwrap() <= pf["max"].as_f64().unwrap());
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["seed"], 3);
    assert_eq!(run["config_hash"].as_str().unwrap().len(), 16);
    assert!(run["config"]["cluster"]["workers"].as_u64().is_some());
    assert!(
        std::fs::read_dir(&out).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".tmp"))
    );
}

#[test]
fn bad_config_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "version = 1\n[cluster]\nworkers = 0\n").unwrap();
    let o = meshsim(&[
        "replay",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        dir.path().join("o").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("c.toml") && err.contains("workers"), "{err}");

    std::fs::write(&cfg, "version = 1\n[cluster]\nworkerz = 3\n").unwrap();
    let o = meshsim(&[
        "replay",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        dir.path().join("o").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("workerz"), "{err}");
    assert!(!dir.path().join("o/summary.json").exists());
}

#[test]
fn policies_flag_takes_the_names_its_help_lists_and_rejects_others() {
    let dir = tempfile::tempdir().unwrap();
    let help = String::from_utf8_lossy(&meshsim(&["replay", "--help"]).stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let listed = help
        .split("comma separated: jwt,")
        .nth(1)
        .and_then(|s| s.split("(`-`").next())
        .expect("the --policies help lists the policy names");
    let mut names = vec!["jwt".to_owned()];
    names.extend(
        listed
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty()),
    );
    assert_eq!(names.len(), 9, "{help}");
    for name in names
        .iter()
        .map(String::as_str)
        .chain(["rate-limit", "access-log"])
    {
        let out = dir.path().join(name);
        let o = meshsim(&[
            "replay",
            "--trace",
            "embedded:azure-100",
            "--minutes",
            "1",
            "--mesh",
            "istio",
            "--policies",
            name,
            "--no-invocations",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(
            o.status.success(),
            "--policies {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let o = meshsim(&["replay", "--mesh", "istio", "--policies", "firewall"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("firewall") && err.contains("allowed jwt"),
        "{err}"
    );
}

#[test]
fn a_mesh_replay_writes_its_xds_transactions_table() {
    // One row per xDS transaction (time, receiver, type, ack, bytes), as many as the summary
    // counts, for a profile with a control plane; CDS, EDS, LDS and RDS all appear.
    use polars::prelude::SerReader as _;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let o = meshsim(&[
        "replay",
        "--trace",
        "embedded:azure-100",
        "--minutes",
        "2",
        "--mesh",
        "istio",
        "--no-invocations",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let xds = &s["scenarios"]["istio"]["xds"];
    let t = polars::prelude::ParquetReader::new(
        std::fs::File::open(out.join("xds_transactions.parquet")).unwrap(),
    )
    .finish()
    .unwrap();
    for c in [
        "scenario", "time_s", "proxy", "receiver", "node", "type", "ack", "bytes",
    ] {
        assert!(
            t.column(c).is_ok(),
            "missing column {c}: {:?}",
            t.get_column_names()
        );
    }
    assert!(t.height() > 0);
    assert_eq!(t.height() as u64, xds["transactions"].as_u64().unwrap());
    let b = t.column("bytes").unwrap().u64().unwrap();
    let bytes: u64 = (0..b.len()).filter_map(|i| b.get(i)).sum();
    assert_eq!(bytes, xds["bytes"].as_u64().unwrap());
    let types = t.column("type").unwrap().str().unwrap();
    for ty in ["cds", "eds", "lds", "rds"] {
        assert!(
            (0..t.height()).any(|i| types.get(i) == Some(ty)),
            "no {ty} transaction"
        );
    }
}
