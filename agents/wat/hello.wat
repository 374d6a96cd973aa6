;; hello: `_start` writes "hello from wat\n" to stdout and returns.
;; Tries: nothing; the smallest well-behaved WASI command.
;; Expected: `ok` with stdout "hello from wat\n".
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; iovec { buf = 16, len = 15 } at 0, nwritten at 8, the text at 16.
  (data (i32.const 0) "\10\00\00\00\0f\00\00\00")
  (data (i32.const 16) "hello from wat\n")
  (func (export "_start")
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
