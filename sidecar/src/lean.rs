//! The lean HTTP/1.1 path: what the sidecar runs on a plain-text listener with no policy.
//!
//! Without a policy there is nothing that needs a request object: the proxy only has to frame
//! messages, enforce the front's limits and move bytes. hyper does that through two general
//! codecs, a dispatcher task per upstream connection and a channel between them (about 38 k
//! user-space instructions per request against nginx's 24 k; `ARCHITECTURE.md`,
//! "Instruction counts"). This path does what nginx does: one task per client connection
//! parses each request head with `httparse`, writes it (hop-by-hop and internal headers
//! removed) to a pooled upstream connection it owns for the exchange, parses the response
//! head the same way and streams the bodies by their framing.
//!
//! It only serves what it fully understands: keep-alive HTTP/1.1 requests with an
//! origin-form target and either no body or a `Content-Length` one. Anything else (HTTP/2's
//! preface, HTTP/1.0, `Transfer-Encoding`, `Expect`, `Upgrade` and the other hop-by-hop
//! headers, an unusual target, input `httparse` rejects) is handed to hyper on the same
//! connection with the bytes read so far ([`Served::HandOff`]), so hyper's checks (and the
//! framing scanner's) decide those, as they do for every request when `runtime.lean_http1`
//! is off. The front's own checks (header count and bytes, CONNECT/TRACE, declared body size)
//! answer here exactly as the front layer answers them.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::stats::Stats;

/// Headers `httparse` may return per message; more goes to hyper (requests) or is a bad
/// gateway (responses).
const MAX_PARSED_HEADERS: usize = 128;
/// Headers accepted in a response (hyper's client accepts 100).
const MAX_RESPONSE_HEADERS: usize = 100;
/// Largest response head accepted from the upstream.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Settings of the lean path (from `[limits]` and `[upstream]`).
#[derive(Debug, Clone)]
pub struct LeanOptions {
    /// Upstream endpoints, round robin.
    pub endpoints: Vec<SocketAddr>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Idle connections older than this are not reused.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per endpoint.
    pub pool_max_idle_per_endpoint: usize,
    /// `limits.max_headers`.
    pub max_headers: usize,
    /// `limits.max_header_bytes`.
    pub max_header_bytes: usize,
    /// `limits.max_body_bytes`.
    pub max_body_bytes: usize,
    /// `limits.header_read_timeout_ms`: from a head's first byte to its end.
    pub header_read_timeout: Duration,
    /// `limits.request_timeout_ms`: from the request head to the response head.
    pub request_timeout: Duration,
}

#[derive(Debug)]
struct Endpoint {
    addr: SocketAddr,
    /// `Host` value for requests that carry none.
    host: Vec<u8>,
    idle: Mutex<Vec<(TcpStream, Instant)>>,
}

/// The lean path of one listener.
#[derive(Debug)]
pub struct Lean {
    opts: LeanOptions,
    endpoints: Vec<Endpoint>,
    next: AtomicUsize,
    stats: Arc<Stats>,
}

/// How a connection left the lean path.
#[derive(Debug)]
pub enum Served {
    /// Closed (by either side, after an error, or on drain).
    Done,
    /// A request the lean path does not serve begins at the start of these bytes (already
    /// read from the client): hyper serves the rest of the connection.
    HandOff(Vec<u8>),
}

/// A request head the lean path serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReqHead {
    /// Length of the head in the client buffer.
    len: usize,
    /// `Content-Length` (0 when absent).
    body: u64,
    /// The client asked to close (`Connection: close`).
    close: bool,
    /// A `HEAD` request (the response has no body whatever it declares).
    head_method: bool,
    /// The client sent a `Host` header.
    has_host: bool,
    /// The method is safe (RFC 9110 §9.2.1: GET, HEAD, OPTIONS), so it may be sent again
    /// when a pooled connection gives no answer at all.
    safe: bool,
}

