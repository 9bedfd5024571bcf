//! Idle functions keep no sandbox memory: 20 header-only chain sandboxes (20 functions with
//! distinct authz rules) in one process each decide a request, then are released as an idle
//! period would release them. They share one compiled chain module (the control: hundreds of
//! KiB, so the measurement sees a module), each further function adds only its config while
//! held, and after the release the process's anonymous RSS is back where it was before the
//! 20 were built. Its own test binary, so no other test allocates meanwhile.

use meshsim_sidecar::sandbox::micro::idle_memory;

#[test]
fn functions_share_the_chain_module_and_keep_nothing_when_idle() {
    // Warm the process-wide state (wasmtime's globals, the allocator's arenas) once.
    let warm = idle_memory(2).expect("warm-up");
    if warm.module_kib.is_nan() {
        eprintln!("no RssAnon in /proc/self/status; skipping");
        return;
    }
    let m = idle_memory(20).expect("measure");
    eprintln!("{m:?}");
    assert!(
        m.module_kib > 100.0,
        "control: the compiled module should show, got {m:?}"
    );
    assert!(
        m.compiled_kib_per_function < 64.0,
        "functions do not share the module: {m:?}"
    );
    assert!(
        m.released_kib_per_function < 16.0,
        "idle functions kept memory: {m:?}"
    );
}
