//! Per-request isolation: nothing survives an instance except through host functions; a
//! trapping, looping, memory-hungry or stack-hungry policy is stopped within its limits and
//! only its request fails; the sandboxed chain makes the same decisions and header edits as
//! the shared tower layers for the same inputs.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use bytes::Bytes;
use common::*;
use http::{HeaderValue, Request, Version};
use http_body_util::{BodyExt, Full};
use jsonwebtoken::Algorithm;
use meshsim_sidecar::config::{Config, Isolation};
use meshsim_sidecar::http::{ConnInfo, ListenerKind, Req, Resp};
use meshsim_sidecar::policy::Check;
use meshsim_sidecar::policy::authz::Authz;
use meshsim_sidecar::policy::jwt::{Jwt, TestIssuer};
use meshsim_sidecar::policy::mtls::Mtls;
use meshsim_sidecar::policy::ports::Ports;
use meshsim_sidecar::policy::tracing::{TraceCtx, Tracing};
use meshsim_sidecar::sandbox::layer::{ChainParts, SandboxLayer};
use meshsim_sidecar::sandbox::{HostShared, Limits, Sandbox, SandboxError};
use meshsim_sidecar::stats::Stats;

fn limits() -> Limits {
    Limits {
        fuel: 100_000,
        max_memory_bytes: 4 * 65_536,
        max_stack_bytes: 64 * 1024,
        instances: 4,
        keep_resident_bytes: 0,
        idle_release: None,
    }
}

fn u32_at(mem: &[u8], at: usize) -> u32 {
    mem.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(u32::MAX)
}

/// Writes to a global, to memory and grows memory on every run; reports what it found first.
const STATEFUL: &str = r#"
(module
  (import "host" "cache_incr" (func $incr (param i32 i32 i64) (result i64)))
  (memory (export "memory") 1)
  (global (export "input_base") i32 (i32.const 1024))
  (global $g (mut i32) (i32.const 0))
  (data (i32.const 512) "hits")
  (func (export "run") (param i32 i32) (result i32)
    (i32.store (i32.const 0) (global.get $g))
    (i32.store (i32.const 4) (i32.load (i32.const 256)))
    (i32.store (i32.const 8) (memory.size))
    (i32.store (i32.const 12) (i32.wrap_i64 (call $incr (i32.const 512) (i32.const 4) (i64.const 1))))
    (global.set $g (i32.add (global.get $g) (i32.const 1)))
    (i32.store (i32.const 256) (i32.const 0xdead))
    (drop (memory.grow (i32.const 1)))
    (i32.const 0)))
"#;

#[test]
fn state_written_by_one_instance_is_invisible_to_the_next() {
    let sb = Sandbox::new(STATEFUL, limits(), Arc::new(HostShared::default())).expect("compile");
    for n in 1..=5u32 {
        let seen = sb
            .run(
                |_| Vec::new(),
                |mem, _| {
                    Ok((
                        u32_at(mem, 0),
                        u32_at(mem, 4),
                        u32_at(mem, 8),
                        u32_at(mem, 12),
                    ))
                },
            )
            .expect("runs");
        // global, memory cell and memory size are the module's initial values every time;
        // only the host cache (the explicit shared state) counts across requests.
        assert_eq!(seen, (0, 0, 1, n), "request {n}");
    }
    assert_eq!(sb.shared().cache.incr(b"hits", 0), 5);
}