/// What the request parser decided.
#[derive(Debug, PartialEq, Eq)]
enum Parse {
    /// The head is not complete yet.
    Partial,
    /// Not for the lean path: hyper serves it.
    HandOff,
    /// The front refuses it: status, message, and the head's length when the connection
    /// stays open (`None`: close it).
    Refuse(u16, &'static str, Option<usize>),
    /// Serve it; the upstream head (without `Host` if missing and without the final blank
    /// line) is in the output buffer.
    Ready(ReqHead),
}

/// How the upstream frames a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A response head read from the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RespHead {
    len: usize,
    framing: Framing,
    /// The upstream connection can carry another request afterwards.
    reusable: bool,
}

/// Why an exchange got no usable response head.
#[derive(Debug, PartialEq, Eq)]
enum Fail {
    Connect,
    /// Nothing came back (a reused connection the upstream had closed, or a reset).
    NoResponse,
    /// A reset or EOF in the middle of the head, or a head `httparse` rejects.
    BadResponse,
    /// The client went away while its body was being forwarded.
    Client,
}

fn eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.eq_ignore_ascii_case(b)
}

fn starts_with_ci(a: &str, prefix: &str) -> bool {
    a.len() >= prefix.len() && a.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// The hop-by-hop headers a proxy never forwards besides `Connection` and
/// `Transfer-Encoding` (`crate::http::strip_hop_by_hop`'s list), which each side treats itself.
fn hop_by_hop(name: &str) -> bool {
    [
        "te",
        "trailer",
        "upgrade",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
    ]
    .iter()
    .any(|h| eq(name, h))
}

/// Bytes of an origin-form target the lean path passes on unchanged (RFC 3986 `pchar`,
/// `/`, `?`); anything else is left to hyper's URI parser.
fn target_byte_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
                | b'?'
        )
}

/// `Content-Length` digits (at most 19, so no overflow).
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Parse a request head at the start of `buf` and write the upstream's version into `out`.
fn parse_request(buf: &[u8], opts: &LeanOptions, out: &mut Vec<u8>) -> Parse {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_PARSED_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parse::Partial,
        Err(httparse::Error::TooManyHeaders) if opts.max_headers < MAX_PARSED_HEADERS => {
            return Parse::Refuse(431, "request header fields too large", None);
        }
        Err(_) => return Parse::HandOff,
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return Parse::HandOff;
    };
    if !path.starts_with('/') || !path.bytes().all(target_byte_ok) {
        return Parse::HandOff;
    }
    // The front layer's limits, measured as it measures them.
    let bytes = req
        .headers
        .iter()
        .fold(path.len(), |n, h| n + h.name.len() + h.value.len() + 4);
    if req.headers.len() > opts.max_headers || bytes > opts.max_header_bytes {
        return Parse::Refuse(431, "request header fields too large", None);
    }
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut head = ReqHead {
        len,
        body: 0,
        close: false,
        head_method: method == "HEAD",
        has_host: false,
        safe: matches!(method, "GET" | "HEAD" | "OPTIONS"),
    };
    let mut length = None;
    for h in req.headers.iter() {
        let name = h.name;
        // Only names starting with these letters need a look (one byte test for the rest).
        if !matches!(
            name.as_bytes()[0] | 0x20,
            b'c' | b't' | b'k' | b'p' | b'u' | b'e' | b'h' | b'x'
        ) {
            push_header(out, name, h.value);
            continue;
        }
        if eq(name, "content-length") {
            if length.is_some() {
                return Parse::HandOff;
            }
            match parse_length(h.value) {
                Some(n) => length = Some(n),
                None => return Parse::Refuse(400, "invalid content-length", None),
            }
            push_header(out, name, h.value);
        } else if eq(name, "connection") {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    head.close = true;
                } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"keep-alive") {
                    // Names more hop-by-hop headers: hyper's path strips them.
                    return Parse::HandOff;
                }
            }
        } else if eq(name, "transfer-encoding") || eq(name, "expect") || hop_by_hop(name) {
            return Parse::HandOff;
        } else if eq(name, crate::policy::mtls::XFCC.as_str())
            || starts_with_ci(name, "x-meshsim-")
            || starts_with_ci(name, crate::policy::jwt::CLAIM_HEADER_PREFIX)
        {
            // Identity and claims headers are only ever set by the sidecar itself.
        } else {
            head.has_host |= eq(name, "host");
            push_header(out, name, h.value);
        }
    }
    head.body = length.unwrap_or(0);
    if method == "CONNECT" || method == "TRACE" {
        // As the front layer: refused but kept open, unless a body would have to be skipped.
        return Parse::Refuse(405, "method not allowed", (head.body == 0).then_some(len));
    }
    if head.body > opts.max_body_bytes as u64 {
        return Parse::Refuse(413, "request body too large", None);
    }
    Parse::Ready(head)
}

