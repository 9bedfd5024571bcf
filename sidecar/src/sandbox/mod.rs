//! Per-request isolation (`runtime.isolation = "per-request"`, `serve --isolation
//! per-request`): each request's header-only policy chain runs in a **fresh WebAssembly
//! instance** (wasmtime, pooling instance allocator), created for that request and dropped
//! with its store when the decision is made. Nothing a policy writes to its globals or memory
//! survives the request; state that must persist (the local token bucket, the tracing id
//! generator, counters) is reached only through explicit host functions backed by the
//! process's shared state ([`HostShared`]).
//!
//! Limits per instance: `sandbox.fuel` units of fuel (about one per wasm instruction), a
//! memory cap (`sandbox.max_memory_bytes`, enforced by a store limiter that traps on a failed
//! `memory.grow`, and by the pool slot size) and a wasm stack cap. A guest that traps, runs
//! out of fuel or exceeds its memory is stopped and **only its request** is refused (500,
//! `x-meshsim-denied-by: sandbox`); the proxy keeps serving.
//!
//! * [`abi`]: the input / config / output layouts.
//! * `chain.wat`: the policy chain guest, built from WAT text in this repository at start-up
//!   (no wasm32 target needed), parametrised by a config blob the host writes into each instance (so every function shares
//!   one compiled module).
//! * [`layer`]: the tower layer that puts the sandbox in the request path.
//! * [`micro`]: the in-process micro benchmark (`meshsim-sidecar sandbox-bench`).

pub mod abi;
pub mod layer;
pub mod micro;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use wasmtime::{
    Caller, Config as WasmConfig, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder, Trap,
};

use crate::config::SandboxConfig;
use crate::policy::ratelimit::Bucket;
use crate::policy::tracing::Tracing;

/// WAT source of the policy-chain guest (see the file for its structure).
pub const CHAIN_WAT: &str = include_str!("chain.wat");

/// Bytes of a wasm page.
pub const PAGE: u64 = 65_536;

/// Why a sandboxed run did not produce a decision. The request is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// Compiling or linking a module failed (at start-up, or on the first request after an
    /// idle release).
    #[error("compiling the policy module: {0}")]
    Compile(String),
    /// The guest trapped (unreachable, out-of-bounds access, stack overflow, ...).
    #[error("policy trapped: {0}")]
    Trap(String),
    /// The guest ran out of fuel (a loop, or simply too much work).
    #[error("policy ran out of fuel")]
    Fuel,
    /// The guest (or its input) needed more memory than the cap.
    #[error("policy exceeded its memory limit")]
    Memory,
    /// Instantiation failed (e.g. the pool is exhausted).
    #[error("instantiating the policy: {0}")]
    Instantiate(String),
    /// The guest's output was malformed.
    #[error(transparent)]
    Output(#[from] abi::BadOutput),
}

impl SandboxError {
    /// Short label for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            SandboxError::Compile(_) => "compile",
            SandboxError::Trap(_) => "trap",
            SandboxError::Fuel => "fuel",
            SandboxError::Memory => "memory",
            SandboxError::Instantiate(_) => "instantiate",
            SandboxError::Output(_) => "output",
        }
    }
}

/// A bounded node-local counter cache: the explicit host-provided shared state of the
/// per-request mode (`cache_incr`). Keys are bytes; when full, it is cleared (counters are
/// best-effort windows, like the JWT cache).
#[derive(Debug, Default)]
pub struct SharedCache {
    map: Mutex<HashMap<Vec<u8>, i64>>,
}

/// Entries kept by [`SharedCache`] before it is cleared.
pub const CACHE_ENTRIES: usize = 65_536;

impl SharedCache {
    /// Add `by` to `key` (0 reads) and return the new value.
    pub fn incr(&self, key: &[u8], by: i64) -> i64 {
        let Ok(mut m) = self.map.lock() else {
            return 0;
        };
        if by == 0 {
            return m.get(key).copied().unwrap_or(0);
        }
        if m.len() >= CACHE_ENTRIES && !m.contains_key(key) {
            m.clear();
        }
        let v = m.entry(key.to_vec()).or_insert(0);
        *v = v.saturating_add(by);
        *v
    }
}

/// The process state reachable from guests through host functions.
#[derive(Debug, Default)]
pub struct HostShared {
    /// The tracing id generator (`rand`).
    pub tracing: Option<Arc<Tracing>>,
    /// The local token bucket (`rl_local_take`).
    pub bucket: Option<Arc<Bucket>>,
    /// Counters (`cache_incr`).
    pub cache: SharedCache,
}

