;; The per-request policy chain guest (`--isolation per-request`).
;;
;; One fresh instance of this module runs the header-only policies of one request:
;; (1) mTLS request check, (2) ports/protocols, (3) JWT result (the signature is verified
;; natively by the host; its result and claims are inputs), (4) authorization rules,
;; (5) the local token bucket (host cache) and the global rate-limit key, (6) tracing context.
;;
;; The rule table is not code: `sandbox::abi::ConfigBlob` serialises the sidecar config into a
;; blob the host writes at address 1024 of every instance before calling `run`, so the same
;; config drives both isolation modes and this module's code is the same for every function
;; (one compiled module per process). Layout of everything (input, config, output) is documented in
;; `src/sandbox/abi.rs`; all pointers are absolute guest addresses, all integers little-endian.
;;
;; Addresses: 0..80 output record, 256..1024 constant strings, 1024.. config, then the input
;; (the `run` argument: the host puts it after the config), then a bump heap (`$heap`) for edits and built strings.
(module
  (import "host" "rand" (func $rand (result i64)))
  (import "host" "rl_local_take" (func $rl_local_take (result i32)))
  ;; One page to start with: the host grows memory for the config blob and the input.
  (memory (export "memory") 1)
  ;; The ABI's input address; the chain's host writes the input after the config blob instead.
  (global (export "input_base") i32 (i32.const 1024))
  (global $heap (mut i32) (i32.const 0))
  (global $edits (mut i32) (i32.const 0))

  ;; Constant strings (address, length in the comment).
  (data (i32.const 256) "traceparent")             ;; 11
  (data (i32.const 272) "b3")                      ;; 2
  (data (i32.const 280) "x-b3-traceid")            ;; 12
  (data (i32.const 296) "x-b3-spanid")             ;; 11
  (data (i32.const 312) "x-b3-sampled")            ;; 12
  (data (i32.const 328) "x-b3-flags")              ;; 10
  (data (i32.const 344) "unauthenticated")         ;; 15
  (data (i32.const 360) "authorization")           ;; 13
  (data (i32.const 376) "x-forwarded-client-cert") ;; 23
  (data (i32.const 400) "By=")                     ;; 3
  (data (i32.const 404) ";URI=")                   ;; 5
  (data (i32.const 412) "global")                  ;; 6
  (data (i32.const 420) "-")                       ;; 1
  (data (i32.const 424) "true")                    ;; 4
  (data (i32.const 432) "mutual TLS required")     ;; 19
  (data (i32.const 456) "port not allowed")        ;; 16
  (data (i32.const 476) "protocol not allowed")    ;; 20
  (data (i32.const 500) "RBAC: access denied")     ;; 19
  (data (i32.const 520) "rate limited")            ;; 12
  (data (i32.const 536) "ff")                      ;; 2
  (data (i32.const 540) "00")                      ;; 2

  ;; ---- helpers -------------------------------------------------------------------------

  (func $eq (param $a i32) (param $an i32) (param $b i32) (param $bn i32) (result i32)
    (local $i i32)
    (if (i32.ne (local.get $an) (local.get $bn)) (then (return (i32.const 0))))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $an)))
        (if (i32.ne (i32.load8_u (i32.add (local.get $a) (local.get $i)))
                    (i32.load8_u (i32.add (local.get $b) (local.get $i))))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (i32.const 1))

  ;; Istio-style match: a trailing `*` is a prefix match, otherwise equality.
  (func $id_matches (param $p i32) (param $pn i32) (param $s i32) (param $sn i32) (result i32)
    (if (i32.and (i32.gt_u (local.get $pn) (i32.const 0))
                 (i32.eq (i32.load8_u (i32.sub (i32.add (local.get $p) (local.get $pn)) (i32.const 1)))
                         (i32.const 42)))
      (then
        (local.set $pn (i32.sub (local.get $pn) (i32.const 1)))
        (if (i32.lt_u (local.get $sn) (local.get $pn)) (then (return (i32.const 0))))
        (return (call $eq (local.get $p) (local.get $pn) (local.get $s) (local.get $pn)))))
    (call $eq (local.get $p) (local.get $pn) (local.get $s) (local.get $sn)))

  ;; Bump allocation (8-aligned); grows memory when needed, traps when the cap forbids it.
  (func $alloc (param $n i32) (result i32)
    (local $p i32) (local $end i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (local.set $end (i32.add (local.get $p) (local.get $n)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.lt_s
              (memory.grow (i32.add (i32.shr_u (i32.sub (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
                                                (i32.const 16))
                                    (i32.const 1)))
              (i32.const 0))
          (then unreachable))))
    (global.set $heap (local.get $end))
    (local.get $p))

  (func $deny (param $status i32) (param $layer i32) (param $msg i32) (param $mn i32) (result i32)
    (i32.store (i32.const 0) (local.get $status))
    (i32.store (i32.const 4) (local.get $layer))
    (i32.store (i32.const 8) (local.get $msg))
    (i32.store (i32.const 12) (local.get $mn))
    (i32.const 0))

  (func $edit (param $op i32) (param $n i32) (param $nn i32) (param $v i32) (param $vn i32)
    (local $e i32)
    (local.set $e (i32.add (global.get $edits) (i32.mul (i32.load (i32.const 16)) (i32.const 20))))
    (i32.store (local.get $e) (local.get $op))
    (i32.store offset=4 (local.get $e) (local.get $n))
    (i32.store offset=8 (local.get $e) (local.get $nn))
    (i32.store offset=12 (local.get $e) (local.get $v))
    (i32.store offset=16 (local.get $e) (local.get $vn))
    (i32.store (i32.const 16) (i32.add (i32.load (i32.const 16)) (i32.const 1))))

  ;; Index of the first header entry at or after `$from` named (n, nn); -1 when none.
  (func $hdr_find (param $in i32) (param $n i32) (param $nn i32) (param $from i32) (result i32)
    (local $e i32)
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $from) (i32.load offset=64 (local.get $in))))
        (local.set $e (i32.add (i32.load offset=68 (local.get $in)) (i32.mul (local.get $from) (i32.const 20))))
        (if (call $eq (i32.load (local.get $e)) (i32.load offset=4 (local.get $e)) (local.get $n) (local.get $nn))
          (then (return (local.get $from))))
        (local.set $from (i32.add (local.get $from) (i32.const 1)))
        (br $l)))
    (i32.const -1))

  (func $hdr_entry (param $in i32) (param $i i32) (result i32)
    (i32.add (i32.load offset=68 (local.get $in)) (i32.mul (local.get $i) (i32.const 20))))

  ;; Hex digit value, or -1.
  (func $hexval (param $c i32) (result i32)
    (if (i32.and (i32.ge_u (local.get $c) (i32.const 48)) (i32.le_u (local.get $c) (i32.const 57)))
      (then (return (i32.sub (local.get $c) (i32.const 48)))))
    (if (i32.and (i32.ge_u (local.get $c) (i32.const 97)) (i32.le_u (local.get $c) (i32.const 102)))
      (then (return (i32.sub (local.get $c) (i32.const 87)))))
    (if (i32.and (i32.ge_u (local.get $c) (i32.const 65)) (i32.le_u (local.get $c) (i32.const 70)))
      (then (return (i32.sub (local.get $c) (i32.const 55)))))
    (i32.const -1))

  ;; Parse up to 16 hex digits: (value, ok).
  (func $hex (param $p i32) (param $n i32) (result i64 i32)
    (local $v i64) (local $d i32) (local $i i32)
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $d (call $hexval (i32.load8_u (i32.add (local.get $p) (local.get $i)))))
        (if (i32.lt_s (local.get $d) (i32.const 0)) (then (return (i64.const 0) (i32.const 0))))
        (local.set $v (i64.or (i64.shl (local.get $v) (i64.const 4)) (i64.extend_i32_u (local.get $d))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (local.get $v) (i32.const 1))

  ;; Position of the next '-' in [p, end), or end.
  (func $dash (param $p i32) (param $end i32) (result i32)
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (br_if $done (i32.eq (i32.load8_u (local.get $p)) (i32.const 45)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $l)))
    (local.get $p))

  (func $is_ws (param $c i32) (result i32)
    (i32.or (i32.eq (local.get $c) (i32.const 32)) (i32.eq (local.get $c) (i32.const 9))))

  ;; Trim spaces/tabs: (start, end).
  (func $trim (param $p i32) (param $n i32) (result i32 i32)
    (local $end i32)
    (local.set $end (i32.add (local.get $p) (local.get $n)))
    (block $a (loop $l
      (br_if $a (i32.ge_u (local.get $p) (local.get $end)))
      (br_if $a (i32.eqz (call $is_ws (i32.load8_u (local.get $p)))))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $l)))
    (block $b (loop $l
      (br_if $b (i32.ge_u (local.get $p) (local.get $end)))
      (br_if $b (i32.eqz (call $is_ws (i32.load8_u (i32.sub (local.get $end) (i32.const 1))))))
      (local.set $end (i32.sub (local.get $end) (i32.const 1)))
      (br $l)))
    (local.get $p) (local.get $end))

  ;; 16- or 32-digit non-zero trace id from [p, p+n) into the output record (48 hi, 56 lo).
  (func $trace_id (param $p i32) (param $n i32) (result i32)
    (local $hi i64) (local $lo i64) (local $ok i32)
    (if (i32.eq (local.get $n) (i32.const 32))
      (then
        (call $hex (local.get $p) (i32.const 16)) (local.set $ok) (local.set $hi)
        (if (i32.eqz (local.get $ok)) (then (return (i32.const 0))))
        (call $hex (i32.add (local.get $p) (i32.const 16)) (i32.const 16)) (local.set $ok) (local.set $lo)
        (if (i32.eqz (local.get $ok)) (then (return (i32.const 0)))))
      (else
        (if (i32.ne (local.get $n) (i32.const 16)) (then (return (i32.const 0))))
        (call $hex (local.get $p) (i32.const 16)) (local.set $ok) (local.set $lo)
        (if (i32.eqz (local.get $ok)) (then (return (i32.const 0))))))
    (if (i64.eqz (i64.or (local.get $hi) (local.get $lo))) (then (return (i32.const 0))))
    (i64.store (i32.const 48) (local.get $hi))
    (i64.store (i32.const 56) (local.get $lo))
    (i32.const 1))

  ;; Exactly 16 hex digits, non-zero, into the parent field (72).
  (func $parent_id (param $p i32) (param $n i32) (result i32)
    (local $v i64) (local $ok i32)
    (if (i32.ne (local.get $n) (i32.const 16)) (then (return (i32.const 0))))
    (call $hex (local.get $p) (i32.const 16)) (local.set $ok) (local.set $v)
    (if (i32.or (i32.eqz (local.get $ok)) (i64.eqz (local.get $v))) (then (return (i32.const 0))))
    (i64.store (i32.const 72) (local.get $v))
    (i32.const 1))

  ;; W3C traceparent `00-<32>-<16>-<2>` (first value; the host flags non-text values).
  (func $traceparent (param $in i32) (result i32)
    (local $i i32) (local $e i32) (local $s0 i32) (local $e0 i32) (local $s1 i32) (local $e1 i32)
    (local $s2 i32) (local $e2 i32) (local $s3 i32) (local $e3 i32) (local $end i32)
    (local $c0 i32) (local $c1 i32) (local $ver00 i32)
    (local.set $i (call $hdr_find (local.get $in) (i32.const 256) (i32.const 11) (i32.const 0)))
    (if (i32.lt_s (local.get $i) (i32.const 0)) (then (return (i32.const 0))))
    (local.set $e (call $hdr_entry (local.get $in) (local.get $i)))
    (if (i32.eqz (i32.load offset=16 (local.get $e))) (then (return (i32.const 0))))
    (call $trim (i32.load offset=8 (local.get $e)) (i32.load offset=12 (local.get $e)))
    (local.set $end) (local.set $s0)
    (local.set $e0 (call $dash (local.get $s0) (local.get $end)))
    (if (i32.ge_u (local.get $e0) (local.get $end)) (then (return (i32.const 0))))
    (local.set $s1 (i32.add (local.get $e0) (i32.const 1)))
    (local.set $e1 (call $dash (local.get $s1) (local.get $end)))
    (if (i32.ge_u (local.get $e1) (local.get $end)) (then (return (i32.const 0))))
    (local.set $s2 (i32.add (local.get $e1) (i32.const 1)))
    (local.set $e2 (call $dash (local.get $s2) (local.get $end)))
    (if (i32.ge_u (local.get $e2) (local.get $end)) (then (return (i32.const 0))))
    (local.set $s3 (i32.add (local.get $e2) (i32.const 1)))
    (local.set $e3 (call $dash (local.get $s3) (local.get $end)))
    (if (i32.ne (i32.sub (local.get $e0) (local.get $s0)) (i32.const 2)) (then (return (i32.const 0))))
    (if (call $eq (local.get $s0) (i32.const 2) (i32.const 536) (i32.const 2)) (then (return (i32.const 0))))
    (if (i32.ne (i32.sub (local.get $e1) (local.get $s1)) (i32.const 32)) (then (return (i32.const 0))))
    (if (i32.ne (i32.sub (local.get $e3) (local.get $s3)) (i32.const 2)) (then (return (i32.const 0))))
    (local.set $ver00 (call $eq (local.get $s0) (i32.const 2) (i32.const 540) (i32.const 2)))
    (if (i32.and (local.get $ver00) (i32.lt_u (local.get $e3) (local.get $end))) (then (return (i32.const 0))))
    (if (i32.eqz (call $trace_id (local.get $s1) (i32.const 32))) (then (return (i32.const 0))))
    (if (i32.eqz (call $parent_id (local.get $s2) (i32.sub (local.get $e2) (local.get $s2)))) (then (return (i32.const 0))))
    ;; flags: u8::from_str_radix(_, 16) accepts "hh" and "+h".
    (local.set $c0 (i32.load8_u (local.get $s3)))
    (local.set $c1 (call $hexval (i32.load8_u (i32.add (local.get $s3) (i32.const 1)))))
    (if (i32.lt_s (local.get $c1) (i32.const 0)) (then (return (i32.const 0))))
    (if (i32.and (i32.ne (local.get $c0) (i32.const 43)) (i32.lt_s (call $hexval (local.get $c0)) (i32.const 0)))
      (then (return (i32.const 0))))
    (i32.store (i32.const 40) (i32.and (local.get $c1) (i32.const 1)))
    (i32.const 1))

  ;; B3: the single `b3` header when it is text (`trace-span[-sampled]`), else the multi headers.
  (func $b3 (param $in i32) (result i32)
    (local $i i32) (local $e i32) (local $s0 i32) (local $e0 i32) (local $s1 i32) (local $e1 i32)
    (local $s2 i32) (local $e2 i32) (local $end i32) (local $c i32)
    (local.set $i (call $hdr_find (local.get $in) (i32.const 272) (i32.const 2) (i32.const 0)))
    (if (i32.ge_s (local.get $i) (i32.const 0))
      (then
        (local.set $e (call $hdr_entry (local.get $in) (local.get $i)))
        (if (i32.load offset=16 (local.get $e))
          (then
            (call $trim (i32.load offset=8 (local.get $e)) (i32.load offset=12 (local.get $e)))
            (local.set $end) (local.set $s0)
            (local.set $e0 (call $dash (local.get $s0) (local.get $end)))
            (if (i32.eqz (call $trace_id (local.get $s0) (i32.sub (local.get $e0) (local.get $s0))))
              (then (return (i32.const 0))))
            (if (i32.ge_u (local.get $e0) (local.get $end)) (then (return (i32.const 0))))
            (local.set $s1 (i32.add (local.get $e0) (i32.const 1)))
            (local.set $e1 (call $dash (local.get $s1) (local.get $end)))
            (if (i32.eqz (call $parent_id (local.get $s1) (i32.sub (local.get $e1) (local.get $s1))))
              (then (return (i32.const 0))))
            (i32.store (i32.const 40) (i32.const 0))
            (if (i32.lt_u (local.get $e1) (local.get $end))
              (then
                (local.set $s2 (i32.add (local.get $e1) (i32.const 1)))
                (local.set $e2 (call $dash (local.get $s2) (local.get $end)))
                (if (i32.eq (i32.sub (local.get $e2) (local.get $s2)) (i32.const 1))
                  (then
                    (local.set $c (i32.load8_u (local.get $s2)))
                    (i32.store (i32.const 40)
                      (i32.or (i32.eq (local.get $c) (i32.const 49)) (i32.eq (local.get $c) (i32.const 100))))))))
            (return (i32.const 1))))))
    ;; multi-header form
    (local.set $i (call $hdr_find (local.get $in) (i32.const 280) (i32.const 12) (i32.const 0)))
    (if (i32.lt_s (local.get $i) (i32.const 0)) (then (return (i32.const 0))))
    (local.set $e (call $hdr_entry (local.get $in) (local.get $i)))
    (if (i32.eqz (i32.load offset=16 (local.get $e))) (then (return (i32.const 0))))
    (if (i32.eqz (call $trace_id (i32.load offset=8 (local.get $e)) (i32.load offset=12 (local.get $e))))
      (then (return (i32.const 0))))
    (local.set $i (call $hdr_find (local.get $in) (i32.const 296) (i32.const 11) (i32.const 0)))
    (if (i32.lt_s (local.get $i) (i32.const 0)) (then (return (i32.const 0))))
    (local.set $e (call $hdr_entry (local.get $in) (local.get $i)))
    (if (i32.eqz (i32.load offset=16 (local.get $e))) (then (return (i32.const 0))))
    (if (i32.eqz (call $parent_id (i32.load offset=8 (local.get $e)) (i32.load offset=12 (local.get $e))))
      (then (return (i32.const 0))))
    (i32.store (i32.const 40) (i32.const 0))
    (local.set $i (call $hdr_find (local.get $in) (i32.const 312) (i32.const 12) (i32.const 0)))
    (if (i32.ge_s (local.get $i) (i32.const 0))
      (then
        (local.set $e (call $hdr_entry (local.get $in) (local.get $i)))
        (if (i32.or
              (call $eq (i32.load offset=8 (local.get $e)) (i32.load offset=12 (local.get $e)) (i32.const 424) (i32.const 4))
              (i32.and (i32.eq (i32.load offset=12 (local.get $e)) (i32.const 1))
                       (i32.eq (i32.load8_u (i32.load offset=8 (local.get $e))) (i32.const 49))))
          (then (i32.store (i32.const 40) (i32.const 1))))))
    (local.set $i (call $hdr_find (local.get $in) (i32.const 328) (i32.const 10) (i32.const 0)))
    (if (i32.ge_s (local.get $i) (i32.const 0))
      (then
        (local.set $e (call $hdr_entry (local.get $in) (local.get $i)))
        (if (i32.and (i32.eq (i32.load offset=12 (local.get $e)) (i32.const 1))
                     (i32.eq (i32.load8_u (i32.load offset=8 (local.get $e))) (i32.const 49)))
          (then (i32.store (i32.const 40) (i32.const 1))))))
    (i32.const 1))

  ;; (6) Tracing: continue the incoming context with a new span or start a trace. The host's
  ;; `rand` is drawn in the same order as the shared-mode layer (span, trace hi, trace lo,
  ;; sampling draw) so both modes produce the same ids from the same generator state.
  (func $tracing (param $cfg i32) (param $in i32)
    (local $span i64)
    (local.set $span (call $rand))
    (i32.store (i32.const 36) (i32.const 1))
    (i64.store (i32.const 64) (local.get $span))
    (if (call $traceparent (local.get $in)) (then (return)))
    (if (call $b3 (local.get $in)) (then (return)))
    (i64.store (i32.const 72) (i64.const 0))
    (i64.store (i32.const 48) (call $rand))
    (i64.store (i32.const 56) (call $rand))
    (if (i32.load offset=48 (local.get $cfg))
      (then (i32.store (i32.const 40) (i32.const 1)))
      (else (i32.store (i32.const 40) (i64.lt_u (call $rand) (i64.load offset=40 (local.get $cfg)))))))

  ;; Does any entry of the (ptr, len) array [arr, arr + 8n) match (s, sn) with $id_matches?
  (func $any_match (param $arr i32) (param $n i32) (param $s i32) (param $sn i32) (result i32)
    (local $i i32) (local $e i32)
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $e (i32.add (local.get $arr) (i32.shl (local.get $i) (i32.const 3))))
        (if (call $id_matches (i32.load (local.get $e)) (i32.load offset=4 (local.get $e)) (local.get $s) (local.get $sn))
          (then (return (i32.const 1))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (i32.const 0))

  ;; Does any entry equal (s, sn) exactly?
  (func $any_eq (param $arr i32) (param $n i32) (param $s i32) (param $sn i32) (result i32)
    (local $i i32) (local $e i32)
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $e (i32.add (local.get $arr) (i32.shl (local.get $i) (i32.const 3))))
        (if (call $eq (i32.load (local.get $e)) (i32.load offset=4 (local.get $e)) (local.get $s) (local.get $sn))
          (then (return (i32.const 1))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (i32.const 0))

  ;; One authz rule (36 bytes: action, n_src, src, n_meth, meth, n_path, path, n_hdr, hdr).
  (func $rule_matches (param $r i32) (param $in i32) (result i32)
    (local $i i32) (local $h i32) (local $j i32) (local $e i32) (local $found i32)
    ;; sources
    (if (i32.load offset=4 (local.get $r))
      (then
        (if (i32.load offset=8 (local.get $in))
          (then
            (if (i32.eqz (call $any_match (i32.load offset=8 (local.get $r)) (i32.load offset=4 (local.get $r))
                                          (i32.load offset=12 (local.get $in)) (i32.load offset=16 (local.get $in))))
              (then (return (i32.const 0)))))
          (else
            (if (i32.eqz (call $any_eq (i32.load offset=8 (local.get $r)) (i32.load offset=4 (local.get $r))
                                       (i32.const 344) (i32.const 15)))
              (then (return (i32.const 0))))))))
    ;; methods (exact)
    (if (i32.load offset=12 (local.get $r))
      (then
        (if (i32.eqz (call $any_eq (i32.load offset=16 (local.get $r)) (i32.load offset=12 (local.get $r))
                                   (i32.load offset=28 (local.get $in)) (i32.load offset=32 (local.get $in))))
          (then (return (i32.const 0))))))
    ;; paths
    (if (i32.load offset=20 (local.get $r))
      (then
        (if (i32.eqz (call $any_match (i32.load offset=24 (local.get $r)) (i32.load offset=20 (local.get $r))
                                      (i32.load offset=36 (local.get $in)) (i32.load offset=40 (local.get $in))))
          (then (return (i32.const 0))))))
    ;; headers: every named header needs some text value matching some pattern
    (block $hdone
      (loop $hl
        (br_if $hdone (i32.ge_u (local.get $i) (i32.load offset=28 (local.get $r))))
        (local.set $h (i32.add (i32.load offset=32 (local.get $r)) (i32.shl (local.get $i) (i32.const 4))))
        (local.set $found (i32.const 0))
        (local.set $j (call $hdr_find (local.get $in) (i32.load (local.get $h)) (i32.load offset=4 (local.get $h)) (i32.const 0)))
        (block $vdone
          (loop $vl
            (br_if $vdone (i32.lt_s (local.get $j) (i32.const 0)))
            (local.set $e (call $hdr_entry (local.get $in) (local.get $j)))
            (if (i32.and (i32.load offset=16 (local.get $e))
                         (call $any_match (i32.load offset=12 (local.get $h)) (i32.load offset=8 (local.get $h))
                                          (i32.load offset=8 (local.get $e)) (i32.load offset=12 (local.get $e))))
              (then (local.set $found (i32.const 1)) (br $vdone)))
            (local.set $j (call $hdr_find (local.get $in) (i32.load (local.get $h)) (i32.load offset=4 (local.get $h))
                                (i32.add (local.get $j) (i32.const 1))))
            (br $vl)))
        (if (i32.eqz (local.get $found)) (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $hl)))
    (i32.const 1))

  ;; (4) Istio order: a matching deny rule denies; with rules, an allow rule must match.
  (func $authz (param $cfg i32) (param $in i32) (result i32)
    (local $i i32) (local $r i32) (local $allowed i32)
    (if (i32.eqz (i32.load offset=52 (local.get $cfg))) (then (return (i32.const 1))))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (i32.load offset=52 (local.get $cfg))))
        (local.set $r (i32.add (i32.load offset=56 (local.get $cfg)) (i32.mul (local.get $i) (i32.const 36))))
        (if (call $rule_matches (local.get $r) (local.get $in))
          (then
            (if (i32.load (local.get $r))
              (then (return (i32.const 0)))
              (else (local.set $allowed (i32.const 1))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (local.get $allowed))

  ;; The chain. Returns the address of the output record (0).
  (func (export "run") (param $in i32) (param $len i32) (result i32)
    (local $cfg i32) (local $flags i32) (local $i i32) (local $e i32) (local $p i32) (local $n i32)
    (local $ok i32) (local $port i32) (local $mask i32)
    (local.set $cfg (i32.const 1024))
    (local.set $flags (i32.load (local.get $cfg)))
    (global.set $heap (i32.add (local.get $in) (local.get $len)))
    ;; room for every edit this chain can make: xfcc, authorization, the forwarded claims
    (global.set $edits (call $alloc (i32.mul (i32.add (i32.load offset=56 (local.get $in)) (i32.const 2)) (i32.const 20))))
    (memory.fill (i32.const 0) (i32.const 0) (i32.const 80))
    (i32.store (i32.const 20) (global.get $edits))

    ;; (1) mTLS: identity forwarded upstream, strict mode requires one.
    (if (i32.and (local.get $flags) (i32.const 1))
      (then
        (if (i32.load offset=8 (local.get $in))
          (then
            (local.set $n (i32.add (i32.add (i32.const 8) (i32.load offset=8 (local.get $cfg)))
                                   (i32.load offset=16 (local.get $in))))
            (local.set $p (call $alloc (local.get $n)))
            (memory.copy (local.get $p) (i32.const 400) (i32.const 3))
            (memory.copy (i32.add (local.get $p) (i32.const 3)) (i32.load offset=4 (local.get $cfg)) (i32.load offset=8 (local.get $cfg)))
            (memory.copy (i32.add (i32.add (local.get $p) (i32.const 3)) (i32.load offset=8 (local.get $cfg))) (i32.const 404) (i32.const 5))
            (memory.copy (i32.add (i32.add (local.get $p) (i32.const 8)) (i32.load offset=8 (local.get $cfg)))
                         (i32.load offset=12 (local.get $in)) (i32.load offset=16 (local.get $in)))
            (call $edit (i32.const 1) (i32.const 376) (i32.const 23) (local.get $p) (local.get $n)))
          (else
            (if (i32.and (local.get $flags) (i32.const 2))
              (then (return (call $deny (i32.const 403) (i32.const 1) (i32.const 432) (i32.const 19)))))))))

    ;; (2) ports and protocols
    (if (i32.and (local.get $flags) (i32.const 4))
      (then
        (local.set $ok (i32.const 0))
        (local.set $port (i32.load (local.get $in)))
        (local.set $i (i32.const 0))
        (block $pd
          (loop $pl
            (br_if $pd (i32.ge_u (local.get $i) (i32.load offset=12 (local.get $cfg))))
            (if (i32.eq (local.get $port)
                        (i32.load (i32.add (i32.load offset=16 (local.get $cfg)) (i32.shl (local.get $i) (i32.const 2)))))
              (then (local.set $ok (i32.const 1)) (br $pd)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $pl)))
        (if (i32.eqz (local.get $ok))
          (then (return (call $deny (i32.const 403) (i32.const 2) (i32.const 456) (i32.const 16)))))
        (local.set $mask (i32.load offset=20 (local.get $cfg)))
        (if (i32.eqz (i32.and (local.get $mask) (i32.load offset=4 (local.get $in))))
          (then (return (call $deny (i32.const 505) (i32.const 2) (i32.const 476) (i32.const 20)))))))

    ;; (3) JWT: verified by the host; the guest turns the result into a decision and edits.
    (if (i32.and (local.get $flags) (i32.const 8))
      (then
        (if (i32.ne (i32.load offset=44 (local.get $in)) (i32.const 1))
          (then (return (call $deny (i32.const 401) (i32.const 3)
                              (i32.load offset=48 (local.get $in)) (i32.load offset=52 (local.get $in))))))
        (call $edit (i32.const 2) (i32.const 360) (i32.const 13) (i32.const 0) (i32.const 0))
        (local.set $i (i32.const 0))
        (block $cd
          (loop $cl
            (br_if $cd (i32.ge_u (local.get $i) (i32.load offset=56 (local.get $in))))
            (local.set $e (i32.add (i32.load offset=60 (local.get $in)) (i32.shl (local.get $i) (i32.const 4))))
            (call $edit (i32.const 1) (i32.load (local.get $e)) (i32.load offset=4 (local.get $e))
                        (i32.load offset=8 (local.get $e)) (i32.load offset=12 (local.get $e)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $cl)))))

    ;; (4) authorization
    (if (i32.and (local.get $flags) (i32.const 16))
      (then
        (if (i32.eqz (call $authz (local.get $cfg) (local.get $in)))
          (then (return (call $deny (i32.const 403) (i32.const 4) (i32.const 500) (i32.const 19)))))))

    ;; (5) rate limit: local token bucket in the host cache, then the key of the global counter
    ;; (the Redis round trip is asynchronous I/O and stays in the host).
    (if (i32.and (local.get $flags) (i32.const 32))
      (then
        (if (i32.and (local.get $flags) (i32.const 64))
          (then
            (if (i32.eqz (call $rl_local_take))
              (then (return (call $deny (i32.const 429) (i32.const 5) (i32.const 520) (i32.const 12)))))))
        (i32.store (i32.const 24) (i32.const 1))
        (local.set $mask (i32.load offset=24 (local.get $cfg)))
        (if (i32.eqz (local.get $mask))
          (then (i32.store (i32.const 28) (i32.const 412)) (i32.store (i32.const 32) (i32.const 6))))
        (if (i32.eq (local.get $mask) (i32.const 1))
          (then
            (if (i32.load offset=8 (local.get $in))
              (then (i32.store (i32.const 28) (i32.load offset=12 (local.get $in)))
                    (i32.store (i32.const 32) (i32.load offset=16 (local.get $in))))
              (else (i32.store (i32.const 28) (i32.load offset=20 (local.get $in)))
                    (i32.store (i32.const 32) (i32.load offset=24 (local.get $in)))))))
        (if (i32.eq (local.get $mask) (i32.const 2))
          (then
            (i32.store (i32.const 28) (i32.const 420)) (i32.store (i32.const 32) (i32.const 1))
            (local.set $i (call $hdr_find (local.get $in) (i32.load offset=28 (local.get $cfg)) (i32.load offset=32 (local.get $cfg)) (i32.const 0)))
            (if (i32.ge_s (local.get $i) (i32.const 0))
              (then
                (local.set $e (call $hdr_entry (local.get $in) (local.get $i)))
                (if (i32.load offset=16 (local.get $e))
                  (then (i32.store (i32.const 28) (i32.load offset=8 (local.get $e)))
                        (i32.store (i32.const 32) (i32.load offset=12 (local.get $e)))))))
            ;; at most 128 characters of a header value, like the shared layer
            (if (i32.gt_u (i32.load (i32.const 32)) (i32.const 128))
              (then (i32.store (i32.const 32) (i32.const 128))))))))

    ;; (6) tracing
    (if (i32.and (local.get $flags) (i32.const 128))
      (then (call $tracing (local.get $cfg) (local.get $in))))
    (i32.const 0))
)
