;; telemetry_then_trap: records `steps` = 1 and 2 and progress 0.5 "halfway", then traps.
;; Tries: to lose (or corrupt) what an attempt recorded when it fails.
;; Expected: `trap` (kind: unreachable), keeping `steps` (count 2, sum 3, last 2) and the
;; progress 0.5 "halfway".
(module
  (import "fabric" "kpi" (func $kpi (param i32 i32 f64) (result i32)))
  (import "fabric" "progress" (func $progress (param f64 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0x100) "steps")
  (data (i32.const 0x110) "halfway")
  (func (export "_start")
    (drop (call $kpi (i32.const 0x100) (i32.const 5) (f64.const 1)))
    (drop (call $kpi (i32.const 0x100) (i32.const 5) (f64.const 2)))
    (drop (call $progress (f64.const 0.5) (i32.const 0x110) (i32.const 7)))
    unreachable))
