;; wrong_signature: imports `wasi_snapshot_preview1.fd_write` with the type
;; (i64) -> i64 instead of (i32, i32, i32, i32) -> i32. The module itself is valid.
;; Tries: to confuse the host about argument types.
;; Expected: `invalid` (linking fails on the type mismatch).
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i64) (result i64)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $fd_write (i64.const 1)))))
