//! The upstream side: per-endpoint connection pools over hyper's connection-level clients
//! (HTTP/1.1, or HTTP/2 with prior knowledge), and a connector that enforces the connect
//! timeout, the circuit breaker's connection limit, and (outbound) originates mTLS.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::Response;
use http::uri::{Authority, Scheme, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsConnector;

use crate::http::{BoxError, Req, ReqBody, Resp, UpstreamOutcome, local_reply, strip_hop_by_hop};

/// Selected endpoint for one attempt (set by the circuit breaker; otherwise round robin).
#[derive(Debug, Clone, Copy)]
pub struct Endpoint(pub SocketAddr);

/// An upstream connection: plain TCP or client-side TLS, holding a connection-limit permit.
#[derive(Debug)]
pub struct UpConn {
    io: TokioIo<UpStream>,
    _permit: Option<OwnedSemaphorePermit>,
}

#[derive(Debug)]
enum UpStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl tokio::io::AsyncRead for UpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for UpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl hyper::rt::Read for UpConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for UpConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl Connection for UpConn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// Error from the connector; `Overflow` means the connection limit was reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Circuit breaker: `max_connections` reached.
    #[error("upstream connection limit reached")]
    Overflow,
    /// TCP connect timed out.
    #[error("upstream connect timeout")]
    Timeout,
    /// The URI had no usable authority.
    #[error("bad upstream address")]
    BadAddress,
    /// Socket or TLS error.
    #[error("upstream connect: {0}")]
    Io(#[from] std::io::Error),
}

/// The connector used by the pooled client.
#[derive(Clone)]
pub struct Connector {
    timeout: Duration,
    limit: Option<Arc<Semaphore>>,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("timeout", &self.timeout)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector with a connect timeout, optionally originating TLS with `tls` (the server
    /// name sent is a fixed placeholder: SPIFFE verification does not use it).
    pub fn new(timeout: Duration, tls: Option<Arc<rustls::ClientConfig>>) -> Connector {
        Connector {
            timeout,
            limit: None,
            tls: tls.map(|cfg| (TlsConnector::from(cfg), peer_name())),
        }
    }
}

fn peer_name() -> ServerName<'static> {
    ServerName::try_from("meshsim.peer")
        .unwrap_or_else(|_| ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()))
}

impl tower::Service<Uri> for Connector {
    type Response = UpConn;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<UpConn, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let addr: SocketAddr = uri
                .authority()
                .ok_or(ConnectError::BadAddress)?
                .as_str()
                .parse()
                .map_err(|_| ConnectError::BadAddress)?;
            this.connect(addr).await
        })
    }
}

/// Options for [`Forward::new`].
#[derive(Debug, Clone)]
pub struct ForwardOptions {
    /// Endpoints, round robin when no [`Endpoint`] extension is set.
    pub endpoints: Vec<SocketAddr>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Pool idle timeout.
    pub pool_idle_timeout: Duration,
    /// Pool size per endpoint.
    pub pool_max_idle_per_endpoint: usize,
    /// Upper bound on open upstream connections (circuit breaker), if any.
    pub max_connections: Option<usize>,
    /// TLS origination (outbound mTLS).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Speak HTTP/2 with prior knowledge (h2c) instead of HTTP/1.1.
    pub http2: bool,
}

type H1 = hyper::client::conn::http1::SendRequest<ReqBody>;
type H2 = hyper::client::conn::http2::SendRequest<ReqBody>;

/// The connection pool of one endpoint.
///
/// HTTP/1.1: a list of connections (their request senders) with the time each was last handed
/// back. A sender goes back on the list as soon as its response head has arrived; it is
/// *ready* again once that response's body has been read to the end, and only ready senders are
/// taken. So no task is spawned per request to watch for the end of the body (hyper-util's
/// pool does that), and a request never waits behind another one's body: when no listed
/// connection is ready, a new one is opened. HTTP/2: one shared, multiplexed connection.
#[derive(Debug)]
struct EndpointPool {
    addr: SocketAddr,
    authority: Authority,
    idle: Mutex<Vec<(H1, Instant)>>,
    h2: Mutex<Option<H2>>,
}

#[derive(Debug)]
struct ForwardInner {
    connector: Connector,
    http2: bool,
    idle_timeout: Duration,
    max_idle: usize,
    endpoints: Vec<EndpointPool>,
    next: AtomicUsize,
}

