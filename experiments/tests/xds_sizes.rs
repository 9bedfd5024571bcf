//! xDS payload sizes from real Envoy protos: shape of the table, counts against MECHANISMS.md,
//! file round trip and validation errors.
//!
//! Reproduce: `cargo test -p meshsim-experiments --test xds_sizes`.
//! Regenerate the shipped file (release, this machine's codec timing):
//! `XDS_SIZES_OUT=models/xds-sizes.toml cargo test --release -p meshsim-experiments --test xds_sizes -- --ignored regenerate`

use std::sync::OnceLock;
use std::time::Duration;

use meshsim_experiments::xds_sizes::{
    self, Delivery, Options, PolicySet, Scope, View, XdsSizes, XdsSizesError, XdsType,
};

const KS: [u64; 3] = [1, 5, 20];

/// One small generation shared by the tests (short codec samples: this is a debug build).
fn sizes() -> &'static XdsSizes {
    static SIZES: OnceLock<XdsSizes> = OnceLock::new();
    SIZES.get_or_init(|| {
        xds_sizes::generate_with(&Options {
            ks: KS.iter().map(|&k| k as usize).collect(),
            timing_sample: Duration::from_millis(5),
            timing_repetitions: 1,
            command: "cargo test -p meshsim-experiments --test xds_sizes".into(),
            ..Options::default()
        })
    })
}

fn row(k: u64, scope: Scope, view: View, policies: PolicySet) -> &'static xds_sizes::Measured {
    sizes()
        .row(k, scope, view, policies)
        .unwrap_or_else(|| panic!("row k={k} {scope:?} {view:?} {policies:?}"))
}

#[test]
fn all_to_all_grows_with_k_and_minimal_sidecar_stays_flat() {
    for policies in PolicySet::ALL {
        for view in View::ALL {
            for w in KS.windows(2) {
                let (a, b) = (
                    row(w[0], Scope::AllToAll, view, policies),
                    row(w[1], Scope::AllToAll, view, policies),
                );
                for t in XdsType::ALL {
                    if t == XdsType::Lds && view == View::Gateway {
                        // The gateway's two listeners do not depend on K.
                        assert_eq!(a.lds_response_bytes, b.lds_response_bytes);
                        continue;
                    }
                    assert!(
                        b.response_bytes(t) > a.response_bytes(t),
                        "{view:?} {policies:?} {t:?}: K={} -> {} bytes, K={} -> {} bytes",
                        w[0],
                        a.response_bytes(t),
                        w[1],
                        b.response_bytes(t)
                    );
                }
                assert!(b.sotw_bytes > a.sotw_bytes);
            }
            // Minimal and fused sidecars: byte-for-byte the same state of the world at every K.
            let first = row(KS[0], Scope::Minimal, View::Sidecar, policies);
            for &k in &KS {
                for scope in [Scope::Minimal, Scope::Fused] {
                    let m = row(k, scope, View::Sidecar, policies);
                    assert_eq!(m.sotw_bytes, first.sotw_bytes, "{scope:?} sidecar at K={k}");
                    assert_eq!(m.clusters, first.clusters);
                }
            }
        }
        // At the largest K every narrower scope is smaller than all-to-all.
        let k = *KS.last().unwrap();
        let all = row(k, Scope::AllToAll, View::Sidecar, policies).sotw_bytes;
        let scoped = row(k, Scope::Scoped, View::Sidecar, policies).sotw_bytes;
        let minimal = row(k, Scope::Minimal, View::Sidecar, policies).sotw_bytes;
        assert!(
            minimal < scoped && scoped < all,
            "{minimal} < {scoped} < {all}"
        );
        let gw_all = row(k, Scope::AllToAll, View::Gateway, policies).sotw_bytes;
        let gw_min = row(k, Scope::Minimal, View::Gateway, policies).sotw_bytes;
        assert!(gw_min < gw_all);
    }
}

