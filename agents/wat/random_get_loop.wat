;; random_get_loop: `_start` calls `random_get` for 64 KiB in an endless loop, so nearly
;; all its time is spent filling buffers in the host, where no fuel is counted.
;; Tries: to run forever on a small fuel bill.
;; Expected: `timeout`, with fuel far below the budget.
(module
  (import "wasi_snapshot_preview1" "random_get"
    (func $random_get (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    (loop $forever
      (drop (call $random_get (i32.const 65536) (i32.const 65536)))
      (br $forever))))
