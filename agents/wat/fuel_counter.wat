;; fuel_counter: `_start` reads N, a little-endian i32, from the first 4 bytes of stdin
;; (missing bytes are zero, so empty stdin gives 0), runs a loop exactly N times
;; (none when N <= 0), and returns.
;; Tries: nothing; it measures that fuel use is proportional to N and the same for the
;; same input.
;; Expected: `ok`, with fuel growing linearly in N.
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  ;; iovec { buf, len } at 0, nread at 8, N at 16.
  (memory (export "memory") 1)
  (func (export "_start")
    (local $got i32)
    (local $n i32)
    ;; stdin may deliver the 4 bytes in pieces.
    (block $read_done
      (loop $read
        (br_if $read_done (i32.ge_u (local.get $got) (i32.const 4)))
        (i32.store (i32.const 0) (i32.add (i32.const 16) (local.get $got)))
        (i32.store (i32.const 4) (i32.sub (i32.const 4) (local.get $got)))
        (br_if $read_done
          (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
        (br_if $read_done (i32.eqz (i32.load (i32.const 8))))
        (local.set $got (i32.add (local.get $got) (i32.load (i32.const 8))))
        (br $read)))
    (local.set $n (i32.load (i32.const 16)))
    (block $count_done
      (loop $count
        (br_if $count_done (i32.le_s (local.get $n) (i32.const 0)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $count)))))
