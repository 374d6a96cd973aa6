;; sleep_poll_oneoff: `_start` calls `poll_oneoff` with one relative subscription to
;; the monotonic clock for 60 seconds.
;; Tries: to park inside a host call, where fuel is not consumed and no epoch check
;; runs.
;; Expected: `timeout` within the attempt's timeout (not after 60 s).
(module
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; subscription (48 bytes) at 0: userdata u64 @0, tag u8 @8 (0 = clock),
  ;; clock id u32 @16 (1 = monotonic), timeout u64 @24 (ns), precision u64 @32,
  ;; flags u16 @40 (0 = relative). One event (32 bytes) at 64, nevents at 96.
  (func (export "_start")
    (i64.store (i32.const 0) (i64.const 1))
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 60000000000))
    (i64.store (i32.const 32) (i64.const 0))
    (i32.store16 (i32.const 40) (i32.const 0))
    (drop
      (call $poll_oneoff (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 96)))))
