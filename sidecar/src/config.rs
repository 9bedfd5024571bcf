//! The per-function sidecar configuration: one TOML file, typed with serde, unknown fields
//! rejected, checked by [`Config::validate`] whose errors name the offending field.
//!
//! A policy is enabled by the presence of its table under `[policies]`; an absent table means
//! the policy is off and its layer is not in the request path at all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The only config schema version this build understands.
pub const CONFIG_VERSION: u32 = 1;

/// A config error: the field (dotted path) and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// File path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// TOML syntax or schema error (unknown field, wrong type); the message carries line/column.
    #[error("parsing {path}: {message}")]
    Parse {
        /// File path (or `<string>`).
        path: PathBuf,
        /// The TOML error message.
        message: String,
    },
    /// A semantic error in one field.
    #[error("invalid config field `{field}`: {message}")]
    Invalid {
        /// Dotted path of the field, e.g. `policies.retry.max_retries`.
        field: String,
        /// What is wrong and the allowed range.
        message: String,
    },
}

fn invalid(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Root of the sidecar config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Schema version; must be [`CONFIG_VERSION`].
    pub version: u32,
    /// The function this sidecar fronts (used in logs and rate-limit keys).
    pub function: String,
    /// Runtime layout.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Readiness / admin listener.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Inbound listener: traffic to the function.
    pub inbound: ListenerConfig,
    /// Outbound listener: traffic from the function to another service.
    #[serde(default)]
    pub outbound: Option<OutboundConfig>,
    /// Workload identity and certificates (required when mTLS is on or outbound originates TLS).
    #[serde(default)]
    pub identity: Option<IdentityConfig>,
    /// HTTP hardening limits.
    #[serde(default)]
    pub limits: Limits,
    /// Upstream connection pool.
    #[serde(default)]
    pub upstream: UpstreamConfig,
    /// The nine policies; each is on when its table is present.
    #[serde(default)]
    pub policies: Policies,
    /// Limits of the per-request sandbox (`runtime.isolation = "per-request"`).
    #[serde(default)]
    pub sandbox: SandboxConfig,
}

/// Runtime layout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Worker threads; 1 runs a current-thread runtime (like Envoy with `--concurrency 1`).
    #[serde(default = "one")]
    pub worker_threads: usize,
    /// How long to wait for in-flight requests on SIGTERM before closing connections.
    #[serde(default = "default_drain_ms")]
    pub drain_timeout_ms: u64,
    /// Where the header-only policies run: `shared` (tower layers in the proxy) or
    /// `per-request` (a fresh WebAssembly instance per request, see `[sandbox]`).
    #[serde(default)]
    pub isolation: Isolation,
    /// Serve plain-text HTTP/1.1 on a listener without policies through the lean path
    /// (`src/lean.rs`: one task per connection, its own codec, no hyper); anything it does not
    /// handle (HTTP/2, chunked or `Expect` requests, upgrades, HTTP/1.0, unusual targets or
    /// hop-by-hop headers, malformed input) is handed to hyper on the same connection.
    /// `false` serves everything through hyper.
    #[serde(default = "yes")]
    pub lean_http1: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            worker_threads: 1,
            drain_timeout_ms: default_drain_ms(),
            isolation: Isolation::default(),
            lean_http1: true,
        }
    }
}

/// Policy isolation mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// Every policy is a tower layer sharing the proxy's state.
    #[default]
    Shared,
    /// mTLS check, ports, JWT result, authz, local rate limit and tracing run in a fresh
    /// wasmtime instance per request; state survives only through host functions.
    PerRequest,
}

impl Isolation {
    /// The config / CLI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Shared => "shared",
            Isolation::PerRequest => "per-request",
        }
    }
}

impl std::str::FromStr for Isolation {
    type Err = String;
    fn from_str(s: &str) -> Result<Isolation, String> {
        match s {
            "shared" => Ok(Isolation::Shared),
            "per-request" => Ok(Isolation::PerRequest),
            other => Err(format!(
                "unknown isolation `{other}`; expected `shared` or `per-request`"
            )),
        }
    }
}

