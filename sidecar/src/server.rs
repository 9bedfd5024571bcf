//! Listeners, connections, the front (hardening) layer, the admin listener and graceful drain.
//!
//! Runtime layout: one tokio runtime (current-thread when `runtime.worker_threads = 1`); one
//! accept task per listener; one task per client connection (TLS handshake, then hyper's
//! auto HTTP/1.1 + HTTP/2 server); the pooled upstream client's connection tasks; one OS thread
//! writing access logs.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::config::{Config, Isolation, MtlsMode, Protocol};
use crate::http::{ConnInfo, ListenerKind, Req, Resp, RespBody, local_reply};
use crate::lean::{Lean, LeanOptions, Served};
use crate::pki::{Pki, TlsMaterials, spiffe_id_of};
use crate::policy::CheckLayer;
use crate::policy::access_log::{AccessLogLayer, Writer};
use crate::policy::authz::Authz;
use crate::policy::circuit::CircuitLayer;
use crate::policy::jwt::{CLAIM_HEADER_PREFIX, Jwt};
use crate::policy::mtls::{Mtls, XFCC};
use crate::policy::ports::Ports;
use crate::policy::ratelimit::RateLimitLayer;
use crate::policy::retry::RetryLayer;
use crate::policy::tracing::Tracing;
use crate::sandbox::layer::{ChainParts, SandboxLayer};
use crate::scan::{Scanned, Scanner};
use crate::stats::Stats;
use crate::upstream::{Forward, ForwardOptions};

/// Start-up errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Binding a listener failed.
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Address.
        addr: SocketAddr,
        /// Error.
        source: std::io::Error,
    },
    /// Certificates.
    #[error("identity: {0}")]
    Pki(#[from] crate::pki::PkiError),
    /// The loaded certificate does not carry the configured identity.
    #[error("identity: certificate is for {found}, config says {expected}")]
    IdentityMismatch {
        /// In the certificate.
        found: String,
        /// In the config.
        expected: String,
    },
    /// JWKS.
    #[error("policies.jwt: {0}")]
    Jwks(#[from] crate::policy::jwt::JwksError),
    /// Access log file.
    #[error("policies.access_log: {0}")]
    AccessLog(std::io::Error),
    /// Config invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The per-request policy sandbox could not be built (or its self-test failed).
    #[error("sandbox: {0}")]
    Sandbox(#[from] crate::sandbox::SandboxError),
}

/// Limits the front layer enforces.
#[derive(Debug)]
struct FrontLimits {
    max_headers: usize,
    max_header_bytes: usize,
    max_body_bytes: usize,
    request_timeout: Duration,
}

/// The front layer: request hardening, body buffering, connection context, request timeout.
#[derive(Debug, Clone)]
struct Front<S> {
    inner: S,
    conn: Arc<ConnInfo>,
    limits: Arc<FrontLimits>,
    stats: Arc<Stats>,
}

fn refuse(status: StatusCode, msg: &str, close: bool) -> Resp {
    let mut r = local_reply(status, "front", msg);
    if close {
        r.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

impl<S> Service<Request<Incoming>> for Front<S>
where
    S: Service<Req, Response = Resp, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response<RespBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Resp, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let inner = self.inner.clone();
        let conn = self.conn.clone();
        let limits = self.limits.clone();
        let stats = self.stats.clone();
        Box::pin(async move {
            stats.requests.inc();
            match front(req, conn, &limits).await {
                Ok(req) => {
                    match tokio::time::timeout(limits.request_timeout, inner.oneshot(req)).await {
                        Ok(r) => r,
                        Err(_) => Ok(local_reply(
                            StatusCode::GATEWAY_TIMEOUT,
                            "front",
                            "request timeout",
                        )),
                    }
                }
                Err(resp) => {
                    stats.rejected_front.inc();
                    Ok(resp)
                }
            }
        })
    }
}

async fn front(
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
    limits: &FrontLimits,
) -> Result<Req, Resp> {
    if conn.framing_conflict() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "conflicting Content-Length and Transfer-Encoding",
            true,
        ));
    }
    let headers = req.headers();
    let uri_len = req.uri().path_and_query().map_or(1, |p| p.as_str().len())
        + req.uri().authority().map_or(0, |a| a.as_str().len());
    let header_bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + uri_len;
    if headers.len() > limits.max_headers || header_bytes > limits.max_header_bytes {
        return Err(refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request header fields too large",
            true,
        ));
    }
    if req.method() == Method::CONNECT || req.method() == Method::TRACE {
        return Err(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
            false,
        ));
    }
    if !req.uri().path().starts_with('/') {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid request target",
            true,
        ));
    }
    if let Some(cl) = headers.get(http::header::CONTENT_LENGTH) {
        let n: Option<u64> = cl.to_str().ok().and_then(|s| s.parse().ok());
        match n {
            Some(n) if n > limits.max_body_bytes as u64 => {
                return Err(refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body too large",
                    true,
                ));
            }
            Some(_) => {}
            None => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "invalid content-length",
                    true,
                ));
            }
        }
    }
    let (mut parts, body) = req.into_parts();
    // Most requests (GET) have no body: skip the collector.
    let bytes: Bytes = if http_body::Body::is_end_stream(&body) {
        Bytes::new()
    } else {
        collect_body(body, limits.max_body_bytes).await?
    };
    // Identity and claims headers are only ever set by the sidecar itself.
    parts.headers.remove(XFCC);
    let is_internal = |k: &http::HeaderName| {
        k.as_str().starts_with(CLAIM_HEADER_PREFIX) || k.as_str().starts_with("x-meshsim-")
    };
    if parts.headers.keys().any(is_internal) {
        strip_internal(&mut parts.headers, is_internal);
    }
    parts.extensions.insert(conn);
    Ok(Request::from_parts(parts, Full::new(bytes)))
}

