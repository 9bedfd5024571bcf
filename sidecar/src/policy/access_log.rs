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
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use serde::Serialize;
use tower::{Layer, Service, ServiceExt};

use super::tracing::TraceCtx;
use crate::config::AccessLogPolicy;
use crate::http::{BoxError, LocalReply, Req, Resp, RespBody, conn_info};
use crate::stats::Stats;

/// One access-log line.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// Request start, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// Function name.
    pub function: Arc<str>,
    /// Verified peer SPIFFE id, or null.
    pub identity: Option<Arc<str>>,
    /// Client address.
    pub remote: String,
    /// HTTP method.
    pub method: String,
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
    /// W3C trace id (when the tracing policy is on).
    pub trace_id: Option<String>,
    /// Layer that answered locally, if any.
    pub local_reply: Option<&'static str>,
    /// `false` when the client went away before the body finished.
    pub completed: bool,
}

/// Format milliseconds since the epoch as RFC 3339 (UTC).
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60,
        ms % 1000
    )
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
            if serde_json::to_writer(&mut line, rec).is_ok() {
                line.push(b'\n');
                if out.write_all(&line).is_err() {
                    return;
                }
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
        let method = req.method().to_string();
        let path = req.uri().path().to_owned();
        let protocol = match req.version() {
            http::Version::HTTP_2 => "HTTP/2.0",
            http::Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        };
        let bytes_in = req.body().size_hint().exact().unwrap_or(0);
        let trace_id = req
            .extensions()
            .get::<TraceCtx>()
            .map(|t| format!("{:032x}", t.trace_id));
        let layer = self.layer.clone();
        let fut = self.inner.clone().oneshot(req);
        Box::pin(async move {
            let Ok(resp) = fut.await;
            let headers_us = start.elapsed().as_micros() as u64;
            let record = Record {
                time: rfc3339_ms(start_ms),
                function: layer.function.clone(),
                identity: conn.as_ref().and_then(|c| c.peer.clone()),
                remote: conn
                    .as_ref()
                    .map(|c| c.remote.to_string())
                    .unwrap_or_default(),
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

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_795_000_000_000), "2026-11-18T11:06:40.000Z");
    }
}
