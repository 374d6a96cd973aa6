;; write_forever: `_start` writes 64 KiB of 'x' to stdout in an endless loop, ignoring
;; every error.
;; Tries: to run forever on output once stdout is capped (each write is a cheap host
;; call).
;; Expected: `timeout` (or `out_of_fuel` when the fuel budget runs out first).
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  ;; iovec { buf = 65536, len = 65536 } at 0, nwritten at 8; page 1 is the chunk.
  (memory (export "memory") 2)
  (func (export "_start")
    (memory.fill (i32.const 65536) (i32.const 0x78) (i32.const 65536))
    (i32.store (i32.const 0) (i32.const 65536))
    (i32.store (i32.const 4) (i32.const 65536))
    (loop $forever
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br $forever))))
