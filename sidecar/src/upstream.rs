//! The upstream side: a pooled HTTP/1.1 client (hyper-util) over a connector that enforces
//! the connect timeout, the circuit breaker's connection limit, and (outbound) originates mTLS.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, Scheme, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsConnector;

use crate::http::{BoxError, Req, Resp, UpstreamOutcome, local_reply, strip_hop_by_hop};

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
            let permit = match &this.limit {
                Some(sem) => Some(
                    sem.clone()
                        .try_acquire_owned()
                        .map_err(|_| ConnectError::Overflow)?,
                ),
                None => None,
            };
            let authority = uri.authority().ok_or(ConnectError::BadAddress)?;
            let addr: SocketAddr = authority
                .as_str()
                .parse()
                .map_err(|_| ConnectError::BadAddress)?;
            let tcp = tokio::time::timeout(this.timeout, TcpStream::connect(addr))
                .await
                .map_err(|_| ConnectError::Timeout)??;
            tcp.set_nodelay(true)?;
            let stream = match &this.tls {
                None => UpStream::Plain(tcp),
                Some((connector, name)) => {
                    let tls =
                        tokio::time::timeout(this.timeout, connector.connect(name.clone(), tcp))
                            .await
                            .map_err(|_| ConnectError::Timeout)??;
                    UpStream::Tls(Box::new(tls))
                }
            };
            Ok(UpConn {
                io: TokioIo::new(stream),
                _permit: permit,
            })
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

/// The innermost service: sends the request to an endpoint and streams the response back.
#[derive(Clone)]
pub struct Forward {
    client: Client<Connector, crate::http::ReqBody>,
    /// The version requests are sent with.
    version: http::Version,
    /// Endpoints with their pre-built URI authority.
    endpoints: Arc<[(SocketAddr, Authority)]>,
    next: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forward")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl Forward {
    /// Build the pooled client.
    pub fn new(opts: ForwardOptions) -> Forward {
        let connector = Connector {
            timeout: opts.connect_timeout,
            limit: opts.max_connections.map(|n| Arc::new(Semaphore::new(n))),
            tls: opts.tls.map(|cfg| (TlsConnector::from(cfg), peer_name())),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(opts.pool_idle_timeout)
            .pool_max_idle_per_host(opts.pool_max_idle_per_endpoint)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(opts.http2)
            .build(connector);
        Forward {
            client,
            version: if opts.http2 {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            },
            endpoints: opts
                .endpoints
                .iter()
                .filter_map(|e| Authority::try_from(e.to_string()).ok().map(|a| (*e, a)))
                .collect(),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn pick(&self, requested: Option<SocketAddr>) -> Option<(SocketAddr, Authority)> {
        if let Some(addr) = requested {
            return self.endpoints.iter().find(|(a, _)| *a == addr).cloned();
        }
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        Some(self.endpoints[i % self.endpoints.len()].clone())
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
        let endpoint = self.pick(req.extensions().get::<Endpoint>().map(|e| e.0));
        let client = self.client.clone();
        let version = self.version;
        Box::pin(async move {
            let Some(endpoint) = endpoint else {
                return Ok(local_reply(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "upstream",
                    "no upstream endpoint",
                ));
            };
            if let Err(resp) = rewrite_for_upstream(&mut req, &endpoint, version) {
                return Ok(resp);
            }
            match client.request(req).await {
                Ok(resp) => {
                    let (mut parts, body) = resp.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    parts.extensions.insert(UpstreamOutcome::Responded);
                    let body = body.map_err(|e| Box::new(e) as BoxError).boxed();
                    Ok(Resp::from_parts(parts, body))
                }
                Err(e) => {
                    let outcome = if e.is_connect() {
                        UpstreamOutcome::ConnectFailed
                    } else {
                        UpstreamOutcome::Reset
                    };
                    let overflow = std::error::Error::source(&e)
                        .and_then(|s| s.downcast_ref::<ConnectError>())
                        .is_some_and(|c| matches!(c, ConnectError::Overflow));
                    let mut resp = if overflow {
                        local_reply(
                            http::StatusCode::SERVICE_UNAVAILABLE,
                            "circuit_breaker",
                            "upstream connection limit reached",
                        )
                    } else if outcome == UpstreamOutcome::ConnectFailed {
                        local_reply(
                            http::StatusCode::SERVICE_UNAVAILABLE,
                            "upstream",
                            "upstream connect error",
                        )
                    } else {
                        local_reply(
                            http::StatusCode::BAD_GATEWAY,
                            "upstream",
                            "upstream reset before response headers",
                        )
                    };
                    resp.extensions_mut().insert(outcome);
                    if overflow {
                        resp.extensions_mut()
                            .insert(crate::policy::circuit::Overflow);
                    }
                    Ok(resp)
                }
            }
        })
    }
}

/// Point the request at `endpoint`: absolute URI for the client, Host kept (or derived from
/// an HTTP/2 `:authority`), hop-by-hop headers removed, `version` towards the upstream.
fn rewrite_for_upstream(
    req: &mut Req,
    endpoint: &(SocketAddr, Authority),
    version: http::Version,
) -> Result<(), Resp> {
    let bad = || {
        local_reply(
            http::StatusCode::BAD_REQUEST,
            "front",
            "request URI cannot be forwarded",
        )
    };
    if !req.headers().contains_key(http::header::HOST)
        && let Some(a) = req.uri().authority()
        && let Ok(v) = http::HeaderValue::from_str(a.as_str())
    {
        req.headers_mut().insert(http::header::HOST, v);
    }
    let path_and_query = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let authority = endpoint.1.clone();
    let uri = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority)
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| bad())?;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    strip_hop_by_hop(req.headers_mut());
    Ok(())
}
