//! `meshsim calibrate` end to end: the real sidecar and Redis on loopback, a short run per point,
//! and the file it writes read back with the simulator's schema. CI starts Redis (see .ci/run);
//! without it the rate-limit point fails, and so does this test.

use std::process::{Command, Output};

/// `meshsim ARGS` with `CI=1` (no progress bars).
fn meshsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshsim"))
        .env("CI", "1")
        .args(args)
        .output()
        .unwrap()
}

/// Panics with both output streams unless the run succeeded.
fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn short_live_calibration_writes_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cal.toml");
    let o = meshsim(&[
        "calibrate",
        "--duration",
        "1",
        "--rates",
        "1000",
        "--no-nginx",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_ok(&o);
    let text = std::fs::read_to_string(&out).unwrap();
    let cal = meshsim_models::CalibrationFile::from_toml_str(&text, "cal.toml").unwrap();
    // Pass-through, each of the nine policies alone, and all nine, at the one rate. (CPU time
    // comes from /proc schedstat in ns: 1000 requests at tens of µs each are well resolved.)
    for set in ["pass-through", "mtls", "all-nine"] {
        let e = cal
            .entry(set, 1000)
            .unwrap_or_else(|| panic!("no entry for {set}"));
        assert!(e.cpu_us_per_request > 0.0, "{set}: {e:?}");
        assert!(e.rss_kib > 0, "{set}: {e:?}");
    }
    assert_eq!(
        cal.entries.len(),
        11,
        "{:?}",
        cal.entries
            .iter()
            .map(|e| &e.policy_set)
            .collect::<Vec<_>>()
    );
    assert!(cal.machine.cores >= 1 && !cal.measured_at.is_empty());
    // The per-round difference to the pass-through: with one round, exactly the difference of
    // the two entries; the pass-through has none.
    let pt = cal.entry("pass-through", 1000).unwrap();
    assert_eq!(pt.cpu_us_over_pass_through, None);
    for e in cal
        .entries
        .iter()
        .filter(|e| e.policy_set != "pass-through")
    {
        let over = e
            .cpu_us_over_pass_through
            .unwrap_or_else(|| panic!("{}: no paired difference", e.policy_set));
        let diff = e.cpu_us_per_request - pt.cpu_us_per_request;
        assert!(
            (over - diff).abs() < 1e-6,
            "{}: {over} vs {diff}",
            e.policy_set
        );
    }
    // Per-request isolation (issue 9): micro-benchmark means and the header-only point in
    // both modes.
    let iso = cal
        .isolation
        .as_ref()
        .and_then(|i| i.per_request.as_ref())
        .expect("[isolation.per_request]");
    assert!(iso.sandbox_create_us > 0.0 && iso.chain_us > 0.0, "{iso:?}");
    assert_eq!(cal.sandbox_create_us(), Some(iso.sandbox_create_us));
    assert_eq!(iso.entries.len(), 1, "{iso:?}");
    let p = &iso.entries[0];
    assert_eq!(p.rate_rps, 1000);
    assert!(
        p.shared_idle_anon_kib > 0 && p.per_request_idle_anon_kib > 0,
        "{p:?}"
    );
    // The mTLS handshake: 1 s of fresh connections at the default 200/s against reused ones.
    // CPU comes from /proc/<pid>/task/*/schedstat (ns), and a full handshake is hundreds of µs
    // of ECDHE + ECDSA on each side, so both differences are well above zero.
    let hs = cal
        .mtls_handshake
        .as_ref()
        .expect("meshsim calibrate measures the mTLS handshake");
    assert!(hs.connections >= 100, "{hs:?}");
    assert!(hs.server_cpu_us > 0.0, "{hs:?}");
    assert!(hs.client_cpu_us > 0.0, "{hs:?}");
    assert!(hs.error_rate <= 0.01, "{hs:?}");
}

#[test]
fn bad_arguments_are_clear_errors() {
    let o = meshsim(&["calibrate", "--rates", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--rates"));
    let o = meshsim(&["calibrate", "--handshake-rate", "0"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--handshake-rate"));
}

#[test]
fn isolation_into_rewrites_only_that_table_and_keeps_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cal.toml");
    let shipped = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/calibration/reference-2core.toml"
    );
    let text = std::fs::read_to_string(shipped).unwrap();
    let before = meshsim_models::CalibrationFile::from_toml_str(&text, shipped).unwrap();
    std::fs::write(&path, &text).unwrap();
    let o = meshsim(&[
        "calibrate",
        "isolation",
        "--rates",
        "1000",
        "--duration",
        "0.5",
        "--into",
        path.to_str().unwrap(),
    ]);
    assert_ok(&o);
    let new_text = std::fs::read_to_string(&path).unwrap();
    let header = |t: &str| {
        t.lines()
            .take_while(|l| l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(header(&new_text), header(&text));
    let after = meshsim_models::CalibrationFile::from_toml_str(&new_text, "cal.toml").unwrap();
    assert_eq!(after.entries, before.entries);
    assert_eq!(after.mtls_handshake, before.mtls_handshake);
    let iso = after
        .isolation
        .as_ref()
        .and_then(|i| i.per_request.as_ref())
        .expect("[isolation.per_request]");
    assert_eq!(iso.entries.len(), 1, "{iso:?}");
    assert_eq!(iso.entries[0].rate_rps, 1000);
    assert!(iso.sandbox_create_us > 0.0, "{iso:?}");
    // A file that does not parse is refused before anything is measured, naming it.
    std::fs::write(&path, "schema = \"one\"\n").unwrap();
    let o = meshsim(&["calibrate", "isolation", "--into", path.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("cal.toml"));
}
