//! Each policy, allowed and denied, through a real sidecar on loopback; the JWT and mTLS
//! security matrices (every case must deny, never bypass). Shared isolation (tower layers);
//! `policies_per_request.rs` runs the same suite with a fresh sandbox per request.

mod common;

const ISOLATION: &str = "shared";

include!("suite/policies.rs");
