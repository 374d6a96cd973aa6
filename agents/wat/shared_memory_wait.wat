;; shared_memory_wait: declares a shared memory and has `_start` execute
;; `memory.atomic.wait32` on it with no timeout (-1), waiting for a notify that never
;; comes.
;; Tries: to park the worker's OS thread inside the engine, where neither the epoch
;; deadline nor the async timeout can reach it.
;; Expected: a load error (this engine is built without the threads proposal, so a
;; shared memory does not validate); never a hung worker.
(module
  (memory (export "memory") 1 1 shared)
  (func (export "_start")
    (drop
      (memory.atomic.wait32 (i32.const 0) (i32.const 0) (i64.const -1)))))
