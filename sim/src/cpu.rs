//! Processor sharing on one node.
//!
//! Everything runnable on a node (function executions, proxies' per-request work, ...) is a
//! job with an amount of work in ns of one uncontended core. With `n` jobs on `c` cores each job
//! progresses at rate `min(1, c / n)`. The node keeps a *virtual time* `V` (work done by any one
//! job since the start) that advances at that rate; a job arriving at `V0` with work `w`
//! finishes when `V` reaches `V0 + w`. Finish tags sit in a min-heap, so an arrival or a
//! departure costs O(log n), and only the node's next completion is ever scheduled (the engine
//! keeps one completion event per node outstanding and drops superseded ones by generation).
//!
//! Completion instants are rounded up to the next integer ns; jobs whose tag is within half a
//! ns of work of `V` complete together. With the exact binary fractions of the tests (one or two
//! cores, rate 1/2, ...) the times are exact.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// What a CPU job is spent on (the per-node CPU report's categories).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CpuCategory {
    Function = 0,
    QueueProxy = 1,
    Activator = 2,
    Gateway = 3,
    ControlPlane = 4,
    Sidecar = 5,
    Xds = 6,
    System = 7,
}

/// Number of [`CpuCategory`] values.
pub const NCAT: usize = 8;

/// Who is waiting for a job: a request slot with its generation, the mesh model (with its
/// token), or nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOwner {
    Request { slot: u32, tag: u32 },
    Mesh { token: u64 },
    Background,
}

#[derive(Debug, Clone, Copy)]
struct Job {
    finish_v: f64,
    seq: u64,
    owner: JobOwner,
    cat: CpuCategory,
}

impl PartialEq for Job {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Job {}
impl PartialOrd for Job {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Job {
    fn cmp(&self, o: &Self) -> Ordering {
        // Min-heap on (finish tag, seq).
        o.finish_v
            .total_cmp(&self.finish_v)
            .then_with(|| o.seq.cmp(&self.seq))
    }
}

/// One node's processor-sharing CPU.
#[derive(Debug, Clone)]
pub struct NodeCpu {
    cores: f64,
    v: f64,
    last_ns: u64,
    heap: BinaryHeap<Job>,
    by_cat: [u32; NCAT],
    seq: u64,
}

impl NodeCpu {
    pub fn new(cores: u32) -> Self {
        Self {
            cores: f64::from(cores),
            v: 0.0,
            last_ns: 0,
            heap: BinaryHeap::new(),
            by_cat: [0; NCAT],
            seq: 0,
        }
    }

    /// Current per-job rate in cores.
    fn rate(&self) -> f64 {
        let n = self.heap.len() as f64;
        if n <= self.cores { 1.0 } else { self.cores / n }
    }

    /// Runnable jobs.
    pub fn runnable(&self) -> usize {
        self.heap.len()
    }

    /// Advances virtual time to `now_ns`, calling `account(cat, core_ns, from, to)` with the
    /// CPU each category used over the elapsed interval.
    pub fn advance(&mut self, now_ns: u64, mut account: impl FnMut(CpuCategory, f64, u64, u64)) {
        debug_assert!(now_ns >= self.last_ns);
        let dt = now_ns - self.last_ns;
        if dt > 0 && !self.heap.is_empty() {
            let r = self.rate();
            self.v += dt as f64 * r;
            for (i, &n) in self.by_cat.iter().enumerate() {
                if n > 0 {
                    account(CATS[i], f64::from(n) * r * dt as f64, self.last_ns, now_ns);
                }
            }
        }
        self.last_ns = now_ns;
    }

    /// Adds a job of `work_ns` (call [`advance`](Self::advance) to now first). Returns the time
    /// of the node's next completion at the new rate.
    pub fn add(&mut self, work_ns: u64, owner: JobOwner, cat: CpuCategory) -> u64 {
        self.heap.push(Job {
            finish_v: self.v + work_ns as f64,
            seq: self.seq,
            owner,
            cat,
        });
        self.seq += 1;
        self.by_cat[cat as usize] += 1;
        self.next_completion().unwrap_or(self.last_ns)
    }

    /// Time (ns) at which the earliest job completes at the current rate.
    pub fn next_completion(&self) -> Option<u64> {
        let top = self.heap.peek()?;
        let remaining = (top.finish_v - self.v).max(0.0);
        Some(self.last_ns + (remaining / self.rate()).ceil() as u64)
    }

