//! `meshsim calibrate`: measurements that become the simulator's cost files.
//!
//! - `meshsim calibrate [--out FILE] [--duration S] [--rates ...]`: starts an upstream, the
//!   reference sidecar (the `meshsim-sidecar` binary next to `meshsim`) and, for the rate-limit
//!   policy, talks to Redis (`MESHSIM_REDIS_URL`, default 127.0.0.1:6379), all on loopback; drives
//!   an open-loop load at fixed rates for each policy set (none, each policy alone, all nine;
//!   "none" through hyper's pipeline, `runtime.lean_http1 = false`, see `Options::lean_http1`)
//!   and writes a calibration TOML (CPU µs per request from the sidecar process's own CPU time,
//!   added latency p50/p99 vs a direct call, RSS, start-up time), with the machine and date. The
//!   file is read back and validated with the schema the simulator uses before it is kept.
//!   Unless `--no-isolation`, it also measures per-request isolation (issue 9): the sandbox
//!   micro benchmark and the `header-only` set in both isolation modes, written as
//!   `[isolation.per_request]` (the `lightweight` mesh profile reads its sandbox boot cost).
//!   It also measures a full mTLS handshake on a new connection (`[mtls_handshake]`: sidecar
//!   and client CPU per handshake, added latency of a fresh connection's first request), by
//!   driving `--handshake-rate` fresh connections per second against reused ones.
//! - `meshsim calibrate handshake --into FILE`: measures only the handshake and sets that
//!   table in an existing calibration file (its entries and leading comments are kept).
//! - `meshsim calibrate xds [--out FILE] [--ks ...]`: xDS payload sizes from real Envoy protos.

use crate::output::write_atomic;
use crate::progress::Progress;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use meshsim_models::calibration::{IsolationCosts, IsolationPoint, PerRequestCosts};
use meshsim_sidecar::bench::{
    Harness, Options, PolicySet, handshake_line, measure_handshake_median, run_suite, table,
};
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
    /// Measure only the mTLS handshake cost and set the `[mtls_handshake]` table of an existing
    /// calibration file (entries and leading comment lines are kept).
    Handshake(HandshakeArgs),
    /// Measure only per-request isolation (the sandbox micro benchmark and the `header-only`
    /// set in both isolation modes) and set the `[isolation]` table of an existing calibration
    /// file (entries and leading comment lines are kept).
    Isolation(IsolationArgs),
}

