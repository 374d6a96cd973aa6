;; divide_by_zero: `_start` executes `i32.div_s` with a zero divisor.
;; Tries: an arithmetic fault, which must not reach the host as a signal it mishandles.
;; Expected: `trap` (kind: integer divide by zero).
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (i32.div_s (i32.const 1) (i32.const 0)))))