/// Parse a response head at the start of `buf` (answering a `HEAD` request when
/// `head_method`) and write the client's version into `out`. `Ok(None)`: not complete yet.
fn parse_response(
    buf: &[u8],
    head_method: bool,
    out: &mut Vec<u8>,
) -> Result<Option<(RespHead, u16)>, Fail> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_RESPONSE_HEAD => return Ok(None),
        _ => return Err(Fail::BadResponse),
    };
    let (Some(code), Some(version)) = (resp.code, resp.version) else {
        return Err(Fail::BadResponse);
    };
    let mut reusable = version == 1;
    let (mut length, mut chunked) = (None, false);
    let mut listed: Vec<&[u8]> = Vec::new();
    for h in resp.headers.iter() {
        if eq(h.name, "connection") {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    reusable = false;
                } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"keep-alive") {
                    listed.push(token);
                }
            }
        } else if eq(h.name, "content-length") {
            match parse_length(h.value) {
                Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ => return Err(Fail::BadResponse),
            }
        } else if eq(h.name, "transfer-encoding") {
            let last = h.value.rsplit(|b| *b == b',').next().unwrap_or_default();
            if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(Fail::BadResponse);
            }
            chunked = true;
        }
    }
    let framing = if head_method || code == 204 || code == 304 || (100..200).contains(&code) {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        reusable = false;
        Framing::UntilClose
    };
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    let mut digits = [0u8; 3];
    digits[0] = b'0' + (code / 100 % 10) as u8;
    digits[1] = b'0' + (code / 10 % 10) as u8;
    digits[2] = b'0' + (code % 10) as u8;
    out.extend_from_slice(&digits);
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or_default().as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers.iter() {
        let name = h.name;
        let hop = eq(name, "connection")
            || hop_by_hop(name)
            || (chunked && eq(name, "content-length"))
            || listed
                .iter()
                .any(|l| l.eq_ignore_ascii_case(name.as_bytes()));
        if !hop {
            push_header(out, name, h.value);
        }
    }
    Ok(Some((
        RespHead {
            len,
            framing,
            reusable,
        },
        code,
    )))
}

/// Follows chunked framing over a byte stream to find where the message ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunks {
    Size { value: u64, digits: u32, ext: bool },
    Data(u64),
    DataEnd,
    Trailer { line: usize },
    Done,
}

impl Chunks {
    fn new() -> Chunks {
        Chunks::Size {
            value: 0,
            digits: 0,
            ext: false,
        }
    }

