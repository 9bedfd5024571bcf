//! The sidecar as a process: SIGTERM drain, instruction counts under callgrind, and the bounded soak (2000 req/s with all nine
//! policies for `MESHSIM_SOAK_SECS`, default 15, RSS sampled from /proc/<pid>/stat). Needs Redis
//! (`MESHSIM_REDIS_URL`, default redis://127.0.0.1:6379/).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use meshsim_sidecar::bench::{Harness, Options, Policy, PolicySet, Target, soak_verdict};

const BIN: &str = env!("CARGO_BIN_EXE_meshsim-sidecar");

/// The soak and the callgrind runs each keep a core busy for seconds: they take turns, so the
/// soak's open-loop load is not starved by valgrind running beside it.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let up = upstream().await;
    let (port, admin_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("fn.toml");
    std::fs::write(
        &cfg,
        format!(
            "version = 1\nfunction = \"drain\"\n[runtime]\ndrain_timeout_ms = 3000\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n[inbound]\nlisten = \"127.0.0.1:{port}\"\nupstream = [\"{}\"]\n",
            up.addr
        ),
    )
    .expect("write config");
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sidecar");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], admin_port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while send(admin, get("/ready")).await.map(|r| r.status) != Ok(200) {
        assert!(Instant::now() < deadline, "sidecar never became ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let slow = tokio::spawn(async move { send(addr, get("/slow")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let r = slow
        .await
        .expect("join")
        .expect("in-flight request completed");
    assert_eq!(r.status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "sidecar did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(status.success(), "{status}");
    let mut stderr = String::new();
    use std::io::Read as _;
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read");
    assert!(stderr.contains("\"event\":\"draining\""), "{stderr}");
    assert!(stderr.contains("all connections drained"), "{stderr}");
}

/// The soak: all nine policies at 2000 req/s through the real binary. CI runs the short
/// default (15 s); the 60 s run: `MESHSIM_SOAK_SECS=60 cargo test --release -p
/// meshsim-sidecar --test process soak`. The pass criteria ([`soak_verdict`]) tolerate what a
/// machine loaded by other work does to an open-loop load (timeouts, overflow, up to 20 %),
/// never an unexpected failure, and judge RSS by its trend in each quarter of the second half.
#[test]
fn soak_all_policies_at_2000rps_rss_flat() {
    let _turn = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let secs: u64 = std::env::var("MESHSIM_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15)
        .clamp(6, 3600);
    // At least 12 RSS samples, at most one per second.
    let every_s = (secs / 12).max(1);
    let harness = Harness::new(Options {
        sidecar_bin: BIN.into(),
        redis_url: redis_url(),
        warmup: Duration::from_secs(2),
        request_timeout: Duration::from_secs(10),
        // Two workers, as Istio's default sidecar concurrency: on a shared 2-core machine a
        // single thread's fair share can fall below the ~0.3 core this load needs.
        worker_threads: 2,
        ..Options::default()
    })
    .expect("harness");
    let load_before = loadavg();
    let (m, rss) = harness
        .soak(
            &PolicySet::All,
            2000,
            Duration::from_secs(secs),
            Duration::from_secs(every_s),
        )
        .expect("soak runs");
    let load = format!("loadavg before: {load_before}, after: {}", loadavg());
    eprintln!("soak: {m:?}\nrss KiB every {every_s} s: {rss:?}\n{load}");
    assert_eq!(m.sent, 2000 * secs);
    // 64 KiB/s is 32 bytes per request kept at 2000 req/s (a 60 s run would grow ~4 MiB).
    if let Err(why) = soak_verdict(&m, &rss, every_s as f64, 0.8, 64.0) {
        panic!(
            "{why} ({load}); re-run alone: MESHSIM_SOAK_SECS={secs} cargo test --release -p meshsim-sidecar --test process soak"
        );
    }
    assert!(
        rss.iter().all(|r| *r < 256 * 1024),
        "RSS stays bounded: {rss:?}"
    );
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_flag_overrides_the_config() {
    let up = upstream().await;
    let (port, admin_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("fn.toml");
    std::fs::write(
        &cfg,
        format!(
            "version = 1\nfunction = \"iso\"\n[runtime]\nisolation = \"shared\"\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n[inbound]\nlisten = \"127.0.0.1:{port}\"\nupstream = [\"{}\"]\n[policies.tracing]\nsampling = 1.0\n",
            up.addr
        ),
    )
    .expect("write config");
    let bad = Command::new(BIN)
        .args(["serve", "--isolation", "wasm", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("isolation"));
    let mut child = Command::new(BIN)
        .args(["serve", "--isolation", "per-request", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sidecar");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], admin_port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while send(admin, get("/ready")).await.map(|r| r.status) != Ok(200) {
        assert!(Instant::now() < deadline, "sidecar never became ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let r = send(addr, get("/")).await.expect("reply");
    assert_eq!(r.status, 200);
    assert!(r.echoed()["traceparent"].as_str().is_some());
    let stats = send(admin, get("/stats")).await.expect("stats");
    let stats: serde_json::Value = serde_json::from_slice(&stats.body).expect("json");
    assert_eq!(stats["sandbox_runs"], 1, "{stats}");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "sidecar did not exit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `bench --instructions`: the count of instructions per request under callgrind repeats
/// (the reason to have it next to the timed bench), and it sees the cost of a policy: the
/// access log (a JSON line formatted and written per request) adds instructions to the bare
/// proxy. Needs valgrind (`.ci/run` installs Debian's package).
#[test]
fn instruction_counts_repeat_and_see_a_policy() {
    let _turn = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let harness = Harness::new(Options {
        sidecar_bin: BIN.into(),
        redis_url: redis_url(),
        ..Options::default()
    })
    .expect("harness");
    let valgrind = std::path::Path::new("valgrind");
    meshsim_sidecar::bench::instructions::valgrind_version(valgrind).expect("valgrind installed");
    let count = |set: PolicySet| {
        harness
            .count_instructions(&Target::Sidecar(set), 60, 300, valgrind)
            .expect("callgrind run")
    };
    let a = count(PolicySet::PassThrough);
    let b = count(PolicySet::PassThrough);
    let log = count(PolicySet::Only(Policy::AccessLog));
    eprintln!("{a:?}\n{b:?}\n{log:?}");
    assert!(
        a.per_request > 5_000.0,
        "a proxied request executes thousands of instructions: {a:?}"
    );
    let spread = (a.per_request - b.per_request).abs() / a.per_request;
    assert!(
        spread < 0.05,
        "two counts differ by {spread:.3}: {a:?} {b:?}"
    );
    // The access log adds ~5.5 k instructions per request to ~38 k (bench --instructions
    // 2500); a count over 240 requests moves by up to ~2.5 % between runs (timer and epoll
    // paths differ), so the bar is 5 % over the larger of the two pass-through counts.
    assert!(
        log.per_request > a.per_request.max(b.per_request) * 1.05,
        "the access log adds instructions: {log:?} vs {a:?} and {b:?}"
    );
}
