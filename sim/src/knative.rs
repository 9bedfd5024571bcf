//! Knative Serving: the KPA autoscaler behind the [`Autoscaler`] trait and the per-revision
//! concurrency metric it reads.
//!
//! # Metric
//! A revision's concurrency is the number of its requests between reaching the Knative data
//! path (activator or, in serve mode, the pod) and their response. [`ConcurrencyWindow`]
//! integrates it exactly (request-ns per whole second) over the last `stable_window_s` seconds;
//! the stable and panic averages at tick `T` are the integrals over `[T - window, T)` (whole
//! seconds) divided by the window length. (Knative scrapes queue-proxies and the activator once
//! per second and averages the buckets; integrating exactly is the same quantity without
//! sampling noise.)
//!
//! # KPA ([`Kpa`], knative 1.13 `pkg/autoscaler/scaling/autoscaler.go`)
//! Every tick (2 s): `desired_stable = ceil(stable / (target x utilisation))`,
//! `desired_panic = ceil(panic / (target x utilisation))`, both clamped by the scale-up rate
//! (`ready x 1000`) and scale-down rate (`floor(ready / 2)`). Panic starts when
//! `panic / (target x utilisation) / max(ready, 1) >= panic_threshold` and is extended by every
//! tick that is still over the threshold; it ends at the first tick more than one stable window
//! after the last over-threshold tick. While panicking the KPA never scales down. The excess
//! burst capacity `floor(ready x target - tbc - panic)` chooses serve mode (>= 0) or proxy mode
//! (activator on the path); a negative tbc keeps proxy mode always. `target` is the container
//! concurrency when one is set (and lower), as in knative. Scale to zero: once the desired count is 0, pods are kept for the
//! scale-to-zero grace period (30 s); the revision scales to zero at the first tick at least the
//! grace period after the first tick that wanted 0 (so, after an idle request stream, stable
//! window + grace, rounded up to ticks).

use crate::time::{SEC, SimTime};
use meshsim_models::KnativeConfig;
use std::fmt;

/// Whether the activator stays on a revision's request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataPathMode {
    /// Requests go gateway -> activator -> pod.
    #[default]
    Proxy,
    /// Requests go gateway -> pod.
    Serve,
}

/// What the autoscaler sees at a tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleInput {
    pub now: SimTime,
    /// Pods whose endpoint is ready.
    pub ready_pods: u32,
    /// Pods asked for and not terminating (ready or starting).
    pub current_pods: u32,
    /// Average concurrency over the stable window.
    pub stable_concurrency: f64,
    /// Average concurrency over the panic window.
    pub panic_concurrency: f64,
}

/// The autoscaler's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleDecision {
    /// Pods the revision should have.
    pub desired: u32,
    pub panicking: bool,
    pub mode: DataPathMode,
}

/// The autoscaling decision point.
pub trait Autoscaler: fmt::Debug {
    /// Decides the scale of revision `rev` at a tick.
    fn decide(&mut self, rev: u32, input: &ScaleInput) -> ScaleDecision;
    /// The revision scaled to zero and went idle: drop its state.
    fn forget(&mut self, rev: u32);
}

#[derive(Debug, Clone, Copy, Default)]
struct KpaRev {
    panic_time: Option<SimTime>,
    max_panic_pods: u32,
    zero_since: Option<SimTime>,
}

/// Knative's Pod Autoscaler.
#[derive(Debug, Clone)]
pub struct Kpa {
    target: f64,
    total: f64,
    panic_threshold: f64,
    stable_window_ns: u64,
    grace_ns: u64,
    max_up: f64,
    max_down: f64,
    tbc: f64,
    revs: Vec<KpaRev>,
}

impl Kpa {
    pub fn new(k: &KnativeConfig) -> Self {
        Self {
            target: k.pod_capacity(),
            total: k.pod_target(),
            panic_threshold: f64::from(k.panic_threshold_pct) / 100.0,
            stable_window_ns: u64::from(k.stable_window_s) * SEC,
            grace_ns: u64::from(k.scale_to_zero_grace_s) * SEC,
            max_up: k.max_scale_up_rate,
            max_down: k.max_scale_down_rate,
            tbc: f64::from(k.target_burst_capacity),
            revs: Vec::new(),
        }
    }
}