/// Per-store data: the shared host state and this instance's limits.
struct HostState {
    shared: Arc<HostShared>,
    limits: StoreLimits,
    /// A start-up probe: host functions answer without touching shared state.
    probe: bool,
}

/// Limits applied to every instance.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Fuel per request.
    pub fuel: u64,
    /// Linear memory cap, bytes (rounded up to whole pages).
    pub max_memory_bytes: u64,
    /// Wasm stack cap, bytes.
    pub max_stack_bytes: usize,
    /// Instances that may exist at once (pool slots).
    pub instances: u32,
    /// Linear-memory bytes a used pool slot keeps resident (zeroed, not decommitted).
    pub keep_resident_bytes: usize,
    /// With no request for this long, the compiled module, its engine and its instance pool
    /// are dropped (the next request compiles them again); `None` keeps them for good.
    pub idle_release: Option<Duration>,
}

impl From<&SandboxConfig> for Limits {
    fn from(c: &SandboxConfig) -> Limits {
        Limits {
            fuel: c.fuel,
            max_memory_bytes: c.max_memory_bytes,
            max_stack_bytes: c.max_stack_bytes as usize,
            instances: c.instances,
            keep_resident_bytes: c.keep_resident_bytes as usize,
            idle_release: (c.idle_release_ms > 0).then(|| Duration::from_millis(c.idle_release_ms)),
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::from(&SandboxConfig::default())
    }
}

/// What a sandbox runs: a module compiled from WAT text of its own, or the policy-chain guest
/// ([`CHAIN_WAT`]), whose code is the same for every function: its config blob is not part of
/// the module but written into each instance's memory at [`abi::CONFIG_BASE`] before the
/// call, so every chain sandbox of the process with the same engine limits shares one
/// compiled module ([`shared_chain_module`]) and an idle function keeps only its blob.
enum Source {
    Text(String),
    Chain(Vec<u8>),
}

impl Source {
    /// The compiled module, and whether it had to be compiled (not taken from the cache).
    fn acquire(&self, limits: &Limits) -> Result<(Arc<Compiled>, bool), SandboxError> {
        match self {
            Source::Text(wat) => Ok((Arc::new(compile(wat, limits)?), true)),
            Source::Chain(_) => shared_chain_module(limits),
        }
    }
}

/// The engine settings a compiled module depends on (fuel and the idle release do not).
type EngineKey = (u64, usize, u32, usize);

fn engine_key(l: &Limits) -> EngineKey {
    (
        l.max_memory_bytes,
        l.max_stack_bytes,
        l.instances,
        l.keep_resident_bytes,
    )
}

/// The chain modules in use in this process, one per engine key. Weak: the module (engine,
/// pool, code) is freed when the last sandbox using it releases it.
static CHAIN_MODULES: Mutex<Vec<(EngineKey, std::sync::Weak<Compiled>)>> = Mutex::new(Vec::new());

/// The process's compiled chain module for these limits: the one another sandbox holds, or
/// a new compilation (`true`). The lock is held while compiling, so two functions never
/// compile it twice.
fn shared_chain_module(limits: &Limits) -> Result<(Arc<Compiled>, bool), SandboxError> {
    let key = engine_key(limits);
    let mut cache = CHAIN_MODULES
        .lock()
        .map_err(|_| SandboxError::Compile("chain module cache poisoned".into()))?;
    cache.retain(|(_, w)| w.strong_count() > 0);
    if let Some(c) = cache
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, w)| w.upgrade())
    {
        return Ok((c, false));
    }
    let c = Arc::new(compile(CHAIN_WAT, limits)?);
    cache.push((key, Arc::downgrade(&c)));
    Ok((c, true))
}

/// What compiling the guest produces: the engine (with its instance pool and the module's
/// code) and the module linked against the host functions.
struct Compiled {
    engine: Engine,
    pre: InstancePre<HostState>,
}

/// A policy module instantiated once per request.
///
/// The guest is compiled at construction (which checks it) and again on the first request
/// after an idle release: with `Limits::idle_release` set, [`Sandbox::release_if_idle`] (called
/// by the server's reaper) drops the engine, the module's code and the instance pool once no
/// request has run for that long, so an idle function keeps only its source (the chain's
/// config blob) and its shared host state. A request that is running keeps its own reference to the compiled
/// module, so a release never pulls it from under an instance.
pub struct Sandbox {
    source: Source,
    /// Where the chain's config blob ends in guest memory, 8-aligned: the input's address.
    chain_input_base: Option<u32>,
    compiled: RwLock<Option<Arc<Compiled>>>,
    shared: Arc<HostShared>,
    limits: Limits,
    memory_cap: usize,
    /// When the sandbox was made; `last_used_ms` counts from it.
    epoch: Instant,
    last_used_ms: AtomicU64,
    compiles: AtomicU64,
    releases: AtomicU64,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("limits", &self.limits)
            .field("compiled", &self.is_compiled())
            .finish_non_exhaustive()
    }
}

