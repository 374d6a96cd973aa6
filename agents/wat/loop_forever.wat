;; loop_forever: `_start` spins in an empty loop and never calls the host.
;; Tries: to hold a worker's CPU forever.
;; Expected: `timeout` (or `out_of_fuel` when a small fuel budget runs out first).
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $forever
      (br $forever))))