/// Limits of the per-request sandbox (used when `runtime.isolation = "per-request"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// Fuel per request (about one unit per wasm instruction); running out denies the request.
    #[serde(default = "d_fuel")]
    pub fuel: u64,
    /// Linear memory cap per instance, bytes (whole 64 KiB pages); exceeding it denies the
    /// request.
    #[serde(default = "d_sandbox_memory")]
    pub max_memory_bytes: u64,
    /// Wasm stack cap per instance, bytes.
    #[serde(default = "d_sandbox_stack")]
    pub max_stack_bytes: u64,
    /// Pool slots: instances that may exist at once (one per request being decided).
    #[serde(default = "d_sandbox_instances")]
    pub instances: u32,
    /// Linear-memory bytes a used pool slot keeps resident between requests (zeroed instead
    /// of decommitted). 0 (the default) leaves nothing resident when idle; 131072 saves the
    /// madvise and page faults of each request (about 3 us here) for 128 KiB per used slot.
    #[serde(default)]
    pub keep_resident_bytes: u64,
    /// With no request for this long (ms), drop the compiled policy module, its engine and
    /// instance pool, so an idle function keeps no sandbox memory; the next request compiles
    /// the module again (see `meshsim-sidecar sandbox-bench`, "recompile"). 0 keeps the
    /// module compiled for good.
    #[serde(default = "d_idle_release")]
    pub idle_release_ms: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            fuel: d_fuel(),
            max_memory_bytes: d_sandbox_memory(),
            max_stack_bytes: d_sandbox_stack(),
            instances: d_sandbox_instances(),
            keep_resident_bytes: 0,
            idle_release_ms: d_idle_release(),
        }
    }
}

fn d_idle_release() -> u64 {
    1000
}

fn d_fuel() -> u64 {
    1_000_000
}
fn d_sandbox_memory() -> u64 {
    1 << 20
}
fn d_sandbox_stack() -> u64 {
    256 * 1024
}
fn d_sandbox_instances() -> u32 {
    64
}

fn one() -> usize {
    1
}
fn default_drain_ms() -> u64 {
    5_000
}

/// Admin listener serving `GET /ready` (200 when serving, 503 while draining) and `GET /stats`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Listen address.
    pub listen: SocketAddr,
}

/// The inbound listener and the function's upstream endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Listen address (port 0 picks an ephemeral port).
    pub listen: SocketAddr,
    /// Upstream endpoints (function instances), round robin; outlier detection may eject some.
    pub upstream: Vec<SocketAddr>,
    /// Maximum open client connections on this listener (absent: unlimited). A connection
    /// beyond it is accepted and closed at once, before any TLS or HTTP (counted as
    /// `connections_refused`), like Envoy's listener connection limit: refusing keeps overload
    /// visible to the client, where queueing in the kernel's accept backlog would hide it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
}

/// The outbound listener: plaintext from the local function, forwarded to a peer sidecar.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Destination endpoints (peer sidecars' inbound listeners).
    pub upstream: Vec<SocketAddr>,
    /// Originate mTLS with the workload certificate.
    #[serde(default)]
    pub tls: bool,
    /// SPIFFE id the peer must present (checked when `tls`); absent = any id of our trust domain.
    #[serde(default)]
    pub peer_identity: Option<String>,
    /// Maximum open connections from the function on this listener (absent: unlimited); see
    /// [`ListenerConfig::max_connections`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
}

/// Workload identity: `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// SPIFFE trust domain, e.g. `cluster.local`.
    pub trust_domain: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Kubernetes service account.
    pub service_account: String,
    /// Where certificates come from.
    pub certs: CertSource,
}

impl IdentityConfig {
    /// The SPIFFE id of this workload.
    pub fn spiffe_id(&self) -> String {
        format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

/// Certificate source.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CertSource {
    /// A fresh CA and workload certificate generated at start-up (ECDSA P-256).
    /// `export_dir`, if set, receives `ca.pem` and `ca-key.pem` so peers can be issued certs.
    Generate {
        /// Directory to write the generated CA into.
        #[serde(default)]
        export_dir: Option<PathBuf>,
    },
    /// PEM files.
    Files {
        /// Trusted CA certificate(s).
        ca: PathBuf,
        /// Workload certificate chain.
        cert: PathBuf,
        /// Workload private key (PKCS#8).
        key: PathBuf,
    },
}

/// HTTP hardening limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Maximum bytes of the request head (request line + headers); beyond it: 431.
    #[serde(default = "d_header_bytes")]
    pub max_header_bytes: usize,
    /// Maximum number of request headers; beyond it: 431.
    #[serde(default = "d_headers")]
    pub max_headers: usize,
    /// Time allowed to receive a complete request head (slowloris defence). hyper starts this
    /// timer whenever it waits for a head, so it also closes HTTP/1 keep-alive connections
    /// idle for longer.
    #[serde(default = "d_header_timeout")]
    pub header_read_timeout_ms: u64,
    /// Maximum request body; beyond it: 413.
    #[serde(default = "d_body")]
    pub max_body_bytes: usize,
    /// Overall time for one request through the proxy, upstream included; beyond it: 504.
    #[serde(default = "d_request_timeout")]
    pub request_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: d_header_bytes(),
            max_headers: d_headers(),
            header_read_timeout_ms: d_header_timeout(),
            max_body_bytes: d_body(),
            request_timeout_ms: d_request_timeout(),
        }
    }
}

