//! (6) Tracing headers: W3C `traceparent` and B3 (multi-header and single `b3`) are
//! propagated (new span id, parent = incoming span) or a trace is started, sampled with the
//! configured probability. Both formats are emitted upstream.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};

use super::Check;
use crate::digits::put_hex;
use crate::http::{Req, Resp};

// Header names as constants: a `&str` name is parsed and validated on every lookup or insert.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const B3: HeaderName = HeaderName::from_static("b3");
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// Trace context of a request (inserted into its extensions for the access log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceCtx {
    /// 128-bit trace id.
    pub trace_id: u128,
    /// This hop's span id.
    pub span_id: u64,
    /// Parent span id (0 when this hop started the trace).
    pub parent_id: u64,
    /// Sampled flag.
    pub sampled: bool,
}

/// The tracing-header layer.
#[derive(Debug)]
pub struct Tracing {
    /// Sampling threshold on a uniform u64 (sampled when draw < threshold).
    threshold: u64,
    rng: AtomicU64,
}

impl Tracing {
    /// `sampling` in [0, 1].
    pub fn new(sampling: f64) -> Tracing {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()).rotate_left(32);
        Self::with_seed(sampling, seed)
    }

    /// Like [`Tracing::new`] with a fixed generator seed (tests comparing isolation modes).
    pub fn with_seed(sampling: f64, seed: u64) -> Tracing {
        let threshold = if sampling >= 1.0 {
            u64::MAX
        } else {
            (sampling.max(0.0) * u64::MAX as f64) as u64
        };
        Tracing {
            threshold,
            rng: AtomicU64::new(seed),
        }
    }

    /// Sampling threshold on a uniform u64 (`u64::MAX` = always).
    pub fn threshold(&self) -> u64 {
        self.threshold
    }

    /// Next id of the shared generator (the per-request sandbox's `rand` host function).
    pub fn next_id(&self) -> u64 {
        self.next()
    }

    /// Next pseudo-random id (splitmix64 over an atomic counter; ids need uniqueness, not
    /// secrecy). Never zero.
    fn next(&self) -> u64 {
        let mut z = self
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)).max(1)
    }

    /// Derive this hop's context from the incoming headers.
    pub fn context(&self, headers: &HeaderMap) -> TraceCtx {
        let span_id = self.next();
        if let Some((trace_id, parent_id, sampled)) =
            parse_traceparent(headers).or_else(|| parse_b3(headers))
        {
            return TraceCtx {
                trace_id,
                span_id,
                parent_id,
                sampled,
            };
        }
        let trace_id = (u128::from(self.next()) << 64) | u128::from(self.next());
        TraceCtx {
            trace_id,
            span_id,
            parent_id: 0,
            sampled: self.threshold == u64::MAX || self.next() < self.threshold,
        }
    }
}