/// The whole request body, at most `max` bytes (buffered so retries can resend it).
async fn collect_body(body: Incoming, max: usize) -> Result<Bytes, Resp> {
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large",
            true,
        )),
        Err(_) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "error reading request body",
            true,
        )),
    }
}

fn strip_internal(headers: &mut http::HeaderMap, is_internal: impl Fn(&http::HeaderName) -> bool) {
    let forged: Vec<_> = headers.keys().filter(|k| is_internal(k)).cloned().collect();
    for k in forged {
        headers.remove(k);
    }
}

/// Client-side stream: plain TCP or server-side TLS.
#[derive(Debug)]
enum ClientStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Plain TCP handed over by the lean path, with the bytes it had read and not served.
    Rewound(Box<Rewound>),
}

/// A connection whose first bytes were already read (by the lean path).
#[derive(Debug)]
struct Rewound {
    prefix: Vec<u8>,
    pos: usize,
    tcp: TcpStream,
}

impl Rewound {
    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            buf.put_slice(&self.prefix[self.pos..self.pos + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            ClientStream::Rewound(r) => r.poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            ClientStream::Rewound(r) => Pin::new(&mut r.tcp).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            ClientStream::Rewound(r) => Pin::new(&mut r.tcp).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            ClientStream::Plain(s) => s.is_write_vectored(),
            ClientStream::Tls(s) => s.is_write_vectored(),
            ClientStream::Rewound(r) => r.tcp.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            ClientStream::Rewound(r) => Pin::new(&mut r.tcp).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            ClientStream::Rewound(r) => Pin::new(&mut r.tcp).poll_shutdown(cx),
        }
    }
}

#[derive(Clone)]
struct TlsTermination {
    acceptor: TlsAcceptor,
    mode: MtlsMode,
}

/// Everything a listener needs to serve connections.
struct ListenerCtx<S> {
    kind: ListenerKind,
    local_port: u16,
    tls: Option<TlsTermination>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    chain: S,
    limits: Arc<FrontLimits>,
    stats: Arc<Stats>,
    handshake_timeout: Duration,
    max_header_bytes: usize,
    /// Open-connection limit of the listener (`max_connections`); a permit per connection.
    conn_limit: Option<Arc<Semaphore>>,
    /// The lean HTTP/1.1 path, on a plain-text listener without policies.
    lean: Option<Arc<Lean>>,
    /// Turns true when the sidecar drains (the lean path closes idle connections then).
    shutdown: watch::Receiver<bool>,
}

