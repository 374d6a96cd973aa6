;; telemetry_names: records 65 distinct KPI names (`name00` .. `name64`), then `name00` again.
;; Tries: to grow the host's memory with ever more KPI names.
;; Expected: `ok`, printing `taken=64 refused=1 last=4 again=0` with the default limits:
;; the 65th name is refused with code 4 (too many names); a name already kept still records.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "fabric" "kpi" (func $kpi (param i32 i32 f64) (result i32)))
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
  (data (i32.const 0x100) "name00")
  (data (i32.const 0x110) "taken=")
  (data (i32.const 0x120) " refused=")
  (data (i32.const 0x130) " last=")
  (data (i32.const 0x140) " again=")
  (func $name (param $i i32)
    (i32.store8 (i32.const 0x104)
      (i32.add (i32.const 0x30) (i32.div_u (local.get $i) (i32.const 10))))
    (i32.store8 (i32.const 0x105)
      (i32.add (i32.const 0x30) (i32.rem_u (local.get $i) (i32.const 10)))))
  (func (export "_start")
    (local $i i32) (local $code i32) (local $taken i32) (local $refused i32)
    (loop $call
      (call $name (local.get $i))
      (local.set $code (call $kpi (i32.const 0x100) (i32.const 6) (f64.const 1)))
      (if (i32.eqz (local.get $code))
        (then (local.set $taken (i32.add (local.get $taken) (i32.const 1))))
        (else (local.set $refused (i32.add (local.get $refused) (i32.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $call (i32.lt_u (local.get $i) (i32.const 65))))
    (call $puts (i32.const 0x110) (i32.const 6)) (call $putu (local.get $taken))
    (call $puts (i32.const 0x120) (i32.const 9)) (call $putu (local.get $refused))
    (call $puts (i32.const 0x130) (i32.const 6)) (call $putu (local.get $code))
    (call $name (i32.const 0))
    (call $puts (i32.const 0x140) (i32.const 7))
    (call $putu (call $kpi (i32.const 0x100) (i32.const 6) (f64.const 2)))
    (call $nl)))
