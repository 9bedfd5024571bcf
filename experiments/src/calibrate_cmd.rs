//! `meshsim calibrate`: measurements that become the simulator's cost files.
//!
//! - `meshsim calibrate [--out FILE] [--duration S] [--rates ...]`: starts an upstream, the
//!   reference sidecar (the `meshsim-sidecar` binary next to `meshsim`) and, for the rate-limit
//!   policy, talks to Redis (`MESHSIM_REDIS_URL`, default 127.0.0.1:6379), all on loopback; drives
//!   an open-loop load at fixed rates for each policy set (none, each policy alone, all nine)
//!   and writes a calibration TOML (CPU µs per request from the sidecar process's own CPU time,
//!   added latency p50/p99 vs a direct call, RSS, start-up time), with the machine and date. The
//!   file is read back and validated with the schema the simulator uses before it is kept.
//! - `meshsim calibrate xds [--out FILE] [--ks ...]`: xDS payload sizes from real Envoy protos.

use crate::output::write_atomic;
use crate::progress::Progress;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use meshsim_sidecar::bench::{Harness, Options, PolicySet, run_suite, table};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CalibrateArgs {
    #[command(subcommand)]
    pub what: Option<CalibrateWhat>,
    #[command(flatten)]
    pub live: LiveArgs,
}

#[derive(Debug, Subcommand)]
pub enum CalibrateWhat {
    /// Regenerate models/xds-sizes.toml from real Envoy protobuf encodings of the resources
    /// Istio sends for K Knative services (sidecar and gateway views, every config scope).
    Xds(XdsArgs),
}

#[derive(Debug, Args)]
pub struct XdsArgs {
    #[arg(long, default_value = "models/xds-sizes.toml")]
    pub out: PathBuf,
    /// Numbers of Knative services to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,10,50,100,200,500")]
    pub ks: Vec<usize>,
}

#[derive(Debug, Args)]
pub struct LiveArgs {
    /// The calibration file to write.
    #[arg(long, default_value = "models/calibration/local.toml")]
    pub out: PathBuf,
    /// Measured seconds per point (after a 1 s warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Offered loads, requests per second.
    #[arg(long, value_delimiter = ',', default_value = "500,1000,2000")]
    pub rates: Vec<u64>,
    /// Runs per point; the median is kept.
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// Skip the nginx reference.
    #[arg(long)]
    pub no_nginx: bool,
    /// The sidecar executable (default: meshsim-sidecar next to this binary).
    #[arg(long)]
    pub sidecar_bin: Option<PathBuf>,
}

pub fn run(a: CalibrateArgs) -> Result<()> {
    match a.what {
        Some(CalibrateWhat::Xds(x)) => crate::xds_sizes::run_cli(&x.out, &x.ks),
        None => live(a.live),
    }
}

fn sidecar_bin(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    let exe = std::env::current_exe().context("locating the meshsim executable")?;
    let sibling = exe.with_file_name("meshsim-sidecar");
    if sibling.is_file() {
        return Ok(sibling);
    }
    // Integration tests run from target/<profile>/deps; the binaries sit one level up.
    if let Some(up) = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("meshsim-sidecar"))
        .filter(|p| p.is_file())
    {
        return Ok(up);
    }
    bail!(
        "the reference sidecar binary is not next to {}: build it with `cargo build --release -p meshsim-sidecar` or pass --sidecar-bin",
        exe.display()
    )
}

fn live(a: LiveArgs) -> Result<()> {
    if !(0.2..=600.0).contains(&a.duration) {
        bail!(
            "--duration: expected 0.2..=600 seconds, found {}",
            a.duration
        );
    }
    if a.rates.is_empty() || a.rates.iter().any(|r| !(1..=20_000).contains(r)) {
        bail!(
            "--rates: expected 1..=20000 requests per second each, found {:?}",
            a.rates
        );
    }
    if !(1..=15).contains(&a.repeats) {
        bail!("--repeats: expected 1..=15, found {}", a.repeats);
    }
    let opts = Options {
        sidecar_bin: sidecar_bin(a.sidecar_bin)?,
        ..Options::default()
    };
    let redis = opts.redis_url.clone();
    let harness = Harness::new(opts)
        .map_err(|e| anyhow::anyhow!("setting up the calibration harness: {e}"))?;
    let sets = PolicySet::standard();
    // Per rate: the direct baseline, every policy set, and nginx.
    let points = a.rates.len() * (sets.len() + 1 + usize::from(!a.no_nginx));
    let progress = Progress::new(points as u64, "calibrate");
    let duration = Duration::from_secs_f64(a.duration);
    let ms = run_suite(
        &harness,
        &a.rates,
        &sets,
        duration,
        a.repeats,
        !a.no_nginx,
        |_| progress.inc(1),
    )
    .map_err(|e| anyhow::anyhow!("measuring (Redis at {redis}): {e}"))?;
    progress.finish();
    crate::outln!("{}", table(&ms));

    let file = meshsim_sidecar::calibration::file_from(
        &ms,
        format!(
            "meshsim calibrate {} (meshsim {}, git {}): open-loop HTTP/1.1 keep-alive load on loopback, {} s per point after a 1 s warm-up, median of {} run(s), 1 sidecar worker thread",
            std::env::args().skip(1).collect::<Vec<_>>().join(" "),
            env!("CARGO_PKG_VERSION"),
            env!("MESHSIM_GIT_REV"),
            a.duration,
            a.repeats
        ),
        (!a.no_nginx).then(|| "nginx (Debian package), 1 worker, upstream keepalive".to_owned()),
    );
    let text = file.to_toml_string();
    // Read it back with the simulator's schema: what is kept is what replays can use.
    meshsim_models::CalibrationFile::from_toml_str(&text, &a.out.display().to_string())
        .context("the measured calibration does not validate")?;
    write_atomic(&a.out, text.as_bytes())?;
    crate::outln!(
        "calibration written to {} (use it with `meshsim replay --calibration {}`)",
        a.out.display(),
        a.out.display()
    );
    Ok(())
}
