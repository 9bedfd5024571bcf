//! `meshsim calibrate`: measurements that become the simulator's cost files.
//!
//! - `meshsim calibrate [--out FILE] [--duration S] [--rates ...]`: starts an upstream, the
//!   reference sidecar (the `meshsim-sidecar` binary next to `meshsim`) and, for the rate-limit
//!   policy, talks to Redis (`MESHSIM_REDIS_URL`, default 127.0.0.1:6379), all on loopback; drives
//!   an open-loop load at fixed rates for each policy set (none, each policy alone, all nine)
//!   and writes a calibration TOML (CPU µs per request from the sidecar process's own CPU time,
//!   added latency p50/p99 vs a direct call, RSS, start-up time), with the machine and date. The
//!   file is read back and validated with the schema the simulator uses before it is kept.
//!   Unless `--no-isolation`, it also measures per-request isolation (issue 9): the sandbox
//!   micro benchmark and the `header-only` set in both isolation modes, written as
//!   `[isolation.per_request]` (the `lightweight` mesh profile reads its sandbox boot cost).
//! - `meshsim calibrate xds [--out FILE] [--ks ...]`: xDS payload sizes from real Envoy protos.

use crate::output::write_atomic;
use crate::progress::Progress;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use meshsim_models::calibration::{IsolationCosts, IsolationPoint, PerRequestCosts};
use meshsim_sidecar::bench::{Harness, Options, PolicySet, run_suite, table};
use meshsim_sidecar::calibration::{CALIBRATION_SCHEMA, CalibrationFile, MachineInfo, PolicyCost};
use meshsim_sidecar::config::Isolation;
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
    /// Skip the per-request isolation measurements (`[isolation.per_request]`).
    #[arg(long)]
    pub no_isolation: bool,
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
    let bin = sidecar_bin(a.sidecar_bin)?;
    let opts = Options {
        sidecar_bin: bin.clone(),
        ..Options::default()
    };
    let redis = opts.redis_url.clone();
    let harness = Harness::new(opts)
        .map_err(|e| anyhow::anyhow!("setting up the calibration harness: {e}"))?;
    let sets = PolicySet::standard();
    // Per rate: the direct baseline, every policy set, and nginx.
    let points = a.rates.len() * (sets.len() + 1 + usize::from(!a.no_nginx))
        + if a.no_isolation { 0 } else { 4 * a.rates.len() };
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
    let isolation = if a.no_isolation {
        None
    } else {
        Some(
            measure_isolation(&bin, &a.rates, duration, a.repeats, &progress)
                .context("measuring per-request isolation")?,
        )
    };
    progress.finish();
    crate::outln!("{}", table(&ms));

    let file = CalibrationFile {
        schema: CALIBRATION_SCHEMA,
        measured_at: meshsim_sidecar::policy::access_log::rfc3339_ms(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        ),
        machine: MachineInfo::current(),
        method: format!(
            "meshsim calibrate {} (meshsim {}, git {}): open-loop HTTP/1.1 keep-alive load on loopback, {} s per point after a 1 s warm-up, median of {} run(s), 1 sidecar worker thread",
            std::env::args().skip(1).collect::<Vec<_>>().join(" "),
            env!("CARGO_PKG_VERSION"),
            env!("MESHSIM_GIT_REV"),
            a.duration,
            a.repeats
        ),
        reference: (!a.no_nginx)
            .then(|| "nginx (Debian package), 1 worker, upstream keepalive".to_owned()),
        entries: ms.iter().filter_map(PolicyCost::from_measurement).collect(),
        isolation,
    };
    let text = toml::to_string(&file).context("serialising the calibration file")?;
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

/// `[isolation.per_request]`: the in-process micro benchmark (fresh instance of an empty guest,
/// the header-only chain in a fresh instance, the same chain as shared checks) and, per rate,
/// the `header-only` policy set on loopback in both isolation modes (CPU per request, and the
/// idle proxy's anonymous memory one second after the load stops).
fn measure_isolation(
    bin: &std::path::Path,
    rates: &[u64],
    duration: Duration,
    repeats: usize,
    progress: &Progress,
) -> Result<IsolationCosts> {
    let micro = meshsim_sidecar::sandbox::micro::run(20_000)
        .map_err(|e| anyhow::anyhow!("sandbox micro benchmark: {e}"))?;
    crate::outln!("{}", micro.table());
    let mut modes = Vec::new();
    for isolation in [Isolation::Shared, Isolation::PerRequest] {
        let harness = Harness::new(Options {
            sidecar_bin: bin.to_owned(),
            isolation,
            idle_settle: Duration::from_secs(1),
            ..Options::default()
        })
        .map_err(|e| anyhow::anyhow!("isolation harness: {e}"))?;
        let ms = run_suite(
            &harness,
            rates,
            &[PolicySet::HeaderOnly],
            duration,
            repeats,
            false,
            |_| progress.inc(1),
        )
        .map_err(|e| anyhow::anyhow!("measuring header-only ({}): {e}", isolation.as_str()))?;
        modes.push(ms);
    }
    let find = |ms: &[meshsim_sidecar::bench::Measurement], name: &str, rate: u64| {
        ms.iter()
            .find(|m| m.target == name && m.rate_rps == rate)
            .cloned()
    };
    let mut entries = Vec::new();
    for &rate in rates {
        let (Some(s), Some(p)) = (
            find(&modes[0], "header-only", rate),
            find(&modes[1], "header-only/per-request", rate),
        ) else {
            continue;
        };
        entries.push(IsolationPoint {
            rate_rps: rate,
            shared_cpu_us_per_request: s.cpu_us_per_request.unwrap_or(0.0),
            per_request_cpu_us_per_request: p.cpu_us_per_request.unwrap_or(0.0),
            shared_idle_anon_kib: s.idle_anon_kib.unwrap_or(0),
            per_request_idle_anon_kib: p.idle_anon_kib.unwrap_or(0),
        });
    }
    Ok(IsolationCosts {
        per_request: Some(PerRequestCosts {
            sandbox_create_us: micro.empty_guest.mean_us,
            chain_us: micro.per_request_chain.mean_us,
            shared_chain_us: micro.shared_chain.mean_us,
            entries,
        }),
    })
}