impl Autoscaler for Kpa {
    fn decide(&mut self, rev: u32, inp: &ScaleInput) -> ScaleDecision {
        let r = rev as usize;
        if self.revs.len() <= r {
            self.revs.resize(r + 1, KpaRev::default());
        }
        let st = &mut self.revs[r];
        let ready = f64::from(inp.ready_pods);
        let ready1 = ready.max(1.0);
        let max_up = (self.max_up * ready1).ceil();
        let max_down = (ready / self.max_down).floor();
        let clamp = |d: f64| d.min(max_up).max(max_down);
        let desired_stable = clamp((inp.stable_concurrency / self.target).ceil());
        let desired_panic = clamp((inp.panic_concurrency / self.target).ceil());
        let over = inp.panic_concurrency / self.target / ready1 >= self.panic_threshold;
        if over {
            st.panic_time = Some(inp.now);
        } else if let Some(p) = st.panic_time
            && p.as_ns() + self.stable_window_ns < inp.now.as_ns()
        {
            st.panic_time = None;
            st.max_panic_pods = 0;
        }
        let mut desired = desired_stable as u32;
        if st.panic_time.is_some() {
            desired = desired.max(desired_panic as u32);
            st.max_panic_pods = st.max_panic_pods.max(desired);
            desired = st.max_panic_pods;
        }
        // Scale-to-zero grace: keep the pods until the grace period has passed.
        if desired == 0 {
            let since = *st.zero_since.get_or_insert(inp.now);
            if inp.now.since(since) < self.grace_ns {
                desired = inp.current_pods;
            }
        } else {
            st.zero_since = None;
        }
        let excess = (ready * self.total - self.tbc - inp.panic_concurrency).floor();
        ScaleDecision {
            desired,
            panicking: st.panic_time.is_some(),
            mode: if self.tbc >= 0.0 && excess >= 0.0 {
                DataPathMode::Serve
            } else {
                DataPathMode::Proxy
            },
        }
    }

    fn forget(&mut self, rev: u32) {
        if let Some(s) = self.revs.get_mut(rev as usize) {
            *s = KpaRev::default();
        }
    }
}

/// Exact per-second integral of a revision's concurrency over a sliding window of seconds.
#[derive(Debug, Clone)]
pub struct ConcurrencyWindow {
    /// request-ns per second, ring indexed by `second % len`.
    buckets: Vec<u64>,
    /// Which second each bucket holds (`u64::MAX`: none).
    tags: Vec<u64>,
    conc: u32,
    last_ns: u64,
}

impl ConcurrencyWindow {
    pub fn new(window_s: u32) -> Self {
        Self {
            buckets: vec![0; window_s as usize],
            tags: vec![u64::MAX; window_s as usize],
            conc: 0,
            last_ns: 0,
        }
    }

    pub fn concurrency(&self) -> u32 {
        self.conc
    }

    /// Integrates the current concurrency up to `now_ns`.
    pub fn advance(&mut self, now_ns: u64) {
        if now_ns <= self.last_ns {
            return;
        }
        if self.conc > 0 {
            let n = self.buckets.len() as u64;
            let first = (self.last_ns / SEC).max((now_ns / SEC).saturating_sub(n));
            let last = (now_ns - 1) / SEC;
            for s in first..=last {
                let a = self.last_ns.max(s * SEC);
                let b = now_ns.min((s + 1) * SEC);
                if b <= a {
                    continue;
                }
                let i = (s % n) as usize;
                if self.tags[i] != s {
                    self.tags[i] = s;
                    self.buckets[i] = 0;
                }
                self.buckets[i] += u64::from(self.conc) * (b - a);
            }
        }
        self.last_ns = now_ns;
    }

