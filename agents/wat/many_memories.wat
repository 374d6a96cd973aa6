;; many_memories: three memories (multi-memory) of 400 pages (25 MiB) each; `_start`
;; writes the last word of each.
;; Tries: to exceed a per-task cap with memories that are each under it (75 MiB in
;; all against 64 MiB).
;; Expected: `memory_limit`: the cap counts all of a task's memories together. (A
;; pooling allocator configured for one memory per module rejects the module at
;; instantiation instead; it must still never run with 75 MiB.)
(module
  (memory $a (export "memory") 400)
  (memory $b 400)
  (memory $c 400)
  (func (export "_start")
    ;; 400 pages = 26214400 bytes; 26214396 is the last aligned word.
    (i32.store $a (i32.const 26214396) (i32.const 1))
    (i32.store $b (i32.const 26214396) (i32.const 1))
    (i32.store $c (i32.const 26214396) (i32.const 1))))