/// The innermost service: sends the request to an endpoint over a pooled connection and
/// streams the response back.
#[derive(Clone)]
pub struct Forward {
    inner: Arc<ForwardInner>,
}

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forward")
            .field(
                "endpoints",
                &self
                    .inner
                    .endpoints
                    .iter()
                    .map(|e| e.addr)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Why a request got no response head.
enum SendError {
    Connect(ConnectError),
    /// The connection failed after the request was (possibly) written.
    Reset,
}

impl Forward {
    /// Build the pools. Inside a tokio runtime, a reaper task closes connections idle for
    /// longer than `pool_idle_timeout` (it stops when the last clone of the `Forward` is gone).
    pub fn new(opts: ForwardOptions) -> Forward {
        let connector = Connector {
            timeout: opts.connect_timeout,
            limit: opts.max_connections.map(|n| Arc::new(Semaphore::new(n))),
            tls: opts.tls.map(|cfg| (TlsConnector::from(cfg), peer_name())),
        };
        let inner = Arc::new(ForwardInner {
            connector,
            http2: opts.http2,
            idle_timeout: opts.pool_idle_timeout,
            max_idle: opts.pool_max_idle_per_endpoint,
            endpoints: opts
                .endpoints
                .iter()
                .filter_map(|e| {
                    Authority::try_from(e.to_string())
                        .ok()
                        .map(|authority| EndpointPool {
                            addr: *e,
                            authority,
                            idle: Mutex::new(Vec::new()),
                            h2: Mutex::new(None),
                        })
                })
                .collect(),
            next: AtomicUsize::new(0),
        });
        spawn_reaper(&inner, opts.pool_idle_timeout, |i| i.reap(Instant::now()));
        Forward { inner }
    }
}

/// Inside a tokio runtime, call `reap` on `pool` every `idle_timeout` (at least 100 ms) until
/// the last clone of the `Arc` is gone.
pub(crate) fn spawn_reaper<T: Send + Sync + 'static>(
    pool: &Arc<T>,
    idle_timeout: Duration,
    reap: fn(&T),
) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak = Arc::downgrade(pool);
    let period = idle_timeout.max(Duration::from_millis(100));
    rt.spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(pool) = weak.upgrade() else { return };
            reap(&pool);
        }
    });
}

impl ForwardInner {
    fn pick(&self, requested: Option<SocketAddr>) -> Option<&EndpointPool> {
        if let Some(addr) = requested {
            return self.endpoints.iter().find(|e| e.addr == addr);
        }
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.endpoints.get(i % self.endpoints.len())
    }

    /// A listed connection to drop: closed, or ready (idle) for longer than the idle timeout.
    fn stale(&self, s: &H1, since: Instant, now: Instant) -> bool {
        s.is_closed() || (s.is_ready() && now.duration_since(since) > self.idle_timeout)
    }

    /// Close idle connections older than the idle timeout, and forget closed ones.
    fn reap(&self, now: Instant) {
        for ep in &self.endpoints {
            if let Ok(mut idle) = ep.idle.lock() {
                idle.retain(|(s, since)| !self.stale(s, *since, now));
            }
        }
    }

    /// A listed HTTP/1.1 connection that is ready for a request (stale ones are dropped on
    /// the way).
    fn take_ready(&self, ep: &EndpointPool) -> Option<H1> {
        let mut idle = ep.idle.lock().ok()?;
        let now = Instant::now();
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            let (s, since) = &idle[i];
            if self.stale(s, *since, now) {
                idle.swap_remove(i);
            } else if s.is_ready() {
                return Some(idle.swap_remove(i).0);
            }
        }
        None
    }

    /// Hand a sender back (its response head has arrived; see [`EndpointPool`]).
    fn put_back(&self, ep: &EndpointPool, s: H1) {
        if let Ok(mut idle) = ep.idle.lock()
            && idle.len() < self.max_idle
        {
            idle.push((s, Instant::now()));
        }
    }

    async fn new_h1(&self, ep: &EndpointPool) -> Result<H1, ConnectError> {
        let io = self.connector.connect(ep.addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(handshake_error)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        sender.ready().await.map_err(handshake_error)?;
        Ok(sender)
    }

    async fn send_h1(
        &self,
        ep: &EndpointPool,
        mut req: Req,
    ) -> Result<Response<Incoming>, SendError> {
        let (mut sender, mut reused) = match self.take_ready(ep) {
            Some(s) => (s, true),
            None => (self.new_h1(ep).await.map_err(SendError::Connect)?, false),
        };
        loop {
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    self.put_back(ep, sender);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    // Not written: a reused connection closed under us (the upstream's
                    // keep-alive ended). Send it once more, on a new connection.
                    Some(unsent) if reused => {
                        req = unsent;
                        sender = self.new_h1(ep).await.map_err(SendError::Connect)?;
                        reused = false;
                    }
                    _ => return Err(SendError::Reset),
                },
            }
        }
    }

    async fn h2_sender(&self, ep: &EndpointPool) -> Result<H2, ConnectError> {
        if let Ok(g) = ep.h2.lock()
            && let Some(s) = g.as_ref()
            && !s.is_closed()
        {
            return Ok(s.clone());
        }
        let io = self.connector.connect(ep.addr).await?;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(handshake_error)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        if let Ok(mut g) = ep.h2.lock() {
            // Two requests may have connected at once: keep the first live one.
            match g.as_ref() {
                Some(s) if !s.is_closed() => return Ok(s.clone()),
                _ => *g = Some(sender.clone()),
            }
        }
        Ok(sender)
    }

    async fn send_h2(&self, ep: &EndpointPool, req: Req) -> Result<Response<Incoming>, SendError> {
        let mut sender = self.h2_sender(ep).await.map_err(SendError::Connect)?;
        if sender.ready().await.is_err() {
            return Err(SendError::Reset);
        }
        sender.send_request(req).await.map_err(|_| SendError::Reset)
    }
}

