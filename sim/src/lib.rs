//! # meshsim-sim
//!
//! A deterministic discrete-event simulator of a Knative-on-Kubernetes cluster (1 control-plane
//! node + N workers) replaying an Azure Functions trace, built so that a service mesh can be
//! plugged into its request path, pod pipeline and control plane ([`mesh::SidecarModel`]).
//!
//! - [`time`], [`queue`]: integer-ns time and the `(time, seq)` event queue; trace arrivals are
//!   pulled from the ordered [`meshsim_traces::ArrivalStream`], never pre-pushed.
//! - [`cpu`]: processor sharing per node (virtual time + min-heap of finish tags).
//! - [`kubernetes`]: the control plane as a FIFO of object writes, the [`kubernetes::Scheduler`]
//!   trait, the pod start pipeline ([`kubernetes::PodStep`]).
//! - [`knative`]: the KPA ([`knative::Autoscaler`]), its concurrency metric, proxy/serve mode.
//! - [`engine`]: the event loop, the request path, activator buffering and probing, failures.
//! - [`metrics`], [`hist`]: the summary (DESIGN.md's `summary.json` object), per-invocation
//!   records, per-(node, second) CPU by category and memory, log-bucketed histograms.
//! - [`coldstart`]: the cold-start microbenchmark.
//! - [`meshmodel`]: the service-mesh models (issue 5): [`meshmodel::MeshModel`] plays a
//!   [`meshsim_models::MeshProfile`] (Istio, Linkerd, ambient, the lightweight per-request
//!   sandbox) with the nine policies and the xDS control plane; [`run_profile`] and
//!   [`run_configured`] (profile chosen by `cfg.mesh`) run a trace with it.
//!
//! Determinism: one root seed; every random draw comes from a named stream
//! ([`meshsim_traces::rng::stream`]); no wall clock, no hash-map iteration. The digest in
//! [`RunResult`] (an FNV-1a-style word hash over `(time, kind, ids)` of every processed event)
//! lets a test compare two runs event by event.
//!
//! # Calibration (what was fitted, and how)
//! Two parameters are fitted to the paper's no-mesh cold-start measurements; everything else
//! is a Knative/Kubernetes default, a paper measurement or a documented assumption (see
//! `meshsim_models`):
//! 1. `kubernetes.api_writes_per_s` = 25: a cold start makes 10 control-plane writes
//!    ([`kubernetes`]), so the write queue saturates at 25 / 10 = 2.5 cold starts/s, the
//!    paper's maximum cold-start throughput. Above it the queue, and so the latency, grows
//!    without bound (`coldstart::run` at 3/s shows it).
//! 2. `kubernetes.pod_start.sandbox_create_ms` = 500 ms: the residual that brings the p50
//!    cold-start latency at 1 cold start/s to the paper's 1.2 s given every other step (7
//!    writes on the critical path at 40 ms each plus their queueing behind other cold starts'
//!    writes, 7 watch delays of 10 ms, two 88 ms container starts, probes and hops). Found with
//!    `cargo run --release -p meshsim-sim --example fit_sandbox` (p50 of 60 cold starts at 1/s,
//!    mean of 5 seeds: 1.196 s).
//!
//! Consequences, not fits (`coldstart::run`, 200 cold starts, seed 1): p50 1.03 s at 0.5/s
//! (no overlap between cold starts), 1.05-1.22 s from 1/s to 2.25/s, 1.45 s at 2.5/s; above,
//! the write queue grows for as long as the burst lasts (3/s: p50 3.9 s after 60 cold
//! starts, 10.8 s after 200). Because a pod's deletion also writes (6 writes per scale-down),
//! a run longer than stable window + grace (90 s) that lets earlier pods scale down
//! (`coldstart::run_sustained`) sustains only `25 / 16` = 1.56 cold starts/s.
//!
//! # Knative deployment shape
//! The defaults are Knative's (container concurrency 0 = unlimited, target 100 at 70 %, target
//! burst capacity 211), as DESIGN.md specifies. InVitro, the paper's load generator, deploys
//! its trace functions with container concurrency 1 (a pod planned for 0.7 concurrent requests
//! at Knative's 70 % utilisation) and the activator always on the path:
//! `models/profiles/invitro-knative.toml`. With unlimited
//! concurrency a CPU-heavy function packs up to ~70 concurrent executions into one pod, which
//! saturates that pod's node; with concurrency 1 it scales out instead (and pays more cold
//! starts).
//!
//! # The mesh hook
//! [`mesh::SidecarModel`] is asked at every hop point of a request (pass / sidecar hop /
//! rejection), for the containers to inject into every pod (start time, requests, memory,
//! writes, a readiness gate), about the activator's view of new endpoints, and is told every
//! pod and endpoint change; through [`mesh::MeshCtx`] it can schedule timers, CPU work on any
//! node (category `xds` or `sidecar`) and memory changes. [`mesh::NoMesh`] does nothing, and
//! the summary's `xds` object stays zero. The mesh models' own fits (`pod.injection_webhook_ms`
//! for the knee with a mesh, `pod.proxy_bootstrap_ms` for the cold start with sidecars) are in
//! `sim/README.md` and beside the values in `models/profiles/mesh/*.toml`.
//!
//! ```
//! use meshsim_sim::{run, RunOptions};
//! use std::sync::Arc;
//! let trace = meshsim_traces::embedded::load("invitro-example").unwrap().unwrap();
//! let trace = Arc::new(trace.window(2).unwrap());
//! let cfg = meshsim_models::SimConfig::default();
//! let opts = RunOptions { seed: 1, replication: 0, record_invocations: false };
//! let r = run(trace, &cfg, &opts, &mut |_, _| {}).unwrap();
//! assert_eq!(r.summary.invocations, r.summary.completed + r.summary.failed);
//! ```

