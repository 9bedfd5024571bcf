//! The per-request sandbox as a tower layer: it takes the place of the mtls, ports, jwt,
//! authz, rate_limit and tracing layers of the shared chain (access_log, retry and circuit
//! stay host-side, after it, because they wrap the upstream call).
//!
//! Per request: JWT signatures are verified natively (same code and token cache as the shared
//! layer); a fresh instance of the chain guest gets the request description and returns
//! allow/deny plus header edits, the global rate-limit key and the trace context; the host
//! then makes the Redis round trip for the global limit (asynchronous I/O cannot happen inside
//! the synchronous guest call), applies the edits and forwards.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderName, StatusCode, Version};
use tower::{Layer, Service, ServiceExt};

use super::abi::{ConfigBlob, Decision, Denial, Edit, JwtInput, KeyKind, RequestView, RuleSpec};
use super::{HostShared, Limits, Sandbox, SandboxError};
use crate::config::{AuthzAction, MtlsMode, Policies, Protocol, RateLimitKey};
use crate::http::{Req, Resp, conn_info, local_reply};
use crate::policy::jwt::{Jwt, unauthorized};
use crate::policy::ratelimit::{RateLimitLayer, too_many};
use crate::policy::tracing::Tracing;
use crate::stats::Stats;

/// Headers the tracing guest reads.
const TRACE_HEADERS: [&str; 6] = [
    "traceparent",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-sampled",
    "x-b3-flags",
];

/// The native parts the chain needs, built by the server exactly as for the shared mode.
#[derive(Debug, Default)]
pub struct ChainParts {
    /// mTLS request check: (mode, own SPIFFE id).
    pub mtls: Option<(MtlsMode, String)>,
    /// Allowed local ports and protocols.
    pub ports: Option<(Vec<u16>, Vec<Protocol>)>,
    /// JWT verifier (signatures stay native).
    pub jwt: Option<Jwt>,
    /// The rate-limit layer (its bucket and Redis handle).
    pub rate_limit: Option<RateLimitLayer>,
    /// The tracing id generator and sampling threshold.
    pub tracing: Option<Arc<Tracing>>,
}

struct Inner {
    sandbox: Sandbox,
    jwt: Option<Jwt>,
    rate_limit: Option<RateLimitLayer>,
    headers: Vec<HeaderName>,
    stats: Arc<Stats>,
}

/// Layer running the header-only policies in a fresh instance per request.
#[derive(Clone)]
pub struct SandboxLayer(Arc<Inner>);

impl std::fmt::Debug for SandboxLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxLayer")
            .field("sandbox", &self.0.sandbox)
            .finish_non_exhaustive()
    }
}

impl SandboxLayer {
    /// Compile the chain guest for these policies (`policies` supplies the authz rules) and
    /// check that it runs within the limits (an empty request must be decided).
    pub fn new(
        policies: &Policies,
        parts: ChainParts,
        limits: Limits,
        stats: Arc<Stats>,
    ) -> Result<SandboxLayer, SandboxError> {
        let mut headers: Vec<HeaderName> = Vec::new();
        let mut add = |name: &str| {
            if let Ok(h) = HeaderName::from_bytes(name.as_bytes())
                && !headers.contains(&h)
            {
                headers.push(h);
            }
        };
        let authz = policies.authz.as_ref().map(|a| {
            a.rules
                .iter()
                .map(|r| RuleSpec {
                    deny: r.action == AuthzAction::Deny,
                    sources: r.sources.clone(),
                    methods: r.methods.clone(),
                    paths: r.paths.clone(),
                    headers: r
                        .headers
                        .iter()
                        .filter_map(|(k, v)| {
                            // Canonical (lower-case) names, as the shared layer compiles them;
                            // invalid names were refused by `Config::validate`.
                            HeaderName::from_bytes(k.as_bytes())
                                .ok()
                                .map(|h| (h.as_str().to_owned(), v.clone()))
                        })
                        .collect(),
                })
                .collect::<Vec<_>>()
        });
        for r in authz.iter().flatten() {
            for (h, _) in &r.headers {
                add(h);
            }
        }
        let rate_limit = parts.rate_limit.as_ref().map(|rl| {
            let key = match rl.key() {
                RateLimitKey::Global => KeyKind::Global,
                RateLimitKey::Source => KeyKind::Source,
                RateLimitKey::Header { name } => {
                    let canonical = HeaderName::from_bytes(name.as_bytes())
                        .map(|h| h.as_str().to_owned())
                        .unwrap_or_default();
                    add(&canonical);
                    KeyKind::Header(canonical)
                }
            };
            (key, rl.bucket().is_some())
        });
        if parts.tracing.is_some() {
            for h in TRACE_HEADERS {
                add(h);
            }
        }
        let blob = ConfigBlob {
            mtls: parts
                .mtls
                .as_ref()
                .map(|(mode, own)| (*mode == MtlsMode::Strict, own.clone())),
            ports: parts.ports.as_ref().map(|(ports, protocols)| {
                let mask = protocols.iter().fold(0u32, |m, p| {
                    m | match p {
                        Protocol::Http1 => 1,
                        Protocol::Http2 => 2,
                    }
                });
                (ports.clone(), mask)
            }),
            jwt: parts.jwt.is_some(),
            authz,
            rate_limit,
            tracing: parts.tracing.as_ref().map(|t| t.threshold()),
        };
        let shared = Arc::new(HostShared {
            tracing: parts.tracing.clone(),
            bucket: parts.rate_limit.as_ref().and_then(|r| r.bucket()),
            cache: Default::default(),
        });
        let sandbox = Sandbox::chain(blob.encode(), limits, shared)?;
        let layer = SandboxLayer(Arc::new(Inner {
            sandbox,
            jwt: parts.jwt,
            rate_limit: parts.rate_limit,
            headers,
            stats,
        }));
        layer.spawn_reaper();
        // Self-test: the chain must fit its limits with the config baked in.
        layer.0.sandbox.probe(
            |base| {
                RequestView {
                    local_port: 0,
                    protocol: 1,
                    peer: None,
                    remote_ip: "-",
                    method: "GET",
                    path: "/",
                    jwt: JwtInput::Refused("self-test"),
                    headers: Vec::new(),
                }
                .encode(base)
            },
            |mem, out| Ok(Decision::decode(mem, out)?),
        )?;
        Ok(layer)
    }

