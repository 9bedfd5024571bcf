//! Process counters, served as JSON by the admin listener's `/stats`.

use std::sync::atomic::{AtomicU64, Ordering};

/// A relaxed atomic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

macro_rules! stats {
    ($($name:ident: $doc:literal,)*) => {
        /// Counters of one sidecar process.
        #[derive(Debug, Default)]
        pub struct Stats {
            $(#[doc = $doc] pub $name: Counter,)*
        }
        impl Stats {
            /// All counters as a JSON object.
            pub fn to_json(&self) -> serde_json::Value {
                let mut m = serde_json::Map::new();
                $(m.insert(stringify!($name).into(), self.$name.get().into());)*
                serde_json::Value::Object(m)
            }
        }
    };
}

stats! {
    connections: "Accepted client connections.",
    connections_refused: "Client connections closed at accept because the listener was at max_connections.",
    tls_handshake_failures: "TLS handshakes that failed (no/invalid client certificate, plaintext on a strict port).",
    requests: "Requests that entered the policy chain.",
    rejected_front: "Requests refused by the front (framing, limits, method/URI).",
    rate_limited: "Requests refused by the global (Redis) limit.",
    rate_limited_local: "Requests refused by the local token bucket.",
    redis_errors: "Rate-limit checks that could not reach Redis.",
    access_log_dropped: "Access-log lines dropped because the writer queue was full.",
    retries: "Retries sent.",
    retry_budget_exhausted: "Retries skipped because the budget was exhausted.",
    circuit_overflow: "Requests refused by circuit-breaker limits.",
    ejections: "Outlier ejections.",
    upstream_errors: "Upstream connect failures and resets.",
    sandbox_runs: "Requests decided in a fresh sandbox instance (per-request isolation).",
    sandbox_failures: "Sandboxed policy runs that trapped, ran out of fuel or memory (request refused).",
    sandbox_releases: "Times an idle sandbox dropped its compiled module, engine and pool (sandbox.idle_release_ms).",
    sandbox_recompiles: "Times a request after an idle release compiled the policy module again.",
}
