;; start_trap: the Wasm `start` function executes `unreachable` during instantiation.
;; Tries: to fail before `_start`, where a sandbox might not expect a trap.
;; Expected: `trap` (kind: unreachable), not `invalid`.
(module
  (memory (export "memory") 1)
  (func $boom
    unreachable)
  (start $boom)
  (func (export "_start")))