pub mod coldstart;
pub mod cpu;
pub mod engine;
pub mod hist;
pub mod knative;
pub mod kubernetes;
pub mod mesh;
pub mod meshmodel;
pub mod metrics;
pub mod queue;
pub mod time;

pub use engine::{AutoscalerRecord, FunctionSpec, PodRecord, SimOptions, Simulation};
pub use metrics::{
    CpuByCategory, FailureReason, InvocationRecord, NodeSecond, ScenarioSummary, XdsSummary,
};
pub use time::SimTime;

use meshsim_models::SimConfig;
use meshsim_traces::{ArrivalConfig, ArrivalStream, Trace};
use std::sync::Arc;

/// Why a run could not start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    #[error("invalid config: {0}")]
    Config(#[from] meshsim_models::ConfigError),
    #[error("trace {trace}: {message}")]
    Trace { trace: String, message: String },
}

/// Options of [`run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunOptions {
    pub seed: u64,
    pub replication: u32,
    /// Keep the per-invocation table; when off, memory does not grow with the trace length.
    pub record_invocations: bool,
}

/// The outcome of [`run`].
#[derive(Debug, Clone)]
pub struct RunResult {
    pub summary: ScenarioSummary,
    pub invocations: Option<Vec<InvocationRecord>>,
    /// One row per (second, node), node 0 being the control plane.
    pub node_seconds: Vec<NodeSecond>,
    /// Events processed (arrivals included, superseded CPU completions excluded).
    pub events: u64,
    /// FNV-1a-style word hash over `(time, kind, ids)` of every processed event.
    pub digest: u64,
    /// Arrived but unfinished when the run stopped (0 for a full replay).
    pub in_flight: u64,
    /// Pods started (cold starts of pods, not of invocations).
    pub pods_started: u64,
    /// Requests that waited in a queue-proxy for a slot of the container concurrency.
    pub queue_proxy_waits: u64,
    /// The longest queue a queue-proxy held.
    pub queue_proxy_max_waiting: u64,
    /// Control-plane writes committed.
    pub api_writes: u64,
    /// Simulated time at the end of the run.
    pub end: SimTime,
    /// One record per xDS transaction (time, receiver, type, bytes) when asked for
    /// ([`meshmodel::MeshInputs::record_xds`]); `None` otherwise.
    pub xds_transactions: Option<Vec<mesh::XdsTransaction>>,
}

/// The functions of a trace as the engine needs them: the memory request of function `i` is
/// its largest memory percentile (Azure's `AverageAllocatedMb_pct100`, MB taken as MiB).
pub fn function_specs(trace: &Trace) -> Vec<FunctionSpec> {
    trace
        .functions
        .iter()
        .map(|f| FunctionSpec {
            memory_request_mib: f.memory.percentiles_mb[7].ceil().max(1.0) as u64,
        })
        .collect()
}

/// The arrival process of the models crate as the traces crate spells it.
pub fn arrival_process(p: meshsim_models::ArrivalProcess) -> meshsim_traces::ArrivalProcess {
    match p {
        meshsim_models::ArrivalProcess::Exponential => meshsim_traces::ArrivalProcess::Exponential,
        meshsim_models::ArrivalProcess::Uniform => meshsim_traces::ArrivalProcess::Uniform,
        meshsim_models::ArrivalProcess::Equidistant => meshsim_traces::ArrivalProcess::Equidistant,
    }
}

