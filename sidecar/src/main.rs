//! `meshsim-sidecar`: run the reference sidecar, check a config, or run the bench.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "meshsim-sidecar", version, about = "meshsim reference sidecar")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the proxy with a per-function TOML config until SIGTERM/SIGINT (then drain).
    Serve {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
        /// Override `runtime.isolation`: `shared` (tower layers) or `per-request` (a fresh
        /// WebAssembly instance decides each request).
        #[arg(long)]
        isolation: Option<meshsim_sidecar::config::Isolation>,
    },
    /// Measure CPU/request, added latency, RSS and start-up of the sidecar (pass-through, each
    /// policy alone, all nine) and of nginx, with an open-loop load on loopback.
    Bench(BenchArgs),
    /// In-process micro benchmark of per-request isolation: a fresh sandbox instance (empty
    /// guest), the header-only chain in a fresh instance, and the same chain as shared checks.
    SandboxBench {
        /// Iterations per timing (after as many warm-up iterations, up to 10000).
        #[arg(long, default_value_t = 20_000)]
        iterations: u64,
    },
    /// Validate a config file and print it normalised.
    Check {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
    },
}

/// Arguments of `bench`.
#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Offered rates, requests per second.
    #[arg(long, value_delimiter = ',', default_value = "500,1000,2000")]
    pub rates: Vec<u64>,
    /// Measured seconds per point (after a 1 s warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub duration_s: f64,
    /// Runs per point; the median (by proxy CPU per request) is reported.
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// Only these policy sets (pass-through, all-nine, or policy names); default all.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Skip nginx.
    #[arg(long)]
    pub no_nginx: bool,
    /// Also write the measurements as a calibration TOML file (implies --no-lean).
    #[arg(long)]
    pub calibration_out: Option<PathBuf>,
    /// Isolation of the sidecar under test: `shared` or `per-request`.
    #[arg(long, default_value = "shared")]
    pub isolation: meshsim_sidecar::config::Isolation,
    /// `sandbox.keep_resident_bytes` of the sidecar under test (per-request isolation).
    #[arg(long, default_value_t = 0)]
    pub keep_resident_bytes: u64,
    /// After each point, wait this long with no request in flight and report the idle
    /// RSS (0 = skip).
    #[arg(long, default_value_t = 0.0)]
    pub idle_settle_s: f64,
    /// New mTLS connections per second for the handshake measurement (0: skip it).
    #[arg(long, default_value_t = 200)]
    pub handshake_rate: u64,
    /// Measure only the mTLS handshake (no policy sets, no nginx) and print it as a
    /// calibration `[mtls_handshake]` table.
    #[arg(long)]
    pub handshake_only: bool,
    /// Key algorithm of the bench's CA and workload certificates: `ecdsa-p256` or `rsa-2048`
    /// (Istio's default).
    #[arg(long, default_value = "ecdsa-p256")]
    pub key_algorithm: meshsim_sidecar::pki::KeyAlgorithm,
    /// Serve the pass-through through hyper's pipeline (`runtime.lean_http1 = false`), as
    /// calibration files measure it, instead of the lean HTTP/1.1 path.
    #[arg(long)]
    pub no_lean: bool,
    /// Instead of timing, count the user-space instructions per request of each selected
    /// policy set and of nginx under valgrind's callgrind: runs of N/5 and N sequential
    /// requests, per request = the difference / (N - N/5). Repeatable whatever the machine's
    /// load; ignores --rates, --duration-s and --repeats.
    #[arg(long, value_name = "N")]
    pub instructions: Option<u64>,
    /// valgrind executable (for --instructions).
    #[arg(long, default_value = "valgrind")]
    pub valgrind: PathBuf,
    /// The sidecar executable under test (default: this one), e.g. an older build for an A/B
    /// comparison with the same harness.
    #[arg(long, value_name = "PATH")]
    pub sidecar_bin: Option<PathBuf>,
    /// With --instructions: keep callgrind's output files in this directory (one per proxy
    /// and run, `callgrind-<target>-<requests>.out`, for `callgrind_annotate`).
    #[arg(long, value_name = "DIR")]
    pub callgrind_dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve { config, isolation } => serve(config, isolation, t0),
        Cmd::Bench(args) => bench(args),
        Cmd::SandboxBench { iterations } => {
            if !(1..=10_000_000).contains(&iterations) {
                anyhow::bail!("--iterations must be in 1..=10000000");
            }
            let m = meshsim_sidecar::sandbox::micro::run(iterations)?;
            println!("{}", m.table());
            Ok(())
        }
        Cmd::Check { config } => {
            let c = meshsim_sidecar::config::Config::load(&config)?;
            print!("{}", c.to_toml());
            Ok(())
        }
    }
}

