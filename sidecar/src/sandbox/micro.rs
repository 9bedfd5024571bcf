//! Micro benchmark of per-request isolation, in-process and single-threaded (no sockets):
//!
//! * `empty guest`: a fresh instance of a trivial module (store, pooled instance, input
//!   write, one call, drop): the sandbox creation cost alone;
//! * `per-request chain`: [`SandboxLayer::decide`] + [`SandboxLayer::apply`] for the
//!   header-only chain (mTLS request check, ports, authz, tracing) on a typical request,
//!   i.e. creation + config and input writes + the policies in wasm + decoding + header
//!   edits;
//! * `after idle release`: the same on the first request after an idle release, which
//!   compiles the chain module (engine, pool, code) again;
//! * `same, keep 128 KiB/slot`: the per-request chain with `keep_resident_bytes = 131072`;
//! * `shared chain`: the same four policies as the shared-mode tower checks on the same
//!   request;
//! * [`idle_memory`]: anonymous RSS of the shared chain module, per further function while it
//!   is held, and per function after the idle release (20 functions in this process).
//!
//! Each timing is one call measured with `Instant` (tens of ns of timer overhead included);
//! the mean comes from the total over all iterations.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderValue, Request};
use http_body_util::Full;
use serde::Serialize;

use super::layer::{ChainParts, SandboxLayer};
use super::{HostShared, Limits, Sandbox, SandboxError};
use crate::config::{Config, MtlsMode, Protocol};
use crate::http::{ConnInfo, ListenerKind, Req};
use crate::policy::Check;
use crate::policy::authz::Authz;
use crate::policy::mtls::Mtls;
use crate::policy::ports::Ports;
use crate::policy::tracing::Tracing;
use crate::stats::Stats;

/// One timed operation.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    /// What was timed.
    pub name: String,
    /// Mean, microseconds.
    pub mean_us: f64,
    /// Median, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
}

/// The timings.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxMicro {
    /// Iterations per timing (after as many warm-up iterations).
    pub iterations: u64,
    /// Fresh instance of an empty guest.
    pub empty_guest: Timing,
    /// Fresh instance running the header-only chain, edits applied.
    pub per_request_chain: Timing,
    /// The header-only chain on the first request after an idle release: the module, its
    /// engine and pool compiled again, then the request decided.
    pub after_release: Timing,
    /// Fresh instance running the header-only chain with `keep_resident_bytes = 131072`.
    pub per_request_chain_resident: Timing,
    /// The same chain as shared-mode checks.
    pub shared_chain: Timing,
    /// Resident memory per function of idle chain sandboxes in one process.
    pub idle: IdleMemory,
}

/// Anonymous resident memory (`RssAnon`) of `functions` header-only chain sandboxes
/// (functions with distinct authz rules) held by one process with no request in flight, each
/// having decided one request: the chain module they share, what each further function adds
/// while they hold it, and what each keeps after the idle release.
#[derive(Debug, Clone, Serialize)]
pub struct IdleMemory {
    /// Sandboxes (functions) measured.
    pub functions: usize,
    /// KiB of the first function: the shared chain module (engine, pool, code) and its state.
    pub module_kib: f64,
    /// KiB per further function while the module is held (its config blob and layer).
    pub compiled_kib_per_function: f64,
    /// KiB per function after every one was released (what an idle function keeps).
    pub released_kib_per_function: f64,
}

