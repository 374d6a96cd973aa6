;; grant_mutations: with a read-only directory grant at fd 3 that holds "hello.txt" and a
;; directory "sub", `_start` tries every way WASI preview 1 has to change a directory or
;; a file, and prints one line "NAME errno=E" for each: create "new.txt", truncate and
;; open "hello.txt" for writing, create a directory, unlink, remove "sub", rename, make
;; a symlink and a hard link, set times by path; then it opens "hello.txt" read-only
;; (line "open_read") and on that fd tries write, pwrite, set size and set times.
;; Tries: to modify the host directory behind a read-only grant.
;; Expected: `ok`; "open_read errno=0" and every other errno non-zero, the host
;; directory unchanged.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_pwrite"
    (func $fd_pwrite (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_filestat_set_size"
    (func $fd_filestat_set_size (param i32 i64) (result i32)))
  (import "wasi_snapshot_preview1" "fd_filestat_set_times"
    (func $fd_filestat_set_times (param i32 i64 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_create_directory"
    (func $path_create_directory (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_unlink_file"
    (func $path_unlink_file (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_remove_directory"
    (func $path_remove_directory (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_rename"
    (func $path_rename (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_symlink"
    (func $path_symlink (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_link"
    (func $path_link (param i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_filestat_set_times"
    (func $path_filestat_set_times (param i32 i32 i32 i32 i64 i64 i32) (result i32)))
  ;; iovec for stdout at 0, nwritten at 8, digits at 16..48, opened fd at 64, an iovec
  ;; { buf = 96, len = 1 } for file writes at 80 with the byte "x" at 96; texts from 256.
  (memory (export "memory") 1)
  (data (i32.const 80) "\60\00\00\00\01\00\00\00")
  (data (i32.const 96) "x")
  (data (i32.const 256) " errno=")
  (data (i32.const 264) "\n")
  (data (i32.const 272) "new.txt")
  (data (i32.const 288) "hello.txt")
  (data (i32.const 304) "newdir")
  (data (i32.const 320) "sub")
  (data (i32.const 336) "moved.txt")
  (data (i32.const 352) "link.txt")
  (data (i32.const 400) "create_file")
  (data (i32.const 416) "truncate")
  (data (i32.const 432) "open_write")
  (data (i32.const 448) "create_directory")
  (data (i32.const 480) "unlink_file")
  (data (i32.const 496) "remove_directory")
  (data (i32.const 528) "rename")
  (data (i32.const 544) "symlink")
  (data (i32.const 560) "link")
  (data (i32.const 576) "set_times")
  (data (i32.const 592) "open_read")
  (data (i32.const 608) "fd_write")
  (data (i32.const 624) "fd_pwrite")
  (data (i32.const 640) "fd_set_size")
  (data (i32.const 656) "fd_set_times")
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
  ;; Prints "LABEL errno=E\n".
  (func $report (param $label i32) (param $len i32) (param $errno i32)
    (call $puts (local.get $label) (local.get $len))
    (call $puts (i32.const 256) (i32.const 7))
    (call $putu (local.get $errno))
    (call $puts (i32.const 264) (i32.const 1)))
  ;; path_open relative to fd 3 with these oflags and rights; the fd goes to 64.
  (func $open (param $path i32) (param $len i32) (param $oflags i32) (param $rights i64)
    (result i32)
    (call $path_open (i32.const 3) (i32.const 0) (local.get $path) (local.get $len)
      (local.get $oflags) (local.get $rights) (i64.const 0) (i32.const 0) (i32.const 64)))
  (func (export "_start")
    (local $fd i32)
    ;; oflags: creat = 1, trunc = 8; rights: fd_read = 2, fd_write = 64.
    (call $report (i32.const 400) (i32.const 11)
      (call $open (i32.const 272) (i32.const 7) (i32.const 1) (i64.const 64)))
    (call $report (i32.const 416) (i32.const 8)
      (call $open (i32.const 288) (i32.const 9) (i32.const 8) (i64.const 64)))
    (call $report (i32.const 432) (i32.const 10)
      (call $open (i32.const 288) (i32.const 9) (i32.const 0) (i64.const 64)))
    (call $report (i32.const 448) (i32.const 16)
      (call $path_create_directory (i32.const 3) (i32.const 304) (i32.const 6)))
    (call $report (i32.const 480) (i32.const 11)
      (call $path_unlink_file (i32.const 3) (i32.const 288) (i32.const 9)))
    (call $report (i32.const 496) (i32.const 16)
      (call $path_remove_directory (i32.const 3) (i32.const 320) (i32.const 3)))
    (call $report (i32.const 528) (i32.const 6)
      (call $path_rename (i32.const 3) (i32.const 288) (i32.const 9)
        (i32.const 3) (i32.const 336) (i32.const 9)))
    (call $report (i32.const 544) (i32.const 7)
      (call $path_symlink (i32.const 288) (i32.const 9)
        (i32.const 3) (i32.const 352) (i32.const 8)))
    (call $report (i32.const 560) (i32.const 4)
      (call $path_link (i32.const 3) (i32.const 0) (i32.const 288) (i32.const 9)
        (i32.const 3) (i32.const 352) (i32.const 8)))
    ;; fst_flags: atim_now = 2 | mtim_now = 8
    (call $report (i32.const 576) (i32.const 9)
      (call $path_filestat_set_times (i32.const 3) (i32.const 0) (i32.const 288)
        (i32.const 9) (i64.const 0) (i64.const 0) (i32.const 10)))
    (call $report (i32.const 592) (i32.const 9)
      (call $open (i32.const 288) (i32.const 9) (i32.const 0) (i64.const 2)))
    (local.set $fd (i32.load (i32.const 64)))
    (call $report (i32.const 608) (i32.const 8)
      (call $fd_write (local.get $fd) (i32.const 80) (i32.const 1) (i32.const 8)))
    (call $report (i32.const 624) (i32.const 9)
      (call $fd_pwrite (local.get $fd) (i32.const 80) (i32.const 1) (i64.const 0)
        (i32.const 8)))
    (call $report (i32.const 640) (i32.const 11)
      (call $fd_filestat_set_size (local.get $fd) (i64.const 0)))
    (call $report (i32.const 656) (i32.const 12)
      (call $fd_filestat_set_times (local.get $fd) (i64.const 0) (i64.const 0)
        (i32.const 10)))))
