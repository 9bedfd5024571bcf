// The policy suite, included by `tests/policies.rs` (shared isolation) and
// `tests/policies_per_request.rs` (per-request sandbox): the same cases, the same expected
// decisions, in both modes. The including file defines `ISOLATION` and declares `mod common`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use jsonwebtoken::Algorithm;
use meshsim_sidecar::pki::{Pki, TlsMaterials};
use meshsim_sidecar::policy::jwt::TestIssuer;

/// A sidecar in this suite's isolation mode (shadows `common::sidecar`).
async fn sidecar(upstream: std::net::SocketAddr, extra: &str) -> meshsim_sidecar::Sidecar {
    let mut c = config(upstream, extra);
    c.runtime.isolation = ISOLATION.parse().expect("isolation mode");
    meshsim_sidecar::Sidecar::start(c)
        .await
        .expect("sidecar starts")
}

#[tokio::test]
async fn pass_through_serves_http1_and_http2() {
    let up = upstream().await;
    let sc = sidecar(up.addr, "").await;
    let r = send(sc.inbound, get("/hello?x=1")).await.expect("h1");
    assert_eq!(r.status, 200);
    assert_eq!(r.echoed()["host"], "fn.test");
    let r = send_h2(sc.inbound, get("http://fn.test/hello"))
        .await
        .expect("h2");
    assert_eq!(r.status, 200);
    assert_eq!(r.echoed()["host"], "fn.test");
    assert_eq!(up.state.hits.load(Ordering::Relaxed), 2);
    assert!(sc.shutdown().await);
}

#[tokio::test]
async fn ports_policy_limits_ports_and_protocols() {
    let up = upstream().await;
    let port = up.addr.port();
    let sc = sidecar(
        up.addr,
        &format!("[policies.ports]\nprotocols = [\"http1\"]\nupstream_ports = [{port}]\n"),
    )
    .await;
    assert_eq!(send(sc.inbound, get("/")).await.expect("h1").status, 200);
    assert!(
        send_h2(sc.inbound, get("http://fn.test/")).await.is_err(),
        "h2 must not be served"
    );
    // A listener port that is not in the allowed list is refused.
    let sc2 = sidecar(
        up.addr,
        &format!(
            "[policies.ports]\ninbound_ports = [1]\nallow_bound_port = false\nprotocols = [\"http1\", \"http2\"]\nupstream_ports = [{port}]\n"
        ),
    )
    .await;
    let r = send(sc2.inbound, get("/")).await.expect("reply");
    assert_eq!((r.status, r.denied_by()), (403, Some("ports")));
    assert_eq!(up.state.hits.load(Ordering::Relaxed), 1);
    // An upstream port outside upstream_ports is a config error naming the field.
    let text = format!(
        "version = 1\nfunction = \"f\"\n[inbound]\nlisten = \"127.0.0.1:0\"\nupstream = [\"{}\"]\n[policies.ports]\nprotocols = [\"http1\"]\nupstream_ports = [{}]\n",
        up.addr,
        port.wrapping_add(1)
    );
    let err = meshsim_sidecar::config::Config::from_toml_str(&text).expect_err("refused");
    assert!(err.to_string().contains("policies.ports.upstream_ports"));
}

struct JwtFixture {
    rs: TestIssuer,
    es: TestIssuer,
    _dir: tempfile::TempDir,
    extra: String,
}

fn jwt_fixture() -> JwtFixture {
    let rs = TestIssuer::generate(Algorithm::RS256, "rs-1").expect("rsa");
    let es = TestIssuer::generate(Algorithm::ES256, "es-1").expect("ec");
    let dir = tempfile::tempdir().expect("tmp");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, TestIssuer::jwks(&[&rs, &es])).expect("write jwks");
    let extra = format!(
        "[policies.jwt]\nissuer = \"https://issuer.test\"\naudiences = [\"fn-test\"]\njwks_file = \"{}\"\nforward_claims = [\"sub\"]\n",
        jwks.display()
    );
    JwtFixture {
        rs,
        es,
        _dir: dir,
        extra,
    }
}