fn d_header_bytes() -> usize {
    16 * 1024
}
fn d_headers() -> usize {
    64
}
fn d_header_timeout() -> u64 {
    5_000
}
fn d_body() -> usize {
    1024 * 1024
}
fn d_request_timeout() -> u64 {
    15_000
}

/// Upstream connection pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// TCP connect timeout.
    #[serde(default = "d_connect")]
    pub connect_timeout_ms: u64,
    /// Idle pooled connections are closed after this.
    #[serde(default = "d_pool_idle")]
    pub pool_idle_timeout_ms: u64,
    /// Maximum idle pooled connections per endpoint.
    #[serde(default = "d_pool_max_idle")]
    pub pool_max_idle_per_endpoint: usize,
    /// Protocol towards the function (the inbound listener's upstream): `http1` (default,
    /// keep-alive pool) or `http2` (cleartext with prior knowledge, h2c; requests of every
    /// client connection multiplexed on one connection per endpoint). The outbound listener
    /// speaks HTTP/1.1 to peer sidecars.
    #[serde(default = "d_upstream_protocol")]
    pub protocol: Protocol,
}

fn d_upstream_protocol() -> Protocol {
    Protocol::Http1
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout_ms: d_connect(),
            pool_idle_timeout_ms: d_pool_idle(),
            pool_max_idle_per_endpoint: d_pool_max_idle(),
            protocol: d_upstream_protocol(),
        }
    }
}

fn d_connect() -> u64 {
    1_000
}
fn d_pool_idle() -> u64 {
    90_000
}
fn d_pool_max_idle() -> usize {
    256
}

/// The nine policies, in the order a request meets them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    /// (1) mTLS termination on the inbound listener.
    #[serde(default)]
    pub mtls: Option<MtlsPolicy>,
    /// (2) Port and protocol restrictions.
    #[serde(default)]
    pub ports: Option<PortsPolicy>,
    /// (3) JWT request authentication.
    #[serde(default)]
    pub jwt: Option<JwtPolicy>,
    /// (4) Authorization rules.
    #[serde(default)]
    pub authz: Option<AuthzPolicy>,
    /// (5) Global rate limit (Redis) with a local token bucket in front.
    #[serde(default)]
    pub rate_limit: Option<RateLimitPolicy>,
    /// (6) Tracing headers.
    #[serde(default)]
    pub tracing: Option<TracingPolicy>,
    /// (7) Access logs.
    #[serde(default)]
    pub access_log: Option<AccessLogPolicy>,
    /// (8) Retries.
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// (9) Circuit breaking and outlier detection.
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreakerPolicy>,
}

impl Policies {
    /// No policy configured: the proxy only forwards.
    pub fn is_empty(&self) -> bool {
        self.mtls.is_none()
            && self.ports.is_none()
            && self.jwt.is_none()
            && self.authz.is_none()
            && self.rate_limit.is_none()
            && self.tracing.is_none()
            && self.access_log.is_none()
            && self.retry.is_none()
            && self.circuit_breaker.is_none()
    }
}

/// mTLS mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MtlsMode {
    /// Only mutually authenticated TLS; plaintext connections are refused.
    Strict,
    /// TLS (with client certificate) or plaintext, sniffed per connection; plaintext has no identity.
    Permissive,
}

/// (1) mTLS.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtlsPolicy {
    /// Strict or permissive.
    pub mode: MtlsMode,
    /// Peer SPIFFE ids accepted at the handshake (`*` suffix = prefix match); empty = any id
    /// in our trust domain.
    #[serde(default)]
    pub allowed_peers: Vec<String>,
}

