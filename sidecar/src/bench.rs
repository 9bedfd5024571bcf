//! The measurement harness behind `meshsim-sidecar bench` (and, later, `meshsim calibrate`).
//!
//! For one policy set at one rate, [`Harness::measure_target`] starts a fresh sidecar **process**
//! (`meshsim-sidecar serve`) in front of an in-process upstream, waits for its first served
//! request (start-up time), drives an **open-loop** load at a fixed rate (request `i` is due at
//! `t0 + i/rate`; its latency is measured from that intended time, so a stalled proxy cannot
//! hide its stall: no coordinated omission), and reports the proxy's CPU time per request
//! (ns resolution, from `/proc/<pid>/task/*/schedstat` of the proxy's processes over the
//! measured phase; 10 ms `/proc/<pid>/stat` ticks where schedstat is missing), latency percentiles
//! (hdrhistogram), the added latency against a direct call to the upstream at the same rate,
//! and RSS (`/proc/<pid>/statm`). The same load through nginx (Debian package, started with a
//! generated reverse-proxy config) gives the reference.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use jsonwebtoken::Algorithm;
use serde::Serialize;

use crate::calibration::HandshakeCost;
use crate::config::Isolation;
use crate::pki::Pki;
use crate::policy::jwt::TestIssuer;
use crate::upstream::Connector;

pub mod instructions;

/// The nine policies, in request order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// (1) mTLS.
    Mtls,
    /// (2) Ports/protocols.
    Ports,
    /// (3) JWT authn.
    Jwt,
    /// (4) Authz.
    Authz,
    /// (5) Global rate limit (Redis).
    RateLimit,
    /// (6) Tracing headers.
    Tracing,
    /// (7) Access logs.
    AccessLog,
    /// (8) Retries.
    Retry,
    /// (9) Circuit breaking.
    CircuitBreaker,
}

impl Policy {
    /// All nine.
    pub const ALL: [Policy; 9] = [
        Policy::Mtls,
        Policy::Ports,
        Policy::Jwt,
        Policy::Authz,
        Policy::RateLimit,
        Policy::Tracing,
        Policy::AccessLog,
        Policy::Retry,
        Policy::CircuitBreaker,
    ];

    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Mtls => "mtls",
            Policy::Ports => "ports",
            Policy::Jwt => "jwt",
            Policy::Authz => "authz",
            Policy::RateLimit => "rate_limit",
            Policy::Tracing => "tracing",
            Policy::AccessLog => "access_log",
            Policy::Retry => "retry",
            Policy::CircuitBreaker => "circuit_breaker",
        }
    }
}

/// What sits between the load generator and the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySet {
    /// The sidecar with no policy.
    PassThrough,
    /// The sidecar with one policy.
    Only(Policy),
    /// The sidecar with all nine.
    All,
    /// The header-only chain: ports, authz and tracing (no crypto, no I/O), the chain the
    /// per-request sandbox is measured with.
    HeaderOnly,
}

impl PolicySet {
    /// Pass-through, each policy alone, all nine.
    pub fn standard() -> Vec<PolicySet> {
        let mut v = vec![PolicySet::PassThrough];
        v.extend(Policy::ALL.iter().map(|p| PolicySet::Only(*p)));
        v.push(PolicySet::All);
        v
    }

    /// Name used in tables and calibration files.
    pub fn name(&self) -> String {
        match self {
            PolicySet::PassThrough => "pass-through".into(),
            PolicySet::Only(p) => p.name().into(),
            PolicySet::All => "all-nine".into(),
            PolicySet::HeaderOnly => "header-only".into(),
        }
    }

    fn has(&self, p: Policy) -> bool {
        match self {
            PolicySet::PassThrough => false,
            PolicySet::Only(q) => *q == p,
            PolicySet::All => true,
            PolicySet::HeaderOnly => matches!(p, Policy::Ports | Policy::Authz | Policy::Tracing),
        }
    }
}

/// The system under load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Straight to the upstream (the baseline for added latency).
    Direct,
    /// The reference sidecar.
    Sidecar(PolicySet),
    /// nginx as a plain reverse proxy.
    Nginx,
}

