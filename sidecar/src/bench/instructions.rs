//! User-space instructions per request of a proxy, counted by valgrind's callgrind
//! (`meshsim-sidecar bench --instructions N`).
//!
//! CPU time per request on a shared 2-core machine moves by 10-20 % from run to run, which is
//! as large as the pass-through gap this bench is asked about. An instruction count does not
//! depend on what else the machine is doing: callgrind counts the instructions the proxy
//! executes in user space (its own code and its libraries; not the kernel's system-call work,
//! which the same requests make the same way through nginx and the sidecar, see
//! `sidecar/ARCHITECTURE.md`). It is a different quantity from CPU time (no cache misses, no
//! branch mispredictions, no kernel) and callgrind runs the proxy ~50x slower, so it is a
//! repeatable view of the user-space part, not a replacement for the timed bench.
//!
//! Each proxy runs under callgrind twice, serving `small` and then `large` sequential requests
//! on one keep-alive connection after its first served request; start-up, the first request
//! and shutdown are the same in both runs, so `(total_large - total_small) / (large - small)`
//! is what one more request costs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{BenchError, Harness, LoadClient, Policy, Proc, Target, err, free_port};
use crate::config::Isolation;

/// How long a proxy under callgrind may take to serve its first request.
const FIRST_REQUEST_LIMIT: Duration = Duration::from_secs(120);
/// Per-request timeout under callgrind (the proxy runs ~50x slower).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a proxy under callgrind may take to exit after SIGTERM (callgrind writes its
/// counts at exit; a SIGKILL would lose them).
const EXIT_GRACE: Duration = Duration::from_secs(60);

/// The instruction count of one target.
#[derive(Debug, Clone, Serialize)]
pub struct InstructionCount {
    /// `nginx` or the sidecar policy set name.
    pub target: String,
    /// Requests of the short run.
    pub requests_small: u64,
    /// Requests of the long run.
    pub requests_large: u64,
    /// Instructions of the whole short run (start-up to exit).
    pub total_small: u64,
    /// Instructions of the whole long run.
    pub total_large: u64,
    /// `(total_large - total_small) / (requests_large - requests_small)`.
    pub per_request: f64,
    /// callgrind's output files of the short and the long run (in the harness's scratch
    /// directory, removed with the harness).
    pub files: [PathBuf; 2],
}

