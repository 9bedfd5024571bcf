//! HTTP abuse and fault injection against a real sidecar on loopback.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;

const SHORT: Duration = Duration::from_secs(2);

#[tokio::test]
async fn oversized_or_too_many_headers_get_431() {
    let up = upstream().await;
    let sc = sidecar(
        up.addr,
        "[limits]\nmax_header_bytes = 8192\nmax_headers = 32\n",
    )
    .await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(
        status_of(&raw(sc.inbound, big.as_bytes(), SHORT).await),
        Some(431)
    );
    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..40 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(
        status_of(&raw(sc.inbound, many.as_bytes(), SHORT).await),
        Some(431)
    );
    // Just under the byte limit but above it after hyper's own slack: the front layer's
    // exact check answers 431 too.
    let medium = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(8_500)
    );
    assert_eq!(
        status_of(&raw(sc.inbound, medium.as_bytes(), SHORT).await),
        Some(431)
    );
    // HTTP/2 has its own header-list limit.
    let req = Request::builder()
        .uri("http://a/")
        .header("x-big", "a".repeat(9_000))
        .body(Full::new(Bytes::new()))
        .expect("req");
    let r = send_h2(sc.inbound, req).await;
    assert!(r.as_ref().map(|r| r.status == 431).unwrap_or(true), "{r:?}");
    assert_eq!(up.state.hits.load(Ordering::Relaxed), 0);
    assert_eq!(
        send(sc.inbound, get("/"))
            .await
            .expect("still serving")
            .status,
        200
    );
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let up = upstream().await;
    let sc = sidecar(up.addr, "[limits]\nheader_read_timeout_ms = 300\n").await;
    let start = Instant::now();
    let out = raw(
        sc.inbound,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ",
        Duration::from_secs(5),
    )
    .await;
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(
        took < Duration::from_secs(3),
        "connection closed by the server: {took:?}"
    );
    assert!(!out.starts_with(b"HTTP/1.1 200"));
    assert_eq!(up.state.hits.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn conflicting_content_length_and_transfer_encoding_get_400() {
    let up = upstream().await;
    let sc = sidecar(up.addr, "").await;
    for req in [
        &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        &b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"[..],
        // Smuggling attempt behind a clean keep-alive request.
        &b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
    ] {
        let out = raw(sc.inbound, req, SHORT).await;
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("HTTP/1.1 400"), "{text}");
        assert!(!text.contains("HTTP/1.1 200 OK\r\n") || text.matches("HTTP/1.1").count() == 2);
    }
    // Non-chunked transfer-encoding is refused by hyper itself.
    let out = raw(
        sc.inbound,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        SHORT,
    )
    .await;
    assert_eq!(status_of(&out), Some(400));
}