    /// Changes the concurrency by `delta` at `now_ns`.
    pub fn change(&mut self, now_ns: u64, delta: i32) {
        self.advance(now_ns);
        self.conc = self
            .conc
            .checked_add_signed(delta)
            .expect("concurrency >= 0");
    }

    /// Average concurrency over the `window_s` whole seconds before second `end_s`.
    pub fn average(&self, end_s: u64, window_s: u32) -> f64 {
        let n = self.buckets.len() as u64;
        let w = u64::from(window_s).min(n);
        let mut sum = 0u64;
        for s in end_s.saturating_sub(w)..end_s {
            let i = (s % n) as usize;
            if self.tags[i] == s {
                sum += self.buckets[i];
            }
        }
        sum as f64 / (w * SEC) as f64
    }

    /// Forgets everything (a revision that scaled to zero).
    pub fn reset(&mut self, now_ns: u64) {
        self.tags.fill(u64::MAX);
        self.conc = 0;
        self.last_ns = now_ns;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(now_s: u64, ready: u32, stable: f64, panic: f64) -> ScaleInput {
        ScaleInput {
            now: SimTime::from_secs(now_s),
            ready_pods: ready,
            current_pods: ready,
            stable_concurrency: stable,
            panic_concurrency: panic,
        }
    }

    #[test]
    fn window_integrates_exactly() {
        let mut w = ConcurrencyWindow::new(60);
        w.change(SEC / 2, 2); // 2 requests from 0.5 s
        w.change(2 * SEC, -2); // until 2.0 s
        w.advance(6 * SEC);
        // 2 x 1.5 s = 3 request-s over 6 s.
        assert_eq!(w.average(6, 6), 0.5);
        assert_eq!(w.average(60, 60), 3.0 / 60.0);
        assert_eq!(w.average(70, 6), 0.0);
    }

    #[test]
    fn kpa_stable_panic_and_grace() {
        let k = KnativeConfig::default();
        let mut kpa = Kpa::new(&k);
        // 100 concurrent on 1 pod: 2 pods, no panic (100/70 = 1.43 < 2).
        let d = kpa.decide(0, &input(2, 1, 100.0, 100.0));
        assert_eq!((d.desired, d.panicking), (2, false));
        // 150 in the panic window on 1 pod: 150/70 = 2.14 >= 2 -> panic, 3 pods.
        let d = kpa.decide(0, &input(4, 1, 20.0, 150.0));
        assert_eq!((d.desired, d.panicking), (3, true));
        // Calm again: no scale-down while panicking, until 60 s after the last panic tick.
        let d = kpa.decide(0, &input(64, 3, 0.0, 0.0));
        assert_eq!((d.desired, d.panicking), (3, true));
        let d = kpa.decide(0, &input(66, 3, 0.0, 0.0));
        assert!(!d.panicking);
        // Stable 0 -> wants zero, but only after the 30 s grace (and rate-limited by ready/2).
        assert_eq!(d.desired, 1);
        let d = kpa.decide(0, &input(68, 1, 0.0, 0.0));
        assert_eq!(d.desired, 1);
        let d = kpa.decide(0, &input(96, 1, 0.0, 0.0));
        assert_eq!(d.desired, 1, "96 - 68 < 30: still in the grace period");
        let d = kpa.decide(0, &input(98, 1, 0.0, 0.0));
        assert_eq!(d.desired, 0);
        let mut kpa2 = Kpa::new(&k);
        assert_eq!(kpa2.decide(0, &input(10, 1, 0.0, 0.0)).desired, 1);
        assert_eq!(kpa2.decide(0, &input(40, 1, 0.0, 0.0)).desired, 0);
    }

    #[test]
    fn serve_mode_needs_burst_capacity() {
        let mut kpa = Kpa::new(&KnativeConfig::default());
        assert_eq!(
            kpa.decide(0, &input(2, 2, 1.0, 1.0)).mode,
            DataPathMode::Proxy
        );
        // 3 x 100 - 211 - 1 = 88 >= 0.
        assert_eq!(
            kpa.decide(0, &input(4, 3, 1.0, 1.0)).mode,
            DataPathMode::Serve
        );
    }
}