#[derive(Debug, Args)]
pub struct IsolationArgs {
    /// The calibration file to update.
    #[arg(long)]
    pub into: PathBuf,
    /// Offered rates for the loopback points, requests per second.
    #[arg(long, value_delimiter = ',', default_value = "1000,2000")]
    pub rates: Vec<u64>,
    /// Measured seconds per point (after a 1 s warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Runs per point; the median is kept.
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// The sidecar executable (default: meshsim-sidecar next to this binary).
    #[arg(long)]
    pub sidecar_bin: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct HandshakeArgs {
    /// The calibration file to update.
    #[arg(long)]
    pub into: PathBuf,
    /// Measured seconds (after a short warm-up), for each of the two phases.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// New mTLS connections per second.
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// Runs; the median (by sidecar CPU) is kept.
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// The sidecar executable (default: meshsim-sidecar next to this binary).
    #[arg(long)]
    pub sidecar_bin: Option<PathBuf>,
    /// Key algorithm of the CA and workload certificates: `ecdsa-p256` sets
    /// `[mtls_handshake]`, `rsa-2048` (Istio's default workload keys) sets
    /// `[mtls_handshake_rsa2048]`.
    #[arg(long, default_value = "ecdsa-p256")]
    pub key_algorithm: meshsim_sidecar::pki::KeyAlgorithm,
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
    /// Rounds, each measuring every target once; a point keeps its median round, and each
    /// policy set the median of its per-round CPU differences to the pass-through.
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// Skip the nginx reference.
    #[arg(long)]
    pub no_nginx: bool,
    /// New mTLS connections per second for the handshake measurement.
    #[arg(long, default_value_t = 200)]
    pub handshake_rate: u64,
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
        Some(CalibrateWhat::Handshake(h)) => handshake_into(h),
        Some(CalibrateWhat::Isolation(i)) => isolation_into(i),
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

fn check_duration(d: f64) -> Result<()> {
    if !(0.2..=600.0).contains(&d) {
        bail!("--duration: expected 0.2..=600 seconds, found {d}");
    }
    Ok(())
}

fn check_handshake_rate(flag: &str, r: u64) -> Result<()> {
    if !(1..=2000).contains(&r) {
        bail!("{flag}: expected 1..=2000 new connections per second, found {r}");
    }
    Ok(())
}

fn check_repeats(r: usize) -> Result<()> {
    if !(1..=15).contains(&r) {
        bail!("--repeats: expected 1..=15, found {r}");
    }
    Ok(())
}

/// Reads the calibration file at `path`, lets `measure` set one of its tables, validates the
/// result and writes it back atomically, keeping the file's leading comment lines.
fn update_into(
    path: &std::path::Path,
    table: &str,
    measure: impl FnOnce(&mut meshsim_models::CalibrationFile) -> Result<()>,
) -> Result<()> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {name}"))?;
    let mut file = meshsim_models::CalibrationFile::from_toml_str(&text, &name)?;
    measure(&mut file)?;
    let header: String = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let out = format!("{header}{}", file.to_toml_string());
    meshsim_models::CalibrationFile::from_toml_str(&out, &name)
        .context("the updated calibration does not validate")?;
    write_atomic(path, out.as_bytes())?;
    crate::outln!("{table} written to {name}");
    Ok(())
}

fn handshake_into(a: HandshakeArgs) -> Result<()> {
    check_duration(a.duration)?;
    check_handshake_rate("--rate", a.rate)?;
    check_repeats(a.repeats)?;
    let opts = Options {
        sidecar_bin: sidecar_bin(a.sidecar_bin)?,
        key_algorithm: a.key_algorithm,
        ..Options::default()
    };
    let rsa = a.key_algorithm == meshsim_sidecar::pki::KeyAlgorithm::Rsa2048;
    let table = if rsa {
        "[mtls_handshake_rsa2048]"
    } else {
        "[mtls_handshake]"
    };
    update_into(&a.into, table, |file| {
        let harness = Harness::new(opts)
            .map_err(|e| anyhow::anyhow!("setting up the calibration harness: {e}"))?;
        let h = measure_handshake_median(
            &harness,
            a.rate,
            Duration::from_secs_f64(a.duration),
            a.repeats,
        )
        .map_err(|e| anyhow::anyhow!("measuring the mTLS handshake: {e}"))?;
        crate::outln!("{}", handshake_line(&h));
        if rsa {
            file.mtls_handshake_rsa2048 = Some(h);
        } else {
            file.mtls_handshake = Some(h);
        }
        Ok(())
    })
}

fn isolation_into(a: IsolationArgs) -> Result<()> {
    check_duration(a.duration)?;
    check_repeats(a.repeats)?;
    if a.rates.is_empty() || a.rates.iter().any(|r| !(1..=20_000).contains(r)) {
        bail!(
            "--rates: expected 1..=20000 requests per second each, found {:?}",
            a.rates
        );
    }
    let bin = sidecar_bin(a.sidecar_bin)?;
    update_into(&a.into, "[isolation]", |file| {
        let progress = Progress::new(4 * a.rates.len() as u64, "calibrate isolation");
        let iso = measure_isolation(
            &bin,
            &a.rates,
            Duration::from_secs_f64(a.duration),
            a.repeats,
            &progress,
        )
        .context("measuring per-request isolation")?;
        progress.finish();
        file.isolation = Some(iso);
        Ok(())
    })
}

fn live(a: LiveArgs) -> Result<()> {
    check_duration(a.duration)?;
    check_handshake_rate("--handshake-rate", a.handshake_rate)?;
    if a.rates.is_empty() || a.rates.iter().any(|r| !(1..=20_000).contains(r)) {
        bail!(
            "--rates: expected 1..=20000 requests per second each, found {:?}",
            a.rates
        );
    }
    check_repeats(a.repeats)?;
    let bin = sidecar_bin(a.sidecar_bin)?;
    let opts = Options {
        sidecar_bin: bin.clone(),
        // The simulator scales these costs to Envoy's, whose path without a policy is its
        // whole HTTP pipeline: the comparable pass-through is hyper's, not the lean path's.
        lean_http1: false,
        ..Options::default()
    };
    let redis = opts.redis_url.clone();
    let harness = Harness::new(opts)
        .map_err(|e| anyhow::anyhow!("setting up the calibration harness: {e}"))?;
    let sets = PolicySet::standard();
    // Per rate: the direct baseline, every policy set, and nginx; then the handshake; then
    // per-request isolation (4 points per rate).
    let points = a.rates.len() * (sets.len() + 1 + usize::from(!a.no_nginx))
        + 1
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
    let handshake = measure_handshake_median(&harness, a.handshake_rate, duration, a.repeats)
        .map_err(|e| anyhow::anyhow!("measuring the mTLS handshake: {e}"))?;
    progress.inc(1);
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
    crate::outln!("{}", handshake_line(&handshake));

    let mut file = meshsim_sidecar::calibration::file_from(
        &ms,
        Some(handshake),
        format!(
            "meshsim {} (meshsim {}, git {}): open-loop HTTP/1.1 keep-alive load on loopback, {} s per point after a 1 s warm-up, median of {} interleaved round(s), CPU over pass-through as the median of the per-round differences, 1 sidecar worker thread; mTLS handshake: fresh connections vs reused at the same rate",
            std::env::args().skip(1).collect::<Vec<_>>().join(" "),
            env!("CARGO_PKG_VERSION"),
            env!("MESHSIM_GIT_REV"),
            a.duration,
            a.repeats
        ),
        (!a.no_nginx).then(|| "nginx (Debian package), 1 worker, upstream keepalive".to_owned()),
    );
    file.isolation = isolation;
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
            // Past the sandbox's idle release (1 s by default) and the reaper's check.
            idle_settle: Duration::from_secs(2),
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
            .and_then(|m| Some((m.cpu_us_per_request?, m.idle_anon_kib?)))
            .with_context(|| format!("{name} at {rate} req/s: no CPU or idle-memory reading"))
    };
    let mut entries = Vec::new();
    for &rate in rates {
        let (shared_cpu, shared_anon) = find(&modes[0], "header-only", rate)?;
        let (per_request_cpu, per_request_anon) = find(&modes[1], "header-only/per-request", rate)?;
        entries.push(IsolationPoint {
            rate_rps: rate,
            shared_cpu_us_per_request: shared_cpu,
            per_request_cpu_us_per_request: per_request_cpu,
            shared_idle_anon_kib: shared_anon,
            per_request_idle_anon_kib: per_request_anon,
        });
    }
    Ok(IsolationCosts {
        per_request: Some(PerRequestCosts {
            sandbox_create_us: micro.empty_guest.mean_us,
            chain_us: micro.per_request_chain.mean_us,
            shared_chain_us: micro.shared_chain.mean_us,
            recompile_us: Some(micro.after_release.mean_us),
            module_kib: Some(micro.idle.module_kib).filter(|v| v.is_finite()),
            compiled_kib_per_function: Some(micro.idle.compiled_kib_per_function)
                .filter(|v| v.is_finite()),
            idle_kib_per_function: Some(micro.idle.released_kib_per_function)
                .filter(|v| v.is_finite()),
            entries,
        }),
    })
}