/// The total instruction count of a callgrind output file (its `totals:` line, or `summary:`
/// in older formats).
pub fn parse_totals(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find(|l| l.starts_with("totals:"))
        .or_else(|| text.lines().find(|l| l.starts_with("summary:")))?;
    line.split_once(':')?
        .1
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The name of the callgrind file of `target` (a table name such as `header-only/per-request`)
/// for the run of `requests` requests.
fn file_name(target: &str, requests: u64) -> String {
    format!("callgrind-{}-{requests}.out", target.replace('/', "-"))
}

/// `valgrind --version`, or an error saying how to get it.
pub fn valgrind_version(valgrind: &Path) -> Result<String, BenchError> {
    let out = std::process::Command::new(valgrind)
        .arg("--version")
        .output()
        .map_err(|e| {
            err(
                &format!(
                    "running {} (install Debian's valgrind package)",
                    valgrind.display()
                ),
                e,
            )
        })?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl Harness {
    /// Count the user-space instructions per request of `target` (a sidecar policy set or
    /// nginx) under `valgrind`'s callgrind, from a run of `small` and one of `large`
    /// sequential requests (see the module docs).
    pub fn count_instructions(
        &self,
        target: &Target,
        small: u64,
        large: u64,
        valgrind: &Path,
    ) -> Result<InstructionCount, BenchError> {
        if small >= large {
            return Err(BenchError(format!(
                "the short run ({small} requests) must be shorter than the long one ({large})"
            )));
        }
        let name = match (target, self.opts.isolation) {
            (Target::Sidecar(_), Isolation::PerRequest) => format!("{}/per-request", target.name()),
            _ => target.name(),
        };
        let (total_small, file_small) = self.callgrind_run(target, &name, small, valgrind)?;
        let (total_large, file_large) = self.callgrind_run(target, &name, large, valgrind)?;
        Ok(InstructionCount {
            target: name,
            requests_small: small,
            requests_large: large,
            total_small,
            total_large,
            per_request: (total_large as f64 - total_small as f64) / (large - small) as f64,
            files: [file_small, file_large],
        })
    }

    /// One run under callgrind: start the proxy, wait for its first served request, send
    /// `requests` more one after the other, stop it with SIGTERM, read its total (and say
    /// where callgrind's file is).
    fn callgrind_run(
        &self,
        target: &Target,
        name: &str,
        requests: u64,
        valgrind: &Path,
    ) -> Result<(u64, PathBuf), BenchError> {
        let out: PathBuf = self.dir.join(file_name(name, requests));
        let _ = std::fs::remove_file(&out);
        let wrap = [
            valgrind.display().to_string(),
            "--tool=callgrind".to_owned(),
            format!("--callgrind-out-file={}", out.display()),
        ];
        let spawn_at = Instant::now();
        let (addr, proc, tls) = match target {
            Target::Sidecar(set) => {
                let (addr, p) = self.spawn_sidecar_wrapped(set, &wrap)?;
                (addr, p, set.has(Policy::Mtls))
            }
            Target::Nginx => {
                let port = free_port()?;
                let child = self.spawn_nginx_wrapped(port, &wrap)?;
                (
                    SocketAddr::from(([127, 0, 0, 1], port)),
                    Proc::new(child),
                    false,
                )
            }
            Target::Direct => {
                return Err(BenchError(
                    "instruction counts are for proxies (a sidecar policy set or nginx)".into(),
                ));
            }
        };
        let served = self.rt.block_on(async {
            let client = LoadClient::new(addr, tls.then(|| self.client_tls.clone()), &self.token);
            client.wait_first_ok(spawn_at, FIRST_REQUEST_LIMIT).await?;
            for i in 0..requests {
                client.one(REQUEST_TIMEOUT).await.map_err(|kind| {
                    BenchError(format!(
                        "{name} under callgrind: request {} of {requests} failed: {kind}",
                        i + 1
                    ))
                })?;
            }
            Ok::<_, BenchError>(())
        });
        let exited = proc.stop_within(EXIT_GRACE);
        served?;
        if !exited {
            return Err(BenchError(format!(
                "{name} under callgrind did not exit within {} s of SIGTERM, so callgrind wrote no counts",
                EXIT_GRACE.as_secs()
            )));
        }
        let text = std::fs::read_to_string(&out)
            .map_err(|e| err(&format!("reading {}", out.display()), e))?;
        let total = parse_totals(&text).ok_or_else(|| {
            BenchError(format!(
                "{}: no `totals:` line (expected callgrind's output format)",
                out.display()
            ))
        })?;
        Ok((total, out))
    }
}

/// Render instruction counts as a Markdown table, with the ratio to nginx's count.
pub fn table(counts: &[InstructionCount]) -> String {
    let nginx = counts
        .iter()
        .find(|c| c.target == "nginx")
        .map(|c| c.per_request);
    let mut s = String::from(
        "| target | requests (short / long run) | instructions / request (user space) | x nginx |\n|---|---:|---:|---:|\n",
    );
    for c in counts {
        let ratio = match nginx {
            Some(n) if n > 0.0 => format!("{:.2}", c.per_request / n),
            _ => "-".into(),
        };
        s += &format!(
            "| {} | {} / {} | {:.0} | {} |\n",
            c.target, c.requests_small, c.requests_large, c.per_request, ratio
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_read_from_callgrind_output() {
        let text = "# callgrind format\nversion: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 22229165\n\nfn=(1) main\n0 5\ntotals: 22229327\n";
        assert_eq!(parse_totals(text), Some(22_229_327));
        assert_eq!(parse_totals("events: Ir\nsummary: 12\n"), Some(12));
        assert_eq!(parse_totals("events: Ir\n"), None);
        assert_eq!(parse_totals("totals: many\n"), None);
    }

    #[test]
    fn the_table_gives_ratios_to_nginx() {
        let c = |target: &str, per_request| InstructionCount {
            target: target.into(),
            requests_small: 500,
            requests_large: 2500,
            total_small: 0,
            total_large: 0,
            per_request,
            files: Default::default(),
        };
        let t = table(&[c("nginx", 20_000.0), c("pass-through", 42_000.0)]);
        assert!(t.contains("| nginx | 500 / 2500 | 20000 | 1.00 |"), "{t}");
        assert!(
            t.contains("| pass-through | 500 / 2500 | 42000 | 2.10 |"),
            "{t}"
        );
        let t = table(&[c("pass-through", 42_000.0)]);
        assert!(t.contains("| 42000 | - |"), "{t}");
    }
}
