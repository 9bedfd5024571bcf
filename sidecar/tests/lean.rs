//! The lean HTTP/1.1 path (`src/lean.rs`, a listener without policies) against real sockets:
//! connection reuse, pipelining, the hand-off to hyper in the middle of a connection, the
//! upstream's three ways of framing a body, and pooled connections the upstream closed.
//! The HTTP abuse cases of `hardening.rs` run through it too (its sidecars have no policy).

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SHORT: Duration = Duration::from_secs(2);

fn count(hay: &[u8], needle: &str) -> usize {
    String::from_utf8_lossy(hay).matches(needle).count()
}

#[tokio::test]
async fn pipelined_requests_share_one_upstream_connection() {
    let up = upstream().await;
    for extra in ["", "[runtime]\nlean_http1 = false\n"] {
        let sc = sidecar(up.addr, extra).await;
        let before = up.state.connections.load(Ordering::Relaxed);
        let out = raw(
            sc.inbound,
            b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nX-Meshsim-Forged: 1\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            SHORT,
        )
        .await;
        assert_eq!(
            count(&out, "HTTP/1.1 200 OK\r\n"),
            3,
            "{extra}: {}",
            String::from_utf8_lossy(&out)
        );
        assert_eq!(
            count(&out, "x-meshsim-forged"),
            0,
            "internal headers are stripped"
        );
        assert_eq!(
            up.state.connections.load(Ordering::Relaxed) - before,
            1,
            "{extra}: one upstream connection for three requests"
        );
    }
    assert_eq!(up.state.hits.load(Ordering::Relaxed), 6);
}

#[tokio::test]
async fn hyper_takes_over_a_connection_where_the_lean_path_stops() {
    let up = upstream().await;
    let sc = sidecar(up.addr, "").await;
    // Served by the lean path, then a chunked request (hyper's), then a plain one again,
    // which hyper serves as the connection is now its own.
    let out = raw(
        sc.inbound,
        b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        SHORT,
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    assert_eq!(count(&out, "HTTP/1.1 200 OK\r\n"), 3, "{text}");
    assert!(text.contains("\"x-test-body-len\":\"5\""), "{text}");
    assert_eq!(up.state.hits.load(Ordering::Relaxed), 3);
    // And on its own: HTTP/2 with prior knowledge on the same listener.
    assert_eq!(
        send_h2(sc.inbound, get("http://a/"))
            .await
            .expect("h2")
            .status,
        200
    );
}

/// The `Content-Length` of a head (0 when absent).
fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

/// Read one request (head and `Content-Length` body) from `tcp`; its head, or `None` at EOF.
async fn read_request(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..p + 4]).into_owned();
            let len = content_length(&head);
            while buf.len() < p + 4 + len {
                let mut c = [0u8; 65536];
                match tcp.read(&mut c).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => buf.extend_from_slice(&c[..n]),
                }
            }
            buf.drain(..p + 4 + len);
            return Some(head);
        }
        let mut c = [0u8; 4096];
        match tcp.read(&mut c).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&c[..n]),
        }
    }
}