/// HTTP protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// HTTP/1.1 (and 1.0).
    Http1,
    /// HTTP/2 (prior knowledge or ALPN `h2`).
    Http2,
}

/// (2) Ports and protocols.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortsPolicy {
    /// Listener ports allowed to serve requests (the actual bound port when `listen` uses 0
    /// is added automatically if `allow_bound_port`).
    #[serde(default)]
    pub inbound_ports: Vec<u16>,
    /// Also allow the port the inbound listener actually bound (useful with port 0).
    #[serde(default = "yes")]
    pub allow_bound_port: bool,
    /// Protocols served.
    pub protocols: Vec<Protocol>,
    /// Upstream ports that may be reached; every configured upstream must be in it.
    pub upstream_ports: Vec<u16>,
}

fn yes() -> bool {
    true
}

/// (3) JWT authentication.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtPolicy {
    /// Required `iss`.
    pub issuer: String,
    /// Accepted `aud` values (at least one).
    pub audiences: Vec<String>,
    /// JWKS file (RS256 / ES256 keys; `kid` selects the key).
    pub jwks_file: PathBuf,
    /// Clock skew tolerated for `exp` / `nbf`, seconds.
    #[serde(default)]
    pub leeway_s: u64,
    /// Claims forwarded upstream as `x-jwt-claim-<name>` headers.
    #[serde(default)]
    pub forward_claims: Vec<String>,
    /// Cache of verified tokens (entries); 0 disables. Expiry is re-checked on every hit.
    #[serde(default)]
    pub cache_entries: usize,
}

/// Authorization action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthzAction {
    /// Allow when matched.
    Allow,
    /// Deny when matched (deny rules win).
    Deny,
}

/// One authorization rule; every non-empty condition must match (AND), values within one
/// condition are alternatives (OR). A trailing `*` is a prefix match.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzRule {
    /// Allow or deny.
    pub action: AuthzAction,
    /// Source SPIFFE ids (from mTLS); `unauthenticated` matches a request without identity.
    #[serde(default)]
    pub sources: Vec<String>,
    /// HTTP methods.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Paths (without query).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Header name -> accepted values (claims forwarded by JWT appear as `x-jwt-claim-*`).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, Vec<String>>,
}

/// (4) Authorization.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzPolicy {
    /// Rules; when any exist, a request matched by no allow rule is denied.
    pub rules: Vec<AuthzRule>,
}

/// Rate-limit key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RateLimitKey {
    /// One counter for the function.
    Global,
    /// Per source identity (mTLS) or remote IP when there is none.
    Source,
    /// Per value of a request header (missing header = `-`).
    Header {
        /// Header name.
        name: String,
    },
}

/// What to do when Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Let the request through (logged).
    Open,
    /// Refuse the request with 503 (logged).
    Closed,
}

/// Local token bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucket {
    /// Bucket size (burst).
    pub capacity: u64,
    /// Tokens added per second.
    pub refill_per_s: u64,
}

/// (5) Global rate limit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitPolicy {
    /// Redis URL, e.g. `redis://127.0.0.1:6379/`.
    pub redis_url: String,
    /// Requests allowed per key per window.
    pub requests_per_window: u64,
    /// Fixed window length, seconds.
    pub window_s: u64,
    /// How requests are grouped into counters.
    pub key: RateLimitKey,
    /// Behaviour when Redis is unreachable or slow.
    pub failure_mode: FailureMode,
    /// Time allowed for one Redis round trip before it counts as unreachable.
    #[serde(default = "d_redis_timeout")]
    pub redis_timeout_ms: u64,
    /// Local token bucket consulted before Redis (Envoy's local rate limit).
    #[serde(default)]
    pub local: Option<TokenBucket>,
}

fn d_redis_timeout() -> u64 {
    50
}

/// (6) Tracing headers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingPolicy {
    /// Probability that a trace started here is sampled, in [0, 1].
    pub sampling: f64,
}

/// (7) Access logs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogPolicy {
    /// Output file (appended); absent = stdout.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Queue length between the request path and the writer thread; when full, lines are
    /// dropped and counted rather than blocking requests.
    #[serde(default = "d_log_queue")]
    pub queue: usize,
}

