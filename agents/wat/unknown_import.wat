;; unknown_import: imports `env.launch_missiles`, which no linker provides, and calls it.
;; Tries: to get a host function outside WASI.
;; Expected: `invalid` (the module cannot be instantiated).
(module
  (import "env" "launch_missiles" (func $launch_missiles))
  (memory (export "memory") 1)
  (func (export "_start")
    (call $launch_missiles)))
