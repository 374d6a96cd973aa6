;; telemetry_unknown_import: imports `fabric.steal`, which the host does not define.
;; Tries: to find a host function in the `fabric` module beyond `kpi` and `progress`.
;; Expected: `invalid`, the error naming `fabric::steal`; nothing runs.
(module
  (import "fabric" "steal" (func $steal (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $steal (i32.const 0) (i32.const 65536)))))