/// An upstream written by hand: answers `/chunked` with a chunked body in pieces, `/close`
/// with a body delimited by closing the connection, `/once` with a `Content-Length` body and
/// then a silent close (no `Connection: close`), anything else with `ok`; keep-alive otherwise.
async fn framing_upstream() -> Upstream {
    listen_upstream(|mut tcp, st| async move {
        let mut buf = Vec::new();
        while let Some(head) = read_request(&mut tcp, &mut buf).await {
            let body_len = content_length(&head);
            st.hits.fetch_add(1, Ordering::Relaxed);
            let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
            match path.as_str() {
                "/chunked" => {
                    for piece in [
                        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"[..],
                        b"lo\r\n6\r\n world\r",
                        b"\n0\r\nX-Trailer: t\r\n\r\n",
                    ] {
                        if tcp.write_all(piece).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                "/close" => {
                    let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil the end").await;
                    return;
                }
                "/once" => {
                    let body = format!("body of {body_len}");
                    let _ = tcp
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .await;
                    return;
                }
                _ => {
                    if tcp
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    })
    .await
}

#[tokio::test]
async fn every_upstream_framing_arrives_whole() {
    let up = framing_upstream().await;
    let sc = sidecar(up.addr, "").await;
    let mut tcp = TcpStream::connect(sc.inbound).await.expect("connect");
    tcp.write_all(b"GET /chunked HTTP/1.1\r\nHost: a\r\n\r\nGET /plain HTTP/1.1\r\nHost: a\r\n\r\nGET /close HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(SHORT, tcp.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end"),
        "{text}"
    );
    assert!(
        text.ends_with("until the end"),
        "closed after a close-delimited body: {text}"
    );
    // The chunked and the plain response left their upstream connection reusable: all
    // three went over one.
    assert_eq!(up.state.connections.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_not_a_failure() {
    let up = framing_upstream().await;
    let sc = sidecar(up.addr, "").await;
    for i in 0..3 {
        // The previous exchange's upstream connection went back to the pool and was closed
        // by the upstream after its answer: a GET is sent again on a new one...
        let r = send(sc.inbound, get("/once")).await.expect("reply");
        assert_eq!((i, r.status, &r.body[..]), (i, 200, &b"body of 0"[..]));
        tokio::time::sleep(Duration::from_millis(50)).await;
        // ...a POST, which must not be sent twice, is never written to it.
        let post = Request::builder()
            .method("POST")
            .uri("/once")
            .header("host", "a")
            .body(Full::new(Bytes::from_static(b"12345")))
            .expect("req");
        let r = send(sc.inbound, post).await.expect("reply");
        assert_eq!((i, r.status, &r.body[..]), (i, 200, &b"body of 5"[..]));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        up.state.hits.load(Ordering::Relaxed),
        6,
        "each request reached it once"
    );
    assert_eq!(sc.stats().upstream_errors.get(), 0);
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_503_named_after_the_upstream() {
    let dead = dead_port().await;
    let sc = sidecar(dead, "[upstream]\nconnect_timeout_ms = 200\n").await;
    let out = raw(
        sc.inbound,
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{text}"
    );
    assert!(text.contains("x-meshsim-denied-by: upstream\r\n"), "{text}");
    assert!(text.ends_with("upstream connect error\n"), "{text}");
    assert_eq!(sc.stats().upstream_errors.get(), 1);
}

const BOTH_PATHS: [&str; 2] = ["", "[runtime]\nlean_http1 = false\n"];

#[tokio::test]
async fn late_bytes_on_a_pooled_connection_never_answer_another_request() {
    // A faulty function writes a body after its answer to a HEAD, late, and here that body
    // looks like a whole response.
    let up = listen_upstream(|mut tcp, _st| async move {
        let mut buf = Vec::new();
        while let Some(head) = read_request(&mut tcp, &mut buf).await {
            if head.starts_with("HEAD") {
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 39\r\n\r\n")
                    .await;
                tokio::time::sleep(Duration::from_millis(30)).await;
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON")
                    .await;
            } else {
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            }
        }
    })
    .await;
    for extra in BOTH_PATHS {
        let sc = sidecar(up.addr, extra).await;
        let a = raw(
            sc.inbound,
            b"HEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            SHORT,
        )
        .await;
        assert_eq!(status_of(&a), Some(200), "{extra}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let b = raw(
            sc.inbound,
            b"GET /other HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            SHORT,
        )
        .await;
        let text = String::from_utf8_lossy(&b);
        assert!(text.ends_with("\r\n\r\nok"), "{extra}: {text}");
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let up = upstream().await;
    for extra in BOTH_PATHS {
        let sc = sidecar(
            up.addr,
            &format!("[limits]\nheader_read_timeout_ms = 300\n{extra}"),
        )
        .await;
        let start = std::time::Instant::now();
        // One request served, then silence: `raw` reads until the sidecar closes.
        let out = raw(
            sc.inbound,
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        let took = start.elapsed();
        assert_eq!(status_of(&out), Some(200), "{extra}");
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "{extra}: closed after {took:?}"
        );
    }
}

#[tokio::test]
async fn an_answer_before_the_whole_body_reaches_the_client() {
    // The function refuses a large upload after reading its head, and closes.
    let up = listen_upstream(|mut tcp, _st| async move {
        let mut c = [0u8; 4096];
        let _ = tcp.read(&mut c).await;
        let _ = tcp
            .write_all(
                b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope",
            )
            .await;
    })
    .await;
    for extra in BOTH_PATHS {
        let sc = sidecar(up.addr, extra).await;
        let mut tcp = TcpStream::connect(sc.inbound).await.expect("connect");
        let mut req = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 900000\r\n\r\n".to_vec();
        req.resize(req.len() + 900_000, b'x');
        let (mut r, mut w) = tcp.split();
        let write = async {
            let _ = w.write_all(&req).await;
        };
        let read = async {
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), r.read_to_end(&mut out)).await;
            out
        };
        let ((), out) = tokio::join!(write, read);
        let text = String::from_utf8_lossy(&out);
        assert_eq!(status_of(&out), Some(401), "{extra}: {text}");
        assert!(text.ends_with("nope"), "{extra}: {text}");
    }
}

#[tokio::test]
async fn an_interim_response_then_a_close_is_a_bad_gateway_and_nothing_is_resent() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let up = listen_upstream(move |mut tcp, _st| {
        let log = log.clone();
        async move {
            let mut buf = Vec::new();
            while let Some(head) = read_request(&mut tcp, &mut buf).await {
                log.lock()
                    .expect("log")
                    .push(head.lines().next().unwrap_or("").to_owned());
                if head.starts_with("GET /early") {
                    let _ = tcp
                        .write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
                        .await;
                    return;
                }
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            }
        }
    })
    .await;
    let sc = sidecar(up.addr, "[limits]\nrequest_timeout_ms = 1500\n").await;
    // /a leaves a pooled connection; /early goes over it and gets only the 103.
    let out = raw(
        sc.inbound,
        b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /early HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    assert_eq!(count(&out, "HTTP/1.1 200 OK\r\n"), 1, "{text}");
    assert!(text.contains("HTTP/1.1 502 Bad Gateway\r\n"), "{text}");
    assert!(
        !text.contains("103"),
        "interim responses are not forwarded: {text}"
    );
    assert_eq!(
        *seen.lock().expect("log"),
        ["GET /a HTTP/1.1", "GET /early HTTP/1.1"],
        "the upstream saw each request once, and nothing else"
    );
}