#[tokio::test]
async fn invalid_methods_and_uris_are_refused() {
    let up = upstream().await;
    let sc = sidecar(up.addr, "").await;
    let cases: [(&[u8], u16); 6] = [
        (b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET http://[::1 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            405,
        ),
        (b"TRACE / HTTP/1.1\r\nHost: a\r\n\r\n", 405),
    ];
    for (req, want) in cases {
        let out = raw(sc.inbound, req, SHORT).await;
        assert_eq!(
            status_of(&out),
            Some(want),
            "{:?}",
            String::from_utf8_lossy(req)
        );
    }
    let out = raw(sc.inbound, b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", SHORT).await;
    assert_eq!(status_of(&out), Some(400));
    assert_eq!(up.state.hits.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn bodies_beyond_the_limit_get_413() {
    let up = upstream().await;
    let sc = sidecar(up.addr, "[limits]\nmax_body_bytes = 1024\n").await;
    let out = raw(
        sc.inbound,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\n",
        SHORT,
    )
    .await;
    assert_eq!(status_of(&out), Some(413), "declared too large");
    let mut chunked = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        chunked.extend_from_slice(b"200\r\n");
        chunked.extend_from_slice(&[b'x'; 512]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(
        status_of(&raw(sc.inbound, &chunked, SHORT).await),
        Some(413),
        "streamed too large"
    );
    let ok = Request::builder()
        .method("POST")
        .uri("/")
        .body(Full::new(Bytes::from(vec![b'y'; 1024])))
        .expect("req");
    let r = send(sc.inbound, ok).await.expect("reply");
    assert_eq!(r.status, 200);
    assert_eq!(r.echoed()["x-test-body-len"], "1024");
    assert_eq!(up.state.hits.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn garbage_input_never_takes_the_proxy_down() {
    let up = upstream().await;
    let sc = sidecar(up.addr, "[limits]\nheader_read_timeout_ms = 200\n").await;
    // Deterministic pseudo-random inputs, some starting like HTTP.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let prefixes: [&[u8]; 4] = [
        b"",
        b"GET / HTTP/1.1\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ];
    let mut tasks = Vec::new();
    for i in 0..120 {
        let mut input = prefixes[i % prefixes.len()].to_vec();
        let len = (i * 37) % 700;
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            input.push((x >> 24) as u8);
        }
        let addr = sc.inbound;
        tasks.push(tokio::spawn(async move {
            raw(addr, &input, Duration::from_millis(500)).await
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    assert_eq!(send(sc.inbound, get("/")).await.expect("alive").status, 200);
    assert_eq!(
        send_h2(sc.inbound, get("http://a/"))
            .await
            .expect("alive h2")
            .status,
        200
    );
}

#[tokio::test]
async fn upstream_down_is_503_with_bounded_retries() {
    let dead = dead_port().await;
    let sc = sidecar(
        dead,
        "[upstream]\nconnect_timeout_ms = 200\n[policies.retry]\nmax_retries = 2\nbackoff_ms = 1\n",
    )
    .await;
    let r = send(sc.inbound, get("/")).await.expect("reply");
    assert_eq!((r.status, r.denied_by()), (503, Some("upstream")));
    assert_eq!(r.headers["x-meshsim-retries"], "2");
    assert_eq!(sc.stats().retries.get(), 2);
}

#[tokio::test]
async fn upstream_reset_mid_response_is_contained() {
    let up = upstream().await;
    let sc = sidecar(up.addr, "").await;
    let r = send(sc.inbound, get("/reset")).await;
    // Headers were already sent: the client must see a broken body, never a complete 1000-byte one.
    match r {
        Ok(reply) => assert!(reply.body.len() < 1000, "{reply:?}"),
        Err(e) => assert!(!e.is_empty()),
    }
    assert_eq!(
        send(sc.inbound, get("/ok"))
            .await
            .expect("still serving")
            .status,
        200
    );
}

#[tokio::test]
async fn a_5xx_storm_is_bounded_by_the_retry_budget_and_the_circuit() {
    let up = upstream().await;
    let sc = sidecar(
        up.addr,
        "[policies.retry]\nmax_retries = 2\nbackoff_ms = 0\nbudget_ratio = 0.2\nmin_retries_per_s = 0\n[policies.circuit_breaker]\nconsecutive_5xx = 30\nbase_ejection_ms = 400\n",
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(
            send(sc.inbound, get("/always503"))
                .await
                .expect("reply")
                .status,
        );
    }
    let hits = up.state.hits.load(Ordering::Relaxed);
    // 40 requests, retries capped at 20 % of requests: at most 48 upstream hits; the
    // circuit (30 consecutive failures) opens before the end and spares the rest.
    assert!(hits <= 48, "retry budget bounds amplification: {hits}");
    assert!(sc.stats().retry_budget_exhausted.get() > 0);
    assert!(statuses.iter().all(|s| *s == 503));
    assert!(sc.stats().ejections.get() >= 1, "circuit opened");
    assert!(
        hits < 40,
        "requests after the ejection never reached the upstream: {hits}"
    );
    let before = up.state.hits.load(Ordering::Relaxed);
    let r = send(sc.inbound, get("/ok")).await.expect("reply");
    assert_eq!(r.denied_by(), Some("circuit_breaker"));
    assert_eq!(
        up.state.hits.load(Ordering::Relaxed),
        before,
        "open circuit spares the upstream"
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        send(sc.inbound, get("/ok")).await.expect("reply").status,
        200,
        "recovers"
    );
}

#[tokio::test]
async fn graceful_drain_finishes_in_flight_requests() {
    let up = upstream().await;
    let sc = sidecar(up.addr, "[admin]\nlisten = \"127.0.0.1:0\"\n").await;
    let admin = sc.admin.expect("admin");
    assert_eq!(send(admin, get("/ready")).await.expect("ready").status, 200);
    let addr = sc.inbound;
    let slow = tokio::spawn(async move { send(addr, get("/slow")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = Instant::now();
    assert!(sc.shutdown().await, "drained cleanly");
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "waited for the request"
    );
    assert_eq!(slow.await.expect("join").expect("completed").status, 200);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

/// An HTTP/1.1 keep-alive connection that stays open while the sender lives.
async fn open_conn(
    addr: std::net::SocketAddr,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn ask(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
) -> Result<u16, String> {
    let fut = async {
        sender.ready().await.map_err(|e| e.to_string())?;
        let r = sender
            .send_request(get("/"))
            .await
            .map_err(|e| e.to_string())?;
        Ok(r.status().as_u16())
    };
    tokio::time::timeout(SHORT, fut)
        .await
        .map_err(|_| "timeout".to_owned())?
}

#[tokio::test]
async fn listener_connection_limit_refuses_the_excess_and_frees_slots() {
    let up = upstream().await;
    let sc = sidecar(up.addr, "max_connections = 2\n").await;
    let mut a = open_conn(sc.inbound).await.expect("a");
    let mut b = open_conn(sc.inbound).await.expect("b");
    assert_eq!(ask(&mut a).await, Ok(200));
    assert_eq!(ask(&mut b).await, Ok(200));
    // The third connection is accepted by the kernel, then closed by the sidecar.
    let third = match open_conn(sc.inbound).await {
        Ok(mut c) => ask(&mut c).await,
        Err(e) => Err(e),
    };
    assert!(third.is_err(), "{third:?}");
    assert_eq!(sc.stats().connections_refused.get(), 1);
    // The two open connections keep working.
    assert_eq!(ask(&mut a).await, Ok(200));
    // Closing one frees its slot once the sidecar has seen the close (bounded retries).
    drop(b);
    let mut served = None;
    for _ in 0..100 {
        if let Ok(mut c) = open_conn(sc.inbound).await
            && let Ok(s) = ask(&mut c).await
        {
            served = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(served, Some(200));
    assert_eq!(ask(&mut a).await, Ok(200));
}
