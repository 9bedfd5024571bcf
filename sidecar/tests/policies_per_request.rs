//! The policy suite of `policies.rs`, every sidecar started with `runtime.isolation =
//! "per-request"`: the header-only policies run in a fresh WebAssembly instance per request
//! and must make the same decisions.

mod common;

const ISOLATION: &str = "per-request";

include!("suite/policies.rs");