fn serve(
    path: PathBuf,
    isolation: Option<meshsim_sidecar::config::Isolation>,
    t0: std::time::Instant,
) -> anyhow::Result<()> {
    let mut config = meshsim_sidecar::config::Config::load(&path)?;
    if let Some(i) = isolation {
        config.runtime.isolation = i;
    }
    let rt = if config.runtime.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.runtime.worker_threads)
            .enable_all()
            .build()
    }
    .context("building the tokio runtime")?;
    let config_isolation = config.runtime.isolation;
    rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let sidecar = meshsim_sidecar::Sidecar::start(config)
            .await
            .with_context(|| format!("starting with {}", path.display()))?;
        let line = serde_json::json!({
            "event": "listening",
            "inbound": sidecar.inbound.to_string(),
            "outbound": sidecar.outbound.map(|a| a.to_string()),
            "admin": sidecar.admin.map(|a| a.to_string()),
            "pid": std::process::id(),
            "isolation": config_isolation.as_str(),
            "startup_us": t0.elapsed().as_micros() as u64,
        });
        eprintln!("{line}");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        meshsim_sidecar::diag::event("info", "draining", "signal received");
        let clean = sidecar.shutdown().await;
        meshsim_sidecar::diag::event(
            "info",
            "stopped",
            if clean {
                "all connections drained"
            } else {
                "drain timeout; connections closed"
            },
        );
        Ok(())
    })
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let BenchArgs {
        rates,
        duration_s,
        repeats,
        only,
        no_nginx,
        calibration_out,
        isolation,
        keep_resident_bytes,
        idle_settle_s,
        handshake_rate,
        handshake_only,
        key_algorithm,
        no_lean,
        instructions,
        valgrind,
        callgrind_dir,
        sidecar_bin,
    } = args;
    let with_nginx = !no_nginx;
    let rates = &rates[..];
    use meshsim_sidecar::bench::{
        Harness, Options, PolicySet, handshake_line, measure_handshake_median, run_suite, table,
    };
    if !(0.5..=600.0).contains(&duration_s) {
        anyhow::bail!("--duration-s must be in 0.5..=600");
    }
    if !(1..=15).contains(&repeats) {
        anyhow::bail!("--repeats must be in 1..=15");
    }
    if rates.iter().any(|r| !(1..=20_000).contains(r)) {
        anyhow::bail!("--rates must each be in 1..=20000");
    }
    if !(0.0..=60.0).contains(&idle_settle_s) {
        anyhow::bail!("--idle-settle-s must be in 0..=60");
    }
    if handshake_rate > 2000 || (handshake_only && handshake_rate == 0) {
        anyhow::bail!(
            "--handshake-rate must be in 1..=2000 (0 skips it, except with --handshake-only)"
        );
    }
    if let Some(n) = instructions
        && !(50..=100_000).contains(&n)
    {
        anyhow::bail!("--instructions must be in 50..=100000 requests");
    }
    let sets: Vec<PolicySet> = PolicySet::standard()
        .into_iter()
        .chain([PolicySet::HeaderOnly])
        .filter(|s| {
            // header-only is measured when asked for by name (`--only header-only`).
            (only.is_empty() && *s != PolicySet::HeaderOnly) || only.iter().any(|o| *o == s.name())
        })
        .collect();
    if sets.is_empty() {
        anyhow::bail!("--only matched no policy set");
    }
    let defaults = Options::default();
    let harness = Harness::new(Options {
        sidecar_bin: sidecar_bin.unwrap_or(defaults.sidecar_bin.clone()),
        isolation,
        sandbox_keep_resident_bytes: keep_resident_bytes,
        idle_settle: std::time::Duration::from_secs_f64(idle_settle_s),
        key_algorithm,
        // A calibration file's pass-through is hyper's (see `meshsim calibrate`).
        lean_http1: !no_lean && calibration_out.is_none(),
        ..defaults
    })
    .context("setting up the bench")?;
    if let Some(n) = instructions {
        return count_instructions(
            &harness,
            &sets,
            with_nginx,
            n,
            &valgrind,
            callgrind_dir.as_deref(),
        );
    }
    let duration = std::time::Duration::from_secs_f64(duration_s);
    let handshake = if handshake_rate > 0 {
        let h = measure_handshake_median(&harness, handshake_rate, duration, repeats)
            .context("measuring the mTLS handshake")?;
        eprintln!("{}", handshake_line(&h));
        Some(h)
    } else {
        None
    };
    if handshake_only {
        #[derive(serde::Serialize)]
        struct Table<'a> {
            mtls_handshake: &'a meshsim_sidecar::calibration::HandshakeCost,
        }
        if let Some(h) = &handshake {
            print!(
                "{}",
                toml::to_string(&Table { mtls_handshake: h }).context("serialising")?
            );
        }
        return Ok(());
    }
    let ms = run_suite(&harness, rates, &sets, duration, repeats, with_nginx, |m| {
        eprintln!(
            "{:>5} rps {:<16} cpu/req {:>7} us  p50 {:>6} us  p99 {:>7} us  ok {}/{} {:?} rss {:?} KiB idle {:?} KiB (anon {:?})",
            m.rate_rps,
            m.target,
            m.cpu_us_per_request
                .map(|c| format!("{c:.1}"))
                .unwrap_or_else(|| "-".into()),
            m.latency_p50_us,
            m.latency_p99_us,
            m.ok,
            m.sent,
            m.failures,
            m.rss_kib,
            m.idle_rss_kib,
            m.idle_anon_kib
        );
    })?;
    println!("{}", table(&ms));
    println!("{}", pass_through_path(harness.options().lean_http1));
    if let Some(h) = &handshake {
        println!("{}", handshake_line(h));
    }
    if let Some(path) = calibration_out {
        let file = meshsim_sidecar::calibration::file_from(
            &ms,
            handshake,
            format!(
                "meshsim-sidecar bench: open-loop HTTP/1.1 keep-alive load on loopback, {duration_s} s per point after 1 s warm-up, median of {repeats} interleaved round(s), CPU over pass-through as the median of the per-round differences, 1 proxy worker thread; mTLS handshake: {handshake_rate} fresh connections/s vs reused, same duration"
            ),
            with_nginx.then(|| "nginx (Debian package), 1 worker, upstream keepalive".to_owned()),
        );
        file.validate()
            .context("the measurements do not make a valid calibration file")?;
        std::fs::write(&path, file.to_toml_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `bench --instructions N`: callgrind counts of nginx (first) and each policy set.
fn count_instructions(
    harness: &meshsim_sidecar::bench::Harness,
    sets: &[meshsim_sidecar::bench::PolicySet],
    with_nginx: bool,
    n: u64,
    valgrind: &std::path::Path,
    keep: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use meshsim_sidecar::bench::{Target, instructions};
    let version = instructions::valgrind_version(valgrind)?;
    if let Some(dir) = keep {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let targets = with_nginx
        .then_some(Target::Nginx)
        .into_iter()
        .chain(sets.iter().cloned().map(Target::Sidecar));
    let mut counts = Vec::new();
    for t in targets {
        let c = harness
            .count_instructions(&t, n / 5, n, valgrind)
            .with_context(|| format!("counting the instructions of {}", t.name()))?;
        if let Some(dir) = keep {
            for from in &c.files {
                let to = dir.join(from.file_name().unwrap_or_default());
                std::fs::copy(from, &to).with_context(|| format!("keeping {}", from.display()))?;
            }
        }
        eprintln!(
            "{:<16} {:>9.0} instructions/request (totals {} and {})",
            c.target, c.per_request, c.total_small, c.total_large
        );
        counts.push(c);
    }
    println!("{}", instructions::table(&counts));
    println!(
        "user-space instructions per request counted by {version} (callgrind); one keep-alive connection, sequential requests, 1 proxy worker thread"
    );
    println!("{}", pass_through_path(harness.options().lean_http1));
    Ok(())
}

/// The table footer saying which path served the pass-through.
fn pass_through_path(lean: bool) -> &'static str {
    if lean {
        "pass-through: the lean HTTP/1.1 path (runtime.lean_http1 = true; --no-lean measures hyper's pipeline, as calibration files do)"
    } else {
        "pass-through: hyper's pipeline without a layer (runtime.lean_http1 = false, as in calibration files)"
    }
}
