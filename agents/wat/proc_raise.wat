;; proc_raise: `_start` calls `proc_raise(9)` (SIGKILL), prints "proc_raise errno=E\n"
;; and returns.
;; Tries: to signal the host process.
;; Expected: wasmtime-wasi 48 still links `proc_raise` in its preview 1 linker and
;; answers ENOTSUP (58) without raising anything, so the outcome is `ok` with
;; "proc_raise errno=58\n". A linker without it would make this `invalid` (unknown
;; import); never a signal.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_raise"
    (func $proc_raise (param i32) (result i32)))
  ;; iovec at 0, nwritten at 8, digits at 16..48, texts from 64.
  (memory (export "memory") 1)
  (data (i32.const 64) "proc_raise errno=")
  (data (i32.const 96) "\n")
  ;; Writes memory[ptr..ptr+len) to stdout through the iovec at 0.
  (func $puts (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  ;; Writes $n as an unsigned decimal to stdout, formatted backwards into 16..48.
  (func $putu (param $n i32)
    (local $p i32)
    (local.set $p (i32.const 48))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.const 0x30) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digit (local.get $n)))
    (call $puts (local.get $p) (i32.sub (i32.const 48) (local.get $p))))
  (func (export "_start")
    (local $errno i32)
    (local.set $errno (call $proc_raise (i32.const 9)))
    (call $puts (i32.const 64) (i32.const 17))
    (call $putu (local.get $errno))
    (call $puts (i32.const 96) (i32.const 1))))
