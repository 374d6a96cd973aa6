;; memory_bomb: `_start` grows memory one page at a time until `memory.grow` returns
;; -1, then returns normally.
;; Tries: to take all the memory the host will give.
;; Expected: `memory_limit` (the fabric traps on a failed grow, so the guest never sees
;; the -1 and cannot pass off the failure as success).
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (block $full
      (loop $grow
        (br_if $full
          (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
        (br $grow)))))
