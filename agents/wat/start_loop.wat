;; start_loop: the Wasm `start` function loops forever, so instantiation never ends
;; and `_start` is never reached.
;; Tries: to escape a deadline that only covers the call to `_start`.
;; Expected: `timeout` (the deadline covers instantiation too).
(module
  (memory (export "memory") 1)
  (func $forever
    (loop $spin
      (br $spin)))
  (start $forever)
  (func (export "_start")))