fn bearer(path: &str, token: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(path)
        .header("host", "fn.test")
        .header("authorization", format!("Bearer {token}"))
        .header("x-jwt-claim-sub", "forged")
        .body(Full::new(Bytes::new()))
        .expect("request")
}

fn b64(v: &serde_json::Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn jwt_valid_tokens_pass_and_claims_are_forwarded() {
    let f = jwt_fixture();
    let up = upstream().await;
    let sc = sidecar(up.addr, &f.extra).await;
    for issuer in [&f.rs, &f.es] {
        let token = issuer.sign(&TestIssuer::claims(
            "https://issuer.test",
            "fn-test",
            "alice",
        ));
        let r = send(sc.inbound, bearer("/", &token)).await.expect("reply");
        assert_eq!(r.status, 200, "{:?}", issuer.alg);
        let echoed = r.echoed();
        assert_eq!(
            echoed["x-jwt-claim-sub"], "alice",
            "claim forwarded, forged one replaced"
        );
        assert!(echoed.get("authorization").is_none(), "token not forwarded");
    }
}

#[tokio::test]
async fn jwt_matrix_denies_every_bad_token() {
    let f = jwt_fixture();
    let up = upstream().await;
    let sc = sidecar(up.addr, &f.extra).await;
    let good = TestIssuer::claims("https://issuer.test", "fn-test", "alice");
    let with = |k: &str, v: serde_json::Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let now = good["iat"].as_u64().expect("iat");
    let other_key = TestIssuer::generate(Algorithm::RS256, "rs-1").expect("rsa");
    // HS256 signed with the RSA public key's JWK text as the secret (algorithm confusion).
    let confusion = {
        let secret = f.rs.jwk.to_string();
        let mut h = jsonwebtoken::Header::new(Algorithm::HS256);
        h.kid = Some("rs-1".into());
        jsonwebtoken::encode(
            &h,
            &good,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("hs256")
    };
    let alg_none = format!(
        "{}.{}.",
        b64(&serde_json::json!({"alg": "none", "typ": "JWT", "kid": "rs-1"})),
        b64(&good)
    );
    let valid = f.rs.sign(&good);
    let mut sig_tampered = valid.clone();
    let last = sig_tampered.pop().expect("char");
    sig_tampered.push(if last == 'A' { 'B' } else { 'A' });
    let mut payload_tampered: Vec<&str> = valid.split('.').collect();
    let evil = b64(&with("sub", "mallory".into()));
    payload_tampered[1] = &evil;
    let cases: Vec<(&str, Option<String>)> = vec![
        ("alg none", Some(alg_none)),
        ("algorithm confusion", Some(confusion)),
        ("expired", Some(f.rs.sign(&with("exp", (now - 120).into())))),
        (
            "not yet valid",
            Some(f.rs.sign(&with("nbf", (now + 600).into()))),
        ),
        (
            "wrong issuer",
            Some(f.rs.sign(&with("iss", "https://evil.test".into()))),
        ),
        (
            "wrong audience",
            Some(f.es.sign(&with("aud", "other-fn".into()))),
        ),
        (
            "bad signature (other key, same kid)",
            Some(other_key.sign(&good)),
        ),
        ("bad signature (tampered)", Some(sig_tampered)),
        ("tampered payload", Some(payload_tampered.join("."))),
        ("malformed", Some("not.a.jwt".into())),
        ("malformed (garbage)", Some("%%%".into())),
        (
            "missing exp",
            Some(f.rs.sign(&{
                let mut c = good.clone();
                c.as_object_mut().expect("object").remove("exp");
                c
            })),
        ),
        ("missing", None),
    ];
    for (name, token) in cases {
        let req = match &token {
            Some(t) => bearer("/", t),
            None => get("/"),
        };
        let r = send(sc.inbound, req).await.expect("reply");
        assert_eq!(
            (r.status, r.denied_by()),
            (401, Some("jwt")),
            "case: {name}"
        );
    }
    let basic = Request::builder()
        .uri("/")
        .header("authorization", "Basic YTpi")
        .body(Full::new(Bytes::new()))
        .expect("req");
    assert_eq!(send(sc.inbound, basic).await.expect("reply").status, 401);
    assert_eq!(
        up.state.hits.load(Ordering::Relaxed),
        0,
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn authz_rules_allow_and_deny() {
    let up = upstream().await;
    let sc = sidecar(
        up.addr,
        r#"
[[policies.authz.rules]]
action = "deny"
paths = ["/public/secret"]
[[policies.authz.rules]]
action = "allow"
methods = ["GET"]
paths = ["/public/*"]
[[policies.authz.rules]]
action = "allow"
headers = { "x-role" = ["admin"] }
"#,
    )
    .await;
    let with_role = |path: &str, method: &str, role: Option<&str>| {
        let mut b = Request::builder().uri(path).method(method);
        if let Some(r) = role {
            b = b.header("x-role", r);
        }
        b.body(Full::new(Bytes::new())).expect("req")
    };
    let cases = [
        ("/public/a", "GET", None, 200),
        ("/public/secret", "GET", None, 403),
        ("/public/secret", "GET", Some("admin"), 403),
        ("/public/a", "POST", None, 403),
        ("/private", "GET", None, 403),
        ("/private", "GET", Some("user"), 403),
        ("/private", "DELETE", Some("admin"), 200),
    ];
    for (path, method, role, status) in cases {
        let r = send(sc.inbound, with_role(path, method, role))
            .await
            .expect("reply");
        assert_eq!(r.status, status, "{method} {path} role={role:?}");
        if status == 403 {
            assert_eq!(r.denied_by(), Some("authz"));
        }
    }
    assert_eq!(up.state.hits.load(Ordering::Relaxed), 2);
}

fn nonce() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

fn tenant(t: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri("/")
        .header("x-tenant", t)
        .body(Full::new(Bytes::new()))
        .expect("req")
}

#[tokio::test]
async fn global_rate_limit_counts_in_redis_per_key() {
    let up = upstream().await;
    let sc = sidecar(
        up.addr,
        &format!(
            "[policies.rate_limit]\nredis_url = \"{}\"\nrequests_per_window = 3\nwindow_s = 60\nkey = {{ kind = \"header\", name = \"x-tenant\" }}\nfailure_mode = \"closed\"\nredis_timeout_ms = 1000\n",
            redis_url()
        ),
    )
    .await;
    let a = format!("a-{}", nonce());
    let b = format!("b-{}", nonce());
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(send(sc.inbound, tenant(&a)).await.expect("reply").status);
    }
    // A fixed window may roll over between requests; within one window at most 3 pass.
    let passed = statuses.iter().filter(|s| **s == 200).count();
    assert!(statuses.contains(&429), "limit enforced: {statuses:?}");
    assert!((3..=4).contains(&passed), "{statuses:?}");
    let r = send(sc.inbound, tenant(&b)).await.expect("reply");
    assert_eq!(r.status, 200, "other key has its own counter");
    assert_eq!(sc.stats().redis_errors.get(), 0);
}

#[tokio::test]
async fn local_token_bucket_refuses_bursts_before_redis() {
    let up = upstream().await;
    let dead = dead_port().await;
    // Redis is unreachable and fail-closed: only the local bucket can answer 429 here.
    let sc = sidecar(
        up.addr,
        &format!(
            "[policies.rate_limit]\nredis_url = \"redis://{dead}/\"\nrequests_per_window = 100\nwindow_s = 1\nkey = {{ kind = \"global\" }}\nfailure_mode = \"open\"\nlocal = {{ capacity = 2, refill_per_s = 1 }}\n"
        ),
    )
    .await;
    let s1 = send(sc.inbound, get("/")).await.expect("reply");
    let s2 = send(sc.inbound, get("/")).await.expect("reply");
    let s3 = send(sc.inbound, get("/")).await.expect("reply");
    assert_eq!((s1.status, s2.status), (200, 200));
    assert_eq!((s3.status, s3.denied_by()), (429, Some("local_rate_limit")));
}

#[tokio::test]
async fn redis_down_fails_open_or_closed_as_configured() {
    let up = upstream().await;
    let dead = dead_port().await;
    let rl = |mode: &str| {
        format!(
            "[policies.rate_limit]\nredis_url = \"redis://{dead}/\"\nrequests_per_window = 1\nwindow_s = 1\nkey = {{ kind = \"source\" }}\nfailure_mode = \"{mode}\"\nredis_timeout_ms = 200\n"
        )
    };
    let open = sidecar(up.addr, &rl("open")).await;
    for _ in 0..3 {
        assert_eq!(
            send(open.inbound, get("/")).await.expect("reply").status,
            200
        );
    }
    assert!(open.stats().redis_errors.get() >= 3, "failures are counted");
    let closed = sidecar(up.addr, &rl("closed")).await;
    let r = send(closed.inbound, get("/")).await.expect("reply");
    assert_eq!((r.status, r.denied_by()), (503, Some("rate_limit")));
    assert!(closed.stats().redis_errors.get() >= 1);
    assert_eq!(up.state.hits.load(Ordering::Relaxed), 3);
}

/// A private `redis-server` on `port` (the Debian package `.ci/run` installs), up once it
/// accepts connections; killed on drop.
struct PrivateRedis(std::process::Child);

impl PrivateRedis {
    async fn start(port: u16) -> PrivateRedis {
        let redis = PrivateRedis(
            std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server on PATH (.ci/run installs Debian's redis-server)"),
        );
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return redis;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {port} did not accept connections within 5 s");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_redis_restart_is_not_an_outage() {
    // The pooled connection to the first server is dead after the restart; the check must
    // notice it, reconnect to the new server and count there, not fail closed or back off.
    let up = upstream().await;
    let port = dead_port().await.port();
    let redis = PrivateRedis::start(port).await;
    let sc = sidecar(
        up.addr,
        &format!(
            "[policies.rate_limit]\nredis_url = \"redis://127.0.0.1:{port}/\"\nrequests_per_window = 100\nwindow_s = 60\nkey = {{ kind = \"global\" }}\nfailure_mode = \"closed\"\nredis_timeout_ms = 1000\n"
        ),
    )
    .await;
    for _ in 0..2 {
        assert_eq!(send(sc.inbound, get("/")).await.expect("reply").status, 200);
    }
    drop(redis);
    let _redis = PrivateRedis::start(port).await;
    for _ in 0..3 {
        let r = send(sc.inbound, get("/")).await.expect("reply");
        assert_eq!((r.status, r.denied_by()), (200, None), "after the restart");
    }
    assert_eq!(sc.stats().redis_errors.get(), 0, "a restart is not an error");
}

#[tokio::test]
async fn tracing_headers_are_started_or_propagated() {
    let up = upstream().await;
    let sc = sidecar(up.addr, "[policies.tracing]\nsampling = 1.0\n").await;
    let r = send(sc.inbound, get("/")).await.expect("reply");
    let e = r.echoed();
    let tp = e["traceparent"].as_str().expect("traceparent started");
    assert!(
        tp.starts_with("00-") && tp.ends_with("-01") && tp.len() == 55,
        "{tp}"
    );
    assert_eq!(e["x-b3-traceid"].as_str(), tp.get(3..35));
    assert_eq!(e["x-b3-sampled"], "1");

    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    let req = Request::builder()
        .uri("/")
        .header("traceparent", incoming)
        .body(Full::new(Bytes::new()))
        .expect("req");
    let e = send(sc.inbound, req).await.expect("reply").echoed();
    let tp = e["traceparent"].as_str().expect("traceparent");
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    assert!(tp.ends_with("-00"), "unsampled decision propagated: {tp}");
    assert_ne!(tp, incoming, "new span id");
    assert_eq!(e["x-b3-parentspanid"], "00f067aa0ba902b7");

    let req = Request::builder()
        .uri("/")
        .header("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")
        .body(Full::new(Bytes::new()))
        .expect("req");
    let e = send(sc.inbound, req).await.expect("reply").echoed();
    assert!(
        e["traceparent"]
            .as_str()
            .expect("tp")
            .starts_with("00-80f198ee56343ba864fe8b2a57d3eff7-")
    );
    assert!(
        e.get("b3").is_none(),
        "single b3 header replaced by the multi-header form"
    );
}

#[tokio::test]
async fn access_log_writes_one_json_line_per_request() {
    let up = upstream().await;
    let dir = tempfile::tempdir().expect("tmp");
    let log = dir.path().join("access.log");
    let sc = sidecar(
        up.addr,
        &format!(
            "[policies.tracing]\nsampling = 1.0\n[policies.access_log]\npath = \"{}\"\n",
            log.display()
        ),
    )
    .await;
    let post = Request::builder()
        .method("POST")
        .uri("/echo?q=1")
        .body(Full::new(Bytes::from_static(b"12345")))
        .expect("req");
    assert_eq!(send(sc.inbound, post).await.expect("reply").status, 200);
    assert_eq!(
        send(sc.inbound, get("/always503"))
            .await
            .expect("reply")
            .status,
        503
    );
    // Shutdown writes out the pending batch before returning.
    assert_eq!(sc.stats().access_log_dropped.get(), 0);
    assert!(sc.shutdown().await);
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .expect("log file")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let a: serde_json::Value = serde_json::from_str(&lines[0]).expect("json");
    assert_eq!(a["method"], "POST");
    assert_eq!(a["path"], "/echo");
    assert_eq!(a["status"], 200);
    assert_eq!(a["bytes_in"], 5);
    assert!(a["bytes_out"].as_u64().expect("bytes_out") > 0);
    assert!(
        a["duration_us"].as_u64().is_some() && a["time"].as_str().expect("time").ends_with('Z')
    );
    assert_eq!(a["trace_id"].as_str().map(str::len), Some(32));
    assert_eq!(a["completed"], true);
    let b: serde_json::Value = serde_json::from_str(&lines[1]).expect("json");
    assert_eq!(b["status"], 503);
}

#[tokio::test]
async fn retries_recover_transient_5xx_and_stay_bounded() {
    let up = upstream().await;
    let sc = sidecar(
        up.addr,
        "[policies.retry]\nmax_retries = 2\nbackoff_ms = 1\n",
    )
    .await;
    up.state.fail_next.store(2, Ordering::Relaxed);
    let r = send(sc.inbound, get("/fail")).await.expect("reply");
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-meshsim-retries"], "2");
    assert_eq!(up.state.hits.load(Ordering::Relaxed), 3);
    up.state.fail_next.store(10, Ordering::Relaxed);
    let r = send(sc.inbound, get("/fail")).await.expect("reply");
    assert_eq!(r.status, 503, "gives up after max_retries");
    assert_eq!(up.state.hits.load(Ordering::Relaxed), 6, "1 + 2 attempts");
    assert_eq!(sc.stats().retries.get(), 4);
}

#[tokio::test]
async fn circuit_opens_after_consecutive_5xx_and_recovers() {
    let up = upstream().await;
    let sc = sidecar(
        up.addr,
        "[policies.circuit_breaker]\nconsecutive_5xx = 3\nbase_ejection_ms = 300\nmax_ejection_ms = 5000\n",
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            send(sc.inbound, get("/always503"))
                .await
                .expect("reply")
                .status,
            503
        );
    }
    assert_eq!(up.state.hits.load(Ordering::Relaxed), 3);
    let r = send(sc.inbound, get("/ok")).await.expect("reply");
    assert_eq!(
        (r.status, r.denied_by()),
        (503, Some("circuit_breaker")),
        "open: fail fast"
    );
    assert_eq!(up.state.hits.load(Ordering::Relaxed), 3, "upstream spared");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        send(sc.inbound, get("/ok")).await.expect("reply").status,
        200,
        "recovered"
    );
    // Second ejection lasts twice as long (600 ms): still open after 350 ms.
    for _ in 0..3 {
        send(sc.inbound, get("/always503")).await.expect("reply");
    }
    tokio::time::sleep(Duration::from_millis(350)).await;
    let r = send(sc.inbound, get("/ok")).await.expect("reply");
    assert_eq!(
        r.denied_by(),
        Some("circuit_breaker"),
        "growing ejection interval"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        send(sc.inbound, get("/ok")).await.expect("reply").status,
        200
    );
    assert_eq!(sc.stats().ejections.get(), 2);
}

#[tokio::test]
async fn circuit_limits_requests_in_flight() {
    let up = upstream().await;
    let sc = sidecar(
        up.addr,
        "[policies.circuit_breaker]\nmax_requests = 1\nmax_pending = 0\nmax_connections = 4\n",
    )
    .await;
    let addr = sc.inbound;
    let slow = tokio::spawn(async move { send(addr, get("/slow")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = send(sc.inbound, get("/ok")).await.expect("reply");
    assert_eq!((r.status, r.denied_by()), (503, Some("circuit_breaker")));
    assert_eq!(slow.await.expect("join").expect("reply").status, 200);
    assert_eq!(
        send(sc.inbound, get("/ok")).await.expect("reply").status,
        200
    );
    assert!(sc.stats().circuit_overflow.get() >= 1);
}

struct MtlsFixture {
    ca: Pki,
    _dir: tempfile::TempDir,
    sidecar: meshsim_sidecar::Sidecar,
    server_id: String,
}

const CLIENT: &str = "spiffe://cluster.local/ns/default/sa/client";

async fn mtls_fixture(up: std::net::SocketAddr, extra: &str) -> MtlsFixture {
    let dir = tempfile::tempdir().expect("tmp");
    let sidecar = sidecar(
        up,
        &format!(
            "[identity]\ntrust_domain = \"cluster.local\"\nnamespace = \"default\"\nservice_account = \"fn\"\ncerts = {{ kind = \"generate\", export_dir = \"{}\" }}\n[policies.mtls]\nmode = \"strict\"\nallowed_peers = [\"spiffe://cluster.local/ns/default/*\"]\n{extra}",
            dir.path().display()
        ),
    )
    .await;
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).expect("exported CA");
    let ca = Pki::from_pem("cluster.local", &read("ca.pem"), &read("ca-key.pem")).expect("ca");
    MtlsFixture {
        ca,
        _dir: dir,
        sidecar,
        server_id: "spiffe://cluster.local/ns/default/sa/fn".into(),
    }
}

fn client_cfg(ca: &Pki, id: &str, server: &str) -> Arc<rustls::ClientConfig> {
    ca.materials(id)
        .expect("issue")
        .client_config(Some(server))
        .expect("client config")
}

#[tokio::test]
async fn mtls_accepts_verified_peers_and_forwards_identity() {
    let up = upstream().await;
    let f = mtls_fixture(
        up.addr,
        "[[policies.authz.rules]]\naction = \"allow\"\nsources = [\"spiffe://cluster.local/ns/default/sa/client\"]\n",
    )
    .await;
    let r = send_tls(
        f.sidecar.inbound,
        client_cfg(&f.ca, CLIENT, &f.server_id),
        get("/"),
    )
    .await
    .expect("mTLS request");
    assert_eq!(r.status, 200);
    let xfcc = r.echoed()["x-forwarded-client-cert"]
        .as_str()
        .expect("xfcc")
        .to_owned();
    assert!(xfcc.ends_with(&format!("URI={CLIENT}")), "{xfcc}");
    // Authenticated, but authz allows only `client`.
    let other = "spiffe://cluster.local/ns/default/sa/other";
    let r = send_tls(
        f.sidecar.inbound,
        client_cfg(&f.ca, other, &f.server_id),
        get("/"),
    )
    .await
    .expect("reply");
    assert_eq!((r.status, r.denied_by()), (403, Some("authz")));
    // A forged identity header from the client never reaches the upstream as such.
    let forged = Request::builder()
        .uri("/")
        .header(
            "x-forwarded-client-cert",
            "URI=spiffe://cluster.local/ns/kube-system/sa/admin",
        )
        .body(Full::new(Bytes::new()))
        .expect("req");
    let r = send_tls(
        f.sidecar.inbound,
        client_cfg(&f.ca, CLIENT, &f.server_id),
        forged,
    )
    .await
    .expect("reply");
    assert!(
        r.echoed()["x-forwarded-client-cert"]
            .as_str()
            .expect("xfcc")
            .ends_with(CLIENT)
    );
}

#[derive(Debug)]
struct AcceptAnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[tokio::test]
async fn mtls_matrix_refuses_every_bad_client() {
    let up = upstream().await;
    let f = mtls_fixture(up.addr, "").await;
    let addr = f.sidecar.inbound;
    let provider = meshsim_sidecar::pki::provider();

    // 1. No client certificate.
    let no_cert = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider.clone())))
            .with_no_client_auth(),
    );
    assert!(
        send_tls(addr, no_cert, get("/")).await.is_err(),
        "no client cert"
    );

    // 2. A certificate with the right SPIFFE id from another CA.
    let rogue = Pki::generate("cluster.local").expect("rogue ca");
    let rogue_m = rogue.materials(CLIENT).expect("issue");
    let pem = |m: &TlsMaterials| m.spiffe_id.to_string();
    assert_eq!(pem(&rogue_m), CLIENT);
    let cfg = {
        // Trust the real server (so only the client side can fail), present the rogue cert.
        let real = f.ca.materials(CLIENT).expect("issue");
        let chain = rogue_m.chain.clone();
        let key = rogue_m.key.clone_key();
        let _ = real;
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider.clone())))
                .with_client_auth_cert(chain, key)
                .expect("client auth"),
        )
    };
    assert!(
        send_tls(addr, cfg, get("/")).await.is_err(),
        "cert from another CA"
    );

    // 3. Our CA, but a SPIFFE id outside allowed_peers (other namespace) or trust domain.
    for id in [
        "spiffe://cluster.local/ns/kube-system/sa/client",
        "spiffe://evil.local/ns/default/sa/client",
    ] {
        let cfg = client_cfg(&f.ca, id, &f.server_id);
        assert!(
            send_tls(addr, cfg, get("/")).await.is_err(),
            "wrong SPIFFE id {id}"
        );
    }

    // 4. Plaintext HTTP on the TLS port.
    let out = raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(
        !out.starts_with(b"HTTP/"),
        "plaintext must not be served: {out:?}"
    );

    assert_eq!(
        up.state.hits.load(Ordering::Relaxed),
        0,
        "nothing reached the upstream"
    );
    assert!(f.sidecar.stats().tls_handshake_failures.get() >= 4);

    // And the client side checks the server's identity too.
    let cfg = client_cfg(
        &f.ca,
        CLIENT,
        "spiffe://cluster.local/ns/default/sa/someone-else",
    );
    assert!(
        send_tls(addr, cfg, get("/")).await.is_err(),
        "server identity checked"
    );
}