impl Target {
    /// Name for tables.
    pub fn name(&self) -> String {
        match self {
            Target::Direct => "direct".into(),
            Target::Sidecar(p) => p.name(),
            Target::Nginx => "nginx".into(),
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// `direct`, `nginx`, or the sidecar policy set name.
    pub target: String,
    /// Offered rate, requests per second.
    pub rate_rps: u64,
    /// Measured phase, seconds (after warm-up).
    pub duration_s: f64,
    /// Requests sent in the measured phase.
    pub sent: u64,
    /// Requests answered 200.
    pub ok: u64,
    /// Other statuses, transport errors and timeouts.
    pub errors: u64,
    /// Failures by kind.
    pub failures: std::collections::BTreeMap<String, u64>,
    /// Proxy CPU (user + system, every live thread of its processes, ns resolution) per
    /// request, microseconds (None for `direct`).
    pub cpu_us_per_request: Option<f64>,
    /// Latency from intended send time, microseconds.
    pub latency_p50_us: u64,
    /// p99 latency, microseconds.
    pub latency_p99_us: u64,
    /// Added p50 latency vs the direct call at the same rate (filled by the caller).
    pub added_p50_us: Option<i64>,
    /// Added p99 latency vs the direct call.
    pub added_p99_us: Option<i64>,
    /// Resident set size of the proxy (all its processes), KiB, at the end of the run.
    pub rss_kib: Option<u64>,
    /// Process start to first request served through it, milliseconds.
    pub startup_ms: Option<f64>,
    /// RSS of the proxy, KiB, after `Options::idle_settle` with no request in flight.
    pub idle_rss_kib: Option<u64>,
    /// The anonymous (private) part of `idle_rss_kib` (`RssAnon`): what a function's proxy
    /// really adds to a node; the rest is mostly the executable's pages, shared by every
    /// proxy running the same binary.
    pub idle_anon_kib: Option<u64>,
    /// CPU per request over nginx's, paired by round (see [`run_suite`]): the median, lowest
    /// and highest of the per-round ratios. None without nginx or for nginx and `direct`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x_nginx_paired: Option<Paired>,
    /// CPU per request over the pass-through's, paired by round: the median, lowest and
    /// highest of the per-round differences, microseconds. A drift of the machine's speed
    /// between rounds moves both terms of a difference, so its median is steadier than the
    /// difference of the two medians. None without a pass-through in the run, or for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub over_pass_through_paired: Option<Paired>,
}

/// Per-round statistics of one target against another measured in the same round (ratios
/// or differences of CPU per request).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Paired {
    /// Median over rounds.
    pub median: f64,
    /// Lowest round.
    pub min: f64,
    /// Highest round.
    pub max: f64,
}

impl Paired {
    /// From the per-round values (non-finite ones dropped; None when none is left).
    pub fn of(mut values: Vec<f64>) -> Option<Paired> {
        values.retain(|r| r.is_finite());
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Some(Paired {
            median,
            min: values[0],
            max: values[n - 1],
        })
    }
}

/// Harness errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BenchError(String);

fn err(context: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError(format!("{context}: {e}"))
}

/// Harness options.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `meshsim-sidecar` executable to run as the proxy.
    pub sidecar_bin: PathBuf,
    /// Redis for the rate-limit policy.
    pub redis_url: String,
    /// nginx executable.
    pub nginx_bin: PathBuf,
    /// Warm-up before the measured phase.
    pub warmup: Duration,
    /// Per-request timeout of the load generator.
    pub request_timeout: Duration,
    /// Sidecar worker threads (1 = current-thread runtime, comparable to one nginx worker).
    pub worker_threads: usize,
    /// Policy isolation of the sidecar under test (`runtime.isolation`).
    pub isolation: Isolation,
    /// `sandbox.keep_resident_bytes` of the sidecar under test (per-request isolation).
    pub sandbox_keep_resident_bytes: u64,
    /// After the measured phase, wait this long with no request in flight and sample the
    /// proxy's RSS again (`Measurement::idle_rss_kib`); zero skips it.
    pub idle_settle: Duration,
    /// Key algorithm of the bench's CA and workload certificates (mTLS).
    pub key_algorithm: crate::pki::KeyAlgorithm,
    /// `runtime.lean_http1` of the sidecar under test. Only the pass-through (no policy)
    /// depends on it: `true` (the default) serves it through the lean HTTP/1.1 path, `false`
    /// through hyper's pipeline with no layer, which is what calibration files measure (see
    /// `meshsim calibrate`).
    pub lean_http1: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sidecar_bin: std::env::current_exe().unwrap_or_else(|_| "meshsim-sidecar".into()),
            redis_url: std::env::var("MESHSIM_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379/".into()),
            nginx_bin: "nginx".into(),
            warmup: Duration::from_secs(1),
            request_timeout: Duration::from_secs(2),
            worker_threads: 1,
            isolation: Isolation::Shared,
            sandbox_keep_resident_bytes: 0,
            idle_settle: Duration::ZERO,
            key_algorithm: crate::pki::KeyAlgorithm::EcdsaP256,
            lean_http1: true,
        }
    }
}

