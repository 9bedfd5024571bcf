//! (9) Circuit breaking, as Envoy's cluster circuit breakers and outlier detection:
//! - `max_requests` in flight to the upstream; up to `max_pending` more wait for a slot;
//!   beyond that the request is refused with 503 at once (overflow);
//! - `max_connections` open upstream connections (enforced by the connector);
//! - outlier detection: `consecutive_5xx` 5xx responses or connect failures in a row eject
//!   the endpoint for `base_ejection_ms * n` (n = times ejected, capped at
//!   `max_ejection_ms`); when every endpoint is ejected the circuit is open and requests fail
//!   fast with 503 until an ejection expires (half-open: the next result closes or re-opens it).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use http::StatusCode;
use tokio::sync::Semaphore;
use tower::{Layer, Service, ServiceExt};

use crate::config::CircuitBreakerPolicy;
use crate::http::{Req, Resp, UpstreamOutcome, local_reply};
use crate::stats::Stats;
use crate::upstream::Endpoint;

/// Marks a local refusal by the circuit breaker (never retried).
#[derive(Debug, Clone, Copy)]
pub struct Overflow;

fn now_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

#[derive(Debug)]
struct EndpointState {
    addr: SocketAddr,
    consecutive: AtomicU32,
    ejections: AtomicU32,
    ejected_until_ms: AtomicU64,
    last_ejection_end_ms: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    endpoints: Vec<EndpointState>,
    next: AtomicUsize,
    inflight: Arc<Semaphore>,
    pending: AtomicUsize,
    max_pending: usize,
    consecutive_5xx: u32,
    base_ejection_ms: u64,
    max_ejection_ms: u64,
    stats: Arc<Stats>,
}

/// Layer for circuit breaking.
#[derive(Debug, Clone)]
pub struct CircuitLayer(Arc<Shared>);

impl CircuitLayer {
    /// From the policy and the endpoint list.
    pub fn new(
        p: &CircuitBreakerPolicy,
        endpoints: &[SocketAddr],
        stats: Arc<Stats>,
    ) -> CircuitLayer {
        CircuitLayer(Arc::new(Shared {
            endpoints: endpoints
                .iter()
                .map(|&addr| EndpointState {
                    addr,
                    consecutive: AtomicU32::new(0),
                    ejections: AtomicU32::new(0),
                    ejected_until_ms: AtomicU64::new(0),
                    last_ejection_end_ms: AtomicU64::new(0),
                })
                .collect(),
            next: AtomicUsize::new(0),
            inflight: Arc::new(Semaphore::new(p.max_requests)),
            pending: AtomicUsize::new(0),
            max_pending: p.max_pending,
            consecutive_5xx: p.consecutive_5xx,
            base_ejection_ms: p.base_ejection_ms,
            max_ejection_ms: p.max_ejection_ms,
            stats,
        }))
    }
}

impl<S> Layer<S> for CircuitLayer {
    type Service = Circuit<S>;
    fn layer(&self, inner: S) -> Circuit<S> {
        Circuit {
            shared: self.0.clone(),
            inner,
        }
    }
}

/// The circuit-breaker service.
#[derive(Debug, Clone)]
pub struct Circuit<S> {
    shared: Arc<Shared>,
    inner: S,
}

impl Shared {
    /// Round robin over endpoints that are not ejected.
    fn pick(&self, now: u64) -> Option<usize> {
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| self.endpoints[i].ejected_until_ms.load(Ordering::Relaxed) <= now)
    }

    fn record(&self, i: usize, failed: bool, now: u64) {
        let ep = &self.endpoints[i];
        if !failed {
            ep.consecutive.store(0, Ordering::Relaxed);
            // Healthy for a full base interval since the last ejection ended: forget one.
            let last = ep.last_ejection_end_ms.load(Ordering::Relaxed);
            if last != 0 && now.saturating_sub(last) >= self.base_ejection_ms {
                let _ = ep
                    .ejections
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |e| e.checked_sub(1));
                ep.last_ejection_end_ms.store(now, Ordering::Relaxed);
            }
            return;
        }
        let c = ep.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if c >= self.consecutive_5xx && ep.ejected_until_ms.load(Ordering::Relaxed) <= now {
            ep.consecutive.store(0, Ordering::Relaxed);
            let n = ep.ejections.fetch_add(1, Ordering::Relaxed) + 1;
            let dur = self
                .base_ejection_ms
                .saturating_mul(u64::from(n))
                .min(self.max_ejection_ms);
            ep.ejected_until_ms.store(now + dur, Ordering::Relaxed);
            ep.last_ejection_end_ms.store(now + dur, Ordering::Relaxed);
            self.stats.ejections.inc();
            crate::diag::event(
                "warn",
                "outlier_ejected",
                &format!("endpoint {} ejected for {dur} ms (ejection #{n})", ep.addr),
            );
        }
    }
}

fn overflow(msg: &str) -> Resp {
    let mut r = local_reply(StatusCode::SERVICE_UNAVAILABLE, "circuit_breaker", msg);
    r.extensions_mut().insert(Overflow);
    r
}

impl<S> Service<Req> for Circuit<S>
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

    fn call(&mut self, mut req: Req) -> Self::Future {
        let shared = self.shared.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            let permit = match shared.inflight.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    if shared.pending.fetch_add(1, Ordering::AcqRel) >= shared.max_pending {
                        shared.pending.fetch_sub(1, Ordering::AcqRel);
                        shared.stats.circuit_overflow.inc();
                        return Ok(overflow("too many requests in flight"));
                    }
                    let p = shared.inflight.clone().acquire_owned().await;
                    shared.pending.fetch_sub(1, Ordering::AcqRel);
                    match p {
                        Ok(p) => p,
                        Err(_) => return Ok(overflow("circuit closed")),
                    }
                }
            };
            let Some(i) = shared.pick(now_ms()) else {
                shared.stats.circuit_overflow.inc();
                return Ok(overflow("circuit open: all upstream endpoints ejected"));
            };
            req.extensions_mut()
                .insert(Endpoint(shared.endpoints[i].addr));
            let Ok(resp) = inner.oneshot(req).await;
            drop(permit);
            if resp.extensions().get::<Overflow>().is_none() {
                let failed = resp.status().is_server_error()
                    || matches!(
                        resp.extensions().get::<UpstreamOutcome>(),
                        Some(UpstreamOutcome::ConnectFailed | UpstreamOutcome::Reset)
                    );
                shared.record(i, failed, now_ms());
            }
            Ok(resp)
        })
    }
}
