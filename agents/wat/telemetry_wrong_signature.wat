;; telemetry_wrong_signature: imports `fabric.kpi` without its f64 value parameter.
;; Tries: to call a host function with arguments of the wrong types.
;; Expected: `invalid`, the error naming `fabric::kpi`; nothing runs.
(module
  (import "fabric" "kpi" (func $kpi (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0x100) "steps")
  (func (export "_start")
    (drop (call $kpi (i32.const 0x100) (i32.const 5)))))