fn engine(limits: &Limits) -> Result<Engine, SandboxError> {
    let memory_cap = limits.max_memory_bytes.div_ceil(PAGE).max(1) * PAGE;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_core_instances(limits.instances)
        .total_memories(limits.instances)
        .total_tables(limits.instances)
        .max_memories_per_module(1)
        .max_tables_per_module(1)
        .table_elements(1_000)
        .max_core_instance_size(64 * 1024)
        .max_memory_size(memory_cap as usize)
        // With keep_resident 0 (the default) a freed instance's pages are decommitted
        // (madvise), so no slot keeps resident memory; otherwise that many bytes per used
        // slot are kept and zeroed instead (no syscall, no page faults on the next request).
        .linear_memory_keep_resident(limits.keep_resident_bytes)
        .table_keep_resident(0);
    let mut cfg = WasmConfig::new();
    cfg.consume_fuel(true)
        .cranelift_opt_level(wasmtime::OptLevel::None)
        .max_wasm_stack(limits.max_stack_bytes)
        // Small reservations: many sidecars (and tests) may share a process; accesses are
        // bounds-checked instead of relying on a 4 GiB guard region.
        .memory_reservation(memory_cap)
        .memory_reservation_for_growth(0)
        .memory_guard_size(PAGE)
        .memory_init_cow(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&cfg).map_err(|e| SandboxError::Compile(format!("{e:#}")))
}

/// Compile on a thread of its own. glibc gives that thread its own malloc arena, so the
/// engine's, the module's and Cranelift's allocations do not interleave with the proxy's in
/// the main heap: once the compiled module is released they are all freed and the arena
/// shrinks (in the main heap, a long-lived allocation made after them would pin the freed
/// space). Cranelift's deep stack stays on that thread's stack, unmapped when it ends.
fn compile(wat: &str, limits: &Limits) -> Result<Compiled, SandboxError> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("sandbox-compile".into())
            .spawn_scoped(s, || compile_here(wat, limits))
            .map_err(|e| SandboxError::Compile(format!("spawning the compile thread: {e}")))?
            .join()
            .unwrap_or_else(|_| Err(SandboxError::Compile("the compile thread panicked".into())))
    })
}

/// Give the allocator's free pages back to the kernel: glibc keeps freed memory in its arenas
/// and returns only the free top of each, so the engine's and module's freed allocations,
/// interleaved with a few that outlive them, would stay resident. `malloc_trim(0)` also
/// releases free pages in the middle of an arena (madvise). Returns whether anything was
/// released. Off glibc it does nothing (other allocators purge on their own).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[expect(unsafe_code, reason = "FFI call to glibc's malloc_trim")]
pub fn trim_allocator() -> bool {
    // SAFETY: malloc_trim takes a byte count, touches only glibc's own arenas (locking each
    // in turn, so it is thread-safe) and has no caller-side preconditions.
    unsafe { libc::malloc_trim(0) != 0 }
}

/// Give the allocator's free pages back to the kernel (nothing to do off glibc).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim_allocator() -> bool {
    false
}

fn compile_here(wat: &str, limits: &Limits) -> Result<Compiled, SandboxError> {
    let engine = engine(limits)?;
    let module = Module::new(&engine, wat).map_err(|e| SandboxError::Compile(format!("{e:#}")))?;
    let pre = linker(&engine)?
        .instantiate_pre(&module)
        .map_err(|e| SandboxError::Compile(format!("{e:#}")))?;
    Ok(Compiled { engine, pre })
}

