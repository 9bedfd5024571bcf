//! Test fixtures: a scriptable upstream, in-process sidecars, plain/TLS/HTTP2 clients and
//! raw-socket helpers. Everything binds 127.0.0.1 with ephemeral ports.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshsim_sidecar::Sidecar;
use meshsim_sidecar::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Upstream behaviour, by path:
/// - `/fail` answers 503 while `fail_next` > 0 (decremented per hit), then 200;
/// - `/always503` answers 503;
/// - `/reset` sends headers and part of the body, then resets the connection;
/// - anything else answers 200 with the request headers as JSON (`{"name": "value"}`).
#[derive(Debug, Default)]
pub struct UpstreamState {
    pub hits: AtomicUsize,
    /// Connections accepted.
    pub connections: AtomicUsize,
    pub fail_next: AtomicU32,
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub state: Arc<UpstreamState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Bind an upstream on loopback and serve every accepted connection with `serve` (counted
/// in `connections`).
pub async fn listen_upstream<F, Fut>(serve: F) -> Upstream
where
    F: Fn(TcpStream, Arc<UpstreamState>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    let state = Arc::new(UpstreamState::default());
    let st = state.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            st.connections.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(serve(tcp, st.clone()));
        }
    });
    Upstream { addr, state, task }
}

pub async fn upstream() -> Upstream {
    listen_upstream(|mut tcp, st| async move {
        // Peek at the request line to implement the raw /reset behaviour.
        let mut peek = [0u8; 16];
        let n = tcp.peek(&mut peek).await.unwrap_or(0);
        if peek[..n].starts_with(b"GET /reset") {
            st.hits.fetch_add(1, Ordering::Relaxed);
            let mut buf = [0u8; 4096];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
                .await;
            let _ = tcp.set_zero_linger();
            return;
        }
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let st = st.clone();
            async move { Ok::<_, Infallible>(answer(&st, req).await) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tcp), svc)
            .await;
    })
    .await
}

/// The same upstream speaking only HTTP/2 with prior knowledge (h2c): an HTTP/1.1 request
/// fails. Its answers carry `x-upstream-version`.
pub async fn upstream_h2() -> Upstream {
    listen_upstream(|tcp, st| async move {
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let st = st.clone();
            async move {
                let version = format!("{:?}", req.version());
                let mut r = answer(&st, req).await;
                if let Ok(v) = http::HeaderValue::from_str(&version) {
                    r.headers_mut().insert("x-upstream-version", v);
                }
                Ok::<_, Infallible>(r)
            }
        });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(tcp), svc)
            .await;
    })
    .await
}

async fn answer(st: &UpstreamState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    st.hits.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_owned();
    let status = match path.as_str() {
        "/always503" => StatusCode::SERVICE_UNAVAILABLE,
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(400)).await;
            StatusCode::OK
        }
        "/fail" => {
            let failing = st
                .fail_next
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            }
        }
        _ => StatusCode::OK,
    };
    let mut headers = serde_json::Map::new();
    for (k, v) in req.headers() {
        headers.insert(
            k.to_string(),
            String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
        );
    }
    let body_len = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    headers.insert("x-test-body-len".into(), body_len.to_string().into());
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::Value::Object(headers).to_string(),
    )));
    *r.status_mut() = status;
    r
}

/// A reply as seen by a test client.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The upstream's echo of the request headers.
    pub fn echoed(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
    pub fn denied_by(&self) -> Option<&str> {
        self.headers
            .get("x-meshsim-denied-by")
            .and_then(|v| v.to_str().ok())
    }
}

pub fn get(path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(path)
        .header("host", "fn.test")
        .body(Full::new(Bytes::new()))
        .expect("request")
}

async fn exchange<IO>(io: IO, req: Request<Full<Bytes>>) -> Result<Reply, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

/// One HTTP/1.1 request on a fresh plaintext connection.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Result<Reply, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(10), exchange(tcp, req))
        .await
        .map_err(|_| "timeout".to_owned())?
}

/// One HTTP/1.1 request over TLS with the given client config.
pub async fn send_tls(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    req: Request<Full<Bytes>>,
) -> Result<Reply, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("sidecar.test").expect("name");
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::time::timeout(Duration::from_secs(10), exchange(tls, req))
        .await
        .map_err(|_| "timeout".to_owned())?
}

/// One HTTP/2 (prior knowledge) request.
pub async fn send_h2(addr: SocketAddr, req: Request<Full<Bytes>>) -> Result<Reply, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

/// Write raw bytes, read until the peer closes or `wait` passes; returns what was read.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let _ = tcp.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, tcp.read_to_end(&mut out)).await;
    out
}

pub fn status_of(raw: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(raw.get(..12)?).ok()?;
    s.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// A config with the given extra TOML appended after `[inbound]`.
pub fn config(upstream: SocketAddr, extra: &str) -> Config {
    let text = format!(
        "version = 1\nfunction = \"fn-test\"\n[inbound]\nlisten = \"127.0.0.1:0\"\nupstream = [\"{upstream}\"]\n{extra}"
    );
    Config::from_toml_str(&text).unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
}

pub async fn sidecar(upstream: SocketAddr, extra: &str) -> Sidecar {
    Sidecar::start(config(upstream, extra))
        .await
        .expect("sidecar starts")
}

pub fn redis_url() -> String {
    std::env::var("MESHSIM_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

/// A TCP port with nothing listening (bound then released).
pub async fn dead_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}
