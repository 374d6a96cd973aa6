;; open_files_bomb: `_start` opens "hello.txt" for reading, relative to fd 3 (the first
;; directory grant), 100000 times without closing anything, writing "." to stdout
;; after every 64 successful opens; it prints "open failed errno=E\n" and returns if
;; an open fails.
;; Tries: to hold more host file descriptors than the process has, so that the host
;; (its database, its sockets) can open nothing.
;; Expected: `memory_limit` with a "handle limit" error after at most the sandbox's
;; `max_guest_handles` opens (256 by default: 4 dots at most), never an exhausted host.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  ;; iovec at 0, nwritten at 8, digits at 16..48, opened fd at 64, texts from 128.
  (memory (export "memory") 1)
  (data (i32.const 128) "hello.txt")
  (data (i32.const 144) ".")
  (data (i32.const 160) "open failed errno=")
  (data (i32.const 192) "\n")
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
  (func (export "_start")
    (local $opened i32)
    (local $errno i32)
    (block $done
      (loop $open
        (br_if $done (i32.ge_u (local.get $opened) (i32.const 100000)))
        (local.set $errno
          (call $path_open
            (i32.const 3)          ;; dirfd: the first grant
            (i32.const 0)          ;; lookupflags
            (i32.const 128) (i32.const 9)
            (i32.const 0)          ;; oflags
            (i64.const 2)          ;; rights: fd_read
            (i64.const 0)
            (i32.const 0)
            (i32.const 64)))
        (if (local.get $errno)
          (then
            (call $puts (i32.const 160) (i32.const 18))
            (call $putu (local.get $errno))
            (call $puts (i32.const 192) (i32.const 1))
            (br $done)))
        (local.set $opened (i32.add (local.get $opened) (i32.const 1)))
        (if (i32.eqz (i32.rem_u (local.get $opened) (i32.const 64)))
          (then (call $puts (i32.const 144) (i32.const 1))))
        (br $open)))))
