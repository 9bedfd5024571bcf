//! (5) Global rate limit, as Envoy's rate-limit service does it: a fixed window per key in
//! Redis, `INCRBY key 1` + `EXPIRE key window` pipelined, over the limit -> 429. A local token
//! bucket in front refuses bursts without a Redis round trip. When Redis is unreachable or
//! slower than `redis_timeout_ms`, the request is let through (`failure_mode = "open"`) or
//! refused with 503 (`"closed"`); either way it is counted and logged (rate-limited to one line
//! per second).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderName, StatusCode};
use tower::{Layer, Service, ServiceExt};

use super::redis::RedisHandle;
use crate::config::{FailureMode, RateLimitKey, RateLimitPolicy, TokenBucket};
use crate::http::{Req, Resp, conn_info, local_reply};
use crate::stats::Stats;

/// A token bucket (integer arithmetic in micro-tokens).
#[derive(Debug)]
pub struct Bucket {
    capacity_micro: u64,
    refill_micro_per_s: u64,
    state: Mutex<(u64, Instant)>,
}

impl Bucket {
    /// Full bucket.
    pub fn new(cfg: &TokenBucket) -> Bucket {
        let capacity_micro = cfg.capacity.saturating_mul(1_000_000);
        Bucket {
            capacity_micro,
            refill_micro_per_s: cfg.refill_per_s.saturating_mul(1_000_000),
            state: Mutex::new((capacity_micro, Instant::now())),
        }
    }

    /// Take one token at `now`.
    pub fn try_take(&self, now: Instant) -> bool {
        let Ok(mut st) = self.state.lock() else {
            return true;
        };
        let elapsed_us = now.saturating_duration_since(st.1).as_micros() as u64;
        let add = elapsed_us.saturating_mul(self.refill_micro_per_s) / 1_000_000;
        if add > 0 {
            st.0 = (st.0.saturating_add(add)).min(self.capacity_micro);
            st.1 = now;
        }
        if st.0 >= 1_000_000 {
            st.0 -= 1_000_000;
            true
        } else {
            false
        }
    }
}

struct Shared {
    function: String,
    limit: u64,
    window_s: u64,
    key: RateLimitKey,
    key_header: Option<HeaderName>,
    failure_mode: FailureMode,
    local: Option<Arc<Bucket>>,
    redis: RedisHandle,
    stats: Arc<Stats>,
}

/// Layer for the global rate limit.
#[derive(Clone)]
pub struct RateLimitLayer(Arc<Shared>);

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer").finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// From the policy.
    pub fn new(function: &str, p: &RateLimitPolicy, stats: Arc<Stats>) -> RateLimitLayer {
        let key_header = match &p.key {
            RateLimitKey::Header { name } => HeaderName::from_bytes(name.as_bytes()).ok(),
            _ => None,
        };
        RateLimitLayer(Arc::new(Shared {
            function: function.to_owned(),
            limit: p.requests_per_window,
            window_s: p.window_s,
            key: p.key.clone(),
            key_header,
            failure_mode: p.failure_mode,
            local: p.local.as_ref().map(|b| Arc::new(Bucket::new(b))),
            redis: RedisHandle::new(&p.redis_url, Duration::from_millis(p.redis_timeout_ms)),
            stats,
        }))
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            shared: self.0.clone(),
            inner,
        }
    }
}

/// The rate-limit service.
#[derive(Clone)]
pub struct RateLimit<S> {
    shared: Arc<Shared>,
    inner: S,
}

impl<S> std::fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit").finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// The local token bucket, if configured (shared with the per-request sandbox's host).
    pub fn bucket(&self) -> Option<Arc<Bucket>> {
        self.0.local.clone()
    }

    /// The configured key.
    pub fn key(&self) -> &RateLimitKey {
        &self.0.key
    }

    /// Count one request against the global (Redis) counter for `part` (the key part: `global`,
    /// the source identity / IP, or the header value); `Some(reply)` when it is refused.
    pub async fn check_global(&self, part: &str) -> Option<Resp> {
        self.0.check_global(part).await
    }
}

impl Shared {
    fn redis_key(&self, part: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let window = now / self.window_s;
        let mut key = String::with_capacity(16 + self.function.len() + part.len() + 20);
        key.push_str("meshsim_rl:");
        key.push_str(&self.function);
        key.push(':');
        key.push_str(part);
        key.push(':');
        crate::digits::push_decimal_str(&mut key, window);
        key
    }

    async fn check_global(&self, part: &str) -> Option<Resp> {
        match self.redis.incr(&self.redis_key(part), self.window_s).await {
            Ok(n) if n > self.limit => {
                self.stats.rate_limited.inc();
                Some(too_many("rate_limit"))
            }
            Ok(_) => None,
            Err(e) => {
                self.stats.redis_errors.inc();
                crate::diag::warn_limited(
                    "ratelimit_redis_unavailable",
                    &format!(
                        "{e}; failure_mode={}",
                        match self.failure_mode {
                            FailureMode::Open => "open (allowing)",
                            FailureMode::Closed => "closed (refusing)",
                        }
                    ),
                );
                (self.failure_mode == FailureMode::Closed).then(|| {
                    local_reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "rate_limit",
                        "rate limit service unavailable",
                    )
                })
            }
        }
    }

    fn key_part(&self, req: &Req) -> String {
        match &self.key {
            RateLimitKey::Global => "global".into(),
            RateLimitKey::Source => match conn_info(req) {
                Some(c) => match &c.peer {
                    Some(id) => id.to_string(),
                    None => c.remote.ip().to_string(),
                },
                None => "-".into(),
            },
            RateLimitKey::Header { .. } => self
                .key_header
                .as_ref()
                .and_then(|h| req.headers().get(h))
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(128).collect())
                .unwrap_or_else(|| "-".into()),
        }
    }
}

/// The 429 reply of the rate-limit layers.
pub fn too_many(by: &'static str) -> Resp {
    let mut r = local_reply(StatusCode::TOO_MANY_REQUESTS, by, "rate limited");
    r.headers_mut().insert(
        "x-envoy-ratelimited",
        http::HeaderValue::from_static("true"),
    );
    r
}

impl<S> Service<Req> for RateLimit<S>
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
        let shared = self.shared.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            if let Some(bucket) = &shared.local
                && !bucket.try_take(Instant::now())
            {
                shared.stats.rate_limited_local.inc();
                return Ok(too_many("local_rate_limit"));
            }
            let part = shared.key_part(&req);
            if let Some(resp) = shared.check_global(&part).await {
                return Ok(resp);
            }
            inner.oneshot(req).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_the_configured_rate() {
        let b = Bucket::new(&TokenBucket {
            capacity: 2,
            refill_per_s: 10,
        });
        let t0 = Instant::now();
        assert!(b.try_take(t0));
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0));
        assert!(!b.try_take(t0 + Duration::from_millis(50)));
        assert!(b.try_take(t0 + Duration::from_millis(100)));
        assert!(!b.try_take(t0 + Duration::from_millis(100)));
        // Never above capacity after a long pause.
        let later = t0 + Duration::from_secs(60);
        assert!(b.try_take(later) && b.try_take(later) && !b.try_take(later));
    }
}