    /// Consume `data`; `Ok(Some(n))` when the message ended after its first `n` bytes.
    fn feed(&mut self, data: &[u8]) -> Result<Option<usize>, Fail> {
        let mut i = 0;
        while i < data.len() {
            match *self {
                Chunks::Done => return Ok(Some(i)),
                Chunks::Data(n) => {
                    let take = ((data.len() - i) as u64).min(n);
                    i += take as usize;
                    *self = if take == n {
                        Chunks::DataEnd
                    } else {
                        Chunks::Data(n - take)
                    };
                    continue;
                }
                _ => {}
            }
            let b = data[i];
            i += 1;
            *self = match (*self, b) {
                (Chunks::DataEnd, b'\n') => Chunks::new(),
                (Chunks::DataEnd, b'\r') => Chunks::DataEnd,
                (Chunks::Size { digits: 0, .. }, b'\n') => return Err(Fail::BadResponse),
                (Chunks::Size { value: 0, .. }, b'\n') => Chunks::Trailer { line: 0 },
                (Chunks::Size { value, .. }, b'\n') => Chunks::Data(value),
                (s @ Chunks::Size { .. }, b'\r') => s,
                (s @ Chunks::Size { ext: true, .. }, _) => s,
                (Chunks::Size { value, digits, .. }, b';' | b' ' | b'\t') => Chunks::Size {
                    value,
                    digits,
                    ext: true,
                },
                (Chunks::Size { value, digits, ext }, _) => match (b as char).to_digit(16) {
                    Some(d) if digits < 15 => Chunks::Size {
                        value: value * 16 + u64::from(d),
                        digits: digits + 1,
                        ext,
                    },
                    _ => return Err(Fail::BadResponse),
                },
                (Chunks::Trailer { line: 0 }, b'\n') => Chunks::Done,
                (Chunks::Trailer { .. }, b'\n') => Chunks::Trailer { line: 0 },
                (Chunks::Trailer { line }, b'\r') => Chunks::Trailer { line },
                (Chunks::Trailer { line }, _) => Chunks::Trailer { line: line + 1 },
                _ => return Err(Fail::BadResponse),
            };
        }
        Ok((*self == Chunks::Done).then_some(data.len()))
    }
}

/// Read more bytes from `s`, appending to `buf`.
async fn read_more<R: AsyncRead + Unpin>(s: &mut R, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.capacity() - buf.len() < 2048 {
        buf.reserve(8192);
    }
    s.read_buf(buf).await
}

/// Drop the first `n` bytes of `buf` (usually all of them: no copy then).
fn consume(buf: &mut Vec<u8>, n: usize) {
    if n >= buf.len() {
        buf.clear();
    } else {
        buf.drain(..n);
    }
}

/// A local reply in the front layer's form (`http::local_reply`).
fn local_reply(out: &mut Vec<u8>, status: u16, by: &str, msg: &str, close: bool) {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    out.clear();
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\n{}: {by}\r\ncontent-length: {}\r\n{}\r\n{msg}\n",
            crate::http::DENIED_BY,
            msg.len() + 1,
            if close { "connection: close\r\n" } else { "" },
        )
        .as_bytes(),
    );
}

impl Lean {
    /// The lean path for a listener forwarding to `opts.endpoints`. Inside a tokio runtime,
    /// a reaper task drops pooled connections that expired or were closed by the upstream
    /// (it stops with the last clone of the `Arc`).
    pub fn new(opts: LeanOptions, stats: Arc<Stats>) -> Arc<Lean> {
        let endpoints = opts
            .endpoints
            .iter()
            .map(|a| Endpoint {
                addr: *a,
                host: a.to_string().into_bytes(),
                idle: Mutex::new(Vec::new()),
            })
            .collect();
        let period = opts.pool_idle_timeout;
        let lean = Arc::new(Lean {
            opts,
            endpoints,
            next: AtomicUsize::new(0),
            stats,
        });
        crate::upstream::spawn_reaper(&lean, period, Lean::reap);
        lean
    }

