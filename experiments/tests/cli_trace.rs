//! `meshsim trace ...` end to end through the real binary.

use std::path::PathBuf;
use std::process::{Command, Output};

fn meshsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshsim"))
        .args(args)
        .output()
        .expect("run meshsim")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn data(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../traces/data")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn stats_on_the_bundled_default() {
    let o = meshsim(&["trace", "stats", "--minutes", "30"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = stdout(&o);
    assert!(s.contains("invocations      33232"), "{s}");
    assert!(s.contains("active functions 171"), "{s}");
    assert!(s.contains("functions        250"), "{s}");
    assert!(s.contains("queue"), "{s}");
}

#[test]
fn stats_of_a_later_stretch() {
    // The second half-hour of the bundled sample (minute columns 510..539), and all columns
    // after the first 450 (the last half-hour, 930..959).
    let o = meshsim(&["trace", "stats", "--skip-minutes", "30", "--minutes", "30"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = stdout(&o);
    assert!(s.contains("minutes 510..=539"), "{s}");
    assert!(s.contains("invocations      33198"), "{s}");
    let o = meshsim(&["trace", "stats", "--skip-minutes", "450", "--minutes", "0"]);
    let s = stdout(&o);
    assert!(
        s.contains("minutes 930..=959") && s.contains("invocations      38695"),
        "{s}"
    );
    let o = meshsim(&["trace", "stats", "--skip-minutes", "480", "--minutes", "0"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("480 minute columns skipped: expected 0..=479"),
        "{err}"
    );
}

#[test]
fn stats_json_and_other_samples() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("s.json");
    let o = meshsim(&[
        "trace",
        "stats",
        "--trace",
        &data("500"),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["invocations"], 171_558);
    assert_eq!(v["active_functions"], 359);
}

#[test]
fn sample_then_stats() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s200");
    let args = [
        "trace",
        "sample",
        "--trace",
        &data("500"),
        "--functions",
        "200",
        "--seed",
        "3",
        "--out",
    ];
    let o = meshsim(&[&args[..], &[out.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("distance"));
    let first = std::fs::read(out.join("invocations.csv")).unwrap();
    // Same seed, same files.
    let o = meshsim(&[&args[..], &[out.to_str().unwrap()]].concat());
    assert!(o.status.success());
    assert_eq!(first, std::fs::read(out.join("invocations.csv")).unwrap());
    let o = meshsim(&[
        "trace",
        "stats",
        "--trace",
        out.to_str().unwrap(),
        "--minutes",
        "0",
    ]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("functions        200"));
}

#[test]
fn synth_writes_a_readable_trace() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("syn");
    let o = meshsim(&[
        "trace",
        "synth",
        "--functions",
        "50",
        "--minutes",
        "10",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = meshsim(&[
        "trace",
        "stats",
        "--trace",
        out.to_str().unwrap(),
        "--minutes",
        "10",
    ]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("functions        50"));
}

#[test]
fn bad_input_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["invocations.csv", "durations.csv", "memory.csv"] {
        std::fs::copy(
            PathBuf::from(data("invitro-example")).join(f),
            dir.path().join(f),
        )
        .unwrap();
    }
    let mem = dir.path().join("memory.csv");
    let text = std::fs::read_to_string(&mem)
        .unwrap()
        .replacen(",19342.0,", ",lots,", 1);
    std::fs::write(&mem, text).unwrap();
    let o = meshsim(&["trace", "stats", "--trace", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "memory.csv:2: column 'SampleCount': expected a non-negative number, found 'lots'"
        ),
        "{err}"
    );
    assert!(!err.contains("panicked"));

    let o = meshsim(&["trace", "stats", "--trace", "embedded:nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("embedded:azure-250"));
}