/// `RssAnon` of this process, KiB (None where /proc does not have it).
fn anon_kib() -> Option<i64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Measure [`IdleMemory`] with `functions` sandboxes (NaN where /proc has no `RssAnon`).
pub fn idle_memory(functions: usize) -> Result<IdleMemory, SandboxError> {
    let functions = functions.max(1);
    let template = request();
    // Trimmed baseline: what earlier work freed must not count as released by these.
    super::trim_allocator();
    let before = anon_kib();
    let mut layers = Vec::with_capacity(functions);
    let mut first = None;
    for i in 0..functions {
        let text = CONFIG.replace("/admin/*", &format!("/admin-{i}/*"));
        let config =
            Config::from_toml_str(&text).map_err(|e| SandboxError::Compile(e.to_string()))?;
        let layer = chain_layer(&config, 0)?;
        layer.decide(&template)?;
        layers.push(layer);
        if i == 0 {
            first = anon_kib();
        }
    }
    let all = anon_kib();
    for l in &layers {
        l.sandbox().release();
    }
    let released = anon_kib();
    let diff = |a: Option<i64>, b: Option<i64>, n: usize| match (a, b) {
        (Some(a), Some(b)) => (b - a) as f64 / n.max(1) as f64,
        _ => f64::NAN,
    };
    Ok(IdleMemory {
        functions,
        module_kib: diff(before, first, 1),
        compiled_kib_per_function: diff(first, all, functions - 1),
        released_kib_per_function: diff(before, released, functions),
    })
}

/// The header-only chain of [`CONFIG`] as the micro benchmark runs it.
fn chain_layer(config: &Config, keep_resident_bytes: usize) -> Result<SandboxLayer, SandboxError> {
    SandboxLayer::new(
        &config.policies,
        ChainParts {
            mtls: Some((MtlsMode::Permissive, OWN.to_owned())),
            ports: Some((vec![8080], vec![Protocol::Http1, Protocol::Http2])),
            jwt: None,
            rate_limit: None,
            tracing: Some(Arc::new(Tracing::new(0.01))),
        },
        Limits {
            keep_resident_bytes,
            ..Limits::from(&config.sandbox)
        },
        Arc::new(Stats::default()),
    )
}

const EMPTY_GUEST: &str = r#"(module (memory (export "memory") 1)
  (global (export "input_base") i32 (i32.const 1024))
  (func (export "run") (param i32 i32) (result i32) (i32.const 0)))"#;

const CONFIG: &str = r#"
version = 1
function = "micro"
[inbound]
listen = "127.0.0.1:0"
upstream = ["127.0.0.1:9"]
[identity]
trust_domain = "cluster.local"
namespace = "bench"
service_account = "function"
certs = { kind = "generate" }
[policies.mtls]
mode = "permissive"
[policies.ports]
inbound_ports = [8080]
protocols = ["http1", "http2"]
upstream_ports = [9]
[[policies.authz.rules]]
action = "deny"
paths = ["/admin/*"]
[[policies.authz.rules]]
action = "allow"
methods = ["GET", "POST"]
paths = ["/bench*"]
headers = { "x-tenant" = ["bench*"] }
[policies.tracing]
sampling = 0.01
"#;

const OWN: &str = "spiffe://cluster.local/ns/bench/sa/function";