async fn accept_loop<S>(
    listener: TcpListener,
    ctx: Arc<ListenerCtx<S>>,
    mut shutdown: watch::Receiver<bool>,
    graceful: Arc<GracefulShutdown>,
) where
    S: Service<Req, Response = Resp, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send,
{
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, remote)) => {
                    let permit = match &ctx.conn_limit {
                        None => None,
                        Some(sem) => match sem.clone().try_acquire_owned() {
                            Ok(p) => Some(p),
                            Err(_) => {
                                // Over the limit: close before any TLS or HTTP work.
                                ctx.stats.connections_refused.inc();
                                drop(tcp);
                                continue;
                            }
                        },
                    };
                    ctx.stats.connections.inc();
                    let ctx = ctx.clone();
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        serve_conn(tcp, remote, ctx, watcher).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    crate::diag::warn_limited("accept_error", &e.to_string());
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
}

async fn serve_conn<S>(
    tcp: TcpStream,
    remote: SocketAddr,
    ctx: Arc<ListenerCtx<S>>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: Service<Req, Response = Resp, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send,
{
    let _ = tcp.set_nodelay(true);
    let mut peer = None;
    let mut h2_alpn = false;
    let stream = match (&ctx.tls, &ctx.lean) {
        (None, Some(lean)) => {
            // `watcher` stays alive meanwhile, so a drain waits for this connection too.
            let mut tcp = tcp;
            let mut shutdown = ctx.shutdown.clone();
            match lean.serve(&mut tcp, &mut shutdown).await {
                Served::Done => return,
                Served::HandOff(prefix) => ClientStream::Rewound(Box::new(Rewound {
                    prefix,
                    pos: 0,
                    tcp,
                })),
            }
        }
        (None, None) => ClientStream::Plain(tcp),
        (Some(t), _) => {
            let is_tls = match t.mode {
                MtlsMode::Strict => true,
                MtlsMode::Permissive => {
                    let mut b = [0u8; 1];
                    match tokio::time::timeout(ctx.handshake_timeout, tcp.peek(&mut b)).await {
                        Ok(Ok(1)) => b[0] == 0x16,
                        _ => return,
                    }
                }
            };
            if is_tls {
                match tokio::time::timeout(ctx.handshake_timeout, t.acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let (_, session) = tls.get_ref();
                        peer = session
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(spiffe_id_of)
                            .map(|id| Arc::<str>::from(id.to_string()));
                        h2_alpn = session.alpn_protocol() == Some(b"h2");
                        ClientStream::Tls(Box::new(tls))
                    }
                    Ok(Err(e)) => {
                        ctx.stats.tls_handshake_failures.inc();
                        crate::diag::warn_limited(
                            "tls_handshake_failed",
                            &format!("{remote}: {e}"),
                        );
                        return;
                    }
                    Err(_) => {
                        ctx.stats.tls_handshake_failures.inc();
                        crate::diag::warn_limited("tls_handshake_timeout", &remote.to_string());
                        return;
                    }
                }
            } else {
                ClientStream::Plain(tcp)
            }
        }
    };
    let conflict = Arc::new(AtomicBool::new(false));
    let mut scanner = Scanner::new(ctx.max_header_bytes, conflict.clone());
    if h2_alpn {
        scanner.disable();
    }
    let conn = Arc::new(ConnInfo {
        remote,
        local_port: ctx.local_port,
        listener: ctx.kind,
        tls: matches!(stream, ClientStream::Tls(_)),
        peer,
        framing_conflict: conflict,
    });
    let svc = Front {
        inner: ctx.chain.clone(),
        conn,
        limits: ctx.limits.clone(),
        stats: ctx.stats.clone(),
    };
    let io = TokioIo::new(Scanned::new(stream, scanner));
    let conn = ctx
        .builder
        .serve_connection(io, TowerToHyperService::new(svc))
        .into_owned();
    let _ = watcher.watch(conn).await;
}

