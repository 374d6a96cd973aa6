;; read_fds: `_start` tries `fd_prestat_get` on fds 3..=10, `fd_read` on fds 0..=10,
;; and `path_open` of "../../etc/passwd" and "/etc/passwd" relative to fd 3, printing
;; one line with the errno of each try ("prestat 3 errno=8", "read 0 errno=0",
;; "open ../../etc/passwd errno=8"), then returns.
;; Tries: to find a preopened directory or an inherited descriptor, and to escape one.
;; Expected: `ok`. Every try fails with EBADF (8) except `fd_read` on fd 0, which
;; reads stdin (errno 0). With wasmtime-wasi 48 `fd_read` on fds 1 and 2 is EBADF too.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get"
    (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  ;; iovec for writes at 0, nwritten at 8, digits at 16..48; iovec for reads
  ;; { buf = 128, len = 64 } at 96, nread at 104; prestat at 112, opened fd at 120,
  ;; read buffer at 128..192; texts from 256.
  (memory (export "memory") 1)
  (data (i32.const 96) "\80\00\00\00\40\00\00\00")
  (data (i32.const 256) "prestat ")
  (data (i32.const 272) "read ")
  (data (i32.const 288) "open ")
  (data (i32.const 304) " errno=")
  (data (i32.const 320) "\n")
  (data (i32.const 336) "../../etc/passwd")
  (data (i32.const 368) "/etc/passwd")
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
    (call $puts (i32.const 304) (i32.const 7))
    (call $putu (local.get $errno))
    (call $puts (i32.const 320) (i32.const 1)))
  ;; Opens PATH relative to fd 3 for reading and prints "open PATH errno=E\n".
  (func $try_open (param $path i32) (param $path_len i32)
    (local $errno i32)
    (local.set $errno
      (call $path_open
        (i32.const 3)          ;; dirfd
        (i32.const 1)          ;; lookupflags: symlink_follow
        (local.get $path) (local.get $path_len)
        (i32.const 0)          ;; oflags
        (i64.const 2)          ;; rights: fd_read
        (i64.const 0)          ;; inheriting rights
        (i32.const 0)          ;; fdflags
        (i32.const 120)))      ;; opened fd
    (call $puts (i32.const 288) (i32.const 5))
    (call $puts (local.get $path) (local.get $path_len))
    (call $puts (i32.const 304) (i32.const 7))
    (call $putu (local.get $errno))
    (call $puts (i32.const 320) (i32.const 1)))
  (func (export "_start")
    (local $fd i32)
    (local.set $fd (i32.const 3))
    (loop $prestat
      (call $report_fd (i32.const 256) (i32.const 8) (local.get $fd)
        (call $fd_prestat_get (local.get $fd) (i32.const 112)))
      (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
      (br_if $prestat (i32.le_u (local.get $fd) (i32.const 10))))
    (local.set $fd (i32.const 0))
    (loop $read
      (call $report_fd (i32.const 272) (i32.const 5) (local.get $fd)
        (call $fd_read (local.get $fd) (i32.const 96) (i32.const 1) (i32.const 104)))
      (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
      (br_if $read (i32.le_u (local.get $fd) (i32.const 10))))
    (call $try_open (i32.const 336) (i32.const 16))
    (call $try_open (i32.const 368) (i32.const 11))))