#[test]
fn per_service_counts_match_net_istio() {
    // MECHANISMS.md: each Knative Service adds 9 clusters, 8 assignments, 2 per-VIP TCP
    // listeners and 7 virtual hosts to a sidecar, 4 virtual hosts to the gateway.
    let s = sizes();
    for policies in PolicySet::ALL {
        let find = |scope, view| {
            s.scopes
                .iter()
                .find(|c| c.scope == scope && c.view == view && c.policies == policies)
                .unwrap()
        };
        let sidecar = find(Scope::AllToAll, View::Sidecar);
        assert_eq!(sidecar.clusters.per_service, 9);
        assert_eq!(sidecar.load_assignments.per_service, 8);
        assert_eq!(sidecar.listeners.per_service, 2);
        assert_eq!(sidecar.virtual_hosts.per_service, 7);
        assert_eq!(sidecar.route_configs.per_service, 0);
        // One activator pod behind 2 public ports, one revision pod behind 6 private ports.
        assert_eq!(sidecar.endpoints.per_service, 2 + 6);
        let gateway = find(Scope::AllToAll, View::Gateway);
        assert_eq!(gateway.virtual_hosts.per_service, 4);
        assert_eq!(gateway.clusters.per_service, 9);
        assert_eq!(gateway.listeners.per_service, 0);
        let minimal = find(Scope::Minimal, View::Sidecar);
        assert_eq!(minimal.clusters.per_service, 0);
        let gateway_min = find(Scope::Minimal, View::Gateway);
        assert_eq!(gateway_min.clusters.per_service, 1);
        assert_eq!(gateway_min.virtual_hosts.per_service, 4);
        let fused = find(Scope::Fused, View::Sidecar);
        assert_eq!(
            (fused.delivery, fused.xds_round_trips),
            (Delivery::WithSandbox, 0)
        );
        assert_eq!(fused.clusters, minimal.clusters);
        assert_eq!(find(Scope::Fused, View::Gateway).delivery, Delivery::Xds);
        assert_eq!(find(Scope::Scoped, View::Sidecar).services_cap, Some(10));
    }
    // The count formulas reproduce every measured row.
    for m in &s.measured {
        let c = s
            .scopes
            .iter()
            .find(|c| c.scope == m.scope && c.view == m.view && c.policies == m.policies)
            .unwrap();
        let n = c.visible_services(m.k);
        let at = |l: xds_sizes::Linear| l.fixed + l.per_service * n;
        assert_eq!(
            [
                m.clusters,
                m.load_assignments,
                m.endpoints,
                m.listeners,
                m.route_configs,
                m.virtual_hosts
            ],
            [
                at(c.clusters),
                at(c.load_assignments),
                at(c.endpoints),
                at(c.listeners),
                at(c.route_configs),
                at(c.virtual_hosts)
            ],
            "K={} {:?} {:?} {:?}",
            m.k,
            m.scope,
            m.view,
            m.policies
        );
    }
}

#[test]
fn fitted_sizes_are_consistent_with_the_encoded_bytes() {
    let s = sizes();
    for p in &s.per_resource {
        for (name, f) in [("cluster", &p.cluster), ("virtual_host", &p.virtual_host)] {
            assert!(
                f.r2 > 0.99,
                "{:?} {:?} {name}: r2 {}",
                p.view,
                p.policies,
                f.r2
            );
            assert!(
                f.bytes > 50.0,
                "{:?} {:?} {name}: {} bytes",
                p.view,
                p.policies,
                f.bytes
            );
        }
        assert!(p.endpoint.bytes > 20.0 && p.load_assignment.bytes > 20.0);
    }
    // Policies make every cluster larger (outlier detection, thresholds).
    let get = |view, policies| {
        s.per_resource
            .iter()
            .find(|p| p.view == view && p.policies == policies)
            .unwrap()
    };
    assert!(
        get(View::Sidecar, PolicySet::All).cluster.bytes
            > get(View::Sidecar, PolicySet::None).cluster.bytes
    );
    // The fit predicts the largest all-to-all sidecar within 5 %.
    let k = *KS.last().unwrap();
    for policies in PolicySet::ALL {
        let m = row(k, Scope::AllToAll, View::Sidecar, policies);
        let f = &get(View::Sidecar, policies).cluster;
        let predicted = f.intercept_bytes + f.bytes * m.clusters as f64;
        let err = (predicted - m.cds_response_bytes as f64).abs() / m.cds_response_bytes as f64;
        assert!(
            err < 0.05,
            "{policies:?}: predicted {predicted}, measured {}",
            m.cds_response_bytes
        );
    }
    assert!(s.codec.encode_ns_per_byte > 0.0 && s.codec.decode_ns_per_byte > 0.0);
    assert_eq!(s.codec.per_type.len(), 4);
}