/// The policy chain's layers for one listener.
#[derive(Default)]
struct ChainLayers {
    sandbox: Option<SandboxLayer>,
    mtls: Option<CheckLayer<Mtls>>,
    ports: Option<CheckLayer<Ports>>,
    jwt: Option<CheckLayer<Jwt>>,
    authz: Option<CheckLayer<Authz>>,
    rate_limit: Option<RateLimitLayer>,
    tracing: Option<CheckLayer<Tracing>>,
    access_log: Option<AccessLogLayer>,
    retry: Option<RetryLayer>,
    circuit: Option<CircuitLayer>,
}

/// Assemble the chain in the order of the paper's Table 1 as the issue lists it.
fn build_chain(
    l: ChainLayers,
    forward: Forward,
) -> impl Service<Req, Response = Resp, Error = Infallible, Future: Send> + Clone + Send + Sync + 'static
{
    ServiceBuilder::new()
        .option_layer(l.sandbox)
        .option_layer(l.mtls)
        .option_layer(l.ports)
        .option_layer(l.jwt)
        .option_layer(l.authz)
        .option_layer(l.rate_limit)
        .option_layer(l.tracing)
        .option_layer(l.access_log)
        .option_layer(l.retry)
        .option_layer(l.circuit)
        .service(forward)
}

/// A running sidecar.
#[derive(Debug)]
pub struct Sidecar {
    /// Bound inbound address.
    pub inbound: SocketAddr,
    /// Bound outbound address.
    pub outbound: Option<SocketAddr>,
    /// Bound admin address.
    pub admin: Option<SocketAddr>,
    stats: Arc<Stats>,
    ready: Arc<AtomicBool>,
    shutdown: watch::Sender<bool>,
    graceful: Arc<GracefulShutdown>,
    drain_timeout: Duration,
    tasks: Vec<(bool, tokio::task::JoinHandle<()>)>,
    log_writer: Option<Writer>,
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, StartError> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(|source| StartError::Bind { what, addr, source })?;
    socket
        .set_reuseaddr(true)
        .map_err(|source| StartError::Bind { what, addr, source })?;
    socket
        .bind(addr)
        .map_err(|source| StartError::Bind { what, addr, source })?;
    socket
        .listen(1024)
        .map_err(|source| StartError::Bind { what, addr, source })
}

fn local_port(l: &TcpListener) -> u16 {
    l.local_addr().map(|a| a.port()).unwrap_or(0)
}

impl Sidecar {
    /// Validate the config, load or issue certificates, bind the listeners and start serving.
    /// Must be called inside a tokio runtime.
    pub async fn start(config: Config) -> Result<Sidecar, StartError> {
        config.validate()?;
        let stats = Arc::new(Stats::default());
        let p = &config.policies;

        let materials = match &config.identity {
            None => None,
            Some(id) => {
                let own = id.spiffe_id();
                let m = match &id.certs {
                    crate::config::CertSource::Generate { export_dir } => {
                        let pki = Pki::generate(&id.trust_domain)?;
                        if let Some(dir) = export_dir {
                            pki.export(dir)?;
                        }
                        pki.materials(&own)?
                    }
                    crate::config::CertSource::Files { ca, cert, key } => {
                        TlsMaterials::from_files(ca, cert, key)?
                    }
                };
                if m.spiffe_id.to_string() != own {
                    return Err(StartError::IdentityMismatch {
                        found: m.spiffe_id.to_string(),
                        expected: own,
                    });
                }
                Some(m)
            }
        };

        let protocols = p
            .ports
            .as_ref()
            .map(|x| x.protocols.clone())
            .unwrap_or_else(|| vec![Protocol::Http1, Protocol::Http2]);
        let inbound_listener = bind(config.inbound.listen, "inbound").await?;
        let inbound_port = local_port(&inbound_listener);

        let tls = match (&p.mtls, &materials) {
            (Some(m), Some(mat)) => {
                let mut alpn = Vec::new();
                if protocols.contains(&Protocol::Http2) {
                    alpn.push(b"h2".to_vec());
                }
                if protocols.contains(&Protocol::Http1) {
                    alpn.push(b"http/1.1".to_vec());
                }
                Some(TlsTermination {
                    acceptor: TlsAcceptor::from(mat.server_config(&m.allowed_peers, alpn)?),
                    mode: m.mode,
                })
            }
            _ => None,
        };

        let log_writer = match &p.access_log {
            Some(a) => Some(Writer::start(a).map_err(StartError::AccessLog)?),
            None => None,
        };
        let limits = Arc::new(FrontLimits {
            max_headers: config.limits.max_headers,
            max_header_bytes: config.limits.max_header_bytes,
            max_body_bytes: config.limits.max_body_bytes,
            request_timeout: Duration::from_millis(config.limits.request_timeout_ms),
        });

        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(config.limits.header_read_timeout_ms))
            .max_headers(config.limits.max_headers)
            .max_buf_size(config.limits.max_header_bytes.max(8192) + 1024);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(config.limits.max_header_bytes as u32)
            .max_concurrent_streams(256);
        let builder = match (
            protocols.contains(&Protocol::Http1),
            protocols.contains(&Protocol::Http2),
        ) {
            (true, false) => builder.http1_only(),
            (false, true) => builder.http2_only(),
            _ => builder,
        };
        let builder = Arc::new(builder);