/// The first input byte selects the behaviour: 0 ok, 1 trap, 2 infinite loop, 3 grow memory
/// forever, 4 unbounded recursion, 5 out-of-bounds store.
const MISBEHAVING: &str = r#"
(module
  (memory (export "memory") 1)
  (global (export "input_base") i32 (i32.const 1024))
  (func $recurse (param i32) (result i32)
    (i32.add (call $recurse (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))
  (func (export "run") (param $in i32) (param i32) (result i32)
    (local $mode i32)
    (local.set $mode (i32.load8_u (local.get $in)))
    (if (i32.eq (local.get $mode) (i32.const 1)) (then unreachable))
    (if (i32.eq (local.get $mode) (i32.const 2)) (then (loop $l (br $l))))
    (if (i32.eq (local.get $mode) (i32.const 3))
      (then (loop $l (drop (memory.grow (i32.const 1))) (br $l))))
    (if (i32.eq (local.get $mode) (i32.const 4))
      (then (drop (call $recurse (i32.const 0)))))
    (if (i32.eq (local.get $mode) (i32.const 5))
      (then (i32.store (i32.const -4) (i32.const 1))))
    (i32.store (i32.const 0) (i32.const 7))
    (i32.const 0)))
"#;

fn run_mode(sb: &Sandbox, mode: u8) -> Result<u32, SandboxError> {
    sb.run(|_| vec![mode], |mem, out| Ok(u32_at(mem, out as usize)))
}

#[test]
fn misbehaving_policies_fail_only_their_own_request() {
    let sb = Sandbox::new(MISBEHAVING, limits(), Arc::new(HostShared::default())).expect("compile");
    assert_eq!(run_mode(&sb, 0).expect("ok"), 7);
    let cases: [(u8, &str); 5] = [
        (1, "trap"),
        (2, "fuel"),
        (3, "memory"),
        (4, "trap"),
        (5, "trap"),
    ];
    for (mode, kind) in cases {
        let err = run_mode(&sb, mode).expect_err("stopped");
        assert_eq!(err.kind(), kind, "mode {mode}: {err}");
        // The next request is served normally by a fresh instance.
        assert_eq!(
            run_mode(&sb, 0).expect("next request"),
            7,
            "after mode {mode}"
        );
    }
    // Many failures do not leak pool slots (4 slots, 40 failing runs).
    for i in 0..40u8 {
        let _ = run_mode(&sb, 1 + i % 5);
    }
    assert_eq!(run_mode(&sb, 0).expect("still serving"), 7);
}

#[test]
fn a_module_asking_for_more_memory_than_the_cap_is_refused() {
    let wat = r#"(module (memory (export "memory") 100) (global (export "input_base") i32 (i32.const 0))
        (func (export "run") (param i32 i32) (result i32) (i32.const 0)))"#;
    match Sandbox::new(wat, limits(), Arc::new(HostShared::default())) {
        Err(_) => {}
        Ok(sb) => assert!(run_mode(&sb, 0).is_err(), "instantiation must fail"),
    }
}

// ---- end to end: only the offending request fails ---------------------------------------

async fn per_request_sidecar(up: SocketAddr, extra: &str) -> meshsim_sidecar::Sidecar {
    let mut c = config(up, extra);
    c.runtime.isolation = Isolation::PerRequest;
    meshsim_sidecar::Sidecar::start(c)
        .await
        .expect("sidecar starts")
}

fn with_headers(pairs: &[(&str, String)]) -> Request<Full<Bytes>> {
    let mut b = Request::builder().uri("/").header("host", "fn.test");
    for (k, v) in pairs {
        b = b.header(*k, v.as_str());
    }
    b.body(Full::new(Bytes::new())).expect("request")
}

#[tokio::test]
async fn a_request_exceeding_the_memory_cap_fails_alone() {
    let up = upstream().await;
    let sc = per_request_sidecar(
        up.addr,
        "[limits]\nmax_header_bytes = 400000\n[sandbox]\nmax_memory_bytes = 131072\n[[policies.authz.rules]]\naction = \"allow\"\nheaders = { \"x-role\" = [\"admin\"] }\n",
    )
    .await;
    let ok = || with_headers(&[("x-role", "admin".into())]);
    assert_eq!(send(sc.inbound, ok()).await.expect("reply").status, 200);
    let huge = with_headers(&[("x-role", "a".repeat(300_000))]);
    let r = send(sc.inbound, huge).await.expect("reply");
    assert_eq!((r.status, r.denied_by()), (500, Some("sandbox")));
    assert_eq!(send(sc.inbound, ok()).await.expect("reply").status, 200);
    assert_eq!(sc.stats().sandbox_failures.get(), 1);
    assert_eq!(sc.stats().sandbox_runs.get(), 3);
    assert!(sc.shutdown().await);
}

#[tokio::test]
async fn a_request_exhausting_its_fuel_fails_alone() {
    let up = upstream().await;
    let sc = per_request_sidecar(
        up.addr,
        "[limits]\nmax_headers = 1024\nmax_header_bytes = 65536\n[sandbox]\nfuel = 20000\n[[policies.authz.rules]]\naction = \"allow\"\nheaders = { \"x-role\" = [\"admin\"] }\n",
    )
    .await;
    let ok = || with_headers(&[("x-role", "admin".into())]);
    assert_eq!(send(sc.inbound, ok()).await.expect("reply").status, 200);
    // 600 non-matching values: the header scan is quadratic in the guest, far beyond 20k fuel.
    let many: Vec<(&str, String)> = (0..600).map(|i| ("x-role", format!("u{i}"))).collect();
    let r = send(sc.inbound, with_headers(&many)).await.expect("reply");
    assert_eq!((r.status, r.denied_by()), (500, Some("sandbox")));
    let denied = send(sc.inbound, with_headers(&[("x-role", "user".into())]))
        .await
        .expect("reply");
    assert_eq!((denied.status, denied.denied_by()), (403, Some("authz")));
    assert_eq!(send(sc.inbound, ok()).await.expect("reply").status, 200);
    assert_eq!(sc.stats().sandbox_failures.get(), 1);
    assert!(sc.shutdown().await);
}

#[tokio::test]
async fn cli_style_override_and_sandbox_counters() {
    let up = upstream().await;
    let sc = per_request_sidecar(up.addr, "[policies.tracing]\nsampling = 1.0\n").await;
    for _ in 0..3 {
        let r = send(sc.inbound, get("/")).await.expect("reply");
        assert_eq!(r.status, 200);
        assert!(r.echoed()["traceparent"].as_str().is_some());
    }
    assert_eq!(sc.stats().sandbox_runs.get(), 3);
    assert_eq!(sc.stats().sandbox_failures.get(), 0);
    assert!(sc.shutdown().await);
}

// ---- equivalence with the shared layers --------------------------------------------------

const OWN: &str = "spiffe://cluster.local/ns/default/sa/fn";
const CLIENT: &str = "spiffe://cluster.local/ns/default/sa/client";
const OTHER: &str = "spiffe://cluster.local/ns/other/sa/x";

struct Both {
    shared: Vec<Box<dyn Check>>,
    sandbox: SandboxLayer,
    _dir: tempfile::TempDir,
}

fn both(extra: &str, seed: u64, issuer: &TestIssuer) -> Both {
    let dir = tempfile::tempdir().expect("tmp");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, TestIssuer::jwks(&[issuer])).expect("jwks");
    let text = format!(
        "version = 1\nfunction = \"eq\"\n[inbound]\nlisten = \"127.0.0.1:0\"\nupstream = [\"127.0.0.1:9\"]\n{}",
        extra.replace("@JWKS@", &jwks.display().to_string())
    );
    let c = Config::from_toml_str(&text).expect("config");
    let p = &c.policies;
    let mut shared: Vec<Box<dyn Check>> = Vec::new();
    let mtls = p.mtls.as_ref().map(|m| (m.mode, OWN.to_owned()));
    if let Some((mode, own)) = &mtls {
        shared.push(Box::new(Mtls::new(*mode, own.clone())));
    }
    let ports = p
        .ports
        .as_ref()
        .map(|x| (x.inbound_ports.clone(), x.protocols.clone()));
    if let Some((ports, protocols)) = &ports {
        shared.push(Box::new(Ports::new(ports.clone(), protocols.clone())));
    }
    if let Some(j) = &p.jwt {
        shared.push(Box::new(Jwt::new(j).expect("jwks")));
    }
    if let Some(a) = &p.authz {
        shared.push(Box::new(Authz::new(a)));
    }
    let sampling = p.tracing.as_ref().map(|t| t.sampling);
    if let Some(s) = sampling {
        shared.push(Box::new(Tracing::with_seed(s, seed)));
    }
    let sandbox = SandboxLayer::new(
        p,
        ChainParts {
            mtls,
            ports,
            jwt: p.jwt.as_ref().map(|j| Jwt::new(j).expect("jwks")),
            rate_limit: None,
            tracing: sampling.map(|s| Arc::new(Tracing::with_seed(s, seed))),
        },
        Limits::default(),
        Arc::new(Stats::default()),
    )
    .expect("sandbox");
    Both {
        shared,
        sandbox,
        _dir: dir,
    }
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Denied {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Bytes,
    },
    Allowed {
        headers: Vec<(String, Vec<u8>)>,
        trace: Option<TraceCtx>,
    },
}