/// The harness: upstream, certificates, JWT keys and a runtime for the load generator.
pub struct Harness {
    opts: Options,
    rt: tokio::runtime::Runtime,
    dir: PathBuf,
    upstream: SocketAddr,
    pki: Pki,
    token: String,
    client_tls: Arc<rustls::ClientConfig>,
    clk_tck: f64,
    page_kib: u64,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("dir", &self.dir)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const SERVER_ID: &str = "spiffe://cluster.local/ns/bench/sa/function";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/bench/sa/loadgen";
const ISSUER: &str = "https://issuer.bench";
const AUDIENCE: &str = "bench-fn";

fn getconf(name: &str, default: u64) -> u64 {
    Command::new("getconf")
        .arg(name)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

/// Measure one policy set with default options (the sidecar binary is this executable),
/// including a direct baseline for the added latency. Builds a fresh [`Harness`] (CA, JWT
/// key, upstream) per call: to measure many points, build one `Harness` and call
/// [`Harness::measure_target`] or [`run_suite`].
pub fn measure(
    policy_set: &PolicySet,
    rate_rps: u64,
    duration: Duration,
) -> Result<Measurement, BenchError> {
    let h = Harness::new(Options::default())?;
    let direct = h.measure_target(&Target::Direct, rate_rps, duration)?;
    let mut m = h.measure_target(&Target::Sidecar(policy_set.clone()), rate_rps, duration)?;
    m.set_added(&direct);
    Ok(m)
}

impl Measurement {
    /// Fill the added-latency fields from a direct measurement at the same rate.
    pub fn set_added(&mut self, direct: &Measurement) {
        self.added_p50_us = Some(self.latency_p50_us as i64 - direct.latency_p50_us as i64);
        self.added_p99_us = Some(self.latency_p99_us as i64 - direct.latency_p99_us as i64);
    }
}

impl Harness {
    /// Start the upstream, generate the CA, workload certificates, JWKS and a token.
    pub fn new(opts: Options) -> Result<Harness, BenchError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| err("runtime", e))?;
        let dir = std::env::temp_dir().join(format!("meshsim-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| err("bench dir", e))?;
        let upstream = rt.block_on(start_upstream())?;
        let pki =
            Pki::generate_with("cluster.local", opts.key_algorithm).map_err(|e| err("ca", e))?;
        let server = pki.issue(SERVER_ID).map_err(|e| err("issue", e))?;
        let write =
            |name: &str, text: &str| std::fs::write(dir.join(name), text).map_err(|e| err(name, e));
        write("ca.pem", pki.ca_pem())?;
        write("cert.pem", &server.cert_pem)?;
        write("key.pem", &server.key_pem)?;
        let issuer =
            TestIssuer::generate(Algorithm::RS256, "bench-1").map_err(|e| err("jwt key", e))?;
        write("jwks.json", &TestIssuer::jwks(&[&issuer]))?;
        let mut claims = TestIssuer::claims(ISSUER, AUDIENCE, "loadgen");
        claims["exp"] = (claims["exp"].as_u64().unwrap_or(0) + 86_400).into();
        let token = issuer.sign(&claims);
        let client_tls = pki
            .materials(CLIENT_ID)
            .and_then(|m| m.client_config(Some(SERVER_ID)))
            .map_err(|e| err("client tls", e))?;
        warm_up_tls(&pki, client_tls.clone())?;
        Ok(Harness {
            clk_tck: getconf("CLK_TCK", 100) as f64,
            page_kib: getconf("PAGESIZE", 4096) / 1024,
            opts,
            rt,
            dir,
            upstream,
            pki,
            token,
            client_tls,
        })
    }

    /// The options the harness runs with.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// The CA the harness issued the sidecar's certificate from.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The sidecar config for a policy set (TOML), listening on `port`.
    pub fn sidecar_config(&self, set: &PolicySet, port: u16) -> String {
        let d = self.dir.display();
        let mut c = format!(
            "version = 1\nfunction = \"bench-fn\"\n[runtime]\nworker_threads = {}\nisolation = \"{}\"\n[inbound]\nlisten = \"127.0.0.1:{port}\"\nupstream = [\"{}\"]\n",
            self.opts.worker_threads,
            self.opts.isolation.as_str(),
            self.upstream
        );
        if !self.opts.lean_http1 {
            // Only when off: an older `--sidecar-bin` without the key still parses the config.
            c = c.replace("[inbound]\n", "lean_http1 = false\n[inbound]\n");
        }
        if self.opts.sandbox_keep_resident_bytes > 0 {
            c += &format!(
                "[sandbox]\nkeep_resident_bytes = {}\n",
                self.opts.sandbox_keep_resident_bytes
            );
        }
        if set.has(Policy::Mtls) {
            c += &format!(
                "[identity]\ntrust_domain = \"cluster.local\"\nnamespace = \"bench\"\nservice_account = \"function\"\ncerts = {{ kind = \"files\", ca = \"{d}/ca.pem\", cert = \"{d}/cert.pem\", key = \"{d}/key.pem\" }}\n[policies.mtls]\nmode = \"strict\"\nallowed_peers = [\"spiffe://cluster.local/ns/bench/*\"]\n"
            );
        }
        if set.has(Policy::Ports) {
            c += &format!(
                "[policies.ports]\nprotocols = [\"http1\", \"http2\"]\nupstream_ports = [{}]\n",
                self.upstream.port()
            );
        }
        if set.has(Policy::Jwt) {
            c += &format!(
                "[policies.jwt]\nissuer = \"{ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\njwks_file = \"{d}/jwks.json\"\nforward_claims = [\"sub\"]\n"
            );
        }
        if set.has(Policy::Authz) {
            c += "[[policies.authz.rules]]\naction = \"deny\"\npaths = [\"/admin/*\"]\n[[policies.authz.rules]]\naction = \"allow\"\nmethods = [\"GET\", \"POST\"]\npaths = [\"/bench*\"]\nheaders = { \"x-tenant\" = [\"bench*\"] }\n";
        }
        if set.has(Policy::RateLimit) {
            c += &format!(
                "[policies.rate_limit]\nredis_url = \"{}\"\nrequests_per_window = 1000000000\nwindow_s = 1\nkey = {{ kind = \"source\" }}\nfailure_mode = \"closed\"\nredis_timeout_ms = 1000\nlocal = {{ capacity = 100000, refill_per_s = 100000 }}\n",
                self.opts.redis_url
            );
        }
        if set.has(Policy::Tracing) {
            c += "[policies.tracing]\nsampling = 0.01\n";
        }
        if set.has(Policy::AccessLog) {
            c += &format!("[policies.access_log]\npath = \"{d}/access-{port}.log\"\n");
        }
        if set.has(Policy::Retry) {
            c += "[policies.retry]\nmax_retries = 2\n";
        }
        if set.has(Policy::CircuitBreaker) {
            c += "[policies.circuit_breaker]\nmax_connections = 1024\nmax_pending = 1024\nmax_requests = 1024\nconsecutive_5xx = 5\n";
        }
        c
    }

    /// Measure one target at one rate for `duration` (after the warm-up).
    pub fn measure_target(
        &self,
        target: &Target,
        rate_rps: u64,
        duration: Duration,
    ) -> Result<Measurement, BenchError> {
        self.run_target(target, rate_rps, duration, None)
            .map(|(m, _)| m)
    }

    /// A soak: like [`Harness::measure_target`] for a sidecar, also sampling the proxy's RSS
    /// (KiB) every `every` during the measured phase.
    pub fn soak(
        &self,
        set: &PolicySet,
        rate_rps: u64,
        duration: Duration,
        every: Duration,
    ) -> Result<(Measurement, Vec<u64>), BenchError> {
        self.run_target(
            &Target::Sidecar(set.clone()),
            rate_rps,
            duration,
            Some(every),
        )
    }

    fn run_target(
        &self,
        target: &Target,
        rate_rps: u64,
        duration: Duration,
        sample_every: Option<Duration>,
    ) -> Result<(Measurement, Vec<u64>), BenchError> {
        let spawn_at = Instant::now();
        let (addr, mut proc) = match target {
            Target::Direct => (self.upstream, None),
            Target::Sidecar(set) => {
                let (addr, p) = self.spawn_sidecar(set)?;
                (addr, Some(p))
            }
            Target::Nginx => {
                let port = free_port()?;
                let child = self.spawn_nginx(port)?;
                (
                    SocketAddr::from(([127, 0, 0, 1], port)),
                    Some(Proc::new(child)),
                )
            }
        };
        let tls = matches!(target, Target::Sidecar(s) if s.has(Policy::Mtls));
        let result = self.rt.block_on(async {
            let client = LoadClient::new(addr, tls.then(|| self.client_tls.clone()), &self.token);
            let startup_ms = match &proc {
                Some(_) => Some(
                    client
                        .wait_first_ok(spawn_at, Duration::from_secs(10))
                        .await?,
                ),
                None => None,
            };
            if !self.opts.warmup.is_zero() {
                let _ = client
                    .run(rate_rps, self.opts.warmup, self.opts.request_timeout)
                    .await;
            }
            let cpu0 = proc.as_mut().map(|p| p.cpu_ns(self.clk_tck)).transpose()?;
            let pids = proc.as_ref().map(|p| p.pids()).unwrap_or_default();
            let mut samples = Vec::new();
            let load = client.run(rate_rps, duration, self.opts.request_timeout);
            let stats = match sample_every {
                None => load.await,
                Some(every) => {
                    tokio::pin!(load);
                    let mut tick = tokio::time::interval(every);
                    tick.tick().await;
                    loop {
                        tokio::select! {
                            stats = &mut load => break stats,
                            _ = tick.tick() => samples.push(
                                pids.iter().filter_map(|p| proc_stat(*p)).map(|(_, _, r)| r).sum::<u64>()
                                    * self.page_kib,
                            ),
                        }
                    }
                }
            };
            let cpu1 = proc.as_mut().map(|p| p.cpu_ns(self.clk_tck)).transpose()?;
            let rss_kib = proc
                .as_mut()
                .map(|p| p.rss_pages())
                .transpose()?
                .map(|p| p * self.page_kib);
            let (idle_rss_kib, idle_anon_kib) = match proc.as_mut() {
                Some(p) if !self.opts.idle_settle.is_zero() => {
                    tokio::time::sleep(self.opts.idle_settle).await;
                    (Some(p.rss_pages()? * self.page_kib), Some(p.anon_kib()))
                }
                _ => (None, None),
            };
            let cpu_us_per_request = match (cpu0, cpu1) {
                (Some(a), Some(b)) if stats.sent > 0 => {
                    Some((b.saturating_sub(a)) as f64 / 1e3 / stats.sent as f64)
                }
                _ => None,
            };
            let name = match (target, self.opts.isolation) {
                (Target::Sidecar(_), Isolation::PerRequest) => {
                    format!("{}/per-request", target.name())
                }
                _ => target.name(),
            };
            Ok::<_, BenchError>((Measurement {
                target: name,
                rate_rps,
                duration_s: duration.as_secs_f64(),
                sent: stats.sent,
                ok: stats.ok,
                errors: stats.sent - stats.ok,
                failures: stats.failures.clone(),
                cpu_us_per_request,
                latency_p50_us: stats.hist.value_at_quantile(0.50),
                latency_p99_us: stats.hist.value_at_quantile(0.99),
                added_p50_us: None,
                added_p99_us: None,
                rss_kib,
                startup_ms,
                idle_rss_kib,
                idle_anon_kib,
                x_nginx_paired: None,
                over_pass_through_paired: None,
            }, samples))
        });
        if let Some(p) = proc {
            p.stop();
        }
        result
    }

    /// Starts a sidecar process for `set` on a free loopback port (stderr to the scratch dir).
    fn spawn_sidecar(&self, set: &PolicySet) -> Result<(SocketAddr, Proc), BenchError> {
        self.spawn_sidecar_wrapped(set, &[])
    }

    /// [`Harness::spawn_sidecar`] under a wrapper command (`wrap[0] wrap[1..] sidecar serve ...`,
    /// e.g. valgrind); an empty `wrap` runs the sidecar itself.
    fn spawn_sidecar_wrapped(
        &self,
        set: &PolicySet,
        wrap: &[String],
    ) -> Result<(SocketAddr, Proc), BenchError> {
        let port = free_port()?;
        let cfg = self.dir.join(format!("sidecar-{port}.toml"));
        std::fs::write(&cfg, self.sidecar_config(set, port)).map_err(|e| err("config", e))?;
        let stderr = std::fs::File::create(self.dir.join(format!("sidecar-{port}.stderr")))
            .map_err(|e| err("stderr file", e))?;
        let child = wrapped(&self.opts.sidecar_bin, wrap)
            .arg("serve")
            .arg("--config")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| err(&format!("spawning {}", self.opts.sidecar_bin.display()), e))?;
        Ok((SocketAddr::from(([127, 0, 0, 1], port)), Proc::new(child)))
    }

    /// The cost of a full mTLS handshake on a new connection (see
    /// [`crate::calibration::HandshakeCost`]): one sidecar process with the mTLS policy, driven
    /// at `rate_cps` for `duration` twice, first over reused keep-alive connections, then with
    /// every request on a fresh connection (no TLS session resumption, so each is a full
    /// handshake). Per request, the fresh phase minus the reused phase is the handshake: sidecar
    /// CPU (all its threads, ns resolution from `/proc/<pid>/task/*/schedstat`), load-generator
    /// CPU (this process's threads: the same rustls + aws-lc client), and latency percentiles.
    pub fn measure_handshake(
        &self,
        rate_cps: u64,
        duration: Duration,
    ) -> Result<HandshakeCost, BenchError> {
        let set = PolicySet::Only(Policy::Mtls);
        let spawn_at = Instant::now();
        let (addr, mut proc) = self.spawn_sidecar(&set)?;
        let mut fresh_cfg = (*self.client_tls).clone();
        fresh_cfg.resumption = rustls::client::Resumption::disabled();
        let result = self.rt.block_on(async {
            let reused = LoadClient::new(addr, Some(self.client_tls.clone()), &self.token);
            let fresh = LoadClient::fresh_connections(addr, Arc::new(fresh_cfg), &self.token);
            reused
                .wait_first_ok(spawn_at, Duration::from_secs(10))
                .await?;
            let warmup = self.opts.warmup.min(Duration::from_millis(500));
            let _ = reused
                .run(rate_cps, warmup, self.opts.request_timeout)
                .await;
            let _ = fresh.run(rate_cps, warmup, self.opts.request_timeout).await;
            let me = std::process::id();
            let mut phase = async |client: &LoadClient| {
                let s0 = proc.cpu_ns(self.clk_tck)?;
                let c0 = cpu_ns(me, self.clk_tck);
                let stats = client
                    .run(rate_cps, duration, self.opts.request_timeout)
                    .await;
                let s1 = proc.cpu_ns(self.clk_tck)?;
                let c1 = cpu_ns(me, self.clk_tck);
                let per =
                    |a: u64, b: u64| b.saturating_sub(a) as f64 / 1e3 / stats.sent.max(1) as f64;
                Ok::<_, BenchError>((per(s0, s1), per(c0, c1), stats))
            };
            let (srv_r, cli_r, st_r) = phase(&reused).await?;
            let (srv_f, cli_f, st_f) = phase(&fresh).await?;
            let p = |st: &LoadStats, q: f64| st.hist.value_at_quantile(q) as f64;
            // Negative differences are noise (a handshake cannot save CPU); 0.01 µs is plenty.
            let us = |d: f64| (d.max(0.0) * 100.0).round() / 100.0;
            Ok(HandshakeCost {
                rate_cps,
                connections: st_f.sent,
                server_cpu_us: us(srv_f - srv_r),
                client_cpu_us: us(cli_f - cli_r),
                added_latency_p50_us: p(&st_f, 0.5) - p(&st_r, 0.5),
                added_latency_p99_us: p(&st_f, 0.99) - p(&st_r, 0.99),
                error_rate: (st_f.sent - st_f.ok) as f64 / st_f.sent.max(1) as f64,
            })
        });
        proc.stop();
        result
    }

    fn spawn_nginx(&self, port: u16) -> Result<Child, BenchError> {
        self.spawn_nginx_wrapped(port, &[])
    }

    /// [`Harness::spawn_nginx`] under a wrapper command. With a wrapper, nginx runs as one
    /// process (`master_process off`: the process the wrapper starts is the one that serves);
    /// without, as a master and one worker.
    fn spawn_nginx_wrapped(&self, port: u16, wrap: &[String]) -> Result<Child, BenchError> {
        let d = self.dir.join(format!("nginx-{port}"));
        std::fs::create_dir_all(&d).map_err(|e| err("nginx dir", e))?;
        let user = if is_root() { "user root;\n" } else { "" };
        let single = if wrap.is_empty() {
            ""
        } else {
            "master_process off;\n"
        };
        let conf = format!(
            "{user}{single}worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  upstream fn {{ server {up}; keepalive 256; }}\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://fn;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
            d = d.display(),
            up = self.upstream,
        );
        let conf_path = d.join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(|e| err("nginx conf", e))?;
        wrapped(&self.opts.nginx_bin, wrap)
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(&d)
            .arg("-e")
            .arg(d.join("stderr.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| err(&format!("spawning {}", self.opts.nginx_bin.display()), e))
    }
}

/// One in-memory TLS handshake with the load generator's client config, so that the first
/// use of the crypto library in this process (RNG seeding, key set-up) is not charged to the
/// proxy's start-up time.
fn warm_up_tls(pki: &Pki, client: Arc<rustls::ClientConfig>) -> Result<(), BenchError> {
    let server_cfg = pki
        .materials(SERVER_ID)
        .and_then(|m| m.server_config(&[], Vec::new()))
        .map_err(|e| err("warm-up server config", e))?;
    let mut srv = rustls::ServerConnection::new(server_cfg).map_err(|e| err("warm-up", e))?;
    let name =
        rustls_pki_types::ServerName::try_from("meshsim.peer").map_err(|e| err("warm-up", e))?;
    let mut cli = rustls::ClientConnection::new(client, name).map_err(|e| err("warm-up", e))?;
    for _ in 0..8 {
        let mut buf = Vec::new();
        cli.write_tls(&mut buf).map_err(|e| err("warm-up", e))?;
        srv.read_tls(&mut buf.as_slice())
            .map_err(|e| err("warm-up", e))?;
        srv.process_new_packets().map_err(|e| err("warm-up", e))?;
        let mut buf = Vec::new();
        srv.write_tls(&mut buf).map_err(|e| err("warm-up", e))?;
        cli.read_tls(&mut buf.as_slice())
            .map_err(|e| err("warm-up", e))?;
        cli.process_new_packets().map_err(|e| err("warm-up", e))?;
        if !cli.is_handshaking() && !srv.is_handshaking() {
            return Ok(());
        }
    }
    Err(BenchError("warm-up TLS handshake did not complete".into()))
}

/// `prog` as a command, or `wrap[0] wrap[1..] prog` when a wrapper is given.
fn wrapped(prog: &Path, wrap: &[String]) -> Command {
    match wrap.split_first() {
        None => Command::new(prog),
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(prog);
            c
        }
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn free_port() -> Result<u16, BenchError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| err("free port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| err("free port", e))
}

/// A proxy process (and, for nginx, its workers).
struct Proc {
    child: Child,
}

/// `(ppid, utime + stime, rss pages)` of one process from `/proc/<pid>/stat`.
fn proc_stat(pid: u32) -> Option<(u32, u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): ppid = field 4, utime = 14, stime = 15, rss = 24.
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let rss: u64 = f.get(21)?.parse().ok()?;
    Some((ppid, utime + stime, rss))
}

/// CPU time (user + system) of the live threads of process `pid`, ns: the sum of
/// `/proc/<pid>/task/*/schedstat` (ns resolution); where schedstat is missing, the process's
/// utime + stime ticks (which also hold its exited threads).
fn cpu_ns(pid: u32, clk_tck: f64) -> u64 {
    let from_schedstat = std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()
        .map(|dir| {
            dir.filter_map(|e| {
                let t = e.ok()?.file_name();
                let s =
                    std::fs::read_to_string(format!("/proc/{pid}/task/{}/schedstat", t.to_str()?))
                        .ok()?;
                s.split_whitespace().next()?.parse::<u64>().ok()
            })
            .sum::<u64>()
        })
        .filter(|ns| *ns > 0);
    from_schedstat.unwrap_or_else(|| {
        proc_stat(pid).map_or(0, |(_, ticks, _)| (ticks as f64 / clk_tck * 1e9) as u64)
    })
}

fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| proc_stat(*p).is_some_and(|(ppid, _, _)| ppid == pid))
        .collect()
}

impl Proc {
    fn new(child: Child) -> Proc {
        Proc { child }
    }

