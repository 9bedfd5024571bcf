//! `meshsim reproduce` end to end through the real binary, on a short window.

use std::process::Command;

#[test]
fn reproduce_writes_every_figure_table_and_the_tipping_point_study() {
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
        "scenario,api_writes_per_s,replication,slowdown_p50_ratio,slowdown_p95_ratio,failure_rate"
    );
    assert_eq!(rows.len(), 1 + 5 * 6 * 2, "{csv}");
    for r in &rows[1..] {
        let ratio: f64 = r.split(',').nth(3).unwrap().parse().unwrap();
        assert!(ratio.is_finite() && ratio > 0.0, "{r}");
        if r.starts_with("no-mesh,") {
            assert_eq!(ratio, 1.0, "no-mesh is its own reference: {r}");
        }
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("## Tipping point"), "{report}");
    assert!(report.contains("| istio-policies |"), "{report}");
}
