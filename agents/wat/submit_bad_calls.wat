;; submit_bad_calls: calls `fabric.submit` with every kind of bad argument (spec and id
;; buffer pointers out of the memory, lengths past the ends, a spec over 256 KiB, specs
;; that are not UTF-8, not JSON, not a TaskSpec or nested 100,000 deep, one the host
;; refuses, id buffers too small), then good ones, printing `LABEL=CODE` for each call
;; and then the ids it got. Its memory is 5 pages (320 KiB), so that a 256 KiB + 1 spec
;; lies in it and is refused for its length alone.
;; Tries: to make the host trap, read or write outside the guest's memory, parse huge or
;; deeply nested JSON, or get a child submitted whose id it never received.
;; Expected: `ok` (with a grant whose host refuses the module `forbidden` and mints
;; 11-byte ids); bad pointers give -4, the long spec -5, not UTF-8 -7, bad JSON -8, the
;; refused module -9, small id buffers -10, and the two good calls 11: the attempt keeps
;; exactly those two children, in order, with the ids printed.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "fabric" "submit" (func $submit (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 5)
  ;; Printing kit: $puts(ptr, len) writes memory to stdout, $putu(n) an unsigned decimal,
  ;; $puti(n) a signed one, $nl a newline. Bytes 0..48 are its scratch space, 48 holds the
  ;; newline, 49 a minus sign.
  (data (i32.const 48) "\n-")
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
  (func $puti (param $n i32)
    (if (i32.lt_s (local.get $n) (i32.const 0))
      (then
        (call $puts (i32.const 49) (i32.const 1))
        (local.set $n (i32.sub (i32.const 0) (local.get $n)))))
    (call $putu (local.get $n)))
  (func $nl (call $puts (i32.const 48) (i32.const 1)))
  ;; Id buffers: 0x100 (64 bytes) and 0x140 (64 bytes) keep the two ids the good calls get.
  (data (i32.const 0x1000) "{\"module\":\"echo\"}")
  (data (i32.const 0x1020) "\ff")
  (data (i32.const 0x1040) "{")
  (data (i32.const 0x1060) "{\"module\":\"echo\",\"inptu\":\"x\"}")
  (data (i32.const 0x1090) "{\"input\":\"x\"}")
  (data (i32.const 0x10b0) "{\"module\":\"forbidden\"}")
  (data (i32.const 0x10e0) "{\"module\":\"echo\",\"labels\":")
  (data (i32.const 0x1200) "=")
  (data (i32.const 0x1210) "id=")
  (data (i32.const 0x1220) "spec_across_the_end")
  (data (i32.const 0x1240) "spec_negative_pointer")
  (data (i32.const 0x1260) "spec_huge_length")
  (data (i32.const 0x1280) "id_across_the_end")
  (data (i32.const 0x12a0) "id_negative_pointer")
  (data (i32.const 0x12c0) "id_huge_capacity")
  (data (i32.const 0x12e0) "spec_of_256_kib_and_1")
  (data (i32.const 0x1300) "spec_not_utf8")
  (data (i32.const 0x1320) "spec_not_json")
  (data (i32.const 0x1340) "spec_unknown_field")
  (data (i32.const 0x1360) "spec_without_module")
  (data (i32.const 0x1380) "spec_nested_100000_deep")
  (data (i32.const 0x13a0) "spec_refused_by_the_host")
  (data (i32.const 0x13c0) "id_buffer_of_4")
  (data (i32.const 0x13e0) "id_buffer_empty")
  (data (i32.const 0x1400) "spec_ok")
  (data (i32.const 0x1420) "spec_ok_exact_buffer")
  (func $show (param $ptr i32) (param $len i32) (param $code i32)
    (call $puts (local.get $ptr) (local.get $len))
    (call $puts (i32.const 0x1200) (i32.const 1))
    (call $puti (local.get $code))
    (call $nl))
  (func (export "_start")
    (local $first i32) (local $second i32)
    ;; 100,000 `[` after a prefix that opens `labels`, at 0x10000.
    (memory.copy (i32.const 0x10000) (i32.const 0x10e0) (i32.const 26))
    (memory.fill (i32.const 0x1001a) (i32.const 0x5b) (i32.const 100000))
    (call $show (i32.const 0x1220) (i32.const 19) (call $submit (i32.const 0x4fff8) (i32.const 17) (i32.const 0x100) (i32.const 64)))
    (call $show (i32.const 0x1240) (i32.const 21) (call $submit (i32.const -1) (i32.const 17) (i32.const 0x100) (i32.const 64)))
    (call $show (i32.const 0x1260) (i32.const 16) (call $submit (i32.const 0x1000) (i32.const -1) (i32.const 0x100) (i32.const 64)))
    (call $show (i32.const 0x1280) (i32.const 17) (call $submit (i32.const 0x1000) (i32.const 17) (i32.const 0x4fff8) (i32.const 64)))
    (call $show (i32.const 0x12a0) (i32.const 19) (call $submit (i32.const 0x1000) (i32.const 17) (i32.const -1) (i32.const 64)))
    (call $show (i32.const 0x12c0) (i32.const 16) (call $submit (i32.const 0x1000) (i32.const 17) (i32.const 0x100) (i32.const -1)))
    (call $show (i32.const 0x12e0) (i32.const 21) (call $submit (i32.const 0) (i32.const 262145) (i32.const 0x100) (i32.const 64)))
    (call $show (i32.const 0x1300) (i32.const 13) (call $submit (i32.const 0x1020) (i32.const 1) (i32.const 0x100) (i32.const 64)))
    (call $show (i32.const 0x1320) (i32.const 13) (call $submit (i32.const 0x1040) (i32.const 1) (i32.const 0x100) (i32.const 64)))
    (call $show (i32.const 0x1340) (i32.const 18) (call $submit (i32.const 0x1060) (i32.const 29) (i32.const 0x100) (i32.const 64)))
    (call $show (i32.const 0x1360) (i32.const 19) (call $submit (i32.const 0x1090) (i32.const 13) (i32.const 0x100) (i32.const 64)))
    (call $show (i32.const 0x1380) (i32.const 23) (call $submit (i32.const 0x10000) (i32.const 100026) (i32.const 0x100) (i32.const 64)))
    (call $show (i32.const 0x13a0) (i32.const 24) (call $submit (i32.const 0x10b0) (i32.const 22) (i32.const 0x100) (i32.const 64)))
    (call $show (i32.const 0x13c0) (i32.const 14) (call $submit (i32.const 0x1000) (i32.const 17) (i32.const 0x100) (i32.const 4)))
    (call $show (i32.const 0x13e0) (i32.const 15) (call $submit (i32.const 0x1000) (i32.const 17) (i32.const 0x100) (i32.const 0)))
    (local.set $first (call $submit (i32.const 0x1000) (i32.const 17) (i32.const 0x100) (i32.const 64)))
    (call $show (i32.const 0x1400) (i32.const 7) (local.get $first))
    (local.set $second (call $submit (i32.const 0x1000) (i32.const 17) (i32.const 0x140) (i32.const 11)))
    (call $show (i32.const 0x1420) (i32.const 20) (local.get $second))
    (call $puts (i32.const 0x1210) (i32.const 3))
    (call $puts (i32.const 0x100) (local.get $first))
    (call $nl)
    (call $puts (i32.const 0x1210) (i32.const 3))
    (call $puts (i32.const 0x140) (local.get $second))
    (call $nl)))
