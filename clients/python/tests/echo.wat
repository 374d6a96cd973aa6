;; echo: copies stdin to stdout, 64 KiB at a time; the agent the Python tests run.
;; tests/conftest.py holds these bytes compiled (ECHO_WASM) and checks they are the same
;; module as this text put with `fabric module put`.
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  ;; in iovec {buf = 64, len = 65536} at 0, nread at 8,
  ;; out iovec {buf = 64, len = nread} at 16, nwritten at 24; the buffer from 64.
  (func (export "_start") (local $n i32)
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 65536))
    (block $done
      (loop $next
        (br_if $done
          (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
        (local.set $n (i32.load (i32.const 8)))
        (br_if $done (i32.eqz (local.get $n)))
        (i32.store (i32.const 16) (i32.const 64))
        (i32.store (i32.const 20) (local.get $n))
        (drop
          (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))
        (br $next)))))
