//! (7) Access logs: one JSON line per request (time, identity, method, path, protocol,
//! status, bytes in/out, total and upstream durations, trace id). The request path only
//! fills a record and pushes it onto a bounded in-memory batch (a mutex-guarded `Vec`); a
//! dedicated thread swaps the batch out every [`FLUSH_INTERVAL`], formats and writes it. No
//! per-request wake-up of the writer (a channel would cost a futex wake and a context switch
//! per line at low rates). A full batch drops the line and counts it (`access_log_dropped`)
//! rather than slowing requests. The record is completed when the response body finishes
//! (or is abandoned).

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tower::{Layer, Service, ServiceExt};

use super::tracing::TraceCtx;
use crate::config::AccessLogPolicy;
use crate::digits::{push_decimal, push_decimal_padded, put_hex};
use crate::http::{BoxError, LocalReply, Req, Resp, RespBody, conn_info};
use crate::stats::Stats;

/// One access-log line, as raw values: the request path only copies them, and the writer
/// thread formats the line ([`Record::write_json`]).
#[derive(Debug, Clone)]
pub struct Record {
    /// Request start, milliseconds since the epoch (written as RFC 3339 UTC, `time`).
    pub start_ms: u64,
    /// Function name.
    pub function: Arc<str>,
    /// Verified peer SPIFFE id, or null.
    pub identity: Option<Arc<str>>,
    /// Client address (written as `""` when unknown).
    pub remote: Option<SocketAddr>,
    /// HTTP method.
    pub method: http::Method,
    /// Path (no query).
    pub path: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub protocol: &'static str,
    /// Response status.
    pub status: u16,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// Start to end of response body, microseconds.
    pub duration_us: u64,
    /// Start to response headers, microseconds.
    pub headers_us: u64,
    /// W3C trace id (when the tracing policy is on; written as 32 hex digits).
    pub trace_id: Option<u128>,
    /// Layer that answered locally, if any.
    pub local_reply: Option<&'static str>,
    /// `false` when the client went away before the body finished.
    pub completed: bool,
}

impl Record {
    /// Appends the record as one compact JSON object, fields in declaration order (`time`
    /// first), byte for byte what `serde_json` writes for the same values as strings (a unit
    /// test holds it to that).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"time\":\"");
        write_rfc3339_ms(out, self.start_ms);
        out.extend_from_slice(b"\",\"function\":");
        json_str(out, &self.function);
        out.extend_from_slice(b",\"identity\":");
        match &self.identity {
            Some(id) => json_str(out, id),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"remote\":\"");
        match self.remote {
            Some(SocketAddr::V4(a)) => {
                for (i, o) in a.ip().octets().iter().enumerate() {
                    if i > 0 {
                        out.push(b'.');
                    }
                    push_decimal(out, u64::from(*o));
                }
                out.push(b':');
                push_decimal(out, u64::from(a.port()));
            }
            // IPv6 text form (zero compression) is left to the standard library; it has no
            // characters that JSON escapes.
            Some(a @ SocketAddr::V6(_)) => {
                let _ = write!(out, "{a}");
            }
            None => {}
        }
        out.extend_from_slice(b"\",\"method\":");
        json_str(out, self.method.as_str());
        out.extend_from_slice(b",\"path\":");
        json_str(out, &self.path);
        out.extend_from_slice(b",\"protocol\":");
        json_str(out, self.protocol);
        out.extend_from_slice(b",\"status\":");
        push_decimal(out, u64::from(self.status));
        out.extend_from_slice(b",\"bytes_in\":");
        push_decimal(out, self.bytes_in);
        out.extend_from_slice(b",\"bytes_out\":");
        push_decimal(out, self.bytes_out);
        out.extend_from_slice(b",\"duration_us\":");
        push_decimal(out, self.duration_us);
        out.extend_from_slice(b",\"headers_us\":");
        push_decimal(out, self.headers_us);
        out.extend_from_slice(b",\"trace_id\":");
        match self.trace_id {
            Some(t) => {
                let mut hex = [0u8; 32];
                put_hex(&mut hex, t);
                out.push(b'"');
                out.extend_from_slice(&hex);
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"local_reply\":");
        match self.local_reply {
            Some(l) => json_str(out, l),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(if self.completed {
            b",\"completed\":true}"
        } else {
            b",\"completed\":false}"
        });
    }
}

/// Appends `s` as a JSON string with `serde_json`'s escapes: `\"`, `\\`, the short forms
/// `\b \f \n \r \t`, `\u00XX` (lowercase hex) for the other control characters; everything
/// else (including non-ASCII UTF-8 and DEL) as is. Runs of plain bytes are copied whole.
fn json_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    out.push(b'"');
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&b[start..i]);
        if esc.is_empty() {
            let mut hex = *b"\\u00..";
            put_hex(&mut hex[4..], u128::from(c));
            out.extend_from_slice(&hex);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
}