/// Replays `trace` (all its minutes; apply `Trace::window` first) on a cluster without a
/// mesh. `progress(done, total)` is called every few thousand finished invocations and at the
/// end.
pub fn run(
    trace: Arc<Trace>,
    cfg: &SimConfig,
    opts: &RunOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RunResult, SimError> {
    run_with_mesh(trace, cfg, opts, Box::new(mesh::NoMesh), progress)
}

/// Replays `trace` with full control over the engine's options (per-pod and autoscaler logs,
/// horizon, ...) and the mesh model; returns everything the engine produced. `opts.window_s`
/// defaults to the trace's length when `None`.
pub fn run_detailed(
    trace: Arc<Trace>,
    cfg: &SimConfig,
    opts: &SimOptions,
    mesh: Box<dyn mesh::SidecarModel>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<engine::EngineResult, SimError> {
    cfg.validate()?;
    if trace.functions.is_empty() {
        return Err(SimError::Trace {
            trace: trace.source.clone(),
            message: "the trace has no functions".into(),
        });
    }
    let specs = function_specs(&trace);
    let mut sim_opts = *opts;
    if sim_opts.window_s.is_none() {
        sim_opts.window_s = Some(u64::from(trace.minutes) * 60);
    }
    let arrivals = ArrivalStream::new(
        trace,
        ArrivalConfig {
            process: arrival_process(cfg.arrivals),
            seed: opts.seed,
            replication: opts.replication,
        },
    );
    let total = arrivals.total();
    Ok(Simulation::new(cfg, &specs, mesh, sim_opts).run(arrivals, total, progress))
}

/// [`run`] with a mesh model plugged in.
pub fn run_with_mesh(
    trace: Arc<Trace>,
    cfg: &SimConfig,
    opts: &RunOptions,
    mesh: Box<dyn mesh::SidecarModel>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RunResult, SimError> {
    let sim_opts = SimOptions {
        seed: opts.seed,
        replication: opts.replication,
        record_invocations: opts.record_invocations,
        ..SimOptions::default()
    };
    let r = run_detailed(trace, cfg, &sim_opts, mesh, progress)?;
    Ok(RunResult {
        summary: r.summary,
        invocations: r.invocations,
        node_seconds: r.node_seconds,
        events: r.events,
        digest: r.digest,
        in_flight: r.in_flight,
        pods_started: r.pods_started,
        queue_proxy_waits: r.queue_proxy_waits,
        queue_proxy_max_waiting: r.queue_proxy_max_waiting,
        api_writes: r.api_writes,
        end: r.end,
        xds_transactions: r.xds_transactions,
    })
}

/// The mesh model of `profile` for `trace` (its function count) under `cfg`.
pub fn mesh_model(
    trace: &Trace,
    cfg: &SimConfig,
    profile: &meshsim_models::MeshProfile,
    inputs: meshmodel::MeshInputs<'_>,
    opts: &RunOptions,
) -> Result<Box<dyn mesh::SidecarModel>, SimError> {
    if profile.data_plane.kind == meshsim_models::mesh::DataPlaneKind::None {
        return Ok(Box::new(mesh::NoMesh));
    }
    Ok(Box::new(meshmodel::MeshModel::new(
        profile,
        cfg,
        trace.functions.len(),
        inputs,
        opts.seed,
        opts.replication,
    )?))
}

/// Replays `trace` with the mesh `profile` (the scenario is named after it). `inputs` carries
/// the calibration file, the xDS size table and whether to keep per-transaction xDS records.
pub fn run_profile(
    trace: Arc<Trace>,
    cfg: &SimConfig,
    profile: &meshsim_models::MeshProfile,
    inputs: meshmodel::MeshInputs<'_>,
    opts: &RunOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RunResult, SimError> {
    let mesh = mesh_model(&trace, cfg, profile, inputs, opts)?;
    run_with_mesh(trace, cfg, opts, mesh, progress)
}

/// Replays `trace` with the mesh selected by the config itself (`cfg.mesh`: profile name,
/// policy and scope overrides), so a sweep can set `mesh.profile = "istio"`.
pub fn run_configured(
    trace: Arc<Trace>,
    cfg: &SimConfig,
    inputs: meshmodel::MeshInputs<'_>,
    opts: &RunOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RunResult, SimError> {
    let profile = cfg.mesh.resolve()?;
    run_profile(trace, cfg, &profile, inputs, opts, progress)
}