    fn pids(&self) -> Vec<u32> {
        let pid = self.child.id();
        let mut v = vec![pid];
        v.extend(children_of(pid));
        v
    }

    /// `RssAnon` of the process and its children, KiB.
    fn anon_kib(&self) -> u64 {
        self.pids()
            .into_iter()
            .filter_map(|pid| {
                let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                s.lines()
                    .find_map(|l| l.strip_prefix("RssAnon:"))?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    /// CPU of the live threads of the proxy and its children (nginx workers), ns (see
    /// [`cpu_ns`]).
    fn cpu_ns(&mut self, clk_tck: f64) -> Result<u64, BenchError> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(BenchError(format!("proxy exited early: {status}")));
        }
        Ok(self.pids().into_iter().map(|p| cpu_ns(p, clk_tck)).sum())
    }

    fn rss_pages(&mut self) -> Result<u64, BenchError> {
        Ok(self
            .pids()
            .into_iter()
            .filter_map(proc_stat)
            .map(|(_, _, r)| r)
            .sum())
    }

    /// SIGTERM, then wait up to 5 s, then SIGKILL.
    fn stop(self) {
        self.stop_within(Duration::from_secs(5));
    }

    /// SIGTERM, then wait up to `grace`, then SIGKILL; whether it exited by itself.
    fn stop_within(mut self, grace: Duration) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

async fn start_upstream() -> Result<SocketAddr, BenchError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| err("upstream bind", e))?;
    let addr = listener.local_addr().map_err(|e| err("upstream addr", e))?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: Request<hyper::body::Incoming>| async move {
                        let _ = req.into_body().collect().await;
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(
                        b"{\"result\":\"ok\",\"function\":\"bench-fn\",\"padding\":\"................\"}\n",
                    ))))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Result of one load phase.
