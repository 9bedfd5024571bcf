//! Body and message types shared by every layer, and the per-connection context.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

/// Boxed error used inside bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Request body after the front layer buffered it (bounded by `limits.max_body_bytes`), so
/// that retries can resend it.
pub type ReqBody = Full<Bytes>;
/// Response body: streamed from the upstream, or a small local reply.
pub type RespBody = BoxBody<Bytes, BoxError>;
/// A request inside the policy chain.
pub type Req = Request<ReqBody>;
/// A response inside the policy chain.
pub type Resp = Response<RespBody>;

/// Header naming the layer that produced a local reply (for tests, logs and operators).
pub const DENIED_BY: &str = "x-meshsim-denied-by";

/// A local reply produced by the proxy itself.
pub fn local_reply(status: StatusCode, by: &'static str, msg: &str) -> Resp {
    let body = Full::new(Bytes::from(format!("{msg}\n")))
        .map_err(|never| match never {})
        .boxed();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    h.insert(DENIED_BY, HeaderValue::from_static(by));
    resp.extensions_mut().insert(LocalReply(by));
    resp
}

/// Marks a response produced by the proxy rather than the upstream; carries the layer name.
#[derive(Debug, Clone, Copy)]
pub struct LocalReply(pub &'static str);

/// Which listener a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Traffic to the function.
    Inbound,
    /// Traffic from the function.
    Outbound,
}

/// Facts about the client connection, inserted into every request's extensions.
#[derive(Debug)]
pub struct ConnInfo {
    /// Client address.
    pub remote: SocketAddr,
    /// Local port the connection arrived on.
    pub local_port: u16,
    /// Listener.
    pub listener: ListenerKind,
    /// Verified SPIFFE id of the peer (mTLS), if any.
    pub peer: Option<Arc<str>>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// Set by the HTTP/1 framing scanner when a request carried both Content-Length and
    /// Transfer-Encoding (hyper silently prefers chunked; we refuse such requests).
    pub framing_conflict: Arc<AtomicBool>,
}

impl ConnInfo {
    /// Whether a request on this connection had conflicting framing headers.
    pub fn framing_conflict(&self) -> bool {
        self.framing_conflict.load(Ordering::Relaxed)
    }
}

/// Connection info of a request (present on every request that entered through a listener).
pub fn conn_info(req: &Req) -> Option<&Arc<ConnInfo>> {
    req.extensions().get::<Arc<ConnInfo>>()
}

/// What happened on the upstream side; set on responses by the forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamOutcome {
    /// The upstream answered (any status).
    Responded,
    /// Could not connect (refused, timeout, or connection limit).
    ConnectFailed,
    /// The connection failed after it was established, before response headers.
    Reset,
}

/// The hop-by-hop headers a proxy removes whatever `Connection` says (RFC 9110 §7.6.1, plus
/// the legacy `keep-alive` and `proxy-connection`).
fn is_hop_by_hop(name: &http::HeaderName) -> bool {
    use http::header::{CONNECTION, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
    [
        CONNECTION,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
        PROXY_AUTHORIZATION,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// Hop-by-hop headers that a proxy must not forward. Runs on every request and response: one
/// pass over the names decides (most messages carry none), instead of eight hashed removals.
pub fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if let Some(conn) = headers.get(http::header::CONNECTION).cloned()
        && let Ok(s) = conn.to_str()
    {
        for name in s.split(',') {
            let name = name.trim();
            if !name.is_empty() {
                headers.remove(name);
            }
        }
    }
    let hop: Vec<http::HeaderName> = headers
        .keys()
        .filter(|k| is_hop_by_hop(k))
        .cloned()
        .collect();
    for h in hop {
        headers.remove(h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_stripped_and_others_kept() {
        let mut h = http::HeaderMap::new();
        h.insert("host", "a".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        let clean = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, clean, "nothing to strip");
        for (k, v) in [
            ("connection", "close, X-Custom-Hop"),
            ("x-custom-hop", "1"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
        ] {
            h.append(http::HeaderName::from_static(k), v.parse().unwrap());
        }
        h.append("x-keep", "2".parse().unwrap());
        strip_hop_by_hop(&mut h);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str().to_owned()).collect();
        names.sort();
        assert_eq!(names, ["host", "x-keep"]);
        assert_eq!(h.get_all("x-keep").iter().count(), 2);
        // Only listed in Connection, with nothing else hop-by-hop: `connection` itself triggers.
        let mut h = http::HeaderMap::new();
        h.insert("connection", "x-a".parse().unwrap());
        h.insert("x-a", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty(), "{h:?}");
    }
}