#[test]
fn file_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("models").join("xds-sizes.toml");
    xds_sizes::write(&path, sizes()).unwrap();
    let back = xds_sizes::read(&path).unwrap();
    assert_eq!(&back, sizes());
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["xds-sizes.toml".to_string()]);
}

fn text() -> String {
    sizes().to_toml_string().unwrap()
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} not in the file");
    text.replacen(from, to, 1)
}

/// Replaces the first line that starts with `prefix`.
fn replace_line(text: &str, prefix: &str, to: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?}"));
    replace_once(text, &format!("{line}\n"), &format!("{to}\n"))
}

#[test]
fn invalid_files_name_the_field() {
    let text = text();
    let cases: Vec<(String, &str)> = vec![
        (
            replace_line(&text, "encode_ns_per_byte = ", "encode_ns_per_byte = -1.0"),
            "codec.encode_ns_per_byte",
        ),
        (replace_once(&text, "version = 1", "version = 7"), "version"),
        (
            replace_once(
                &text,
                "services_per_namespace = 10",
                "services_per_namespace = 0",
            ),
            "assumptions.services_per_namespace",
        ),
        (
            replace_line(&text, "sotw_bytes = ", "sotw_bytes = 1"),
            "measured[0].sotw_bytes",
        ),
        (
            replace_once(
                &text,
                "services_per_namespace = 10",
                "services_per_namespace = 10\nbogus_field = 3",
            ),
            "bogus_field",
        ),
        (
            replace_once(&text, "services_per_namespace = 10\n", ""),
            "services_per_namespace",
        ),
        (
            replace_once(&text, "scope = \"minimal\"", "scope = \"tiny\""),
            "tiny",
        ),
    ];
    for (bad, field) in cases {
        let err = XdsSizes::from_toml_str(&bad).expect_err(field);
        let msg = err.to_string();
        assert!(
            msg.contains(field),
            "error for {field} does not name it: {msg}"
        );
        if let XdsSizesError::Invalid { field: f, .. } = &err {
            assert_eq!(f, field);
        }
    }
}

/// Regenerates the shipped file with the default sweep. Run in release (see the module docs);
/// the output path comes from `XDS_SIZES_OUT` so that a plain `--ignored` run never overwrites
/// the repository's file by accident.
#[test]
#[ignore = "writes a calibration file; run explicitly in release"]
fn regenerate() {
    let Some(out) = std::env::var_os("XDS_SIZES_OUT") else {
        eprintln!("XDS_SIZES_OUT is not set: nothing to do");
        return;
    };
    let out = std::path::PathBuf::from(out);
    let out = if out.is_relative() {
        // Tests run in the crate directory; paths are relative to the workspace root.
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(out)
    } else {
        out
    };
    let command = "XDS_SIZES_OUT=models/xds-sizes.toml cargo test --release -p meshsim-experiments \
                   --test xds_sizes -- --ignored regenerate";
    xds_sizes::run_with(
        &out,
        &Options {
            command: command.into(),
            ..Options::default()
        },
    )
    .unwrap();
}
