//! (8) Retries on 5xx responses and connection failures: at most `max_retries` per request
//! (default 2, as the paper's configuration), linear back-off, and a retry budget (retries
//! may add at most `budget_ratio` of the requests seen in the last 10 s window, plus
//! `min_retries_per_s`), so a 5xx storm cannot triple the load on a failing upstream.
//! Local refusals by the circuit breaker (overflow, all endpoints ejected) are not retried.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tower::{Layer, Service, ServiceExt};

use super::circuit::Overflow;
use super::clone_request;
use crate::config::RetryPolicy;
use crate::http::{Req, Resp, UpstreamOutcome};
use crate::stats::Stats;

const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// Retry budget over fixed 10 s windows.
#[derive(Debug)]
pub struct Budget {
    ratio: f64,
    min_per_window: u64,
    state: Mutex<(Instant, u64, u64)>,
}

impl Budget {
    /// New budget.
    pub fn new(ratio: f64, min_per_s: u32) -> Budget {
        Budget {
            ratio,
            min_per_window: u64::from(min_per_s) * BUDGET_WINDOW.as_secs(),
            state: Mutex::new((Instant::now(), 0, 0)),
        }
    }

    fn roll(st: &mut (Instant, u64, u64), now: Instant) {
        if now.saturating_duration_since(st.0) >= BUDGET_WINDOW {
            *st = (now, 0, 0);
        }
    }

    /// Count a request.
    pub fn deposit(&self, now: Instant) {
        if let Ok(mut st) = self.state.lock() {
            Self::roll(&mut st, now);
            st.1 += 1;
        }
    }

    /// Take permission for one retry.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let Ok(mut st) = self.state.lock() else {
            return false;
        };
        Self::roll(&mut st, now);
        let allowed = self.min_per_window + (self.ratio * st.1 as f64) as u64;
        if st.2 < allowed {
            st.2 += 1;
            true
        } else {
            false
        }
    }
}

/// Layer for retries.
#[derive(Debug, Clone)]
pub struct RetryLayer {
    max_retries: u32,
    backoff: Duration,
    budget: Arc<Budget>,
    stats: Arc<Stats>,
}

impl RetryLayer {
    /// From the policy.
    pub fn new(p: &RetryPolicy, stats: Arc<Stats>) -> RetryLayer {
        RetryLayer {
            max_retries: p.max_retries,
            backoff: Duration::from_millis(p.backoff_ms),
            budget: Arc::new(Budget::new(p.budget_ratio, p.min_retries_per_s)),
            stats,
        }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            layer: self.clone(),
            inner,
        }
    }
}

/// The retry service.
#[derive(Debug, Clone)]
pub struct Retry<S> {
    layer: RetryLayer,
    inner: S,
}

/// Whether a response should be retried.
pub fn retryable(resp: &Resp) -> bool {
    if resp.extensions().get::<Overflow>().is_some() {
        return false;
    }
    resp.status().is_server_error()
        || matches!(
            resp.extensions().get::<UpstreamOutcome>(),
            Some(UpstreamOutcome::ConnectFailed | UpstreamOutcome::Reset)
        )
}

impl<S> Service<Req> for Retry<S>
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
        let layer = self.layer.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            layer.budget.deposit(Instant::now());
            let mut attempt = 0u32;
            loop {
                let try_req = if attempt < layer.max_retries {
                    clone_request(&req)
                } else {
                    // Last possible attempt: no copy needed.
                    return inner.oneshot(req).await.map(|mut r| {
                        note_attempts(&mut r, attempt);
                        r
                    });
                };
                let Ok(mut resp) = inner.clone().oneshot(try_req).await;
                if !retryable(&resp) {
                    note_attempts(&mut resp, attempt);
                    return Ok(resp);
                }
                if !layer.budget.try_withdraw(Instant::now()) {
                    layer.stats.retry_budget_exhausted.inc();
                    note_attempts(&mut resp, attempt);
                    return Ok(resp);
                }
                drop(resp);
                attempt += 1;
                layer.stats.retries.inc();
                if !layer.backoff.is_zero() {
                    tokio::time::sleep(layer.backoff * attempt).await;
                }
            }
        })
    }
}

fn note_attempts(resp: &mut Resp, retries: u32) {
    if retries > 0 {
        resp.headers_mut()
            .insert("x-meshsim-retries", http::HeaderValue::from(retries));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_min_plus_ratio() {
        let b = Budget::new(0.5, 0);
        let t = Instant::now();
        assert!(!b.try_withdraw(t));
        for _ in 0..4 {
            b.deposit(t);
        }
        assert!(b.try_withdraw(t));
        assert!(b.try_withdraw(t));
        assert!(!b.try_withdraw(t));
        // A new window starts empty.
        let later = t + BUDGET_WINDOW;
        assert!(!b.try_withdraw(later));
        let floor = Budget::new(0.0, 1);
        assert_eq!((0..20).filter(|_| floor.try_withdraw(t)).count(), 10);
    }
}
