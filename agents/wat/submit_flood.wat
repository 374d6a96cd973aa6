;; submit_flood: calls `fabric.submit({"module":"echo"})` a million times, counting the
;; answers.
;; Tries: to exhaust the host's memory or time, or the attempt's bounds, with child tasks.
;; Expected: `ok` with a grant, printing `taken=1000 refused=999000 other=0`: every call
;; past the 1,000th is refused with code -3 (too many child tasks), reads nothing and still
;; costs its fuel; the attempt keeps exactly 1,000 children.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "fabric" "submit" (func $submit (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
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
  (data (i32.const 0x100) "{\"module\":\"echo\"}")
  (data (i32.const 0x180) "taken=")
  (data (i32.const 0x190) " refused=")
  (data (i32.const 0x1a0) " other=")
  (func (export "_start")
    (local $i i32) (local $code i32)
    (local $taken i32) (local $refused i32) (local $other i32)
    (loop $call
      (local.set $code
        (call $submit (i32.const 0x100) (i32.const 17) (i32.const 0x200) (i32.const 64)))
      (if (i32.gt_s (local.get $code) (i32.const 0))
        (then (local.set $taken (i32.add (local.get $taken) (i32.const 1))))
        (else (if (i32.eq (local.get $code) (i32.const -3))
          (then (local.set $refused (i32.add (local.get $refused) (i32.const 1))))
          (else (local.set $other (i32.add (local.get $other) (i32.const 1)))))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $call (i32.lt_u (local.get $i) (i32.const 1000000))))
    (call $puts (i32.const 0x180) (i32.const 6)) (call $putu (local.get $taken))
    (call $puts (i32.const 0x190) (i32.const 9)) (call $putu (local.get $refused))
    (call $puts (i32.const 0x1a0) (i32.const 7)) (call $putu (local.get $other))
    (call $nl)))