    /// Removes the jobs that are done at the current virtual time (call `advance` first),
    /// appending their owners to `done`.
    pub fn complete(&mut self, done: &mut Vec<JobOwner>) {
        while let Some(top) = self.heap.peek() {
            if top.finish_v <= self.v + 0.5 {
                let j = self.heap.pop().expect("peeked");
                self.by_cat[j.cat as usize] -= 1;
                done.push(j.owner);
            } else {
                break;
            }
        }
    }
}

const CATS: [CpuCategory; NCAT] = [
    CpuCategory::Function,
    CpuCategory::QueueProxy,
    CpuCategory::Activator,
    CpuCategory::Gateway,
    CpuCategory::ControlPlane,
    CpuCategory::Sidecar,
    CpuCategory::Xds,
    CpuCategory::System,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cpu: &mut NodeCpu, now: u64) -> Vec<JobOwner> {
        cpu.advance(now, |_, _, _, _| {});
        let mut d = Vec::new();
        cpu.complete(&mut d);
        d
    }

    const A: JobOwner = JobOwner::Request { slot: 0, tag: 0 };
    const B: JobOwner = JobOwner::Request { slot: 1, tag: 0 };

    #[test]
    fn two_jobs_share_one_core() {
        let mut cpu = NodeCpu::new(1);
        assert_eq!(cpu.add(100, A, CpuCategory::Function), 100);
        cpu.advance(50, |_, _, _, _| {});
        // A has 50 left, B 100; both at rate 1/2: A done at 50 + 100 = 150.
        assert_eq!(cpu.add(100, B, CpuCategory::Function), 150);
        assert_eq!(run(&mut cpu, 150), vec![A]);
        // B got 50 of work at rate 1/2; 50 left alone at rate 1: done at 200.
        assert_eq!(cpu.next_completion(), Some(200));
        assert_eq!(run(&mut cpu, 200), vec![B]);
        assert_eq!(cpu.next_completion(), None);
    }

    proptest::proptest! {
        /// Jobs arriving at random times on one core: none finishes before arrival + work,
        /// the core never idles while work is left (the last finish is the busy-period end),
        /// and every job completes exactly once.
        #[test]
        fn one_core_is_work_conserving(
            jobs in proptest::collection::vec((0u64..1_000, 1u64..500), 1..40)
        ) {
            let mut jobs = jobs;
            jobs.sort();
            let mut cpu = NodeCpu::new(1);
            let mut finish = vec![None; jobs.len()];
            let mut next_arrival = 0;
            let mut now = 0u64;
            loop {
                let next_done = cpu.next_completion();
                let arrival = jobs.get(next_arrival).map(|j| j.0);
                match (arrival, next_done) {
                    (Some(a), d) if d.is_none_or(|d| a <= d) => {
                        now = a;
                        cpu.advance(now, |_, _, _, _| {});
                        let owner = JobOwner::Request { slot: next_arrival as u32, tag: 0 };
                        cpu.add(jobs[next_arrival].1, owner, CpuCategory::Function);
                        next_arrival += 1;
                    }
                    (_, Some(d)) => {
                        now = d;
                        for o in run(&mut cpu, now) {
                            if let JobOwner::Request { slot, .. } = o {
                                proptest::prop_assert!(finish[slot as usize].is_none());
                                finish[slot as usize] = Some(now);
                            }
                        }
                    }
                    _ => break,
                }
            }
            // Busy-period end computed directly: a single server that never idles with work.
            let mut busy_end = 0u64;
            for &(a, w) in &jobs {
                busy_end = busy_end.max(a) + w;
            }
            proptest::prop_assert_eq!(now.abs_diff(busy_end) <= jobs.len() as u64, true);
            for (i, &(a, w)) in jobs.iter().enumerate() {
                let f = finish[i].expect("completed");
                proptest::prop_assert!(f + 1 >= a + w);
            }
        }
    }

    #[test]
    fn no_slowdown_below_core_count() {
        let mut cpu = NodeCpu::new(2);
        cpu.add(100, A, CpuCategory::Function);
        assert_eq!(cpu.add(300, B, CpuCategory::Gateway), 100);
        let mut used = [0.0; NCAT];
        cpu.advance(100, |c, ns, _, _| used[c as usize] += ns);
        assert_eq!(used[CpuCategory::Function as usize], 100.0);
        assert_eq!(used[CpuCategory::Gateway as usize], 100.0);
    }
}