    /// With `Limits::idle_release` set and a tokio runtime running, a task that releases the
    /// compiled module once the sandbox has been idle that long (checked four times per
    /// period), and keeps `sandbox_releases` / `sandbox_recompiles` up to date. It ends with
    /// the layer.
    fn spawn_reaper(&self) {
        let Some(idle) = self.0.sandbox.limits().idle_release else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(&self.0);
        let period = (idle / 4).max(std::time::Duration::from_millis(5));
        let mut seen = self.0.sandbox.compiles();
        rt.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let compiles = inner.sandbox.compiles();
                inner
                    .stats
                    .sandbox_recompiles
                    .add(compiles.saturating_sub(seen));
                seen = compiles;
                if inner.sandbox.release_if_idle() {
                    inner.stats.sandbox_releases.inc();
                }
            }
        });
    }

    /// Decide one request in a fresh instance (JWT verified natively first). Public for the
    /// equivalence tests and the bench.
    pub fn decide(&self, req: &Req) -> Result<Decision, SandboxError> {
        let inner = &self.0;
        let conn = conn_info(req);
        let claims;
        let jwt = match &inner.jwt {
            None => JwtInput::Off,
            Some(j) => match j.verify_request(req.headers()) {
                Ok(c) => {
                    claims = c;
                    JwtInput::Verified(&claims)
                }
                Err(msg) => JwtInput::Refused(msg),
            },
        };
        let remote = conn.map(|c| c.remote.ip().to_string());
        let mut headers = Vec::new();
        for name in &inner.headers {
            for v in req.headers().get_all(name) {
                headers.push((name.as_str(), v.as_bytes(), v.to_str().is_ok()));
            }
        }
        let view = RequestView {
            local_port: conn.map_or(0, |c| c.local_port),
            protocol: match req.version() {
                Version::HTTP_2 => 2,
                Version::HTTP_10 | Version::HTTP_11 => 1,
                _ => 0,
            },
            peer: conn.and_then(|c| c.peer.as_deref()),
            remote_ip: remote.as_deref().unwrap_or("-"),
            method: req.method().as_str(),
            path: req.uri().path(),
            jwt,
            headers,
        };
        inner.sandbox.run(
            |base| view.encode(base),
            |mem, out| Ok(Decision::decode(mem, out)?),
        )
    }

    /// The sandbox (tests, bench).
    pub fn sandbox(&self) -> &Sandbox {
        &self.0.sandbox
    }

    /// The local reply for a denial (the same replies as the shared layers).
    pub fn reply(&self, d: Denial) -> Resp {
        let status = StatusCode::from_u16(d.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match d.layer {
            1 => local_reply(status, "mtls", &d.message),
            2 => local_reply(status, "ports", &d.message),
            3 => unauthorized(&d.message),
            4 => local_reply(status, "authz", &d.message),
            5 => {
                self.0.stats.rate_limited_local.inc();
                too_many("local_rate_limit")
            }
            _ => local_reply(status, "sandbox", &d.message),
        }
    }

    /// Apply an allowing decision's edits and trace context to the request.
    pub fn apply(decision: &Decision, req: &mut Req) {
        let h = req.headers_mut();
        for e in &decision.edits {
            match e {
                Edit::Set(n, v) => {
                    h.insert(n.clone(), v.clone());
                }
                Edit::Remove(n) => {
                    h.remove(n);
                }
            }
        }
        if let Some(ctx) = decision.trace {
            crate::policy::tracing::apply(req, ctx);
        }
    }
}

impl<S> Layer<S> for SandboxLayer {
    type Service = SandboxService<S>;
    fn layer(&self, inner: S) -> SandboxService<S> {
        SandboxService {
            layer: self.clone(),
            inner,
        }
    }
}

/// Service of [`SandboxLayer`].
#[derive(Clone)]
pub struct SandboxService<S> {
    layer: SandboxLayer,
    inner: S,
}

impl<S> std::fmt::Debug for SandboxService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxService").finish_non_exhaustive()
    }
}

impl<S> Service<Req> for SandboxService<S>
where
    S: Service<Req, Response = Resp, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Resp;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Resp, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let layer = self.layer.clone();
        let inner = self.inner.clone();
        let stats = layer.0.stats.clone();
        stats.sandbox_runs.inc();
        let decision = layer.decide(&req);
        Box::pin(async move {
            let decision = match decision {
                Ok(d) => d,
                Err(e) => {
                    stats.sandbox_failures.inc();
                    crate::diag::warn_limited("sandbox_failed", &e.to_string());
                    return Ok(local_reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "sandbox",
                        &format!("policy sandbox failed ({}): request refused", e.kind()),
                    ));
                }
            };
            if let Some(d) = decision.deny.clone() {
                return Ok(layer.reply(d));
            }
            if let (Some(part), Some(rl)) = (&decision.rate_limit_key, &layer.0.rate_limit)
                && let Some(resp) = rl.check_global(part).await
            {
                return Ok(resp);
            }
            SandboxLayer::apply(&decision, &mut req);
            inner.oneshot(req).await
        })
    }
}