/// Format milliseconds since the epoch as RFC 3339 (UTC).
pub fn rfc3339_ms(ms: u64) -> String {
    let mut out = Vec::with_capacity(24);
    write_rfc3339_ms(&mut out, ms);
    // ASCII digits and separators only.
    String::from_utf8_lossy(&out).into_owned()
}

/// Appends milliseconds since the epoch as RFC 3339 (UTC), `YYYY-MM-DDThh:mm:ss.mmmZ`.
pub fn write_rfc3339_ms(out: &mut Vec<u8>, ms: u64) {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let sod = secs % 86_400;
    // Howard Hinnant's civil_from_days (days >= 0 here, so no negative eras).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    for (i, (v, width)) in [
        (y, 4),
        (m, 2),
        (d, 2),
        (sod / 3600, 2),
        ((sod / 60) % 60, 2),
        (sod % 60, 2),
        (ms % 1000, 3),
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            out.push(b"--T::."[i - 1]);
        }
        push_decimal_padded(out, v, width);
    }
    out.push(b'Z');
}

/// How often the writer thread drains the batch.
pub const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// The bounded batch shared by the request path and the writer thread.
#[derive(Debug)]
pub struct Queue {
    records: Mutex<Vec<Record>>,
    capacity: usize,
}

impl Queue {
    /// Push a record; `false` (and nothing stored) when the batch is full.
    fn push(&self, rec: Record) -> bool {
        match self.records.lock() {
            Ok(mut v) if v.len() < self.capacity => {
                v.push(rec);
                true
            }
            _ => false,
        }
    }

    fn take(&self) -> Vec<Record> {
        match self.records.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(_) => Vec::new(),
        }
    }
}

/// The writer side: a thread draining the batch into a file or stdout.
#[derive(Debug)]
pub struct Writer {
    tx: Arc<Queue>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    /// Write out everything queued so far and stop the writer thread.
    pub fn finish(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Writer {
    /// Start the writer thread.
    pub fn start(policy: &AccessLogPolicy) -> std::io::Result<Writer> {
        let out: Box<dyn Write + Send> = match &policy.path {
            Some(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
            None => Box::new(std::io::stdout()),
        };
        let tx = Arc::new(Queue {
            records: Mutex::new(Vec::with_capacity(policy.queue.min(4096))),
            capacity: policy.queue,
        });
        let rx = tx.clone();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(rx, out, stop2))?;
        Ok(Writer {
            tx,
            stop,
            thread: Some(thread),
        })
    }
}

fn write_loop(
    rx: Arc<Queue>,
    out: Box<dyn Write + Send>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut line = Vec::with_capacity(512);
    loop {
        // Asked to stop, or every sender is gone: write what is left and stop.
        let last = stop.load(std::sync::atomic::Ordering::Relaxed) || Arc::strong_count(&rx) == 1;
        let batch = rx.take();
        for rec in &batch {
            line.clear();
            rec.write_json(&mut line);
            line.push(b'\n');
            if out.write_all(&line).is_err() {
                return;
            }
        }
        if !batch.is_empty() && out.flush().is_err() {
            return;
        }
        if last {
            return;
        }
        std::thread::sleep(FLUSH_INTERVAL);
    }
}

/// Layer for access logs.
#[derive(Clone, Debug)]
pub struct AccessLogLayer {
    tx: Arc<Queue>,
    function: Arc<str>,
    stats: Arc<Stats>,
}

impl AccessLogLayer {
    /// Layer writing through `writer`.
    pub fn new(writer: &Writer, function: &str, stats: Arc<Stats>) -> AccessLogLayer {
        AccessLogLayer {
            tx: writer.tx.clone(),
            function: function.into(),
            stats,
        }
    }
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;
    fn layer(&self, inner: S) -> AccessLog<S> {
        AccessLog {
            layer: self.clone(),
            inner,
        }
    }
}

/// The access-log service.
#[derive(Clone, Debug)]
pub struct AccessLog<S> {
    layer: AccessLogLayer,
    inner: S,
}

impl<S> Service<Req> for AccessLog<S>
where
    S: Service<Req, Response = Resp, Error = std::convert::Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Resp;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Resp, std::convert::Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let start = Instant::now();
        let start_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let conn = conn_info(&req).cloned();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let protocol = match req.version() {
            http::Version::HTTP_2 => "HTTP/2.0",
            http::Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        };
        let bytes_in = req.body().size_hint().exact().unwrap_or(0);
        let trace_id = req.extensions().get::<TraceCtx>().map(|t| t.trace_id);
        let layer = self.layer.clone();
        let fut = self.inner.clone().oneshot(req);
        Box::pin(async move {
            let Ok(resp) = fut.await;
            let headers_us = start.elapsed().as_micros() as u64;
            let record = Record {
                start_ms,
                function: layer.function.clone(),
                identity: conn.as_ref().and_then(|c| c.peer.clone()),
                remote: conn.as_ref().map(|c| c.remote),
                method,
                path,
                protocol,
                status: resp.status().as_u16(),
                bytes_in,
                bytes_out: 0,
                duration_us: 0,
                headers_us,
                trace_id,
                local_reply: resp.extensions().get::<LocalReply>().map(|l| l.0),
                completed: false,
            };
            let (parts, body) = resp.into_parts();
            let body = LogBody {
                inner: body,
                start,
                record: Some(record),
                tx: layer.tx,
                stats: layer.stats,
            };
            Ok(Resp::from_parts(parts, body.boxed()))
        })
    }
}

