//! The meshsim reference sidecar: an HTTP/1.1 + HTTP/2 reverse proxy (tokio, hyper 1,
//! hyper-util, tower) in front of one function's upstream, enforcing the nine service-mesh
//! policies of the SoCC '25 paper's Table 1 as tower layers, plus the calibration harness
//! that measures what each policy costs.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = meshsim_sidecar::config::Config::from_toml_str(r#"
//!     version = 1
//!     function = "hello"
//!     [inbound]
//!     listen = "127.0.0.1:0"
//!     upstream = ["127.0.0.1:8080"]
//!     [policies.tracing]
//!     sampling = 0.01
//! "#)?;
//! let sidecar = meshsim_sidecar::Sidecar::start(config).await?;
//! println!("proxying on {}", sidecar.inbound);
//! sidecar.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! See `sidecar/ARCHITECTURE.md` for the runtime layout and the request path.

// Denials travel as `Result<(), Resp>`; an `http::Response` is 128+ bytes but the `Err`
// path is the cold one and the value is moved once, so boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

pub mod bench;
pub mod calibration;
pub mod config;
pub mod diag;
pub mod digits;
pub mod http;
pub mod lean;
pub mod pki;
pub mod policy;
pub mod sandbox;
pub mod scan;
pub mod server;
pub mod stats;
pub mod upstream;

pub use server::{Sidecar, StartError};
