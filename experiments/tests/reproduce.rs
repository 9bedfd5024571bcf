//! `meshsim reproduce` end to end through the real binary, on a short window.

use std::process::Command;

#[test]
fn reproduce_writes_every_figure_table_the_tipping_point_study_and_the_policy_ablation() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rep");
    let o = Command::new(env!("CARGO_BIN_EXE_meshsim"))
        .args([
            "reproduce",
            "--minutes",
            "3",
            "--replications",
            "2",
            "--coldstart-count",
            "20",
            "--out",
        ])
        .arg(&out)
        .env("CI", "1")
        .output()
        .expect("run meshsim");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for stem in [
        "fig1_slowdown_cdf",
        "fig3_node_utilisation",
        "fig4_xds_over_time",
        "fig5_xds_payload_cdf",
        "coldstart",
        "policy_ablation",
        "lightweight_comparison",
        "tipping_point",
    ] {
        for ext in ["png", "svg"] {
            let p = out.join(format!("{stem}.{ext}"));
            assert!(
                std::fs::metadata(&p).is_ok_and(|m| m.len() > 0),
                "{}",
                p.display()
            );
        }
    }
    // 5 scenarios (no-mesh is the reference, ratio 1) x 6 capacities x 2 replications.
    let csv = std::fs::read_to_string(out.join("tipping_point.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "scenario,api_writes_per_s,replication,slowdown_p50_ratio,slowdown_p95_ratio,\
         per_function_slowdown_p50_ratio,per_function_slowdown_p95_ratio,failure_rate"
    );
    assert_eq!(rows.len(), 1 + 5 * 6 * 2, "{csv}");
    for r in &rows[1..] {
        for column in 3..7 {
            let ratio: f64 = r.split(',').nth(column).unwrap().parse().unwrap();
            assert!(ratio.is_finite() && ratio > 0.0, "{r}");
            if r.starts_with("no-mesh,") {
                assert_eq!(ratio, 1.0, "no-mesh is its own reference: {r}");
            }
        }
    }
    // The policy ablation: one row per policy and mode, every replication paired.
    let csv = std::fs::read_to_string(out.join("policy_ablation.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    let header = &rows[0];
    assert_eq!(
        &header[..4],
        ["policy", "mode", "api_writes_per_s", "replications"]
    );
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no column {name}: {csv}"))
    };
    let policies = meshsim_models::calibration::POLICIES;
    assert_eq!(rows.len(), 1 + policies.len() * 2, "{csv}");
    for mode in ["alone", "on_top_of_other_eight"] {
        for p in policies {
            let n = rows[1..]
                .iter()
                .filter(|r| r[0] == p && r[1] == mode)
                .count();
            assert_eq!(n, 1, "{p} {mode}: {csv}");
        }
    }
    for r in &rows[1..] {
        assert_eq!(r.len(), header.len(), "{r:?}");
        assert_eq!(r[3], "2", "both replications paired: {r:?}");
        for (h, v) in header.iter().zip(r).skip(2) {
            let x: f64 = v.parse().unwrap_or_else(|_| panic!("{h} = '{v}' in {r:?}"));
            assert!(x.is_finite(), "{h} = {v} in {r:?}");
        }
    }
    // JWT has a measured positive CPU cost in the shipped calibration (53.5 vs 32.4 us per request
    // at 1000 rps), so istio with JWT alone must use more worker CPU than istio without it.
    let jwt = rows[1..]
        .iter()
        .find(|r| r[0] == "jwt" && r[1] == "alone")
        .unwrap();
    let cpu: f64 = jwt[col("added_worker_cpu_cores_mean")].parse().unwrap();
    assert!(cpu > 0.0, "jwt alone added CPU {cpu}: {csv}");
    let overhead: f64 = jwt[col("added_warm_overhead_us_mean")].parse().unwrap();
    assert!(overhead > 0.0, "jwt alone added overhead {overhead}: {csv}");
    // Alone, any policy also adds the pipeline-activation cost and policy configuration in
    // xDS; on top of the other eight only JWT's own marginal cost remains.
    let on_top = rows[1..]
        .iter()
        .find(|r| r[0] == "jwt" && r[1] == "on_top_of_other_eight")
        .unwrap();
    let cpu: f64 = on_top[col("added_worker_cpu_cores_mean")].parse().unwrap();
    assert!(
        cpu > 0.0,
        "jwt on top of the other eight added CPU {cpu}: {csv}"
    );

    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("## Tipping point"), "{report}");
    assert!(report.contains("## Policy ablation"), "{report}");
    assert!(report.contains("| istio-policies |"), "{report}");
    // The paper comparison reads the slowdowns both ways: per invocation and per function.
    let vs = report
        .lines()
        .find(|l| l.starts_with("istio-policies vs no-mesh: slowdown p50"))
        .unwrap_or_else(|| panic!("no comparison line: {report}"));
    assert!(
        vs.contains("per invocation") && vs.contains("per function"),
        "{vs}"
    );
    assert!(report.contains("per-function slowdown p50"), "{report}");
    // Only istio-policies (STRICT mTLS hides pod IPs from the activator) sends requests to busy
    // pods.
    let busy = report
        .lines()
        .find(|l| l.starts_with("Invocations sent to a busy pod"))
        .unwrap_or_else(|| panic!("no busy-pod line: {report}"));
    assert!(
        busy.contains("no-mesh 0 %") && busy.contains("istio 0 %"),
        "{busy}"
    );
    assert!(!busy.contains("istio-policies 0 %"), "{busy}");
}