fn sorted_headers(h: &http::HeaderMap) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = h
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    v.sort();
    v
}

async fn denied(resp: Resp) -> Outcome {
    let (parts, body) = resp.into_parts();
    Outcome::Denied {
        status: parts.status.as_u16(),
        headers: sorted_headers(&parts.headers),
        body: body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default(),
    }
}

fn allowed(req: &Req) -> Outcome {
    Outcome::Allowed {
        headers: sorted_headers(req.headers()),
        trace: req.extensions().get::<TraceCtx>().copied(),
    }
}

async fn shared_outcome(b: &Both, mut req: Req) -> Outcome {
    for c in &b.shared {
        if let Err(resp) = c.check(&mut req) {
            return denied(resp).await;
        }
    }
    allowed(&req)
}

async fn sandbox_outcome(b: &Both, mut req: Req) -> Outcome {
    let d = b.sandbox.decide(&req).expect("sandbox decides");
    if let Some(deny) = d.deny.clone() {
        return denied(b.sandbox.reply(deny)).await;
    }
    SandboxLayer::apply(&d, &mut req);
    allowed(&req)
}

#[derive(Clone)]
struct Case {
    peer: Option<&'static str>,
    port: u16,
    version: Version,
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, HeaderValue)>,
}

fn build(c: &Case) -> Req {
    let mut r = Request::builder()
        .method(c.method)
        .uri(c.path)
        .version(c.version)
        .body(Full::new(Bytes::new()))
        .expect("request");
    for (k, v) in &c.headers {
        r.headers_mut().append(*k, v.clone());
    }
    r.extensions_mut().insert(Arc::new(ConnInfo {
        remote: "127.0.0.1:5000".parse().expect("addr"),
        local_port: c.port,
        listener: ListenerKind::Inbound,
        peer: c.peer.map(Arc::from),
        tls: c.peer.is_some(),
        framing_conflict: Arc::new(AtomicBool::new(false)),
    }));
    r
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("header value")
}

