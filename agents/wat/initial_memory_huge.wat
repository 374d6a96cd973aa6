;; initial_memory_huge: declares 2048 pages (128 MiB) of initial memory; `_start` does
;; nothing.
;; Tries: to get memory at instantiation, before any `memory.grow` check runs.
;; Expected: `memory_limit` under a 64 MiB cap.
(module
  (memory (export "memory") 2048)
  (func (export "_start")))