fn d_log_queue() -> usize {
    8192
}

/// (8) Retries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries per request (attempts = 1 + this).
    #[serde(default = "two")]
    pub max_retries: u32,
    /// Back-off before retry n is `backoff_ms * n`.
    #[serde(default = "d_backoff")]
    pub backoff_ms: u64,
    /// Retry budget: retries may add at most this fraction of requests in the budget window.
    #[serde(default = "d_budget_ratio")]
    pub budget_ratio: f64,
    /// Retries always allowed per second regardless of the ratio.
    #[serde(default = "d_min_retries")]
    pub min_retries_per_s: u32,
}

fn two() -> u32 {
    2
}
fn d_backoff() -> u64 {
    5
}
fn d_budget_ratio() -> f64 {
    0.2
}
fn d_min_retries() -> u32 {
    10
}

/// (9) Circuit breaking.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerPolicy {
    /// Maximum open upstream connections (all endpoints).
    #[serde(default = "d_cb_max")]
    pub max_connections: usize,
    /// Maximum requests waiting for an in-flight slot.
    #[serde(default = "d_cb_max")]
    pub max_pending: usize,
    /// Maximum requests in flight to the upstream.
    #[serde(default = "d_cb_max")]
    pub max_requests: usize,
    /// Consecutive 5xx / connect failures that eject an endpoint.
    #[serde(default = "d_consecutive")]
    pub consecutive_5xx: u32,
    /// Ejection time for the first ejection; the n-th ejection lasts n times this.
    #[serde(default = "d_ejection")]
    pub base_ejection_ms: u64,
    /// Upper bound of one ejection.
    #[serde(default = "d_max_ejection")]
    pub max_ejection_ms: u64,
}

fn d_cb_max() -> usize {
    1024
}
fn d_consecutive() -> u32 {
    5
}
fn d_ejection() -> u64 {
    30_000
}
fn d_max_ejection() -> u64 {
    300_000
}