fn linker(engine: &Engine) -> Result<Linker<HostState>, SandboxError> {
    let mut l = Linker::new(engine);
    let err = |e: wasmtime::Error| SandboxError::Compile(format!("{e:#}"));
    l.func_wrap("host", "rand", |c: Caller<'_, HostState>| -> i64 {
        match &c.data().shared.tracing {
            Some(t) if !c.data().probe => t.next_id() as i64,
            _ => 1,
        }
    })
    .map_err(err)?;
    l.func_wrap("host", "rl_local_take", |c: Caller<'_, HostState>| -> i32 {
        match &c.data().shared.bucket {
            Some(b) if !c.data().probe => i32::from(b.try_take(Instant::now())),
            _ => 1,
        }
    })
    .map_err(err)?;
    l.func_wrap(
        "host",
        "cache_incr",
        |mut c: Caller<'_, HostState>, ptr: i32, len: i32, by: i64| -> wasmtime::Result<i64> {
            let mem = c
                .get_export("memory")
                .and_then(|e| e.into_memory())
                .ok_or_else(|| wasmtime::Error::msg("no memory export"))?;
            let (p, n) = (ptr as u32 as usize, len as u32 as usize);
            if n > 1024 {
                return Err(wasmtime::Error::msg("cache key longer than 1024 bytes"));
            }
            let key = mem
                .data(&c)
                .get(p..p.saturating_add(n))
                .ok_or_else(|| wasmtime::Error::msg("cache key out of bounds"))?
                .to_vec();
            if c.data().probe {
                return Ok(0);
            }
            Ok(c.data().shared.cache.incr(&key, by))
        },
    )
    .map_err(err)?;
    Ok(l)
}

impl Sandbox {
    /// Compile a guest from WAT text (or wasm bytes) with its own engine and pool.
    pub fn new(
        wat: &str,
        limits: Limits,
        shared: Arc<HostShared>,
    ) -> Result<Sandbox, SandboxError> {
        Sandbox::from_source(Source::Text(wat.to_owned()), limits, shared)
    }

    /// Compile the chain guest ([`CHAIN_WAT`]) with this config blob ([`abi::ConfigBlob`]).
    pub fn chain(
        config_blob: Vec<u8>,
        limits: Limits,
        shared: Arc<HostShared>,
    ) -> Result<Sandbox, SandboxError> {
        Sandbox::from_source(Source::Chain(config_blob), limits, shared)
    }