fn hex_u128(s: &str) -> Option<u128> {
    if s.bytes().all(|b| b.is_ascii_hexdigit()) {
        u128::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

fn hex_u64(s: &str) -> Option<u64> {
    if s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        u64::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

/// `00-<32 hex trace>-<16 hex span>-<2 hex flags>`; all-zero ids are invalid.
fn parse_traceparent(headers: &HeaderMap) -> Option<(u128, u64, bool)> {
    let v = headers.get(&TRACEPARENT)?.to_str().ok()?;
    let mut parts = v.trim().split('-');
    let (ver, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if ver.len() != 2 || ver == "ff" || trace.len() != 32 || flags.len() != 2 {
        return None;
    }
    if ver == "00" && parts.next().is_some() {
        return None;
    }
    let trace = hex_u128(trace).filter(|t| *t != 0)?;
    let span = hex_u64(span).filter(|s| *s != 0)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace, span, flags & 1 == 1))
}

fn parse_b3_trace(s: &str) -> Option<u128> {
    if s.len() != 16 && s.len() != 32 {
        return None;
    }
    hex_u128(s).filter(|t| *t != 0)
}

fn parse_b3(headers: &HeaderMap) -> Option<(u128, u64, bool)> {
    if let Some(v) = headers.get(&B3).and_then(|v| v.to_str().ok()) {
        let mut parts = v.trim().split('-');
        let trace = parse_b3_trace(parts.next()?)?;
        let span = hex_u64(parts.next()?).filter(|s| *s != 0)?;
        let sampled = matches!(parts.next(), Some("1") | Some("d"));
        return Some((trace, span, sampled));
    }
    let trace = parse_b3_trace(headers.get(&B3_TRACE_ID)?.to_str().ok()?)?;
    let span = hex_u64(headers.get(&B3_SPAN_ID)?.to_str().ok()?).filter(|s| *s != 0)?;
    let sampled = headers
        .get(&B3_SAMPLED)
        .is_some_and(|v| v.as_bytes() == b"1" || v.as_bytes() == b"true")
        || headers.get(&B3_FLAGS).is_some_and(|v| v.as_bytes() == b"1");
    Some((trace, span, sampled))
}

/// A header value of hex digits (always valid, so never the fallback).
fn hex_value(v: u128, digits: usize) -> HeaderValue {
    let mut buf = [0u8; 32];
    let out = &mut buf[..digits];
    put_hex(out, v);
    HeaderValue::from_bytes(out).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// `00-<32 hex trace>-<16 hex span>-<flags>`.
fn traceparent_value(ctx: &TraceCtx) -> HeaderValue {
    let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-00";
    put_hex(&mut buf[3..35], ctx.trace_id);
    put_hex(&mut buf[36..52], u128::from(ctx.span_id));
    if ctx.sampled {
        buf[54] = b'1';
    }
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

impl Check for Tracing {
    fn check(&self, req: &mut Req) -> Result<(), Resp> {
        let ctx = self.context(req.headers());
        apply(req, ctx);
        Ok(())
    }
}

/// Emit `ctx` upstream in both formats (W3C and B3 multi-header) and record it in the
/// request's extensions (for the access log).
pub fn apply(req: &mut Req, ctx: TraceCtx) {
    {
        let h = req.headers_mut();
        h.insert(TRACEPARENT, traceparent_value(&ctx));
        h.remove(B3);
        h.insert(B3_TRACE_ID, hex_value(ctx.trace_id, 32));
        h.insert(B3_SPAN_ID, hex_value(u128::from(ctx.span_id), 16));
        if ctx.parent_id != 0 {
            h.insert(B3_PARENT_SPAN_ID, hex_value(u128::from(ctx.parent_id), 16));
        } else {
            h.remove(B3_PARENT_SPAN_ID);
        }
        h.insert(
            B3_SAMPLED,
            HeaderValue::from_static(if ctx.sampled { "1" } else { "0" }),
        );
    }
    req.extensions_mut().insert(ctx);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn traceparent_is_continued_with_a_new_span() {
        let t = Tracing::new(0.0);
        let ctx = t.context(&headers(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]));
        assert_eq!(ctx.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(ctx.parent_id, 0x00f067aa0ba902b7);
        assert_ne!(ctx.span_id, ctx.parent_id);
        assert!(ctx.sampled);
    }

    #[test]
    fn invalid_traceparent_starts_a_new_trace() {
        let t = Tracing::new(1.0);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let ctx = t.context(&headers(&[("traceparent", bad)]));
            assert_eq!(ctx.parent_id, 0, "{bad}");
            assert!(ctx.sampled);
        }
    }

    #[test]
    fn b3_single_and_multi_are_understood() {
        let t = Tracing::new(0.0);
        let ctx = t.context(&headers(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
        )]));
        assert_eq!(ctx.trace_id, 0x80f198ee56343ba864fe8b2a57d3eff7);
        assert_eq!(ctx.parent_id, 0xe457b5a2e4d86bd1);
        assert!(ctx.sampled);
        let ctx = t.context(&headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "0"),
        ]));
        assert_eq!(ctx.trace_id, 0x463ac35c9f6413ad);
        assert!(!ctx.sampled);
    }

    #[test]
    fn emitted_headers_are_zero_padded_lowercase_hex() {
        let t = Tracing::with_seed(0.5, 7);
        let mut ctxs: Vec<TraceCtx> = (0..200).map(|_| t.context(&HeaderMap::new())).collect();
        ctxs.push(TraceCtx {
            trace_id: 0xab,
            span_id: 1,
            parent_id: 0x0f,
            sampled: true,
        });
        ctxs.push(TraceCtx {
            trace_id: u128::MAX,
            span_id: u64::MAX,
            parent_id: 0,
            sampled: false,
        });
        for ctx in ctxs {
            let mut req = Req::new(http_body_util::Full::new(bytes::Bytes::new()));
            apply(&mut req, ctx);
            let h = req.headers();
            let get = |n: &str| h.get(n).map(|v| v.to_str().unwrap_or("?").to_owned());
            let flags = if ctx.sampled { "01" } else { "00" };
            assert_eq!(
                get("traceparent"),
                Some(format!(
                    "00-{:032x}-{:016x}-{flags}",
                    ctx.trace_id, ctx.span_id
                ))
            );
            assert_eq!(get("x-b3-traceid"), Some(format!("{:032x}", ctx.trace_id)));
            assert_eq!(get("x-b3-spanid"), Some(format!("{:016x}", ctx.span_id)));
            assert_eq!(
                get("x-b3-parentspanid"),
                (ctx.parent_id != 0).then(|| format!("{:016x}", ctx.parent_id))
            );
            assert_eq!(
                get("x-b3-sampled").as_deref(),
                Some(if ctx.sampled { "1" } else { "0" })
            );
            // What this hop emits, the next hop reads back.
            let next = t.context(h);
            assert_eq!(
                (next.trace_id, next.parent_id, next.sampled),
                (ctx.trace_id, ctx.span_id, ctx.sampled)
            );
        }
    }

    #[test]
    fn sampling_rate_is_respected() {
        let t = Tracing::new(0.25);
        let sampled = (0..20_000)
            .filter(|_| t.context(&HeaderMap::new()).sampled)
            .count();
        assert!((4_000..6_000).contains(&sampled), "{sampled}");
        let never = Tracing::new(0.0);
        assert!((0..1000).all(|_| !never.context(&HeaderMap::new()).sampled));
    }
}
