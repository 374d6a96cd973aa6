;; busy_host_calls: `_start` calls `clock_time_get` in an endless loop, so most of its
;; time is spent in the host rather than in metered guest code.
;; Tries: to run forever on a small fuel bill.
;; Expected: `timeout`.
(module
  (import "wasi_snapshot_preview1" "clock_time_get"
    (func $clock_time_get (param i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $forever
      ;; monotonic clock (1), precision 1 ns, timestamp written at 0
      (drop (call $clock_time_get (i32.const 1) (i64.const 1) (i32.const 0)))
      (br $forever))))
