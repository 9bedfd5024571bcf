//! The nine policies as tower layers, in the order a request meets them:
//! [`mtls`] -> [`ports`] -> [`jwt`] -> [`authz`] -> [`ratelimit`] -> [`tracing`] ->
//! [`access_log`] -> [`retry`] -> [`circuit`] -> upstream.
//!
//! Every service in the chain has `Request = Req`, `Response = Resp` and `Error = Infallible`:
//! a denial is an HTTP response produced locally (with the `x-meshsim-denied-by` header), never
//! an error that could skip a later check.

pub mod access_log;
pub mod authz;
pub mod circuit;
pub mod jwt;
pub mod mtls;
pub mod ports;
pub mod ratelimit;
pub mod redis;
pub mod retry;
pub mod tracing;

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use tower::{Layer, Service};

use crate::http::{Req, Resp};

/// A synchronous request check that may rewrite the request or answer it locally.
pub trait Check: Send + Sync + 'static {
    /// `Ok(())` to pass the (possibly modified) request on, `Err(resp)` to answer it.
    fn check(&self, req: &mut Req) -> Result<(), Resp>;
}

/// Layer for a [`Check`].
#[derive(Debug)]
pub struct CheckLayer<C>(Arc<C>);

impl<C> Clone for CheckLayer<C> {
    fn clone(&self) -> Self {
        CheckLayer(self.0.clone())
    }
}

impl<C> CheckLayer<C> {
    /// Wrap a check.
    pub fn new(check: C) -> Self {
        CheckLayer(Arc::new(check))
    }

    /// Wrap a shared check.
    pub fn from_arc(check: Arc<C>) -> Self {
        CheckLayer(check)
    }
}

impl<C, S> Layer<S> for CheckLayer<C> {
    type Service = CheckService<C, S>;
    fn layer(&self, inner: S) -> Self::Service {
        CheckService {
            check: self.0.clone(),
            inner,
        }
    }
}

/// Service for a [`Check`].
#[derive(Debug)]
pub struct CheckService<C, S> {
    check: Arc<C>,
    inner: S,
}

impl<C, S: Clone> Clone for CheckService<C, S> {
    fn clone(&self) -> Self {
        CheckService {
            check: self.check.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<C, S> Service<Req> for CheckService<C, S>
where
    C: Check,
    S: Service<Req, Response = Resp, Error = Infallible>,
{
    type Response = Resp;
    type Error = Infallible;
    type Future = Either<Ready<Result<Resp, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        match self.check.check(&mut req) {
            Ok(()) => Either::Right(self.inner.call(req)),
            Err(resp) => Either::Left(ready(Ok(resp))),
        }
    }
}

/// Clone a buffered request, extensions included (for retries).
pub fn clone_request(req: &Req) -> Req {
    let mut out = http::Request::new(req.body().clone());
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = req.uri().clone();
    *out.version_mut() = req.version();
    *out.headers_mut() = req.headers().clone();
    *out.extensions_mut() = req.extensions().clone();
    out
}