/// A failed HTTP handshake on a new connection counts as a connect failure.
fn handshake_error(e: hyper::Error) -> ConnectError {
    ConnectError::Io(std::io::Error::other(e))
}

impl Connector {
    /// Open a connection to `addr` (connection limit, connect timeout, TLS origination).
    async fn connect(&self, addr: SocketAddr) -> Result<UpConn, ConnectError> {
        let permit = match &self.limit {
            Some(sem) => Some(
                sem.clone()
                    .try_acquire_owned()
                    .map_err(|_| ConnectError::Overflow)?,
            ),
            None => None,
        };
        let tcp = tokio::time::timeout(self.timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnectError::Timeout)??;
        tcp.set_nodelay(true)?;
        let stream = match &self.tls {
            None => UpStream::Plain(tcp),
            Some((connector, name)) => {
                let tls = tokio::time::timeout(self.timeout, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| ConnectError::Timeout)??;
                UpStream::Tls(Box::new(tls))
            }
        };
        Ok(UpConn {
            io: TokioIo::new(stream),
            _permit: permit,
        })
    }
}

impl tower::Service<Req> for Forward {
    type Response = Resp;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Resp, std::convert::Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            let requested = req.extensions().get::<Endpoint>().map(|e| e.0);
            let Some(ep) = inner.pick(requested) else {
                return Ok(local_reply(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "upstream",
                    "no upstream endpoint",
                ));
            };
            if let Err(resp) = rewrite_for_upstream(&mut req, &ep.authority, inner.http2) {
                return Ok(resp);
            }
            let sent = if inner.http2 {
                inner.send_h2(ep, req).await
            } else {
                inner.send_h1(ep, req).await
            };
            match sent {
                Ok(resp) => {
                    let (mut parts, body) = resp.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    parts.extensions.insert(UpstreamOutcome::Responded);
                    let body = body.map_err(|e| Box::new(e) as BoxError).boxed();
                    Ok(Resp::from_parts(parts, body))
                }
                Err(e) => {
                    let (status, by, msg, outcome) = match &e {
                        SendError::Connect(ConnectError::Overflow) => (
                            http::StatusCode::SERVICE_UNAVAILABLE,
                            "circuit_breaker",
                            "upstream connection limit reached",
                            UpstreamOutcome::ConnectFailed,
                        ),
                        SendError::Connect(_) => (
                            http::StatusCode::SERVICE_UNAVAILABLE,
                            "upstream",
                            "upstream connect error",
                            UpstreamOutcome::ConnectFailed,
                        ),
                        SendError::Reset => (
                            http::StatusCode::BAD_GATEWAY,
                            "upstream",
                            "upstream reset before response headers",
                            UpstreamOutcome::Reset,
                        ),
                    };
                    let mut resp = local_reply(status, by, msg);
                    resp.extensions_mut().insert(outcome);
                    if matches!(e, SendError::Connect(ConnectError::Overflow)) {
                        resp.extensions_mut()
                            .insert(crate::policy::circuit::Overflow);
                    }
                    Ok(resp)
                }
            }
        })
    }
}

/// Point the request at `authority`: HTTP/1.1 gets the origin form (`/path?query`) with the
/// client's `Host` kept (or derived from an HTTP/2 `:authority`); HTTP/2 gets the absolute
/// form its pseudo-headers come from. Hop-by-hop headers are removed.
fn rewrite_for_upstream(req: &mut Req, authority: &Authority, http2: bool) -> Result<(), Resp> {
    let bad = || {
        local_reply(
            http::StatusCode::BAD_REQUEST,
            "front",
            "request URI cannot be forwarded",
        )
    };
    if !req.headers().contains_key(http::header::HOST) {
        let host = req
            .uri()
            .authority()
            .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
            .or_else(|| http::HeaderValue::from_str(authority.as_str()).ok());
        if let Some(v) = host {
            req.headers_mut().insert(http::header::HOST, v);
        }
    }
    let path_and_query = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let mut parts = http::uri::Parts::default();
    if http2 {
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(authority.clone());
    }
    parts.path_and_query = Some(path_and_query);
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| bad())?;
    *req.version_mut() = if http2 {
        http::Version::HTTP_2
    } else {
        http::Version::HTTP_11
    };
    strip_hop_by_hop(req.headers_mut());
    Ok(())
}
