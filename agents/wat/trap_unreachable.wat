;; trap_unreachable: `_start` executes `unreachable`.
;; Tries: the simplest guest fault.
;; Expected: `trap` (kind: unreachable).
(module
  (memory (export "memory") 1)
  (func (export "_start")
    unreachable))
