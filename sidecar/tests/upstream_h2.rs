//! `[upstream] protocol = "http2"`: the sidecar forwards to an HTTP/2-only (h2c, prior
//! knowledge) function, whatever the client speaks, multiplexed on one upstream connection;
//! the policies still apply.

mod common;

use common::*;

#[tokio::test]
async fn http2_upstream_gets_h1_and_h2_clients_on_one_connection() {
    let up = upstream_h2().await;
    let sc = sidecar(
        up.addr,
        "[upstream]\nprotocol = \"http2\"\n[policies.tracing]\nsampling = 1.0\n",
    )
    .await;
    for i in 0..3 {
        let r = send(sc.inbound, get(&format!("/h1/{i}")))
            .await
            .expect("h1 reply");
        assert_eq!(r.status, 200);
        assert_eq!(
            r.headers
                .get("x-upstream-version")
                .and_then(|v| v.to_str().ok()),
            Some("HTTP/2.0")
        );
        // The tracing policy ran before forwarding.
        assert!(r.echoed()["traceparent"].as_str().is_some());
        let r = send_h2(sc.inbound, get(&format!("/h2/{i}")))
            .await
            .expect("h2 reply");
        assert_eq!(r.status, 200);
    }
    assert_eq!(up.state.hits.load(std::sync::atomic::Ordering::Relaxed), 6);
    assert_eq!(
        up.state
            .connections
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "six requests from six client connections share one h2 connection"
    );
    assert!(sc.shutdown().await);
}

#[tokio::test]
async fn http1_upstream_setting_cannot_talk_to_an_h2_only_function() {
    // The control: with the default (HTTP/1.1) the same function refuses the sidecar's
    // requests, so the test above does exercise the HTTP/2 client.
    let up = upstream_h2().await;
    let sc = sidecar(up.addr, "").await;
    let r = send(sc.inbound, get("/")).await.expect("reply");
    assert_eq!(r.status, 502, "{r:?}");
    assert!(sc.shutdown().await);
}