        let forward_opts = |endpoints: &[SocketAddr], tls_cfg, http2| ForwardOptions {
            endpoints: endpoints.to_vec(),
            connect_timeout: Duration::from_millis(config.upstream.connect_timeout_ms),
            pool_idle_timeout: Duration::from_millis(config.upstream.pool_idle_timeout_ms),
            pool_max_idle_per_endpoint: config.upstream.pool_max_idle_per_endpoint,
            max_connections: p.circuit_breaker.as_ref().map(|c| c.max_connections),
            tls: tls_cfg,
            http2,
        };

        let lean_opts = |endpoints: &[SocketAddr]| LeanOptions {
            endpoints: endpoints.to_vec(),
            connect_timeout: Duration::from_millis(config.upstream.connect_timeout_ms),
            pool_idle_timeout: Duration::from_millis(config.upstream.pool_idle_timeout_ms),
            pool_max_idle_per_endpoint: config.upstream.pool_max_idle_per_endpoint,
            max_headers: config.limits.max_headers,
            max_header_bytes: config.limits.max_header_bytes,
            max_body_bytes: config.limits.max_body_bytes,
            header_read_timeout: Duration::from_millis(config.limits.header_read_timeout_ms),
            request_timeout: Duration::from_millis(config.limits.request_timeout_ms),
        };

