;; submit_spec_bytes: submits 17 specs of exactly 256 KiB each (`{"module":"echo","input":"aaa…"}`),
;; then a 17-byte one, printing each call's code on a line of its own.
;; Tries: to make the host parse and buffer unbounded spec bytes within the call limit.
;; Expected: `ok` with a grant: the first 16 calls are taken (the 11-byte id length each),
;; which spends the attempt's 4 MiB of spec bytes exactly; the 17th and the 17-byte one are
;; refused with -6 (too many spec bytes) without being read; 16 children are kept.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "fabric" "submit" (func $submit (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 6)
  ;; Printing kit: $puts(ptr, len) writes memory to stdout, $putu(n) an unsigned decimal,
  ;; $nl a newline. Bytes 0..48 are its scratch space, 48 holds the newline.
  (data (i32.const 48) "\n")
  (func $puts (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
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
  (func $nl (call $puts (i32.const 48) (i32.const 1)))
  (data (i32.const 0x100) "{\"module\":\"echo\",\"input\":\"")
  (data (i32.const 0x140) "\"}")
  (data (i32.const 0x160) "-")
  (func $show (param $code i32)
    (if (i32.lt_s (local.get $code) (i32.const 0))
      (then
        (call $puts (i32.const 0x160) (i32.const 1))
        (local.set $code (i32.sub (i32.const 0) (local.get $code)))))
    (call $putu (local.get $code))
    (call $nl))
  (func (export "_start")
    (local $i i32)
    ;; The spec at 0x10000: the 26-byte prefix, 262,116 `a`, the 2-byte suffix.
    (memory.copy (i32.const 0x10000) (i32.const 0x100) (i32.const 26))
    (memory.fill (i32.const 0x1001a) (i32.const 0x61) (i32.const 262116))
    (memory.copy (i32.const 0x4fffe) (i32.const 0x140) (i32.const 2))
    (loop $call
      (call $show
        (call $submit (i32.const 0x10000) (i32.const 262144) (i32.const 0x200) (i32.const 64)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $call (i32.lt_u (local.get $i) (i32.const 17))))
    (call $show (call $submit (i32.const 0x10000) (i32.const 17) (i32.const 0x200) (i32.const 64)))))
