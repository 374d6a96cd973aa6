;; state_leak: `_start` prints its mutable global and a memory cell as
;; "global=G memory=M\n", then increments both.
;; Tries: to see state left behind by an earlier attempt (a reused instance or memory).
;; Expected: `ok` with "global=0 memory=0\n" on every attempt.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  ;; iovec at 0, nwritten at 8, digits at 16..48, the memory cell at 64, texts at 80.
  (memory (export "memory") 1)
  (global $counter (mut i32) (i32.const 0))
  (data (i32.const 80) "global=")
  (data (i32.const 88) " memory=")
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
    (call $puts (i32.const 80) (i32.const 7))
    (call $putu (global.get $counter))
    (call $puts (i32.const 88) (i32.const 8))
    (call $putu (i32.load (i32.const 64)))
    (call $puts (i32.const 96) (i32.const 1))
    (global.set $counter (i32.add (global.get $counter) (i32.const 1)))
    (i32.store (i32.const 64) (i32.add (i32.load (i32.const 64)) (i32.const 1)))))