        let own_id = config
            .identity
            .as_ref()
            .map(|i| i.spiffe_id())
            .unwrap_or_default();
        let allowed_ports = p.ports.as_ref().map(|x| {
            let mut ports = x.inbound_ports.clone();
            if x.allow_bound_port {
                ports.push(inbound_port);
            }
            (ports, x.protocols.clone())
        });
        let jwt = match &p.jwt {
            Some(j) => Some(Jwt::new(j)?),
            None => None,
        };
        let rate_limit = p
            .rate_limit
            .as_ref()
            .map(|r| RateLimitLayer::new(&config.function, r, stats.clone()));
        let tracing = p
            .tracing
            .as_ref()
            .map(|t| Arc::new(Tracing::new(t.sampling)));
        let host_side = ChainLayers {
            access_log: log_writer
                .as_ref()
                .map(|w| AccessLogLayer::new(w, &config.function, stats.clone())),
            retry: p.retry.as_ref().map(|r| RetryLayer::new(r, stats.clone())),
            circuit: p
                .circuit_breaker
                .as_ref()
                .map(|c| CircuitLayer::new(c, &config.inbound.upstream, stats.clone())),
            ..ChainLayers::default()
        };
        // Per-request isolation sandboxes the header-only policies; with none configured
        // there is nothing to run and the chain is the bare proxy in both modes.
        let any_header_policy = p.mtls.is_some()
            || p.ports.is_some()
            || p.jwt.is_some()
            || p.authz.is_some()
            || p.rate_limit.is_some()
            || p.tracing.is_some();
        let isolation = match config.runtime.isolation {
            Isolation::PerRequest if !any_header_policy => Isolation::Shared,
            other => other,
        };
        let inbound_layers = match isolation {
            Isolation::Shared => ChainLayers {
                mtls: p
                    .mtls
                    .as_ref()
                    .map(|m| CheckLayer::new(Mtls::new(m.mode, own_id.clone()))),
                ports: allowed_ports
                    .map(|(ports, protocols)| CheckLayer::new(Ports::new(ports, protocols))),
                jwt: jwt.map(CheckLayer::new),
                authz: p.authz.as_ref().map(|a| CheckLayer::new(Authz::new(a))),
                rate_limit,
                tracing: tracing.map(CheckLayer::from_arc),
                ..host_side
            },
            Isolation::PerRequest => ChainLayers {
                sandbox: Some(SandboxLayer::new(
                    p,
                    ChainParts {
                        mtls: p.mtls.as_ref().map(|m| (m.mode, own_id.clone())),
                        ports: allowed_ports,
                        jwt,
                        rate_limit,
                        tracing,
                    },
                    (&config.sandbox).into(),
                    stats.clone(),
                )?),
                ..host_side
            },
        };
        let inbound_chain = build_chain(
            inbound_layers,
            Forward::new(forward_opts(
                &config.inbound.upstream,
                None,
                config.upstream.protocol == Protocol::Http2,
            )),
        );

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let graceful = Arc::new(GracefulShutdown::new());
        let handshake_timeout = Duration::from_millis(config.limits.header_read_timeout_ms);
        let mut tasks = Vec::new();
        let inbound_addr = inbound_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                what: "inbound",
                addr: config.inbound.listen,
                source,
            })?;
        let ctx = Arc::new(ListenerCtx {
            kind: ListenerKind::Inbound,
            local_port: inbound_port,
            tls,
            builder: builder.clone(),
            chain: inbound_chain,
            limits: limits.clone(),
            stats: stats.clone(),
            handshake_timeout,
            max_header_bytes: config.limits.max_header_bytes,
            conn_limit: config
                .inbound
                .max_connections
                .map(|n| Arc::new(Semaphore::new(n))),
            lean: (config.runtime.lean_http1
                && p.is_empty()
                && config.upstream.protocol == Protocol::Http1)
                .then(|| Lean::new(lean_opts(&config.inbound.upstream), stats.clone())),
            shutdown: shutdown_rx.clone(),
        });
        tasks.push((
            false,
            tokio::spawn(accept_loop(
                inbound_listener,
                ctx,
                shutdown_rx.clone(),
                graceful.clone(),
            )),
        ));

        let mut outbound_addr = None;
        if let Some(out) = &config.outbound {
            let listener = bind(out.listen, "outbound").await?;
            outbound_addr = Some(listener.local_addr().map_err(|source| StartError::Bind {
                what: "outbound",
                addr: out.listen,
                source,
            })?);
            let tls_cfg = match (&materials, out.tls) {
                (Some(m), true) => Some(m.client_config(out.peer_identity.as_deref())?),
                _ => None,
            };
            // Outbound traffic gets the client-side policies: tracing, access log, retries
            // and circuit breaking (authn/authz/rate limits are the callee's inbound job).
            let tracing = p
                .tracing
                .as_ref()
                .map(|t| Arc::new(Tracing::new(t.sampling)));
            let (tracing, sandbox) = match (config.runtime.isolation, tracing) {
                (Isolation::PerRequest, Some(t)) => (
                    None,
                    Some(SandboxLayer::new(
                        &crate::config::Policies::default(),
                        ChainParts {
                            tracing: Some(t),
                            ..ChainParts::default()
                        },
                        (&config.sandbox).into(),
                        stats.clone(),
                    )?),
                ),
                (_, t) => (t.map(CheckLayer::from_arc), None),
            };
            // The outbound chain is empty without these (and without TLS origination).
            let lean_outbound = config.runtime.lean_http1
                && tls_cfg.is_none()
                && p.tracing.is_none()
                && p.access_log.is_none()
                && p.retry.is_none()
                && p.circuit_breaker.is_none();
            let layers = ChainLayers {
                sandbox,
                tracing,
                access_log: log_writer
                    .as_ref()
                    .map(|w| AccessLogLayer::new(w, &config.function, stats.clone())),
                retry: p.retry.as_ref().map(|r| RetryLayer::new(r, stats.clone())),
                circuit: p
                    .circuit_breaker
                    .as_ref()
                    .map(|c| CircuitLayer::new(c, &out.upstream, stats.clone())),
                ..ChainLayers::default()
            };
            let chain = build_chain(
                layers,
                Forward::new(forward_opts(&out.upstream, tls_cfg, false)),
            );
            let ctx = Arc::new(ListenerCtx {
                kind: ListenerKind::Outbound,
                local_port: local_port(&listener),
                tls: None,
                builder: builder.clone(),
                chain,
                limits: limits.clone(),
                stats: stats.clone(),
                handshake_timeout,
                max_header_bytes: config.limits.max_header_bytes,
                conn_limit: out.max_connections.map(|n| Arc::new(Semaphore::new(n))),
                lean: lean_outbound.then(|| Lean::new(lean_opts(&out.upstream), stats.clone())),
                shutdown: shutdown_rx.clone(),
            });
            tasks.push((
                false,
                tokio::spawn(accept_loop(
                    listener,
                    ctx,
                    shutdown_rx.clone(),
                    graceful.clone(),
                )),
            ));
        }

        let ready = Arc::new(AtomicBool::new(true));
        let mut admin_addr = None;
        if let Some(admin) = &config.admin {
            let listener = bind(admin.listen, "admin").await?;
            admin_addr = Some(listener.local_addr().map_err(|source| StartError::Bind {
                what: "admin",
                addr: admin.listen,
                source,
            })?);
            tasks.push((
                true,
                tokio::spawn(admin_loop(
                    listener,
                    ready.clone(),
                    stats.clone(),
                    shutdown_rx.clone(),
                )),
            ));
        }

        Ok(Sidecar {
            inbound: inbound_addr,
            outbound: outbound_addr,
            admin: admin_addr,
            stats,
            ready,
            shutdown: shutdown_tx,
            graceful,
            drain_timeout: Duration::from_millis(config.runtime.drain_timeout_ms),
            tasks,
            log_writer,
        })
    }

    /// Counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Graceful drain: readiness turns 503, listeners stop accepting, in-flight requests
    /// finish (keep-alive connections are told to close) for up to `drain_timeout_ms`.
    /// Returns `true` when every connection finished in time.
    pub async fn shutdown(self) -> bool {
        self.ready.store(false, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        // Accept loops exit at once and drop their handles on the connection registry.
        let (accept, admin): (Vec<_>, Vec<_>) =
            self.tasks.into_iter().partition(|(is_admin, _)| !*is_admin);
        for (_, t) in accept {
            let _ = tokio::time::timeout_at(deadline, t).await;
        }
        let drained = match Arc::try_unwrap(self.graceful) {
            Ok(g) => tokio::time::timeout_at(deadline, g.shutdown())
                .await
                .is_ok(),
            Err(_) => false,
        };
        for (_, t) in admin {
            t.abort();
        }
        if let Some(w) = self.log_writer {
            // Joins a thread that sleeps at most one flush interval.
            let _ = tokio::task::spawn_blocking(move || w.finish()).await;
        }
        drained
    }
}

async fn admin_loop(
    listener: TcpListener,
    ready: Arc<AtomicBool>,
    stats: Arc<Stats>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => { tokio::time::sleep(Duration::from_millis(10)).await; continue; }
            },
            // Keep answering /ready (503) while draining, until the process exits.
            _ = shutdown.changed(), if !*shutdown.borrow() => continue,
        };
        let ready = ready.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let ready = ready.load(Ordering::Relaxed);
                let stats = stats.clone();
                async move {
                    let (status, body) = match req.uri().path() {
                        "/ready" if ready => (StatusCode::OK, "ready\n".to_owned()),
                        "/ready" => (StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_owned()),
                        "/stats" => (StatusCode::OK, format!("{}\n", stats.to_json())),
                        _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
                    };
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    *r.status_mut() = status;
                    Ok::<_, Infallible>(r)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}