#[tokio::test]
async fn outbound_originates_mtls_to_a_peer_sidecar() {
    let up = upstream().await;
    let callee = mtls_fixture(up.addr, "").await;
    // The caller's certificate comes from files issued by the same CA.
    let dir = tempfile::tempdir().expect("tmp");
    let issued = callee.ca.issue(CLIENT).expect("issue");
    std::fs::write(dir.path().join("ca.pem"), callee.ca.ca_pem()).expect("w");
    std::fs::write(dir.path().join("cert.pem"), &issued.cert_pem).expect("w");
    std::fs::write(dir.path().join("key.pem"), &issued.key_pem).expect("w");
    let d = dir.path().display();
    let caller = sidecar(
        up.addr,
        &format!(
            "[outbound]\nlisten = \"127.0.0.1:0\"\nupstream = [\"{}\"]\ntls = true\npeer_identity = \"{}\"\n[identity]\ntrust_domain = \"cluster.local\"\nnamespace = \"default\"\nservice_account = \"client\"\ncerts = {{ kind = \"files\", ca = \"{d}/ca.pem\", cert = \"{d}/cert.pem\", key = \"{d}/key.pem\" }}\n",
            callee.sidecar.inbound, callee.server_id
        ),
    )
    .await;
    let out = caller.outbound.expect("outbound listener");
    let r = send(out, get("/via-mesh")).await.expect("reply");
    assert_eq!(r.status, 200);
    assert!(
        r.echoed()["x-forwarded-client-cert"]
            .as_str()
            .expect("xfcc")
            .ends_with(CLIENT)
    );
}