impl Config {
    /// Parse and validate a TOML string.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Self::parse(text, Path::new("<string>"))
    }

    /// Read, parse and validate a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Render as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Check semantic constraints; the error names the field and the allowed range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.version != CONFIG_VERSION {
            return Err(invalid(
                "version",
                format!(
                    "unsupported version {}; expected {CONFIG_VERSION}",
                    self.version
                ),
            ));
        }
        if self.function.is_empty() || !self.function.bytes().all(is_name_byte) {
            return Err(invalid("function", "must be non-empty [A-Za-z0-9._-]"));
        }
        if !(1..=64).contains(&self.runtime.worker_threads) {
            return Err(invalid("runtime.worker_threads", "must be in 1..=64"));
        }
        let sb = &self.sandbox;
        check_range("sandbox.fuel", sb.fuel, 1_000, 1_000_000_000)?;
        check_range(
            "sandbox.max_memory_bytes",
            sb.max_memory_bytes,
            64 * 1024,
            256 << 20,
        )?;
        check_range(
            "sandbox.max_stack_bytes",
            sb.max_stack_bytes,
            16 * 1024,
            8 << 20,
        )?;
        check_range("sandbox.instances", u64::from(sb.instances), 1, 10_000)?;
        if sb.idle_release_ms > 0 {
            check_range(
                "sandbox.idle_release_ms",
                sb.idle_release_ms,
                10,
                86_400_000,
            )?;
        }
        if sb.keep_resident_bytes > sb.max_memory_bytes {
            return Err(invalid(
                "sandbox.keep_resident_bytes",
                "must be <= sandbox.max_memory_bytes",
            ));
        }
        if self.inbound.upstream.is_empty() {
            return Err(invalid("inbound.upstream", "needs at least one endpoint"));
        }
        if let Some(n) = self.inbound.max_connections {
            check_range(
                "inbound.max_connections",
                n as u64,
                1,
                MAX_LISTENER_CONNECTIONS,
            )?;
        }
        if let Some(n) = self.outbound.as_ref().and_then(|o| o.max_connections) {
            check_range(
                "outbound.max_connections",
                n as u64,
                1,
                MAX_LISTENER_CONNECTIONS,
            )?;
        }
        if let Some(out) = &self.outbound {
            if out.upstream.is_empty() {
                return Err(invalid("outbound.upstream", "needs at least one endpoint"));
            }
            if out.tls && self.identity.is_none() {
                return Err(invalid(
                    "outbound.tls",
                    "originating mTLS needs an [identity] table",
                ));
            }
            if let Some(p) = &out.peer_identity {
                crate::pki::SpiffeId::parse(p)
                    .map_err(|e| invalid("outbound.peer_identity", e.to_string()))?;
            }
        }
        if let Some(id) = &self.identity {
            for (field, v) in [
                ("identity.trust_domain", &id.trust_domain),
                ("identity.namespace", &id.namespace),
                ("identity.service_account", &id.service_account),
            ] {
                if v.is_empty() || !v.bytes().all(is_name_byte) {
                    return Err(invalid(field, "must be non-empty [A-Za-z0-9._-]"));
                }
            }
        }
        let l = &self.limits;
        check_range(
            "limits.max_header_bytes",
            l.max_header_bytes as u64,
            1024,
            1 << 20,
        )?;
        check_range("limits.max_headers", l.max_headers as u64, 8, 1024)?;
        check_range(
            "limits.header_read_timeout_ms",
            l.header_read_timeout_ms,
            10,
            600_000,
        )?;
        check_range("limits.max_body_bytes", l.max_body_bytes as u64, 0, 1 << 30)?;
        check_range(
            "limits.request_timeout_ms",
            l.request_timeout_ms,
            10,
            3_600_000,
        )?;
        check_range(
            "upstream.connect_timeout_ms",
            self.upstream.connect_timeout_ms,
            1,
            60_000,
        )?;
        check_range(
            "upstream.pool_max_idle_per_endpoint",
            self.upstream.pool_max_idle_per_endpoint as u64,
            0,
            65_536,
        )?;
        self.validate_policies()
    }

    fn validate_policies(&self) -> Result<(), ConfigError> {
        let p = &self.policies;
        if let Some(m) = &p.mtls {
            if self.identity.is_none() {
                return Err(invalid("policies.mtls", "mTLS needs an [identity] table"));
            }
            for (i, peer) in m.allowed_peers.iter().enumerate() {
                let base = peer.strip_suffix('*').unwrap_or(peer);
                if !base.starts_with("spiffe://") {
                    return Err(invalid(
                        &format!("policies.mtls.allowed_peers[{i}]"),
                        "must start with spiffe://",
                    ));
                }
            }
        }
        if let Some(ports) = &p.ports {
            if ports.protocols.is_empty() {
                return Err(invalid(
                    "policies.ports.protocols",
                    "needs at least one protocol",
                ));
            }
            if ports.inbound_ports.is_empty() && !ports.allow_bound_port {
                return Err(invalid(
                    "policies.ports.inbound_ports",
                    "empty with allow_bound_port = false would refuse everything",
                ));
            }
            for ep in &self.inbound.upstream {
                if !ports.upstream_ports.contains(&ep.port()) {
                    return Err(invalid(
                        "policies.ports.upstream_ports",
                        format!("inbound.upstream {ep} uses a port not in this list"),
                    ));
                }
            }
        }
        if let Some(j) = &p.jwt {
            if j.issuer.is_empty() {
                return Err(invalid("policies.jwt.issuer", "must not be empty"));
            }
            if j.audiences.is_empty() {
                return Err(invalid(
                    "policies.jwt.audiences",
                    "needs at least one audience",
                ));
            }
            check_range("policies.jwt.leeway_s", j.leeway_s, 0, 600)?;
            check_range(
                "policies.jwt.cache_entries",
                j.cache_entries as u64,
                0,
                1 << 20,
            )?;
            for (i, c) in j.forward_claims.iter().enumerate() {
                if c.is_empty()
                    || !c
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return Err(invalid(
                        &format!("policies.jwt.forward_claims[{i}]"),
                        "must be [A-Za-z0-9_-]+",
                    ));
                }
            }
        }
        if let Some(a) = &p.authz {
            for (i, r) in a.rules.iter().enumerate() {
                for (name, _) in r.headers.iter() {
                    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        return Err(invalid(
                            &format!("policies.authz.rules[{i}].headers"),
                            format!("`{name}` is not a valid header name"),
                        ));
                    }
                }
                for (j, m) in r.methods.iter().enumerate() {
                    if http::Method::from_bytes(m.as_bytes()).is_err() {
                        return Err(invalid(
                            &format!("policies.authz.rules[{i}].methods[{j}]"),
                            "not a valid HTTP method",
                        ));
                    }
                }
            }
        }
        if let Some(r) = &p.rate_limit {
            if let Err(why) = crate::policy::redis::RedisTarget::parse(&r.redis_url) {
                return Err(invalid("policies.rate_limit.redis_url", &why));
            }
            check_range(
                "policies.rate_limit.requests_per_window",
                r.requests_per_window,
                1,
                u32::MAX as u64,
            )?;
            check_range("policies.rate_limit.window_s", r.window_s, 1, 86_400)?;
            check_range(
                "policies.rate_limit.redis_timeout_ms",
                r.redis_timeout_ms,
                1,
                10_000,
            )?;
            if let RateLimitKey::Header { name } = &r.key
                && http::HeaderName::from_bytes(name.as_bytes()).is_err()
            {
                return Err(invalid(
                    "policies.rate_limit.key.name",
                    "not a valid header name",
                ));
            }
            if let Some(b) = &r.local {
                check_range("policies.rate_limit.local.capacity", b.capacity, 1, 1 << 32)?;
                check_range(
                    "policies.rate_limit.local.refill_per_s",
                    b.refill_per_s,
                    1,
                    1 << 32,
                )?;
            }
        }
        if let Some(t) = &p.tracing
            && !(0.0..=1.0).contains(&t.sampling)
        {
            return Err(invalid("policies.tracing.sampling", "must be in [0, 1]"));
        }
        if let Some(a) = &p.access_log {
            check_range("policies.access_log.queue", a.queue as u64, 1, 1 << 20)?;
        }
        if let Some(r) = &p.retry {
            check_range("policies.retry.max_retries", r.max_retries as u64, 0, 10)?;
            check_range("policies.retry.backoff_ms", r.backoff_ms, 0, 10_000)?;
            if !(0.0..=10.0).contains(&r.budget_ratio) {
                return Err(invalid("policies.retry.budget_ratio", "must be in [0, 10]"));
            }
        }
        if let Some(c) = &p.circuit_breaker {
            check_range(
                "policies.circuit_breaker.max_connections",
                c.max_connections as u64,
                1,
                1 << 20,
            )?;
            check_range(
                "policies.circuit_breaker.max_pending",
                c.max_pending as u64,
                0,
                1 << 20,
            )?;
            check_range(
                "policies.circuit_breaker.max_requests",
                c.max_requests as u64,
                1,
                1 << 20,
            )?;
            check_range(
                "policies.circuit_breaker.consecutive_5xx",
                c.consecutive_5xx as u64,
                1,
                1000,
            )?;
            check_range(
                "policies.circuit_breaker.base_ejection_ms",
                c.base_ejection_ms,
                1,
                3_600_000,
            )?;
            if c.max_ejection_ms < c.base_ejection_ms {
                return Err(invalid(
                    "policies.circuit_breaker.max_ejection_ms",
                    "must be >= base_ejection_ms",
                ));
            }
        }
        Ok(())
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'
}

