//! Idle functions keep no sandbox memory: 20 header-only chain sandboxes (20 functions with
//! distinct authz rules) in one process each decide a request, then are released as an idle
//! period would release them. While compiled, each holds its engine, code and pool (the
//! control: hundreds of KiB); after the release the process's anonymous RSS is back where it
//! was before the 20 were built. Its own test binary, so no other test allocates meanwhile.

use meshsim_sidecar::sandbox::micro::idle_memory;

#[test]
fn released_sandboxes_keep_no_memory_per_function() {
    // Warm the process-wide state (wasmtime's globals, the allocator's arenas) once.
    let warm = idle_memory(2).expect("warm-up");
    if warm.compiled_kib_per_function.is_nan() {
        eprintln!("no RssAnon in /proc/self/status; skipping");
        return;
    }
    let m = idle_memory(20).expect("measure");
    eprintln!("{m:?}");
    assert!(
        m.compiled_kib_per_function > 100.0,
        "control: compiled sandboxes should hold memory, got {m:?}"
    );
    assert!(
        m.released_kib_per_function < 16.0,
        "idle functions kept memory: {m:?}"
    );
}
