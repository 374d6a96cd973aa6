;; stderr_flood: `_start` writes 4 MiB of 'x' to stderr (fd 2) in 64 KiB chunks, then returns
;; normally. It stops early, still returning normally, if a write fails or writes nothing.
;; Tries: to make the host buffer unbounded output.
;; Expected: `ok`, with stderr truncated at the fabric's cap.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  ;; iovec { buf = 65536, len } at 0, nwritten at 8; page 1 is the chunk of 'x'.
  (memory (export "memory") 2)
  (func (export "_start")
    (local $left i32)
    (local $chunk i32)
    (memory.fill (i32.const 65536) (i32.const 0x78) (i32.const 65536))
    (local.set $left (i32.const 4194304))
    (block $done
      (loop $write
        (br_if $done (i32.eqz (local.get $left)))
        ;; chunk = min(left, 65536)
        (local.set $chunk
          (select (local.get $left) (i32.const 65536)
            (i32.lt_u (local.get $left) (i32.const 65536))))
        (i32.store (i32.const 0) (i32.const 65536))
        (i32.store (i32.const 4) (local.get $chunk))
        (br_if $done
          (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
        (br_if $done (i32.eqz (i32.load (i32.const 8))))
        (local.set $left (i32.sub (local.get $left) (i32.load (i32.const 8))))
        (br $write)))))