struct LogBody {
    inner: RespBody,
    start: Instant,
    record: Option<Record>,
    tx: Arc<Queue>,
    stats: Arc<Stats>,
}

impl LogBody {
    fn finish(&mut self, completed: bool) {
        if let Some(mut rec) = self.record.take() {
            rec.duration_us = self.start.elapsed().as_micros() as u64;
            rec.completed = completed;
            if !self.tx.push(rec) {
                self.stats.access_log_dropped.inc();
            }
        }
    }
}

impl Drop for LogBody {
    fn drop(&mut self) {
        let done = self.inner.is_end_stream();
        self.finish(done);
    }
}

impl Body for LogBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_frame(cx);
        match &poll {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(rec)) = (frame.data_ref(), this.record.as_mut()) {
                    rec.bytes_out += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish(true);
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line as the previous writer produced it: `serde_json` over the values as strings.
    #[derive(serde::Serialize)]
    struct Legacy {
        time: String,
        function: Arc<str>,
        identity: Option<Arc<str>>,
        remote: String,
        method: String,
        path: String,
        protocol: &'static str,
        status: u16,
        bytes_in: u64,
        bytes_out: u64,
        duration_us: u64,
        headers_us: u64,
        trace_id: Option<String>,
        local_reply: Option<&'static str>,
        completed: bool,
    }

    impl From<&Record> for Legacy {
        fn from(r: &Record) -> Legacy {
            Legacy {
                time: rfc3339_ms(r.start_ms),
                function: r.function.clone(),
                identity: r.identity.clone(),
                remote: r.remote.map(|a| a.to_string()).unwrap_or_default(),
                method: r.method.to_string(),
                path: r.path.clone(),
                protocol: r.protocol,
                status: r.status,
                bytes_in: r.bytes_in,
                bytes_out: r.bytes_out,
                duration_us: r.duration_us,
                headers_us: r.headers_us,
                trace_id: r.trace_id.map(|t| format!("{t:032x}")),
                local_reply: r.local_reply,
                completed: r.completed,
            }
        }
    }

    #[test]
    fn lines_are_byte_for_byte_what_serde_json_wrote() {
        let texts = [
            "",
            "/plain/path",
            "/q\"uote",
            "/back\\slash",
            "/ctl\n\r\t\u{8}\u{c}",
            "/nul\u{0}\u{1f}\u{7f}",
            "/utf8/é/日本/\u{2028}",
            "spiffe://cluster.local/ns/a/sa/b",
        ];
        let any = SocketAddr::from(([0, 0, 0, 0], 0));
        let remotes = [
            None,
            Some("10.0.0.1:8080".parse().unwrap_or(any)),
            Some(SocketAddr::from(([255, 255, 255, 255], 65535))),
            Some(any),
            Some("[::1]:443".parse().unwrap_or(any)),
            Some("[fe80::1:2:3:4]:9".parse().unwrap_or(any)),
        ];
        let methods = [
            http::Method::GET,
            http::Method::POST,
            http::Method::from_bytes(b"PURGE").unwrap_or_default(),
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..400u64 {
            let pick = |n: u64, len: usize| (n % len as u64) as usize;
            let r = Record {
                start_ms: match i {
                    0 => 0,
                    1 => 951_782_400_123,
                    2 => 253_402_300_799_999, // 9999-12-31T23:59:59.999Z
                    _ => next() % 4_102_444_800_000,
                },
                function: texts[pick(next(), texts.len())].into(),
                identity: (next() % 3 > 0).then(|| texts[pick(next(), texts.len())].into()),
                remote: remotes[pick(next(), remotes.len())],
                method: methods[pick(next(), methods.len())].clone(),
                path: texts[pick(next(), texts.len())].to_owned(),
                protocol: ["HTTP/1.1", "HTTP/2.0", "HTTP/1.0"][pick(next(), 3)],
                status: (next() % 600) as u16,
                bytes_in: next() >> (next() % 64),
                bytes_out: next() >> (next() % 64),
                duration_us: next() >> (next() % 64),
                headers_us: next() % 1000,
                trace_id: (next() % 2 == 0).then(|| u128::from(next()) << (next() % 64)),
                local_reply: (next() % 2 == 0).then_some("rate_limit"),
                completed: next() % 2 == 0,
            };
            let mut line = Vec::new();
            r.write_json(&mut line);
            let want = serde_json::to_vec(&Legacy::from(&r)).unwrap_or_default();
            assert_eq!(
                String::from_utf8_lossy(&line),
                String::from_utf8_lossy(&want),
                "{r:?}"
            );
        }
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_795_000_000_000), "2026-11-18T11:06:40.000Z");
    }
}
