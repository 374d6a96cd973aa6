;; memory_dump: `_start` grows memory to 64 pages (4 MiB), writes to stdout the 256 bytes
;; at 0x1000 (low memory, which a pooled instance slot keeps resident and resets in
;; place) and the 256 bytes at 0x300000 (3 MiB, above the resident part, which is
;; returned to the kernel), then reads up to 256 bytes of stdin into both places and
;; returns.
;; Tries: to read what the previous attempt in the same slot left in memory: its input.
;; Expected: `ok` with 512 zero bytes on stdout on every attempt, whatever the earlier
;; attempts read.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  ;; iovec at 0, nwritten / nread at 8; the two regions at 0x1000 and 0x300000.
  (memory (export "memory") 1)
  ;; Writes memory[ptr..ptr+len) to stdout through the iovec at 0.
  (func $dump (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  ;; Reads stdin into memory[ptr..ptr+len) until it is full or stdin ends.
  (func $read_into (param $ptr i32) (param $len i32)
    (block $done
      (loop $more
        (br_if $done (i32.eqz (local.get $len)))
        (i32.store (i32.const 0) (local.get $ptr))
        (i32.store (i32.const 4) (local.get $len))
        (br_if $done
          (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
        (br_if $done (i32.eqz (i32.load (i32.const 8))))
        (local.set $ptr (i32.add (local.get $ptr) (i32.load (i32.const 8))))
        (local.set $len (i32.sub (local.get $len) (i32.load (i32.const 8))))
        (br $more))))
  (func (export "_start")
    (drop (memory.grow (i32.const 63)))
    (call $dump (i32.const 0x1000) (i32.const 256))
    (call $dump (i32.const 0x300000) (i32.const 256))
    (call $read_into (i32.const 0x1000) (i32.const 256))
    (memory.copy (i32.const 0x300000) (i32.const 0x1000) (i32.const 256))))
