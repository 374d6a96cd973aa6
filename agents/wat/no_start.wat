;; no_start: a module with a memory and a function export named `run`, but no `_start`.
;; Tries: to be accepted as a command without the command entry point.
;; Expected: `invalid`.
(module
  (memory (export "memory") 1)
  (func (export "run")))
