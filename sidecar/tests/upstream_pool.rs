//! The HTTP/1.1 upstream pool: keep-alive reuse across client connections, a new connection
//! while another request's response is still being read, the idle timeout, `pool_max_idle`
//! 0 (no pooling), and a function that closes idle connections on its own.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn conns(up: &Upstream) -> usize {
    up.state.connections.load(Ordering::Relaxed)
}

/// GET `path` through the sidecar listening on `inbound`: the reply's status.
async fn get_status(inbound: std::net::SocketAddr, path: &str) -> u16 {
    send(inbound, get(path)).await.expect("reply").status
}

#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection() {
    let up = upstream().await;
    let sc = sidecar(up.addr, "").await;
    for i in 0..5 {
        assert_eq!(get_status(sc.inbound, &format!("/seq/{i}")).await, 200);
    }
    assert_eq!(up.state.hits.load(Ordering::Relaxed), 5);
    assert_eq!(
        conns(&up),
        1,
        "five requests, five client connections, one upstream connection"
    );
    assert!(sc.shutdown().await);
}

#[tokio::test]
async fn concurrent_requests_get_their_own_connections_and_all_are_reused_later() {
    let up = upstream().await;
    let sc = sidecar(up.addr, "").await;
    let batch = || async {
        let reqs = (0..4).map(|i| send(sc.inbound, get(&format!("/c/{i}"))));
        for r in futures_util::future::join_all(reqs).await {
            assert_eq!(r.expect("reply").status, 200);
        }
    };
    batch().await;
    let opened = conns(&up);
    assert!((1..=4).contains(&opened), "{opened}");
    // Sequential requests afterwards find a ready pooled connection every time.
    for i in 0..6 {
        assert_eq!(get_status(sc.inbound, &format!("/s/{i}")).await, 200);
    }
    assert_eq!(
        conns(&up),
        opened,
        "no new connection once the pool is warm"
    );
    assert!(sc.shutdown().await);
}

/// Two requests 400 ms apart through a sidecar with `extra` config: upstream connections used.
async fn connections_for_two_requests_with_a_pause(extra: &str) -> usize {
    let up = upstream().await;
    let sc = sidecar(up.addr, extra).await;
    for path in ["/a", "/b"] {
        assert_eq!(get_status(sc.inbound, path).await, 200);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(sc.shutdown().await);
    conns(&up)
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let expired = "[upstream]\npool_idle_timeout_ms = 100\n";
    assert_eq!(connections_for_two_requests_with_a_pause(expired).await, 2);
    // Control: the default idle timeout (90 s) keeps it over the same pause.
    assert_eq!(connections_for_two_requests_with_a_pause("").await, 1);
}

#[tokio::test]
async fn max_idle_zero_opens_a_connection_per_request() {
    let up = upstream().await;
    let sc = sidecar(up.addr, "[upstream]\npool_max_idle_per_endpoint = 0\n").await;
    for i in 0..3 {
        assert_eq!(get_status(sc.inbound, &format!("/{i}")).await, 200);
    }
    assert_eq!(conns(&up), 3);
    assert!(sc.shutdown().await);
}

#[tokio::test]
async fn a_function_closing_idle_connections_costs_no_request() {
    // A function whose keep-alive ends 50 ms after each response, without a
    // `Connection: close` header: the pooled connection dies while idle.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let acc = accepted.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                continue;
            };
            acc.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            });
        }
    });
    let sc = sidecar(addr, "").await;
    for i in 0..4 {
        assert_eq!(
            get_status(sc.inbound, &format!("/k/{i}")).await,
            200,
            "request {i}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(
        accepted.load(Ordering::Relaxed),
        4,
        "each closed connection was replaced"
    );
    assert!(sc.shutdown().await);
    task.abort();
}