/// Upper bound of a listener's `max_connections` (tokio's semaphore allows more; a file
/// descriptor per connection makes more than this meaningless on one process).
const MAX_LISTENER_CONNECTIONS: u64 = 1_000_000;

fn check_range(field: &str, v: u64, lo: u64, hi: u64) -> Result<(), ConfigError> {
    if v < lo || v > hi {
        return Err(invalid(field, format!("{v} is outside {lo}..={hi}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
version = 1
function = "hello"
[inbound]
listen = "127.0.0.1:0"
upstream = ["127.0.0.1:8080"]
"#;

    #[test]
    fn minimal_config_parses_with_defaults() {
        let c = Config::from_toml_str(MINIMAL).expect("valid");
        assert_eq!(c.runtime.worker_threads, 1);
        assert_eq!(c.limits.max_headers, 64);
        assert!(c.policies.mtls.is_none());
    }

    #[test]
    fn unknown_field_is_rejected_with_its_name() {
        let text = format!("{MINIMAL}\nbogus = 3\n");
        let err = Config::from_toml_str(&text).expect_err("unknown field");
        assert!(err.to_string().contains("bogus"), "{err}");
        let text = MINIMAL.replace("[inbound]", "[inbound]\nlisten_port = 3");
        let err = Config::from_toml_str(&text).expect_err("unknown nested field");
        assert!(err.to_string().contains("listen_port"), "{err}");
    }

    #[test]
    fn wrong_version_names_the_field() {
        let err = Config::from_toml_str(&MINIMAL.replace("version = 1", "version = 2"))
            .expect_err("bad version");
        assert!(err.to_string().contains("`version`"), "{err}");
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let text = format!("{MINIMAL}\n[policies.tracing]\nsampling = 1.5\n");
        let err = Config::from_toml_str(&text).expect_err("bad sampling");
        assert!(
            err.to_string().contains("policies.tracing.sampling"),
            "{err}"
        );
        let text = format!("{MINIMAL}\n[policies.retry]\nmax_retries = 99\n");
        let err = Config::from_toml_str(&text).expect_err("bad retries");
        assert!(
            err.to_string().contains("policies.retry.max_retries"),
            "{err}"
        );
        let text = format!("{MINIMAL}\n[policies.mtls]\nmode = \"strict\"\n");
        let err = Config::from_toml_str(&text).expect_err("mtls without identity");
        assert!(err.to_string().contains("policies.mtls"), "{err}");
        let text =
            format!("{MINIMAL}\n[policies.ports]\nprotocols = [\"http1\"]\nupstream_ports = [9]\n");
        let err = Config::from_toml_str(&text).expect_err("upstream port not allowed");
        assert!(
            err.to_string().contains("policies.ports.upstream_ports"),
            "{err}"
        );
        let text = MINIMAL.replace("[inbound]\n", "[inbound]\nmax_connections = 0\n");
        let err = Config::from_toml_str(&text).expect_err("no connections allowed");
        assert!(err.to_string().contains("inbound.max_connections"), "{err}");
        let text = format!(
            "{MINIMAL}\n[outbound]\nlisten = \"127.0.0.1:0\"\nupstream = [\"127.0.0.1:1\"]\nmax_connections = 2000000\n"
        );
        let err = Config::from_toml_str(&text).expect_err("too many");
        assert!(
            err.to_string().contains("outbound.max_connections"),
            "{err}"
        );
        let text = MINIMAL.replace("[inbound]\n", "[inbound]\nmax_connections = 64\n");
        let c = Config::from_toml_str(&text).expect("valid limit");
        assert_eq!(c.inbound.max_connections, Some(64));
        assert!(c.to_toml().contains("max_connections = 64"));
    }

    #[test]
    fn shipped_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
        let c = Config::load(&path).expect("example config is valid");
        let p = &c.policies;
        assert!(p.mtls.is_some() && p.ports.is_some() && p.jwt.is_some() && p.authz.is_some());
        assert!(p.rate_limit.is_some() && p.tracing.is_some() && p.access_log.is_some());
        assert!(p.retry.is_some() && p.circuit_breaker.is_some());
    }

    #[test]
    fn isolation_is_validated_and_named() {
        let c = Config::from_toml_str(MINIMAL).expect("valid");
        assert_eq!(c.runtime.isolation, Isolation::Shared);
        let text = format!("{MINIMAL}[runtime]\nisolation = \"per-request\"\n");
        let c = Config::from_toml_str(&text).expect("per-request");
        assert_eq!(c.runtime.isolation, Isolation::PerRequest);
        let again = Config::from_toml_str(&c.to_toml()).expect("round trip");
        assert_eq!(again.runtime.isolation, Isolation::PerRequest);
        let text = format!("{MINIMAL}[runtime]\nisolation = \"wasm\"\n");
        let err = Config::from_toml_str(&text).expect_err("unknown value");
        assert!(err.to_string().contains("isolation"), "{err}");
        let text = format!("{MINIMAL}\n[sandbox]\nfuel = 1\n");
        let err = Config::from_toml_str(&text).expect_err("fuel too small");
        assert!(err.to_string().contains("sandbox.fuel"), "{err}");
        assert_eq!(
            "per-request".parse::<Isolation>(),
            Ok(Isolation::PerRequest)
        );
        assert!("x".parse::<Isolation>().is_err());
    }

    #[test]
    fn round_trips_through_toml() {
        let c = Config::from_toml_str(MINIMAL).expect("valid");
        let again = Config::from_toml_str(&c.to_toml()).expect("re-parse");
        assert_eq!(again.inbound.upstream, c.inbound.upstream);
    }
}