    fn pick(&self) -> Option<&Endpoint> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.endpoints.get(i % self.endpoints.len())
    }

    /// A pooled connection idle for less than the idle timeout, and still quiet: a
    /// non-blocking read finds nothing on it. Anything there (the upstream's close, or bytes
    /// it sent late, which would otherwise be taken for the next response) drops it. The read
    /// costs no system call in the usual case: tokio answers it from its readiness state,
    /// cleared by the exchange's last (partial) read.
    fn take_idle(&self, ep: &Endpoint) -> Option<TcpStream> {
        let mut idle = ep.idle.lock().ok()?;
        let now = Instant::now();
        while let Some((s, since)) = idle.pop() {
            if now.duration_since(since) <= self.opts.pool_idle_timeout && quiet(&s) {
                return Some(s);
            }
        }
        None
    }

    /// Drop pooled connections that expired or that the upstream closed (the reaper's tick).
    fn reap(&self) {
        let now = Instant::now();
        for ep in &self.endpoints {
            if let Ok(mut idle) = ep.idle.lock() {
                idle.retain(|(s, since)| {
                    now.duration_since(*since) <= self.opts.pool_idle_timeout && quiet(s)
                });
            }
        }
    }

    fn put_back(&self, ep: &Endpoint, s: TcpStream) {
        if let Ok(mut idle) = ep.idle.lock()
            && idle.len() < self.opts.pool_max_idle_per_endpoint
        {
            idle.push((s, Instant::now()));
        }
    }

    async fn connect(&self, ep: &Endpoint) -> Result<TcpStream, Fail> {
        let tcp = tokio::time::timeout(self.opts.connect_timeout, TcpStream::connect(ep.addr))
            .await
            .map_err(|_| Fail::Connect)?
            .map_err(|_| Fail::Connect)?;
        tcp.set_nodelay(true).map_err(|_| Fail::Connect)?;
        Ok(tcp)
    }

    /// Serve requests on `client` until it closes, asks to close, the listener drains
    /// (`shutdown` turns true), or a request needs hyper.
    pub async fn serve(
        &self,
        client: &mut TcpStream,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Served {
        let mut buf: Vec<u8> = Vec::with_capacity(8192);
        let mut out: Vec<u8> = Vec::with_capacity(2048);
        let mut hout: Vec<u8> = Vec::with_capacity(1024);
        let mut rbuf: Vec<u8> = Vec::with_capacity(8192);
        // hyper's read-buffer bound for a head it cannot finish (`max_buf_size`).
        let head_limit = self.opts.max_header_bytes.max(8192) + 1024;
        'requests: loop {
            // As hyper's `header_read_timeout`: from the moment a head is awaited, so an idle
            // keep-alive connection is closed after it too.
            let deadline = tokio::time::Instant::now() + self.opts.header_read_timeout;
            if buf.is_empty() {
                // Idle between requests: wait for the next one, or for the drain.
                if *shutdown.borrow() {
                    return Served::Done;
                }
                tokio::select! {
                    biased;
                    r = tokio::time::timeout_at(deadline, read_more(client, &mut buf)) => match r {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => return Served::Done,
                    },
                    _ = shutdown.changed() => return Served::Done,
                }
            }
            let head = loop {
                match parse_request(&buf, &self.opts, &mut out) {
                    Parse::Ready(h) => break h,
                    Parse::HandOff => return Served::HandOff(buf),
                    Parse::Refuse(status, msg, keep) => {
                        self.stats.requests.inc();
                        self.stats.rejected_front.inc();
                        local_reply(&mut out, status, "front", msg, keep.is_none());
                        match (client.write_all(&out).await, keep) {
                            (Ok(()), Some(len)) => {
                                consume(&mut buf, len);
                                continue 'requests;
                            }
                            _ => return Served::Done,
                        }
                    }
                    Parse::Partial if buf.len() > head_limit => {
                        local_reply(
                            &mut out,
                            431,
                            "front",
                            "request header fields too large",
                            true,
                        );
                        let _ = client.write_all(&out).await;
                        return Served::Done;
                    }
                    Parse::Partial => {
                        match tokio::time::timeout_at(deadline, read_more(client, &mut buf)).await {
                            Ok(Ok(n)) if n > 0 => {}
                            // Slow or truncated head: close, as hyper does.
                            _ => return Served::Done,
                        }
                    }
                }
            };
            self.stats.requests.inc();
            match self
                .proxy(
                    head, client, &mut buf, &mut out, &mut hout, &mut rbuf, shutdown,
                )
                .await
            {
                Ok(true) => {}
                Ok(false) | Err(()) => return Served::Done,
            }
        }
    }

    /// One exchange; `Ok(true)` when the client connection stays open.
    #[allow(clippy::too_many_arguments)]
    async fn proxy(
        &self,
        head: ReqHead,
        client: &mut TcpStream,
        buf: &mut Vec<u8>,
        out: &mut Vec<u8>,
        hout: &mut Vec<u8>,
        rbuf: &mut Vec<u8>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<bool, ()> {
        let Some(ep) = self.pick() else {
            local_reply(out, 503, "upstream", "no upstream endpoint", true);
            client.write_all(out).await.map_err(drop)?;
            return Ok(false);
        };
        if !head.has_host {
            push_header(out, "host", &ep.host);
        }
        out.extend_from_slice(b"\r\n");
        let avail = (buf.len() - head.len).min(head.body as usize);
        out.extend_from_slice(&buf[head.len..head.len + avail]);
        consume(buf, head.len + avail);
        let body_left = head.body - avail as u64;

        let exchange = self.exchange(ep, out, hout, head, body_left, client, rbuf);
        let (mut up, resp, body_unread) =
            match tokio::time::timeout(self.opts.request_timeout, exchange).await {
                Ok(Ok(x)) => x,
                Ok(Err(Fail::Client)) => return Err(()),
                Ok(Err(e)) => {
                    let (status, msg) = match e {
                        Fail::Connect => (503, "upstream connect error"),
                        _ => (502, "upstream reset before response headers"),
                    };
                    self.stats.upstream_errors.inc();
                    // The request body may be partly unread: close unless there was none.
                    let close = head.close || body_left > 0;
                    local_reply(out, status, "upstream", msg, close);
                    client.write_all(out).await.map_err(drop)?;
                    return Ok(!close);
                }
                Err(_) => {
                    let close = head.close || body_left > 0;
                    local_reply(out, 504, "front", "request timeout", close);
                    client.write_all(out).await.map_err(drop)?;
                    return Ok(!close);
                }
            };
        let close =
            head.close || body_unread || resp.framing == Framing::UntilClose || *shutdown.borrow();
        if close {
            hout.extend_from_slice(b"connection: close\r\n");
        }
        hout.extend_from_slice(b"\r\n");
        // The response body: what came with the head, then the rest as it arrives.
        let mut reusable = resp.reusable && !body_unread;
        let rest = &rbuf[resp.len..];
        let mut chunks = Chunks::new();
        let (now, mut left) = match resp.framing {
            Framing::None => (0, 0),
            Framing::Length(n) => {
                let now = rest.len().min(n as usize);
                (now, n - now as u64)
            }
            Framing::Chunked => match chunks.feed(rest) {
                Ok(Some(end)) => (end, 0),
                Ok(None) => (rest.len(), 1),
                Err(_) => return Err(()),
            },
            Framing::UntilClose => (rest.len(), 1),
        };
        reusable &= now == rest.len();
        hout.extend_from_slice(&rest[..now]);
        client.write_all(hout).await.map_err(drop)?;
        while left > 0 {
            rbuf.clear();
            let n = match read_more(&mut up, rbuf).await {
                Ok(0) if resp.framing == Framing::UntilClose => break,
                Ok(0) | Err(_) => return Err(()),
                Ok(n) => n,
            };
            let take = match resp.framing {
                Framing::Length(_) => {
                    let take = n.min(left as usize);
                    left -= take as u64;
                    take
                }
                Framing::Chunked => match chunks.feed(rbuf) {
                    Ok(Some(end)) => {
                        left = 0;
                        end
                    }
                    Ok(None) => n,
                    Err(_) => return Err(()),
                },
                _ => n,
            };
            reusable &= take == n;
            client.write_all(&rbuf[..take]).await.map_err(drop)?;
        }
        if reusable {
            self.put_back(ep, up);
        }
        if close {
            let _ = client.shutdown().await;
        }
        Ok(!close)
    }

    /// Send the request (head and buffered body in `out`, `body_left` more bytes from the
    /// client) and read the response head into `rbuf`, the client's version of it into
    /// `hout`. The flag: the upstream stopped taking the request body before its end (it
    /// answered early), so the client's connection cannot carry another request.
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &self,
        ep: &Endpoint,
        out: &[u8],
        hout: &mut Vec<u8>,
        head: ReqHead,
        body_left: u64,
        client: &mut TcpStream,
        rbuf: &mut Vec<u8>,
    ) -> Result<(TcpStream, RespHead, bool), Fail> {
        let (mut up, mut reused) = match self.take_idle(ep) {
            Some(s) => (s, true),
            None => (self.connect(ep).await?, false),
        };
        loop {
            let sent = self
                .send_and_read(
                    &mut up,
                    out,
                    hout,
                    body_left,
                    client,
                    rbuf,
                    head.head_method,
                )
                .await;
            match sent {
                Ok((resp, unread)) => return Ok((up, resp, unread)),
                // A pooled connection that gave no answer at all (the upstream closed it as
                // the request went out): a safe request, still whole in `out`, is sent once
                // more on a new connection. Anything else is not sent twice.
                Err(Fail::NoResponse) if reused && head.safe && body_left == 0 => {
                    up = self.connect(ep).await?;
                    reused = false;
                }
                Err(e) => return Err(e),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_and_read(
        &self,
        up: &mut TcpStream,
        out: &[u8],
        hout: &mut Vec<u8>,
        body_left: u64,
        client: &mut TcpStream,
        rbuf: &mut Vec<u8>,
        head_method: bool,
    ) -> Result<(RespHead, bool), Fail> {
        up.write_all(out).await.map_err(|_| Fail::NoResponse)?;
        let mut unread = false;
        if body_left > 0 {
            // The rest of the body, read from the client only as far as it goes (the next
            // pipelined request stays in the socket). An upstream that stops reading (it
            // answered early and closed) ends the copy: its answer is read below.
            let mut left = body_left;
            let mut chunk = vec![0u8; 16 * 1024];
            while left > 0 {
                let want = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = client
                    .read(&mut chunk[..want])
                    .await
                    .map_err(|_| Fail::Client)?;
                if n == 0 {
                    return Err(Fail::Client);
                }
                left -= n as u64;
                if up.write_all(&chunk[..n]).await.is_err() {
                    unread = left > 0;
                    break;
                }
            }
        }
        rbuf.clear();
        let mut got_any = false;
        loop {
            match read_more(up, rbuf).await {
                Ok(0) | Err(_) if !got_any => return Err(Fail::NoResponse),
                Ok(0) | Err(_) => return Err(Fail::BadResponse),
                Ok(_) => got_any = true,
            }
            loop {
                match parse_response(rbuf, head_method, hout)? {
                    None => break,
                    // An interim response (1xx): the final one follows.
                    Some((r, code)) if (100..200).contains(&code) => {
                        if code == 101 {
                            return Err(Fail::BadResponse);
                        }
                        consume(rbuf, r.len);
                        if rbuf.is_empty() {
                            break;
                        }
                    }
                    Some((r, _)) => return Ok((r, unread)),
                }
            }
        }
    }
}

/// Nothing is waiting on a pooled connection: no late bytes, no close.
fn quiet(s: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> LeanOptions {
        LeanOptions {
            endpoints: vec![],
            connect_timeout: Duration::from_secs(1),
            pool_idle_timeout: Duration::from_secs(1),
            pool_max_idle_per_endpoint: 4,
            max_headers: 8,
            max_header_bytes: 200,
            max_body_bytes: 100,
            header_read_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
        }
    }

    fn parse(raw: &[u8]) -> (Parse, String) {
        let mut out = Vec::new();
        let p = parse_request(raw, &opts(), &mut out);
        (p, String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn a_plain_request_is_rewritten_without_hop_by_hop_or_internal_headers() {
        let raw = b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\nX-Meshsim-Peer: forged\r\nx-jwt-claim-sub: forged\r\nX-Forwarded-Client-Cert: forged\r\nContent-Length: 3\r\nX-Keep: 1\r\n\r\nabcGET";
        let (p, out) = parse(raw);
        assert_eq!(
            p,
            Parse::Ready(ReqHead {
                len: raw.len() - 6,
                body: 3,
                close: true,
                head_method: false,
                has_host: true,
                safe: false,
            })
        );
        assert_eq!(
            out,
            "POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nX-Keep: 1\r\n"
        );
    }

    #[test]
    fn what_the_lean_path_does_not_serve_goes_to_hyper() {
        for raw in [
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET / HTTP/1.1\r\nTE: trailers\r\n\r\n",
            b"GET http://a/ HTTP/1.1\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\n\r\n",
            b"GET /a\"b HTTP/1.1\r\n\r\n",
            b"G@T / HTTP/1.1\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                parse(raw).0,
                Parse::HandOff,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n").0, Parse::Partial);
    }

    #[test]
    fn the_front_limits_answer_as_the_front_layer() {
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "a: b\r\n".repeat(9));
        assert_eq!(
            parse(many.as_bytes()).0,
            Parse::Refuse(431, "request header fields too large", None)
        );
        let big = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "v".repeat(200));
        assert_eq!(
            parse(big.as_bytes()).0,
            Parse::Refuse(431, "request header fields too large", None)
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n").0,
            Parse::Refuse(413, "request body too large", None)
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n").0,
            Parse::Refuse(400, "invalid content-length", None)
        );
        assert_eq!(
            parse(b"TRACE / HTTP/1.1\r\n\r\n").0,
            Parse::Refuse(405, "method not allowed", Some(20))
        );
        let (p, out) = parse(b"HEAD / HTTP/1.1\r\n\r\n");
        assert!(matches!(p, Parse::Ready(h) if h.head_method && !h.has_host && h.body == 0));
        assert_eq!(out, "HEAD / HTTP/1.1\r\n");
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let mut out = Vec::new();
        let cases: [(&[u8], bool, Framing, bool); 6] = [
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                false,
                Framing::Length(5),
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                true,
                Framing::None,
                true,
            ),
            (
                b"HTTP/1.1 204 No Content\r\n\r\n",
                false,
                Framing::None,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                false,
                Framing::Chunked,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\n\r\n",
                false,
                Framing::UntilClose,
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                false,
                Framing::Length(0),
                false,
            ),
        ];
        for (raw, head, framing, reusable) in cases {
            let (r, _) = parse_response(raw, head, &mut out).unwrap().unwrap();
            assert_eq!(
                (r.len, r.framing, r.reusable),
                (raw.len(), framing, reusable)
            );
        }
        let raw = b"HTTP/1.1 200 OK\r\nConnection: x-hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\nX-Keep: 2\r\n\r\n";
        parse_response(raw, false, &mut out).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Keep: 2\r\n"
        );
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/9 200 OK\r\n\r\n",
        ] {
            assert_eq!(parse_response(bad, false, &mut out), Err(Fail::BadResponse));
        }
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\n", false, &mut out),
            Ok(None)
        );
    }

    #[test]
    fn chunked_bodies_end_where_their_last_chunk_and_trailers_end() {
        let body = b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        // Whole, and fed one byte at a time.
        assert_eq!(Chunks::new().feed(body), Ok(Some(end)));
        let mut c = Chunks::new();
        let mut ended = None;
        for (i, b) in body.iter().enumerate() {
            if let Some(n) = c.feed(std::slice::from_ref(b)).unwrap() {
                ended = Some(i + n);
                break;
            }
        }
        assert_eq!(ended, Some(end));
        assert!(Chunks::new().feed(b"zz\r\n").is_err());
        assert!(Chunks::new().feed(b"\r\n").is_err());
        assert_eq!(Chunks::new().feed(b"0\r\n\r\n"), Ok(Some(5)));
    }
}