    fn from_source(
        source: Source,
        limits: Limits,
        shared: Arc<HostShared>,
    ) -> Result<Sandbox, SandboxError> {
        let (compiled, fresh) = source.acquire(&limits)?;
        let chain_input_base = match &source {
            Source::Chain(blob) => Some(
                u32::try_from((u64::from(abi::CONFIG_BASE) + blob.len() as u64).div_ceil(8) * 8)
                    .map_err(|_| SandboxError::Compile("config blob too large".into()))?,
            ),
            Source::Text(_) => None,
        };
        let memory_cap = (limits.max_memory_bytes.div_ceil(PAGE).max(1) * PAGE) as usize;
        Ok(Sandbox {
            source,
            chain_input_base,
            compiled: RwLock::new(Some(compiled)),
            shared,
            limits,
            memory_cap,
            epoch: Instant::now(),
            last_used_ms: AtomicU64::new(0),
            compiles: AtomicU64::new(u64::from(fresh)),
            releases: AtomicU64::new(0),
        })
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The shared host state.
    pub fn shared(&self) -> &Arc<HostShared> {
        &self.shared
    }

    /// Whether the module is compiled now (false after an idle release, until a request).
    pub fn is_compiled(&self) -> bool {
        self.compiled.read().map(|c| c.is_some()).unwrap_or(false)
    }

    /// Compilations of the module by this sandbox, at start-up and after releases (a chain
    /// sandbox that finds the module held by another one of the process does not compile).
    pub fn compiles(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
    }

    /// Idle releases so far.
    pub fn releases(&self) -> u64 {
        self.releases.load(Ordering::Relaxed)
    }

    /// Drop the compiled module, its engine and pool now (the next request compiles them
    /// again). Returns whether there was anything to drop.
    pub fn release(&self) -> bool {
        let Ok(mut slot) = self.compiled.write() else {
            return false;
        };
        let Some(compiled) = slot.take() else {
            return false;
        };
        drop(slot);
        self.releases.fetch_add(1, Ordering::Relaxed);
        // A request still running keeps its own reference: the module is freed when it ends,
        // and its pages go back at the next release (or stay in the allocator for reuse).
        drop(compiled);
        trim_allocator();
        true
    }

    /// [`Sandbox::release`] if `Limits::idle_release` is set and no request has started for
    /// that long. Returns whether it released.
    pub fn release_if_idle(&self) -> bool {
        let Some(idle) = self.limits.idle_release else {
            return false;
        };
        let since = self.epoch.elapsed().as_millis() as u64;
        if since.saturating_sub(self.last_used_ms.load(Ordering::Relaxed)) < idle.as_millis() as u64
        {
            return false;
        }
        self.release()
    }

    /// The compiled module, compiling it again after a release.
    fn compiled(&self) -> Result<Arc<Compiled>, SandboxError> {
        self.last_used_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        if let Ok(slot) = self.compiled.read()
            && let Some(c) = slot.as_ref()
        {
            return Ok(c.clone());
        }
        let mut slot = self
            .compiled
            .write()
            .map_err(|_| SandboxError::Compile("sandbox lock poisoned".into()))?;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let (c, compiled) = self.source.acquire(&self.limits)?;
        if compiled {
            self.compiles.fetch_add(1, Ordering::Relaxed);
        }
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Run one request in a fresh instance: `encode(input_base)` produces the input bytes,
    /// `decode(memory, output_ptr)` reads the answer before the instance is dropped.
    pub fn run<T>(
        &self,
        encode: impl FnOnce(u32) -> Vec<u8>,
        decode: impl FnOnce(&[u8], u32) -> Result<T, SandboxError>,
    ) -> Result<T, SandboxError> {
        self.run_inner(false, encode, decode)
    }

    /// Like [`Sandbox::run`], but host functions leave the shared state alone (`rand` returns
    /// 1, the bucket always grants, the cache reads 0): the start-up self-test.
    pub fn probe<T>(
        &self,
        encode: impl FnOnce(u32) -> Vec<u8>,
        decode: impl FnOnce(&[u8], u32) -> Result<T, SandboxError>,
    ) -> Result<T, SandboxError> {
        self.run_inner(true, encode, decode)
    }

    fn run_inner<T>(
        &self,
        probe: bool,
        encode: impl FnOnce(u32) -> Vec<u8>,
        decode: impl FnOnce(&[u8], u32) -> Result<T, SandboxError>,
    ) -> Result<T, SandboxError> {
        let compiled = self.compiled()?;
        let mut store = Store::new(
            &compiled.engine,
            HostState {
                shared: self.shared.clone(),
                limits: StoreLimitsBuilder::new()
                    .memory_size(self.memory_cap)
                    .instances(1)
                    .memories(1)
                    .tables(1)
                    .trap_on_grow_failure(true)
                    .build(),
                probe,
            },
        );
        store.limiter(|s| &mut s.limits);
        store
            .set_fuel(self.limits.fuel)
            .map_err(|e| SandboxError::Instantiate(format!("{e:#}")))?;
        let instance = compiled.pre.instantiate(&mut store).map_err(classify)?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| SandboxError::Instantiate("no memory export".into()))?;
        let base = match (&self.source, self.chain_input_base) {
            (Source::Chain(blob), Some(base)) => {
                if u64::from(base) > memory.data_size(&store) as u64 {
                    let pages = (u64::from(base) - memory.data_size(&store) as u64).div_ceil(PAGE);
                    memory
                        .grow(&mut store, pages)
                        .map_err(|_| SandboxError::Memory)?;
                }
                memory
                    .write(&mut store, abi::CONFIG_BASE as usize, blob)
                    .map_err(|_| SandboxError::Memory)?;
                base
            }
            _ => match instance.get_global(&mut store, "input_base") {
                Some(g) => g.get(&mut store).i32().unwrap_or(0) as u32,
                None => 0,
            },
        };
        let input = encode(base);
        let end = u64::from(base) + input.len() as u64;
        if end > memory.data_size(&store) as u64 {
            let pages = (end - memory.data_size(&store) as u64).div_ceil(PAGE);
            memory
                .grow(&mut store, pages)
                .map_err(|_| SandboxError::Memory)?;
        }
        memory
            .write(&mut store, base as usize, &input)
            .map_err(|_| SandboxError::Memory)?;
        let run = instance
            .get_typed_func::<(i32, i32), i32>(&mut store, "run")
            .map_err(|e| SandboxError::Instantiate(format!("{e:#}")))?;
        let out = run
            .call(&mut store, (base as i32, input.len() as i32))
            .map_err(classify)?;
        decode(memory.data(&store), out as u32)
    }
}

fn classify(e: wasmtime::Error) -> SandboxError {
    if let Some(t) = e.downcast_ref::<Trap>() {
        return match t {
            Trap::OutOfFuel => SandboxError::Fuel,
            other => SandboxError::Trap(other.to_string()),
        };
    }
    let text = format!("{e:#}");
    if text.contains("memory")
        && (text.contains("grow") || text.contains("limit") || text.contains("exceed"))
    {
        SandboxError::Memory
    } else if text.contains("unreachable") || text.contains("wasm trap") {
        SandboxError::Trap(text)
    } else {
        SandboxError::Instantiate(text)
    }
}