#[derive(Debug)]
pub struct LoadStats {
    /// Requests sent.
    pub sent: u64,
    /// 200 responses.
    pub ok: u64,
    /// Latency from intended send time, microseconds.
    pub hist: Histogram<u64>,
    /// Failures by kind (status and denying layer, `transport`, `timeout`).
    pub failures: std::collections::BTreeMap<String, u64>,
}

/// An open-loop HTTP/1.1 load generator with a keep-alive connection pool.
#[derive(Clone)]
pub struct LoadClient {
    client: Client<Connector, Full<Bytes>>,
    uri: http::Uri,
    token: Arc<str>,
}

impl std::fmt::Debug for LoadClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadClient")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl LoadClient {
    /// Client for `addr` (over mTLS when `tls` is set) sending `Authorization: Bearer token`.
    pub fn new(
        addr: SocketAddr,
        tls: Option<Arc<rustls::ClientConfig>>,
        token: &str,
    ) -> LoadClient {
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(4096)
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(TokioTimer::new())
            .build(Connector::new(Duration::from_secs(2), tls));
        let uri = format!("http://{addr}/bench/fn?x=1")
            .parse()
            .unwrap_or_default();
        LoadClient {
            client,
            uri,
            token: token.into(),
        }
    }

    /// Client for `addr` over mTLS that opens a new connection for every request (no idle
    /// connection is kept): with `tls.resumption` disabled, each request pays a full handshake.
    pub fn fresh_connections(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        token: &str,
    ) -> LoadClient {
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .pool_timer(TokioTimer::new())
            .build(Connector::new(Duration::from_secs(2), Some(tls)));
        LoadClient {
            client,
            ..LoadClient::new(addr, None, token)
        }
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = self.uri.clone();
        let h = req.headers_mut();
        h.insert(
            http::header::HOST,
            http::HeaderValue::from_static("bench-fn.local"),
        );
        h.insert("x-tenant", http::HeaderValue::from_static("bench-tenant"));
        if let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {}", self.token)) {
            h.insert(http::header::AUTHORIZATION, v);
        }
        req
    }

    /// One request: `Ok(())` for a 200, otherwise the failure kind (`503`, `transport`, ...).
    async fn one(&self, timeout: Duration) -> Result<(), String> {
        let fut = async {
            let resp = self.client.request(self.request()).await.map_err(|e| {
                // hyper-util's Display is only the kind ("client error (Connect)"): the
                // cause (e.g. the connector's timeout) is in the source chain.
                let mut kind = format!("transport: {e}");
                let mut src = std::error::Error::source(&e);
                while let Some(c) = src {
                    kind += &format!(": {c}");
                    src = c.source();
                }
                kind
            })?;
            let status = resp.status();
            let denied = resp
                .headers()
                .get(crate::http::DENIED_BY)
                .and_then(|v| v.to_str().ok())
                .map(|s| format!(" ({s})"))
                .unwrap_or_default();
            resp.into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?;
            if status == http::StatusCode::OK {
                Ok(())
            } else {
                Err(format!("{}{denied}", status.as_u16()))
            }
        };
        tokio::time::timeout(timeout, fut)
            .await
            .unwrap_or_else(|_| Err("timeout".into()))
    }

    /// Poll until a request succeeds; milliseconds since `since`.
    pub async fn wait_first_ok(&self, since: Instant, limit: Duration) -> Result<f64, BenchError> {
        let mut last = String::from("none answered");
        while since.elapsed() < limit {
            match self.one(Duration::from_millis(500)).await {
                Ok(()) => return Ok(since.elapsed().as_secs_f64() * 1e3),
                Err(kind) => last = kind,
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        Err(BenchError(format!(
            "proxy did not serve a request within {} s (last attempt: {last})",
            limit.as_secs()
        )))
    }

    /// Send at `rate_rps` for `duration` (schedule-based), wait for all responses.
    ///
    /// The schedule is kept by a dedicated OS thread sleeping with `std::thread::sleep`
    /// (tens of microseconds of slack) rather than tokio's 1 ms timer wheel; each request is
    /// spawned onto the runtime at its due time and its latency counts from that due time.
    pub async fn run(&self, rate_rps: u64, duration: Duration, timeout: Duration) -> LoadStats {
        let hist = Arc::new(Mutex::new(new_hist()));
        let ok = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let total = (rate_rps as f64 * duration.as_secs_f64()).round() as u64;
        let interval_ns = 1e9 / rate_rps.max(1) as f64;
        let handle = tokio::runtime::Handle::current();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let this = self.clone();
        let failures = Arc::new(Mutex::new(std::collections::BTreeMap::<String, u64>::new()));
        let (h2, ok2, f2) = (hist.clone(), ok.clone(), failures.clone());
        let dispatcher = std::thread::spawn(move || {
            let start = Instant::now();
            for i in 0..total {
                let due = start + Duration::from_nanos((i as f64 * interval_ns) as u64);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let (this, hist, ok, done) =
                    (this.clone(), h2.clone(), ok2.clone(), done_tx.clone());
                let failures = f2.clone();
                handle.spawn(async move {
                    let result = this.one(timeout).await;
                    // Latency from the intended send time, not from when we got round to it.
                    let us = due.elapsed().as_micros() as u64;
                    match result {
                        Ok(()) => {
                            ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(kind) => {
                            if let Ok(mut f) = failures.lock() {
                                *f.entry(kind).or_insert(0) += 1;
                            }
                        }
                    }
                    if let Ok(mut h) = hist.lock() {
                        h.saturating_record(us.max(1));
                    }
                    let _ = done.send(());
                });
            }
        });
        let mut finished = 0;
        while finished < total && done_rx.recv().await.is_some() {
            finished += 1;
        }
        let _ = tokio::task::spawn_blocking(move || dispatcher.join()).await;
        let hist = match hist.lock() {
            Ok(h) => h.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let failures = match failures.lock() {
            Ok(f) => f.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        LoadStats {
            sent: total,
            ok: ok.load(std::sync::atomic::Ordering::Relaxed),
            hist,
            failures,
        }
    }
}

/// Latency histogram: 1 us .. 60 s, 3 significant figures.
fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds are valid")
}

/// Measure `target` `repeats` times and keep the median run (by proxy CPU per request, or by
/// p50 latency for the direct baseline): on a shared machine single runs are noisy.
pub fn measure_median(
    h: &Harness,
    target: &Target,
    rate_rps: u64,
    duration: Duration,
    repeats: usize,
) -> Result<Measurement, BenchError> {
    let mut runs = Vec::with_capacity(repeats.max(1));
    for _ in 0..repeats.max(1) {
        runs.push(h.measure_target(target, rate_rps, duration)?);
    }
    Ok(median_run(runs))
}

/// [`Harness::measure_handshake`] `repeats` times; the median run by server CPU is kept.
pub fn measure_handshake_median(
    h: &Harness,
    rate_cps: u64,
    duration: Duration,
    repeats: usize,
) -> Result<HandshakeCost, BenchError> {
    let mut runs = Vec::with_capacity(repeats.max(1));
    for _ in 0..repeats.max(1) {
        runs.push(h.measure_handshake(rate_cps, duration)?);
    }
    runs.sort_by(|a, b| a.server_cpu_us.total_cmp(&b.server_cpu_us));
    let mid = runs.len() / 2;
    Ok(runs.swap_remove(mid))
}

/// One line describing a handshake measurement.
pub fn handshake_line(c: &HandshakeCost) -> String {
    format!(
        "mTLS handshake at {} conn/s ({} connections, error rate {:.4}): sidecar CPU {:.1} us, client CPU {:.1} us, added latency p50 {:.0} us, p99 {:.0} us",
        c.rate_cps,
        c.connections,
        c.error_rate,
        c.server_cpu_us,
        c.client_cpu_us,
        c.added_latency_p50_us,
        c.added_latency_p99_us
    )
}

/// Run the standard comparison at `rates` and return every measurement (direct, nginx, and
/// the sidecar with each policy set), with added latencies filled in. Each point is the median
/// of `repeats` runs, and the repeats are interleaved (round r measures every target once
/// before round r + 1 starts, odd rounds in reverse order, so that a drift within a round
/// does not always favour the same targets), so that a change in machine load from other work
/// hits all targets alike instead of one target's whole series: ratios between targets
/// (x nginx) are what the load moves least. Each sidecar point also carries the median and
/// range of its per-round ratios to nginx ([`Measurement::x_nginx_paired`]) and of its
/// per-round differences to the pass-through ([`Measurement::over_pass_through_paired`]).
pub fn run_suite(
    h: &Harness,
    rates: &[u64],
    sets: &[PolicySet],
    duration: Duration,
    repeats: usize,
    with_nginx: bool,
    mut progress: impl FnMut(&Measurement),
) -> Result<Vec<Measurement>, BenchError> {
    let mut out = Vec::new();
    for &rate in rates {
        let mut targets: Vec<Target> = vec![Target::Direct];
        if with_nginx {
            targets.push(Target::Nginx);
        }
        targets.extend(sets.iter().cloned().map(Target::Sidecar));
        let mut runs: Vec<Vec<Measurement>> = vec![Vec::new(); targets.len()];
        for round in 0..repeats.max(1) {
            let mut order: Vec<usize> = (0..targets.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for t in order {
                runs[t].push(h.measure_target(&targets[t], rate, duration)?);
            }
        }
        let nginx = with_nginx.then_some(1);
        let pass_through = runs.iter().position(|series| {
            series
                .first()
                .is_some_and(|m| m.target == crate::calibration::PASS_THROUGH)
        });
        let mut row: Vec<Measurement> = runs
            .iter()
            .map(|series| {
                let mut m = median_run(series.clone());
                if m.cpu_us_per_request.is_some() {
                    // Both measured in the same round, so a load change between rounds
                    // moves both terms together.
                    let per_round = |other: Option<usize>, f: fn(f64, f64) -> f64| {
                        let other = &runs[other.filter(|&o| runs[o][0].target != m.target)?];
                        Paired::of(
                            series
                                .iter()
                                .zip(other)
                                .filter_map(|(a, b)| {
                                    Some(f(a.cpu_us_per_request?, b.cpu_us_per_request?))
                                })
                                .collect(),
                        )
                    };
                    if m.target != "nginx" {
                        m.x_nginx_paired = per_round(nginx, |a, b| a / b);
                        m.over_pass_through_paired = per_round(pass_through, |a, b| a - b);
                    }
                }
                m
            })
            .collect();
        let direct = row[0].clone();
        progress(&direct);
        for m in row.iter_mut().skip(1) {
            m.set_added(&direct);
            progress(m);
        }
        out.extend(row);
    }
    Ok(out)
}

/// The median run (by proxy CPU per request, or p50 latency for the direct baseline).
fn median_run(mut runs: Vec<Measurement>) -> Measurement {
    runs.sort_by(|a, b| {
        let key = |m: &Measurement| m.cpu_us_per_request.unwrap_or(m.latency_p50_us as f64);
        key(a).total_cmp(&key(b))
    });
    let mid = runs.len() / 2;
    runs.swap_remove(mid)
}

/// Failure kinds a saturated *machine* causes rather than the proxy: the load generator's
/// timeout, a connect timeout (a full accept backlog), the proxy's request timeout (504), circuit-breaker overflow
/// (requests pile up in flight) and a slow Redis answer with the fail-closed rate limit.
/// Everything else (a 4xx from a policy, 502, a reset, an upstream connect error) is a bug.
pub fn load_induced(kind: &str) -> bool {
    kind == "timeout"
        || (kind.starts_with("transport") && kind.ends_with("connect timeout"))
        || kind.starts_with("504")
        || kind == "503 (circuit_breaker)"
        || kind == "503 (rate_limit)"
}

/// Pass criteria of a soak, robust to load from other processes on the machine yet able to
/// fail: no unexpected failure (see [`load_induced`]); at least `min_ok` of the requests
/// answered 200 (a backed-up machine times some out; a broken proxy fails most); and no RSS
/// growth trend over the second half of the samples (taken every `every_s` seconds): the
/// Theil-Sen slope (median of the pairwise slopes, so one burst of backlog cannot pass for a
/// trend, while a steady leak moves every pair) must stay at or below `max_kib_per_s`.
/// Returns what failed.
pub fn soak_verdict(
    m: &Measurement,
    rss_kib: &[u64],
    every_s: f64,
    min_ok: f64,
    max_kib_per_s: f64,
) -> Result<(), String> {
    let unexpected: Vec<_> = m
        .failures
        .iter()
        .filter(|(k, _)| !load_induced(k))
        .collect();
    if !unexpected.is_empty() {
        return Err(format!("unexpected failures: {unexpected:?}"));
    }
    if (m.ok as f64) < min_ok * m.sent as f64 {
        return Err(format!(
            "only {}/{} requests answered 200 (need {:.0} %): {:?}",
            m.ok,
            m.sent,
            min_ok * 100.0,
            m.failures
        ));
    }
    // A leak grows RSS steadily; the allocator grows it in steps (a new 128 KiB+ region once in
    // a while). So the trend is judged in each quarter of the second half (Theil-Sen: the median
    // of the pairwise slopes) and the smaller of the two counts: a leak shows in both, a single
    // step in at most one.
    let half = &rss_kib[rss_kib.len() / 2..];
    if half.len() < 4 {
        return Err(format!("too few RSS samples to judge a trend: {rss_kib:?}"));
    }
    let (q3, q4) = half.split_at(half.len() / 2);
    let slope = theil_sen(q3, every_s).min(theil_sen(q4, every_s));
    if slope > max_kib_per_s {
        return Err(format!(
            "RSS grows {slope:.1} KiB/s in both quarters of the second half (limit {max_kib_per_s}): {rss_kib:?}"
        ));
    }
    Ok(())
}

/// The median of the pairwise slopes of samples `every_s` apart (at least two samples).
fn theil_sen(samples: &[u64], every_s: f64) -> f64 {
    let mut slopes = Vec::new();
    for (i, a) in samples.iter().enumerate() {
        for (j, b) in samples.iter().enumerate().skip(i + 1) {
            slopes.push((*b as f64 - *a as f64) / ((j - i) as f64 * every_s));
        }
    }
    slopes.sort_by(f64::total_cmp);
    slopes.get(slopes.len() / 2).copied().unwrap_or(0.0)
}

/// Render measurements as a Markdown table, with CPU ratios against nginx at the same rate:
/// the ratio of the medians, and the median (lowest-highest) of the per-round ratios; and the
/// median (lowest-highest) of the per-round CPU differences to the pass-through.
pub fn table(ms: &[Measurement]) -> String {
    let mut s = String::from(
        "| rate | target | ok/sent | CPU us/req | x nginx | x nginx paired (range) | CPU over pass-through, paired (range) | p50 us | p99 us | added p50 us | added p99 us | RSS MB | start-up ms |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for m in ms {
        let nginx = ms
            .iter()
            .find(|n| n.rate_rps == m.rate_rps && n.target == "nginx")
            .and_then(|n| n.cpu_us_per_request);
        let opt = |v: Option<f64>, prec: usize| {
            v.map(|v| format!("{v:.prec$}"))
                .unwrap_or_else(|| "-".into())
        };
        let ratio = match (m.cpu_us_per_request, nginx) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "-".into(),
        };
        let paired = m.x_nginx_paired.map_or_else(
            || "-".into(),
            |p| format!("{:.2} ({:.2}-{:.2})", p.median, p.min, p.max),
        );
        let over = m.over_pass_through_paired.map_or_else(
            || "-".into(),
            |p| format!("{:+.1} ({:+.1} to {:+.1})", p.median, p.min, p.max),
        );
        s += &format!(
            "| {} | {} | {}/{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            m.rate_rps,
            m.target,
            m.ok,
            m.sent,
            opt(m.cpu_us_per_request, 1),
            ratio,
            paired,
            over,
            m.latency_p50_us,
            m.latency_p99_us,
            m.added_p50_us
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            m.added_p99_us
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            opt(m.rss_kib.map(|k| k as f64 / 1024.0), 1),
            opt(m.startup_ms, 1),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soak(ok: u64, failures: &[(&str, u64)]) -> Measurement {
        Measurement {
            target: "all-nine".into(),
            rate_rps: 2000,
            duration_s: 10.0,
            sent: 20_000,
            ok,
            errors: 20_000 - ok,
            failures: failures.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
            cpu_us_per_request: Some(100.0),
            latency_p50_us: 500,
            latency_p99_us: 5000,
            added_p50_us: None,
            added_p99_us: None,
            rss_kib: Some(20_000),
            startup_ms: Some(5.0),
            idle_rss_kib: None,
            idle_anon_kib: None,
            x_nginx_paired: None,
            over_pass_through_paired: None,
        }
    }

    #[test]
    fn paired_ratio_takes_the_median_and_range_of_the_rounds() {
        let p = Paired::of(vec![1.2, 0.9, 1.0]).unwrap();
        assert_eq!((p.median, p.min, p.max), (1.0, 0.9, 1.2));
        let even = Paired::of(vec![1.0, 2.0, f64::NAN, 3.0, 4.0]).unwrap();
        assert_eq!(even.median, 2.5);
        assert!(Paired::of(vec![]).is_none());
    }

    const FLAT: [u64; 8] = [
        18_000, 20_000, 20_100, 20_050, 20_100, 20_080, 20_100, 20_090,
    ];

    #[test]
    fn soak_verdict_tolerates_load_but_catches_bugs_and_leaks() {
        // Clean, and a loaded machine: timeouts and overflow within the budget pass.
        assert_eq!(
            soak_verdict(&soak(20_000, &[]), &FLAT, 1.0, 0.8, 64.0),
            Ok(())
        );
        let loaded = soak(
            19_000,
            &[
                ("timeout", 500),
                (
                    "transport: client error (Connect): upstream connect timeout",
                    100,
                ),
                ("503 (circuit_breaker)", 300),
                ("504 (front)", 100),
            ],
        );
        assert_eq!(soak_verdict(&loaded, &FLAT, 1.0, 0.8, 64.0), Ok(()));
        // One policy denial is a bug, however few.
        let bug = soak(19_999, &[("403 (authz)", 1)]);
        assert!(
            soak_verdict(&bug, &FLAT, 1.0, 0.8, 64.0)
                .unwrap_err()
                .contains("403")
        );
        let reset = soak(19_999, &[("transport: connection reset", 1)]);
        assert!(soak_verdict(&reset, &FLAT, 1.0, 0.8, 64.0).is_err());
        // A proxy that times most requests out fails even though timeouts are tolerated.
        let stuck = soak(5_000, &[("timeout", 15_000)]);
        assert!(
            soak_verdict(&stuck, &FLAT, 1.0, 0.8, 64.0)
                .unwrap_err()
                .contains("5000/20000")
        );
        // A steady leak of 100 KiB/s fails; a single step (a burst of backlog) does not.
        let leak: Vec<u64> = (0..8).map(|i| 20_000 + 100 * i).collect();
        assert!(
            soak_verdict(&soak(20_000, &[]), &leak, 1.0, 0.8, 64.0)
                .unwrap_err()
                .contains("100.0 KiB/s")
        );
        let step = [
            20_000, 20_000, 20_000, 20_000, 20_000, 26_000, 20_000, 20_000,
        ];
        assert_eq!(
            soak_verdict(&soak(20_000, &[]), &step, 1.0, 0.8, 64.0),
            Ok(())
        );
        // The allocator growing once by 512 KiB mid-way through the second half (seen in a
        // 15 s soak on 2026-11-26) is a step, not a leak.
        let grew_once = [
            12548, 12548, 12676, 12676, 12676, 12804, 12804, 12840, 12840, 12840, 13224, 13352,
            13352, 13352, 13352,
        ];
        assert_eq!(
            soak_verdict(&soak(20_000, &[]), &grew_once, 1.0, 0.8, 64.0),
            Ok(())
        );
        // ... but growth in steps that keep coming (128 KiB/s) is.
        let keeps_growing: Vec<u64> = (0..16).map(|i| 12_000 + 256 * (i / 2)).collect();
        assert!(soak_verdict(&soak(20_000, &[]), &keeps_growing, 1.0, 0.8, 64.0).is_err());
        assert!(soak_verdict(&soak(20_000, &[]), &FLAT[..6], 1.0, 0.8, 64.0).is_err());
    }
}
