;; sock_calls: `_start` calls `sock_accept`, `sock_recv`, `sock_send` and
;; `sock_shutdown` on each of fds 0..=5 and prints one line with the errno of each
;; ("sock_accept 0 errno=57"), then returns.
;; Tries: to use an inherited or guessed socket descriptor.
;; Expected: `ok`, and no call succeeds. With wasmtime-wasi 48: ENOTSOCK (57) on the
;; stdio fds 0..=2 and EBADF (8) on 3..=5.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_accept"
    (func $sock_accept (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_recv"
    (func $sock_recv (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_send"
    (func $sock_send (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_shutdown"
    (func $sock_shutdown (param i32 i32) (result i32)))
  ;; iovec for writes at 0, nwritten at 8, digits at 16..48; iovec for socket data
  ;; { buf = 128, len = 64 } at 96, data length at 104, flags at 108, accepted fd at
  ;; 112, data buffer at 128..192; texts from 256.
  (memory (export "memory") 1)
  (data (i32.const 96) "\80\00\00\00\40\00\00\00")
  (data (i32.const 256) "sock_accept ")
  (data (i32.const 272) "sock_recv ")
  (data (i32.const 288) "sock_send ")
  (data (i32.const 304) "sock_shutdown ")
  (data (i32.const 320) " errno=")
  (data (i32.const 336) "\n")
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
  ;; Prints "LABEL N errno=E\n".
  (func $report_fd (param $label i32) (param $label_len i32) (param $fd i32) (param $errno i32)
    (call $puts (local.get $label) (local.get $label_len))
    (call $putu (local.get $fd))
    (call $puts (i32.const 320) (i32.const 7))
    (call $putu (local.get $errno))
    (call $puts (i32.const 336) (i32.const 1)))
  (func (export "_start")
    (local $fd i32)
    (loop $each_fd
      (call $report_fd (i32.const 256) (i32.const 12) (local.get $fd)
        (call $sock_accept (local.get $fd) (i32.const 0) (i32.const 112)))
      (call $report_fd (i32.const 272) (i32.const 10) (local.get $fd)
        (call $sock_recv (local.get $fd) (i32.const 96) (i32.const 1) (i32.const 0)
          (i32.const 104) (i32.const 108)))
      (call $report_fd (i32.const 288) (i32.const 10) (local.get $fd)
        (call $sock_send (local.get $fd) (i32.const 96) (i32.const 1) (i32.const 0)
          (i32.const 104)))
      ;; how = RD | WR
      (call $report_fd (i32.const 304) (i32.const 14) (local.get $fd)
        (call $sock_shutdown (local.get $fd) (i32.const 3)))
      (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
      (br_if $each_fd (i32.le_u (local.get $fd) (i32.const 5))))))