fn cases(issuer: &TestIssuer) -> Vec<Case> {
    let good = issuer.sign(&TestIssuer::claims("https://issuer.test", "eq", "alice"));
    let mut expired = TestIssuer::claims("https://issuer.test", "eq", "bob");
    expired["exp"] = (expired["iat"].as_u64().unwrap_or(0) - 120).into();
    let expired = issuer.sign(&expired);
    let base = Case {
        peer: Some(CLIENT),
        port: 8080,
        version: Version::HTTP_11,
        method: "GET",
        path: "/api/items",
        headers: vec![("authorization", hv(&format!("Bearer {good}")))],
    };
    let mut out = Vec::new();
    let with = |f: &dyn Fn(&mut Case)| {
        let mut c = base.clone();
        f(&mut c);
        c
    };
    out.push(base.clone());
    out.push(with(&|c| c.peer = None));
    out.push(with(&|c| c.peer = Some(OTHER)));
    out.push(with(&|c| c.port = 9999));
    out.push(with(&|c| c.version = Version::HTTP_2));
    out.push(with(&|c| c.version = Version::HTTP_10));
    out.push(with(&|c| c.method = "POST"));
    out.push(with(&|c| c.method = "DELETE"));
    out.push(with(&|c| c.path = "/admin/x"));
    out.push(with(&|c| c.path = "/api"));
    out.push(with(&|c| c.path = "/api/"));
    out.push(with(&|c| c.headers.clear()));
    out.push(with(&|c| {
        c.headers = vec![("authorization", hv(&format!("Bearer {expired}")))]
    }));
    out.push(with(&|c| {
        c.headers = vec![("authorization", hv("Bearer %%%"))]
    }));
    out.push(with(&|c| {
        c.headers = vec![("authorization", hv("Basic YTpi"))]
    }));
    for (k, v) in [
        ("x-role", hv("admin")),
        ("x-role", hv("admin-2")),
        ("x-role", hv("user")),
        (
            "x-role",
            HeaderValue::from_bytes(b"adm\xffin").expect("obs-text"),
        ),
        ("x-jwt-claim-sub", hv("forged")),
    ] {
        out.push(with(&|c| c.headers.push((k, v.clone()))));
        out.push(with(&|c| {
            c.peer = None;
            c.headers.push((k, v.clone()));
        }));
    }
    // Multiple values: any one matching is enough.
    out.push(with(&|c| {
        c.peer = None;
        c.headers.push(("x-role", hv("user")));
        c.headers.push(("x-role", hv("admin")));
    }));
    for tp in [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-03",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-+1",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-+",
        "  00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01  ",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "garbage",
        "",
    ] {
        out.push(with(&|c| c.headers.push(("traceparent", hv(tp)))));
    }
    for b3 in [
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1",
        "64fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        "64fe8b2a57d3eff7-e457b5a2e4d86bd1-11",
        "64fe8b2a57d3eff-e457b5a2e4d86bd1-1",
        "0000000000000000-e457b5a2e4d86bd1-1",
        "0",
    ] {
        out.push(with(&|c| c.headers.push(("b3", hv(b3)))));
        // A valid traceparent wins over b3.
        out.push(with(&|c| {
            c.headers.push(("b3", hv(b3)));
            c.headers.push((
                "traceparent",
                hv("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ));
        }));
    }
    for multi in [
        vec![
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ],
        vec![
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "true"),
        ],
        vec![
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-flags", "1"),
        ],
        vec![
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "0"),
        ],
        vec![("x-b3-traceid", "463ac35c9f6413ad")],
        vec![
            ("x-b3-traceid", " 463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ],
        vec![
            ("b3", "garbage"),
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ],
    ] {
        out.push(with(&|c| {
            for (k, v) in &multi {
                c.headers.push((*k, hv(v)));
            }
        }));
    }
    out
}

/// Runs every case through both modes; returns (allowed, denied) counts.
async fn assert_same(extra: &str, sampling_seed: u64) -> (usize, usize) {
    let issuer = TestIssuer::generate(Algorithm::ES256, "es-eq").expect("key");
    let b = both(extra, sampling_seed, &issuer);
    let cases = cases(&issuer);
    let mut allowed_n = 0;
    let mut denied_n = 0;
    for (i, c) in cases.iter().enumerate() {
        let shared = shared_outcome(&b, build(c)).await;
        let sandboxed = sandbox_outcome(&b, build(c)).await;
        assert_eq!(
            shared, sandboxed,
            "case {i}: peer={:?} port={} {:?} {} {} {:?}",
            c.peer, c.port, c.version, c.method, c.path, c.headers
        );
        match shared {
            Outcome::Allowed { .. } => allowed_n += 1,
            Outcome::Denied { .. } => denied_n += 1,
        }
    }
    (allowed_n, denied_n)
}

const AUTHZ: &str = r#"
[[policies.authz.rules]]
action = "deny"
paths = ["/admin/*"]
[[policies.authz.rules]]
action = "allow"
sources = ["spiffe://cluster.local/ns/default/*"]
methods = ["GET", "POST"]
paths = ["/api/*", "/api"]
[[policies.authz.rules]]
action = "allow"
sources = ["unauthenticated"]
headers = { "X-Role" = ["admin", "root*"] }
[[policies.authz.rules]]
action = "deny"
methods = ["DELETE"]
"#;

#[tokio::test]
async fn per_request_chain_decides_like_the_shared_layers() {
    // Permissive mTLS, ports, JWT, authz, tracing sampled at 50 %: same generator seed on
    // both sides, so even the generated ids must be identical.
    let (allowed, denied) = assert_same(
        &format!(
            "[policies.mtls]\nmode = \"permissive\"\n[policies.ports]\ninbound_ports = [8080]\nprotocols = [\"http1\"]\nupstream_ports = [9]\n[policies.jwt]\nissuer = \"https://issuer.test\"\naudiences = [\"eq\"]\njwks_file = \"@JWKS@\"\nforward_claims = [\"sub\", \"iss\"]\n{AUTHZ}[policies.tracing]\nsampling = 0.5\n[identity]\ntrust_domain = \"cluster.local\"\nnamespace = \"default\"\nservice_account = \"fn\"\ncerts = {{ kind = \"generate\" }}\n"
        ),
        42,
    )
    .await;
    assert!(
        allowed > 10 && denied > 10,
        "{allowed} allowed, {denied} denied"
    );
}

#[tokio::test]
async fn per_request_chain_decides_like_the_shared_layers_strict_h2() {
    // Strict mTLS, HTTP/2 and HTTP/1 on two ports, authz without JWT, tracing always sampled.
    let (allowed, denied) = assert_same(
        &format!(
            "[policies.mtls]\nmode = \"strict\"\n[policies.ports]\ninbound_ports = [8080, 8443]\nprotocols = [\"http2\", \"http1\"]\nupstream_ports = [9]\n{AUTHZ}[policies.tracing]\nsampling = 1.0\n[identity]\ntrust_domain = \"cluster.local\"\nnamespace = \"default\"\nservice_account = \"fn\"\ncerts = {{ kind = \"generate\" }}\n"
        ),
        7,
    )
    .await;
    assert!(
        allowed > 5 && denied > 10,
        "{allowed} allowed, {denied} denied"
    );
    // Tracing alone, never sampled unless the caller says so.
    assert_eq!(
        assert_same("[policies.tracing]\nsampling = 0.0\n", 99)
            .await
            .1,
        0
    );
    // No policy at all: everything allowed, nothing edited.
    assert_eq!(assert_same("", 1).await.1, 0);
}

// ---- idle release ------------------------------------------------------------------------

#[test]
fn a_released_sandbox_compiles_again_and_keeps_its_host_state() {
    let sb = Sandbox::new(
        STATEFUL,
        Limits {
            idle_release: Some(std::time::Duration::from_millis(500)),
            ..limits()
        },
        Arc::new(HostShared::default()),
    )
    .expect("compile");
    let hits = |sb: &Sandbox| sb.run(|_| Vec::new(), |mem, _| Ok(u32_at(mem, 12)));
    assert_eq!(hits(&sb).expect("runs"), 1);
    // Just used: not idle yet (500 ms leaves room for a busy machine).
    assert!(!sb.release_if_idle());
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert!(sb.release_if_idle());
    assert!(!sb.is_compiled());
    assert!(!sb.release(), "nothing left to release");
    // The next request compiles the module again; the shared cache survived the release.
    assert_eq!(hits(&sb).expect("runs after release"), 2);
    assert!(sb.is_compiled());
    assert_eq!((sb.compiles(), sb.releases()), (2, 1));
}

#[test]
fn without_idle_release_the_module_stays_compiled() {
    let sb = Sandbox::new(STATEFUL, limits(), Arc::new(HostShared::default())).expect("compile");
    sb.run(|_| Vec::new(), |_, _| Ok(())).expect("runs");
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(!sb.release_if_idle());
    assert!(sb.is_compiled());
    assert_eq!(sb.compiles(), 1);
}

#[tokio::test]
async fn an_idle_sidecar_releases_its_sandbox_and_recompiles_on_the_next_request() {
    let up = upstream().await;
    let sc = per_request_sidecar(
        up.addr,
        "[sandbox]\nidle_release_ms = 40\n[policies.tracing]\nsampling = 1.0\n",
    )
    .await;
    // A slow start can add a release (and a recompile by the first request) before the
    // first request: count from just before it, and leave the reaper several periods after.
    let released_before = sc.stats().sandbox_releases.get();
    assert_eq!(send(sc.inbound, get("/")).await.expect("reply").status, 200);
    let sent = std::time::Instant::now();
    let deadline = sent + std::time::Duration::from_secs(5);
    while (sc.stats().sandbox_releases.get() == released_before
        || sent.elapsed() < std::time::Duration::from_millis(200))
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        sc.stats().sandbox_releases.get() > released_before,
        "released when idle"
    );
    let before = sc.stats().sandbox_recompiles.get();
    let r = send(sc.inbound, get("/")).await.expect("reply");
    assert_eq!(r.status, 200);
    assert!(r.echoed()["traceparent"].as_str().is_some());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while sc.stats().sandbox_recompiles.get() == before && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(
        sc.stats().sandbox_recompiles.get() > before,
        "the request after the release compiled the module again"
    );
    assert_eq!(sc.stats().sandbox_failures.get(), 0);
    assert!(sc.shutdown().await);
}