fn request() -> Req {
    let mut r = Request::builder()
        .uri("/bench/item?id=1")
        .header("host", "fn.bench")
        .header("x-tenant", "bench-1")
        .header("user-agent", "meshsim-bench")
        .header("accept", "*/*")
        .body(Full::new(Bytes::new()))
        .unwrap_or_default();
    r.headers_mut().insert(
        "traceparent",
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    r.extensions_mut().insert(Arc::new(ConnInfo {
        remote: std::net::SocketAddr::from(([127, 0, 0, 1], 40_000)),
        local_port: 8080,
        listener: ListenerKind::Inbound,
        peer: Some(Arc::from("spiffe://cluster.local/ns/bench/sa/loadgen")),
        tls: true,
        framing_conflict: Arc::new(AtomicBool::new(false)),
    }));
    r
}

fn time(
    name: &str,
    iterations: u64,
    mut f: impl FnMut() -> Result<(), SandboxError>,
) -> Result<Timing, SandboxError> {
    for _ in 0..iterations.min(10_000) {
        f()?;
    }
    let mut h = Histogram::<u64>::new(3).map_err(|e| SandboxError::Compile(e.to_string()))?;
    let t0 = Instant::now();
    for _ in 0..iterations {
        let t = Instant::now();
        f()?;
        let _ = h.record(t.elapsed().as_nanos() as u64);
    }
    let total = t0.elapsed().as_nanos() as f64;
    Ok(Timing {
        name: name.to_owned(),
        mean_us: total / iterations.max(1) as f64 / 1e3,
        p50_us: h.value_at_quantile(0.5) as f64 / 1e3,
        p99_us: h.value_at_quantile(0.99) as f64 / 1e3,
    })
}

/// Run the timings, `iterations` each (`iterations / 1000`, 5..=50, for the recompile).
pub fn run(iterations: u64) -> Result<SandboxMicro, SandboxError> {
    let iterations = iterations.max(1);
    let empty = Sandbox::new(
        EMPTY_GUEST,
        Limits::default(),
        Arc::new(HostShared::default()),
    )?;
    let empty_guest = time("empty guest (creation)", iterations, || {
        empty.run(|_| vec![0u8; 64], |_, _| Ok(()))
    })?;

    let config = Config::from_toml_str(CONFIG).map_err(|e| SandboxError::Compile(e.to_string()))?;
    let p = &config.policies;
    let template = request();
    let decide = |layer: &SandboxLayer| -> Result<(), SandboxError> {
        let mut req = crate::policy::clone_request(&template);
        let d = layer.decide(&req)?;
        if d.deny.is_some() {
            return Err(SandboxError::Trap("the bench request was denied".into()));
        }
        SandboxLayer::apply(&d, &mut req);
        Ok(())
    };
    let layer = chain_layer(&config, 0)?;
    let per_request_chain = time("per-request chain", iterations, || decide(&layer))?;
    // The first request after an idle release compiles the module (engine, pool, code) again.
    let after_release = time(
        "  after idle release",
        (iterations / 1000).clamp(5, 50),
        || {
            layer.sandbox().release();
            decide(&layer)
        },
    )?;
    drop(layer);
    let resident = chain_layer(&config, 128 * 1024)?;
    let per_request_chain_resident = time("  same, keep 128 KiB/slot", iterations, || {
        decide(&resident)
    })?;

    let checks: Vec<Box<dyn Check>> = vec![
        Box::new(Mtls::new(MtlsMode::Permissive, OWN.to_owned())),
        Box::new(Ports::new(
            vec![8080],
            vec![Protocol::Http1, Protocol::Http2],
        )),
        Box::new(Authz::new(p.authz.as_ref().ok_or(
            SandboxError::Compile("micro config has no authz".into()),
        )?)),
        Box::new(Tracing::new(0.01)),
    ];
    let shared_chain = time("shared chain", iterations, || {
        let mut req = crate::policy::clone_request(&template);
        for c in &checks {
            if c.check(&mut req).is_err() {
                return Err(SandboxError::Trap("the bench request was denied".into()));
            }
        }
        Ok(())
    })?;
    Ok(SandboxMicro {
        iterations,
        empty_guest,
        per_request_chain,
        after_release,
        per_request_chain_resident,
        shared_chain,
        idle: idle_memory(20)?,
    })
}

impl SandboxMicro {
    /// A text table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<28} {:>9} {:>9} {:>9}\n",
            "operation (per request)", "mean us", "p50 us", "p99 us"
        );
        // Timings include the request clone (a few hundred ns), the same for both chains.
        for t in [
            &self.empty_guest,
            &self.per_request_chain,
            &self.after_release,
            &self.per_request_chain_resident,
            &self.shared_chain,
        ] {
            s += &format!(
                "{:<28} {:>9.2} {:>9.2} {:>9.2}\n",
                t.name, t.mean_us, t.p50_us, t.p99_us
            );
        }
        s += &format!(
            "memory ({} chain sandboxes in one process, RssAnon): shared chain module {:.0} KiB; per function while held {:.1} KiB, after idle release {:.1} KiB\n",
            self.idle.functions,
            self.idle.module_kib,
            self.idle.compiled_kib_per_function,
            self.idle.released_kib_per_function
        );
        s
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn micro_bench_runs() {
        let m = super::run(50).expect("runs");
        assert_eq!(m.iterations, 50);
        assert!(m.table().contains("per-request chain"));
    }
}
